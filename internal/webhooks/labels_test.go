//go:build integration

package webhooks_test

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestClaimCopiesHardwareLabels: the RemoteMachine is stored with its entry's node.cluster.x-k8s.io labels (a dry
// run shows them too); labels in other domains stay on the entry, and a key the creator sets keeps the creator's
// value, also when the creator is a server-side apply as Cluster API's MachineSet does it.
func TestClaimCopiesHardwareLabels(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 2, func(i int, p *infrav1.PooledRemoteMachine) {
		p.Labels = map[string]string{
			"node.cluster.x-k8s.io/rack":      "r1",
			"gpu.node.cluster.x-k8s.io/model": "a100",
			"node.cluster.x-k8s.io/zone":      "z-entry",
			"team":                            "x",
		}
	})

	dry := testenv.NewPooledMachine(ns, "dry", "default")
	g.Expect(env.Client.Create(ctx, dry, client.DryRunAll)).To(Succeed())
	g.Expect(dry.Labels).To(HaveKeyWithValue("node.cluster.x-k8s.io/rack", "r1"))

	m := testenv.NewPooledMachine(ns, "m0", "default")
	g.Expect(env.Client.Create(ctx, m)).To(Succeed())
	g.Expect(m.Labels).To(Equal(map[string]string{
		"node.cluster.x-k8s.io/rack":      "r1",
		"gpu.node.cluster.x-k8s.io/model": "a100",
		"node.cluster.x-k8s.io/zone":      "z-entry",
	}))

	// Created by server-side apply with a template label of the same domain: the template's value is kept.
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(infrav1.GroupVersion.WithKind("RemoteMachine"))
	u.SetNamespace(ns)
	u.SetName("m1")
	u.SetLabels(map[string]string{"node.cluster.x-k8s.io/zone": "z-template"})
	g.Expect(unstructured.SetNestedField(u.Object, "default", "spec", "pool")).To(Succeed())
	g.Expect(env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("capi-machineset"))).To(Succeed())
	m1 := &infrav1.RemoteMachine{}
	g.Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "m1"}, m1)).To(Succeed())
	g.Expect(m1.Spec.PooledRemoteMachineRef).NotTo(BeNil())
	g.Expect(m1.Labels).To(Equal(map[string]string{
		"node.cluster.x-k8s.io/rack":      "r1",
		"gpu.node.cluster.x-k8s.io/model": "a100",
		"node.cluster.x-k8s.io/zone":      "z-template",
	}))
}
