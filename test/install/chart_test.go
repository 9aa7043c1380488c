//go:build integration

package install

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

const (
	chartPackageName     = "cluster-api-provider-remote"
	chartRelease         = "capr"
	chartNamespace       = "capr-system" // config/default's namespace
	chartProviderLabel   = "cluster.x-k8s.io/provider"
	chartProviderValue   = "infrastructure-remote"
	chartClusterctlLabel = "clusterctl.cluster.x-k8s.io"
	chartInjectCAFrom    = "cert-manager.io/inject-ca-from"
)

// chartHelms are the Helm majors the chart must work with: bin/helm is Helm 4, bin/helm3 Helm 3.
var chartHelms = []string{"helm", "helm3"}

func chartPath() string { return filepath.Join(testenv.RootDir(), "charts", chartPackageName) }

// chartRun runs a binary with Helm's home directories in a temporary directory; it returns stdout, and stderr in the error.
func chartRun(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Dir = testenv.RootDir()
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// chartTemplate renders the chart as release capr in capr-system with the given extra flags.
func chartTemplate(t *testing.T, helm string, flags ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	args := append([]string{"template", chartRelease, chartPath(), "-n", chartNamespace}, flags...)
	out, err := chartRun(t, mgmt.Tool(t, helm), args...)
	if err != nil {
		return nil, err
	}
	return mgmt.ParseObjects(t, out), nil
}

// chartKustomizeObjects builds config/default and substitutes every clusterctl variable by its default, as
// `clusterctl init` does when none is set.
func chartKustomizeObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	out, err := chartRun(t, mgmt.Tool(t, "kustomize"), "build", filepath.Join(testenv.RootDir(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	out = mgmt.ClusterctlVariable.ReplaceAllString(out, "$2")
	if i := strings.Index(out, "${"); i >= 0 {
		t.Fatalf("config/default has a clusterctl variable without a default: %q", out[i:min(len(out), i+60)])
	}
	return mgmt.ParseObjects(t, out)
}

func chartKey(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetKind() + "/" + o.GetName()
	}
	return o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
}

func chartByKey(t *testing.T, objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	t.Helper()
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if _, dup := m[chartKey(o)]; dup {
			t.Fatalf("%s is rendered twice", chartKey(o))
		}
		m[chartKey(o)] = o
	}
	return m
}

func chartSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// chartOnlyLabel tells the labels the chart adds to what config/default renders: Helm's standard labels and the one
// `clusterctl init` adds to every component (not in config/default, clusterctl adds it when it installs).
func chartOnlyLabel(k string) bool {
	return strings.HasPrefix(k, "app.kubernetes.io/") || k == "helm.sh/chart" || k == chartClusterctlLabel
}

// chartNormalize drops what legitimately differs between the chart and config/default from an object (a deep copy).
func chartNormalize(o *unstructured.Unstructured) map[string]interface{} {
	c := o.DeepCopy().Object
	for _, path := range [][]string{{"metadata", "labels"}, {"spec", "template", "metadata", "labels"}} {
		labels, found, _ := unstructured.NestedStringMap(c, path...)
		if !found {
			continue
		}
		for k := range labels {
			if chartOnlyLabel(k) {
				delete(labels, k)
			}
		}
		if len(labels) == 0 {
			unstructured.RemoveNestedField(c, path...)
		} else {
			_ = unstructured.SetNestedStringMap(c, labels, path...)
		}
	}
	// CEL ignores whitespace, and YAML folding (kustomize re-serializes `>-` scalars) changes it: compare the CEL
	// expressions and messages (of the webhooks' matchConditions, of admission policies) with every run of
	// whitespace made one space.
	chartFoldSpaces(c)
	return c
}

// chartFoldSpaces makes every run of whitespace one space in the expression and message strings of v, at any depth.
func chartFoldSpaces(v interface{}) {
	switch x := v.(type) {
	case map[string]interface{}:
		for k, e := range x {
			if s, ok := e.(string); ok && (k == "expression" || k == "message") {
				x[k] = strings.Join(strings.Fields(s), " ")
				continue
			}
			chartFoldSpaces(e)
		}
	case []interface{}:
		for _, e := range x {
			chartFoldSpaces(e)
		}
	}
}

// chartDiff returns every difference between want (config/default) and got (the chart), one line per field path.
func chartDiff(path string, want, got interface{}) []string {
	switch w := want.(type) {
	case map[string]interface{}:
		g, ok := got.(map[string]interface{})
		if !ok {
			return []string{fmt.Sprintf("%s: kustomize %s, chart %s", path, chartShow(want), chartShow(got))}
		}
		keys := map[string]bool{}
		for k := range w {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		var out []string
		for _, k := range chartSortedKeys(keys) {
			wv, inW := w[k]
			gv, inG := g[k]
			switch {
			case !inG:
				out = append(out, fmt.Sprintf("%s.%s: missing from the chart (kustomize: %s)", path, k, chartShow(wv)))
			case !inW:
				out = append(out, fmt.Sprintf("%s.%s: only in the chart (%s)", path, k, chartShow(gv)))
			default:
				out = append(out, chartDiff(path+"."+k, wv, gv)...)
			}
		}
		return out
	case []interface{}:
		g, ok := got.([]interface{})
		if !ok {
			return []string{fmt.Sprintf("%s: kustomize %s, chart %s", path, chartShow(want), chartShow(got))}
		}
		var out []string
		if len(w) != len(g) {
			out = append(out, fmt.Sprintf("%s: %d items in kustomize, %d in the chart: kustomize %s, chart %s", path, len(w), len(g), chartShow(w), chartShow(g)))
		}
		for i := 0; i < min(len(w), len(g)); i++ {
			out = append(out, chartDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return out
	default:
		if !reflect.DeepEqual(want, got) {
			return []string{fmt.Sprintf("%s: kustomize %s, chart %s", path, chartShow(want), chartShow(got))}
		}
		return nil
	}
}

func chartShow(v interface{}) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	s := strings.TrimSpace(b.String())
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// TestChartLint lints the chart with Helm 4 and Helm 3, with cert-manager and with a given certificate.
func TestChartLint(t *testing.T) {
	caBundle := chartTestCABundle(t)
	for _, helm := range chartHelms {
		for name, flags := range map[string][]string{
			"defaults":       nil,
			"own-cert":       {"--set", "certManager.enabled=false", "--set", "webhook.certSecretName=capr-webhook-tls", "--set-string", "webhook.caBundle=" + caBundle},
			"watchNamespace": {"--set", "watchNamespace=foo"},
		} {
			t.Run(helm+"/"+name, func(t *testing.T) {
				g := NewWithT(t)
				out, err := chartRun(t, mgmt.Tool(t, helm), append([]string{"lint", "--strict", chartPath()}, flags...)...)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(out).To(ContainSubstring("0 chart(s) failed"))
			})
		}
	}
}

// TestChartCRDsAreCopies checks that the chart's crds/ are byte-identical copies of config/crd/bases.
func TestChartCRDsAreCopies(t *testing.T) {
	g := NewWithT(t)
	bases := filepath.Join(testenv.RootDir(), "config", "crd", "bases")
	crds := filepath.Join(chartPath(), "crds")
	names := func(dir string) []string {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		g.Expect(err).NotTo(HaveOccurred())
		var out []string
		for _, f := range files {
			out = append(out, filepath.Base(f))
		}
		return out
	}
	hint := "copy them: cp config/crd/bases/*.yaml charts/" + chartPackageName + "/crds/"
	g.Expect(names(crds)).To(Equal(names(bases)), "the chart's crds/ and config/crd/bases hold different files: "+hint)
	g.Expect(names(bases)).NotTo(BeEmpty())
	for _, name := range names(bases) {
		want, err := os.ReadFile(filepath.Join(bases, name))
		g.Expect(err).NotTo(HaveOccurred())
		got, err := os.ReadFile(filepath.Join(crds, name))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(bytes.Equal(got, want)).To(BeTrue(), "crds/%s differs from config/crd/bases/%s: %s", name, name, hint)
	}
}

// TestChartMatchesKustomize renders the chart with its defaults and checks it against config/default with every
// clusterctl variable at its default: the same objects (but the Namespace, which `helm install --create-namespace`
// creates) and, in each, the same fields, apart from the labels the chart adds.
func TestChartMatchesKustomize(t *testing.T) {
	want := chartByKey(t, chartKustomizeObjects(t))
	for _, helm := range chartHelms {
		t.Run(helm, func(t *testing.T) {
			g := NewWithT(t)
			objs, err := chartTemplate(t, helm, "--include-crds")
			g.Expect(err).NotTo(HaveOccurred())
			got := chartByKey(t, objs)

			var problems []string
			for _, k := range chartSortedKeys(want) {
				w := want[k]
				if w.GetLabels()[chartProviderLabel] != chartProviderValue {
					problems = append(problems, fmt.Sprintf("%s: config/default does not label it %s=%s", k, chartProviderLabel, chartProviderValue))
				}
				if w.GetKind() == "Namespace" {
					g.Expect(w.GetName()).To(Equal(chartNamespace))
					if _, found := got[k]; found {
						problems = append(problems, k+": the chart must not render the release namespace (helm --create-namespace does)")
					}
					continue
				}
				if _, found := got[k]; !found {
					problems = append(problems, k+": in config/default, missing from the chart")
				}
			}
			for _, k := range chartSortedKeys(got) {
				if _, found := want[k]; !found {
					problems = append(problems, k+": rendered by the chart, not in config/default")
				}
			}

			var unlabelled []string
			for _, k := range chartSortedKeys(got) {
				o, w := got[k], want[k]
				if w == nil {
					continue
				}
				labels := o.GetLabels()
				if o.GetKind() == "CustomResourceDefinition" {
					// crds/ cannot be templated: the CRDs carry only the labels config/crd/bases gives them. Tolerate
					// exactly the provider label config/default adds (and clusterctl init would) until
					// config/crd/bases carries it.
					if _, found := labels[chartProviderLabel]; !found {
						unlabelled = append(unlabelled, o.GetName())
						w = w.DeepCopy()
						wl := w.GetLabels()
						delete(wl, chartProviderLabel)
						w.SetLabels(wl)
					}
				} else {
					if labels[chartProviderLabel] != chartProviderValue {
						problems = append(problems, fmt.Sprintf("%s: no label %s=%s", k, chartProviderLabel, chartProviderValue))
					}
					if v, found := labels[chartClusterctlLabel]; !found || v != "" {
						problems = append(problems, fmt.Sprintf("%s: no label %s=\"\"", k, chartClusterctlLabel))
					}
				}
				for _, d := range chartDiff("", chartNormalize(w), chartNormalize(o)) {
					problems = append(problems, k+": "+d)
				}
			}
			if len(unlabelled) > 0 {
				t.Logf("tolerated: CRDs without the %s label (Helm installs crds/ verbatim; config/crd/bases should carry it): %s",
					chartProviderLabel, strings.Join(unlabelled, ", "))
			}
			g.Expect(len(problems)).To(BeZero(), "the chart (rendered by %s) differs from config/default:\n%s", helm, strings.Join(problems, "\n"))
		})
	}
}

// TestChartCertificateModes checks the two certificate modes and watchNamespace's narrower Secret access.
func TestChartCertificateModes(t *testing.T) {
	caBundle := chartTestCABundle(t)
	for _, helm := range chartHelms {
		t.Run(helm+"/cert-manager", func(t *testing.T) {
			g := NewWithT(t)
			objs, err := chartTemplate(t, helm)
			g.Expect(err).NotTo(HaveOccurred())
			m := chartByKey(t, objs)
			g.Expect(m).To(HaveKey("Certificate/" + chartNamespace + "/capr-serving-cert"))
			g.Expect(m).To(HaveKey("Issuer/" + chartNamespace + "/capr-selfsigned-issuer"))
			configs := chartWebhookConfigurations(objs)
			g.Expect(configs).To(HaveLen(3))
			for _, c := range configs {
				g.Expect(c.GetAnnotations()).To(HaveKeyWithValue(chartInjectCAFrom, chartNamespace+"/capr-serving-cert"), c.GetName())
				for _, w := range chartWebhooks(g, c) {
					g.Expect(w).NotTo(HaveKeyWithValue("clientConfig", HaveKey("caBundle")), c.GetName())
				}
			}
			g.Expect(chartCertVolumeSecret(g, m)).To(Equal("capr-webhook-service-cert"))
		})

		t.Run(helm+"/own-certificate", func(t *testing.T) {
			g := NewWithT(t)
			objs, err := chartTemplate(t, helm, "--set", "certManager.enabled=false",
				"--set", "webhook.certSecretName=capr-webhook-tls", "--set-string", "webhook.caBundle="+caBundle)
			g.Expect(err).NotTo(HaveOccurred())
			for _, o := range objs {
				g.Expect(o.GetKind()).NotTo(BeElementOf("Certificate", "Issuer"), chartKey(o))
				g.Expect(o.GetAnnotations()).NotTo(HaveKey(chartInjectCAFrom), chartKey(o))
			}
			configs := chartWebhookConfigurations(objs)
			g.Expect(configs).To(HaveLen(3))
			n := 0
			for _, c := range configs {
				for _, w := range chartWebhooks(g, c) {
					ca, _, _ := unstructured.NestedString(w, "clientConfig", "caBundle")
					g.Expect(ca).To(Equal(caBundle), "%s: webhook %v", c.GetName(), w["name"])
					n++
				}
			}
			g.Expect(n).To(Equal(9), "every webhook of the three configurations")
			g.Expect(chartCertVolumeSecret(g, chartByKey(t, objs))).To(Equal("capr-webhook-tls"))
		})

		for name, tc := range map[string]struct {
			flags   []string
			message string
		}{
			"no-secret":     {[]string{"--set", "certManager.enabled=false", "--set-string", "webhook.caBundle=" + caBundle}, "set webhook.certSecretName"},
			"no-ca":         {[]string{"--set", "certManager.enabled=false", "--set", "webhook.certSecretName=capr-webhook-tls"}, "set webhook.caBundle"},
			"nothing-given": {[]string{"--set", "certManager.enabled=false"}, "webhook.certSecretName"},
			"ca-not-base64": {[]string{"--set", "certManager.enabled=false", "--set", "webhook.certSecretName=capr-webhook-tls", "--set-string", "webhook.caBundle=not-a-pem"}, "webhook.caBundle is not the base64 encoding of a PEM certificate"},
		} {
			t.Run(helm+"/fails-"+name, func(t *testing.T) {
				g := NewWithT(t)
				_, err := chartTemplate(t, helm, tc.flags...)
				g.Expect(err).To(MatchError(ContainSubstring(tc.message)))
			})
		}

		t.Run(helm+"/watchNamespace", func(t *testing.T) {
			g := NewWithT(t)
			objs, err := chartTemplate(t, helm, "--set", "watchNamespace=foo")
			g.Expect(err).NotTo(HaveOccurred())
			m := chartByKey(t, objs)
			g.Expect(m).NotTo(HaveKey("ClusterRoleBinding/capr-manager-secrets-rolebinding"))
			g.Expect(m).To(HaveKey("ClusterRoleBinding/capr-manager-rolebinding"))
			rb := m["RoleBinding/foo/capr-manager-secrets-rolebinding"]
			g.Expect(rb).NotTo(BeNil(), "a RoleBinding for the secrets role in namespace foo")
			g.Expect(rb.Object["roleRef"]).To(Equal(map[string]interface{}{
				"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "capr-manager-secrets-role",
			}))
			g.Expect(rb.Object["subjects"]).To(Equal([]interface{}{map[string]interface{}{
				"kind": "ServiceAccount", "name": "capr-manager", "namespace": chartNamespace,
			}}))
			for _, o := range objs {
				if o.GetKind() == "RoleBinding" || o.GetKind() == "ClusterRoleBinding" {
					ref, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
					if ref == "capr-manager-secrets-role" {
						g.Expect(chartKey(o)).To(Equal("RoleBinding/foo/capr-manager-secrets-rolebinding"), "the only binding of the secrets role")
					}
				}
			}
			g.Expect(chartManagerArgs(g, m)).To(ContainElement("--namespace=foo"))
			g.Expect(chartManagerArgs(g, m)).NotTo(ContainElement("--namespace="))
		})
	}
}

// TestChartManagerValues checks values that config/default cannot show: the manager's flags and pod settings.
func TestChartManagerValues(t *testing.T) {
	for _, helm := range chartHelms {
		t.Run(helm, func(t *testing.T) {
			g := NewWithT(t)
			objs, err := chartTemplate(t, helm,
				"--set", "leaderElect=false", "--set", "replicas=1", "--set", "podDisruptionBudget.enabled=false",
				"--set", "image.tag=v9.9.9", "--set", "diagnosticsAddress=:9090", "--set", "bootstrapConcurrency=25",
				"--set", "logLevel=4", "--set", "syncPeriod=1h", "--set", "extraArgs={--tls-min-version=VersionTLS13}",
				"--set", "imagePullSecrets[0].name=regcred", "--set", "nodeSelector.disk=ssd")
			g.Expect(err).NotTo(HaveOccurred())
			m := chartByKey(t, objs)
			g.Expect(m).NotTo(HaveKey("PodDisruptionBudget/" + chartNamespace + "/capr-controller-manager"))
			d := m["Deployment/"+chartNamespace+"/capr-controller-manager"]
			g.Expect(d).NotTo(BeNil())
			replicas, _, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "replicas")
			g.Expect(replicas).To(BeNumerically("==", 1))
			args := chartManagerArgs(g, m)
			g.Expect(args).NotTo(ContainElement(HavePrefix("--leader-elect")))
			g.Expect(args).To(ContainElements("--diagnostics-address=:9090", "--bootstrap-concurrency=25", "--v=4", "--sync-period=1h"))
			g.Expect(args[len(args)-1]).To(Equal("--tls-min-version=VersionTLS13"), "extraArgs come last")
			container := chartManagerContainer(g, m)
			g.Expect(container["image"]).To(Equal("ghcr.io/capr-project/cluster-api-provider-remote:v9.9.9"))
			g.Expect(container["ports"]).To(ContainElement(And(
				HaveKeyWithValue("name", "metrics"), HaveKeyWithValue("containerPort", BeNumerically("==", 9090)))))
			g.Expect(d.Object).To(HaveKeyWithValue("spec", HaveKeyWithValue("template", HaveKeyWithValue("spec", And(
				HaveKeyWithValue("imagePullSecrets", []interface{}{map[string]interface{}{"name": "regcred"}}),
				HaveKeyWithValue("nodeSelector", map[string]interface{}{"disk": "ssd"}),
			)))))
		})
	}
}

// TestChartRendersValidObjects decodes every object the chart renders, with every optional value set, strictly into
// its Kubernetes type: a misspelt or misplaced field in a template fails.
func TestChartRendersValidObjects(t *testing.T) {
	scheme := kruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	decoder := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Strict: true})
	caBundle := chartTestCABundle(t)
	for _, helm := range chartHelms {
		for name, flags := range map[string][]string{
			"defaults": {"--include-crds"},
			"everything-set": {
				"--set", "certManager.enabled=false", "--set", "webhook.certSecretName=capr-webhook-tls",
				"--set-string", "webhook.caBundle=" + caBundle, "--set", "watchNamespace=foo",
				"--set", "imagePullSecrets[0].name=regcred", "--set", "nodeSelector.disk=ssd",
				"--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=disk",
				"--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
				"--set", "extraArgs={--tls-min-version=VersionTLS13}", "--set", "podDisruptionBudget.minAvailable=2",
			},
		} {
			t.Run(helm+"/"+name, func(t *testing.T) {
				g := NewWithT(t)
				objs, err := chartTemplate(t, helm, flags...)
				g.Expect(err).NotTo(HaveOccurred())
				typed := 0
				for _, o := range objs {
					if !scheme.Recognizes(o.GroupVersionKind()) {
						g.Expect(o.GetAPIVersion()).To(Equal("cert-manager.io/v1"), "%s: a kind this test cannot check", chartKey(o))
						continue
					}
					data, err := json.Marshal(o.Object)
					g.Expect(err).NotTo(HaveOccurred())
					_, _, err = decoder.Decode(data, nil, nil)
					g.Expect(err).NotTo(HaveOccurred(), chartKey(o))
					typed++
				}
				g.Expect(typed).To(BeNumerically(">=", 12))
			})
		}
	}
}

func chartWebhookConfigurations(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "MutatingWebhookConfiguration" || o.GetKind() == "ValidatingWebhookConfiguration" {
			out = append(out, o)
		}
	}
	return out
}

