//go:build integration

package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// tenant returns a client acting as a cluster user of namespace ns: it may create, change and delete RemoteMachines,
// their templates and Machines there, and read Clusters, but not read Secrets (the security model's "cluster user").
func tenant(g Gomega, ns, user string) client.Client {
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cluster-user-" + user}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{infrav1.GroupVersion.Group}, Resources: []string{"remotemachines", "remotemachinetemplates"}, Verbs: []string{"*"}},
		{APIGroups: []string{clusterv1.GroupVersion.Group}, Resources: []string{"machines", "clusters"}, Verbs: []string{"*"}},
	}}
	g.Expect(env.Client.Create(ctx, role)).To(Succeed())
	g.Expect(env.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}}})).To(Succeed())
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	return c
}

// forgedCopy returns a direct RemoteMachine named name that copies victim's host, key and bootstrap-uid, with a
// cleanup command of the attacker's that leaves a trace on the host.
func forgedCopy(victim *infrav1.RemoteMachine, name string) *infrav1.RemoteMachine {
	rm := &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: victim.Namespace, Name: name,
		Annotations: map[string]string{infrav1.BootstrapUIDAnnotation: string(victim.UID)}}}
	rm.Spec.RemoteHost = *victim.Spec.RemoteHost.DeepCopy()
	rm.Spec.PooledRemoteMachineRef = nil
	rm.Spec.CustomCleanUpCommands = []string{"touch /run/capr-pwned"}
	return rm
}

// TestForgedBootstrapUIDNeverReachesAnotherHost: a cluster user who can read another RemoteMachine (its UID, host
// keys, key Secret name) copies them, with the bootstrap-uid annotation, into a RemoteMachine of their own, hoping
// to be "adopted" and to have CAPR run their cleanup commands as root on the other machine's host (and erase its
// markers). Admission refuses the annotation from anyone but CAPR and the move path, on create and on every update,
// including updates of an object being deleted. And if such an object is stored anyway (by a user who may read the
// namespace's Secrets), the host's marker binds namespace, name and UID: the copy adopts nothing, and its deletion
// runs nothing on the host, whose own machine is still cleaned.
func TestForgedBootstrapUIDNeverReachesAnotherHost(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\ntrue\n", "")
	f.keySecret(t, "key", h)
	victim := f.directMachine(h)
	victim.Spec.CustomCleanUpCommands = []string{"echo victim > /run/capr-cleaned-by"}
	g.Expect(env.Client.Create(ctx, victim)).To(Succeed())
	waitProvisioned(g, victim)
	victim = get(g, victim)
	marker, err := h.Exec("cat /var/lib/capr/bootstrap.uid")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(marker).To(Equal(fmt.Sprintf("%s/%s/%s\n", victim.Namespace, victim.Name, victim.UID)), "the marker binds namespace, name and UID")

	mallory := tenant(g, f.ns, "mallory")
	// Create with the annotation: refused.
	err = mallory.Create(ctx, forgedCopy(victim, "forged"))
	g.Expect(err).To(MatchError(ContainSubstring(`metadata.annotations[infrastructure.cluster.x-k8s.io/bootstrap-uid]: Forbidden`)))
	g.Expect(err).To(MatchError(ContainSubstring("may read this namespace's Secrets")))

	// Added later, on an object being deleted (kept by a finalizer of the user's own): refused too, and so is a
	// change of its spec.
	own := forgedCopy(victim, "own")
	own.Annotations = nil
	own.Finalizers = []string{"example.com/hold"}
	own.Spec.Address = "127.0.0.1"
	own.Spec.HostKeys = nil
	g.Expect(mallory.Create(ctx, own)).To(Succeed())
	g.Expect(mallory.Delete(ctx, own)).To(Succeed())
	err = annotate(mallory, own, infrav1.BootstrapUIDAnnotation, string(victim.UID))
	g.Expect(err).To(MatchError(ContainSubstring("bootstrap-uid]: Forbidden")))
	// One check, one error: the annotation was refused twice in one answer (by the move-path check and by its own).
	g.Expect(strings.Count(err.Error(), "bootstrap-uid]")).To(Equal(1), err.Error())
	badUID := forgedCopy(victim, "bad-uid")
	badUID.Annotations[infrav1.BootstrapUIDAnnotation] = "not-a-uid"
	err = mallory.Create(ctx, badUID)
	g.Expect(err).To(MatchError(ContainSubstring("bootstrap-uid]: Forbidden")))
	g.Expect(strings.Count(err.Error(), "bootstrap-uid]")).To(Equal(1), err.Error())
	g.Expect(annotate(mallory, own, clusterctlv1.DeleteForMoveAnnotation, "")).To(MatchError(ContainSubstring("delete-for-move]: Forbidden")))
	moved := get(g, own)
	moved.Spec.CustomCleanUpCommands = []string{"touch /run/capr-pwned-later"}
	g.Expect(mallory.Update(ctx, moved)).To(MatchError(ContainSubstring("spec: Forbidden: cannot change while the RemoteMachine is being deleted")))
	// The finalizer stays removable.
	moved = get(g, own)
	moved.Finalizers = nil
	g.Expect(mallory.Update(ctx, moved)).To(Succeed())
	waitGone(g, own)

	// Stored by a user who may read Secrets (admission lets the move path through): the marker does not name it.
	forged := forgedCopy(victim, "forged")
	g.Expect(env.Client.Create(ctx, forged)).To(Succeed())
	c := waitReason(g, forged, infrav1.BootstrapNotFoundReason)
	g.Expect(c.Message).To(ContainSubstring(f.ns + "/forged/" + string(victim.UID)))
	g.Expect(env.Client.Delete(ctx, get(g, forged))).To(Succeed())
	waitGone(g, forged)
	out, _ := h.Exec("ls /run/capr-pwned 2>&1; cat /var/lib/capr/bootstrap.uid")
	g.Expect(out).To(ContainSubstring("No such file"), "the forged copy's cleanup never ran on the host")
	g.Expect(out).To(ContainSubstring(marker), "the victim's marker is intact")

	// The victim's own cleanup still runs.
	g.Expect(env.Client.Delete(ctx, victim)).To(Succeed())
	waitGone(g, victim)
	out, _ = h.Exec("cat /run/capr-cleaned-by; ls /var/lib/capr")
	g.Expect(out).To(Equal("victim\ncleaned\n"))
}

