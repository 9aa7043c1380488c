//go:build integration

package install

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

const (
	operatorNamespace  = "capi-operator-system"
	operatorDeployment = "capi-operator-controller-manager"
)

// The YAML a user of cluster-api-operator applies to install Cluster API's core and CAPR from ConfigMaps holding
// their release files (docs/install.md: "With cluster-api-operator").
const (
	coreProviderYAML = `apiVersion: operator.cluster.x-k8s.io/v1alpha2
kind: CoreProvider
metadata:
  name: cluster-api
  namespace: capi-system
spec:
  version: v1.14.2
  fetchConfig:
    selector:
      matchLabels:
        provider-components: cluster-api
`
	caprProviderYAML = `apiVersion: v1
kind: Secret
metadata:
  name: capr-variables
  namespace: capr-system
stringData:
  CAPR_SYNC_PERIOD: 5m
  CAPR_REPLICAS: "1"
---
apiVersion: operator.cluster.x-k8s.io/v1alpha2
kind: InfrastructureProvider
metadata:
  name: remote
  namespace: capr-system
spec:
  version: v0.1.0
  configSecret:
    name: capr-variables
  fetchConfig:
    selector:
      matchLabels:
        provider-components: remote
`
)

// TestOperator installs CAPR the way a user of cluster-api-operator does in a site without internet access: the
// operator (cluster-api-operator's manager, built from its module, installed from its own config/default and run
// as installed) reads each provider's release files from ConfigMaps in the provider's namespace
// (fetchConfig.selector, the operator's documented air-gapped way). The operator installs nothing but the core
// provider until a CoreProvider is Ready, so Cluster API's core is installed through it too, from the
// core-components.yaml that mgmt.LocalRepository builds from Cluster API v1.14.2's module (gzipped, with the
// operator's compressed annotation: it is over a ConfigMap's 1 MiB). Then an InfrastructureProvider installs CAPR
// from what `make release-manifests` wrote, with clusterctl variables from its configSecret; CAPR's manager runs as
// installed and its webhooks answer through the installed Service and cert-manager certificate.
//
// There is no kubelet here: once an installed manager answers /readyz, the test reports its Deployment's one
// replica available, as the Deployment controller would for a running Pod; the operator's health check turns that
// into the provider's Ready condition.
func TestOperator(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	manager := mgmt.BuildManager(t)
	a := mgmt.StartAPIServer(t)
	mgmt.StartCertManager(t, a)
	release := mgmt.ReleaseFiles(t)
	repo := filepath.Dir(mgmt.LocalRepository(t, release))

	// The operator, from its own release manifests: CRDs, RBAC, Deployment, webhooks and their cert-manager
	// Certificate.
	dir, err := mgmt.RunCmd(t, "", nil, "go", "-C", filepath.Join(testenv.RootDir(), "hack", "tools", "operator"),
		"list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/cluster-api-operator")
	g.Expect(err).NotTo(HaveOccurred(), dir)
	components, err := mgmt.RunCmd(t, "", nil, mgmt.Tool(t, "kustomize"), "build", filepath.Join(strings.TrimSpace(dir), "config", "default"))
	g.Expect(err).NotTo(HaveOccurred(), components)
	out, err := mgmt.Kubectl(t, a, components, "apply", "--server-side", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	mgmt.WaitCABundles(t, a, map[string][]string{
		"MutatingWebhookConfiguration":   {"capi-operator-mutating-webhook-configuration"},
		"ValidatingWebhookConfiguration": {"capi-operator-validating-webhook-configuration"},
	})
	redirect := mgmt.RedirectWebhookService(t, a, operatorNamespace, "capi-operator-webhook-service")
	// Outside a Pod the manager cannot read its namespace for leader election; the profiler would take port 6060 of
	// this shared machine.
	operator := mgmt.RunAsInstalled(t, a, operatorNamespace, operatorDeployment, mgmt.Tool(t, "cluster-api-operator"),
		"--leader-elect=false", "--profiler-address=")
	redirect.SetTargets(operator.WebhookAddr)
	reportAvailable(t, a, operatorNamespace, operatorDeployment)

	// Cluster API's core through a CoreProvider, from a ConfigMap holding its gzipped components and metadata.
	capiFiles := filepath.Join(repo, "cluster-api", mgmt.CAPIVersion)
	gz := filepath.Join(t.TempDir(), "core-components.gz")
	gzipFile(t, filepath.Join(capiFiles, "core-components.yaml"), gz)
	for _, args := range [][]string{
		{"create", "namespace", "capi-system"},
		{"create", "configmap", mgmt.CAPIVersion, "-n", "capi-system", "--from-file=components=" + gz,
			"--from-file=metadata=" + filepath.Join(capiFiles, "metadata.yaml")},
		{"annotate", "configmap", mgmt.CAPIVersion, "-n", "capi-system", "provider.cluster.x-k8s.io/compressed=true"},
		{"label", "configmap", mgmt.CAPIVersion, "-n", "capi-system", "provider-components=cluster-api"},
	} {
		out, err := mgmt.Kubectl(t, a, "", args...)
		g.Expect(err).NotTo(HaveOccurred(), out)
	}
	out, err = mgmt.Kubectl(t, a, coreProviderYAML, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("coreprovider.operator.cluster.x-k8s.io/cluster-api created"))
	t.Logf("kubectl apply -f coreprovider.yaml:\n%s", out)
	waitProviderCondition(t, a, "CoreProvider", "capi-system", "cluster-api", "ProviderInstalled", operator)
	mgmt.WaitCABundles(t, a, map[string][]string{
		"MutatingWebhookConfiguration":   {"capi-mutating-webhook-configuration"},
		"ValidatingWebhookConfiguration": {"capi-validating-webhook-configuration"},
	})
	capiRedirect := mgmt.RedirectWebhookService(t, a, "capi-system", "capi-webhook-service")
	capi := mgmt.RunAsInstalled(t, a, "capi-system", "capi-controller-manager", mgmt.Tool(t, "capi-manager"), "--leader-elect=false")
	capiRedirect.SetTargets(capi.WebhookAddr)
	reportAvailable(t, a, "capi-system", "capi-controller-manager")
	waitProviderCondition(t, a, "CoreProvider", "capi-system", "cluster-api", "Ready", operator)

	// CAPR through an InfrastructureProvider, from a ConfigMap holding infrastructure-components.yaml and
	// metadata.yaml as `make release-manifests` wrote them.
	for _, args := range [][]string{
		{"create", "namespace", "capr-system"},
		{"create", "configmap", mgmt.ReleaseVersion, "-n", "capr-system",
			"--from-file=components=" + filepath.Join(release, "infrastructure-components.yaml"),
			"--from-file=metadata=" + filepath.Join(release, "metadata.yaml")},
		{"label", "configmap", mgmt.ReleaseVersion, "-n", "capr-system", "provider-components=remote"},
	} {
		out, err := mgmt.Kubectl(t, a, "", args...)
		g.Expect(err).NotTo(HaveOccurred(), out)
	}
	out, err = mgmt.Kubectl(t, a, caprProviderYAML, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(ContainSubstring("infrastructureprovider.operator.cluster.x-k8s.io/remote created"))
	t.Logf("kubectl apply -f capr-provider.yaml:\n%s", out)
	waitProviderCondition(t, a, "InfrastructureProvider", "capr-system", "remote", "ProviderInstalled", operator)

	// Every object of the release is there, with the configSecret's values for its variables and the defaults for
	// the others, labelled as clusterctl labels the providers it installs.
	data, err := os.ReadFile(filepath.Join(release, "infrastructure-components.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	values := map[string]string{"CAPR_SYNC_PERIOD": "5m", "CAPR_REPLICAS": "1"}
	rendered := mgmt.ClusterctlVariable.ReplaceAllStringFunc(string(data), func(v string) string {
		m := mgmt.ClusterctlVariable.FindStringSubmatch(v)
		if value, ok := values[m[1]]; ok {
			return value
		}
		return m[2]
	})
	objs := mgmt.ParseObjects(t, rendered)
	mgmt.ExpectInstalled(t, a, objs)
	var want *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Deployment" && o.GetName() == "capr-controller-manager" {
			want = o
		}
	}
	g.Expect(want).NotTo(BeNil())
	wantArgs, _, _ := unstructured.NestedSlice(want.Object, "spec", "template", "spec", "containers")
	dep := &appsv1.Deployment{}
	g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: "capr-system", Name: "capr-controller-manager"}, dep)).To(Succeed())
	g.Expect(dep.Labels).To(HaveKeyWithValue("cluster.x-k8s.io/provider", "infrastructure-remote"))
	g.Expect(dep.Spec.Replicas).To(Equal(ptr.To[int32](1)))
	g.Expect(dep.Spec.Template.Spec.Containers).To(HaveLen(1))
	args := dep.Spec.Template.Spec.Containers[0].Args
	g.Expect(args).To(ContainElement("--sync-period=5m"))
	g.Expect(args).To(ContainElement("--diagnostics-address=:8443"))
	g.Expect(toStrings(wantArgs[0].(map[string]any)["args"])).To(Equal(args))
	g.Expect(dep.OwnerReferences).To(ContainElement(HaveField("Kind", "InfrastructureProvider")))

	// CAPR's manager as installed, its webhooks reached through the installed Service and certificate.
	mgmt.WaitCABundles(t, a, map[string][]string{
		"MutatingWebhookConfiguration":   {"capr-mutating-webhook-configuration"},
		"ValidatingWebhookConfiguration": {"capr-validating-webhook-configuration", "capr-controlplane-endpoint-guard"},
	})
	capr := mgmt.RunCAPR(t, a, "capr-system", manager)
	reportAvailable(t, a, "capr-system", "capr-controller-manager")
	waitProviderCondition(t, a, "InfrastructureProvider", "capr-system", "remote", "Ready", operator)
	provider := providerObject(t, a, "InfrastructureProvider", "capr-system", "remote")
	installed, _, _ := unstructured.NestedString(provider.Object, "status", "installedVersion")
	g.Expect(installed).To(Equal(mgmt.ReleaseVersion))
	out, err = mgmt.Kubectl(t, a, "", "get", "coreprovider,infrastructureprovider", "-A")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(MatchRegexp(`capr-system +infrastructureprovider.operator.cluster.x-k8s.io/remote +v0.1.0 +True`))
	t.Logf("kubectl get coreprovider,infrastructureprovider -A:\n%s", out)
	out, err = mgmt.Kubectl(t, a, "", "get", "deployment", "-n", "capr-system", "capr-controller-manager", "-o", "jsonpath={.spec.template.spec.containers[0].args}")
	g.Expect(err).NotTo(HaveOccurred(), out)
	t.Logf("CAPR's Deployment's args: %s", out)

	// CAPR's webhooks answer: a RemoteMachine with a malformed host key is refused with CAPR's message.
	out, err = mgmt.Kubectl(t, a, `apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachine
metadata:
  name: bad
  namespace: default
spec:
  address: 10.0.0.5
  sshKeyRef:
    name: key
  hostKeys:
  - not-a-key
`, "apply", "-f", "-")
	g.Expect(err).To(HaveOccurred(), out)
	// The message is CAPR's validating webhook's (the CRD's schema has no such rule).
	g.Expect(out).To(ContainSubstring(`The RemoteMachine "bad" is invalid: spec.hostKeys[0]: Invalid value: "not-a-key": must be one public host key in authorized_keys format`))
	t.Logf("kubectl apply of a bad RemoteMachine:\n%s", out)
	mgmt.ExpectLeaderAndNoForbidden(t, a, "capr-system", capr)
	mgmt.NoForbidden(g, operator.Logs.String())
}

