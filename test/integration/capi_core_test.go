//go:build integration

package integration

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	clusterv1beta1 "sigs.k8s.io/cluster-api/api/core/v1beta1" //nolint:staticcheck // the test reads the Cluster as v1beta1 clients see it
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// runCAPICoreManager runs Cluster API v1.14.2's core manager (bin/capi-manager, built from the Go module proxy)
// against the test apiserver, watching one namespace.
func runCAPICoreManager(t *testing.T, namespace string) *testenv.SyncBuffer {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	cmd := exec.Command(filepath.Join(env.BinDir, "capi-manager"),
		"--kubeconfig", env.Kubeconfig,
		"--namespace", namespace,
		"--health-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--diagnostics-address", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--insecure-diagnostics",
		"--webhook-port", strconv.Itoa(freePort(t)), "--webhook-cert-dir", env.WebhookCertDir,
		"--skip-crd-migration-phases", "StorageVersionMigration,CleanupManagedFields")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("Cluster API core manager logs:\n%s", logs.String())
		}
	})
	return logs
}

// TestCAPICoreCopiesFailureDomains runs CAPR's manager and Cluster API's own core manager: CAPR reports the
// RemoteCluster provisioned with its failure domains in both contract shapes, and Cluster API's Cluster controller
// copies them onto the Cluster and marks its infrastructure provisioned.
func TestCAPICoreCopiesFailureDomains(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	runManager(t, buildManager(t), env.ManagerKubeconfig, "--namespace", ns)
	runCAPICoreManager(t, ns)

	rc := &infrav1.RemoteCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "racks"}}
	rc.Spec.FailureDomains = []clusterv1.FailureDomain{
		{Name: "rack-b", ControlPlane: ptr.To(false), Attributes: map[string]string{"row": "2"}},
		{Name: "rack-a", ControlPlane: ptr.To(true)},
	}
	g.Expect(env.Client.Create(ctx, rc)).To(Succeed())
	cluster := &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "racks"}}
	cluster.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteCluster", Name: rc.Name}
	cluster.Spec.ControlPlaneEndpoint = clusterv1.APIEndpoint{Host: "10.0.0.10", Port: 6443}
	g.Expect(env.Client.Create(ctx, cluster)).To(Succeed())

	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(rc), rc)).To(Succeed())
		g.Expect(rc.OwnerReferences).To(ContainElement(HaveField("Kind", "Cluster")), "Cluster API set the owner")
		g.Expect(rc.Status.Initialization.Provisioned).To(Equal(ptr.To(true)))
		g.Expect(rc.Status.FailureDomains).To(ConsistOf(rc.Spec.FailureDomains))
		g.Expect(rc.Status.Deprecated).NotTo(BeNil())
		g.Expect(rc.Status.Deprecated.V1Beta1).NotTo(BeNil())
		g.Expect(rc.Status.Deprecated.V1Beta1.FailureDomains).To(Equal(map[string]infrav1.V1Beta1FailureDomain{
			"rack-a": {ControlPlane: true},
			"rack-b": {ControlPlane: false, Attributes: map[string]string{"row": "2"}},
		}))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())

	g.Eventually(func(g Gomega) {
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(cluster), cluster)).To(Succeed())
		g.Expect(cluster.Status.Initialization.InfrastructureProvisioned).To(Equal(ptr.To(true)))
		g.Expect(cluster.Status.FailureDomains).To(Equal([]clusterv1.FailureDomain{
			{Name: "rack-a", ControlPlane: ptr.To(true)},
			{Name: "rack-b", ControlPlane: ptr.To(false), Attributes: map[string]string{"row": "2"}},
		}))
	}, 90*time.Second, 200*time.Millisecond).Should(Succeed())

	// The Cluster read in the v1beta1 API (through Cluster API's conversion) shows the map shape.
	old := &clusterv1beta1.Cluster{}
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(cluster), old)).To(Succeed())
	g.Expect(old.Status.FailureDomains).To(Equal(clusterv1beta1.FailureDomains{
		"rack-a": {ControlPlane: true},
		"rack-b": {Attributes: map[string]string{"row": "2"}},
	}))
}
