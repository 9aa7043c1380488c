//go:build integration

package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// directMachine returns the fixture's RemoteMachine pointed straight at h with key Secret "key".
func (f *fixture) directMachine(h *sshdtest.Host) *infrav1.RemoteMachine {
	rm := f.remoteMachine()
	rm.Spec.Address, rm.Spec.Port = h.Address, int32(h.Port)
	rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	return rm
}

func waitReason(g Gomega, rm *infrav1.RemoteMachine, reason string) metav1.Condition {
	var c metav1.Condition
	g.Eventually(func(g Gomega) {
		c = condition(get(g, rm), infrav1.BootstrapSucceededCondition)
		g.Expect(c.Reason).To(Equal(reason), c.Message)
	}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
	return c
}

// eventsOf returns the messages of the events recorded about an object.
func eventsOf(g Gomega, ns, name string) []string {
	list := &eventsv1.EventList{}
	g.Expect(env.Client.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e.Reason+": "+e.Note)
		}
	}
	return out
}

// TestKeyIsPinnedBeforeAnythingIsSent: under AcceptNew the host's key is stored in spec before the first run, so a
// run that fails keeps it pinned, and a host that answers with another key afterwards gets nothing.
func TestKeyIsPinnedBeforeAnythingIsSent(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t, sshdtest.User{Name: "nosudo"})
	f := newFixture(t, "#!/bin/sh\ntouch /run/capr-ran\n", "")
	f.keySecret(t, "key", h)
	rm := f.directMachine(h)
	rm.Spec.User, rm.Spec.UseSudo = "nosudo", true
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())

	// The run fails before anything runs (no sudo); the key it met stays pinned.
	waitReason(g, rm, infrav1.SudoUnavailableReason)
	g.Expect(get(g, rm).Spec.HostKeys).To(Equal([]string{h.HostKey}))
	g.Expect(eventsOf(g, f.ns, rm.Name)).To(ContainElement(ContainSubstring("HostKeyPinned")))

	// Another key answers at the same address: refused, and nothing is sent.
	h.RotateHostKey()
	h.Restart()
	c := waitReason(g, rm, infrav1.HostKeyMismatchReason)
	g.Expect(c.Message).To(ContainSubstring("not among the 1 pinned key(s)"))
	out, _ := h.Exec("ls -A /var/lib/capr /run")
	g.Expect(out).NotTo(ContainSubstring("capr-ran"))
	g.Expect(out).NotTo(ContainSubstring("bootstrap.uid"))

	g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
	waitGone(g, rm)
}

// TestBastionKeyIsPinnedForAPooledMachine: a pool entry behind a bastion, with no keys pinned: the bastion's key
// and then the host's are pinned (on the RemoteMachine and on the entry) before the bootstrap, and kept.
func TestBastionKeyIsPinnedForAPooledMachine(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	jump := sshdtest.Start(t)
	target := sshdtest.StartWith(t, sshdtest.Options{ClientKeyPEM: jump.ClientKeyPEM})
	f := newFixture(t, "#!/bin/sh\ntouch /run/capr-ran\n", "")
	f.keySecret(t, "key", jump)
	entry := f.hostEntry("behind-bastion", target, "key", "true")
	entry.Spec.Machine.Bastion = &infrav1.Bastion{Address: jump.Address, Port: int32(jump.Port), User: "root", SSHKeyRef: infrav1.SecretReference{Name: "key"}}
	env.CreateEntryAndWait(g, entry)
	rm := f.remoteMachine()
	rm.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	waitProvisioned(g, rm)

	got := get(g, rm)
	g.Expect(got.Spec.Bastion.HostKeys).To(Equal([]string{jump.HostKey}))
	g.Expect(got.Spec.HostKeys).To(Equal([]string{target.HostKey}))
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
	g.Expect(entry.Spec.Machine.Bastion.HostKeys).To(Equal([]string{jump.HostKey}))
	g.Expect(entry.Spec.Machine.HostKeys).To(Equal([]string{target.HostKey}))
	_, err := target.Exec("test -f /run/capr-ran")
	g.Expect(err).NotTo(HaveOccurred(), "the bootstrap ran on the target")

	// A pinned bastion key is never dropped: an update without it (as a server-side apply of the template sends)
	// keeps it.
	patch := client.RawPatch(types.JSONPatchType, []byte(`[{"op":"remove","path":"/spec/bastion/hostKeys"}]`))
	g.Expect(env.Client.Patch(ctx, got, patch)).To(Succeed())
	g.Expect(get(g, rm).Spec.Bastion.HostKeys).To(Equal([]string{jump.HostKey}))
	g.Expect(env.Client.Delete(ctx, got)).To(Succeed())
	waitGone(g, rm)
}

