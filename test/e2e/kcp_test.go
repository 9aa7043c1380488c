//go:build integration

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	controlplanev1 "sigs.k8s.io/cluster-api/api/controlplane/kubeadm/v1beta2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
)

// kcpCluster is a Cluster whose control plane is a KubeadmControlPlane on a RemoteMachineTemplate naming a pool.
const kcpCluster = `apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata:
  name: kcp
  namespace: kcp
spec:
  controlPlaneEndpoint:
    host: %s
    port: %d
  controlPlaneRef:
    apiGroup: controlplane.cluster.x-k8s.io
    kind: KubeadmControlPlane
    name: kcp
  infrastructureRef:
    apiGroup: infrastructure.cluster.x-k8s.io
    kind: RemoteCluster
    name: kcp
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteCluster
metadata:
  name: kcp
  namespace: kcp
spec:
  failureDomains:
  - name: rack-a
    controlPlane: false
  - name: rack-b
    controlPlane: true
  - name: rack-c
    controlPlane: false
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachineTemplate
metadata:
  name: control-plane
  namespace: kcp
spec:
  template:
    spec:
      pool: control-plane
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata:
  name: kcp
  namespace: kcp
spec:
  replicas: 1
  version: v1.36.3
  machineTemplate:
    spec:
      infrastructureRef:
        apiGroup: infrastructure.cluster.x-k8s.io
        kind: RemoteMachineTemplate
        name: control-plane
  kubeadmConfigSpec:
    initConfiguration:
      nodeRegistration:
        name: '{{ ds.meta_data.local_hostname }}'
    joinConfiguration:
      nodeRegistration:
        name: '{{ ds.meta_data.local_hostname }}'
`

// TestKubeadmControlPlane runs Cluster API's KubeadmControlPlane on a RemoteMachineTemplate with a pool of three
// sshd hosts: its first machine takes a host from the pool and runs kubeadm init, and the control plane reports
// itself initialised. Scaled to 3, it creates no second machine: KubeadmControlPlane's scale-up preflight checks
// wait for the first machine's control-plane components (the kube-apiserver, kube-controller-manager,
// kube-scheduler and etcd static Pods, and etcd membership), which a kubeadm stand-in does not run. The test checks
// that the reason is reported on the KubeadmControlPlane and that no further host is claimed.
func TestKubeadmControlPlane(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	e := Start(t, func(s string) { t.Log(s) })
	c := e.Management.Client
	for i := range 3 {
		e.AddHost(fmt.Sprintf("kcp-%d", i))
	}
	endpoint := e.PrepareNamespace("kcp", "kcp")
	// One host per rack; only rack-b may hold control-plane machines, so KubeadmControlPlane gives its Machine
	// rack-b, and the claim (made before that Machine exists) must take the rack-b host.
	for i, h := range e.Hosts {
		entry := poolEntry("kcp", "control-plane", fmt.Sprintf("cp-%d", i), h)
		entry.Spec.FailureDomain = "rack-" + string(rune('a'+i))
		g.Expect(c.Create(ctx, entry)).To(Succeed())
	}
	out, err := mgmt.Kubectl(t, e.Management, fmt.Sprintf(kcpCluster, endpoint.Host, endpoint.Port), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)

	// The first control-plane machine inits, and the control plane reports itself initialised.
	g.Eventually(func(g Gomega) {
		machines := &clusterv1.MachineList{}
		g.Expect(c.List(ctx, machines, client.InNamespace("kcp"), client.MatchingLabels{clusterv1.MachineControlPlaneLabel: ""})).To(Succeed())
		g.Expect(machines.Items).To(HaveLen(1))
		g.Expect(machines.Items[0].Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)))
		cluster := &clusterv1.Cluster{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: "kcp", Name: "kcp"}, cluster)).To(Succeed())
		g.Expect(ptr.Deref(cluster.Status.Initialization.ControlPlaneInitialized, false)).To(BeTrue())
	}, timeout, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	inits := 0
	for _, h := range e.Hosts {
		inits += Runs(h, "init")
	}
	g.Expect(inits).To(Equal(1))
	g.Expect(Runs(e.Hosts[1], "init")).To(Equal(1), "kubeadm init ran on the rack-b host")
	machines := &clusterv1.MachineList{}
	g.Expect(c.List(ctx, machines, client.InNamespace("kcp"))).To(Succeed())
	g.Expect(machines.Items).To(HaveLen(1))
	g.Expect(machines.Items[0].Spec.FailureDomain).To(Equal("rack-b"), "KubeadmControlPlane's choice")
	rm := &infrav1.RemoteMachine{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: "kcp", Name: machines.Items[0].Spec.InfrastructureRef.Name}, rm)).To(Succeed())
	g.Expect(rm.Status.FailureDomain).To(Equal("rack-b"))
	g.Eventually(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(rm), rm)).To(Succeed())
		matched := conditions.Get(rm, infrav1.FailureDomainMatchedCondition)
		g.Expect(matched).NotTo(BeNil())
		g.Expect(matched.Status).To(Equal(metav1.ConditionTrue), matched.Message)
		machine := &clusterv1.Machine{}
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(&machines.Items[0]), machine)).To(Succeed())
		g.Expect(machine.Status.FailureDomain).To(Equal("rack-b"), "Cluster API reports the domain the host is in")
	}, timeout, time.Second).Should(Succeed())

	// Scaled to 3, KubeadmControlPlane waits for its first machine's control-plane components.
	out, err = mgmt.Kubectl(t, e.Management, "", "scale", "-n", "kcp", "kubeadmcontrolplane/kcp", "--replicas=3")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		kcp := &controlplanev1.KubeadmControlPlane{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: "kcp", Name: "kcp"}, kcp)).To(Succeed())
		scaling := conditions.Get(kcp, controlplanev1.KubeadmControlPlaneScalingUpCondition)
		g.Expect(scaling).NotTo(BeNil())
		g.Expect(scaling.Message).To(ContainSubstring("Scaling up from 1 to 3 replicas is blocked because"))
		g.Expect(scaling.Message).To(ContainSubstring("waiting for control plane components to become healthy"))
		g.Expect(scaling.Message).To(ContainSubstring("waiting for etcd cluster to become healthy"))
		components := conditions.Get(kcp, controlplanev1.KubeadmControlPlaneControlPlaneComponentsHealthyCondition)
		g.Expect(components).NotTo(BeNil())
		g.Expect(components.Message).To(ContainSubstring("Pod does not exist"))
	}, timeout, time.Second).Should(Succeed())
	g.Expect(c.List(ctx, machines, client.InNamespace("kcp"))).To(Succeed())
	g.Expect(machines.Items).To(HaveLen(1), "no second control-plane machine while the first is not healthy")
	entries := &infrav1.PooledRemoteMachineList{}
	g.Expect(c.List(ctx, entries, client.InNamespace("kcp"))).To(Succeed())
	claimed := 0
	for _, en := range entries.Items {
		if en.Spec.ClaimRef != nil {
			claimed++
		}
	}
	g.Expect(claimed).To(Equal(1), "no host claimed for a machine KubeadmControlPlane did not create")
}
