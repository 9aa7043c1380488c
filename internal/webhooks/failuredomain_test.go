//go:build integration

package webhooks_test

import (
	"context"
	"fmt"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestClaimFollowsTheMachineSetsFailureDomain: a MachineSet's RemoteMachine is created before its Machine, whose
// failure domain comes from the MachineSet's template; the claim takes a host in that domain whatever the hash
// order of the pool says.
func TestClaimFollowsTheMachineSetsFailureDomain(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 8, func(i int, p *infrav1.PooledRemoteMachine) {
		p.Spec.FailureDomain = fmt.Sprintf("rack-%d", i%4)
	})
	ms := &clusterv1.MachineSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "workers"}}
	ms.Spec.ClusterName = "c1"
	ms.Spec.Selector = metav1.LabelSelector{MatchLabels: map[string]string{"pool": "workers"}}
	ms.Spec.Template.Labels = map[string]string{"pool": "workers"}
	ms.Spec.Template.Spec.ClusterName = "c1"
	ms.Spec.Template.Spec.FailureDomain = "rack-2"
	ms.Spec.Template.Spec.Bootstrap.DataSecretName = ptrTo("data")
	ms.Spec.Template.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteMachineTemplate", Name: "workers"}
	g.Expect(env.Client.Create(ctx, ms)).To(Succeed())

	for i := range 2 {
		m := testenv.NewPooledMachine(ns, fmt.Sprintf("workers-%d", i), "default")
		m.Labels = map[string]string{clusterv1.ClusterNameLabel: "c1", clusterv1.MachineSetNameLabel: "workers"}
		g.Expect(env.Client.Create(ctx, m)).To(Succeed())
		entry := getEntry(t, ns, m.Spec.PooledRemoteMachineRef.Name)
		g.Expect(entry.Spec.FailureDomain).To(Equal("rack-2"), "machine %d", i)
	}
	// With the domain's hosts taken, the claim takes another: the controller then reports the mismatch.
	m := testenv.NewPooledMachine(ns, "workers-2", "default")
	m.Labels = map[string]string{clusterv1.ClusterNameLabel: "c1", clusterv1.MachineSetNameLabel: "workers"}
	g.Expect(env.Client.Create(ctx, m)).To(Succeed())
	g.Expect(getEntry(t, ns, m.Spec.PooledRemoteMachineRef.Name).Spec.FailureDomain).NotTo(Equal("rack-2"))
}

func ptrTo[T any](v T) *T { return &v }
