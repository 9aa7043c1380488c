package cloudinit_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/test/bombs"
	"github.com/capr-project/cluster-api-provider-remote/test/memwatch"
)

// TestDecompressionBombRefused: the attack was a small bootstrap Secret of many gzip+base64 files, each
// decompressing to tens of MiB: each file was capped, the whole was not, and the manager went past 3 GiB. Now the
// whole bootstrap has one budget, counted while decompressing, and the parse stops when it runs out.
func TestDecompressionBombRefused(t *testing.T) {
	g := NewWithT(t)
	data := bombs.CloudConfig(20, 16<<20) // 320 MiB decoded
	var err error
	start := time.Now()
	use := memwatch.Measure(func() { _, err = cloudinit.Parse(data, "", cloudinit.Vars{}) })
	t.Logf("a %d KiB bomb: %s, in %s", len(data)>>10, use, time.Since(start))
	g.Expect(err).To(MatchError(cloudinit.ErrTooLarge))
	g.Expect(err).NotTo(MatchError(cloudinit.ErrUnsupported))
	g.Expect(err.Error()).To(ContainSubstring("write_files[4] (/var/lib/bomb/4)"), "the first file past the budget is named")
	g.Expect(err.Error()).To(ContainSubstring("CAPR's limit for one bootstrap is 64 MiB"))
	g.Expect(err.Error()).To(ContainSubstring("fetch them in a runcmd"))
	g.Expect(time.Since(start)).To(BeNumerically("<", 20*time.Second))
	g.Expect(use.PeakHeap).To(BeNumerically("<", 120<<20), "what the parse holds stays near the 64 MiB budget")
	g.Expect(use.Allocated).To(BeNumerically("<", 150<<20))
}

// TestOneFileOverTheLimitRefused: a single file decompressing past the limit was cut at 64 MiB and written
// truncated; now it is refused.
func TestOneFileOverTheLimitRefused(t *testing.T) {
	g := NewWithT(t)
	_, err := cloudinit.Parse(bombs.CloudConfig(1, cloudinit.MaxDecodedSize+1), "", cloudinit.Vars{})
	g.Expect(err).To(MatchError(cloudinit.ErrTooLarge))

	plan, err := cloudinit.Parse(bombs.CloudConfig(2, 1<<20), "", cloudinit.Vars{})
	g.Expect(err).NotTo(HaveOccurred(), "bootstraps within the budget still decode")
	g.Expect(plan.Steps).To(HaveLen(3))
	g.Expect(plan.Steps[1].File.Content).To(Equal(make([]byte, 1<<20)))
}

// TestYAMLAliasBombRefused: the attack was a small cloud-config whose YAML aliases repeat one long string: the YAML
// decoder copies it at every alias (106 KiB decoded to 200 MiB of commands and 2.6 GiB allocated).
func TestYAMLAliasBombRefused(t *testing.T) {
	g := NewWithT(t)
	var b strings.Builder
	b.WriteString("#cloud-config\nbootcmd:\n- &x " + strings.Repeat("A", 100000) + "\n")
	for range 20 {
		b.WriteString("- plain\n")
	}
	b.WriteString("runcmd: [*x" + strings.Repeat(",*x", 1000) + "]\n")
	var err error
	use := memwatch.Measure(func() { _, err = cloudinit.Parse([]byte(b.String()), "", cloudinit.Vars{}) })
	t.Logf("a %d KiB alias bomb: %s", b.Len()>>10, use)
	g.Expect(err).To(MatchError(cloudinit.ErrTooLarge))
	g.Expect(err.Error()).To(ContainSubstring("aliases expanded"))
	g.Expect(use.Allocated).To(BeNumerically("<", 32<<20))

	// Aliases that stay small are fine.
	plan, err := cloudinit.Parse([]byte("#cloud-config\nbootcmd: [&x echo hi]\nruncmd: [*x, *x]\n"), "", cloudinit.Vars{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(plan.Steps).To(HaveLen(3))
}

// TestJinjaHostnameBombRefused: the host reports its name, which a jinja template repeats at every expression; a
// long name in a template of many expressions rendered past any bound.
func TestJinjaHostnameBombRefused(t *testing.T) {
	g := NewWithT(t)
	doc := "## template: jinja\n#cloud-config\nruncmd:\n- echo" + strings.Repeat(" {{ v1.local_hostname }}", 20000) + "\n"
	_, err := cloudinit.Parse([]byte(doc), "", cloudinit.Vars{Hostname: strings.Repeat("h", 64<<10)})
	g.Expect(err).To(MatchError(cloudinit.ErrTooLarge))
}

// TestScriptStreams: the script is made as it is read; a plan with a large file costs little beyond the plan.
func TestScriptStreams(t *testing.T) {
	g := NewWithT(t)
	content := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB
	plan := &cloudinit.Plan{Format: "cloud-config", Steps: []cloudinit.Step{
		{Source: "write_files[0]", File: &cloudinit.File{Path: "/a", Content: content, Permissions: 0o600, Owner: "root:root"}},
		{Source: "runcmd[0]", Command: "echo hi"},
	}}
	var n int64
	var err error
	use := memwatch.Measure(func() {
		r := cloudinit.NewScriptReader(plan)
		defer r.Close()
		n, err = io.Copy(io.Discard, r)
	})
	t.Logf("streaming a 32 MiB file: %s", use)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(n).To(BeNumerically(">", len(content)*4/3))
	g.Expect(use.Allocated).To(BeNumerically("<", 4<<20), "the base64 of the file is never held whole")

	small := &cloudinit.Plan{Format: "cloud-config", Steps: append([]cloudinit.Step{{Source: "x", File: &cloudinit.File{Path: "/b", Content: []byte("hello\n"), Owner: "a"}}}, plan.Steps[1:]...)}
	streamed, err := io.ReadAll(cloudinit.NewScriptReader(small))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(streamed)).To(Equal(cloudinit.Script(small)))
}
