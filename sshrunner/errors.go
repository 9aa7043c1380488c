package sshrunner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"unicode/utf8"
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

// Reason is a short CamelCase name for an error, for conditions and metrics.
func Reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{ErrHostKeyMismatch, "HostKeyMismatch"}, {ErrHostKeyUnknown, "HostKeyUnknown"}, {ErrAuthFailed, "AuthFailed"},
		{ErrSudo, "SudoUnavailable"}, {ErrTimeout, "Timeout"}, {ErrUnreachable, "Unreachable"}, {ErrCommandFailed, "CommandFailed"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "Error"
}

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
