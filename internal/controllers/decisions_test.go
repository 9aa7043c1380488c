package controllers

import (
	"errors"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// The reconcilers' decisions as tables, without an apiserver or a host: a pool entry's phase, a pool's summary on
// its templates, and how a scanned key is pinned under each hostKeyPolicy.

const (
	keyA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
	keyB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPoVX0JN0yQ2KpOIo2F6iZzkHD4oSkECsGt4kCYiD8Rt"
)

func TestPhaseOf(t *testing.T) {
	now := metav1.Now()
	claimed := &infrav1.PooledMachineClaim{Name: "rm"}
	holder := &infrav1.RemoteMachine{}
	deleting := &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}}
	unreachable := []metav1.Condition{{Type: infrav1.ReachableCondition, Status: metav1.ConditionFalse, Reason: infrav1.HostUnreachableReason}}
	for _, tc := range []struct {
		name   string
		entry  infrav1.PooledRemoteMachine
		holder *infrav1.RemoteMachine
		want   infrav1.PooledRemoteMachinePhase
	}{
		{"free", infrav1.PooledRemoteMachine{}, nil, infrav1.PooledRemoteMachinePhaseAvailable},
		{"claimed", infrav1.PooledRemoteMachine{Spec: infrav1.PooledRemoteMachineSpec{ClaimRef: claimed}}, holder, infrav1.PooledRemoteMachinePhaseClaimed},
		{"claimed, holder not stored yet", infrav1.PooledRemoteMachine{Spec: infrav1.PooledRemoteMachineSpec{ClaimRef: claimed}}, nil, infrav1.PooledRemoteMachinePhaseClaimed},
		{"holder deleting", infrav1.PooledRemoteMachine{Spec: infrav1.PooledRemoteMachineSpec{ClaimRef: claimed}}, deleting, infrav1.PooledRemoteMachinePhaseCleaning},
		{"quarantine wins over a claim", infrav1.PooledRemoteMachine{Spec: infrav1.PooledRemoteMachineSpec{ClaimRef: claimed, Quarantine: &infrav1.PooledMachineQuarantine{Reason: "r"}}}, holder, infrav1.PooledRemoteMachinePhaseQuarantined},
		{"maintenance", infrav1.PooledRemoteMachine{Spec: infrav1.PooledRemoteMachineSpec{Maintenance: true}}, nil, infrav1.PooledRemoteMachinePhaseMaintenance},
		{"maintenance wins over a failed probe", infrav1.PooledRemoteMachine{Spec: infrav1.PooledRemoteMachineSpec{Maintenance: true}, Status: infrav1.PooledRemoteMachineStatus{Conditions: unreachable}}, nil, infrav1.PooledRemoteMachinePhaseMaintenance},
		{"probe failed", infrav1.PooledRemoteMachine{Status: infrav1.PooledRemoteMachineStatus{Conditions: unreachable}}, nil, infrav1.PooledRemoteMachinePhaseUnreachable},
		{"new host keys not probed yet", infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{infrav1.HostKeysRegeneratedAnnotation: "t"}}}, nil, infrav1.PooledRemoteMachinePhaseCleaning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			NewWithT(t).Expect(phaseOf(&tc.entry, tc.holder)).To(Equal(tc.want))
		})
	}
}

func measured(name, pool, cpu, memory string, arch infrav1.Architecture, mutate ...func(*infrav1.PooledRemoteMachine)) infrav1.PooledRemoteMachine {
	e := infrav1.PooledRemoteMachine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"tier": "a"}},
		Spec:       infrav1.PooledRemoteMachineSpec{Pool: pool},
	}
	if cpu != "" {
		e.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}
		if memory != "" {
			e.Status.Capacity[corev1.ResourceMemory] = resource.MustParse(memory)
		}
		e.Status.NodeInfo = infrav1.NodeInfo{Architecture: arch, OperatingSystem: "linux"}
	}
	for _, f := range mutate {
		f(&e)
	}
	return e
}

