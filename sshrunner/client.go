// Package sshrunner runs commands and uploads files on hosts over SSH, with verified host keys, deadlines,
// cancellation, sudo, redacted streamed output and typed errors.
package sshrunner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

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
	// Log receives the commands' output, line by line, redacted.
	Log logr.Logger
	// Secrets are strings never to be logged or returned in errors (key material, tokens, bootstrap data); the
	// values found inside them (tokens, keys) are redacted wherever they appear in a line.
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

// Output runs a shell script like Run, with stdin (may be nil), and returns its standard output (up to 64 KiB).
func (c *Client) Output(ctx context.Context, script string, stdin io.Reader) (string, error) {
	var out limitedBuffer
	err := c.run(ctx, script, stdin, &out)
	return out.String(), err
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *limitedBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < 64*1024 {
		b.buf.WriteString(line + "\n")
	}
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (c *Client) run(ctx context.Context, script string, stdin io.Reader, stdoutCapture *limitedBuffer) error {
	session, err := c.client.NewSession()
	if err != nil {
		return classifyDial(c.cfg.HostPort(), err)
	}
	defer session.Close()
	session.Stdin = stdin
	tail := newTail(20)
	pgid := make(chan string, 1)
	var wg sync.WaitGroup
	pipe := func(r io.Reader, stream string) {
		defer wg.Done()
		scanner := bufio.NewScanner(r)
		scanner.Buffer(make([]byte, 64*1024), 1024*1024)
		for scanner.Scan() {
			if id, ok := strings.CutPrefix(scanner.Text(), pidMarker); ok && stream == "stderr" {
				select {
				case pgid <- id:
				default:
				}
				continue
			}
			if stream == "stdout" && stdoutCapture != nil {
				stdoutCapture.add(scanner.Text())
			}
			line := c.redact.Replace(scanner.Text())
			tail.add(Truncate(line, 512))
			c.cfg.Log.V(4).Info("Remote output", "stream", stream, "line", line)
		}
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
		return classifyDial(c.cfg.HostPort(), err)
	}
	waited := make(chan error, 1)
	go func() {
		wg.Wait()
		waited <- session.Wait()
	}()
	select {
	case err = <-waited:
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

// redactor hides secrets in text: every secret, each of its lines, and each value inside it that looks like key
// material or a token (see secretWords), wherever it appears in a line; and anything shaped like a Kubernetes
// bootstrap token, secret or not.
type redactor struct {
	r *strings.Replacer
}

const redacted = "[REDACTED]"

// bootstrapToken is the shape of a kubeadm bootstrap token ("abcdef.0123456789abcdef").
var bootstrapToken = regexp.MustCompile(`\b[a-z0-9]{6}\.[a-z0-9]{16}\b`)

func newRedactor(secrets []string) *redactor {
	var pairs []string
	seen := map[string]bool{}
	add := func(s string, minLen int) {
		s = strings.TrimSpace(s)
		if len(s) < minLen || seen[s] {
			return
		}
		seen[s] = true
		pairs = append(pairs, s, redacted)
	}
	for _, s := range secrets {
		add(s, 8)
		for _, line := range strings.Split(s, "\n") {
			add(line, 8)
		}
		for _, w := range secretWords(s) {
			add(w, 16)
		}
	}
	// Longer first: a secret that contains another is replaced whole.
	type pair struct{ old, new string }
	ps := make([]pair, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		ps = append(ps, pair{pairs[i], pairs[i+1]})
	}
	sort.SliceStable(ps, func(i, j int) bool { return len(ps[i].old) > len(ps[j].old) })
	pairs = pairs[:0]
	for _, p := range ps {
		pairs = append(pairs, p.old, p.new)
	}
	return &redactor{r: strings.NewReplacer(pairs...)}
}

// Replace returns s with every secret replaced by [REDACTED].
func (r *redactor) Replace(s string) string {
	return bootstrapToken.ReplaceAllString(r.r.Replace(s), redacted)
}

// secretWords returns the values inside a secret that look like key material or tokens: runs of 16 or more
// characters between separators (space, quotes, and ,;:=()[]{}<>|&) that mix letters and digits, except file
// paths (starting with /) shorter than 40 characters.
func secretWords(s string) []string {
	words := strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || strings.ContainsRune("'\"`,;:=()[]{}<>|&", r)
	})
	var out []string
	for _, w := range words {
		if len(w) < 16 || (strings.HasPrefix(w, "/") && len(w) < 40) {
			continue
		}
		if strings.ContainsFunc(w, unicode.IsDigit) && strings.ContainsFunc(w, unicode.IsLetter) {
			out = append(out, w)
		}
	}
	return out
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
