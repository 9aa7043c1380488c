# shellcheck shell=sh
# Run under the host's bootstrap lock: succeeds, printing the host's name, only when the host holds a finished
# bootstrap whose marker names ID, the namespace/name/UID of the RemoteMachine that ran it (a RemoteMachine recreated
# by clusterctl move, with the same namespace and name, adopts it). Never runs anything. A marker holding the UID
# alone (written by an earlier CAPR release) counts as this identity's.
#
# Arguments: ID
id=$1
uid=${id##*/}
mk=$(cat /var/lib/capr/bootstrap.uid 2>/dev/null || true)
state_dir=/var/lib/capr
if { [ -f /run/cluster-api/bootstrap-success.complete ] || [ -f "$state_dir/bootstrap.done" ]; } &&
  { [ "$mk" = "$id" ] || [ "$mk" = "$uid" ]; }; then
  echo "capr-hostname=$(hostname -s 2>/dev/null || hostname)"
  echo "capr-machine-id=$(cat /etc/machine-id 2>/dev/null || true)"
  exit 0
fi
exit 96
