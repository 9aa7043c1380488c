# shellcheck shell=sh
# The CAPR_* variables are the host contract (package host), set read-only by sshhost before this script.
# Checks what CAPR's host scripts need, and prints every missing piece on one line starting with
# "capr-missing:", exiting CAPR_EXIT_PREREQUISITES when something is missing.
missing=""
for cmd in flock setsid tail mktemp base64 hostname nohup grep; do
  command -v "$cmd" > /dev/null 2>&1 || missing="$missing $cmd"
done
if command -v tail > /dev/null 2>&1 && ! tail --pid=$$ -n 0 /dev/null > /dev/null 2>&1; then
  missing="$missing tail-with---pid(GNU-coreutils)"
fi
if [ "$(id -u)" != 0 ]; then
  missing="$missing root(log-in-as-root-or-set-useSudo)"
fi
if [ -n "$missing" ]; then
  echo "$CAPR_MISSING_MARKER$missing" >&2
  exit "$CAPR_EXIT_PREREQUISITES"
fi
