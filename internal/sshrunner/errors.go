package sshrunner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// Errors a caller can branch on with errors.Is.
var (
	// ErrHostKeyMismatch: the host presented a key that is not among the pinned ones.
	ErrHostKeyMismatch = errors.New("host key mismatch")
	// ErrHostKeyUnknown: no key is pinned for the host (pin one first, from ScanHostKey).
	ErrHostKeyUnknown = errors.New("host key unknown")
	// ErrAuthFailed: the host refused the key.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrUnreachable: no TCP connection or SSH handshake could be made, or the connection ended.
	ErrUnreachable = errors.New("host unreachable")
	// ErrTimeout: a dial, handshake or command ran past its deadline.
	ErrTimeout = errors.New("timed out")
	// ErrSudo: the user has no passwordless sudo.
	ErrSudo = errors.New("passwordless sudo not available")
	// ErrCommandFailed: a command exited non-zero; the error is a *CommandError.
	ErrCommandFailed = errors.New("command failed")
)

// HostKeyMismatchError is ErrHostKeyMismatch with what was met: the key the host presented and the fingerprints of
// the pinned ones, so a person can compare them and accept the new key once (never silently).
type HostKeyMismatchError struct {
	// Host is the address the key was met at.
	Host string
	// Presented is the key the host presented, in authorized_keys format (a public key: not a secret).
	Presented string
	// Pinned are the SHA-256 fingerprints of the pinned keys (SHA256:..., as ssh-keygen -l prints them).
	Pinned []string
	// Bastion is true when the key is the bastion's, not the target host's.
	Bastion bool
}

func (e *HostKeyMismatchError) Error() string {
	return fmt.Sprintf("%s: %s presented %s %s, which is not among the %d pinned key(s) (%s)",
		ErrHostKeyMismatch, e.Host, KeyType(e.Presented), Fingerprint(e.Presented), len(e.Pinned), strings.Join(e.Pinned, ", "))
}

// Is makes errors.Is(err, ErrHostKeyMismatch) true.
func (e *HostKeyMismatchError) Is(target error) bool { return target == ErrHostKeyMismatch }

// markBastion records, on a host key mismatch, that the key was the bastion's.
func markBastion(err error) error {
	var mm *HostKeyMismatchError
	if errors.As(err, &mm) {
		mm.Bastion = true
	}
	return err
}

// Fingerprint returns the SHA-256 fingerprint of a public key in authorized_keys format, as ssh-keygen -l prints
// it (SHA256:...), or "" if the key does not parse.
func Fingerprint(key string) string {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
	if err != nil {
		return ""
	}
	return ssh.FingerprintSHA256(pk)
}

// KeyType returns the type of a public key in authorized_keys format (ssh-ed25519, ...), or "" if it does not
// parse.
func KeyType(key string) string {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
	if err != nil {
		return ""
	}
	return pk.Type()
}

// CommandError is a remote command that exited with a non-zero status.
type CommandError struct {
	// Command is the command's redacted text, cut to a reasonable length.
	Command string
	// ExitCode is the exit status; -1 when the host reported none.
	ExitCode int
	// Tail are the last lines of the command's redacted output.
	Tail []string
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("command %q exited with status %d", e.Command, e.ExitCode)
	if len(e.Tail) > 0 {
		msg += ": " + strings.Join(e.Tail, " | ")
	}
	return Truncate(msg, 4096)
}

// Truncate cuts s to at most n bytes (on a rune boundary), marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Is makes errors.Is(err, ErrCommandFailed) true.
func (e *CommandError) Is(target error) bool { return target == ErrCommandFailed }

// classifyDial maps a dial or handshake error onto the sentinels.
func classifyDial(addr string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrHostKeyMismatch), errors.Is(err, ErrHostKeyUnknown):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), isNetTimeout(err):
		return fmt.Errorf("%w: connecting to %s: %w", ErrTimeout, addr, err)
	case strings.Contains(err.Error(), "unable to authenticate"):
		return fmt.Errorf("%w: %s refused the SSH key: %w", ErrAuthFailed, addr, err)
	default:
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, addr, err)
	}
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
