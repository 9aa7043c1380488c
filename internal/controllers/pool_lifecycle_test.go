//go:build integration

package controllers_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// refuseLabelled installs a validating admission policy, evaluated after CAPR's claim webhook, that refuses
// RemoteMachines labelled refuse=true.
func refuseLabelled(t *testing.T) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "refuse-labelled-remotemachines"},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{infrav1.GroupVersion.Group}, APIVersions: []string{"*"}, Resources: []string{"remotemachines"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{
				Expression: "!has(object.metadata.labels) || !('refuse' in object.metadata.labels)",
				Message:    "refused by the test's policy",
			}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "refuse-labelled-remotemachines"},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	g.Expect(env.Client.Create(ctx, policy)).To(Succeed())
	g.Expect(env.Client.Create(ctx, binding)).To(Succeed())
	t.Cleanup(func() {
		_ = env.Client.Delete(ctx, binding)
		_ = env.Client.Delete(ctx, policy)
	})
	// The apiserver enforces a new policy after a moment: wait with dry-run creates of a direct machine.
	probe := &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "policy-probe", Labels: map[string]string{"refuse": "true"}}}
	probe.Spec.Address, probe.Spec.SSHKeyRef = "192.0.2.1", &infrav1.SecretReference{Name: "k"}
	g.Eventually(func() error {
		return env.Client.Create(ctx, probe.DeepCopy(), client.DryRunAll)
	}, 30*time.Second, 200*time.Millisecond).Should(MatchError(ContainSubstring("refused by the test's policy")))
}

// TestOrphanClaimIsReleased: the claim webhook claims an entry, then a later validating admission refuses the
// create; the PooledRemoteMachine controller releases the orphan claim after the grace period.
func TestOrphanClaimIsReleased(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	refuseLabelled(t)
	env.CreatePool(t, ns, "default", 1, nil)
	entry := &infrav1.PooledRemoteMachine{}
	key := client.ObjectKey{Namespace: ns, Name: "default-000"}

	m := testenv.NewPooledMachine(ns, "refused", "default")
	m.Labels = map[string]string{"refuse": "true"}
	g.Expect(env.Client.Create(ctx, m)).To(MatchError(ContainSubstring("refused by the test's policy")))
	g.Expect(env.Client.Get(ctx, key, entry)).To(Succeed())
	g.Expect(entry.Spec.ClaimRef).NotTo(BeNil(), "the claim webhook ran before the refusal")
	g.Expect(entry.Spec.ClaimRef.Name).To(Equal("refused"))

	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, key, entry)).To(Succeed())
		g.Expect(entry.Spec.ClaimRef).To(BeNil())
		g.Expect(entry.Status.Phase).To(Equal(infrav1.PooledRemoteMachinePhaseAvailable))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	// The released entry serves the next RemoteMachine; its claim is bound to the RemoteMachine's UID.
	next := testenv.NewPooledMachine(ns, "next", "default")
	g.Eventually(func() error { return env.Client.Create(ctx, next) }, 10*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, key, entry)).To(Succeed())
		g.Expect(entry.Spec.ClaimRef).NotTo(BeNil())
		g.Expect(entry.Spec.ClaimRef.UID).To(Equal(next.UID))
		g.Expect(entry.Status.Phase).To(Equal(infrav1.PooledRemoteMachinePhaseClaimed))
		g.Expect(entry.Status.Reserved).To(BeTrue())
		g.Expect(entry.Status.MachineRef).To(Equal(&infrav1.RemoteMachineReference{Name: "next", Namespace: ns}))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}

