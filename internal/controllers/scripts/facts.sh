# shellcheck shell=sh
# Prints what the pool probe measures of the host, one "capr-fact key=value" line each: cpu (online CPUs), memory
# (MemTotal in KiB), arch (uname -m) and os (uname -s). A value that cannot be read is left out.
cpu=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || true)
[ -n "$cpu" ] && echo "capr-fact cpu=$cpu"
mem=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9][0-9]*\) kB$/\1/p' /proc/meminfo 2>/dev/null || true)
[ -n "$mem" ] && echo "capr-fact memory=${mem}Ki"
echo "capr-fact arch=$(uname -m)"
echo "capr-fact os=$(uname -s)"
exit 0
