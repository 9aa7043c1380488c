//go:build integration

package integration

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// inNamespace moves the reference document's objects into ns (the K0sControlPlane names no namespace).
func inNamespace(doc, ns string) string {
	return strings.ReplaceAll(doc, "namespace: default", "namespace: "+ns)
}

// withoutEndpoint drops the Cluster's controlPlaneEndpoint from the reference document's second example.
func withoutEndpoint(doc string) string {
	return regexp.MustCompile(`(?m)^  controlPlaneEndpoint:.*\n(    .*\n)+`).ReplaceAllString(doc, "")
}

// splitDocs returns the control-plane document and the Cluster document of the second example.
func splitDocs(t *testing.T, block string) (cp, cluster string) {
	t.Helper()
	docs := strings.Split(block, "\n---\n")
	if len(docs) != 2 || !strings.Contains(docs[0], "kind: K0sControlPlane") || !strings.Contains(docs[1], "kind: Cluster") {
		t.Fatalf("unexpected shape of the reference document's control-plane example: %q", block)
	}
	return strings.TrimPrefix(docs[0], "---\n"), docs[1]
}

// TestControlPlaneEndpointGuard applies the reference document's control-plane example without
// Cluster.spec.controlPlaneEndpoint with kubectl, in both document orders: the apply fails and says what to set.
func TestControlPlaneEndpointGuard(t *testing.T) {
	blocks := testenv.SeedBlocks(t)
	cp, cluster := splitDocs(t, blocks[4])
	g := NewWithT(t)
	g.Expect(withoutEndpoint(cluster)).NotTo(ContainSubstring("controlPlaneEndpoint"))
	g.Expect(withoutEndpoint(cluster)).To(ContainSubstring("clusterNetwork:"))

	for _, order := range []struct {
		name        string
		docs, fixed []string
		fails       string
	}{
		{"control plane first", []string{cp, withoutEndpoint(cluster)}, []string{cp, cluster}, `The Cluster "remote-test" is invalid`},
		{"cluster first", []string{withoutEndpoint(cluster), cp}, []string{cluster, cp}, `The K0sControlPlane "remote-test" is invalid`},
	} {
		t.Run(order.name, func(t *testing.T) {
			g := NewWithT(t)
			ns := env.NewNamespace(t)
			env.ReleaseHostsOnCleanup(t, ns)
			_, errOut, err := env.Kubectl(context.Background(), inNamespace(blocks[3], ns), "apply", "-n", ns, "-f", "-")
			g.Expect(err).NotTo(HaveOccurred(), errOut)
			out, errOut, err := env.Kubectl(context.Background(), inNamespace(testenv.JoinDocuments(order.docs...), ns), "apply", "-n", ns, "-f", "-")
			g.Expect(err).To(HaveOccurred(), "stdout: %s", out)
			g.Expect(errOut).To(ContainSubstring(order.fails))
			g.Expect(errOut).To(ContainSubstring(`spec.controlPlaneEndpoint: Required value: Cluster "remote-test" must set spec.controlPlaneEndpoint`))
			g.Expect(errOut).To(ContainSubstring(`K0sControlPlane "remote-test"`))
			g.Expect(errOut).To(ContainSubstring("RemoteMachineTemplate \"remote-test-template\""))
			g.Expect(errOut).To(ContainSubstring("port (usually 6443)"))

			// Setting the endpoint, as the reference document does, and applying the same file again fixes it.
			out, errOut, err = env.Kubectl(context.Background(), inNamespace(testenv.JoinDocuments(order.fixed...), ns), "apply", "-n", ns, "-f", "-")
			g.Expect(err).NotTo(HaveOccurred(), "stdout: %s\nstderr: %s", out, errOut)
		})
	}
}

// TestControlPlaneEndpointGuardKubeadm checks a KubeadmControlPlane (v1beta2 shape) on RemoteMachines, and that an
// endpoint on the RemoteCluster is enough.
func TestControlPlaneEndpointGuardKubeadm(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	kcp := fmt.Sprintf(`apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {name: kcp, namespace: %s}
spec:
  replicas: 3
  version: v1.36.3
  machineTemplate:
    spec:
      infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: RemoteMachineTemplate, name: cp}
`, ns)
	cluster := fmt.Sprintf(`apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata: {name: kc, namespace: %s}
spec:
  controlPlaneRef: {apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: kcp}
  infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: RemoteCluster, name: kc}
`, ns)
	_, errOut, err := env.Kubectl(ctx, testenv.JoinDocuments(kcp, cluster), "apply", "-f", "-")
	g.Expect(err).To(HaveOccurred())
	g.Expect(errOut).To(ContainSubstring(`The Cluster "kc" is invalid: spec.controlPlaneEndpoint: Required value`))
	g.Expect(errOut).To(ContainSubstring(`KubeadmControlPlane "kcp" runs the control plane on RemoteMachines (RemoteMachineTemplate "cp")`))

	remoteCluster := fmt.Sprintf(`apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteCluster
metadata: {name: kc, namespace: %s}
spec:
  controlPlaneEndpoint: {host: 192.0.2.100, port: 6443}
`, ns)
	out, errOut, err := env.Kubectl(ctx, testenv.JoinDocuments(remoteCluster, kcp, cluster), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), "stdout: %s\nstderr: %s", out, errOut)
}

// TestControlPlaneMachineBackstop refuses a control-plane RemoteMachine of a Cluster without an endpoint, before
// any pool entry is claimed.
func TestControlPlaneMachineBackstop(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)

	c := &clusterv1.Cluster{}
	c.Namespace, c.Name = ns, "bare"
	c.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteCluster", Name: "bare"}
	g.Expect(env.Client.Create(ctx, c)).To(Succeed())

	entry := &infrav1.PooledRemoteMachine{}
	entry.Namespace, entry.Name = ns, "e"
	entry.Spec.Pool = "default"
	entry.Spec.Machine.Address = "192.0.2.7"
	entry.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "k"}
	g.Expect(env.Client.Create(ctx, entry)).To(Succeed())

	m := &infrav1.RemoteMachine{}
	m.Namespace, m.Name = ns, "cp-0"
	m.Labels = map[string]string{"cluster.x-k8s.io/cluster-name": "bare", "cluster.x-k8s.io/control-plane": ""}
	m.Spec.Pool = "default"
	err := env.Client.Create(ctx, m)
	g.Expect(err).To(MatchError(ContainSubstring(`spec.controlPlaneEndpoint: Required value: Cluster "bare" must set spec.controlPlaneEndpoint because RemoteMachine "cp-0" is one of its control-plane machines`)))
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "e"}, entry)).To(Succeed())
	g.Expect(entry.Spec.ClaimRef).To(BeNil(), "nothing was claimed")

	// A worker of the same Cluster is fine.
	w := m.DeepCopy()
	w.Name = "worker-0"
	delete(w.Labels, "cluster.x-k8s.io/control-plane")
	g.Expect(env.Client.Create(ctx, w)).To(Succeed())
}
