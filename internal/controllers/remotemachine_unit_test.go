package controllers

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/util/conditions"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host/fakehost"
	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
)

// The RemoteMachine reconciler's decisions against the fake host service and a fake client: no apiserver, no sshd,
// no root. Each Reconcile only starts SSH work in the task runner, so the test reconciles until the outcome shows.
// The same paths run on real sshd hosts and a real kube-apiserver in the integration tier.

const hostAddress = "10.0.0.7"

type rmRig struct {
	t     *testing.T
	c     client.Client
	hosts *fakehost.Service
	r     *RemoteMachineReconciler
	key   client.ObjectKey
}

func newRMRig(t *testing.T, h *fakehost.Host) *rmRig {
	t.Helper()
	g := NewWithT(t)
	scheme := runtime.NewScheme()
	g.Expect(corev1.AddToScheme(scheme)).To(Succeed())
	g.Expect(clusterv1.AddToScheme(scheme)).To(Succeed())
	g.Expect(infrav1.AddToScheme(scheme)).To(Succeed())

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	g.Expect(err).NotTo(HaveOccurred())
	block, err := ssh.MarshalPrivateKey(priv, "")
	g.Expect(err).NotTo(HaveOccurred())
	key := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "key"}, Data: map[string][]byte{"value": pem.EncodeToMemory(block)}}
	data := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "m1-bootstrap"},
		Data: map[string][]byte{"value": []byte("#!/bin/sh\necho joined\n"), "format": []byte("cloud-config")}}
	cluster := &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c1"}}
	cluster.Status.Initialization.InfrastructureProvisioned = ptr.To(true)
	machine := &clusterv1.Machine{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "m1", UID: "uid-m1", Labels: map[string]string{clusterv1.ClusterNameLabel: "c1"}},
		Spec:       clusterv1.MachineSpec{ClusterName: "c1", Bootstrap: clusterv1.Bootstrap{DataSecretName: ptr.To("m1-bootstrap")}},
	}
	rm := &infrav1.RemoteMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "rm1", UID: "uid-rm1", Labels: map[string]string{clusterv1.ClusterNameLabel: "c1"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: clusterv1.GroupVersion.String(), Kind: "Machine", Name: "m1", UID: "uid-m1"}}},
		Spec: infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: hostAddress, Port: 22, User: "root", SSHKeyRef: &infrav1.SecretReference{Name: "key"}}},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(key, data, cluster, machine, rm).
		WithStatusSubresource(&infrav1.RemoteMachine{}, &clusterv1.Machine{}, &clusterv1.Cluster{}).Build()
	hosts := fakehost.New()
	hosts.Add(hostAddress, 22, h)
	r := &RemoteMachineReconciler{
		Client: c, APIReader: c, Recorder: events.NewFakeRecorder(1000), Hosts: hosts, Tasks: tasks.NewWithLimits(tasks.Limits{Total: 2}),
		BootstrapTimeout: time.Minute, CleanupTimeout: time.Minute, RetryInterval: time.Hour, MaxRetryInterval: time.Hour,
	}
	return &rmRig{t: t, c: c, hosts: hosts, r: r, key: client.ObjectKeyFromObject(rm)}
}

// reconcileUntil reconciles until done says the RemoteMachine (nil once it is gone) shows the outcome.
func (rig *rmRig) reconcileUntil(what string, done func(rm *infrav1.RemoteMachine) bool) *infrav1.RemoteMachine {
	rig.t.Helper()
	var last *infrav1.RemoteMachine
	ctx := ctrl.LoggerInto(context.Background(), ctrl.Log)
	NewWithT(rig.t).Eventually(func() bool {
		_, err := rig.r.Reconcile(ctx, ctrl.Request{NamespacedName: rig.key})
		if err != nil {
			return false
		}
		rm := &infrav1.RemoteMachine{}
		if err := rig.c.Get(ctx, rig.key, rm); err != nil {
			last = nil
			return done(nil)
		}
		last = rm
		return done(rm)
	}).WithTimeout(10*time.Second).WithPolling(5*time.Millisecond).Should(BeTrue(), "waiting for: %s", what)
	return last
}

