package webhooks

import (
	"context"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// The unit tier of admission: the checks that need no apiserver, each refusal naming its field and saying the fix.
// The same checks run through a real kube-apiserver over TLS in the integration tier (validation_test.go).

const unitHostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

// fields returns "field: detail" of each error, for assertions that name the field and the fix.
func fields(errs field.ErrorList) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, e.Field+": "+e.Detail)
	}
	return out
}

func TestRemoteMachineSpecValidation(t *testing.T) {
	key := &infrav1.SecretReference{Name: "key"}
	for _, tc := range []struct {
		name string
		spec infrav1.RemoteMachineSpec
		// want holds one substring per expected error, in order; none means valid.
		want []string
	}{
		{"direct host", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10", SSHKeyRef: key}}, nil},
		{"DNS name", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "node-1.example.com", SSHKeyRef: key}}, nil},
		{"IPv6", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "fd00::1", SSHKeyRef: key}}, nil},
		{"no address", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{SSHKeyRef: key}},
			[]string{"spec.address: set the host's IP address or DNS name, or set spec.pool"}},
		{"no key", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10"}},
			[]string{"spec.sshKeyRef: name the Secret whose data key 'value' holds the SSH private key"}},
		{"address with scheme", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "ssh://host:22", SSHKeyRef: key}},
			[]string{"spec.address: must be an IPv4 or IPv6 address or a DNS name (without port or scheme)"}},
		{"host key that is no key", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10", SSHKeyRef: key, HostKeys: []string{"ssh-ed25519 nope"}}},
			[]string{"spec.hostKeys[0]: must be one public host key in authorized_keys format"}},
		{"two keys in one entry", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10", SSHKeyRef: key, HostKeys: []string{unitHostKey + "\n" + unitHostKey}}},
			[]string{"spec.hostKeys[0]: must be one public host key"}},
		{"Strict without keys", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10", SSHKeyRef: key, HostKeyPolicy: infrav1.HostKeyPolicyStrict}},
			[]string{"spec.hostKeys: hostKeyPolicy Strict needs at least one pinned host key"}},
		{"Strict with a key", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10", SSHKeyRef: key, HostKeyPolicy: infrav1.HostKeyPolicyStrict, HostKeys: []string{unitHostKey}}}, nil},
		{"Strict bastion without keys", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10", SSHKeyRef: key,
			Bastion: &infrav1.Bastion{Address: "bastion.example.com", HostKeyPolicy: infrav1.HostKeyPolicyStrict, SSHKeyRef: *key}}},
			[]string{"spec.bastion.hostKeys: hostKeyPolicy Strict needs at least one pinned host key for the bastion"}},
		{"bad bastion address", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10", SSHKeyRef: key,
			Bastion: &infrav1.Bastion{Address: "bad_host!", SSHKeyRef: *key}}},
			[]string{"spec.bastion.address: must be an IPv4 or IPv6 address or a DNS name"}},
		{"selector too wide", infrav1.RemoteMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10", SSHKeyRef: key}, Selector: manyLabels(maxSelectorRequirements + 1)},
			[]string{"spec.selector: must have at most 16 items"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			got := fields(validateRemoteMachineSpec(field.NewPath("spec"), &tc.spec))
			g.Expect(got).To(HaveLen(len(tc.want)), "errors: %v", got)
			for i, w := range tc.want {
				g.Expect(got[i]).To(ContainSubstring(w))
			}
		})
	}
}

func manyLabels(n int) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := range n {
		s.MatchLabels["k"+strings.Repeat("x", i)] = "v"
	}
	return s
}

func TestSelectorBounds(t *testing.T) {
	g := NewWithT(t)
	path := field.NewPath("spec", "selector")
	g.Expect(validateSelectorSize(path, nil)).To(BeEmpty())
	g.Expect(validateSelectorSize(path, manyLabels(maxSelectorRequirements))).To(BeEmpty())
	g.Expect(fields(validateSelectorSize(path, manyLabels(maxSelectorRequirements+1)))).To(ConsistOf(ContainSubstring("spec.selector: must have at most 16 items")))

	values := make([]string, maxSelectorValues+1)
	for i := range values {
		values[i] = "v"
	}
	wide := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpIn, Values: values}}}
	g.Expect(fields(validateSelectorSize(path, wide))).To(ConsistOf(ContainSubstring("spec.selector.matchExpressions[0].values: must have at most 32 items")))

	long := &metav1.LabelSelector{MatchLabels: map[string]string{"a": strings.Repeat("v", maxSelectorBytes)}}
	g.Expect(fields(validateSelectorSize(path, long))).To(ConsistOf(ContainSubstring("must be at most 4096 bytes written as JSON")))
}

