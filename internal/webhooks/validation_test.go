//go:build integration

package webhooks_test

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

var hostKey = testenv.HostKey

// These tests go through the real kube-apiserver, which calls CAPR's validating webhooks over TLS.

func TestRemoteMachineHostValidation(t *testing.T) {
	ns := env.NewNamespace(t)
	cases := []struct {
		name    string
		mutate  func(*infrav1.RemoteMachine)
		wantErr []string
	}{
		{name: "IPv4 address", mutate: func(m *infrav1.RemoteMachine) { m.Spec.Address = "192.0.2.10" }},
		{name: "IPv6 address", mutate: func(m *infrav1.RemoteMachine) { m.Spec.Address = "2001:db8::10" }},
		{name: "DNS name", mutate: func(m *infrav1.RemoteMachine) { m.Spec.Address = "node-1.rack-4.example.com" }},
		{name: "pinned host key", mutate: func(m *infrav1.RemoteMachine) {
			m.Spec.HostKeys = []string{hostKey}
			m.Spec.HostKeyPolicy = infrav1.HostKeyPolicyStrict
		}},
		{name: "URL instead of address",
			mutate:  func(m *infrav1.RemoteMachine) { m.Spec.Address = "ssh://192.0.2.10:22" },
			wantErr: []string{"spec.address", "must be an IPv4 or IPv6 address or a DNS name"}},
		{name: "garbage host key",
			mutate:  func(m *infrav1.RemoteMachine) { m.Spec.HostKeys = []string{"not a key"} },
			wantErr: []string{"spec.hostKeys[0]", "authorized_keys format"}},
		{name: "two keys in one entry",
			mutate:  func(m *infrav1.RemoteMachine) { m.Spec.HostKeys = []string{hostKey + "\n" + hostKey} },
			wantErr: []string{"spec.hostKeys[0]"}},
		{name: "strict without keys",
			mutate:  func(m *infrav1.RemoteMachine) { m.Spec.HostKeyPolicy = infrav1.HostKeyPolicyStrict },
			wantErr: []string{"spec.hostKeys", "Strict needs at least one pinned host key"}},
		{name: "bastion with bad address",
			mutate: func(m *infrav1.RemoteMachine) {
				m.Spec.Bastion = &infrav1.Bastion{Address: "bad_host!", SSHKeyRef: infrav1.SecretReference{Name: "k"}}
			},
			wantErr: []string{"spec.bastion.address"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			m := &infrav1.RemoteMachine{}
			m.Namespace, m.GenerateName = ns, "m-"
			m.Spec.Address = "192.0.2.1"
			m.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
			tc.mutate(m)
			err := env.Client.Create(context.Background(), m)
			if len(tc.wantErr) == 0 {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(HaveOccurred())
			g.Expect(err.Error()).To(ContainSubstring(`admission webhook "validation.remotemachine.infrastructure.cluster.x-k8s.io" denied the request`))
			for _, w := range tc.wantErr {
				g.Expect(err.Error()).To(ContainSubstring(w))
			}
		})
	}
}

func TestPooledRemoteMachineHostValidation(t *testing.T) {
	g := NewWithT(t)
	ns := env.NewNamespace(t)
	p := &infrav1.PooledRemoteMachine{}
	p.Namespace, p.Name = ns, "p"
	p.Spec.Pool = "default"
	p.Spec.Machine.Address = "not an address"
	p.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	err := env.Client.Create(context.Background(), p)
	g.Expect(err).To(MatchError(ContainSubstring("spec.machine.address")))
	g.Expect(err).To(MatchError(ContainSubstring("validation.pooledremotemachine")))

	p.Spec.Machine.Address = "192.0.2.5"
	g.Expect(env.Client.Create(context.Background(), p)).To(Succeed())
}

func TestRemoteClusterEndpointValidation(t *testing.T) {
	g := NewWithT(t)
	ns := env.NewNamespace(t)
	c := &infrav1.RemoteCluster{}
	c.Namespace, c.Name = ns, "c"
	c.Spec.ControlPlaneEndpoint = clusterv1.APIEndpoint{Host: "api.example.com"}
	err := env.Client.Create(context.Background(), c)
	g.Expect(err).To(MatchError(ContainSubstring("spec.controlPlaneEndpoint.port")))
	g.Expect(err).To(MatchError(ContainSubstring("usually 6443")))

	c.Spec.ControlPlaneEndpoint.Port = 6443
	g.Expect(env.Client.Create(context.Background(), c)).To(Succeed())
	c.Spec.ControlPlaneEndpoint.Host = "bad host"
	g.Expect(env.Client.Update(context.Background(), c)).To(MatchError(ContainSubstring("spec.controlPlaneEndpoint.host")))
	g.Expect(env.Client.Get(context.Background(), client.ObjectKeyFromObject(c), c)).To(Succeed())
	g.Expect(c.Spec.ControlPlaneEndpoint.Host).To(Equal("api.example.com"), "nothing was stored")
}

// TestTemplatesAreImmutable checks that template specs never change, except in Cluster API's topology dry-runs.
func TestTemplatesAreImmutable(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)

	mt := &infrav1.RemoteMachineTemplate{}
	mt.Namespace, mt.Name = ns, "workers"
	mt.Spec.Template.Spec.Pool = "default"
	g.Expect(env.Client.Create(ctx, mt)).To(Succeed())
	mt.Spec.Template.Spec.Pool = "gpu"
	g.Expect(env.Client.Update(ctx, mt)).To(MatchError(ContainSubstring("spec: Forbidden: RemoteMachineTemplate spec is immutable: create a new RemoteMachineTemplate")))

	// Cluster API's topology controller plans changes with annotated server-side dry runs; those pass.
	mt.Annotations = map[string]string{clusterv1.TopologyDryRunAnnotation: ""}
	g.Expect(env.Client.Update(ctx, mt, client.DryRunAll)).To(Succeed())
	stored := &infrav1.RemoteMachineTemplate{}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(mt), stored)).To(Succeed())
	g.Expect(stored.Spec.Template.Spec.Pool).To(Equal("default"))

	// Metadata may change.
	stored.Labels = map[string]string{"team": "a"}
	g.Expect(env.Client.Update(ctx, stored)).To(Succeed())

	ct := &infrav1.RemoteClusterTemplate{}
	ct.Namespace, ct.Name = ns, "clusters"
	g.Expect(env.Client.Create(ctx, ct)).To(Succeed())
	ct.Spec.Template.Spec.ControlPlaneEndpoint = clusterv1.APIEndpoint{Host: "api.example.com", Port: 6443}
	g.Expect(env.Client.Update(ctx, ct)).To(MatchError(ContainSubstring("RemoteClusterTemplate spec is immutable")))

	// A template's host fields are checked like a machine's.
	bad := &infrav1.RemoteMachineTemplate{}
	bad.Namespace, bad.Name = ns, "bad"
	bad.Spec.Template.Spec.Pool = "default"
	bad.Spec.Template.Spec.HostKeys = []string{"nope"}
	g.Expect(env.Client.Create(ctx, bad)).To(MatchError(ContainSubstring("spec.template.spec.hostKeys[0]")))
}

// TestGuardIgnoresOtherProviders checks that Clusters and control planes not on CAPR's kinds are left alone.
func TestGuardIgnoresOtherProviders(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	c := &clusterv1.Cluster{}
	c.Namespace, c.Name = ns, "other"
	c.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: "infrastructure.cluster.x-k8s.io", Kind: "DockerCluster", Name: "other"}
	c.Spec.ControlPlaneRef = clusterv1.ContractVersionedObjectReference{APIGroup: "controlplane.cluster.x-k8s.io", Kind: "KubeadmControlPlane", Name: "other"}
	g.Expect(env.Client.Create(ctx, c)).To(Succeed())
	kcp := `apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {name: other, namespace: ` + ns + `}
spec:
  version: v1.36.3
  machineTemplate:
    spec:
      infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DockerMachineTemplate, name: cp}
`
	out, errOut, err := env.Kubectl(ctx, kcp, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), "stdout: %s\nstderr: %s", out, errOut)
}