func bootstrapReason(rm *infrav1.RemoteMachine) string {
	if rm == nil {
		return ""
	}
	return conditions.GetReason(rm, infrav1.BootstrapSucceededCondition)
}

func TestRemoteMachineBootstrapsThenCleansUp(t *testing.T) {
	g := NewWithT(t)
	rig := newRMRig(t, &fakehost.Host{Hostname: "node-7", MachineID: "0123456789abcdef0123456789abcdef"})

	rm := rig.reconcileUntil("provisioned", func(rm *infrav1.RemoteMachine) bool {
		return rm != nil && ptr.Deref(rm.Status.Initialization.Provisioned, false)
	})
	h, _ := rig.hosts.Get(hostAddress, 22)
	g.Expect(rm.Spec.HostKeys).To(Equal(h.Keys), "the key the host presented was pinned")
	g.Expect(rm.Spec.ProviderID).NotTo(BeEmpty())
	g.Expect(conditions.IsTrue(rm, infrav1.ReadyCondition)).To(BeTrue())
	g.Expect(conditions.GetReason(rm, infrav1.BootstrapSucceededCondition)).To(Equal(infrav1.BootstrapSucceededReason))
	g.Expect(rm.Status.MachineID).To(Equal("0123456789abcdef0123456789abcdef"))
	g.Expect(h.Ran).To(ConsistOf(hostIdentity(rm)), "the data ran once, under the machine's identity")
	ops := []string{}
	for _, c := range rig.hosts.Calls() {
		ops = append(ops, c.Op)
	}
	g.Expect(ops).To(Equal([]string{"scan", "bootstrap"}), "nothing is sent before the key is pinned")

	// Deleting it cleans the host, then lets the RemoteMachine go.
	g.Expect(rig.c.Delete(context.Background(), rm)).To(Succeed())
	rig.reconcileUntil("the finalizer removed", func(rm *infrav1.RemoteMachine) bool { return rm == nil })
	h, _ = rig.hosts.Get(hostAddress, 22)
	g.Expect(h.Cleaned).To(ContainElement(hostIdentity(rm)))
	g.Expect(h.Marker).To(BeEmpty())
}

func TestRemoteMachineFailureReasons(t *testing.T) {
	for _, tc := range []struct {
		name string
		host fakehost.Host
		want string
		// terminal: the bootstrap is not tried again.
		terminal bool
	}{
		{name: "host holds another machine's bootstrap", host: fakehost.Host{Marker: "ns/other/uid-other", Done: "ns/other/uid-other", Sentinel: true},
			want: infrav1.HostAlreadyBootstrappedReason},
		{name: "a step fails", host: fakehost.Host{FailStep: "runcmd[0]"}, want: infrav1.BootstrapFailedReason, terminal: true},
		{name: "unreachable", host: fakehost.Host{Unreachable: true}, want: infrav1.HostUnreachableReason},
		{name: "login refused", host: fakehost.Host{AuthFailed: true}, want: infrav1.AuthFailedReason},
		{name: "prerequisites missing", host: fakehost.Host{Missing: "flock"}, want: infrav1.HostPrerequisitesMissingReason},
		{name: "disk full", host: fakehost.Host{DiskFull: true}, want: infrav1.HostDiskFullReason},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			h := tc.host
			rig := newRMRig(t, &h)
			rm := rig.reconcileUntil(tc.want, func(rm *infrav1.RemoteMachine) bool { return bootstrapReason(rm) == tc.want })
			g.Expect(conditions.IsFalse(rm, infrav1.BootstrapSucceededCondition)).To(BeTrue())
			g.Expect(conditions.GetReason(rm, infrav1.ReadyCondition)).To(Equal(tc.want), "Ready summarises the failure")
			g.Expect(ptr.Deref(rm.Status.Initialization.Provisioned, false)).To(BeFalse())
			g.Expect(terminalFailure(rm)).To(Equal(tc.terminal))
			got, _ := rig.hosts.Get(hostAddress, 22)
			if tc.want == infrav1.HostAlreadyBootstrappedReason {
				g.Expect(got.Marker).To(Equal("ns/other/uid-other"), "another machine's host is never touched")
				g.Expect(got.Ran).To(BeEmpty())
			}
		})
	}
}