func chartWebhooks(g Gomega, c *unstructured.Unstructured) []map[string]interface{} {
	list, found, err := unstructured.NestedSlice(c.Object, "webhooks")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(found).To(BeTrue(), c.GetName())
	var out []map[string]interface{}
	for _, w := range list {
		out = append(out, w.(map[string]interface{}))
	}
	return out
}

func chartManagerContainer(g Gomega, m map[string]*unstructured.Unstructured) map[string]interface{} {
	d := m["Deployment/"+chartNamespace+"/capr-controller-manager"]
	g.ExpectWithOffset(1, d).NotTo(BeNil(), "the manager Deployment")
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	g.ExpectWithOffset(1, containers).To(HaveLen(1))
	return containers[0].(map[string]interface{})
}

func chartManagerArgs(g Gomega, m map[string]*unstructured.Unstructured) []string {
	args, _, _ := unstructured.NestedStringSlice(chartManagerContainer(g, m), "args")
	return args
}

// chartCertVolumeSecret returns the Secret the manager's webhook certificate volume mounts.
func chartCertVolumeSecret(g Gomega, m map[string]*unstructured.Unstructured) string {
	d := m["Deployment/"+chartNamespace+"/capr-controller-manager"]
	g.ExpectWithOffset(1, d).NotTo(BeNil(), "the manager Deployment")
	volumes, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
	for _, v := range volumes {
		if v.(map[string]interface{})["name"] == "cert" {
			name, _, _ := unstructured.NestedString(v.(map[string]interface{}), "secret", "secretName")
			return name
		}
	}
	g.ExpectWithOffset(1, volumes).To(ContainElement(HaveKeyWithValue("name", "cert")))
	return ""
}

// chartTestCABundle returns the base64-encoded PEM of a fresh self-signed CA certificate.
func chartTestCABundle(t *testing.T) string {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "capr-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