func TestRemoteClusterValidation(t *testing.T) {
	w := &RemoteCluster{}
	for _, tc := range []struct {
		name string
		ep   clusterv1.APIEndpoint
		want []string
	}{
		{"no endpoint (a worker-only cluster)", clusterv1.APIEndpoint{}, nil},
		{"endpoint", clusterv1.APIEndpoint{Host: "192.0.2.100", Port: 6443}, nil},
		{"no port", clusterv1.APIEndpoint{Host: "192.0.2.100"}, []string{"spec.controlPlaneEndpoint.port", "usually 6443"}},
		{"no host", clusterv1.APIEndpoint{Port: 6443}, []string{"spec.controlPlaneEndpoint.host", "or remove controlPlaneEndpoint"}},
		{"host with scheme", clusterv1.APIEndpoint{Host: "https://cp", Port: 6443}, []string{"spec.controlPlaneEndpoint.host", "without port or scheme"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			c := &infrav1.RemoteCluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: infrav1.RemoteClusterSpec{ControlPlaneEndpoint: tc.ep}}
			_, err := w.ValidateCreate(context.Background(), c)
			if len(tc.want) == 0 {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(HaveOccurred())
			for _, w := range tc.want {
				g.Expect(err.Error()).To(ContainSubstring(w))
			}
			// A RemoteCluster being deleted is not checked, so its finalizer can always be removed.
			now := metav1.Now()
			c.DeletionTimestamp = &now
			_, err = w.ValidateUpdate(context.Background(), c, c)
			g.Expect(err).NotTo(HaveOccurred())
		})
	}
}

func TestMoveAnnotationChanges(t *testing.T) {
	g := NewWithT(t)
	uid := infrav1.BootstrapUIDAnnotation
	g.Expect(changedMoveAnnotations(nil, map[string]string{"other": "x"})).To(BeEmpty())
	g.Expect(changedMoveAnnotations(nil, map[string]string{uid: "u"})).To(ConsistOf(uid))
	g.Expect(changedMoveAnnotations(map[string]string{uid: "u"}, map[string]string{uid: "u"})).To(BeEmpty())
	g.Expect(changedMoveAnnotations(map[string]string{uid: "u"}, map[string]string{uid: "v"})).To(ConsistOf(uid))
	g.Expect(changedMoveAnnotations(map[string]string{uid: "u"}, nil)).To(ConsistOf(uid), "removing it is a change too")
	g.Expect(changedMoveAnnotations(map[string]string{uid: ""}, nil)).To(ConsistOf(uid), "an empty value differs from none")
}

func TestPooledHostChanges(t *testing.T) {
	base := infrav1.PooledMachineSpec{RemoteHost: infrav1.RemoteHost{Address: "192.0.2.10", SSHKeyRef: &infrav1.SecretReference{Name: "k"},
		Bastion: &infrav1.Bastion{Address: "bastion", SSHKeyRef: infrav1.SecretReference{Name: "b"}}}}
	pinned := *base.DeepCopy()
	pinned.HostKeys = []string{unitHostKey}
	pinned.Bastion.HostKeys = []string{unitHostKey}
	moved := *pinned.DeepCopy()
	moved.Address = "192.0.2.11"
	unpinned := *pinned.DeepCopy()
	unpinned.HostKeys = nil
	for _, tc := range []struct {
		name                   string
		old, new               infrav1.PooledMachineSpec
		exceptPinned, exceptKs bool
	}{
		{"unchanged", pinned, pinned, true, true},
		{"first keys pinned", base, pinned, true, true},
		{"pinned key replaced", pinned, func() infrav1.PooledMachineSpec {
			s := *pinned.DeepCopy()
			s.HostKeys = []string{"ssh-ed25519 other"}
			return s
		}(), false, true},
		{"pinned key removed", pinned, unpinned, false, false},
		{"address changed", pinned, moved, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(sameHostExceptPinnedKeys(&tc.old, &tc.new)).To(Equal(tc.exceptPinned))
			g.Expect(sameHostExceptKeys(&tc.old, &tc.new)).To(Equal(tc.exceptKs))
		})
	}
}
