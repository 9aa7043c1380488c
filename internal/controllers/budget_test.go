package controllers

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/bombs"
	"github.com/capr-project/cluster-api-provider-remote/test/memwatch"
)

// drainHost is a host that reads the whole bootstrap script it is sent and runs nothing.
type drainHost struct{ sent int64 }

func (h *drainHost) Run(ctx context.Context, script string, stdin io.Reader) error {
	_, err := h.Output(ctx, script, stdin)
	return err
}

func (h *drainHost) Output(_ context.Context, _ string, stdin io.Reader) (string, error) {
	if stdin != nil {
		n, err := io.Copy(io.Discard, stdin)
		h.sent += n
		return "", err
	}
	return "", nil
}

func (h *drainHost) Close() error { return nil }

// measureBootstrap runs bootstrap data through runBootstrap, as the manager does, and returns what it cost in
// memory and what reached the host. The dialer builds the real redactor (sshrunner.Dial, to a closed port) and the
// host reads the whole script, as a real run would.
func measureBootstrap(data []byte) (memwatch.Usage, int64, error) {
	host := &drainHost{}
	dial := func(ctx context.Context, cfg sshrunner.Config) (Host, error) {
		cfg.Address, cfg.Port, cfg.DialTimeout = "127.0.0.1", 1, 1
		if c, err := sshrunner.Dial(ctx, cfg); err == nil {
			_ = c.Close()
		}
		return host, nil
	}
	in := bootstrapInput{Identity: "bomb", Data: data, Config: sshrunner.Config{Log: logr.Discard(), Secrets: []string{string(data)}}}
	var err error
	use := memwatch.Measure(func() { _, err = runBootstrap(context.Background(), dial, in) })
	return use, host.sent, err
}

// TestBootstrapBombMemory measures what the manager holds for a bootstrap Secret of about 680 KiB whose 8
// gzip+base64 files decompress to 64 MiB each. The attack took the manager past 3 GiB (the plan, a copy of every
// file for the redactor, the redactor's needles, and the whole script as one string), so every replica went into
// an OOM loop. A bootstrap just within the budget (60 MiB of files) is run, streamed to the host.
func TestBootstrapBombMemory(t *testing.T) {
	g := NewWithT(t)
	data := bombs.CloudConfig(8, 64<<20)
	use, sent, err := measureBootstrap(data)
	t.Logf("a %d KiB bootstrap Secret decoding to 512 MiB: %s; %d MiB sent to the host", len(data)>>10, use, sent>>20)
	g.Expect(errors.Is(err, cloudinit.ErrTooLarge)).To(BeTrue(), "%v", err)
	g.Expect(sent).To(BeZero(), "nothing is sent")
	g.Expect(use.PeakSys).To(BeNumerically("<", 256<<20))

	data = bombs.CloudConfig(3, 20<<20)
	use, sent, err = measureBootstrap(data)
	t.Logf("a %d KiB bootstrap Secret decoding to 60 MiB: %s; %d MiB sent to the host", len(data)>>10, use, sent>>20)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(sent).To(BeNumerically(">", 80<<20), "the whole script, files in base64, reaches the host")
	g.Expect(use.PeakSys).To(BeNumerically("<", 256<<20))
}
