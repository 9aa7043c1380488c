//go:build integration

package sshrunner_test

import (
	"context"
	"encoding/base64"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// TestOverlongLineIsDrained: a line longer than the line limit (3 MiB, no newline) used to stop the reader, so
// the host blocked on a full channel and a command that succeeded was reported as timed out. Now the rest of the
// line is read and dropped, the command completes, and the kept part is logged marked as cut.
func TestOverlongLineIsDrained(t *testing.T) {
	g := NewWithT(t)
	h := sshdtest.Start(t)
	logs := &logSink{}
	c, err := sshrunner.Dial(context.Background(), logs.config(h, "root"))
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	g.Expect(c.Run(ctx, "head -c 3145728 /dev/zero | tr '\\0' x; echo; echo after", nil)).To(Succeed())
	g.Expect(time.Since(start)).To(BeNumerically("<", 15*time.Second))
	g.Expect(logs.text()).To(ContainSubstring("(line cut)"))
	g.Expect(logs.text()).To(ContainSubstring(`"line"="after"`), "lines after the long one are still read")
	g.Expect(len(logs.text())).To(BeNumerically("<", 256*1024))

	// A long line without a newline at the very end, and a failure status: the status is reported.
	err = c.Run(ctx, "head -c 3145728 /dev/zero | tr '\\0' x; exit 4", nil)
	var cmdErr *sshrunner.CommandError
	g.Expect(errors.As(err, &cmdErr)).To(BeTrue(), "got %v", err)
	g.Expect(cmdErr.ExitCode).To(Equal(4))
}

// countingSink counts what the runner logs, keeping only the messages (not the lines), so that the test measures
// the runner's memory, not its own.
type countingSink struct {
	lines     atomic.Int64
	mu        sync.Mutex
	truncated []string
}

// TestOutputIsBudgeted: a host printing 200 MB (a flood of lines) used to have every line redacted and logged.
// Now at most the budget is processed, the rest is read and counted with one "truncated" log line, the heap stays
// bounded, and the command's exit status is reported.
func TestOutputIsBudgeted(t *testing.T) {
	g := NewWithT(t)
	h := sshdtest.Start(t)
	sink := &countingSink{}
	cfg := (&logSink{}).config(h, "root")
	cfg.Log = funcr.New(func(_, args string) {
		if strings.Contains(args, "truncated") {
			sink.mu.Lock()
			sink.truncated = append(sink.truncated, args)
			sink.mu.Unlock()
			return
		}
		sink.lines.Add(1)
	}, funcr.Options{Verbosity: 10})
	cfg.Secrets = []string{"a secret that is never printed 0123456789"}
	c, err := sshrunner.Dial(context.Background(), cfg)
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	out, err := c.Output(ctx, "yes 'a line of a flood of output' | head -c 200000000; exit 7", nil)
	close(done)
	var cmdErr *sshrunner.CommandError
	g.Expect(errors.As(err, &cmdErr)).To(BeTrue(), "got %v", err)
	g.Expect(cmdErr.ExitCode).To(Equal(7))
	g.Expect(len(out)).To(BeNumerically("<=", 64*1024))
	g.Expect(sink.lines.Load()).To(BeNumerically("<", 8<<20/64), "more lines were logged than the budget allows")
	g.Expect(sink.truncated).To(HaveLen(1))
	g.Expect(sink.truncated[0]).To(ContainSubstring("droppedBytes"))
	growth := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %d KiB at most while 200 MB were read", growth/1024)
	g.Expect(growth).To(BeNumerically("<", 64<<20))
}

// TestSilentHostIsAbandoned: a host that accepts the SSH session and never answers (here its setsid hangs, so not
// even CAPR's first line arrives) used to hold the caller for the whole command deadline (30 minutes for a
// bootstrap). Now the command is abandoned after FirstOutputTimeout as unreachable; a slow command that has
// answered is not.
func TestSilentHostIsAbandoned(t *testing.T) {
	g := NewWithT(t)
	silent := sshdtest.StartWith(t, sshdtest.Options{Sbin: sshdtest.StandIns(t, map[string]string{"setsid": "exec sleep 600"})})
	logs := &logSink{}
	cfg := logs.config(silent, "root")
	cfg.FirstOutputTimeout = 2 * time.Second
	c, err := sshrunner.Dial(context.Background(), cfg)
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	err = c.Run(ctx, "sleep 600", nil)
	g.Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
	g.Expect(err).To(MatchError(sshrunner.ErrUnreachable))
	g.Expect(err).To(MatchError(sshrunner.ErrTimeout))
	g.Expect(err.Error()).To(ContainSubstring("sent nothing within 2s"))

	// A normal host answers at once (CAPR's first line), so a command that then stays silent longer runs on.
	h := sshdtest.Start(t)
	cfg = logs.config(h, "root")
	cfg.FirstOutputTimeout = time.Second
	c2, err := sshrunner.Dial(context.Background(), cfg)
	g.Expect(err).NotTo(HaveOccurred())
	defer c2.Close()
	g.Expect(c2.Run(ctx, "sleep 3; echo done", nil)).To(Succeed())
}

// TestHostGeneratedSecretsAreRedacted: what a host prints that CAPR never had (kubeadm's certificate key and join
// token, a k0s join token), a secret's base64 form (at any alignment), and a secret re-wrapped across lines (base64
// wrapped at 76 columns, or folded text) used to reach the logs and the error tail as printed. None of it does now;
// a CA certificate hash, which is no secret, stays readable.
func TestHostGeneratedSecretsAreRedacted(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	logs := &logSink{}
	cfg := logs.config(h, "root")
	const (
		certKey  = "5d1b9a6c3e7f20481d6c9b3a5e7f0c2d4b6a8e1f3c5d7b9a0e2c4f6d8b1a3c5e"
		token    = "9xk2mb.q8w7e6r5t4y3u2i1"
		caHash   = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
		password = "Corr3ct-Horse-Battery"
		prose    = "the admin password of the cluster is hunter2 and the backup passphrase is tr0ub4dor and 3 more words"
	)
	cfg.Secrets = []string{"password: " + password, prose, string(h.ClientKeyPEM)}
	c, err := sshrunner.Dial(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()

	var texts []string
	run := func(script, stdin string) {
		err := c.Run(ctx, script+"; exit 1", strings.NewReader(stdin))
		g.Expect(err).To(MatchError(sshrunner.ErrCommandFailed))
		texts = append(texts, err.Error())
	}
	run("printf 'Using certificate key:\\n%s\\n' "+certKey, "")
	run("echo kubeadm join 10.0.0.1:6443 --token "+token+" --discovery-token-ca-cert-hash "+caHash+" --control-plane --certificate-key "+certKey, "")
	k0sToken := "H4sIAAAAAAAC/2yVTZOiOhSG9/kV7nuqBPyoqVkqEgURiSRAdkIi/RoiS79rYzdd1fOvb/dQ+kx3NXVPqeOlXtv3vNkOq+99wJKeekV" +
		"G9f8i6Kp3j9yqf2zU/Gmf8b6eL7nnbwWn1uJo0QCDV2r3f6F5H6GqWwj+ATS1ZFWFw3Ca1nXBsfGLa"
	run("echo "+k0sToken, "")
	run("base64", password)
	run("printf 'xx%s' \"$(cat)\" | base64", password)
	run("base64", string(h.ClientKeyPEM))
	run("fold -w 24", prose)
	texts = append(texts, logs.text())
	for _, text := range texts {
		g.Expect(text).NotTo(ContainSubstring(certKey))
		g.Expect(text).NotTo(ContainSubstring(token))
		g.Expect(text).NotTo(ContainSubstring("H4sIAAAA"))
		g.Expect(text).NotTo(ContainSubstring(password))
		g.Expect(text).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString([]byte(password))[:20]))
		g.Expect(text).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString([]byte("xx" + password))[4:20]))
		for _, word := range []string{"hunter2", "tr0ub4dor", "backup passp"} {
			g.Expect(text).NotTo(ContainSubstring(word))
		}
		encoded := base64.StdEncoding.EncodeToString(h.ClientKeyPEM)
		for i := 0; i+76 <= len(encoded); i += 76 {
			g.Expect(text).NotTo(ContainSubstring(encoded[i : i+20]))
		}
		g.Expect(text).NotTo(ContainSubstring(encoded[len(encoded)/76*76:]))
	}
	g.Expect(logs.text()).To(ContainSubstring("--discovery-token-ca-cert-hash " + caHash))
	g.Expect(logs.text()).To(ContainSubstring("--token [REDACTED]"))
	g.Expect(logs.text()).To(ContainSubstring("--certificate-key [REDACTED]"))
}
