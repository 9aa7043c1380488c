//go:build integration

package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestClusterctlInit installs CAPR the way its users do: cert-manager running (its own controllers and CA
// injector), `clusterctl init --infrastructure remote` from a local repository holding what `make
// release-manifests` wrote and Cluster API v1.14.2's own components. Then it runs Cluster API's core manager and
// CAPR's manager as they were installed (their Deployments' arguments, ServiceAccounts, RBAC and cert-manager
// certificates) and uses CAPR through the installed webhook configurations: the reference document applies, a pool
// claim works, a RemoteMachine bootstraps on a real sshd host, the leader holds its Lease, and no request is
// refused by RBAC. It also renders every cluster template with `clusterctl generate cluster`.
func TestClusterctlInit(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	manager := mgmt.BuildManager(t)
	a := mgmt.StartAPIServer(t)
	mgmt.StartCertManager(t, a)

	release := mgmt.ReleaseFiles(t)
	config := mgmt.LocalRepository(t, release)
	// With Cluster API's topology feature on, for the ClusterClass flavor.
	out, err := mgmt.RunCmd(t, "", append(mgmt.ClusterctlEnv(t), "CLUSTER_TOPOLOGY=true"), mgmt.Tool(t, "clusterctl"), "init", "--config", config,
		"--kubeconfig", a.Kubeconfig, "--infrastructure", "remote")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("Skipping installing cert-manager as it is already installed"))
	g.Expect(out).To(ContainSubstring(`Installing provider="infrastructure-remote" version="` + mgmt.ReleaseVersion + `" targetNamespace="capr-system"`))

	// Every object of the release is there, labelled as clusterctl labels the providers it installs.
	components, err := os.ReadFile(filepath.Join(release, "infrastructure-components.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	objs := mgmt.ParseObjects(t, mgmt.ClusterctlVariable.ReplaceAllString(string(components), "$2"))
	mgmt.ExpectInstalled(t, a, objs)
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(mgmt.SchemaCRD)
	g.Expect(a.Client.Get(ctx, client.ObjectKey{Name: "pooledremotemachines.infrastructure.cluster.x-k8s.io"}, crd)).To(Succeed())
	g.Expect(crd.Labels).To(HaveKeyWithValue("cluster.x-k8s.io/provider", "infrastructure-remote"))
	g.Expect(crd.Labels).To(HaveKey("clusterctl.cluster.x-k8s.io"))

	// cert-manager issued the serving certificates and injected their CA.
	mgmt.WaitCABundles(t, a, map[string][]string{
		"MutatingWebhookConfiguration":   {"capr-mutating-webhook-configuration", "capi-mutating-webhook-configuration"},
		"ValidatingWebhookConfiguration": {"capr-validating-webhook-configuration", "capr-controlplane-endpoint-guard", "capi-validating-webhook-configuration"},
	})

	// Cluster API's managers and CAPR's manager, as installed.
	mgmt.RunCAPIManagers(t, a)
	capr := mgmt.RunCAPR(t, a, "capr-system", manager)
	applySeedDocument(t, a)
	bootstrapOnHost(t, a, "installed", sshdtest.Start(t))
	mgmt.ExpectLeaderAndNoForbidden(t, a, "capr-system", capr)

	t.Run("generate cluster", func(t *testing.T) { generateEveryFlavor(t, a, config) })
	t.Run("clusterclass", func(t *testing.T) { applyClusterClassFlavor(t, a, config) })
}

// applyClusterClassFlavor applies the ClusterClass flavor with Cluster API's topology controller running: the
// Cluster's RemoteCluster and RemoteMachineTemplates are made from the class, with the pools the Cluster's
// variables name patched in, and the KubeadmControlPlane's first machine takes its host from the control-plane pool.
func applyClusterClassFlavor(t *testing.T, a *testenv.APIServer, config string) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := "topology"
	g.Expect(a.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	// Pool entries on closed loopback ports: the claim is what is tested here, not a bootstrap.
	g.Expect(a.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "key"},
		Data: map[string][]byte{"value": []byte("unused")}})).To(Succeed())
	for i, pool := range []string{"cp-pool", "cp-pool", "worker-pool"} {
		entry := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("host-%d", i)}}
		entry.Spec.Pool = pool
		entry.Spec.Machine.Address, entry.Spec.Machine.Port = "127.0.0.1", int32(mgmt.FreePort(t))
		entry.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
		g.Expect(a.Client.Create(ctx, entry)).To(Succeed())
	}
	// The installed entry defaulter is called only when an accept-host-key annotation is there (matchConditions, so
	// CAPR's claim writes pay no call): it records who set one, and drops a recorder left alone.
	g.Eventually(func(g Gomega) {
		e := &infrav1.PooledRemoteMachine{}
		g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "host-2"}, e)).To(Succeed())
		e.Annotations = map[string]string{infrav1.AcceptHostKeyAnnotation: "SHA256:" + strings.Repeat("A", 43)}
		g.Expect(a.Client.Update(ctx, e)).To(Succeed())
		g.Expect(e.Annotations).To(HaveKeyWithValue(infrav1.AcceptHostKeyByAnnotation, Not(BeEmpty())))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Eventually(func(g Gomega) {
		e := &infrav1.PooledRemoteMachine{}
		g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "host-2"}, e)).To(Succeed())
		e.Annotations = map[string]string{infrav1.AcceptHostKeyByAnnotation: "someone-else"}
		g.Expect(a.Client.Update(ctx, e)).To(Succeed())
		g.Expect(e.Annotations).NotTo(HaveKey(infrav1.AcceptHostKeyByAnnotation))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	rendered, err := mgmt.RunCmd(t, "", append(mgmt.ClusterctlEnv(t), "CONTROL_PLANE_ENDPOINT_HOST=127.0.0.1",
		fmt.Sprintf("CONTROL_PLANE_ENDPOINT_PORT=%d", mgmt.FreePort(t)), "CONTROL_PLANE_POOL=cp-pool", "WORKER_POOL=worker-pool"),
		mgmt.Tool(t, "clusterctl"), "generate", "cluster", "demo", "--config", config, "--kubeconfig", a.Kubeconfig,
		"--infrastructure", "remote", "--flavor", "clusterclass", "--kubernetes-version", "v1.36.3",
		"--control-plane-machine-count", "1", "--worker-machine-count", "0", "--target-namespace", ns)
	g.Expect(err).NotTo(HaveOccurred(), rendered)
	out, err := mgmt.Kubectl(t, a, rendered, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("clusterclass.cluster.x-k8s.io/remote created"))

	// The topology controller made the Cluster's RemoteCluster from the class's RemoteClusterTemplate, and the
	// machines' RemoteMachineTemplates with the pools of the Cluster's variables.
	cluster := &clusterv1.Cluster{}
	g.Eventually(func(g Gomega) {
		g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo"}, cluster)).To(Succeed())
		g.Expect(cluster.Spec.InfrastructureRef.Kind).To(Equal("RemoteCluster"))
		g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: cluster.Spec.InfrastructureRef.Name}, &infrav1.RemoteCluster{})).To(Succeed())
		templates := &infrav1.RemoteMachineTemplateList{}
		g.Expect(a.Client.List(ctx, templates, client.InNamespace(ns), client.MatchingLabels{clusterv1.ClusterNameLabel: "demo"})).To(Succeed())
		pools := map[string]bool{}
		for _, tpl := range templates.Items {
			pools[tpl.Spec.Template.Spec.Pool] = true
		}
		g.Expect(pools).To(Equal(map[string]bool{"cp-pool": true, "worker-pool": true}))
	}, 2*time.Minute, time.Second).Should(Succeed())

	// The KubeadmControlPlane's first machine holds a host of the control-plane pool.
	g.Eventually(func(g Gomega) {
		machines := &infrav1.RemoteMachineList{}
		g.Expect(a.Client.List(ctx, machines, client.InNamespace(ns))).To(Succeed())
		g.Expect(machines.Items).To(HaveLen(1))
		rm := machines.Items[0]
		g.Expect(rm.Spec.Pool).To(Equal("cp-pool"))
		g.Expect(rm.Spec.Address).To(Equal("127.0.0.1"))
		g.Expect(rm.Spec.PooledRemoteMachineRef).NotTo(BeNil())
		g.Expect(rm.Labels).To(HaveKey(clusterv1.MachineControlPlaneLabel))
	}, 2*time.Minute, time.Second).Should(Succeed())
}

