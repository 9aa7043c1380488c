package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// HostKeyPolicy says how the SSH host key of a machine is verified.
// +kubebuilder:validation:Enum=Strict;AcceptNew
type HostKeyPolicy string

const (
	// HostKeyPolicyStrict accepts only the keys listed in hostKeys; connecting with none listed is an error.
	HostKeyPolicyStrict HostKeyPolicy = "Strict"
	// HostKeyPolicyAcceptNew pins the first key the host presents into hostKeys and refuses any other key later.
	HostKeyPolicyAcceptNew HostKeyPolicy = "AcceptNew"
)

// SecretReference names a Secret in the object's own namespace.
type SecretReference struct {
	// name of the Secret in the same namespace. For SSH keys the Secret holds the private key in the data key
	// `value`, and may hold its passphrase in the data key `passphrase`.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// Bastion is a jump host the SSH connection to a machine goes through.
type Bastion struct {
	// address of the jump host: an IPv4 or IPv6 address or a DNS name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Address string `json:"address"`

	// port the jump host's SSH server listens on.
	// +optional
	// +kubebuilder:default=22
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// user to log in to the jump host as.
	// +optional
	// +kubebuilder:default=root
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	User string `json:"user,omitempty"`

	// sshKeyRef names the Secret holding the private key for the jump host (data key `value`).
	// +required
	SSHKeyRef SecretReference `json:"sshKeyRef"`

	// hostKeys are the jump host's accepted public host keys, one per entry in authorized_keys format
	// (for example `ssh-ed25519 AAAA...`). Any listed key is accepted.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=16384
	HostKeys []string `json:"hostKeys,omitempty"`

	// hostKeyPolicy says how the jump host's key is verified: Strict or AcceptNew (the default).
	// +optional
	// +kubebuilder:default=AcceptNew
	HostKeyPolicy HostKeyPolicy `json:"hostKeyPolicy,omitempty"`
}

// RemoteHost describes how to reach a machine over SSH and how to manage it. It is shared by RemoteMachine and
// PooledRemoteMachine: a claim copies it from the pool entry into the RemoteMachine.
type RemoteHost struct {
	// address of the machine: an IPv4 or IPv6 address or a DNS name.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Address string `json:"address,omitempty"`

	// port the machine's SSH server listens on.
	// +optional
	// +kubebuilder:default=22
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// user to log in as. A user other than root needs passwordless sudo and useSudo: true.
	// +optional
	// +kubebuilder:default=root
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	User string `json:"user,omitempty"`

	// sshKeyRef names the Secret holding the SSH private key (data key `value`).
	// +optional
	SSHKeyRef *SecretReference `json:"sshKeyRef,omitempty"`

	// useSudo runs the bootstrap and cleanup commands with `sudo -n`, for users other than root.
	// +optional
	UseSudo bool `json:"useSudo,omitempty"`

	// hostKeys are the machine's accepted public SSH host keys, one per entry in authorized_keys format
	// (for example `ssh-ed25519 AAAA...`). Any listed key is accepted, so keys can be rotated. Under AcceptNew an
	// empty list is filled with the first key the machine presents.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=16384
	HostKeys []string `json:"hostKeys,omitempty"`

	// hostKeyPolicy says how the machine's host key is verified. Strict requires hostKeys; AcceptNew (the
	// default) pins the first key seen and refuses any other key afterwards. The key is never ignored.
	// +optional
	// +kubebuilder:default=AcceptNew
	HostKeyPolicy HostKeyPolicy `json:"hostKeyPolicy,omitempty"`

	// bastion is an optional jump host the SSH connection goes through.
	// +optional
	Bastion *Bastion `json:"bastion,omitempty"`

	// customCleanUpCommands replace the default cleanup run on the machine when its RemoteMachine is deleted
	// (by default `kubeadm reset -f` for kubeadm bootstrap data, `k0s stop` and `k0s reset` for k0s).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	CustomCleanUpCommands []string `json:"customCleanUpCommands,omitempty"`

	// workingDir is the directory on the machine where CAPR keeps its temporary files during bootstrap
	// (default /tmp).
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	WorkingDir string `json:"workingDir,omitempty"`
}

// Architecture is a CPU architecture as Kubernetes names it (kubernetes.io/arch).
// +kubebuilder:validation:Enum=amd64;arm64;s390x;ppc64le
type Architecture string

// Architectures Cluster API's autoscaling-from-zero contract knows.
const (
	ArchitectureAmd64   Architecture = "amd64"
	ArchitectureArm64   Architecture = "arm64"
	ArchitectureS390x   Architecture = "s390x"
	ArchitecturePpc64le Architecture = "ppc64le"
)

// NodeInfo is the architecture and operating system of a host, as Cluster API's autoscaling-from-zero contract
// names them.
// +kubebuilder:validation:MinProperties=1
type NodeInfo struct {
	// architecture is the host's CPU architecture (kubernetes.io/arch).
	// +optional
	Architecture Architecture `json:"architecture,omitempty"`
	// operatingSystem is the host's operating system (kubernetes.io/os), e.g. linux.
	// +optional
	OperatingSystem string `json:"operatingSystem,omitempty"`
}

// HostKeyReplacement records a pinned host key that CAPR replaced because a person accepted the key a rebuilt host
// presents, with the accept-host-key annotation naming its fingerprint.
type HostKeyReplacement struct {
	// previous are the SHA-256 fingerprints of the keys pinned before (SHA256:..., as ssh-keygen -l prints them).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=128
	Previous []string `json:"previous,omitempty"`

	// current is the SHA-256 fingerprint of the key pinned now, the value of the annotation that accepted it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Current string `json:"current"`

	// bastion is true when the replaced key is the bastion's, not the host's.
	// +optional
	Bastion bool `json:"bastion,omitempty"`

	// by is the user who set the accept-host-key annotation, as the apiserver authenticated them (recorded by
	// CAPR's admission webhook in the accept-host-key-by annotation).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	By string `json:"by,omitempty"`

	// at is when CAPR replaced the key.
	// +required
	At metav1.Time `json:"at"`
}
