package pool

import (
	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// Fill copies a pool entry's host into a RemoteMachine and records the entry in spec.pooledRemoteMachineRef. The
// entry decides how the host is reached (address, port, user, key, sudo, host keys, bastion); cleanup commands and
// working directory come from the entry unless the RemoteMachine sets its own.
func Fill(m *infrav1.RemoteMachine, entry *infrav1.PooledRemoteMachine) {
	own := m.Spec.RemoteHost
	m.Spec.RemoteHost = *entry.Spec.Machine.RemoteHost.DeepCopy()
	if len(own.CustomCleanUpCommands) > 0 {
		m.Spec.CustomCleanUpCommands = own.CustomCleanUpCommands
	}
	if own.WorkingDir != "" {
		m.Spec.WorkingDir = own.WorkingDir
	}
	m.Spec.PooledRemoteMachineRef = &infrav1.PooledRemoteMachineReference{Name: entry.Name}
}

// KeepClaimedFields carries the fields admission filled from a pool entry over from the stored RemoteMachine into
// an update. Cluster API re-applies infrastructure machines with server-side apply carrying only the template's
// fields, which would otherwise drop (or reset to their defaults) the host fields the claim wrote. How a pooled host
// is reached belongs to its entry and is always kept; host keys, cleanup commands and working directory are kept
// when the update leaves them empty (host keys may be pinned by an update, never dropped). A providerID, once set,
// is kept too.
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
	if len(update.CustomCleanUpCommands) > 0 {
		m.Spec.CustomCleanUpCommands = update.CustomCleanUpCommands
	}
	if update.WorkingDir != "" {
		m.Spec.WorkingDir = update.WorkingDir
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