// TestPoolPhasesInKubectl shows the phases in `kubectl get pooledremotemachines`.
func TestPoolPhasesInKubectl(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 3, func(i int, p *infrav1.PooledRemoteMachine) {
		switch i {
		case 1:
			p.Spec.Maintenance = true
		case 2:
			p.Spec.Quarantine = &infrav1.PooledMachineQuarantine{Reason: infrav1.CleanupFailedReason}
		}
	})
	g.Expect(env.Client.Create(ctx, testenv.NewPooledMachine(ns, "holder", "default"))).To(Succeed())
	g.Eventually(func(g Gomega) {
		out, errOut, err := env.Kubectl(ctx, "", "get", "pooledremotemachines", "-n", ns, "--no-headers", "-o", "custom-columns=NAME:.metadata.name,PHASE:.status.phase")
		g.Expect(err).NotTo(HaveOccurred(), errOut)
		g.Expect(out).To(MatchRegexp(`default-000\s+Claimed`))
		g.Expect(out).To(MatchRegexp(`default-001\s+Maintenance`))
		g.Expect(out).To(MatchRegexp(`default-002\s+Quarantined`))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	out, _, err := env.Kubectl(ctx, "", "get", "prm", "-n", ns)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(MatchRegexp(`NAME\s+POOL\s+ADDRESS\s+PHASE\s+MACHINE\s+AGE`))
	g.Expect(out).To(MatchRegexp(`default-000\s+default\s+10\.0\.0\.1\s+Claimed\s+holder`))

	// A quarantined entry returns to service when a person removes spec.quarantine.
	_, errOut, err := env.Kubectl(ctx, "", "patch", "prm", "default-002", "-n", ns, "--type=json", "-p", `[{"op":"remove","path":"/spec/quarantine"}]`)
	g.Expect(err).NotTo(HaveOccurred(), errOut)
	g.Eventually(func(g Gomega) {
		entry := &infrav1.PooledRemoteMachine{}
		g.Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default-002"}, entry)).To(Succeed())
		g.Expect(entry.Status.Phase).To(Equal(infrav1.PooledRemoteMachinePhaseAvailable))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}

// TestRemoteClusterIsProvisioned checks the RemoteCluster's status in both contract shapes' fields.
func TestRemoteClusterIsProvisioned(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	rc := &infrav1.RemoteCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rc"}}
	rc.Spec.FailureDomains = []clusterv1.FailureDomain{{Name: "rack-a", ControlPlane: ptr.To(true)}, {Name: "rack-b"}}
	g.Expect(env.Client.Create(ctx, rc)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(rc), rc)).To(Succeed())
		g.Expect(rc.Status.Initialization.Provisioned).To(Equal(ptr.To(true)))
		g.Expect(rc.Status.Ready).To(BeTrue())
		g.Expect(rc.Status.FailureDomains).To(Equal(rc.Spec.FailureDomains))
		g.Expect(rc.Status.Deprecated).NotTo(BeNil())
		g.Expect(rc.Status.Deprecated.V1Beta1).NotTo(BeNil())
		g.Expect(rc.Status.Deprecated.V1Beta1.FailureDomains).To(Equal(map[string]infrav1.V1Beta1FailureDomain{
			"rack-a": {ControlPlane: true}, "rack-b": {},
		}))
		g.Expect(conditions.IsTrue(rc, infrav1.ReadyCondition)).To(BeTrue())
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	// Removing the failure domains removes them from both shapes.
	g.Expect(env.Client.Patch(ctx, rc, client.RawPatch(types.JSONPatchType, []byte(`[{"op":"remove","path":"/spec/failureDomains"}]`)))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(rc), rc)).To(Succeed())
		g.Expect(rc.Status.FailureDomains).To(BeEmpty())
		g.Expect(rc.Status.Deprecated).To(BeNil())
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}

// TestPoolProbe checks free entries over SSH: a reachable host's key is pinned, a stopped sshd makes the entry
// Unreachable and skipped by the next claim, and a changed host key under Strict is reported, not quarantined.
func TestPoolProbe(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	a, b := sshdtest.Start(t), sshdtest.Start(t)
	for _, h := range []struct {
		name string
		host *sshdtest.Host
	}{{"key-a", a}, {"key-b", b}} {
		g.Expect(env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: h.name}, Data: map[string][]byte{"value": h.host.ClientKeyPEM}})).To(Succeed())
	}
	entry := func(name string, h *sshdtest.Host, key string) *infrav1.PooledRemoteMachine {
		e := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"capr-test-probe": "true"}}}
		e.Spec.Pool = "probed"
		e.Spec.Machine.Address, e.Spec.Machine.Port = h.Address, int32(h.Port)
		e.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: key}
		return e
	}
	ea := entry("a", a, "key-a")
	eb := entry("b", b, "key-b")
	eb.Spec.Machine.HostKeyPolicy, eb.Spec.Machine.HostKeys = infrav1.HostKeyPolicyStrict, []string{b.HostKey}
	g.Expect(env.Client.Create(ctx, ea)).To(Succeed())
	g.Expect(env.Client.Create(ctx, eb)).To(Succeed())

	reachable := func(e *infrav1.PooledRemoteMachine) func(g Gomega) *metav1.Condition {
		return func(g Gomega) *metav1.Condition {
			got := &infrav1.PooledRemoteMachine{}
			g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(e), got)).To(Succeed())
			c := conditions.Get(got, infrav1.ReachableCondition)
			g.Expect(c).NotTo(BeNil())
			return c
		}
	}
	g.Eventually(reachable(ea), 30*time.Second, 200*time.Millisecond).Should(HaveField("Status", metav1.ConditionTrue))
	g.Eventually(reachable(eb), 30*time.Second, 200*time.Millisecond).Should(HaveField("Status", metav1.ConditionTrue))
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(ea), ea)).To(Succeed())
	g.Expect(ea.Spec.Machine.HostKeys).To(Equal([]string{a.HostKey}), "AcceptNew pinned the key the probe saw")

	// A stopped sshd: Unreachable, and skipped by the next claim.
	a.Stop()
	g.Eventually(reachable(ea), 30*time.Second, 200*time.Millisecond).Should(HaveField("Reason", infrav1.HostUnreachableReason))
	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(ea), ea)).To(Succeed())
		g.Expect(ea.Status.Phase).To(Equal(infrav1.PooledRemoteMachinePhaseUnreachable))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	// A new host key under Strict: reported, not quarantined.
	b.RotateHostKey()
	b.Restart()
	g.Eventually(reachable(eb), 30*time.Second, 200*time.Millisecond).Should(HaveField("Reason", "HostKeyMismatch"))
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(eb), eb)).To(Succeed())
	g.Expect(eb.Spec.Quarantine).To(BeNil())

	// Neither is offered now.
	err := env.Client.Create(ctx, testenv.NewPooledMachine(ns, "wants-one", "probed"))
	g.Expect(err).To(MatchError(ContainSubstring(`(2 in pool: 2 unreachable)`)))
}

