package webhooks

import (
	"context"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// +kubebuilder:rbac:groups=cluster.x-k8s.io,resources=machinesets,verbs=get

// wantedFailureDomains returns the failure domains Cluster API will ask of the Machine a new RemoteMachine is for.
// Cluster API creates the infrastructure machine before its Machine, so the claim cannot read the Machine's
// spec.failureDomain; it works it out the way Cluster API does:
//   - a MachineSet's machine gets the MachineSet template's failure domain;
//   - a KubeadmControlPlane's machine gets the least-used of the Cluster's control-plane failure domains
//     (status.failureDomains with controlPlane true), counting the control plane's Machines by their failure domain,
//     those not being deleted first, then all. KubeadmControlPlane breaks a tie at random: every tied domain is
//     returned, and the controller reports on the RemoteMachine when its host's domain is not the Machine's.
//
// Nothing is returned when there is nothing to follow.
func wantedFailureDomains(ctx context.Context, reader client.Reader, m *infrav1.RemoteMachine) ([]string, error) {
	if set := m.Labels[clusterv1.MachineSetNameLabel]; set != "" {
		ms := &clusterv1.MachineSet{}
		if err := reader.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: set}, ms); err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
				return nil, nil
			}
			return nil, err
		}
		if fd := ms.Spec.Template.Spec.FailureDomain; fd != "" {
			return []string{fd}, nil
		}
		return nil, nil
	}
	clusterName := m.Labels[clusterv1.ClusterNameLabel]
	if _, cp := m.Labels[clusterv1.MachineControlPlaneLabel]; !cp || clusterName == "" {
		return nil, nil
	}
	cluster := &clusterv1.Cluster{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: clusterName}, cluster); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			return nil, nil
		}
		return nil, err
	}
	live, all := map[string]int{}, map[string]int{}
	var eligible []string
	for _, fd := range cluster.Status.FailureDomains {
		if ptr.Deref(fd.ControlPlane, false) {
			eligible = append(eligible, fd.Name)
			live[fd.Name], all[fd.Name] = 0, 0
		}
	}
	if len(eligible) == 0 {
		return nil, nil
	}
	selector := client.MatchingLabels{clusterv1.ClusterNameLabel: clusterName}
	if name := m.Labels[clusterv1.MachineControlPlaneNameLabel]; name != "" {
		selector[clusterv1.MachineControlPlaneNameLabel] = name
	}
	machines := &clusterv1.MachineList{}
	if err := reader.List(ctx, machines, client.InNamespace(m.Namespace), selector, client.HasLabels{clusterv1.MachineControlPlaneLabel}); err != nil {
		return nil, err
	}
	for _, machine := range machines.Items {
		fd := machine.Spec.FailureDomain
		if _, ok := all[fd]; !ok {
			continue
		}
		all[fd]++
		if machine.DeletionTimestamp.IsZero() {
			live[fd]++
		}
	}
	less := func(a, b string) int {
		if live[a] != live[b] {
			return live[a] - live[b]
		}
		return all[a] - all[b]
	}
	slices.SortFunc(eligible, less)
	var fewest []string
	for _, fd := range eligible {
		if less(fd, eligible[0]) == 0 {
			fewest = append(fewest, fd)
		}
	}
	return fewest, nil
}
