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
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/sshrunner/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

const (
	// releaseVersion is the version the release files are published under in the local repository.
	releaseVersion = "v0.1.0"
	// capiVersion is the Cluster API release whose own components clusterctl installs beside CAPR.
	capiVersion = "v1.14.2"
)

var schemaCRD = apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition")

// clusterctlEnv keeps clusterctl off the network and out of the user's home.
func clusterctlEnv(t *testing.T) []string {
	home := t.TempDir()
	return []string{"CLUSTERCTL_DISABLE_VERSIONCHECK=true", "HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}
}

// releaseFiles runs `make release-manifests` into a temporary directory and returns it.
func releaseFiles(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	if log, err := runCmd(t, "", nil, "make", "-s", "release-manifests", "RELEASE_DIR="+out); err != nil {
		t.Fatalf("make release-manifests: %v\n%s", err, log)
	}
	for _, f := range []string{"infrastructure-components.yaml", "metadata.yaml", "cluster-template.yaml",
		"cluster-template-k0s.yaml", "cluster-template-clusterclass.yaml", "clusterclass-remote.yaml"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("make release-manifests did not write %s", f)
		}
	}
	return out
}

// localRepository lays out a clusterctl local repository: CAPR's release files, and Cluster API's core, kubeadm
// bootstrap and kubeadm control-plane components built with kustomize from Cluster API's module, each with its
// metadata.yaml. It returns the path of a clusterctl configuration file naming them.
func localRepository(t *testing.T, release string) string {
	t.Helper()
	repo := t.TempDir()
	capiDir, err := testenv.ModuleDir("sigs.k8s.io/cluster-api")
	if err != nil {
		t.Fatal(err)
	}
	type provider struct{ name, kind, label, version, file, source string }
	providers := []provider{
		{"cluster-api", "CoreProvider", "cluster-api", capiVersion, "core-components.yaml", filepath.Join(capiDir, "core", "config", "default")},
		{"kubeadm", "BootstrapProvider", "bootstrap-kubeadm", capiVersion, "bootstrap-components.yaml", filepath.Join(capiDir, "bootstrap", "kubeadm", "config", "default")},
		{"kubeadm", "ControlPlaneProvider", "control-plane-kubeadm", capiVersion, "control-plane-components.yaml", filepath.Join(capiDir, "controlplane", "kubeadm", "config", "default")},
		{"remote", "InfrastructureProvider", "infrastructure-remote", releaseVersion, "infrastructure-components.yaml", ""},
	}
	config := "providers:\n"
	for _, p := range providers {
		dir := filepath.Join(repo, p.label, p.version)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if p.source == "" {
			entries, err := os.ReadDir(release)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				copyFile(t, filepath.Join(release, e.Name()), filepath.Join(dir, e.Name()))
			}
		} else {
			components, err := runCmd(t, "", nil, tool(t, "kustomize"), "build", p.source)
			if err != nil {
				t.Fatalf("kustomize build %s: %v\n%s", p.source, err, components)
			}
			if err := os.WriteFile(filepath.Join(dir, p.file), []byte(components), 0o644); err != nil {
				t.Fatal(err)
			}
			copyFile(t, filepath.Join(capiDir, "metadata.yaml"), filepath.Join(dir, "metadata.yaml"))
		}
		config += fmt.Sprintf("- name: %s\n  type: %s\n  url: %s\n", p.name, p.kind, filepath.Join(dir, p.file))
	}
	path := filepath.Join(repo, "clusterctl.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

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
	manager := buildManager(t)
	a := startAPIServer(t)
	startCertManager(t, a)

	release := releaseFiles(t)
	config := localRepository(t, release)
	// With Cluster API's topology feature on, for the ClusterClass flavor.
	out, err := runCmd(t, "", append(clusterctlEnv(t), "CLUSTER_TOPOLOGY=true"), tool(t, "clusterctl"), "init", "--config", config,
		"--kubeconfig", a.Kubeconfig, "--infrastructure", "remote")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("Skipping installing cert-manager as it is already installed"))
	g.Expect(out).To(ContainSubstring(`Installing provider="infrastructure-remote" version="` + releaseVersion + `" targetNamespace="capr-system"`))

	// Every object of the release is there, labelled as clusterctl labels the providers it installs.
	components, err := os.ReadFile(filepath.Join(release, "infrastructure-components.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	objs := chartParseObjects(t, chartClusterctlVariable.ReplaceAllString(string(components), "$2"))
	expectInstalled(t, a, objs)
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(schemaCRD)
	g.Expect(a.Client.Get(ctx, client.ObjectKey{Name: "pooledremotemachines.infrastructure.cluster.x-k8s.io"}, crd)).To(Succeed())
	g.Expect(crd.Labels).To(HaveKeyWithValue("cluster.x-k8s.io/provider", "infrastructure-remote"))
	g.Expect(crd.Labels).To(HaveKey("clusterctl.cluster.x-k8s.io"))

	// cert-manager issued the serving certificates and injected their CA.
	waitCABundles(t, a, map[string][]string{
		"MutatingWebhookConfiguration":   {"capr-mutating-webhook-configuration", "capi-mutating-webhook-configuration"},
		"ValidatingWebhookConfiguration": {"capr-validating-webhook-configuration", "capr-controlplane-endpoint-guard", "capi-validating-webhook-configuration"},
	})

	// Cluster API's core manager and CAPR's manager, as installed.
	capiRedirect := redirectWebhookService(t, a, "capi-system", "capi-webhook-service")
	caprRedirect := redirectWebhookService(t, a, "capr-system", "capr-webhook-service")
	// Cluster API's core manager offers no flag for its leader-election namespace, which only a Pod can tell it.
	capi := runAsInstalled(t, a, "capi-system", "capi-controller-manager", tool(t, "capi-manager"), "--leader-elect=false")
	capiRedirect.target.Store(&capi.webhookAddr)
	// Cluster API's kubeadm bootstrap and control-plane managers, as installed (their webhooks validate the
	// KubeadmControlPlane and KubeadmConfig objects the cluster templates hold).
	for _, m := range []struct{ namespace, deployment, binary string }{
		{"capi-kubeadm-bootstrap-system", "capi-kubeadm-bootstrap-controller-manager", "capi-kubeadm-bootstrap-manager"},
		{"capi-kubeadm-control-plane-system", "capi-kubeadm-control-plane-controller-manager", "capi-kubeadm-control-plane-manager"},
	} {
		service := strings.TrimSuffix(m.deployment, "controller-manager") + "webhook-service"
		redirect := redirectWebhookService(t, a, m.namespace, service)
		installed := runAsInstalled(t, a, m.namespace, m.deployment, tool(t, m.binary), "--leader-elect=false")
		redirect.target.Store(&installed.webhookAddr)
	}
	// Outside a Pod the manager cannot read its namespace from the service-account mount: it is given as a flag.
	capr := runAsInstalled(t, a, "capr-system", "capr-controller-manager", manager, "--leader-elect-namespace=capr-system")
	caprRedirect.target.Store(&capr.webhookAddr)
	g.Expect(capr.deployment.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--leader-elect"))

	// The reference document applies unchanged through the installed webhooks (the k0s kinds it names are stand-in
	// CRDs: no k0s provider runs here).
	out, err = kubectl(t, a, "", "apply", "-f", filepath.Join(testenv.RootDir(), "test", "testenv", "testdata", "k0s-crds.yaml"))
	g.Expect(err).NotTo(HaveOccurred(), out)
	blocks := testenv.SeedBlocks(t)
	g.Eventually(func() error {
		out, err = kubectl(t, a, testenv.JoinDocuments(blocks[0], blocks[1], blocks[2]), "apply", "-f", "-")
		return err
	}, time.Minute, time.Second).Should(Succeed(), func() string { return out })
	g.Expect(out).To(ContainSubstring("remotemachine.infrastructure.cluster.x-k8s.io/remote-test-0 created"))
	out, err = kubectl(t, a, testenv.JoinDocuments(blocks[3]), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	// The pooled example's control plane without the endpoint is refused by the installed guard.
	out, err = kubectl(t, a, strings.Replace(blocks[4], "  controlPlaneEndpoint: # required for K0sControlPlane\n    host: 1.2.3.4\n    port: 6443\n", "", 1),
		"apply", "-n", "default", "-f", "-")
	g.Expect(err).To(HaveOccurred())
	g.Expect(out).To(ContainSubstring("spec.controlPlaneEndpoint"))
	out, err = kubectl(t, a, blocks[4], "apply", "-n", "default", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)

	// A pool claim, and a bootstrap on a real sshd host.
	h := sshdtest.Start(t)
	ns := "installed"
	bootstrapOnHost(t, a, ns, h)

	// The leader holds the Lease; nothing was refused by the installed RBAC.
	lease := &coordinationv1.Lease{}
	g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: "capr-system", Name: "controller-leader-election-capr"}, lease)).To(Succeed())
	g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).NotTo(BeEmpty())
	noForbidden(g, capr.logs.String())

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
		entry.Spec.Machine.Address, entry.Spec.Machine.Port = "127.0.0.1", int32(freePort(t))
		entry.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
		g.Expect(a.Client.Create(ctx, entry)).To(Succeed())
	}
	rendered, err := runCmd(t, "", append(clusterctlEnv(t), "CONTROL_PLANE_ENDPOINT_HOST=127.0.0.1",
		fmt.Sprintf("CONTROL_PLANE_ENDPOINT_PORT=%d", freePort(t)), "CONTROL_PLANE_POOL=cp-pool", "WORKER_POOL=worker-pool"),
		tool(t, "clusterctl"), "generate", "cluster", "demo", "--config", config, "--kubeconfig", a.Kubeconfig,
		"--infrastructure", "remote", "--flavor", "clusterclass", "--kubernetes-version", "v1.36.3",
		"--control-plane-machine-count", "1", "--worker-machine-count", "0", "--target-namespace", ns)
	g.Expect(err).NotTo(HaveOccurred(), rendered)
	out, err := kubectl(t, a, rendered, "apply", "-f", "-")
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

