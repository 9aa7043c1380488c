# shellcheck shell=sh
# The CAPR_* variables are the host contract (package host), set read-only by sshhost before this script.
# CAPR's bootstrap command. It stores the plan script arriving on stdin in a private file, then runs it detached
# from the SSH session (its own session, output to a log file on the host) under flock on the host's bootstrap
# lock, and follows the log until the run ends. If the connection drops or the manager stops, the run goes on to
# its end, and a later command waits for the lock and finds the result. Cancelled (TERM), it stops the run too.
#
# Arguments: ID WORKDIR RUN, where ID is the identity of the RemoteMachine (namespace/name/UID) and RUN is the text of
# bootstrap-run.sh (the part that holds the lock).
set -eu
id=$1
uid=${id##*/}
workdir=$2
run=$3
run_dir=$CAPR_RUN_DIR
lock=$CAPR_LOCK_FILE

mkdir -p "$run_dir" "$workdir" "$CAPR_STATE_DIR"
f=$(mktemp "$workdir/$CAPR_PLAN_FILE_PREFIX$uid.XXXXXX")
cat > "$f"
echo "${CAPR_HOSTNAME_MARKER}$(hostname -s 2>/dev/null || hostname)"
echo "${CAPR_MACHINE_ID_MARKER}$(cat /etc/machine-id 2>/dev/null || true)"
log=$(mktemp "$run_dir/${CAPR_LOG_FILE_PREFIX}XXXXXX")

set +e
setsid nohup flock -o "$lock" sh -c "$run" capr-bootstrap-run "$id" "$f" > "$log" 2>&1 < /dev/null &
bg=$!
trap 'kill -TERM "-$bg" 2>/dev/null; rm -f "$f" "$log"; exit 143' TERM INT HUP
tail -s 0.05 -n +1 -f --pid="$bg" "$log" &
wait "$bg"
rc=$?
wait
rm -f "$log" "$f"
exit "$rc"
