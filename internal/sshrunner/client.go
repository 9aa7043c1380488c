// Package sshrunner runs commands and uploads files on hosts over SSH, with verified host keys, deadlines,
// cancellation, sudo, redacted streamed output and typed errors.
package sshrunner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"al.essio.dev/pkg/shellescape"
	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
)

// Endpoint is an SSH server and how to log in to it.
type Endpoint struct {
	// Address is an IP address or DNS name; Port defaults to 22.
	Address string
	Port    int
	// User to log in as.
	User string
	// Signer is the private key.
	Signer ssh.Signer
	// HostKeys are the accepted host keys in authorized_keys format; any of them is accepted. Dial refuses a host
	// with none: a key is pinned first, from ScanHostKey, before anything is sent to the host.
	HostKeys []string
}

// HostPort returns "address:port", with IPv6 addresses in brackets.
func (e Endpoint) HostPort() string {
	port := e.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(e.Address, strconv.Itoa(port))
}

// Config describes a connection.
type Config struct {
	Endpoint
	// Bastion is an optional jump host.
	Bastion *Endpoint
	// Sudo runs every command with `sudo -n`.
	Sudo bool
	// DialTimeout bounds the TCP connect and the SSH handshake of each hop (default 15s).
	DialTimeout time.Duration
	// KeepAlive is the interval of keepalive requests (default 15s); a host that stops answering is disconnected.
	KeepAlive time.Duration
	// FirstOutputTimeout bounds the wait for a command's first byte of output after the session is opened (default
	// 60s): a host that accepts the connection and stays silent is given up on, as unreachable. CAPR's commands
	// print their process group first thing.
	FirstOutputTimeout time.Duration
	// Log receives the commands' output, line by line, redacted.
	Log logr.Logger
	// Secrets are strings never to be logged or returned in errors (key material, tokens, bootstrap data); the
	// values found inside them (tokens, keys) and their base64 forms are redacted wherever they appear in a line,
	// and a line that is a piece of one (re-wrapped, or base64 wrapped) is redacted whole.
	Secrets []string
}

// Client is a connection to a host.
type Client struct {
	cfg     Config
	client  *ssh.Client
	bastion *ssh.Client
	redact  *redactor
	closed  chan struct{}
	once    sync.Once
}

// ParsePrivateKey parses a PEM or OpenSSH private key, encrypted when passphrase is not empty.
func ParsePrivateKey(key, passphrase []byte) (ssh.Signer, error) {
	var (
		s   ssh.Signer
		err error
	)
	if len(passphrase) > 0 {
		s, err = ssh.ParsePrivateKeyWithPassphrase(key, passphrase)
	} else {
		s, err = ssh.ParsePrivateKey(key)
	}
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, errors.New("the SSH private key is encrypted: add its passphrase to the Secret under the key 'passphrase'")
		}
		// Never include the key in the error.
		return nil, errors.New("the SSH private key cannot be parsed: it must be a PEM or OpenSSH private key")
	}
	return s, nil
}

// Dial connects to the host (through the bastion, if any) and verifies its key.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	if cfg.FirstOutputTimeout == 0 {
		cfg.FirstOutputTimeout = 60 * time.Second
	}
	c := &Client{cfg: cfg, redact: newRedactor(cfg.Secrets), closed: make(chan struct{})}
	var conn net.Conn
	var err error
	if cfg.Bastion != nil {
		if c.bastion, err = c.handshake(ctx, nil, *cfg.Bastion); err != nil {
			return nil, fmt.Errorf("bastion %s: %w", cfg.Bastion.HostPort(), markBastion(err))
		}
		dialCtx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		conn, err = c.bastion.DialContext(dialCtx, "tcp", cfg.HostPort())
		cancel()
		if err != nil {
			_ = c.bastion.Close()
			return nil, classifyDial(cfg.HostPort()+" via bastion", err)
		}
	}
	if c.client, err = c.handshake(ctx, conn, cfg.Endpoint); err != nil {
		if c.bastion != nil {
			_ = c.bastion.Close()
		}
		return nil, err
	}
	go c.keepAlive()
	return c, nil
}

// handshake opens the SSH connection to one hop, over conn when given (a bastion tunnel), else over a new TCP
// connection, accepting only the hop's pinned keys.
func (c *Client) handshake(ctx context.Context, conn net.Conn, ep Endpoint) (*ssh.Client, error) {
	pinned, err := parseHostKeys(ep.HostKeys)
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return nil, err
	}
	return c.dialHop(ctx, conn, ep, verifyHostKey(pinned))
}