// applySeedDocument applies the reference document's YAML unchanged through the installed webhooks (the k0s kinds
// it names are stand-in CRDs: no k0s provider runs here), and checks that the installed guard refuses its pooled
// example's control plane without the endpoint.
func applySeedDocument(t *testing.T, a *testenv.APIServer) {
	t.Helper()
	g := NewWithT(t)
	out, err := mgmt.Kubectl(t, a, "", "apply", "-f", filepath.Join(testenv.RootDir(), "test", "testenv", "testdata", "k0s-crds.yaml"))
	g.Expect(err).NotTo(HaveOccurred(), out)
	blocks := testenv.SeedBlocks(t)
	g.Eventually(func() error {
		out, err = mgmt.Kubectl(t, a, testenv.JoinDocuments(blocks[0], blocks[1], blocks[2]), "apply", "-f", "-")
		return err
	}, time.Minute, time.Second).Should(Succeed(), func() string { return out })
	g.Expect(out).To(MatchRegexp(`remotemachine.infrastructure.cluster.x-k8s.io/remote-test-0 (created|unchanged)`))
	out, err = mgmt.Kubectl(t, a, testenv.JoinDocuments(blocks[3]), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	out, err = mgmt.Kubectl(t, a, strings.Replace(blocks[4], "  controlPlaneEndpoint: # required for K0sControlPlane\n    host: 1.2.3.4\n    port: 6443\n", "", 1),
		"apply", "-n", "default", "-f", "-")
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring("spec.controlPlaneEndpoint"))
	out, err = mgmt.Kubectl(t, a, blocks[4], "apply", "-n", "default", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
}

// bootstrapOnHost claims an sshd host from a pool with a RemoteMachine of a Cluster API Machine and waits until
// CAPR bootstrapped it.
func bootstrapOnHost(t *testing.T, a *testenv.APIServer, ns string, h *sshdtest.Host) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	g.Expect(a.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	g.Expect(a.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "key"},
		Data: map[string][]byte{"value": h.ClientKeyPEM}})).To(Succeed())
	entry := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "host-0",
		Labels: map[string]string{"node.cluster.x-k8s.io/rack": "r1"}}}
	entry.Spec.Pool = "default"
	entry.Spec.Machine.Address, entry.Spec.Machine.Port = h.Address, int32(h.Port)
	entry.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	g.Expect(a.Client.Create(ctx, entry)).To(Succeed())
	g.Expect(a.Client.Create(ctx, &infrav1.RemoteCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c1"}})).To(Succeed())
	cluster := &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c1"}}
	cluster.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteCluster", Name: "c1"}
	g.Expect(a.Client.Create(ctx, cluster)).To(Succeed())
	g.Expect(a.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m0-bootstrap"},
		Data: map[string][]byte{"value": []byte("#!/bin/sh\necho installed > /run/capr-installed\n")}})).To(Succeed())
	machine := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m0"}}
	machine.Spec.ClusterName = "c1"
	machine.Spec.Bootstrap.DataSecretName = ptr.To("m0-bootstrap")
	machine.Spec.InfrastructureRef = clusterv1.ContractVersionedObjectReference{APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteMachine", Name: "m0"}
	g.Expect(a.Client.Create(ctx, machine)).To(Succeed())
	rm := &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m0", Labels: map[string]string{clusterv1.ClusterNameLabel: "c1"}}}
	rm.Spec.Pool = "default"
	g.Expect(a.Client.Create(ctx, rm)).To(Succeed())
	// The claim happened at admission: the stored RemoteMachine holds the host.
	g.Expect(rm.Spec.Address).To(Equal(h.Address))
	g.Expect(rm.Spec.PooledRemoteMachineRef).NotTo(BeNil())

	g.Eventually(func(g Gomega) {
		g.Expect(a.Client.Get(ctx, client.ObjectKeyFromObject(rm), rm)).To(Succeed())
		g.Expect(ptr.Deref(rm.Status.Initialization.Provisioned, false)).To(BeTrue(), "conditions: %v", rm.Status.Conditions)
	}, 2*time.Minute, time.Second).Should(Succeed())
	out, err := h.Exec("cat /run/capr-installed")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(Equal("installed\n"))
	// Cluster API's core manager sees the infrastructure machine provisioned.
	g.Eventually(func(g Gomega) {
		g.Expect(a.Client.Get(ctx, client.ObjectKeyFromObject(machine), machine)).To(Succeed())
		g.Expect(ptr.Deref(machine.Status.Initialization.InfrastructureProvisioned, false)).To(BeTrue())
	}, time.Minute, time.Second).Should(Succeed())
	// The manager's two writes outside CAPR's kinds pass the installed admission policies (manager-secret-writes,
	// manager-machine-writes): the key Secret's move label and the Machine's hardware label.
	g.Eventually(func(g Gomega) {
		key := &corev1.Secret{}
		g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "key"}, key)).To(Succeed())
		g.Expect(key.Labels).To(HaveKey(clusterctlv1.ClusterctlMoveLabel))
		g.Expect(a.Client.Get(ctx, client.ObjectKeyFromObject(machine), machine)).To(Succeed())
		g.Expect(machine.Labels).To(HaveKeyWithValue("node.cluster.x-k8s.io/rack", "r1"))
	}, time.Minute, time.Second).Should(Succeed())
}

