package controllers

import (
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cluster-api/util/conditions"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// TestReadySummary: Ready was copied by hand from BootstrapSucceeded and overwritten by hand while deleting, so a
// step that forgot one of the places left Ready stale. It is now a summary of the Deleting and BootstrapSucceeded
// conditions, computed the same way on every exit, and keeps the reasons the API documents.
func TestReadySummary(t *testing.T) {
	now := metav1.Now()
	bootstrap := func(status metav1.ConditionStatus, reason, msg string) func(*infrav1.RemoteMachine) {
		return func(rm *infrav1.RemoteMachine) {
			conditions.Set(rm, metav1.Condition{Type: infrav1.BootstrapSucceededCondition, Status: status, Reason: reason, Message: msg})
		}
	}
	deleting := func(rm *infrav1.RemoteMachine) { rm.DeletionTimestamp = &now; setDeleting(rm, "Cleaning the host") }
	cleanupFailed := func(rm *infrav1.RemoteMachine) {
		conditions.Set(rm, metav1.Condition{Type: infrav1.DeletingCondition, Status: metav1.ConditionTrue, Reason: infrav1.CleanupFailedReason, Message: "exit 1"})
	}
	for _, tc := range []struct {
		name            string
		steps           []func(*infrav1.RemoteMachine)
		status          metav1.ConditionStatus
		reason, message string
	}{
		{"nothing reported", nil, metav1.ConditionUnknown, infrav1.WaitingForMachineReason, ""},
		{"bootstrapping", []func(*infrav1.RemoteMachine){bootstrap(metav1.ConditionFalse, infrav1.BootstrappingReason, "Running")}, metav1.ConditionFalse, infrav1.BootstrappingReason, "Running"},
		{"failed", []func(*infrav1.RemoteMachine){bootstrap(metav1.ConditionFalse, infrav1.HostUnreachableReason, "no route")}, metav1.ConditionFalse, infrav1.HostUnreachableReason, "no route"},
		{"succeeded", []func(*infrav1.RemoteMachine){bootstrap(metav1.ConditionTrue, infrav1.BootstrapSucceededReason, "Bootstrap succeeded on h:22")}, metav1.ConditionTrue, infrav1.BootstrapSucceededReason, "Bootstrap succeeded on h:22"},
		{"deleting", []func(*infrav1.RemoteMachine){bootstrap(metav1.ConditionTrue, infrav1.BootstrapSucceededReason, "ok"), deleting}, metav1.ConditionFalse, infrav1.DeletingReason, "Cleaning the host"},
		{"deleting before any bootstrap", []func(*infrav1.RemoteMachine){deleting}, metav1.ConditionFalse, infrav1.DeletingReason, "Cleaning the host"},
		{"cleanup failed, then retried", []func(*infrav1.RemoteMachine){bootstrap(metav1.ConditionTrue, infrav1.BootstrapSucceededReason, "ok"), deleting, cleanupFailed, deleting}, metav1.ConditionFalse, infrav1.CleanupFailedReason, "exit 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			rm := &infrav1.RemoteMachine{}
			for _, step := range tc.steps {
				step(rm)
				g.Expect(setRemoteMachineReady(rm)).To(Succeed())
			}
			g.Expect(setRemoteMachineReady(rm)).To(Succeed())
			ready := conditions.Get(rm, infrav1.ReadyCondition)
			g.Expect(ready).NotTo(BeNil())
			g.Expect([]string{string(ready.Status), ready.Reason, ready.Message}).To(Equal([]string{string(tc.status), tc.reason, tc.message}))
		})
	}

	g := NewWithT(t)
	rc := &infrav1.RemoteCluster{}
	g.Expect(setRemoteClusterReady(rc)).To(Succeed())
	g.Expect(conditions.Get(rc, infrav1.ReadyCondition)).To(HaveField("Reason", infrav1.ReadyReason))
	g.Expect(conditions.IsTrue(rc, infrav1.ReadyCondition)).To(BeTrue())
	rc.DeletionTimestamp = &now
	setDeleting(rc, "")
	g.Expect(setRemoteClusterReady(rc)).To(Succeed())
	g.Expect(conditions.Get(rc, infrav1.ReadyCondition)).To(HaveField("Reason", infrav1.DeletingReason))
	g.Expect(conditions.IsFalse(rc, infrav1.ReadyCondition)).To(BeTrue())
}
