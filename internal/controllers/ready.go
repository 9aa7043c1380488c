package controllers

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cluster-api/util/conditions"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// firstIssue is the merge strategy of CAPR's Ready summaries: the first condition, in the order of
// ForConditionTypes, that is not fine decides Ready with its own reason and message (a negative-polarity one that
// is True as False); a condition not reported yet makes Ready Unknown with reason notReported. When every condition
// is fine, Ready is True with reason ready, or, when ready is empty, mirrors the last positive condition.
type firstIssue struct {
	negative    []string
	notReported string
	ready       string
}

// Merge implements conditions.MergeStrategy.
func (s firstIssue) Merge(_ conditions.MergeOperation, in []conditions.ConditionWithOwnerInfo, types []string) (metav1.ConditionStatus, string, string, error) {
	in = slices.Clone(in)
	slices.SortStableFunc(in, func(a, b conditions.ConditionWithOwnerInfo) int {
		return slices.Index(types, a.Type) - slices.Index(types, b.Type)
	})
	var last *metav1.Condition
	for i := range in {
		c := &in[i].Condition
		switch {
		case c.Reason == conditions.NotYetReportedReason:
			return metav1.ConditionUnknown, s.notReported, "", nil
		case slices.Contains(s.negative, c.Type):
			if c.Status != metav1.ConditionFalse {
				return metav1.ConditionFalse, c.Reason, c.Message, nil
			}
		case c.Status != metav1.ConditionTrue:
			return c.Status, c.Reason, c.Message, nil
		default:
			last = c
		}
	}
	if s.ready != "" || last == nil {
		return metav1.ConditionTrue, s.ready, "", nil
	}
	return metav1.ConditionTrue, last.Reason, last.Message, nil
}

// setRemoteMachineReady summarises rm's conditions into Ready: False while it is deleted (reason Deleting, or
// CleanupFailed once a cleanup failed), otherwise BootstrapSucceeded as it is, and Unknown (WaitingForMachine)
// before that is reported.
func setRemoteMachineReady(rm *infrav1.RemoteMachine) error {
	setNotDeleting(rm, rm.DeletionTimestamp)
	return conditions.SetSummaryCondition(rm, rm, infrav1.ReadyCondition,
		conditions.ForConditionTypes{infrav1.DeletingCondition, infrav1.BootstrapSucceededCondition},
		conditions.NegativePolarityConditionTypes{infrav1.DeletingCondition},
		conditions.CustomMergeStrategy{MergeStrategy: firstIssue{
			negative: []string{infrav1.DeletingCondition}, notReported: infrav1.WaitingForMachineReason,
		}})
}

// setRemoteClusterReady summarises rc's conditions into Ready: False (Deleting) while it is deleted, else True.
func setRemoteClusterReady(rc *infrav1.RemoteCluster) error {
	setNotDeleting(rc, rc.DeletionTimestamp)
	return conditions.SetSummaryCondition(rc, rc, infrav1.ReadyCondition,
		conditions.ForConditionTypes{infrav1.DeletingCondition},
		conditions.NegativePolarityConditionTypes{infrav1.DeletingCondition},
		conditions.CustomMergeStrategy{MergeStrategy: firstIssue{
			negative: []string{infrav1.DeletingCondition}, notReported: infrav1.DeletingReason, ready: infrav1.ReadyReason,
		}})
}

// setNotDeleting records that obj is not being deleted; the delete path owns the Deleting condition otherwise.
func setNotDeleting(obj conditions.Setter, deletion *metav1.Time) {
	if deletion.IsZero() {
		conditions.Set(obj, metav1.Condition{Type: infrav1.DeletingCondition, Status: metav1.ConditionFalse, Reason: infrav1.NotDeletingReason})
	}
}

// setDeleting records that obj is being deleted: reason Deleting with message, unless a failed cleanup (reason
// CleanupFailed) is already recorded, which stays until the cleanup succeeds.
func setDeleting(obj conditions.Setter, message string) {
	if c := conditions.Get(obj, infrav1.DeletingCondition); c != nil && c.Status == metav1.ConditionTrue && c.Reason == infrav1.CleanupFailedReason {
		return
	}
	conditions.Set(obj, metav1.Condition{Type: infrav1.DeletingCondition, Status: metav1.ConditionTrue, Reason: infrav1.DeletingReason, Message: message})
}