// TestDirectMachineCannotReachAPooledHost: a cluster user names a pooled host directly (its address), or the
// pool's key Secret, to bypass the claim (and with it maintenance, quarantine and the pool owner's cleanup).
// Admission refuses both, naming the field and the way through the pool; nothing reaches the host.
func TestDirectMachineCannotReachAPooledHost(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	pooled, other := sshdtest.Start(t), sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\ntouch /run/capr-ran\n", "")
	f.keySecret(t, "pool-key", pooled)
	entry := f.hostEntry("pooled", pooled, "pool-key", "true")
	entry.Spec.Maintenance = true
	env.CreateEntryAndWait(g, entry)
	mallory := tenant(g, f.ns, "mallory")

	byAddress := f.directMachine(pooled)
	byAddress.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "pool-key"}
	err := mallory.Create(ctx, byAddress)
	g.Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("spec.address: Forbidden: host %s:%d is offered by a pool", pooled.Address, pooled.Port))))
	g.Expect(err).To(MatchError(ContainSubstring("spec.sshKeyRef.name: Forbidden: Secret pool-key holds the SSH key of pool entries")))

	// The same address in another form (upper-case IPv4-mapped IPv6 is normalised like the pool's lock).
	mapped := f.directMachine(pooled)
	mapped.Spec.Address = "::FFFF:" + pooled.Address
	f.keySecret(t, "own-key", other)
	mapped.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "own-key"}
	g.Expect(mallory.Create(ctx, mapped)).To(MatchError(ContainSubstring("spec.address: Forbidden")))

	// Through a template, which Cluster API turns into RemoteMachines with its own, wider rights: refused as well.
	tmpl := &infrav1.RemoteMachineTemplate{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "direct"}}
	tmpl.Spec.Template.Spec.RemoteHost = byAddress.Spec.RemoteHost
	tmpl.Spec.Template.ObjectMeta.Annotations = map[string]string{infrav1.BootstrapUIDAnnotation: "0b1f2c3d-1111-4222-8333-444455556666"}
	err = mallory.Create(ctx, tmpl)
	g.Expect(err).To(MatchError(ContainSubstring("spec.template.spec.address: Forbidden")))
	g.Expect(err).To(MatchError(ContainSubstring("spec.template.spec.sshKeyRef.name: Forbidden")))
	g.Expect(err).To(MatchError(ContainSubstring("spec.template.metadata.annotations[infrastructure.cluster.x-k8s.io/bootstrap-uid]: Forbidden")))

	// The platform team (who may read the key) may name the pool's key for a host outside the pool.
	outside := f.directMachine(other)
	outside.Name, outside.OwnerReferences = "outside", nil
	outside.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "pool-key"}
	g.Expect(env.Client.Create(ctx, outside)).To(Succeed())
	g.Expect(env.Client.Delete(ctx, outside)).To(Succeed())

	_, err = pooled.Exec("test ! -e /run/capr-ran && test ! -e /var/lib/capr/bootstrap.uid")
	g.Expect(err).NotTo(HaveOccurred(), "nothing reached the pooled host")
}