// bootstrapOnHost claims an sshd host from a pool with a RemoteMachine of a Cluster API Machine and waits until
// CAPR bootstrapped it.
func bootstrapOnHost(t *testing.T, a *testenv.APIServer, ns string, h *sshdtest.Host) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	g.Expect(a.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	g.Expect(a.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "key"},
		Data: map[string][]byte{"value": h.ClientKeyPEM}})).To(Succeed())
	entry := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "host-0"}}
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
		out, err := runCmd(t, "", clusterctlEnv(t), tool(t, "clusterctl"), args...)
		g.Expect(err).To(HaveOccurred(), "flavor %q rendered without CONTROL_PLANE_ENDPOINT_HOST:\n%s", flavor, out)
		g.Expect(out).To(ContainSubstring("CONTROL_PLANE_ENDPOINT_HOST"))

		out, err = runCmd(t, "", append(clusterctlEnv(t), "CONTROL_PLANE_ENDPOINT_HOST=10.0.0.10", "WORKER_POOL=rack-b"),
			tool(t, "clusterctl"), args...)
		g.Expect(err).NotTo(HaveOccurred(), "flavor %q:\n%s", flavor, out)
		g.Expect(out).NotTo(ContainSubstring("${"), "flavor %q left a variable unset", flavor)
		g.Expect(out).To(ContainSubstring("host: 10.0.0.10"))
		g.Expect(out).To(ContainSubstring("rack-b"))
		objs := chartParseObjects(t, out)
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
		_, _ = kubectl(t, a, "", "create", "namespace", "demo")
		out, err = kubectl(t, a, testenv.JoinDocuments(applied...), "apply", "--dry-run=server", "-f", "-")
		g.Expect(err).NotTo(HaveOccurred(), "flavor %q:\n%s", flavor, out)
	}
}
