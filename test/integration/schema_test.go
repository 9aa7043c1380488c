//go:build integration

package integration

import (
	"context"
	"fmt"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// TestInvalidObjectsAreRejectedWithFieldPaths applies invalid objects with kubectl and checks that nothing is
// stored and that the error names the field.
func TestInvalidObjectsAreRejectedWithFieldPaths(t *testing.T) {
	ns := env.NewNamespace(t)
	cases := []struct {
		name string
		yaml string
		want []string
	}{{
		name: "port 0",
		yaml: `
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachine
metadata: {name: port-zero}
spec: {address: 1.2.3.4, port: 0, sshKeyRef: {name: key}}`,
		want: []string{"spec.port", "should be greater than or equal to 1"},
	}, {
		name: "port 70000",
		yaml: `
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachine
metadata: {name: port-high}
spec: {address: 1.2.3.4, port: 70000, sshKeyRef: {name: key}}`,
		want: []string{"spec.port", "should be less than or equal to 65535"},
	}, {
		name: "empty address without a pool",
		yaml: `
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachine
metadata: {name: no-address}
spec: {address: "", sshKeyRef: {name: key}}`,
		want: []string{"spec.address", "address is required", "set pool"},
	}, {
		name: "pool entry without sshKeyRef",
		yaml: `
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: PooledRemoteMachine
metadata: {name: no-key}
spec: {pool: default, machine: {address: 1.2.3.4}}`,
		want: []string{"spec.machine.sshKeyRef", "sshKeyRef is required"},
	}, {
		name: "unknown hostKeyPolicy",
		yaml: `
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachine
metadata: {name: bad-policy}
spec: {address: 1.2.3.4, sshKeyRef: {name: key}, hostKeyPolicy: Sometimes}`,
		want: []string{"spec.hostKeyPolicy", `Unsupported value: "Sometimes"`, `"Strict"`, `"AcceptNew"`},
	}, {
		name: "pool entry with unknown hostKeyPolicy",
		yaml: `
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: PooledRemoteMachine
metadata: {name: bad-policy}
spec: {pool: default, machine: {address: 1.2.3.4, sshKeyRef: {name: key}, hostKeyPolicy: Never}}`,
		want: []string{"spec.machine.hostKeyPolicy", `Unsupported value: "Never"`},
	}, {
		name: "template without pool or address",
		yaml: `
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachineTemplate
metadata: {name: empty}
spec: {template: {spec: {}}}`,
		want: []string{"spec.template.spec.address", "address is required"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			out, errOut, err := env.Kubectl(context.Background(), tc.yaml, "apply", "-n", ns, "-f", "-")
			g.Expect(err).To(HaveOccurred(), "stdout: %s", out)
			for _, w := range tc.want {
				g.Expect(errOut).To(ContainSubstring(w))
			}
			got, _, _ := env.Kubectl(context.Background(), "", "get", "remotemachines,pooledremotemachines,remotemachinetemplates", "-n", ns, "-o", "name")
			g.Expect(got).To(BeEmpty(), "nothing is stored")
		})
	}
}

// TestDefaultsAndImmutableFields checks the schema defaults and the rules that keep a host's identity fixed.
func TestDefaultsAndImmutableFields(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)

	rm := &infrav1.RemoteMachine{}
	rm.Namespace, rm.Name = ns, "m"
	rm.Spec.Address = "host-1.example.com"
	rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	g.Expect(rm.Spec.Port).To(Equal(int32(22)))
	g.Expect(rm.Spec.User).To(Equal("root"))
	g.Expect(rm.Spec.HostKeyPolicy).To(Equal(infrav1.HostKeyPolicyAcceptNew))

	for field, mutate := range map[string]func(*infrav1.RemoteMachine){
		"spec.address":   func(m *infrav1.RemoteMachine) { m.Spec.Address = "host-2.example.com" },
		"spec.port":      func(m *infrav1.RemoteMachine) { m.Spec.Port = 2222 },
		"spec.user":      func(m *infrav1.RemoteMachine) { m.Spec.User = "admin" },
		"spec.sshKeyRef": func(m *infrav1.RemoteMachine) { m.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "other"} },
		"spec.pool":      func(m *infrav1.RemoteMachine) { m.Spec.Pool = "default" },
	} {
		changed := rm.DeepCopy()
		mutate(changed)
		err := env.Client.Update(ctx, changed)
		g.Expect(err).To(HaveOccurred(), field)
		g.Expect(err.Error()).To(ContainSubstring(field), field)
		g.Expect(err.Error()).To(ContainSubstring("cannot change"), field)
	}

	// providerID is set once.
	rm.Spec.ProviderID = "remote-machine://host-1.example.com:22"
	g.Expect(env.Client.Update(ctx, rm)).To(Succeed())
	rm.Spec.ProviderID = "remote-machine://other:22"
	err := env.Client.Update(ctx, rm)
	g.Expect(err).To(MatchError(ContainSubstring("spec.providerID")))

	// A claimed pool entry keeps its machine fields.
	prm := &infrav1.PooledRemoteMachine{}
	prm.Namespace, prm.Name = ns, "p"
	prm.Spec.Pool = "default"
	prm.Spec.Machine.Address = "10.0.0.1"
	prm.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	g.Expect(env.Client.Create(ctx, prm)).To(Succeed())
	prm.Spec.Machine.Address = "10.0.0.2"
	g.Expect(env.Client.Update(ctx, prm)).To(Succeed(), "an unclaimed entry can change")
	prm.Spec.ClaimRef = &infrav1.PooledMachineClaim{Name: "m"}
	g.Expect(env.Client.Update(ctx, prm)).To(Succeed())
	prm.Spec.Machine.Address = "10.0.0.3"
	err = env.Client.Update(ctx, prm)
	g.Expect(err).To(MatchError(ContainSubstring("spec.machine: Invalid value")))
	g.Expect(err).To(MatchError(ContainSubstring("claimed by RemoteMachine m")))

	// The seed's RemoteCluster has an empty spec.
	_, errOut, err := env.Kubectl(ctx, fmt.Sprintf("apiVersion: infrastructure.cluster.x-k8s.io/v1beta1\nkind: RemoteCluster\nmetadata: {name: c, namespace: %s}\nspec:\n", ns), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), errOut)
	g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "c"}, &infrav1.RemoteCluster{})).To(Succeed())
}
