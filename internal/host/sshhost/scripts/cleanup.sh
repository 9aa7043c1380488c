# shellcheck shell=sh
# The CAPR_* variables are the host contract (package host), set read-only by sshhost before this script.
# Run under the host's bootstrap lock (a bootstrap still running finishes first): cleans a host whose marker names
# ID (namespace/name/UID of the RemoteMachine). It runs the cleanup commands in order, stopping at the first that fails, then removes the sentinel and
# CAPR's files, and records ID in the cleaned list, which a late bootstrap of the same machine checks. The lock file
# itself is kept: removing it would let two runs hold "the" lock at once.
#   - a host that holds no bootstrap is left as it is;
#   - a host whose marker names another identity (or none, beside a sentinel) is not touched (CAPR_EXIT_FOREIGN_CLEANUP).
#
# Arguments: ID WORKDIR COMMAND...
id=$1
uid=${id##*/}
workdir=$2
shift 2
state_dir=$CAPR_STATE_DIR
run_dir=$CAPR_RUN_DIR
sentinel=$CAPR_SENTINEL_FILE
cleaned=$CAPR_CLEANED_FILE

mkdir -p "$state_dir"
record_cleaned() {
  echo "$id" >> "$cleaned"
  # Keep the list bounded: the last 1000 machines.
  tail -n 1000 "$cleaned" > "$cleaned.tmp" && mv -f "$cleaned.tmp" "$cleaned"
}
mk=$(cat "$CAPR_MARKER_FILE" 2>/dev/null || true)
# A marker holding the UID alone was written by an earlier CAPR release.
[ "$mk" = "$uid" ] && mk=$id
if [ -z "$mk" ] && [ ! -f "$sentinel" ] && [ ! -f "$CAPR_DONE_FILE" ]; then
  record_cleaned
  echo "capr: the host holds no bootstrap; nothing to clean"
  exit 0
fi
if [ "$mk" != "$id" ]; then
  if [ -n "$mk" ]; then
    echo "capr: the host's marker names another machine" >&2
  else
    echo "capr: the host holds a bootstrap without CAPR's marker" >&2
  fi
  exit "$CAPR_EXIT_FOREIGN_CLEANUP"
fi
for c in "$@"; do
  sh -c "$c" < /dev/null || exit $?
done
rm -f "$sentinel" "$CAPR_MARKER_FILE" "$CAPR_DONE_FILE" "$CAPR_FAILED_FILE" \
  "$workdir/$CAPR_PLAN_FILE_PREFIX$uid".* "$run_dir/$CAPR_LOG_FILE_PREFIX"*
record_cleaned
