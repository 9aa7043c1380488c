# shellcheck shell=sh
# The CAPR_* variables are the host contract (package host), set read-only by sshhost before this script.
# Gives the host new SSH host keys (a pool entry's regenerateHostKeys), run after a successful cleanup in the same
# SSH session: removes sshd's keys in /etc/ssh, makes new ones (ssh-keygen -A), prints each new public key on a line
#   capr-host-key=<type> <base64 in pieces of 32 characters, separated by spaces>
# (in pieces, so that the output redaction, which hides long base64 runs, leaves them readable) and makes sshd load
# them. Any failure exits non-zero: the cleanup fails, and the entry is not offered with keys CAPR did not read.
#
# No arguments.
dir=/etc/ssh
if ! command -v ssh-keygen >/dev/null 2>&1; then
  echo "capr: ssh-keygen is missing; install OpenSSH's client tools, or unset regenerateHostKeys" >&2
  exit 1
fi
rm -f "$dir"/ssh_host_*key* || exit 1
ssh-keygen -A >&2 || exit 1
found=
for pub in "$dir"/ssh_host_*_key.pub; do
  [ -f "$pub" ] || continue
  read -r type key _ < "$pub" || exit 1
  printf '%s%s %s\n' "$CAPR_HOST_KEY_MARKER" "$type" "$(printf '%s\n' "$key" | sed 's/.\{32\}/& /g')"
  found=1
done
if [ -z "$found" ]; then
  echo "capr: ssh-keygen -A made no host key in $dir" >&2
  exit 1
fi

# sshd loads its keys when it starts: have the running one start again.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  for unit in ssh.service sshd.service; do
    if systemctl is-active --quiet "$unit"; then
      systemctl reload "$unit" >&2
      exit $?
    fi
  done
  # Socket-activated sshd starts for each connection, with the keys on disk.
  if systemctl is-active --quiet ssh.socket || systemctl is-active --quiet sshd.socket; then
    exit 0
  fi
fi
for pidfile in /run/sshd.pid /var/run/sshd.pid; do
  if [ -s "$pidfile" ]; then
    kill -HUP "$(cat "$pidfile")"
    exit $?
  fi
done
if command -v rc-service >/dev/null 2>&1; then
  rc-service sshd reload >&2
  exit $?
fi
echo "capr: found no way to make sshd load its new host keys (no active ssh or sshd systemd unit, no /run/sshd.pid, no rc-service)" >&2
exit 1
