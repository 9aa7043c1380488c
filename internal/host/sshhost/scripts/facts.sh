# shellcheck shell=sh
# The CAPR_* variables are the host contract (package host), set read-only by sshhost before this script.
# Prints what the pool probe measures of the host, one "capr-fact key=value" line each: cpu (online CPUs), memory
# (MemTotal in KiB), arch (uname -m) and os (uname -s). A value that cannot be read is left out.
cpu=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || true)
[ -n "$cpu" ] && echo "${CAPR_FACT_MARKER}cpu=$cpu"
mem=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9][0-9]*\) kB$/\1/p' /proc/meminfo 2>/dev/null || true)
[ -n "$mem" ] && echo "${CAPR_FACT_MARKER}memory=${mem}Ki"
echo "${CAPR_FACT_MARKER}arch=$(uname -m)"
echo "${CAPR_FACT_MARKER}os=$(uname -s)"
exit 0
