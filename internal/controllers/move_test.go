//go:build integration

package controllers_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestClusterctlMove moves a namespace holding a bootstrapped pooled RemoteMachine, whose host rebooted since, to a
// second management cluster with Cluster API v1.14.2's clusterctl (bin/clusterctl). The pool entries, their claim
// and their key Secrets arrive; the source's deletion neither cleans the host nor is refused by the claimed entry's
// delete guard; the moved RemoteMachine adopts its host's bootstrap over SSH instead of running it again, its claim
// is re-bound to its new UID, and deleting it cleans the host.
func TestClusterctlMove(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f, h, entry, rm := provisionedPooledMachine(t, "#!/bin/sh\necho run >> /run/capr-runs\n", "host-a", "echo cleaned > /run/capr-cleaned",
		func(e *infrav1.PooledRemoteMachine) { e.Spec.FailureDomain = "rack-1" })
	// A free entry of another pool (never dialled: nothing claims it) with its own key Secret.
	f.keySecret(t, "spare-key", h)
	spare := testenv.NewEntry(f.ns, "spare", 0)
	spare.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "spare-key"}
	env.CreateEntryAndWait(g, spare)
	src := get(g, rm)
	g.Expect(src.Annotations).To(HaveKeyWithValue(infrav1.BootstrapUIDAnnotation, string(src.UID)))
	for _, name := range []string{"key", "spare-key"} {
		g.Eventually(func(g Gomega) {
			s := &corev1.Secret{}
			g.Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, s)).To(Succeed())
			g.Expect(s.Labels).To(HaveKey(clusterctlv1.ClusterctlMoveLabel), "Secret %s is labelled for clusterctl move", name)
		}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	}

	// What clusterctl checks before a move: the objects hang off the Cluster, whose control plane is initialized,
	// and every Machine has a Node.
	owned := func(obj client.Object, owner client.Object, kind string) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		obj.SetOwnerReferences(append(obj.GetOwnerReferences(), metav1.OwnerReference{APIVersion: clusterv1.GroupVersion.String(), Kind: kind, Name: owner.GetName(), UID: owner.GetUID()}))
		g.Expect(env.Client.Update(ctx, obj)).To(Succeed())
	}
	owned(f.machine, f.cluster, "Cluster")
	owned(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "m0-bootstrap"}}, f.machine, "Machine")
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(f.cluster), f.cluster)).To(Succeed())
	f.cluster.Status.Conditions = append(f.cluster.Status.Conditions, metav1.Condition{Type: clusterv1.ClusterControlPlaneInitializedCondition, Status: metav1.ConditionTrue, Reason: "Initialized", LastTransitionTime: metav1.Now()})
	g.Expect(env.Client.Status().Update(ctx, f.cluster)).To(Succeed())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(f.machine), f.machine)).To(Succeed())
	f.machine.Status.NodeRef = clusterv1.MachineNodeReference{Name: "node-0"}
	g.Expect(env.Client.Status().Update(ctx, f.machine)).To(Succeed())

	// The host reboots before the move: /run, and Cluster API's sentinel in it, is emptied.
	_, err := h.Exec("rm -rf /run/cluster-api")
	g.Expect(err).NotTo(HaveOccurred())

	dst, err := testenv.Start(testenv.Options{LogTo: logs, Manager: managerOptions(true)})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = dst.Stop() }()
	g.Expect(env.LabelCRDsAsClusterctlInstalled(ctx)).To(Succeed())
	g.Expect(dst.LabelCRDsAsClusterctlInstalled(ctx)).To(Succeed())

	cmd := exec.CommandContext(ctx, filepath.Join(env.BinDir, "clusterctl"), "move",
		"--kubeconfig", env.Kubeconfig, "--to-kubeconfig", dst.Kubeconfig, "--namespace", f.ns, "-v", "2")
	cmd.Env = append(os.Environ(), "CLUSTERCTL_DISABLE_VERSIONCHECK=true", "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), "clusterctl move:\n%s", out)
	t.Logf("clusterctl move:\n%s", out)

	// The source holds nothing more, and its deletion left the host alone.
	rms, entries := &infrav1.RemoteMachineList{}, &infrav1.PooledRemoteMachineList{}
	g.Expect(env.Client.List(ctx, rms, client.InNamespace(f.ns))).To(Succeed())
	g.Expect(env.Client.List(ctx, entries, client.InNamespace(f.ns))).To(Succeed())
	g.Expect(rms.Items).To(BeEmpty())
	g.Expect(entries.Items).To(BeEmpty())
	for _, name := range []string{"key", "spare-key"} {
		g.Expect(apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, &corev1.Secret{}))).To(BeTrue(), "Secret %s moved", name)
	}
	hostState, _ := h.Exec("cat /run/capr-runs; ls /run/capr-cleaned /var/lib/capr/bootstrap.done 2>&1")
	g.Expect(hostState).To(MatchRegexp(`^run\n.*/run/capr-cleaned.*No such file.*\n/var/lib/capr/bootstrap.done\n$`),
		"deleting the source neither cleaned the host nor ran the bootstrap again")

	// The target has the key Secrets, the entries with their claim, and a provisioned RemoteMachine.
	for _, name := range []string{"key", "spare-key"} {
		s := &corev1.Secret{}
		g.Expect(dst.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, s)).To(Succeed())
		g.Expect(s.Data["value"]).To(Equal(h.ClientKeyPEM))
	}
	moved := &infrav1.RemoteMachine{}
	movedEntry := &infrav1.PooledRemoteMachine{}
	g.Eventually(func(g Gomega) {
		g.Expect(dst.Client.Get(ctx, client.ObjectKeyFromObject(rm), moved)).To(Succeed())
		g.Expect(moved.UID).NotTo(Equal(src.UID))
		g.Expect(moved.Spec.ProviderID).To(Equal(src.Spec.ProviderID))
		g.Expect(moved.Spec.HostKeys).To(Equal([]string{h.HostKey}))
		g.Expect(moved.Status.Initialization.Provisioned).To(Equal(ptr.To(true)))
		g.Expect(moved.Status.FailureDomain).To(Equal("rack-1"))
		g.Expect(moved.Status.Addresses).To(ContainElement(HaveField("Type", clusterv1.MachineHostName)))
		g.Expect(moved.Annotations).To(HaveKeyWithValue(infrav1.BootstrapUIDAnnotation, string(src.UID)))
		g.Expect(condition(moved, infrav1.BootstrapSucceededCondition).Message).To(Equal(
			"The host was bootstrapped before this RemoteMachine was moved (as UID " + string(src.UID) + "); adopted the result"))
		g.Expect(dst.Client.Get(ctx, client.ObjectKeyFromObject(entry), movedEntry)).To(Succeed())
		g.Expect(movedEntry.Spec.ClaimRef).NotTo(BeNil())
		g.Expect(movedEntry.Spec.ClaimRef.Name).To(Equal(rm.Name))
		g.Expect(movedEntry.Spec.ClaimRef.UID).To(Equal(moved.UID), "the claim is re-bound to the moved RemoteMachine")
		g.Expect(movedEntry.Status.Phase).To(Equal(infrav1.PooledRemoteMachinePhaseClaimed))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(dst.Client.Get(ctx, client.ObjectKeyFromObject(spare), spare)).To(Succeed())
	g.Expect(spare.Spec.ClaimRef).To(BeNil())
	hostState, _ = h.Exec("cat /run/capr-runs")
	g.Expect(hostState).To(Equal("run\n"), "the moved RemoteMachine did not bootstrap the host again")

	// Deleting the moved RemoteMachine cleans the host (its marker names the machine that bootstrapped it) and
	// returns the entry to the target's pool.
	g.Expect(dst.Client.Delete(ctx, moved)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(dst.Client.Get(ctx, client.ObjectKeyFromObject(entry), movedEntry)).To(Succeed())
		g.Expect(movedEntry.Spec.ClaimRef).To(BeNil())
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(movedEntry.Spec.Quarantine).To(BeNil())
	hostState, _ = h.Exec("cat /run/capr-cleaned; ls /var/lib/capr")
	g.Expect(hostState).To(Equal("cleaned\ncleaned\n"), "cleanup ran (after the reboot too) and removed CAPR's marker and done record, leaving the cleaned list")
}

// TestDeleteForMoveAndDirtyHosts checks, deterministically, what clusterctl move relies on and what keeps dirty
// hosts out of the pool: a RemoteMachine deleted for move leaves its host alone, and its entry, bound to a
// RemoteMachine that vanished without cleanup, is quarantined; a host that held another bootstrap when it was
// claimed is quarantined when its RemoteMachine goes.
func TestDeleteForMoveAndDirtyHosts(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f, h, entry, rm := provisionedPooledMachine(t, "#!/bin/sh\necho run >> /run/capr-runs\n", "host-a", "echo cleaned > /run/capr-cleaned", nil)

	// Without the delete-for-move check the finalizer would stay until cleanup had run on the host.
	g.Expect(env.Client.Patch(ctx, rm, client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"`+clusterctlv1.DeleteForMoveAnnotation+`":""}}}`)))).To(Succeed())
	g.Expect(env.Client.Delete(ctx, rm)).To(Succeed())
	waitGone(g, rm)
	out, _ := h.Exec("ls /run/capr-cleaned /run/cluster-api/bootstrap-success.complete 2>&1")
	g.Expect(out).To(MatchRegexp(`/run/capr-cleaned.*No such file.*\n/run/cluster-api/bootstrap-success.complete\n$`), "the host was left to the moved copy")
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		g.Expect(entry.Spec.Quarantine).NotTo(BeNil())
		g.Expect(entry.Spec.Quarantine.Reason).To(Equal(infrav1.RemoteMachineVanishedReason))
		g.Expect(entry.Spec.ClaimRef).To(BeNil())
		g.Expect(entry.Status.Phase).To(Equal(infrav1.PooledRemoteMachinePhaseQuarantined))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(entry.Spec.Quarantine.Message).To(ContainSubstring("RemoteMachine m0 (UID " + string(rm.UID) + ") is gone without CAPR cleaning the host"))

	// Returned to service while still holding that bootstrap, the host is refused by the next machine, and
	// quarantined again when that machine is deleted instead of going back to the pool dirty.
	g.Expect(env.Client.Patch(ctx, entry, client.RawPatch(types.JSONPatchType, []byte(`[{"op":"remove","path":"/spec/quarantine"}]`)))).To(Succeed())
	next := f.remoteMachine()
	next.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, next)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(condition(get(g, next), infrav1.BootstrapSucceededCondition).Reason).To(Equal(infrav1.HostAlreadyBootstrappedReason))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(env.Client.Delete(ctx, next)).To(Succeed())
	waitGone(g, next)
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.ClaimRef).To(BeNil())
	g.Expect(entry.Spec.Quarantine).NotTo(BeNil())
	g.Expect(entry.Spec.Quarantine.Reason).To(Equal(infrav1.CleanupFailedReason))
	out, _ = h.Exec("cat /run/capr-runs")
	g.Expect(out).To(Equal("run\n"), "the bootstrap ran once in all")
}

// TestMovedCopyNeverRunsBootstrapData checks a RemoteMachine recreated as a bootstrapped copy whose host holds no
// such bootstrap: CAPR reports BootstrapNotFound and runs nothing, and deleting it finds nothing to clean.
func TestMovedCopyNeverRunsBootstrapData(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\necho run >> /run/capr-runs\n", "")
	f.keySecret(t, "key", h)
	rm := f.remoteMachine()
	rm.Spec.Address, rm.Spec.Port = h.Address, int32(h.Port)
	rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	rm.Spec.ProviderID = "remote-machine://" + h.Address
	rm.Annotations = map[string]string{infrav1.BootstrapUIDAnnotation: "0b1f2c3d-1111-4222-8333-444455556666"}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	g.Eventually(func(g Gomega) {
		c := condition(get(g, rm), infrav1.BootstrapSucceededCondition)
		g.Expect(c.Reason).To(Equal(infrav1.BootstrapNotFoundReason))
		g.Expect(c.Message).To(ContainSubstring("it was moved from another management cluster with its host's bootstrap (UID 0b1f2c3d-1111-4222-8333-444455556666)"))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	out, _ := h.Exec("ls /run/capr-runs /var/lib/capr/bootstrap.uid 2>&1 | grep -c 'No such file'")
	g.Expect(out).To(Equal("2\n"), "no bootstrap data ran and no marker was written")

	g.Expect(env.Client.Delete(ctx, rm)).To(Succeed())
	waitGone(g, rm)
}

// TestSlowMoveKeepsTheClaim: clusterctl move recreates a claimed entry, then (maybe minutes later, for large pools
// or retries) its RemoteMachine, while the Cluster stays paused. The claim waits as long as the Cluster is paused,
// far past the grace period, and is quarantined as vanished only once the Cluster resumes without it.
func TestSlowMoveKeepsTheClaim(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f := newFixture(t, "#!/bin/sh\ntrue\n", "")
	f.cluster.Spec.Paused = ptr.To(true)
	g.Expect(env.Client.Update(ctx, f.cluster)).To(Succeed())

	entry := testenv.NewEntry(f.ns, "default", 0)
	entry.Spec.ClaimRef = &infrav1.PooledMachineClaim{Name: "still-moving", UID: "0b1f2c3d-1111-4222-8333-444455556666",
		ClaimedAt: &metav1.Time{Time: time.Now().Add(-time.Hour)}, ClusterName: f.cluster.Name}
	g.Expect(env.Client.Create(ctx, entry)).To(Succeed())
	g.Consistently(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		g.Expect(entry.Spec.Quarantine).To(BeNil())
		g.Expect(entry.Spec.ClaimRef).NotTo(BeNil())
	}, 3*orphanGrace, 200*time.Millisecond).Should(Succeed())

	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(f.cluster), f.cluster)).To(Succeed())
	f.cluster.Spec.Paused = nil
	g.Expect(env.Client.Update(ctx, f.cluster)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		g.Expect(entry.Spec.Quarantine).NotTo(BeNil())
		g.Expect(entry.Spec.Quarantine.Reason).To(Equal(infrav1.RemoteMachineVanishedReason))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}