// TestTemplateReportsPoolCapacity: a RemoteMachineTemplate naming a pool reports what Cluster API's autoscaler reads
// to scale from zero (status.capacity, status.nodeInfo), from what the pool probe measured on the pool's real sshd
// hosts, and how many entries are free.
func TestTemplateReportsPoolCapacity(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	tmpl := &infrav1.RemoteMachineTemplate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sized"}}
	tmpl.Spec.Template.Spec.Pool = "sized"
	g.Expect(env.Client.Create(ctx, tmpl)).To(Succeed())
	status := func(g Gomega) infrav1.RemoteMachineTemplateStatus {
		got := &infrav1.RemoteMachineTemplate{}
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(tmpl), got)).To(Succeed())
		return got.Status
	}

	// An entry that is never probed: counted, not measured.
	unprobed := testenv.NewEntry(ns, "sized", 0)
	g.Expect(env.Client.Create(ctx, unprobed)).To(Succeed())
	g.Eventually(func(g Gomega) {
		s := status(g)
		g.Expect(s.Pool).To(Equal(&infrav1.PoolSummary{Total: 1, Free: 1}))
		g.Expect(s.Capacity).To(BeNil())
		c := conditions.Get(&infrav1.RemoteMachineTemplate{Status: s}, infrav1.CapacityKnownCondition)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(infrav1.NotMeasuredReason))
		g.Expect(c.Message).To(ContainSubstring("--pool-probe-interval"))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	// Two probed hosts: capacity is what the host measures (nproc, MemTotal; both hosts are this machine).
	for i := range 2 {
		h := sshdtest.Start(t)
		key := fmt.Sprintf("key-%d", i)
		g.Expect(env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: key}, Data: map[string][]byte{"value": h.ClientKeyPEM}})).To(Succeed())
		e := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("probed-%d", i), Labels: map[string]string{"capr-test-probe": "true"}}}
		e.Spec.Pool = "sized"
		e.Spec.Machine.Address, e.Spec.Machine.Port = h.Address, int32(h.Port)
		e.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: key}
		g.Expect(env.Client.Create(ctx, e)).To(Succeed())
	}
	nproc, err := exec.Command("nproc").Output()
	g.Expect(err).NotTo(HaveOccurred())
	meminfo, err := os.ReadFile("/proc/meminfo")
	g.Expect(err).NotTo(HaveOccurred())
	memKiB := regexp.MustCompile(`MemTotal:\s+(\d+) kB`).FindSubmatch(meminfo)[1]
	arch := map[string]infrav1.Architecture{"amd64": infrav1.ArchitectureAmd64, "arm64": infrav1.ArchitectureArm64}[runtime.GOARCH]
	g.Eventually(func(g Gomega) {
		s := status(g)
		g.Expect(s.Pool).To(Equal(&infrav1.PoolSummary{Total: 3, Free: 3, Measured: 2}))
		g.Expect(s.Capacity.Cpu().String()).To(Equal(strings.TrimSpace(string(nproc))))
		g.Expect(s.Capacity.Memory().String()).To(Equal(string(memKiB) + "Ki"))
		g.Expect(s.NodeInfo).To(Equal(infrav1.NodeInfo{Architecture: arch, OperatingSystem: "linux"}))
		c := conditions.Get(&infrav1.RemoteMachineTemplate{Status: s}, infrav1.CapacityKnownCondition)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), c.Message)
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())

	// A claim leaves one fewer free: the most a MachineDeployment on the template can grow by now.
	g.Expect(env.Client.Create(ctx, testenv.NewPooledMachine(ns, "takes-one", "sized"))).To(Succeed())
	g.Eventually(func(g Gomega) int32 { return status(g).Pool.Free }, 30*time.Second, 200*time.Millisecond).Should(Equal(int32(2)))
}
