package pool

import (
	"testing"

	. "github.com/onsi/gomega"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

func TestHardwareLabels(t *testing.T) {
	g := NewWithT(t)
	for key, want := range map[string]bool{
		"node.cluster.x-k8s.io/rack":            true,
		"gpu.node.cluster.x-k8s.io/model":       true,
		"node.cluster.x-k8s.io":                 false, // a name, no domain
		"xnode.cluster.x-k8s.io/rack":           false,
		"cluster.x-k8s.io/cluster-name":         false,
		"node-role.kubernetes.io/worker":        false,
		"node-restriction.kubernetes.io/secure": false,
		"team":                                  false,
	} {
		g.Expect(IsHardwareLabel(key)).To(Equal(want), key)
	}

	entry := &infrav1.PooledRemoteMachine{}
	g.Expect(HardwareLabels(entry)).To(BeNil())
	entry.Name = "e1"
	entry.Labels = map[string]string{"node.cluster.x-k8s.io/rack": "r1", "node.cluster.x-k8s.io/gpu": "true", "node.cluster.x-k8s.io/zone": "z1", "team": "x"}
	g.Expect(HardwareLabels(entry)).To(Equal(map[string]string{"node.cluster.x-k8s.io/rack": "r1", "node.cluster.x-k8s.io/gpu": "true", "node.cluster.x-k8s.io/zone": "z1"}))

	// Fill copies them to the claiming RemoteMachine; a key its creator set (a MachineSet template's) wins.
	m := &infrav1.RemoteMachine{}
	m.Labels = map[string]string{"cluster.x-k8s.io/cluster-name": "c1", "node.cluster.x-k8s.io/zone": "template"}
	Fill(m, entry)
	g.Expect(m.Labels).To(Equal(map[string]string{
		"cluster.x-k8s.io/cluster-name": "c1",
		"node.cluster.x-k8s.io/zone":    "template",
		"node.cluster.x-k8s.io/rack":    "r1",
		"node.cluster.x-k8s.io/gpu":     "true",
	}))
	bare := &infrav1.RemoteMachine{}
	Fill(bare, entry)
	g.Expect(bare.Labels).To(HaveLen(3))
}
