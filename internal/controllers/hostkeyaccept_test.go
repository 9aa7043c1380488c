//go:build integration

package controllers_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// operator is the person accepting keys in these tests, as the apiserver authenticates them (impersonated).
const operator = "alice@example.com"

// clientAs returns a client that acts as user (impersonated by the test's admin).
func clientAs(g Gomega, user string) client.Client {
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:masters", "system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	return c
}

// annotate sets one annotation on obj, as kubectl annotate --overwrite does (a merge patch of metadata only).
func annotate(c client.Client, obj client.Object, key, value string) error {
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{key: value}}})
	return c.Patch(context.Background(), obj, client.RawPatch(types.MergePatchType, body))
}

// rebuilt gives h a new host key, as a reinstall at the same address does, and returns the old one.
func rebuilt(h *sshdtest.Host) string {
	old := h.HostKey
	h.RotateHostKey()
	h.Restart()
	return old
}

// noBootstrapOn checks that nothing of a bootstrap reached the host.
func noBootstrapOn(g Gomega, h *sshdtest.Host) {
	out, _ := h.Exec("ls -A /var/lib/capr /run /run/cluster-api 2>/dev/null; true")
	g.Expect(out).NotTo(ContainSubstring("capr-ran"))
	g.Expect(out).NotTo(ContainSubstring("bootstrap.uid"))
	g.Expect(out).NotTo(ContainSubstring("bootstrap-success.complete"))
}

