//go:build integration

package integration

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestSeedDocumentsApplyUnchanged applies every YAML document of the reference document, as it is, with kubectl.
func TestSeedDocumentsApplyUnchanged(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	blocks := testenv.SeedBlocks(t)
	key := types.NamespacedName{Namespace: "default", Name: "remote-test"}
	env.ReleaseHostsOnCleanup(t, "default")

	// The direct example: Cluster + K0smotronControlPlane, RemoteCluster, Machine + K0sWorkerConfig + RemoteMachine.
	direct := testenv.JoinDocuments(blocks[0], blocks[1], blocks[2])
	out, errOut, err := env.Kubectl(ctx, direct, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), "stdout: %s\nstderr: %s", out, errOut)
	g.Expect(out).To(ContainSubstring("remotemachine.infrastructure.cluster.x-k8s.io/remote-test-0 created"))
	g.Expect(out).To(ContainSubstring("remotecluster.infrastructure.cluster.x-k8s.io/remote-test created"))

	// Cluster API's conversion webhook stored the v1beta1 Cluster as v1beta2.
	cluster := &clusterv1.Cluster{}
	g.Expect(env.Client.Get(ctx, key, cluster)).To(Succeed())
	g.Expect(cluster.Spec.InfrastructureRef.APIGroup).To(Equal(infrav1.GroupVersion.Group))
	g.Expect(cluster.Spec.InfrastructureRef.Kind).To(Equal("RemoteCluster"))
	g.Expect(cluster.Spec.ControlPlaneRef.Kind).To(Equal("K0smotronControlPlane"))

	rm := &infrav1.RemoteMachine{}
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "remote-test-0"}, rm)).To(Succeed())
	g.Expect(rm.Spec.Address).To(Equal("1.2.3.4"))
	g.Expect(rm.Spec.Port).To(Equal(int32(22)))
	g.Expect(rm.Spec.User).To(Equal("root"))
	g.Expect(rm.Spec.SSHKeyRef).To(Equal(&infrav1.SecretReference{Name: "footloose-key"}))
	g.Expect(rm.Spec.HostKeyPolicy).To(Equal(infrav1.HostKeyPolicyAcceptNew))

	rc := &infrav1.RemoteCluster{}
	g.Expect(env.Client.Get(ctx, key, rc)).To(Succeed())

	// Applying the same documents again changes nothing.
	out, errOut, err = env.Kubectl(ctx, direct, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), "stderr: %s", errOut)
	g.Expect(out).NotTo(ContainSubstring("configured"))

	// The pooled example reuses the Cluster's name, so remove the direct example first.
	_, errOut, err = env.Kubectl(ctx, direct, "delete", "-f", "-", "--wait=true")
	g.Expect(err).NotTo(HaveOccurred(), "stderr: %s", errOut)

	pooled := testenv.JoinDocuments(blocks[3], blocks[4])
	out, errOut, err = env.Kubectl(ctx, pooled, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), "stdout: %s\nstderr: %s", out, errOut)
	for _, created := range []string{
		"remotemachinetemplate.infrastructure.cluster.x-k8s.io/remote-test-template created",
		"pooledremotemachine.infrastructure.cluster.x-k8s.io/remote-test-0 created",
		"pooledremotemachine.infrastructure.cluster.x-k8s.io/remote-test-1 created",
		"k0scontrolplane.controlplane.cluster.x-k8s.io/remote-test created",
		"cluster.cluster.x-k8s.io/remote-test created",
	} {
		g.Expect(out).To(ContainSubstring(created))
	}
	prm := &infrav1.PooledRemoteMachine{}
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "remote-test-1"}, prm)).To(Succeed())
	g.Expect(prm.Spec.Pool).To(Equal("default"))
	g.Expect(prm.Spec.Machine.Address).To(Equal("2.3.4.5"))
	g.Expect(prm.Spec.Machine.SSHKeyRef.Name).To(Equal("footloose-key-1"))
	tmpl := &infrav1.RemoteMachineTemplate{}
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "remote-test-template"}, tmpl)).To(Succeed())
	g.Expect(tmpl.Spec.Template.Spec.Pool).To(Equal("default"))
	g.Expect(env.Client.Get(ctx, key, cluster)).To(Succeed())
	g.Expect(cluster.Spec.ControlPlaneEndpoint).To(Equal(clusterv1.APIEndpoint{Host: "1.2.3.4", Port: 6443}))

	_, errOut, err = env.Kubectl(ctx, pooled, "delete", "-f", "-", "--wait=true")
	g.Expect(err).NotTo(HaveOccurred(), "stderr: %s", errOut)
}
