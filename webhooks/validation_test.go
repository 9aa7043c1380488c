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
