package v1beta1

// HardwareLabelDomain is the label domain a pool entry's labels travel in: a PooledRemoteMachine's labels whose key
// is in this domain (node.cluster.x-k8s.io/rack, or a subdomain such as gpu.node.cluster.x-k8s.io/model) are
// copied to the RemoteMachine that claims it and to that RemoteMachine's Machine, from where Cluster API's own label
// sync carries them to the Node. It is the domain Cluster API syncs from Machines to Nodes by default (with
// node-role.kubernetes.io and node-restriction.kubernetes.io, which are about a Node's role and what its kubelet
// may set, not its hardware); labels in other domains stay on the entry.
const HardwareLabelDomain = "node.cluster.x-k8s.io"

// HardwareLabelsFieldManager is the server-side apply field manager CAPR writes hardware labels with, on
// RemoteMachines and Machines: it owns only those labels, so removing one from the entry removes it downstream,
// and Cluster API's MachineSet, which applies the template's labels with its own field managers, keeps its own.
const HardwareLabelsFieldManager = "capr-hardware-labels"
