//go:build integration

package controllers_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host/sshhost"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestCleanupRegeneratesHostKeys: the attack is a previous claimant who had root on a pooled host (its bootstrap
// ran as root) and kept a copy of the host's private SSH host key, to impersonate the host to the next claimant.
// Before regenerateHostKeys, the cleanup returned the entry with its old pinned key, which the host went on serving.
// Now the cleanup gives the host new keys (the real sshd serves them), the entry pins exactly those, a connection
// pinning the old key is refused, and the entry is offered only once a probe logged in with the new keys: here the
// cleanup also takes root's authorized key away, so the first probes fail, and the entry waits, refused to claims,
// until the key is back.
func TestCleanupRegeneratesHostKeys(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.StartWith(t, sshdtest.Options{SystemHostKeys: true})
	old := h.HostKey
	f := newFixture(t, "#!/bin/sh\necho ran > /run/capr-ran\n", "")
	f.keySecret(t, "key", h)
	authorized := h.Dir + "/keys/root"
	entry := f.hostEntry("host-a", h, "key", "rm -f /run/capr-ran && mv "+authorized+" "+authorized+".off")
	entry.Spec.Machine.RegenerateHostKeys = true
	env.CreateEntryAndWait(g, entry)

	rm := f.remoteMachine()
	rm.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	waitProvisioned(g, rm)
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.Machine.HostKeys).To(Equal([]string{old}))

	g.Expect(env.Client.Delete(ctx, rm)).To(Succeed())
	waitGone(g, rm)
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.ClaimRef).To(BeNil())
	g.Expect(entry.Spec.Quarantine).To(BeNil())
	newKeys := h.PublicHostKeys()
	g.Expect(newKeys).To(HaveLen(3), "ssh-keygen -A made rsa, ecdsa and ed25519 keys")
	g.Expect(newKeys).NotTo(ContainElement(old))
	g.Expect(entry.Spec.Machine.HostKeys).To(ConsistOf(newKeys), "the entry pins exactly the keys the host now has")

	// The running sshd, told to reload by SIGHUP (its pid file is how hostkeys.sh found it: the host's /run has no
	// systemd), serves a new key, and a connection that pins the old one is refused.
	out, err := h.Exec("kill -0 \"$(cat /run/sshd.pid)\"")
	g.Expect(err).NotTo(HaveOccurred(), out)
	scanCfg := sshrunner.Config{Endpoint: sshrunner.Endpoint{Address: h.Address, Port: h.Port, User: "root", Signer: h.ClientSigner}}
	served, _, err := sshrunner.ScanHostKey(ctx, scanCfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(newKeys).To(ContainElement(served))
	oldCfg := scanCfg
	oldCfg.HostKeys = []string{old}
	_, err = sshhost.DialSSH(ctx, oldCfg)
	g.Expect(err).To(MatchError(sshrunner.ErrHostKeyMismatch))

	// The probe reaches the host with the new keys (a host key mismatch would say so) but cannot log in: the entry
	// is not offered.
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		c := conditions.Get(entry, infrav1.ReachableCondition)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(infrav1.AuthFailedReason), c.Message)
		g.Expect(entry.Status.Phase).To(Equal(infrav1.PooledRemoteMachinePhaseUnreachable))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(entry.Annotations).To(HaveKey(infrav1.HostKeysRegeneratedAnnotation))
	err = env.Client.Create(ctx, testenv.NewPooledMachine(f.ns, "early", "default"))
	g.Expect(err).To(MatchError(ContainSubstring(`no free PooledRemoteMachine in pool "default" (1 in pool: 1 unreachable)`)))

	// Once a probe logs in with the new keys, the entry is offered, and a new claim bootstraps with them.
	out, err = h.Exec("mv " + authorized + ".off " + authorized)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		g.Expect(entry.Annotations).NotTo(HaveKey(infrav1.HostKeysRegeneratedAnnotation))
		g.Expect(conditions.IsTrue(entry, infrav1.ReachableCondition)).To(BeTrue())
		g.Expect(entry.Status.Phase).To(Equal(infrav1.PooledRemoteMachinePhaseAvailable))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	next := f.remoteMachine()
	next.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, next)).To(Succeed())
	g.Expect(next.Spec.HostKeys).To(ConsistOf(newKeys))
	waitProvisioned(g, next)
	out, err = h.Exec("cat /run/capr-ran")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(Equal("ran\n"))
	g.Expect(condition(get(g, next), infrav1.BootstrapSucceededCondition).Status).To(Equal(metav1.ConditionTrue))
}
