# shellcheck shell=sh
# The CAPR_* variables are the host contract (package host), set read-only by sshhost before this script.
# Run under the host's bootstrap lock: succeeds, printing the host's name, only when the host holds a finished
# bootstrap whose marker names ID, the namespace/name/UID of the RemoteMachine that ran it (a RemoteMachine recreated
# by clusterctl move, with the same namespace and name, adopts it). Never runs anything. A marker holding the UID
# alone (written by an earlier CAPR release) counts as this identity's.
#
# Arguments: ID
id=$1
uid=${id##*/}
mk=$(cat "$CAPR_MARKER_FILE" 2>/dev/null || true)
if { [ -f "$CAPR_SENTINEL_FILE" ] || [ -f "$CAPR_DONE_FILE" ]; } &&
  { [ "$mk" = "$id" ] || [ "$mk" = "$uid" ]; }; then
  echo "${CAPR_HOSTNAME_MARKER}$(hostname -s 2>/dev/null || hostname)"
  echo "${CAPR_MACHINE_ID_MARKER}$(cat /etc/machine-id 2>/dev/null || true)"
  exit 0
fi
exit "$CAPR_EXIT_NOT_ADOPTABLE"