// TestQuarantineCannotBeBypassedByDeleteForMove: a cluster user marks their pooled RemoteMachine as deleted by
// clusterctl move (so its deletion skips the cleanup), and recreates it under the same claim with host fields and
// no bootstrap-uid of their choosing, so that deleting the copy releases the host uncleaned. The annotation is
// refused; a copy stored without the bootstrap the entry recorded is refused at admission, and if its predecessor
// vanished anyway the entry is quarantined, never released dirty.
func TestQuarantineCannotBeBypassedByDeleteForMove(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f, _, entry, rm := provisionedPooledMachine(t, "#!/bin/sh\ntrue\n", "host-q", "echo cleaned > /run/capr-cleaned", nil)
	mallory := tenant(g, f.ns, "mallory")
	stored := get(g, rm)
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.ClaimRef.BootstrapUID).To(Equal(stored.UID), "the entry recorded whose bootstrap its host holds before the run")

	g.Expect(annotate(mallory, stored, clusterctlv1.DeleteForMoveAnnotation, "")).To(MatchError(ContainSubstring("delete-for-move]: Forbidden")))

	// The move path (a user who may read Secrets) deletes it for move; the copy a cluster user then makes under the
	// claim, without the bootstrap the entry recorded, is refused.
	g.Expect(annotate(env.Client, stored, clusterctlv1.DeleteForMoveAnnotation, "")).To(Succeed())
	g.Expect(env.Client.Delete(ctx, stored)).To(Succeed())
	waitGone(g, stored)
	copyOf := f.remoteMachine()
	copyOf.Spec.PooledRemoteMachineRef = &infrav1.PooledRemoteMachineReference{Name: entry.Name}
	copyOf.Spec.Address, copyOf.Spec.SSHKeyRef = "127.0.0.1", &infrav1.SecretReference{Name: "key"}
	err := mallory.Create(ctx, copyOf)
	g.Expect(err).To(MatchError(ContainSubstring("holds the bootstrap of RemoteMachine UID " + string(stored.UID))))

	// Stored by the move path without it (an old clusterctl, a hand-made copy): the entry is quarantined.
	copyOf.ResourceVersion = ""
	g.Expect(env.Client.Create(ctx, copyOf)).To(MatchError(ContainSubstring("holds the bootstrap")))
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		g.Expect(entry.Spec.Quarantine).NotTo(BeNil())
		g.Expect(entry.Spec.Quarantine.Reason).To(Equal(infrav1.RemoteMachineVanishedReason))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
}

