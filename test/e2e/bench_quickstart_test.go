//go:build integration

package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
	"github.com/capr-project/cluster-api-provider-remote/test/nodehost"
)

// p7Goal is P7's goal: the quickstart's real cluster from Applying to three Ready Nodes.
const p7Goal = 4 * time.Minute

// BenchmarkP7 is make bench's P7: `make quickstart` in its real mode (the node tools and images built), from
// Applying the cluster to the workload cluster's three Nodes Ready (kubeadm init on the first host, kubeadm join on
// the other two, each run by CAPR over SSH). Goal: under 4 minutes; the ratio is the time against the goal. It
// prints the time of each phase and appends its row to $BENCH_ROWS for test/bench's table.
func BenchmarkP7(b *testing.B) {
	if why := nodehost.Missing(os.Getenv("CAPR_BIN_DIR"), os.Getenv("CAPR_NODE_IMAGES")); why != "" {
		NewWithT(b).Expect(rows.Append(rows.Row{Figure: "P7", Err: "real nodes cannot run here: " + why})).To(Succeed())
		b.Skip(why)
	}
	q := startQuickstart(b, 15*time.Minute, "QUICKSTART_MODE=real")
	defer q.interrupt(b)
	phases := regexp.MustCompile(`^  (\S.*?)\s+((?:\d+h)?(?:\d+m)?\d+s)$`)
	var detail strings.Builder
	detail.WriteString("### P7: the quickstart's phases (time since Applying)\n\n| phase | at |\n|---|---|\n")
	var ready time.Duration
	in := false
	for _, line := range q.output {
		if strings.HasPrefix(line, "Phases (time since Applying):") {
			in = true
			continue
		}
		m := phases.FindStringSubmatch(line)
		if !in || m == nil {
			continue
		}
		d, err := time.ParseDuration(m[2])
		if err != nil {
			continue
		}
		fmt.Fprintf(&detail, "| %s | %s |\n", strings.ReplaceAll(m[1], "|", "/"), d)
		if m[1] == "three Nodes Ready" {
			ready = d
		}
	}
	g := NewWithT(b)
	g.Expect(ready).NotTo(BeZero(), "the quickstart printed no time for three Nodes Ready:\n%s", strings.Join(q.output, "\n"))
	fmt.Printf("\nP7  make quickstart (real nodes): Applying -> three Nodes Ready in %s (goal < %s)\n%s\n", ready, p7Goal, detail.String())
	g.Expect(rows.Append(rows.Row{Figure: "P7", What: "make quickstart, real nodes: Applying -> three Nodes Ready (kubeadm init + 2 joins over SSH)",
		Baseline: "goal " + p7Goal.String(), CAPR: ready.String(), Ratio: float64(ready) / float64(p7Goal), Goal: 1,
		Note:   "P7: the quickstart program in its real mode, with the node tools and images already built; the ratio is the time against the 4-minute goal (a fixed goal, not a same-run baseline).",
		Detail: detail.String()})).To(Succeed())
}