// waitEvent waits for an event about the object whose "Reason: note" contains every one of parts.
func waitEvent(g Gomega, ns, name string, parts ...string) string {
	var found string
	g.Eventually(func(g Gomega) {
		found = ""
		for _, e := range eventsOf(g, ns, name) {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(e, p)
			}
			if all {
				found = e
			}
		}
		g.Expect(found).NotTo(BeEmpty(), "no event with %q among %v", parts, eventsOf(g, ns, name))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	return found
}

// TestRebuiltHostIsRepinnedOnce: a host reinstalled at the same address presents a new key. It gets nothing, and
// the condition says which key it presents, which one is pinned, and how to accept the new one. An annotation
// naming another key changes nothing; the one naming the presented key replaces the pinned key once, the
// bootstrap runs, and status and an event record who accepted it.
func TestRebuiltHostIsRepinnedOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\ntouch /run/capr-ran\n", "")
	f.keySecret(t, "key", h)
	rm := f.directMachine(h)
	old := rebuilt(h)
	oldFP, newFP := sshrunner.Fingerprint(old), sshrunner.Fingerprint(h.HostKey)
	rm.Spec.HostKeys = []string{old}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())

	// Refused: nothing runs, and the message names both fingerprints and the command.
	c := waitReason(g, rm, infrav1.HostKeyMismatchReason)
	command := "kubectl annotate remotemachine m0 -n " + f.ns + " " + infrav1.AcceptHostKeyAnnotation + "=" + newFP
	g.Expect(c.Message).To(ContainSubstring(oldFP))
	g.Expect(c.Message).To(ContainSubstring("ssh-ed25519 " + newFP))
	g.Expect(c.Message).To(ContainSubstring(command))
	t.Logf("condition: %s: %s", c.Reason, c.Message)
	t.Logf("event: %s", waitEvent(g, f.ns, rm.Name, "HostKeyMismatch", command))
	noBootstrapOn(g, h)

	// Another key's fingerprint: nothing changes, and an event (and the condition) says so.
	alice := clientAs(g, operator)
	g.Expect(annotate(alice, get(g, rm), infrav1.AcceptHostKeyAnnotation, oldFP)).To(Succeed())
	t.Logf("event: %s", waitEvent(g, f.ns, rm.Name, "HostKeyNotAccepted", "names "+oldFP, newFP, "nothing changed"))
	g.Eventually(func(g Gomega) {
		g.Expect(condition(get(g, rm), infrav1.BootstrapSucceededCondition).Message).To(ContainSubstring("annotation names " + oldFP))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	got := get(g, rm)
	g.Expect(got.Spec.HostKeys).To(Equal([]string{old}))
	g.Expect(condition(got, infrav1.BootstrapSucceededCondition).Reason).To(Equal(infrav1.HostKeyMismatchReason))
	g.Expect(got.Annotations).To(HaveKeyWithValue(infrav1.AcceptHostKeyByAnnotation, operator), "the webhook recorded who set it")
	g.Expect(got.Status.LastHostKeyReplacement).To(BeNil())
	noBootstrapOn(g, h)

	// The presented key's fingerprint: accepted once, and the bootstrap runs.
	g.Expect(annotate(alice, got, infrav1.AcceptHostKeyAnnotation, newFP)).To(Succeed())
	waitProvisioned(g, rm)
	got = get(g, rm)
	g.Expect(got.Spec.HostKeys).To(Equal([]string{h.HostKey}))
	g.Expect(got.Annotations).NotTo(HaveKey(infrav1.AcceptHostKeyAnnotation), "consumed")
	g.Expect(got.Annotations).NotTo(HaveKey(infrav1.AcceptHostKeyByAnnotation))
	r := got.Status.LastHostKeyReplacement
	g.Expect(r).NotTo(BeNil())
	g.Expect(r.Previous).To(Equal([]string{oldFP}))
	g.Expect(r.Current).To(Equal(newFP))
	g.Expect(r.By).To(Equal(operator))
	g.Expect(r.Bastion).To(BeFalse())
	status, _ := yaml.Marshal(map[string]any{"lastHostKeyReplacement": r})
	t.Logf("status:\n%s", status)
	t.Logf("event: %s", waitEvent(g, f.ns, rm.Name, "HostKeyReplaced", oldFP, newFP, "accepted by "+operator))
	_, err := h.Exec("test -f /run/capr-ran")
	g.Expect(err).NotTo(HaveOccurred(), "the bootstrap ran")

	g.Expect(env.Client.Delete(ctx, got)).To(Succeed())
	waitGone(g, rm)
}

// TestRebuiltPoolHostIsRepinnedOnce: a pooled host rebuilt before its claim. The claimed RemoteMachine meets the
// mismatch; the key is accepted on the RemoteMachine (the claimed entry refuses the annotation and says where it
// goes), the entry's pinned key is replaced with it, and the host is released clean afterwards.
func TestRebuiltPoolHostIsRepinnedOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\ntouch /run/capr-ran\n", "")
	f.keySecret(t, "key", h)
	old := rebuilt(h)
	oldFP, newFP := sshrunner.Fingerprint(old), sshrunner.Fingerprint(h.HostKey)
	entry := f.hostEntry("rebuilt", h, "key", "rm -f /run/capr-ran")
	entry.Spec.Machine.HostKeys = []string{old}
	env.CreateEntryAndWait(g, entry)
	rm := f.remoteMachine()
	rm.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())

	c := waitReason(g, rm, infrav1.HostKeyMismatchReason)
	g.Expect(c.Message).To(ContainSubstring(oldFP))
	g.Expect(c.Message).To(ContainSubstring("kubectl annotate remotemachine m0 -n " + f.ns + " " + infrav1.AcceptHostKeyAnnotation + "=" + newFP))
	noBootstrapOn(g, h)

	alice := clientAs(g, operator)
	// Admission: the claimed entry points at its RemoteMachine; a value that is no fingerprint is refused.
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	err := annotate(alice, entry, infrav1.AcceptHostKeyAnnotation, newFP)
	g.Expect(err).To(MatchError(ContainSubstring("claimed by RemoteMachine m0")))
	g.Expect(err).To(MatchError(ContainSubstring("kubectl annotate remotemachine m0 -n " + f.ns)))
	err = annotate(alice, get(g, rm), infrav1.AcceptHostKeyAnnotation, "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48")
	g.Expect(err).To(MatchError(ContainSubstring(infrav1.AcceptHostKeyAnnotation)))
	g.Expect(err).To(MatchError(ContainSubstring("ssh-keygen -l")))

	g.Expect(annotate(alice, get(g, rm), infrav1.AcceptHostKeyAnnotation, newFP)).To(Succeed())
	waitProvisioned(g, rm)
	got := get(g, rm)
	g.Expect(got.Spec.HostKeys).To(Equal([]string{h.HostKey}))
	g.Expect(got.Annotations).NotTo(HaveKey(infrav1.AcceptHostKeyAnnotation))
	g.Expect(got.Status.LastHostKeyReplacement).NotTo(BeNil())
	g.Expect(got.Status.LastHostKeyReplacement.By).To(Equal(operator))
	g.Expect(got.Status.LastHostKeyReplacement.Previous).To(Equal([]string{oldFP}))
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.Machine.HostKeys).To(Equal([]string{h.HostKey}), "the entry's pinned key is replaced too")
	waitEvent(g, f.ns, entry.Name, "HostKeyReplaced", newFP, operator, "RemoteMachine m0")
	t.Logf("event: %s", waitEvent(g, f.ns, rm.Name, "HostKeyReplaced", oldFP, newFP, operator))

	// Cleaned with the new key and returned to the pool, not quarantined.
	g.Expect(env.Client.Delete(ctx, got)).To(Succeed())
	waitGone(g, rm)
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.Quarantine).To(BeNil())
	g.Expect(entry.Spec.ClaimRef).To(BeNil())
	_, err = h.Exec("test -f /run/capr-ran")
	g.Expect(err).To(HaveOccurred(), "cleaned")
}