// dialHop dials and runs the SSH handshake with one hop, checking its key with verify. The dial and handshake end
// by min(DialTimeout, ctx's deadline).
func (c *Client) dialHop(ctx context.Context, conn net.Conn, ep Endpoint, verify ssh.HostKeyCallback) (*ssh.Client, error) {
	addr := ep.HostPort()
	deadline := time.Now().Add(c.cfg.DialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// A tunnelled connection (through a bastion) ignores SetDeadline: the context bounds the handshake instead.
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if conn == nil {
		var err error
		dialer := net.Dialer{Deadline: deadline}
		if conn, err = dialer.DialContext(ctx, "tcp", addr); err != nil {
			return nil, classifyDial(addr, err)
		}
	}
	pinned, _ := parseHostKeys(ep.HostKeys)
	config := &ssh.ClientConfig{
		User:            ep.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(ep.Signer)},
		HostKeyCallback: verify,
		Timeout:         time.Until(deadline),
	}
	if len(pinned) > 0 {
		// Ask for the pinned key types, so a host with several keys presents one we know.
		config.HostKeyAlgorithms = hostKeyAlgorithms(pinned)
	}
	_ = conn.SetDeadline(deadline)
	// A cancelled context closes the connection, which ends the handshake.
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = conn.Close()
		case <-done:
		}
	}()
	sshConn, chans, reqs, err := ssh.NewClientConn(conn, addr, config)
	close(done)
	if err != nil {
		_ = conn.Close()
		if ctx.Err() != nil && !errors.Is(err, ErrHostKeyMismatch) && !errors.Is(err, ErrHostKeyUnknown) {
			return nil, classifyDial(addr, ctx.Err())
		}
		return nil, classifyDial(addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(sshConn, chans, reqs), nil
}

func parseHostKeys(keys []string) ([]ssh.PublicKey, error) {
	out := make([]ssh.PublicKey, 0, len(keys))
	for _, k := range keys {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
		if err != nil {
			return nil, fmt.Errorf("%w: a pinned host key does not parse: %w", ErrHostKeyMismatch, err)
		}
		out = append(out, pk)
	}
	return out, nil
}

func hostKeyAlgorithms(keys []ssh.PublicKey) []string {
	var algos []string
	add := func(a ...string) {
		for _, x := range a {
			if !containsString(algos, x) {
				algos = append(algos, x)
			}
		}
	}
	for _, k := range keys {
		if k.Type() == ssh.KeyAlgoRSA {
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		} else {
			add(k.Type())
		}
	}
	return algos
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// verifyHostKey accepts any pinned key and refuses every other key, and any key when none is pinned. The key is
// never ignored.
func verifyHostKey(pinned []ssh.PublicKey) ssh.HostKeyCallback {
	return func(hostname string, _ net.Addr, key ssh.PublicKey) error {
		for _, p := range pinned {
			if bytes.Equal(p.Marshal(), key.Marshal()) {
				return nil
			}
		}
		if len(pinned) > 0 {
			e := &HostKeyMismatchError{Host: hostname, Presented: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))}
			for _, p := range pinned {
				e.Pinned = append(e.Pinned, ssh.FingerprintSHA256(p))
			}
			return e
		}
		return fmt.Errorf("%w: %s presented %s %s and no host key is pinned; add the host's key to hostKeys",
			ErrHostKeyUnknown, hostname, key.Type(), ssh.FingerprintSHA256(key))
	}
}

// errScanned ends a handshake once the host has presented its key.
var errScanned = errors.New("host key read")

