package nodehost

import "fmt"

// NodeRegistration is the nodeRegistration every node host's kubeadm configuration carries (name, the node's CRI
// socket, and the preflight checks that cannot pass on this machine).
func (h *Host) NodeRegistration() string {
	return fmt.Sprintf(`nodeRegistration:
  name: %s
  criSocket: %s
  kubeletExtraArgs:
  # The node hosts share the machine's cgroup hierarchies: each kubelet keeps its Pods below a root of its own. A
  # flag, not the KubeletConfiguration: join takes that from the cluster, and it is per node.
  - name: cgroup-root
    value: %s
  ignorePreflightErrors:
  # SystemVerification: this machine mounts cgroup v1, and the validator fails it for every kubelet from 1.35 on,
  # whatever failCgroupV1 says (a host with cgroup v2 passes it).
  - SystemVerification
`, h.Name, CRISocket, h.CgroupRoot)
}

// KubeletConfiguration is the KubeletConfiguration node hosts need, with why for each setting (cluster-wide: kubeadm
// init uploads it and join takes it from the cluster).
func KubeletConfiguration() string {
	return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 only (cgroup2 is at /sys/fs/cgroup/unified, without controllers); kubelet 1.35+ refuses
# to start there unless told so. A cgroup v2 host needs neither this nor the next settings.
failCgroupV1: false
# No systemd runs here: containerd runs with SystemdCgroup = false, and the kubelet manages its cgroups itself (its
# cgroup root is a per-node flag, in NodeRegistration).
cgroupDriver: cgroupfs
cgroupsPerQOS: true
`
}

// KubeadmInitConfig is a kubeadm init configuration for this host as the first control-plane node of a cluster of
// Kubernetes version (e.g. v1.36.3), with the host's address as the control-plane endpoint.
func (h *Host) KubeadmInitConfig(version string) string {
	return fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: %[1]s
%[2]s---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: %[3]s
controlPlaneEndpoint: %[1]s:6443
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  # nf_conntrack_max is the machine's, read-only in a network namespace other than the machine's: kube-proxy
  # leaves it as it is (it fails to start otherwise). A real host needs nothing here.
  maxPerCore: 0
---
%[4]s`, h.address(), h.NodeRegistration(), version, KubeletConfiguration())
}

// KubeadmJoinConfig is a kubeadm join configuration for this host as a worker of the cluster whose API server is at
// endpoint (address:port), with a bootstrap token and the CA's hash (sha256:...).
func (h *Host) KubeadmJoinConfig(endpoint, token, caCertHash string) string {
	return fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: %s
    token: %s
    caCertHashes:
    - %s
%s`, endpoint, token, caCertHash, h.NodeRegistration())
}