func TestSummarisePool(t *testing.T) {
	g := NewWithT(t)
	now := metav1.Now()
	items := []infrav1.PooledRemoteMachine{
		measured("big", "default", "16", "64Gi", infrav1.ArchitectureAmd64),
		measured("small", "default", "4", "16Gi", infrav1.ArchitectureAmd64, func(e *infrav1.PooledRemoteMachine) {
			e.Spec.ClaimRef = &infrav1.PooledMachineClaim{Name: "rm"}
		}),
		measured("unmeasured", "default", "", "", ""),
		measured("other-pool", "gpu", "1", "1Gi", infrav1.ArchitectureArm64),
		measured("deleting", "default", "1", "1Gi", infrav1.ArchitectureAmd64, func(e *infrav1.PooledRemoteMachine) { e.DeletionTimestamp = &now }),
	}
	summary, capacity, info := summarisePool(items, "default", nil)
	g.Expect(*summary).To(Equal(infrav1.PoolSummary{Total: 3, Free: 2, Measured: 2}))
	g.Expect(capacity.Cpu().String()).To(Equal("4"), "what every measured host has at least")
	g.Expect(capacity.Memory().String()).To(Equal("16Gi"))
	g.Expect(info).To(Equal(infrav1.NodeInfo{Architecture: infrav1.ArchitectureAmd64, OperatingSystem: "linux"}))

	// Hosts that disagree on the architecture report none; memory known for only some hosts is left out.
	items = []infrav1.PooledRemoteMachine{
		measured("x86", "", "8", "32Gi", infrav1.ArchitectureAmd64),
		measured("arm", "", "8", "", infrav1.ArchitectureArm64),
	}
	summary, capacity, info = summarisePool(items, "", labels.SelectorFromSet(labels.Set{"tier": "a"}))
	g.Expect(summary.Measured).To(Equal(int32(2)))
	g.Expect(capacity).To(HaveLen(1))
	g.Expect(capacity.Cpu().String()).To(Equal("8"))
	g.Expect(info.Architecture).To(BeEmpty())
	g.Expect(info.OperatingSystem).To(Equal("linux"))

	// No entry matches: nothing is claimed to be known.
	summary, capacity, _ = summarisePool(items, "", labels.SelectorFromSet(labels.Set{"tier": "b"}))
	g.Expect(*summary).To(Equal(infrav1.PoolSummary{}))
	g.Expect(capacity).To(BeNil())
}

func TestPinFollowsTheHostKeyPolicy(t *testing.T) {
	bastion := func(policy infrav1.HostKeyPolicy, keys ...string) *infrav1.Bastion {
		return &infrav1.Bastion{Address: "b", HostKeyPolicy: policy, HostKeys: keys}
	}
	for _, tc := range []struct {
		name          string
		host          infrav1.RemoteHost
		scanned       host.ScanResult
		wantKeys      []string
		wantBastion   []string
		wantErr       error
		wantNeedsPin  bool
		wantErrDetail string
	}{
		{name: "AcceptNew pins the first key", host: infrav1.RemoteHost{}, scanned: host.ScanResult{Key: keyA}, wantKeys: []string{keyA}},
		{name: "a pinned key is never replaced by a scan", host: infrav1.RemoteHost{HostKeys: []string{keyA}}, scanned: host.ScanResult{Key: keyB}, wantKeys: []string{keyA}},
		{name: "Strict never pins", host: infrav1.RemoteHost{HostKeyPolicy: infrav1.HostKeyPolicyStrict}, scanned: host.ScanResult{Key: keyA},
			wantErr: sshrunner.ErrHostKeyUnknown, wantNeedsPin: true, wantErrDetail: "add the host's key to hostKeys"},
		{name: "the bastion's key is pinned on the bastion", host: infrav1.RemoteHost{HostKeys: []string{keyA}, Bastion: bastion("")}, scanned: host.ScanResult{Key: keyB, Bastion: true},
			wantKeys: []string{keyA}, wantBastion: []string{keyB}},
		{name: "a Strict bastion never pins", host: infrav1.RemoteHost{Bastion: bastion(infrav1.HostKeyPolicyStrict)}, scanned: host.ScanResult{Key: keyB, Bastion: true},
			wantErr: sshrunner.ErrHostKeyUnknown, wantNeedsPin: true, wantErrDetail: "bastion.hostKeys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			h := tc.host.DeepCopy()
			err := pin(h, tc.scanned)
			if tc.wantErr != nil {
				g.Expect(errors.Is(err, tc.wantErr)).To(BeTrue(), "error: %v", err)
				g.Expect(err.Error()).To(ContainSubstring(tc.wantErrDetail))
				g.Expect(err.Error()).To(ContainSubstring("SHA256:"), "the refusal names the key's fingerprint")
				g.Expect(needsPin(h)).To(Equal(tc.wantNeedsPin))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(h.HostKeys).To(Equal(tc.wantKeys))
			if h.Bastion != nil {
				g.Expect(h.Bastion.HostKeys).To(Equal(tc.wantBastion))
			}
			g.Expect(needsPin(h)).To(BeFalse())
		})
	}
}