// TestPoolOwnerDecidesTheCleanup: a pooled RemoteMachine cannot bring its own cleanup commands or working
// directory, at creation or later; its host is cleaned the way the entry says.
func TestPoolOwnerDecidesTheCleanup(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\ntrue\n", "")
	f.keySecret(t, "key", h)
	env.CreateEntryAndWait(g, f.hostEntry("owned", h, "key", "echo by-owner > /run/capr-cleaned"))

	rm := f.remoteMachine()
	rm.Spec.Pool = "default"
	rm.Spec.CustomCleanUpCommands = []string{"echo by-tenant > /run/capr-cleaned"}
	err := env.Client.Create(ctx, rm)
	g.Expect(err).To(MatchError(ContainSubstring("spec.customCleanUpCommands: Forbidden: a pooled host is cleaned the way its pool entry says")))
	rm.Spec.CustomCleanUpCommands, rm.Spec.WorkingDir = nil, "/srv"
	g.Expect(env.Client.Create(ctx, rm)).To(MatchError(ContainSubstring("spec.workingDir: Forbidden")))

	rm.Spec.WorkingDir = ""
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	waitProvisioned(g, rm)
	got := get(g, rm)
	got.Spec.CustomCleanUpCommands = []string{"echo by-tenant > /run/capr-cleaned"}
	g.Expect(env.Client.Update(ctx, got)).To(MatchError(ContainSubstring("spec.customCleanUpCommands: Forbidden: a pooled host is cleaned the way its pool entry says: set it on PooledRemoteMachine owned")))

	g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
	waitGone(g, rm)
	out, _ := h.Exec("cat /run/capr-cleaned")
	g.Expect(out).To(Equal("by-owner\n"))
}

// TestTouchedHostIsCleanedWhateverFailsNext: a run that started on a pooled host and was cut off, followed by a
// refused key (AuthFailed), still leaves the host to be cleaned: as it cannot be, its entry is quarantined, never
// released.
func TestTouchedHostIsCleanedWhateverFailsNext(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#cloud-config\nruncmd:\n- touch /run/capr-started; sleep 2\n", "")
	f.keySecret(t, "key", h)
	entry := f.hostEntry("touched", h, "key", "true")
	env.CreateEntryAndWait(g, entry)
	rm := f.remoteMachine()
	rm.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	g.Eventually(func() error {
		_, err := h.Exec("test -f /run/capr-started")
		return err
	}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	g.Expect(os.Remove(filepath.Join(h.Dir, "keys", "root"))).To(Succeed())
	dials.dropAll()
	waitReason(g, rm, infrav1.AuthFailedReason)

	g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), entry)).To(Succeed())
		g.Expect(entry.Spec.Quarantine).NotTo(BeNil())
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(entry.Spec.Quarantine.Reason).To(Equal(infrav1.CleanupFailedReason))
	g.Expect(entry.Spec.Quarantine.Message).To(ContainSubstring("refused the SSH key"))
	waitGone(g, rm)
}

