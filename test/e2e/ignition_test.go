//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
)

// ignitionExample is the direct example with the KubeadmConfig asking for Ignition (spec 2.3.0 from Cluster API's
// kubeadm bootstrap provider): kubeadm runs from kubeadm.service, which CAPR enables and starts.
const ignitionExample = `apiVersion: cluster.x-k8s.io/v1beta1
kind: Cluster
metadata:
  name: ign-test
  namespace: ign
spec:
  controlPlaneEndpoint:
    host: %s
    port: %d
  infrastructureRef:
    apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
    kind: RemoteCluster
    name: ign-test
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteCluster
metadata:
  name: ign-test
  namespace: ign
spec:
---
apiVersion: cluster.x-k8s.io/v1beta1
kind: Machine
metadata:
  name: ign-test-0
  namespace: ign
  labels:
    cluster.x-k8s.io/control-plane: ""
spec:
  clusterName: ign-test
  version: v1.36.3
  bootstrap:
    configRef:
      apiVersion: bootstrap.cluster.x-k8s.io/v1beta1
      kind: KubeadmConfig
      name: ign-test-0
  infrastructureRef:
    apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
    kind: RemoteMachine
    name: ign-test-0
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta1
kind: KubeadmConfig
metadata:
  name: ign-test-0
  namespace: ign
spec:
  format: ignition
  preKubeadmCommands:
  - echo pre-kubeadm > /run/capr-pre-kubeadm
  initConfiguration:
    nodeRegistration: {}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachine
metadata:
  name: ign-test-0
  namespace: ign
spec:
  address: %s
  port: %d
  user: root
  sshKeyRef:
    name: ssh-key
`

// TestIgnitionEndToEnd runs Cluster API's kubeadm bootstrap provider with its Ignition feature gate: a Machine whose
// KubeadmConfig has format: ignition reaches Running, CAPR having applied the Ignition config over SSH and started
// kubeadm.service (through the hosts' systemctl stand-in, which runs the unit's ExecStart=/bin/bash /etc/kubeadm.sh).
func TestIgnitionEndToEnd(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	e := StartWith(t, func(s string) { t.Log(s) }, Options{CAPIManagerArgs: map[string][]string{
		"capi-kubeadm-bootstrap-controller-manager": {"--feature-gates=KubeadmBootstrapFormatIgnition=true"},
	}})
	c := e.Management.Client
	cp := e.AddHost("ign-cp-0")
	endpoint := e.PrepareNamespace("ign", "ign-test")
	out, err := mgmt.Kubectl(t, e.Management, fmt.Sprintf(ignitionExample, endpoint.Host, endpoint.Port, cp.Address, cp.Port), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)

	machine := &clusterv1.Machine{}
	g.Eventually(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: "ign", Name: "ign-test-0"}, machine)).To(Succeed())
		g.Expect(machine.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)), "conditions: %v", machine.Status.Conditions)
		g.Expect(machine.Status.NodeRef.Name).To(Equal("ign-cp-0"))
	}, 2*timeout, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	g.Expect(Runs(cp, "init")).To(Equal(1))
	log, err := cp.Exec("cat /run/capr-systemctl.log /run/capr-pre-kubeadm; head -c 2 /etc/kubeadm.sh; test -e /etc/kubeadm.yml || echo kubeadm.yml moved")
	g.Expect(err).NotTo(HaveOccurred(), log)
	g.Expect(log).To(Equal("daemon-reload\nenable kubeadm.service\nstart kubeadm.service\nran kubeadm.service: exit 0\npre-kubeadm\n#!kubeadm.yml moved\n"))
	g.Expect(strings.Count(log, "start kubeadm.service")).To(Equal(1))
}