// ScanHostKey reads the key a host presents, without logging in or sending anything but the key exchange, so that
// the caller can pin it before the first connection that carries data. With a bastion whose key is not pinned it
// reads the bastion's key (bastion is true); with a pinned bastion it logs in to the bastion and reads the target's
// key through it. The key is in authorized_keys format.
func ScanHostKey(ctx context.Context, cfg Config) (key string, bastion bool, err error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	c := &Client{cfg: cfg, redact: newRedactor(cfg.Secrets), closed: make(chan struct{})}
	var conn net.Conn
	if b := cfg.Bastion; b != nil {
		if len(b.HostKeys) == 0 {
			key, err := c.scan(ctx, nil, *b)
			if err != nil {
				return "", true, fmt.Errorf("bastion %s: %w", b.HostPort(), err)
			}
			return key, true, nil
		}
		jump, err := c.handshake(ctx, nil, *b)
		if err != nil {
			return "", true, fmt.Errorf("bastion %s: %w", b.HostPort(), markBastion(err))
		}
		defer func() { _ = jump.Close() }()
		dialCtx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		conn, err = jump.DialContext(dialCtx, "tcp", cfg.HostPort())
		cancel()
		if err != nil {
			return "", false, classifyDial(cfg.HostPort()+" via bastion", err)
		}
	}
	key, err = c.scan(ctx, conn, cfg.Endpoint)
	return key, false, err
}

// scan runs the key exchange with one hop and returns the key it presented.
func (c *Client) scan(ctx context.Context, conn net.Conn, ep Endpoint) (string, error) {
	var key string
	ep.HostKeys = nil
	_, err := c.dialHop(ctx, conn, ep, func(_ string, _ net.Addr, k ssh.PublicKey) error {
		key = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
		return errScanned
	})
	if key != "" {
		return key, nil
	}
	return "", err
}

func (c *Client) keepAlive() {
	t := time.NewTicker(c.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
			errc := make(chan error, 1)
			go func() {
				_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
				errc <- err
			}()
			select {
			case err := <-errc:
				if err != nil {
					_ = c.Close()
					return
				}
			case <-time.After(c.cfg.KeepAlive):
				_ = c.Close()
				return
			case <-c.closed:
				return
			}
		}
	}
}

// Close closes the connection (and the bastion's).
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.client.Close()
		if c.bastion != nil {
			_ = c.bastion.Close()
		}
	})
	return err
}

// pidMarker starts the line through which a command reports its process group, so it can be stopped.
const pidMarker = "capr-process-group="

// Command returns the remote command line for a shell script: `setsid -w sh -c <script>`, under `sudo -n --` when
// Sudo is set. The script runs in its own process group, whose id it reports first on stderr, so that a cancelled
// command can be stopped with everything it started. The script is quoted by a shell quoter, never pasted.
func (c *Client) Command(script string) string {
	return c.sudo("setsid -w sh -c " + shellescape.Quote("echo "+pidMarker+"$$ >&2; "+script))
}

func (c *Client) sudo(cmd string) string {
	if c.cfg.Sudo {
		return "sudo -n -- " + cmd
	}
	return cmd
}

// validProcessGroup says whether a process-group id the host reported may be put in a kill command: a number
// above 1, never text a host could use to run something else, nor -1 (every process).
func validProcessGroup(pgid string) bool {
	n, err := strconv.Atoi(pgid)
	return err == nil && n > 1 && strconv.Itoa(n) == pgid
}

// stop terminates a command's process group on the host, over a new session.
func (c *Client) stop(pgid string) {
	if !validProcessGroup(pgid) {
		c.cfg.Log.Info("Not stopping the remote command: the host reported no valid process group")
		return
	}
	session, err := c.client.NewSession()
	if err != nil {
		return
	}
	defer session.Close()
	_ = session.Run(c.sudo("kill -TERM -" + pgid)) // no "--": dash's kill takes it for a process id
}

// Run runs a shell script on the host with stdin (may be nil), streaming its output to the logger. A cancelled
// context stops the remote command (its whole process group) and closes the session.
func (c *Client) Run(ctx context.Context, script string, stdin io.Reader) error {
	return c.run(ctx, script, stdin, nil)
}

// Output runs a shell script like Run, with stdin (may be nil), and returns its standard output, redacted (up to
// 64 KiB).
func (c *Client) Output(ctx context.Context, script string, stdin io.Reader) (string, error) {
	var out limitedBuffer
	err := c.run(ctx, script, stdin, &out)
	return out.String(), err
}

