# shellcheck shell=sh
# The CAPR_* variables are the host contract (package host), set read-only by sshhost before this script.
# The part of CAPR's bootstrap that holds the host's bootstrap lock. Bootstrap data is not idempotent, so it runs
# at most once per host and RemoteMachine identity (namespace/name/UID: a marker binds all three, so a RemoteMachine
# of another namespace or name cannot claim a host's bootstrap by its UID), whatever happened before:
#   - the host was cleaned for this identity (cleaned lists it): refused (CAPR_EXIT_CLEANED);
#   - no marker, no sentinel, no done record: the identity is written to the marker first (if it cannot be, as on a full
#     disk, nothing runs: CAPR_EXIT_STATE_UNWRITABLE), then the plan runs; success
#     writes the sentinel and the done record, failure the failed record;
#   - the marker names this identity: a finished run (sentinel or done record) is adopted; an unfinished or failed one
#     is reported (CAPR_EXIT_ALREADY_RAN) and never run again;
#   - anything else (another identity, or a sentinel without CAPR's marker): another machine's bootstrap (CAPR_EXIT_FOREIGN_BOOTSTRAP).
#
# A marker holding the UID alone was written by a CAPR release before markers named the namespace and name; it is
# read as this identity's when the UID is this machine's.
#
# Arguments: ID PLAN_FILE. The plan file is removed whatever happens.
id=$1
uid=${id##*/}
f=$2
sentinel=$CAPR_SENTINEL_FILE
marker=$CAPR_MARKER_FILE
done_record=$CAPR_DONE_FILE
failed_record=$CAPR_FAILED_FILE
cleaned=$CAPR_CLEANED_FILE

trap 'rm -f "$f"' EXIT
trap 'rm -f "$f"; echo "$id 143 stopped" > "$failed_record"; exit 143' HUP INT TERM

if grep -qxF -- "$id" "$cleaned" 2>/dev/null; then
  echo "capr: the host was cleaned after this machine's bootstrap; it is not bootstrapped for it again" >&2
  exit "$CAPR_EXIT_CLEANED"
fi
mk=$(cat "$marker" 2>/dev/null || true)
[ "$mk" = "$uid" ] && mk=$id
if [ "$mk" = "$id" ]; then
  done_by=$(cat "$done_record" 2>/dev/null || true)
  if [ -f "$sentinel" ] || [ "$done_by" = "$id" ] || [ "$done_by" = "$uid" ]; then
    echo "$CAPR_ADOPTED_MARKER"
    exit 0
  fi
  if [ -f "$failed_record" ]; then
    echo "capr: this machine's bootstrap already ran on the host and failed ($(cat "$failed_record")); bootstrap data is not run twice" >&2
  else
    echo "capr: this machine's bootstrap started on the host and never finished (the host rebooted or the run was killed); bootstrap data is not run twice" >&2
  fi
  exit "$CAPR_EXIT_ALREADY_RAN"
fi
if [ -n "$mk" ]; then
  echo "capr: the host holds the bootstrap of another machine" >&2
  exit "$CAPR_EXIT_FOREIGN_BOOTSTRAP"
fi
if [ -f "$sentinel" ] || [ -f "$done_record" ]; then
  echo "capr: the host was bootstrapped before, not by this machine" >&2
  exit "$CAPR_EXIT_FOREIGN_BOOTSTRAP"
fi

# Nothing runs unless the marker is written: a full disk is reported (CAPR_EXIT_STATE_UNWRITABLE), and the bootstrap is tried again.
if ! { echo "$id" > "$marker" && rm -f "$failed_record"; }; then
  rm -f "$marker"
  echo "capr: cannot record this machine's bootstrap in $marker (No space left on device?); nothing was run" >&2
  exit "$CAPR_EXIT_STATE_UNWRITABLE"
fi
sh "$f"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "$id $rc" > "$failed_record"
  exit "$rc"
fi
echo success > "$sentinel"
echo "$id" > "$done_record"
