//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
)

// zeroExample is a Cluster with a MachineDeployment of 0 replicas on a RemoteMachineTemplate naming the pool "gpu",
// with the autoscaler's node-group bounds, as a user sets it up for Cluster API's autoscaler to scale from zero.
const zeroExample = `apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata:
  name: zero
  namespace: zero
spec:
  controlPlaneEndpoint:
    host: %s
    port: %d
  infrastructureRef:
    apiGroup: infrastructure.cluster.x-k8s.io
    kind: RemoteCluster
    name: zero
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteCluster
metadata:
  name: zero
  namespace: zero
spec: {}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachineTemplate
metadata:
  name: gpu
  namespace: zero
spec:
  template:
    spec:
      pool: gpu
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata:
  name: gpu
  namespace: zero
spec:
  template:
    spec:
      joinConfiguration:
        nodeRegistration:
          name: '{{ ds.meta_data.local_hostname }}'
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata:
  name: gpu
  namespace: zero
  annotations:
    cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size: "0"
    cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size: "2"
spec:
  clusterName: zero
  replicas: 0
  selector:
    matchLabels: {}
  template:
    spec:
      clusterName: zero
      version: v1.36.3
      bootstrap:
        configRef:
          apiGroup: bootstrap.cluster.x-k8s.io
          kind: KubeadmConfigTemplate
          name: gpu
      infrastructureRef:
        apiGroup: infrastructure.cluster.x-k8s.io
        kind: RemoteMachineTemplate
        name: gpu
`

// TestScaleFromZero runs CAPR with the pool probe on, next to Cluster API's managers: a MachineDeployment of 0 on a
// RemoteMachineTemplate naming a pool gets, on the template, the fields Cluster API's "autoscaling from zero"
// contract defines (status.capacity, status.nodeInfo), read as the autoscaler reads them (unstructured), measured on
// the pool's real sshd hosts; and the pool's free count, which a scale-up lowers. The cluster-autoscaler itself is
// not on the Go module proxy: the fields are checked against Cluster API's contract document.
func TestScaleFromZero(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	e := Start(t, func(s string) { t.Log(s) })
	// CAPR as installed, with the pool probe every 2 seconds.
	e.CAPR.Stop()
	capr := mgmt.RunAsInstalled(t, e.Management, "capr-system", "capr-controller-manager", e.ManagerBinary(),
		"--leader-elect-namespace=capr-system", "--pool-probe-interval=2s")
	e.CAPR.Redirect.SetTargets(capr.WebhookAddr)

	const ns = "zero"
	hosts := []string{"zero-gpu-0", "zero-gpu-1"}
	for _, name := range hosts {
		e.AddHost(name)
	}
	endpoint := e.PrepareNamespace(ns, "zero")
	out, err := mgmt.Kubectl(t, e.Management, fmt.Sprintf(zeroExample, endpoint.Host, endpoint.Port), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	for i, h := range e.Hosts {
		g.Expect(e.Management.Client.Create(ctx, poolEntry(ns, "gpu", hosts[i], h))).To(Succeed())
	}

	// What the hosts have: they are this machine.
	meminfo, err := os.ReadFile("/proc/meminfo")
	g.Expect(err).NotTo(HaveOccurred())
	memory := string(regexp.MustCompile(`MemTotal:\s+(\d+) kB`).FindSubmatch(meminfo)[1]) + "Ki"
	template := &unstructured.Unstructured{}
	template.SetAPIVersion("infrastructure.cluster.x-k8s.io/v1beta1")
	template.SetKind("RemoteMachineTemplate")
	read := func(g Gomega, fields ...string) any {
		g.Expect(e.Management.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gpu"}, template)).To(Succeed())
		v, _, err := unstructured.NestedFieldCopy(template.Object, fields...)
		g.Expect(err).NotTo(HaveOccurred())
		return v
	}
	g.Eventually(func(g Gomega) {
		// The contract's shapes: capacity is a map of resource quantities as strings, nodeInfo two strings.
		read(g, "status")
		capacity, _, err := unstructured.NestedStringMap(template.Object, "status", "capacity")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(capacity).To(HaveKeyWithValue("cpu", fmt.Sprint(runtime.NumCPU())))
		g.Expect(capacity).To(HaveKeyWithValue("memory", memory))
		g.Expect(read(g, "status", "nodeInfo")).To(Equal(map[string]any{"architecture": runtime.GOARCH, "operatingSystem": "linux"}))
		g.Expect(read(g, "status", "pool")).To(Equal(map[string]any{"total": int64(2), "free": int64(2), "measured": int64(2)}))
	}, 2*time.Minute, time.Second).Should(Succeed(), func() string { return fmt.Sprint(template.Object["status"]) })
	out, err = mgmt.Kubectl(t, e.Management, "", "get", "remotemachinetemplate", "-n", ns, "gpu")
	g.Expect(err).NotTo(HaveOccurred(), out)
	t.Logf("kubectl get remotemachinetemplate -n zero gpu\n%s", out)

	// Scaled from zero to one: the MachineSet's RemoteMachine claims a host, one fewer is free.
	out, err = mgmt.Kubectl(t, e.Management, "", "scale", "-n", ns, "machinedeployment/gpu", "--replicas=1")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) any { return read(g, "status", "pool", "free") }, 2*time.Minute, time.Second).Should(Equal(int64(1)))
}