// generateEveryFlavor renders each cluster template with `clusterctl generate cluster` from the local repository:
// with its variables set every template renders, and without them clusterctl names the missing ones.
func generateEveryFlavor(t *testing.T, a *testenv.APIServer, config string) {
	g := NewWithT(t)
	for _, flavor := range []string{"", "k0s", "clusterclass"} {
		args := []string{"generate", "cluster", "demo", "--config", config, "--kubeconfig", a.Kubeconfig,
			"--infrastructure", "remote", "--kubernetes-version", "v1.36.3", "--control-plane-machine-count", "3",
			"--worker-machine-count", "2", "--target-namespace", "demo"}
		if flavor != "" {
			args = append(args, "--flavor", flavor)
		}
		out, err := mgmt.RunCmd(t, "", mgmt.ClusterctlEnv(t), mgmt.Tool(t, "clusterctl"), args...)
		g.Expect(err).To(HaveOccurred(), "flavor %q rendered without CONTROL_PLANE_ENDPOINT_HOST:\n%s", flavor, out)
		g.Expect(out).To(ContainSubstring("CONTROL_PLANE_ENDPOINT_HOST"))

		out, err = mgmt.RunCmd(t, "", append(mgmt.ClusterctlEnv(t), "CONTROL_PLANE_ENDPOINT_HOST=10.0.0.10", "WORKER_POOL=rack-b"),
			mgmt.Tool(t, "clusterctl"), args...)
		g.Expect(err).NotTo(HaveOccurred(), "flavor %q:\n%s", flavor, out)
		g.Expect(out).NotTo(ContainSubstring("${"), "flavor %q left a variable unset", flavor)
		g.Expect(out).To(ContainSubstring("host: 10.0.0.10"))
		g.Expect(out).To(ContainSubstring("rack-b"))
		objs := mgmt.ParseObjects(t, out)
		g.Expect(objs).NotTo(BeEmpty())
		for _, o := range objs {
			if o.GetKind() != "ClusterClass" || flavor != "clusterclass" {
				g.Expect(o.GetNamespace()).To(Equal("demo"), "%s %s", o.GetKind(), o.GetName())
			}
		}
		// The objects are valid for the installed schemas and webhooks (a server-side dry run). For the ClusterClass
		// flavor only CAPR's: a dry run creates no ClusterClass for the Cluster to find (it is applied for real in
		// the clusterclass subtest).
		var applied []string
		for _, o := range objs {
			if flavor == "" || o.GroupVersionKind().Group == infrav1.GroupVersion.Group {
				data, err := yaml.Marshal(o.Object)
				g.Expect(err).NotTo(HaveOccurred())
				applied = append(applied, string(data))
			}
		}
		g.Expect(applied).NotTo(BeEmpty())
		_, _ = mgmt.Kubectl(t, a, "", "create", "namespace", "demo")
		out, err = mgmt.Kubectl(t, a, testenv.JoinDocuments(applied...), "apply", "--dry-run=server", "-f", "-")
		g.Expect(err).NotTo(HaveOccurred(), "flavor %q:\n%s", flavor, out)
	}
}
