// Package standins holds stand-ins for host commands that CAPR's tests put on the PATH of sshd hosts (see
// sshdtest.Options.Sbin), which run no systemd.
package standins

import _ "embed"

// Systemctl is a systemctl that records its calls in the host's /run/capr-systemctl.log and runs a started unit's
// ExecStart= lines as systemd would run a Type=oneshot service; see the script for what it understands.
//
//go:embed systemctl
var Systemctl []byte
