package sshrunner

import "testing"

// TestValidProcessGroup checks that only a plain number above 1 reaches the kill command that stops a cancelled
// remote command: never text that would run something else, nor -1 or 0, which mean every process.
func TestValidProcessGroup(t *testing.T) {
	for pgid, want := range map[string]bool{
		"4242": true, "2": true,
		"": false, "0": false, "1": false, "-1": false, "+42": false, "042": false, " 42": false,
		"42; rm -rf /": false, "$(reboot)": false, "42\n43": false, "9999999999999999999999": false,
	} {
		if got := validProcessGroup(pgid); got != want {
			t.Errorf("validProcessGroup(%q) = %v, want %v", pgid, got, want)
		}
	}
}