// TestRebuiltProbedEntryIsRepinnedOnce: the probe of a free entry meets a rebuilt host's key. The entry is not
// offered; another key's fingerprint changes nothing; the presented key's replaces the pinned one once (a key that
// changes again afterwards is refused again).
func TestRebuiltProbedEntryIsRepinnedOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	h := sshdtest.Start(t)
	remember(string(h.ClientKeyPEM))
	g.Expect(env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "key"}, Data: map[string][]byte{"value": h.ClientKeyPEM}})).To(Succeed())
	old := rebuilt(h)
	oldFP, newFP := sshrunner.Fingerprint(old), sshrunner.Fingerprint(h.HostKey)
	entry := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probed", Labels: map[string]string{"capr-test-probe": "true"}}}
	entry.Spec.Pool = "probed"
	entry.Spec.Machine.Address, entry.Spec.Machine.Port = h.Address, int32(h.Port)
	entry.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	entry.Spec.Machine.HostKeys = []string{old}
	g.Expect(env.Client.Create(ctx, entry)).To(Succeed())

	reachable := func(g Gomega) *metav1.Condition {
		got := &infrav1.PooledRemoteMachine{}
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), got)).To(Succeed())
		c := conditions.Get(got, infrav1.ReachableCondition)
		g.Expect(c).NotTo(BeNil())
		return c
	}
	g.Eventually(reachable, 30*time.Second, 200*time.Millisecond).Should(HaveField("Reason", infrav1.HostKeyMismatchReason))
	c := reachable(g)
	g.Expect(c.Message).To(ContainSubstring(oldFP))
	g.Expect(c.Message).To(ContainSubstring("kubectl annotate pooledremotemachine probed -n " + ns + " " + infrav1.AcceptHostKeyAnnotation + "=" + newFP))
	t.Logf("condition: Reachable %s: %s", c.Reason, c.Message)

	alice := clientAs(g, operator)
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(annotate(alice, entry, infrav1.AcceptHostKeyAnnotation, oldFP)).To(Succeed())
	waitEvent(g, ns, entry.Name, "HostKeyNotAccepted", "names "+oldFP, newFP, "nothing changed")
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.Machine.HostKeys).To(Equal([]string{old}))
	g.Expect(reachable(g).Reason).To(Equal(infrav1.HostKeyMismatchReason))

	g.Expect(annotate(alice, entry, infrav1.AcceptHostKeyAnnotation, newFP)).To(Succeed())
	g.Eventually(reachable, 30*time.Second, 200*time.Millisecond).Should(HaveField("Status", metav1.ConditionTrue))
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.Machine.HostKeys).To(Equal([]string{h.HostKey}))
	g.Expect(entry.Annotations).NotTo(HaveKey(infrav1.AcceptHostKeyAnnotation))
	g.Expect(entry.Annotations).NotTo(HaveKey(infrav1.AcceptHostKeyByAnnotation))
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		r := entry.Status.LastHostKeyReplacement
		g.Expect(r).NotTo(BeNil())
		g.Expect(r.Previous).To(Equal([]string{oldFP}))
		g.Expect(r.Current).To(Equal(newFP))
		g.Expect(r.By).To(Equal(operator))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	t.Logf("event: %s", waitEvent(g, ns, entry.Name, "HostKeyReplaced", oldFP, newFP, operator))

	// The annotation was used up: a key that changes again is refused again.
	rebuilt(h)
	g.Eventually(reachable, 30*time.Second, 200*time.Millisecond).Should(HaveField("Reason", infrav1.HostKeyMismatchReason))
}

// TestRebuiltBastionIsRepinnedOnce: the bastion is rebuilt. The message says it is the bastion's key, and the
// annotation replaces the bastion's pinned key (not the host's).
func TestRebuiltBastionIsRepinnedOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	jump := sshdtest.Start(t)
	target := sshdtest.StartWith(t, sshdtest.Options{ClientKeyPEM: jump.ClientKeyPEM})
	f := newFixture(t, "#!/bin/sh\ntouch /run/capr-ran\n", "")
	f.keySecret(t, "key", jump)
	rm := f.directMachine(target)
	old := rebuilt(jump)
	oldFP, newFP := sshrunner.Fingerprint(old), sshrunner.Fingerprint(jump.HostKey)
	rm.Spec.HostKeys = []string{target.HostKey}
	rm.Spec.Bastion = &infrav1.Bastion{Address: jump.Address, Port: int32(jump.Port), User: "root", SSHKeyRef: infrav1.SecretReference{Name: "key"}, HostKeys: []string{old}}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())

	c := waitReason(g, rm, infrav1.HostKeyMismatchReason)
	g.Expect(c.Message).To(ContainSubstring("If the bastion was rebuilt"))
	g.Expect(c.Message).To(ContainSubstring(infrav1.AcceptHostKeyAnnotation + "=" + newFP))
	noBootstrapOn(g, target)

	g.Expect(annotate(clientAs(g, operator), get(g, rm), infrav1.AcceptHostKeyAnnotation, newFP)).To(Succeed())
	waitProvisioned(g, rm)
	got := get(g, rm)
	g.Expect(got.Spec.Bastion.HostKeys).To(Equal([]string{jump.HostKey}))
	g.Expect(got.Spec.HostKeys).To(Equal([]string{target.HostKey}), "the host's own key is untouched")
	r := got.Status.LastHostKeyReplacement
	g.Expect(r).NotTo(BeNil())
	g.Expect(r.Bastion).To(BeTrue())
	g.Expect(r.Previous).To(Equal([]string{oldFP}))
	g.Expect(r.By).To(Equal(operator))
	waitEvent(g, f.ns, rm.Name, "HostKeyReplaced", "bastion key(s) "+oldFP, newFP, operator)
	g.Expect(env.Client.Delete(ctx, got)).To(Succeed())
	waitGone(g, rm)
}
