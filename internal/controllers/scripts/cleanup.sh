# shellcheck shell=sh
# Run under the host's bootstrap lock (a bootstrap still running finishes first): cleans a host whose marker names
# ID (namespace/name/UID of the RemoteMachine). It runs the cleanup commands in order, stopping at the first that fails, then removes the sentinel and
# CAPR's files, and records ID in the cleaned list, which a late bootstrap of the same machine checks. The lock file
# itself is kept: removing it would let two runs hold "the" lock at once.
#   - a host that holds no bootstrap is left as it is;
#   - a host whose marker names another identity (or none, beside a sentinel) is not touched: exit 95.
#
# Arguments: ID WORKDIR COMMAND...
id=$1
uid=${id##*/}
workdir=$2
shift 2
state_dir=/var/lib/capr
run_dir=/run/cluster-api
sentinel=$run_dir/bootstrap-success.complete

mkdir -p "$state_dir"
record_cleaned() {
  echo "$id" >> "$state_dir/cleaned"
  # Keep the list bounded: the last 1000 machines.
  tail -n 1000 "$state_dir/cleaned" > "$state_dir/.cleaned.tmp" && mv -f "$state_dir/.cleaned.tmp" "$state_dir/cleaned"
}
mk=$(cat "$state_dir/bootstrap.uid" 2>/dev/null || true)
# A marker holding the UID alone was written by an earlier CAPR release.
[ "$mk" = "$uid" ] && mk=$id
if [ -z "$mk" ] && [ ! -f "$sentinel" ] && [ ! -f "$state_dir/bootstrap.done" ]; then
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
  exit 95
fi
for c in "$@"; do
  sh -c "$c" < /dev/null || exit $?
done
rm -f "$sentinel" "$state_dir/bootstrap.uid" "$state_dir/bootstrap.done" "$state_dir/bootstrap.failed" \
  "$workdir/.capr-bootstrap-$uid".* "$run_dir"/capr-bootstrap-log.*
record_cleaned
