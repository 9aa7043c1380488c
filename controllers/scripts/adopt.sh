# shellcheck shell=sh
# Run under the host's bootstrap lock: succeeds, printing the host's name, only when the host holds a finished
# bootstrap whose marker names UID (a RemoteMachine recreated by clusterctl move adopts it). Never runs anything.
#
# Arguments: UID
uid=$1
state_dir=/var/lib/capr
if { [ -f /run/cluster-api/bootstrap-success.complete ] || [ -f "$state_dir/bootstrap.done" ]; } &&
  [ "$(cat "$state_dir/bootstrap.uid" 2>/dev/null)" = "$uid" ]; then
  echo "capr-hostname=$(hostname -s 2>/dev/null || hostname)"
  exit 0
fi
exit 96