func (c *Client) run(ctx context.Context, script string, stdin io.Reader, stdoutCapture *limitedBuffer) error {
	out := newOutput()
	// A host that accepts the connection and then sends nothing (no session, no exec reply, no first byte: CAPR's
	// commands print their process group first) is abandoned after FirstOutputTimeout instead of holding the
	// caller for its whole deadline.
	silent := make(chan struct{})
	watch := time.AfterFunc(c.cfg.FirstOutputTimeout, func() {
		select {
		case <-out.answered:
		default:
			close(silent)
		}
	})
	defer watch.Stop()
	silentErr := func() error {
		return fmt.Errorf("%w: %s accepted the SSH connection but sent nothing within %s (%w); nothing was seen to run and the command was abandoned",
			ErrUnreachable, c.cfg.HostPort(), c.cfg.FirstOutputTimeout, ErrTimeout)
	}
	// Opening the session and starting the command wait for the host's replies: silence or cancellation then
	// closes the connection, which ends the wait.
	var startMu sync.Mutex
	startDone := false
	startWatch := make(chan struct{})
	defer close(startWatch)
	go func() {
		select {
		case <-silent:
		case <-ctx.Done():
		case <-startWatch:
			return
		}
		startMu.Lock()
		defer startMu.Unlock()
		if !startDone {
			_ = c.Close()
		}
	}()
	startFailed := func(err error) error {
		select {
		case <-silent:
			return silentErr()
		default:
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return classifyDial(c.cfg.HostPort(), err)
	}
	session, err := c.client.NewSession()
	if err != nil {
		return startFailed(err)
	}
	defer session.Close()
	session.Stdin = stdin
	tail := newTail(20)
	pgid := make(chan string, 1)
	var wg sync.WaitGroup
	pipe := func(r io.Reader, stream string) {
		defer wg.Done()
		out.read(r, func(text string, cut bool) {
			if id, ok := strings.CutPrefix(text, pidMarker); ok && stream == "stderr" {
				select {
				case pgid <- id:
				default:
				}
				return
			}
			var line string
			if cut {
				line = c.redact.ReplaceCut(text)
			} else {
				line = c.redact.Replace(text)
			}
			if stream == "stdout" && stdoutCapture != nil {
				stdoutCapture.add(line)
			}
			tail.add(Truncate(line, 512))
			c.cfg.Log.V(4).Info("Remote output", "stream", stream, "line", line)
		})
	}
	stdout, err := session.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := session.StderrPipe()
	if err != nil {
		return err
	}
	wg.Add(2)
	go pipe(stdout, "stdout")
	go pipe(stderr, "stderr")
	if err := session.Start(c.Command(script)); err != nil {
		return startFailed(err)
	}
	startMu.Lock()
	startDone = true
	startMu.Unlock()
	waited := make(chan error, 1)
	go func() {
		wg.Wait()
		waited <- session.Wait()
	}()
	select {
	case err = <-waited:
	case <-silent:
		_ = session.Signal(ssh.SIGTERM)
		_ = session.Close()
		return silentErr()
	case <-ctx.Done():
		_ = session.Signal(ssh.SIGTERM)
		select {
		case id := <-pgid:
			c.stop(id)
		case <-time.After(2 * time.Second): // the command never started
		}
		_ = session.Close()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w: command on %s: %w", ErrTimeout, c.cfg.HostPort(), ctx.Err())
		}
		return ctx.Err()
	}
	if n := out.droppedBytes(); n > 0 {
		c.cfg.Log.Info("Remote output truncated: the rest was read and dropped", "droppedBytes", n, "keptBytes", outputBudget)
	}
	if err == nil {
		return nil
	}
	lines := tail.lines()
	if c.cfg.Sudo && sudoRefused(lines) {
		return fmt.Errorf("%w: user %q on %s cannot run sudo without a password; grant it NOPASSWD in sudoers, or log in as root",
			ErrSudo, c.cfg.User, c.cfg.HostPort())
	}
	code := -1
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitStatus()
	} else if !errors.Is(err, io.EOF) {
		var missing *ssh.ExitMissingError
		if !errors.As(err, &missing) {
			return fmt.Errorf("%w: %s: %w", ErrUnreachable, c.cfg.HostPort(), err)
		}
	}
	return &CommandError{Command: shorten(c.redact.Replace(script), 200), ExitCode: code, Tail: lines}
}

func sudoRefused(lines []string) bool {
	for _, l := range lines {
		if strings.Contains(l, "sudo: a password is required") || strings.Contains(l, "sudo: a terminal is required") ||
			strings.Contains(l, "is not in the sudoers file") || strings.Contains(l, "is not allowed to execute") {
			return true
		}
	}
	return false
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// tail keeps the last n lines.
type tail struct {
	mu  sync.Mutex
	n   int
	buf []string
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, line)
	if len(t.buf) > t.n {
		t.buf = t.buf[len(t.buf)-t.n:]
	}
}

func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}
