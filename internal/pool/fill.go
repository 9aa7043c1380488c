package pool

import (
	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// Fill copies a pool entry's host into a RemoteMachine and records the entry in spec.pooledRemoteMachineRef. The
// entry decides everything about the host: how it is reached (address, port, user, key, sudo, host keys, bastion)
// and how it is cleaned (cleanup commands, working directory). Admission refuses a pooled RemoteMachine that sets
// its own cleanup commands or working directory (OwnHostFields).
//
// The entry's hardware labels (HardwareLabels) are copied too, except a key the RemoteMachine already sets (its
// creator's, say a MachineSet template's, which then wins, as it does on the Machine); the PooledRemoteMachine
// controller keeps them in step with the entry afterwards and takes them to the Machine.
func Fill(m *infrav1.RemoteMachine, entry *infrav1.PooledRemoteMachine) {
	m.Spec.RemoteHost = *entry.Spec.Machine.RemoteHost.DeepCopy()
	m.Spec.PooledRemoteMachineRef = &infrav1.PooledRemoteMachineReference{Name: entry.Name}
	for k, v := range HardwareLabels(entry) {
		if _, ok := m.Labels[k]; ok {
			continue
		}
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		m.Labels[k] = v
	}
}

// OwnHostFields returns the paths of the fields a pooled RemoteMachine sets that belong to its pool entry: how the
// host is cleaned is the pool owner's decision.
func OwnHostFields(m *infrav1.RemoteHost) []string {
	var out []string
	if len(m.CustomCleanUpCommands) > 0 {
		out = append(out, "customCleanUpCommands")
	}
	if m.WorkingDir != "" {
		out = append(out, "workingDir")
	}
	return out
}

// KeepClaimedFields carries the fields admission filled from a pool entry over from the stored RemoteMachine into
// an update. Cluster API re-applies infrastructure machines with server-side apply carrying only the template's
// fields, which would otherwise drop (or reset to their defaults) the host fields the claim wrote. Everything about
// a pooled host belongs to its entry and is kept, except host keys (the host's and the bastion's), which an update
// may pin where none are, or replace, but never drop. A providerID, once set, is kept too.
func KeepClaimedFields(old, m *infrav1.RemoteMachine) {
	if m.Spec.ProviderID == "" {
		m.Spec.ProviderID = old.Spec.ProviderID
	}
	if old.Spec.PooledRemoteMachineRef == nil {
		return
	}
	update := m.Spec.RemoteHost
	m.Spec.RemoteHost = *old.Spec.RemoteHost.DeepCopy()
	if len(update.HostKeys) > 0 {
		m.Spec.HostKeys = update.HostKeys
	}
	if b := m.Spec.Bastion; b != nil && update.Bastion != nil && len(update.Bastion.HostKeys) > 0 {
		b.HostKeys = update.Bastion.HostKeys
	}
	if m.Spec.PooledRemoteMachineRef == nil {
		m.Spec.PooledRemoteMachineRef = old.Spec.PooledRemoteMachineRef.DeepCopy()
	}
	if m.Spec.Pool == "" {
		m.Spec.Pool = old.Spec.Pool
	}
	if m.Spec.Selector == nil {
		m.Spec.Selector = old.Spec.Selector.DeepCopy()
	}
}
