//go:build integration

package controllers_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

const (
	rackLabel = "node.cluster.x-k8s.io/rack"
	gpuLabel  = "node.cluster.x-k8s.io/gpu"
	zoneLabel = "node.cluster.x-k8s.io/zone"
	tierLabel = "node.cluster.x-k8s.io/tier"
)

// applyAsMachineSet applies labels to a Machine the way Cluster API's MachineSet propagates its template's labels
// in place: server-side apply with its own field manager, forcing ownership.
func applyAsMachineSet(g Gomega, m *clusterv1.Machine, labels map[string]string) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(clusterv1.GroupVersion.WithKind("Machine"))
	u.SetNamespace(m.Namespace)
	u.SetName(m.Name)
	u.SetUID(m.UID)
	u.SetLabels(labels)
	g.Expect(env.Client.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("capi-machineset"), client.ForceOwnership)).To(Succeed())
}

// TestHardwareLabelsFollowTheEntry: a pool entry's node.cluster.x-k8s.io labels are on the RemoteMachine as it is
// stored (the claim copies them), and the PooledRemoteMachine controller takes them to the Machine and keeps both in
// step with the entry, through server-side apply under its own field manager, beside labels a MachineSet applies
// (which win where both set a key, without either side fighting over it).
func TestHardwareLabelsFollowTheEntry(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	cluster := &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c1"}}
	cluster.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteCluster", Name: "c1"}
	g.Expect(env.Client.Create(ctx, cluster)).To(Succeed())
	// The Cluster's infrastructure is never provisioned: the RemoteMachine waits, and no host is dialled.
	machine := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m0", Labels: map[string]string{clusterv1.ClusterNameLabel: "c1"}}}
	machine.Spec.ClusterName = "c1"
	machine.Spec.Bootstrap.DataSecretName = ptr.To("m0-bootstrap")
	machine.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteMachine", Name: "m0"}
	g.Expect(env.Client.Create(ctx, machine)).To(Succeed())
	msLabels := map[string]string{clusterv1.ClusterNameLabel: "c1", tierLabel: "web", zoneLabel: "z-template"}
	applyAsMachineSet(g, machine, msLabels)

	entry := testenv.NewEntry(ns, "default", 0)
	entry.Labels = map[string]string{rackLabel: "r1", gpuLabel: "true", zoneLabel: "z-entry", "team": "x"}
	env.CreateEntryAndWait(g, entry)

	rm := &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m0", Labels: map[string]string{clusterv1.ClusterNameLabel: "c1"}}}
	rm.OwnerReferences = []metav1.OwnerReference{{APIVersion: clusterv1.GroupVersion.String(), Kind: "Machine", Name: machine.Name, UID: machine.UID}}
	rm.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	g.Expect(rm.Labels).To(Equal(map[string]string{clusterv1.ClusterNameLabel: "c1", rackLabel: "r1", gpuLabel: "true", zoneLabel: "z-entry"}),
		"the claim copies the entry's hardware labels, not the others")

	hardware := func(g Gomega, obj client.Object) map[string]string {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		out := map[string]string{}
		for k, v := range obj.GetLabels() {
			if strings.HasPrefix(k, infrav1.HardwareLabelDomain+"/") || k == "team" {
				out[k] = v
			}
		}
		return out
	}
	g.Eventually(func(g Gomega) {
		g.Expect(hardware(g, machine)).To(Equal(map[string]string{rackLabel: "r1", gpuLabel: "true", tierLabel: "web", zoneLabel: "z-template"}),
			"the MachineSet's zone wins over the entry's")
		g.Expect(hardware(g, rm)).To(Equal(map[string]string{rackLabel: "r1", gpuLabel: "true", zoneLabel: "z-entry"}))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	// The entry's rack changes and its gpu label goes: both follow, on the RemoteMachine and on the Machine.
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	orig := entry.DeepCopy()
	entry.Labels[rackLabel] = "r2"
	delete(entry.Labels, gpuLabel)
	g.Expect(env.Client.Patch(ctx, entry, client.MergeFrom(orig))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(hardware(g, machine)).To(Equal(map[string]string{rackLabel: "r2", tierLabel: "web", zoneLabel: "z-template"}))
		g.Expect(hardware(g, rm)).To(Equal(map[string]string{rackLabel: "r2", zoneLabel: "z-entry"}))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	// The MachineSet propagates a changed template in place: its labels change, CAPR's stay, nobody fights.
	msLabels[tierLabel] = "api"
	applyAsMachineSet(g, machine, msLabels)
	g.Consistently(func(g Gomega) {
		g.Expect(hardware(g, machine)).To(Equal(map[string]string{rackLabel: "r2", tierLabel: "api", zoneLabel: "z-template"}))
	}, 3*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(machine), machine)).To(Succeed())
	var capr []string
	for _, f := range machine.ManagedFields {
		if f.Manager == infrav1.HardwareLabelsFieldManager {
			capr = append(capr, f.FieldsV1.String())
		}
	}
	g.Expect(capr).To(ConsistOf(`{"f:metadata":{"f:labels":{"f:node.cluster.x-k8s.io/rack":{}}}}`), "CAPR's field manager owns the entry's labels, nothing else")

	// Every hardware label gone from the entry: gone downstream, the MachineSet's kept.
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	orig = entry.DeepCopy()
	entry.Labels = map[string]string{"team": "y"}
	g.Expect(env.Client.Patch(ctx, entry, client.MergeFrom(orig))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(hardware(g, machine)).To(Equal(map[string]string{tierLabel: "api", zoneLabel: "z-template"}))
		g.Expect(hardware(g, rm)).To(Equal(map[string]string{}))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}