// TestRogueNodeDoesNotTakeTheProviderID: a Node that registers first with the host's address and no providerID (a
// rogue kubelet, or another cluster's) does not get the RemoteMachine's providerID; the Node whose machine-id is the
// one the host reported over SSH does.
func TestRogueNodeDoesNotTakeTheProviderID(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	wc, kubeconfig, stop := workloadCluster(g)
	defer stop()
	h := sshdtest.Start(t)
	rogue := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "rogue"}}
	g.Expect(wc.Create(ctx, rogue)).To(Succeed())
	rogue.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: h.Address}}
	g.Expect(wc.Status().Update(ctx, rogue)).To(Succeed())

	f := newFixtureWith(t, "#!/bin/sh\ntrue\n", "", func(ns string) { workloadKubeconfig(g, ns, kubeconfig) })
	f.keySecret(t, "key", h)
	rm := f.directMachine(h)
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	waitProvisioned(g, rm)
	g.Expect(get(g, rm).Status.MachineID).To(Equal(h.MachineID), "the host's machine-id, read over SSH")

	// A clone of the host's disk shares its machine-id under another name; the host name read over SSH tells the
	// real Node apart.
	hostname, err := h.Exec("hostname -s")
	g.Expect(err).NotTo(HaveOccurred())
	clone := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "clone"}}
	g.Expect(wc.Create(ctx, clone)).To(Succeed())
	clone.Status.NodeInfo.MachineID = h.MachineID
	g.Expect(wc.Status().Update(ctx, clone)).To(Succeed())
	real := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: strings.ToLower(strings.TrimSpace(hostname))}}
	g.Expect(wc.Create(ctx, real)).To(Succeed())
	real.Status.NodeInfo.MachineID = h.MachineID
	g.Expect(wc.Status().Update(ctx, real)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(wc.Get(ctx, client.ObjectKeyFromObject(real), real)).To(Succeed())
		g.Expect(real.Spec.ProviderID).To(Equal(get(g, rm).Spec.ProviderID))
	}, 90*time.Second, 500*time.Millisecond).Should(Succeed())
	g.Expect(wc.Get(ctx, client.ObjectKeyFromObject(rogue), rogue)).To(Succeed())
	g.Expect(rogue.Spec.ProviderID).To(BeEmpty(), "an address a kubelet reports proves nothing")
	g.Expect(wc.Get(ctx, client.ObjectKeyFromObject(clone), clone)).To(Succeed())
	g.Expect(clone.Spec.ProviderID).To(BeEmpty(), "a clone's machine-id alone does not make it the host")
	g.Expect(ptr.Deref(get(g, rm).Status.Initialization.Provisioned, false)).To(BeTrue())
}

// TestRebuiltHostIsRepinnedDuringCleanup: a RemoteMachine is deleted after its host was rebuilt (a new host key).
// Its cleanup stops on the mismatch and sends nothing; the accept-host-key annotation, set on the object being
// deleted, re-pins the host as it does before a bootstrap, and the cleanup then runs with the new key.
func TestRebuiltHostIsRepinnedDuringCleanup(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\ntrue\n", "")
	f.keySecret(t, "key", h)
	rm := f.directMachine(h)
	rm.Spec.CustomCleanUpCommands = []string{"echo cleaned > /run/capr-cleaned"}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	waitProvisioned(g, rm)

	stored := get(g, rm)
	old := rebuilt(h)
	newFP := sshrunner.Fingerprint(h.HostKey)
	// /var/lib/capr survives a reinstall that keeps the data disk (the test host's is a tmpfs, emptied by the restart).
	_, err := h.Exec("mkdir -p /var/lib/capr && echo " + stored.Namespace + "/" + stored.Name + "/" + string(stored.UID) + " > /var/lib/capr/bootstrap.uid")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(env.Client.Delete(ctx, stored)).To(Succeed())
	command := "kubectl annotate remotemachine m0 -n " + f.ns + " " + infrav1.AcceptHostKeyAnnotation + "=" + newFP
	g.Eventually(func(g Gomega) {
		c := condition(get(g, rm), infrav1.ReadyCondition)
		g.Expect(c.Reason).To(Equal(infrav1.CleanupFailedReason))
		g.Expect(c.Message).To(ContainSubstring(command))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	_, err = h.Exec("test ! -e /run/capr-cleaned")
	g.Expect(err).NotTo(HaveOccurred(), "nothing was sent to the rebuilt host")

	g.Expect(annotate(clientAs(g, operator), get(g, rm), infrav1.AcceptHostKeyAnnotation, newFP)).To(Succeed())
	waitGone(g, rm)
	out, _ := h.Exec("cat /run/capr-cleaned")
	g.Expect(out).To(Equal("cleaned\n"), "the cleanup ran with the accepted key")
	t.Logf("event: %s", waitEvent(g, f.ns, rm.Name, "HostKeyReplaced", sshrunner.Fingerprint(old), newFP, "accepted by "+operator))
}