// TestFailedBootstrapIsNotRunAgain: a step that fails on the host makes the bootstrap terminal (BootstrapFailed,
// with the v1beta1 failure fields); it is never run again, however often the RemoteMachine is reconciled.
func TestFailedBootstrapIsNotRunAgain(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#cloud-config\nruncmd:\n- echo run >> /run/capr-runs\n- exit 3\n", "")
	f.keySecret(t, "key", h)
	rm := f.directMachine(h)
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	c := waitReason(g, rm, infrav1.BootstrapFailedReason)
	g.Expect(c.Message).To(ContainSubstring("step runcmd[1] failed; it is not run again"))
	g.Eventually(func(g Gomega) {
		g.Expect(get(g, rm).Status.FailureReason).To(Equal(ptr.To("CreateError")))
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	got := get(g, rm)
	g.Expect(condition(got, infrav1.ReadyCondition).Reason).To(Equal(infrav1.BootstrapFailedReason), "mirrored into the Machine's InfrastructureReady")

	// Reconciles keep coming (an annotation changes, the retry interval passes many times): nothing runs again.
	g.Expect(env.Client.Patch(ctx, got, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"poke":"1"}}}`)))).To(Succeed())
	g.Consistently(func(g Gomega) {
		out, _ := h.Exec("cat /run/capr-runs")
		g.Expect(out).To(Equal("run\n"))
		g.Expect(condition(get(g, rm), infrav1.BootstrapSucceededCondition).Reason).To(Equal(infrav1.BootstrapFailedReason))
	}, 4*time.Second, 200*time.Millisecond).Should(Succeed())

	// A change of the spec tries again, and the host itself refuses to run the data twice.
	got = get(g, rm)
	got.Spec.CustomCleanUpCommands = []string{"true"}
	g.Expect(env.Client.Update(ctx, got)).To(Succeed())
	g.Eventually(func(g Gomega) {
		c := condition(get(g, rm), infrav1.BootstrapSucceededCondition)
		g.Expect(c.Message).To(ContainSubstring("already ran on the host and failed"))
		g.Expect(c.Reason).To(Equal(infrav1.BootstrapFailedReason))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	out, _ := h.Exec("cat /run/capr-runs")
	g.Expect(out).To(Equal("run\n"))

	// Deleting cleans the host, which then holds nothing of this machine.
	g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
	waitGone(g, rm)
	out, _ = h.Exec("ls /var/lib/capr")
	g.Expect(out).To(Equal("cleaned\n"))
}

// TestSecretsStayOutOfConditions: a failing step that prints a bootstrap token and a key from the bootstrap data,
// inside its own lines, leaves neither in the condition nor in the events.
func TestSecretsStayOutOfConditions(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	const token, certKey = "k9j8h7.g6f5d4s3a2p1o0i9", "0c2b4d6f8a1e3c5b7d9f0a2c4e6b8d1f3a5c7e9b0d2f4a6c8e1b3d5f7a9c0e2b4d"
	data := "#cloud-config\nwrite_files:\n- path: /run/join.yaml\n  content: |\n    token: " + token + "\n    certificateKey: " + certKey +
		"\nruncmd:\n- 'echo \"joining with $(cat /run/join.yaml | tr \"\\n\" \" \")\" >&2; exit 1'\n"
	f := newFixture(t, data, "")
	remember(token)
	remember(certKey)
	f.keySecret(t, "key", h)
	rm := f.directMachine(h)
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	c := waitReason(g, rm, infrav1.BootstrapFailedReason)
	g.Expect(c.Message).To(ContainSubstring("joining with [REDACTED]"))
	var failureMessage string
	g.Eventually(func(g Gomega) {
		// The conditions and the rest of the status are separate patches.
		failureMessage = ptr.Deref(get(g, rm).Status.FailureMessage, "")
		g.Expect(failureMessage).NotTo(BeEmpty())
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	texts := append([]string{c.Message, failureMessage}, eventsOf(g, f.ns, rm.Name)...)
	for _, text := range texts {
		g.Expect(text).NotTo(ContainSubstring(token))
		g.Expect(text).NotTo(ContainSubstring(certKey))
	}
	g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
	waitGone(g, rm)
}

// bootstrapping starts a direct RemoteMachine whose bootstrap runs for two seconds, and returns once it has started
// on the host.
func bootstrapping(t *testing.T) (*fixture, *sshdtest.Host, *infrav1.RemoteMachine) {
	t.Helper()
	g := NewWithT(t)
	h := sshdtest.Start(t)
	f := newFixture(t, "#cloud-config\nruncmd:\n- touch /run/capr-started; sleep 2\n", "")
	f.keySecret(t, "key", h)
	rm := f.directMachine(h)
	g.Expect(env.Client.Create(context.Background(), rm)).To(Succeed())
	g.Eventually(func() error {
		_, err := h.Exec("test -f /run/capr-started")
		return err
	}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	return f, h, rm
}

// TestBlockMoveWhileBootstrapping: clusterctl move waits (block-move) while a bootstrap runs; a run that ends while
// the Cluster is paused (as move pauses it) is recorded at once and the block lifted, so the move carries it.
func TestBlockMoveWhileBootstrapping(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	f, _, rm := bootstrapping(t)
	g.Expect(get(g, rm).Annotations).To(HaveKey(clusterctlv1.BlockMoveAnnotation))

	f.cluster.Spec.Paused = ptr.To(true)
	g.Expect(env.Client.Update(ctx, f.cluster)).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := get(g, rm)
		g.Expect(condition(got, infrav1.PausedCondition).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(got.Status.Initialization.Provisioned).To(Equal(ptr.To(true)))
		g.Expect(got.Annotations).NotTo(HaveKey(clusterctlv1.BlockMoveAnnotation))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
	waitGone(g, rm)
}

// TestDeleteForMoveLeavesTheRunAlone: a RemoteMachine deleted by clusterctl move during its bootstrap does not
// stop the run on the host: the moved copy adopts its result.
func TestDeleteForMoveLeavesTheRunAlone(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	_, h, rm := bootstrapping(t)
	identity := rm.Namespace + "/" + rm.Name + "/" + string(get(g, rm).UID)
	// What clusterctl does: replace the annotations with its own, delete.
	g.Expect(env.Client.Patch(ctx, get(g, rm), client.RawPatch(types.JSONPatchType,
		[]byte(`[{"op":"add","path":"/metadata/annotations","value":{"`+clusterctlv1.DeleteForMoveAnnotation+`":""}}]`)))).To(Succeed())
	g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
	waitGone(g, rm)
	g.Eventually(func() string {
		out, _ := h.Exec("cat /var/lib/capr/bootstrap.done")
		return out
	}, 30*time.Second, 100*time.Millisecond).Should(Equal(identity+"\n"), "the run went on to its end")
}

// TestMissingPrerequisitesAreNamed: a host without flock is refused before anything is stored on it, with a
// reason that names what is missing.
func TestMissingPrerequisitesAreNamed(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	out, err := h.Exec(`mount --bind /dev/null "$(command -v flock)"`)
	g.Expect(err).NotTo(HaveOccurred(), out)
	f := newFixture(t, "#!/bin/sh\ntouch /run/capr-ran\n", "")
	f.keySecret(t, "key", h)
	rm := f.directMachine(h)
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	c := waitReason(g, rm, infrav1.HostPrerequisitesMissingReason)
	g.Expect(c.Message).To(ContainSubstring("missing flock"))
	out, _ = h.Exec("ls -A /var/lib/capr; ls /run")
	g.Expect(strings.TrimSpace(out)).NotTo(ContainSubstring("capr-ran"))
	g.Expect(out).NotTo(ContainSubstring("bootstrap.uid"))
	g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
	waitGone(g, rm)
}

// TestFailureDomainMismatchIsReported: a pooled host in another failure domain than the one Cluster API gave the
// Machine is reported on the RemoteMachine, naming both; one in the same domain is reported as matched.
func TestFailureDomainMismatchIsReported(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\ntrue\n", "")
	f.keySecret(t, "key", h)
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(f.machine), f.machine)).To(Succeed())
	f.machine.Spec.FailureDomain = "rack-b"
	g.Expect(env.Client.Update(ctx, f.machine)).To(Succeed())
	entry := f.hostEntry("in-rack-a", h, "key", "true")
	entry.Spec.FailureDomain = "rack-a"
	env.CreateEntryAndWait(g, entry)
	rm := f.remoteMachine()
	rm.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	g.Eventually(func(g Gomega) {
		c := condition(get(g, rm), infrav1.FailureDomainMatchedCondition)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(infrav1.FailureDomainMismatchReason))
		g.Expect(c.Message).To(Equal(`Machine m0 asks for failure domain "rack-b", but its host (PooledRemoteMachine in-rack-a) is in failure domain "rack-a"`))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	waitProvisioned(g, rm)
	g.Expect(get(g, rm).Status.FailureDomain).To(Equal("rack-a"), "the actual domain is reported")

	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(f.machine), f.machine)).To(Succeed())
	f.machine.Spec.FailureDomain = "rack-a"
	g.Expect(env.Client.Update(ctx, f.machine)).To(Succeed())
	g.Eventually(func(g Gomega) {
		c := condition(get(g, rm), infrav1.FailureDomainMatchedCondition)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), c.Message)
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
	waitGone(g, rm)
}

// TestFullDiskRunsNothing: a host whose disk is full (no room for CAPR's record of the run, or for the plan in the
// working directory) runs nothing, says HostDiskFull, and is bootstrapped once space is freed.
func TestFullDiskRunsNothing(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	f := newFixture(t, "#!/bin/sh\necho run >> /run/capr-runs\n", "")
	f.keySecret(t, "key", h)
	full := func(dir string) {
		out, err := h.Exec("mkdir -p " + dir + " && mount -t tmpfs -o size=16k tmpfs " + dir + " && (dd if=/dev/zero of=" + dir + "/fill bs=4k count=64 2>/dev/null; true)")
		g.Expect(err).NotTo(HaveOccurred(), out)
	}
	for _, c := range []struct{ name, dir, workingDir string }{
		{"CAPR's record", "/var/lib/capr", ""},
		{"the working directory", "/run/capr-work", "/run/capr-work"},
	} {
		full(c.dir)
		rm := f.directMachine(h)
		rm.Name = "full-" + strings.ReplaceAll(c.dir[1:], "/", "-")
		rm.Spec.WorkingDir = c.workingDir
		g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
		cond := waitReason(g, rm, infrav1.HostDiskFullReason)
		g.Expect(cond.Message).To(ContainSubstring("nothing was run"), c.name)
		out, _ := h.Exec("cat /run/capr-runs 2>/dev/null; cat /var/lib/capr/bootstrap.uid 2>/dev/null")
		g.Expect(out).To(BeEmpty(), c.name)

		_, err := h.Exec("rm -f " + c.dir + "/fill")
		g.Expect(err).NotTo(HaveOccurred())
		waitProvisioned(g, rm)
		out, _ = h.Exec("cat /run/capr-runs")
		g.Expect(out).To(Equal("run\n"), c.name)

		g.Expect(env.Client.Delete(ctx, get(g, rm))).To(Succeed())
		waitGone(g, rm)
		_, err = h.Exec("rm -rf /run/capr-runs /run/cluster-api; umount " + c.dir + "; rm -rf /var/lib/capr/*")
		g.Expect(err).NotTo(HaveOccurred())
	}
}
