//go:build integration

package sshrunner_test

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// logSink collects everything the runner logs.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) config(h *sshdtest.Host, user string) sshrunner.Config {
	return sshrunner.Config{
		Endpoint: sshrunner.Endpoint{Address: h.Address, Port: h.Port, User: user, Signer: h.ClientSigner, HostKeys: []string{h.HostKey}},
		Log: funcr.New(func(prefix, args string) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.lines = append(l.lines, args)
		}, funcr.Options{Verbosity: 10}),
		DialTimeout: 5 * time.Second,
	}
}

func (l *logSink) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestHostKeys checks that Dial accepts only pinned keys (never a host with none), and that ScanHostKey reads a
// host's key without logging in.
func TestHostKeys(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	logs := &logSink{}

	cfg := logs.config(h, "root")
	c, err := sshrunner.Dial(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.Run(ctx, "true", nil)).To(Succeed())
	g.Expect(c.Close()).To(Succeed())

	// Nothing pinned: refused, whatever the host presents.
	cfg.HostKeys = nil
	_, err = sshrunner.Dial(ctx, cfg)
	g.Expect(err).To(MatchError(sshrunner.ErrHostKeyUnknown))
	g.Expect(err.Error()).To(ContainSubstring("no host key is pinned"))

	// The scan reads the key without logging in: a client key the host does not know does not matter.
	other := sshdtest.Start(t)
	scanCfg := cfg
	scanCfg.Signer = other.ClientSigner
	key, bastion, err := sshrunner.ScanHostKey(ctx, scanCfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(bastion).To(BeFalse())
	g.Expect(key).To(Equal(h.HostKey))

	// A pinned key that is no longer the host's is a mismatch.
	old := h.HostKey
	h.RotateHostKey()
	h.Restart()
	cfg.HostKeys = []string{old}
	_, err = sshrunner.Dial(ctx, cfg)
	g.Expect(err).To(MatchError(sshrunner.ErrHostKeyMismatch))
	g.Expect(err.Error()).To(ContainSubstring("not among the 1 pinned key(s)"))
	// The error says what was met, so a person can compare and accept the new key: the fingerprints are the ones
	// ssh-keygen -l prints.
	var mm *sshrunner.HostKeyMismatchError
	g.Expect(errors.As(err, &mm)).To(BeTrue())
	g.Expect(mm.Presented).To(Equal(h.HostKey))
	g.Expect(mm.Bastion).To(BeFalse())
	g.Expect(mm.Pinned).To(Equal([]string{sshrunner.Fingerprint(old)}))
	keygen := exec.Command("ssh-keygen", "-lf", "-")
	keygen.Stdin = strings.NewReader(h.HostKey + "\n")
	printed, kerr := keygen.Output()
	g.Expect(kerr).NotTo(HaveOccurred())
	g.Expect(strings.Fields(string(printed))).To(ContainElement(sshrunner.Fingerprint(h.HostKey)))
	g.Expect(err.Error()).To(ContainSubstring(sshrunner.Fingerprint(h.HostKey)))
	g.Expect(err.Error()).To(ContainSubstring(sshrunner.Fingerprint(old)))
	// Any of several pinned keys is accepted, so keys can be rotated.
	cfg.HostKeys = []string{old, h.HostKey}
	c, err = sshrunner.Dial(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	_ = c.Close()
}

func TestDialFailures(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	logs := &logSink{}

	// A key the host does not know.
	other := sshdtest.Start(t)
	cfg := logs.config(h, "root")
	cfg.Signer = other.ClientSigner
	_, err := sshrunner.Dial(ctx, cfg)
	g.Expect(err).To(MatchError(sshrunner.ErrAuthFailed))

	// Nothing listening.
	cfg = logs.config(h, "root")
	h.Stop()
	_, err = sshrunner.Dial(ctx, cfg)
	g.Expect(err).To(MatchError(sshrunner.ErrUnreachable))

	// A server that accepts TCP and never speaks SSH: the handshake deadline ends the dial.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	defer silent.Close()
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	cfg.Address, cfg.Port = "127.0.0.1", silent.Addr().(*net.TCPAddr).Port
	cfg.DialTimeout = 500 * time.Millisecond
	start := time.Now()
	_, err = sshrunner.Dial(ctx, cfg)
	g.Expect(err).To(MatchError(sshrunner.ErrTimeout))
	g.Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
}

func TestRunTimeoutCancelAndFailure(t *testing.T) {
	g := NewWithT(t)
	h := sshdtest.Start(t)
	logs := &logSink{}
	c, err := sshrunner.Dial(context.Background(), logs.config(h, "root"))
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()

	// A deadline ends a long command, and the command is stopped on the host.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = c.Run(ctx, "echo $$ > /run/sleeper.pid; sleep 30", nil)
	g.Expect(err).To(MatchError(sshrunner.ErrTimeout))
	g.Eventually(func() string {
		out, _ := h.Exec(`kill -0 "$(cat /run/sleeper.pid)" 2>&1 && echo alive || echo gone`)
		return out
	}, 10*time.Second, 100*time.Millisecond).Should(ContainSubstring("gone"))

	// Cancelling returns at once.
	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	err = c.Run(ctx, "sleep 30", nil)
	g.Expect(errors.Is(err, context.Canceled)).To(BeTrue())

	// A failing command reports its status and last lines.
	err = c.Run(context.Background(), "echo first; echo 'it broke' >&2; exit 3", nil)
	var cmdErr *sshrunner.CommandError
	g.Expect(errors.As(err, &cmdErr)).To(BeTrue())
	g.Expect(cmdErr.ExitCode).To(Equal(3))
	g.Expect(cmdErr.Tail).To(ContainElement("it broke"))
	g.Expect(err).To(MatchError(sshrunner.ErrCommandFailed))
}

func TestSudo(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t, sshdtest.User{Name: "capr", Sudo: true}, sshdtest.User{Name: "nosudo"})
	logs := &logSink{}

	cfg := logs.config(h, "capr")
	cfg.Sudo = true
	c, err := sshrunner.Dial(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.Run(ctx, `id -u > /run/whoami; echo "it's quoted: $HOME" > /run/quoted`, nil)).To(Succeed())
	_ = c.Close()
	out, err := h.Exec("cat /run/whoami /run/quoted")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(HavePrefix("0\nit's quoted: "))

	cfg = logs.config(h, "nosudo")
	cfg.Sudo = true
	c, err = sshrunner.Dial(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	err = c.Run(ctx, "true", nil)
	g.Expect(err).To(MatchError(sshrunner.ErrSudo))
	g.Expect(err.Error()).To(ContainSubstring(`user "nosudo"`))
	g.Expect(err.Error()).To(ContainSubstring("NOPASSWD"))
}

func TestBastion(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	jump := sshdtest.Start(t)
	target := sshdtest.Start(t)
	logs := &logSink{}
	cfg := logs.config(target, "root")
	jumpCfg := logs.config(jump, "root")
	cfg.Bastion = &jumpCfg.Endpoint
	c, err := sshrunner.Dial(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.Run(ctx, "touch /run/reached", nil)).To(Succeed())
	_ = c.Close()
	_, err = target.Exec("test -f /run/reached")
	g.Expect(err).NotTo(HaveOccurred())
	_, err = jump.Exec("test -f /run/reached")
	g.Expect(err).To(HaveOccurred(), "the command ran on the target, not on the bastion")

	// The bastion's key is verified too, and required.
	cfg.Bastion.HostKeys = []string{target.HostKey}
	_, err = sshrunner.Dial(ctx, cfg)
	g.Expect(err).To(MatchError(sshrunner.ErrHostKeyMismatch))
	g.Expect(err.Error()).To(ContainSubstring("bastion"))
	var mm *sshrunner.HostKeyMismatchError
	g.Expect(errors.As(err, &mm)).To(BeTrue())
	g.Expect(mm.Bastion).To(BeTrue(), "the mismatch is marked as the bastion's")
	g.Expect(mm.Presented).To(Equal(jump.HostKey))
	cfg.Bastion.HostKeys = nil
	_, err = sshrunner.Dial(ctx, cfg)
	g.Expect(err).To(MatchError(sshrunner.ErrHostKeyUnknown))

	// Scanning: first the bastion's key (nothing else is done), then, once it is pinned, the target's through it.
	cfg.HostKeys = nil
	key, bastion, err := sshrunner.ScanHostKey(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(bastion).To(BeTrue())
	g.Expect(key).To(Equal(jump.HostKey))
	cfg.Bastion.HostKeys = []string{key}
	key, bastion, err = sshrunner.ScanHostKey(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(bastion).To(BeFalse())
	g.Expect(key).To(Equal(target.HostKey))
}

func TestRedaction(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	logs := &logSink{}
	cfg := logs.config(h, "root")
	const token = "abcdef.0123456789abcdef"
	cfg.Secrets = []string{token, string(h.ClientKeyPEM)}
	c, err := sshrunner.Dial(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	g.Expect(c.Run(ctx, "echo joining with token "+token, nil)).To(Succeed())
	err = c.Run(ctx, "echo bad token "+token+" >&2; exit 1", nil)
	g.Expect(err).To(HaveOccurred())
	g.Expect(err.Error()).NotTo(ContainSubstring(token))
	g.Expect(logs.text()).To(ContainSubstring("joining with token [REDACTED]"))
	g.Expect(logs.text()).NotTo(ContainSubstring(token))
}

// TestRedactionInsideLines checks that values inside bootstrap data (a token in a YAML line, a certificate key, a
// line of a key) are redacted wherever they appear in an output line, not only as whole lines, and that a
// bootstrap token is redacted even when it is not among the secrets.
func TestRedactionInsideLines(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	logs := &logSink{}
	cfg := logs.config(h, "root")
	const (
		token   = "q1w2e3.r4t5y6u7i8o9p0a1"
		certKey = "8f3c2a9d4e5b6a7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"
		other   = "zyxwvu.0987654321zyxwvu"
	)
	data := "#cloud-config\nwrite_files:\n- path: /run/kubeadm.yaml\n  content: |\n    discovery:\n      bootstrapToken:\n        token: " + token +
		"\n    certificateKey: \"" + certKey + "\"\n"
	cfg.Secrets = []string{data, string(h.ClientKeyPEM)}
	keyLine := strings.Split(string(h.ClientKeyPEM), "\n")[2]
	c, err := sshrunner.Dial(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	err = c.Run(ctx, "echo 'kubeadm join --token "+token+" --certificate-key="+certKey+"'; echo 'key part "+keyLine+" ends'; echo 'fresh "+other+"' >&2; exit 1", nil)
	g.Expect(err).To(HaveOccurred())
	for _, text := range []string{err.Error(), logs.text()} {
		for _, secret := range []string{token, certKey, keyLine, other} {
			g.Expect(text).NotTo(ContainSubstring(secret))
		}
	}
	g.Expect(logs.text()).To(ContainSubstring("kubeadm join --token [REDACTED] --certificate-key=[REDACTED]"))
	g.Expect(err.Error()).To(ContainSubstring("fresh [REDACTED]"))
}
