package ignition_test

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/ignition"
	"github.com/capr-project/cluster-api-provider-remote/test/bombs"
	"github.com/capr-project/cluster-api-provider-remote/test/memwatch"
)

// TestDecompressionBombRefused: the attack was a small Ignition config of many gzip-compressed data: URLs, each
// decompressing to tens of MiB (each was capped at 64 MiB, the whole was not). Now the whole config has one
// budget, counted while decompressing.
func TestDecompressionBombRefused(t *testing.T) {
	g := NewWithT(t)
	data := bombs.Ignition(20, 16<<20) // 320 MiB decoded
	var err error
	start := time.Now()
	use := memwatch.Measure(func() { _, err = ignition.Parse(data) })
	t.Logf("a %d KiB bomb: %s, in %s", len(data)>>10, use, time.Since(start))
	g.Expect(err).To(MatchError(cloudinit.ErrTooLarge))
	g.Expect(err).NotTo(MatchError(cloudinit.ErrUnsupported))
	g.Expect(err.Error()).To(ContainSubstring("storage.files[4].contents"))
	g.Expect(time.Since(start)).To(BeNumerically("<", 20*time.Second))
	g.Expect(use.PeakHeap).To(BeNumerically("<", 120<<20))
	g.Expect(use.Allocated).To(BeNumerically("<", 150<<20))

	// One file past the limit was cut at 64 MiB and written truncated; now it is refused.
	_, err = ignition.Parse(bombs.Ignition(1, cloudinit.MaxDecodedSize+1))
	g.Expect(err).To(MatchError(cloudinit.ErrTooLarge))

	plan, err := ignition.Parse(bombs.Ignition(2, 1<<20))
	g.Expect(err).NotTo(HaveOccurred(), "configs within the budget still decode")
	g.Expect(plan.Steps).To(HaveLen(4))
}