// reportAvailable stands in for the kubelet and the Deployment controller: a manager of the Deployment runs as
// installed and answers /readyz, so its one replica is available.
func reportAvailable(t *testing.T, a *testenv.APIServer, namespace, name string) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	g.Eventually(func() error {
		dep := &appsv1.Deployment{}
		if err := a.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, dep); err != nil {
			return err
		}
		if r := ptr.Deref(dep.Spec.Replicas, 1); r != 1 {
			return StopTrying(fmt.Sprintf("%s/%s has %d replicas; one manager runs", namespace, name, r))
		}
		now := metav1.Now()
		dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 1, UpdatedReplicas: 1,
			ReadyReplicas: 1, AvailableReplicas: 1, Conditions: []appsv1.DeploymentCondition{{
				Type: appsv1.DeploymentAvailable, Status: "True", Reason: "MinimumReplicasAvailable",
				Message: "Deployment has minimum availability.", LastUpdateTime: now, LastTransitionTime: now}}}
		return a.Client.Status().Update(ctx, dep)
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}

func providerObject(t *testing.T, a *testenv.APIServer, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("operator.cluster.x-k8s.io/v1alpha2")
	u.SetKind(kind)
	NewWithT(t).Expect(a.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, u)).To(Succeed())
	return u
}

// waitProviderCondition waits until the operator set a condition of a provider True.
func waitProviderCondition(t *testing.T, a *testenv.APIServer, kind, namespace, name, condition string, operator *mgmt.InstalledManager) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("operator.cluster.x-k8s.io/v1alpha2")
		u.SetKind(kind)
		g.Expect(a.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, u)).To(Succeed())
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		var status string
		for _, c := range conds {
			if c.(map[string]any)["type"] == condition {
				status, _ = c.(map[string]any)["status"].(string)
			}
		}
		g.Expect(status).To(Equal("True"), "%s %s/%s conditions: %v", kind, namespace, name, conds)
	}, 3*time.Minute, time.Second).Should(Succeed(), func() string { return tailString(operator.Logs.String(), 8000) })
}

func gzipFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, s := range v.([]any) {
		out = append(out, s.(string))
	}
	return out
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
