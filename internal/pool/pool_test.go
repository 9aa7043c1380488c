package pool

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

func TestExhaustedMessage(t *testing.T) {
	g := NewWithT(t)
	e := &ExhaustedError{Pool: "default", Total: 3, Skipped: map[string]int{SkipClaimed: 2, SkipMaintenance: 1}}
	g.Expect(e.Error()).To(Equal(`no free PooledRemoteMachine in pool "default" (3 in pool: 2 claimed, 1 in maintenance)`))
	g.Expect(e).To(MatchError(ErrExhausted))
	empty := &ExhaustedError{Pool: "gpu", Skipped: map[string]int{}}
	g.Expect(empty.Error()).To(ContainSubstring(`(none exist: create PooledRemoteMachines with spec.pool "gpu" in this namespace)`))
}

func TestSkipReason(t *testing.T) {
	now := metav1.Now()
	for want, mutate := range map[string]func(*infrav1.PooledRemoteMachine){
		"":              func(*infrav1.PooledRemoteMachine) {},
		SkipClaimed:     func(m *infrav1.PooledRemoteMachine) { m.Spec.ClaimRef = &infrav1.PooledMachineClaim{Name: "x"} },
		SkipMaintenance: func(m *infrav1.PooledRemoteMachine) { m.Spec.Maintenance = true },
		SkipQuarantined: func(m *infrav1.PooledRemoteMachine) {
			m.Spec.Quarantine = &infrav1.PooledMachineQuarantine{Reason: "r"}
		},
		SkipUnreachable: func(m *infrav1.PooledRemoteMachine) { m.Status.Phase = infrav1.PooledRemoteMachinePhaseUnreachable },
		SkipDeleting:    func(m *infrav1.PooledRemoteMachine) { m.DeletionTimestamp = &now },
		// A host whose cleanup regenerated its SSH keys waits for a probe with them.
		SkipNewHostKeys: func(m *infrav1.PooledRemoteMachine) {
			m.Annotations = map[string]string{infrav1.HostKeysRegeneratedAnnotation: "2026-01-01T00:00:00Z"}
		},
	} {
		m := &infrav1.PooledRemoteMachine{}
		mutate(m)
		NewWithT(t).Expect(SkipReason(m)).To(Equal(want))
	}
}

func TestFillAndKeepClaimedFields(t *testing.T) {
	g := NewWithT(t)
	entry := &infrav1.PooledRemoteMachine{}
	entry.Name = "e1"
	entry.Spec.Machine.RemoteHost = infrav1.RemoteHost{
		Address: "10.0.0.1", Port: 2222, User: "capr", UseSudo: true,
		SSHKeyRef: &infrav1.SecretReference{Name: "k"}, HostKeys: []string{"ssh-ed25519 AAAA"},
		HostKeyPolicy: infrav1.HostKeyPolicyStrict, CustomCleanUpCommands: []string{"wipe"}, WorkingDir: "/var/tmp",
	}
	m := &infrav1.RemoteMachine{}
	m.Spec.Pool = "default"
	m.Spec.Port, m.Spec.User = 22, "root" // schema defaults
	Fill(m, entry)
	g.Expect(m.Spec.Address).To(Equal("10.0.0.1"))
	g.Expect(m.Spec.Port).To(Equal(int32(2222)))
	g.Expect(m.Spec.User).To(Equal("capr"))
	g.Expect(m.Spec.CustomCleanUpCommands).To(Equal([]string{"wipe"}), "the pool's owner decides the cleanup")
	g.Expect(m.Spec.WorkingDir).To(Equal("/var/tmp"))
	g.Expect(m.Spec.PooledRemoteMachineRef.Name).To(Equal("e1"))
	entry.Spec.Machine.HostKeys[0] = "changed"
	g.Expect(m.Spec.HostKeys).To(Equal([]string{"ssh-ed25519 AAAA"}), "Fill copies, it does not alias")

	// A server-side apply with only the template's fields (defaults applied by the schema).
	applied := &infrav1.RemoteMachine{}
	applied.Spec.Pool = "default"
	applied.Spec.Port, applied.Spec.User, applied.Spec.HostKeyPolicy = 22, "root", infrav1.HostKeyPolicyAcceptNew
	KeepClaimedFields(m, applied)
	g.Expect(applied.Spec).To(Equal(m.Spec))

	// Host keys may be pinned by an update; providerID is kept once set.
	m.Spec.ProviderID = "remote-machine://10.0.0.1:2222"
	pinned := m.DeepCopy()
	pinned.Spec.HostKeys = []string{"ssh-ed25519 BBBB"}
	pinned.Spec.ProviderID = ""
	KeepClaimedFields(m, pinned)
	g.Expect(pinned.Spec.HostKeys).To(Equal([]string{"ssh-ed25519 BBBB"}))
	g.Expect(pinned.Spec.ProviderID).To(Equal("remote-machine://10.0.0.1:2222"))

	// The cleanup is the entry's, whatever an update brings; a bastion key may be pinned, never dropped.
	m.Spec.Bastion = &infrav1.Bastion{Address: "10.0.0.2", SSHKeyRef: infrav1.SecretReference{Name: "k"}}
	update := m.DeepCopy()
	update.Spec.CustomCleanUpCommands, update.Spec.WorkingDir = []string{"other"}, "/srv"
	update.Spec.Bastion.HostKeys = []string{"ssh-ed25519 CCCC"}
	KeepClaimedFields(m, update)
	g.Expect(update.Spec.CustomCleanUpCommands).To(Equal([]string{"wipe"}))
	g.Expect(update.Spec.WorkingDir).To(Equal("/var/tmp"))
	g.Expect(update.Spec.Bastion.HostKeys).To(Equal([]string{"ssh-ed25519 CCCC"}))
	dropped := update.DeepCopy()
	dropped.Spec.Bastion.HostKeys = nil
	KeepClaimedFields(update, dropped)
	g.Expect(dropped.Spec.Bastion.HostKeys).To(Equal([]string{"ssh-ed25519 CCCC"}))
}

func TestEndpointAndBuckets(t *testing.T) {
	g := NewWithT(t)
	g.Expect(Endpoint("Host.Example.com", 0)).To(Equal("host.example.com:22"))
	g.Expect(Endpoint("2001:db8::1", 2222)).To(Equal("[2001:db8::1]:2222"))
	for _, same := range []string{"2001:DB8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8:0::0:1"} {
		g.Expect(Endpoint(same, 2222)).To(Equal("[2001:db8::1]:2222"), same)
	}
	g.Expect(Endpoint("::ffff:10.0.0.1", 22)).To(Equal("10.0.0.1:22"))
	g.Expect(Endpoint("host.example.com.", 22)).To(Equal("host.example.com:22"))
	seen := map[uint64]bool{}
	for i := range 200 {
		b := bucketOf(string(rune('a'+i%26)) + string(rune('a'+i/26)))
		g.Expect(b).To(BeNumerically("<", buckets))
		seen[b] = true
	}
	g.Expect(seen).To(HaveLen(buckets), "names spread over every bucket")
}

// TestReservationEndsWhenTheEntryChanges: an entry this process tried to claim is skipped while it reads the same
// version of it, and offered again as soon as it changed: released by another replica, say, whose Release cannot
// clear this process's reservation.
func TestReservationEndsWhenTheEntryChanges(t *testing.T) {
	g := NewWithT(t)
	now := time.Unix(1000, 0)
	c := &Claimer{Now: func() time.Time { return now }}
	m := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "e", ResourceVersion: "10"}}
	g.Expect(c.reserve(m)).To(BeTrue())
	g.Expect(c.reserve(m)).To(BeFalse(), "a second claim in this process waits for the first")
	g.Expect(c.isReserved(m, now)).To(BeTrue())

	released := m.DeepCopy()
	released.ResourceVersion = "12"
	g.Expect(c.isReserved(released, now)).To(BeFalse(), "a newer version of the entry is not reserved")
	g.Expect(c.reserve(released)).To(BeTrue())

	g.Expect(c.isReserved(released, now.Add(reservationTTL))).To(BeFalse(), "a reservation lapses")
}

// TestAllowedClusters: an entry restricted to named clusters is offered only to RemoteMachines of those clusters,
// never to one without a cluster label, and the exhausted message counts it as reserved for other clusters.
func TestAllowedClusters(t *testing.T) {
	g := NewWithT(t)
	open := &infrav1.PooledRemoteMachine{}
	only := &infrav1.PooledRemoteMachine{Spec: infrav1.PooledRemoteMachineSpec{AllowedClusters: []string{"c2", "c3"}}}
	g.Expect(ClusterAllowed(open, "c1")).To(BeTrue())
	g.Expect(ClusterAllowed(open, "")).To(BeTrue())
	g.Expect(ClusterAllowed(only, "c2")).To(BeTrue())
	g.Expect(ClusterAllowed(only, "c1")).To(BeFalse())
	g.Expect(ClusterAllowed(only, "")).To(BeFalse(), "a RemoteMachine without a cluster label takes no restricted entry")

	err := exhausted(Request{Pool: "default", ClusterName: "c1"}, []infrav1.PooledRemoteMachine{*only, *only})
	g.Expect(err).To(MatchError(`no free PooledRemoteMachine in pool "default" (2 in pool: 2 reserved for other clusters)`))
}
