//go:build integration

package install

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// policyInstallKinds are the objects of an install the policy test applies: the manager's identity, its RBAC and the
// admission policy (not the Deployment, webhooks or certificates, which need a running manager and cert-manager).
var policyInstallKinds = map[string]bool{
	"Namespace": true, "ServiceAccount": true, "ClusterRole": true, "ClusterRoleBinding": true, "Role": true,
	"RoleBinding": true, "ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
}

// policyInstall is one install path's rendered objects and the user name of its manager's ServiceAccount.
type policyInstall struct {
	name    string
	objs    []*unstructured.Unstructured
	manager string
}

func policySelect(t *testing.T, name string, objs []*unstructured.Unstructured) policyInstall {
	t.Helper()
	in := policyInstall{name: name}
	for _, o := range objs {
		if !policyInstallKinds[o.GetKind()] {
			continue
		}
		in.objs = append(in.objs, o)
		if o.GetKind() == "ServiceAccount" {
			if in.manager != "" {
				t.Fatalf("%s renders two ServiceAccounts", name)
			}
			in.manager = "system:serviceaccount:" + o.GetNamespace() + ":" + o.GetName()
		}
	}
	if in.manager == "" {
		t.Fatalf("%s renders no ServiceAccount", name)
	}
	return in
}

// TestManagerWritePolicies applies the manager-secret-writes and manager-machine-writes ValidatingAdmissionPolicies
// as both install paths render them (config/default built by kustomize, in capr-system; the chart rendered by Helm 4
// as another release in another namespace with another name prefix) to a real kube-apiserver, with the installs' RBAC, and acts as each
// manager's ServiceAccount by impersonation. The attack: a compromised manager uses the RBAC it needs for two labels
// (patch on every Secret and Machine) to rewrite a Secret's data or a Machine's spec, or to delete a Secret. Before
// the policy all of that succeeded; now RBAC still allows it (kubectl auth can-i says yes) but the apiserver denies
// every change but the move label on Secrets and node.cluster.x-k8s.io labels on Machines, for the manager only.
func TestManagerWritePolicies(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const chartNS, chartPrefix = "capr-chart", "chart-"
	kustomized := policySelect(t, "config/default", chartKustomizeObjects(t))
	out, err := chartRun(t, mgmt.Tool(t, "helm"), "template", "other", chartPath(), "-n", chartNS, "--set", "namePrefix="+chartPrefix)
	g.Expect(err).NotTo(HaveOccurred())
	charted := policySelect(t, "chart", mgmt.ParseObjects(t, out))
	g.Expect(kustomized.manager).To(Equal("system:serviceaccount:capr-system:capr-manager"))
	g.Expect(charted.manager).To(Equal("system:serviceaccount:" + chartNS + ":" + chartPrefix + "manager"))

	a := mgmt.StartAPIServer(t)
	// The policy status controller type-checks the installed policies' expressions.
	mgmt.StartProcess(t, "kube-controller-manager (policy status)", mgmt.Tool(t, "kube-controller-manager"), "--kubeconfig="+a.Kubeconfig,
		"--controllers=validatingadmissionpolicy-status-controller", "--leader-elect=false", "--secure-port=0",
		"--use-service-account-credentials=false")
	capiDir, err := testenv.ModuleDir("sigs.k8s.io/cluster-api")
	g.Expect(err).NotTo(HaveOccurred())
	_, err = envtest.InstallCRDs(a.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(capiDir, "core", "config", "crd", "bases", "cluster.x-k8s.io_machines.yaml")}, ErrorIfPathMissing: true,
	})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(a.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: chartNS}})).To(Succeed())
	for _, in := range []policyInstall{kustomized, charted} {
		var stream strings.Builder
		for _, o := range in.objs {
			data, err := yaml.Marshal(o.Object)
			g.Expect(err).NotTo(HaveOccurred())
			stream.WriteString("---\n" + string(data))
		}
		out, err := mgmt.Kubectl(t, a, stream.String(), "apply", "--server-side", "-f", "-")
		g.Expect(err).NotTo(HaveOccurred(), "%s: %s", in.name, out)
	}

	for _, in := range []policyInstall{kustomized, charted} {
		t.Run(in.name, func(t *testing.T) {
			policyChecks(t, a, in.manager)
		})
	}

	// Every installed policy type-checks against its kind's schema without a warning (a misspelt field only warns at
	// install, and then fails every write of the manager).
	for _, name := range []string{"capr-manager-secret-writes", "capr-manager-machine-writes",
		chartPrefix + "manager-secret-writes", chartPrefix + "manager-machine-writes"} {
		g.Eventually(func(g Gomega) {
			p := &unstructured.Unstructured{}
			p.SetAPIVersion("admissionregistration.k8s.io/v1")
			p.SetKind("ValidatingAdmissionPolicy")
			g.Expect(a.Client.Get(ctx, client.ObjectKey{Name: name}, p)).To(Succeed())
			generation, _, _ := unstructured.NestedInt64(p.Object, "status", "observedGeneration")
			g.Expect(generation).To(Equal(p.GetGeneration()), "%s: not type-checked yet", name)
			warnings, _, _ := unstructured.NestedSlice(p.Object, "status", "typeChecking", "expressionWarnings")
			g.Expect(warnings).To(BeEmpty(), name)
		}).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(Succeed())
	}
}

// policyChecks acts as the manager named and as the administrator on a fresh Secret and Machine.
func policyChecks(t *testing.T, a *testenv.APIServer, manager string) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := "policy-" + strings.ReplaceAll(strings.TrimPrefix(manager, "system:serviceaccount:"), ":", "-")
	g.Expect(a.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())

	// RBAC is unchanged: the manager may still patch every Secret and Machine.
	for _, resource := range []string{"secrets", "machines.cluster.x-k8s.io"} {
		out, err := mgmt.Kubectl(t, a, "", "auth", "can-i", "patch", resource, "-n", ns, "--as="+manager)
		g.Expect(err).NotTo(HaveOccurred(), out)
		g.Expect(strings.TrimSpace(out)).To(Equal("yes"), resource)
	}

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ssh-key", Labels: map[string]string{"team": "a"}},
		Data: map[string][]byte{"value": []byte("key")}}
	g.Expect(a.Client.Create(ctx, secret)).To(Succeed())
	machine := &clusterv1.Machine{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m0", Labels: map[string]string{clusterv1.ClusterNameLabel: "c"}},
		Spec: clusterv1.MachineSpec{
			ClusterName: "c",
			Bootstrap:   clusterv1.Bootstrap{DataSecretName: ptr.To("bootstrap")},
			InfrastructureRef: clusterv1.ContractVersionedObjectReference{
				APIGroup: infrav1.GroupVersion.Group, Kind: "RemoteMachine", Name: "m0",
			},
		},
	}
	g.Expect(a.Client.Create(ctx, machine)).To(Succeed())

	cfg := rest.CopyConfig(a.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: manager}
	mc, err := client.New(cfg, client.Options{Scheme: a.Client.Scheme()})
	g.Expect(err).NotTo(HaveOccurred())
	merge := func(c client.Client, obj client.Object, patch string) error {
		return c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch)))
	}
	secretOnly := "may change only the clusterctl.cluster.x-k8s.io/move label of a Secret"
	machineOnly := "may change only the node.cluster.x-k8s.io labels of a Machine"

	// The policies take effect once the apiserver has loaded them: probe with dry runs, which admission sees too.
	g.Eventually(func() error {
		return mc.Patch(ctx, secret.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"data":{"value":"c3RvbGVu"}}`)), client.DryRunAll)
	}).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(MatchError(ContainSubstring(secretOnly)))
	g.Eventually(func() error {
		return mc.Patch(ctx, machine.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"providerID":"remote://elsewhere"}}`)), client.DryRunAll)
	}).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(MatchError(ContainSubstring(machineOnly)))

	// Secrets: exactly what controllers/move.go sends succeeds; every other change is denied.
	move := `{"metadata":{"labels":{"` + clusterctlv1.ClusterctlMoveLabel + `":""}}}`
	g.Expect(merge(mc, secret.DeepCopy(), move)).To(Succeed())
	for name, patch := range map[string]string{
		"data":         `{"data":{"value":"c3RvbGVu"}}`,
		"stringData":   `{"stringData":{"value":"stolen"}}`,
		"new data key": `{"data":{"other":"c3RvbGVu"}}`,
		"other label":  `{"metadata":{"labels":{"team":"b"}}}`,
		"added label":  `{"metadata":{"labels":{"node.cluster.x-k8s.io/rack":"r1"}}}`,
		"annotation":   `{"metadata":{"annotations":{"a":"b"}}}`,
		"finalizer":    `{"metadata":{"finalizers":["example.com/keep"]}}`,
	} {
		g.Expect(merge(mc, secret.DeepCopy(), patch)).To(MatchError(ContainSubstring(secretOnly)), "Secret %s", name)
	}
	// The installed RBAC grants neither create nor delete; the policy denies them even where RBAC is widened (a
	// Role granting them in this namespace).
	created := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "new"}, Data: map[string][]byte{"k": []byte("v")}}
	g.Expect(mc.Create(ctx, created.DeepCopy())).To(Satisfy(apierrors.IsForbidden))
	widen(t, a, ns, manager)
	g.Eventually(func() error { return mc.Create(ctx, created.DeepCopy()) }).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).
		Should(MatchError(ContainSubstring("may not create or delete")))
	g.Expect(mc.Delete(ctx, secret.DeepCopy())).To(MatchError(ContainSubstring("may not create or delete")))
	got := &corev1.Secret{}
	g.Expect(a.Client.Get(ctx, client.ObjectKeyFromObject(secret), got)).To(Succeed())
	g.Expect(got.Data).To(Equal(map[string][]byte{"value": []byte("key")}))
	g.Expect(got.Labels).To(Equal(map[string]string{"team": "a", clusterctlv1.ClusterctlMoveLabel: ""}))
	g.Expect(got.Annotations).To(BeEmpty())

	// Machines: the server-side apply controllers/hardwarelabels.go sends succeeds, adding and then removing
	// hardware labels; a change to anything else is denied.
	apply := func(labels map[string]string) error {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(clusterv1.GroupVersion.WithKind("Machine"))
		u.SetNamespace(ns)
		u.SetName(machine.Name)
		u.SetUID(machine.UID)
		if len(labels) > 0 {
			u.SetLabels(labels)
		}
		return mc.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(infrav1.HardwareLabelsFieldManager), client.ForceOwnership)
	}
	hardware := map[string]string{"node.cluster.x-k8s.io/rack": "r1", "gpu.node.cluster.x-k8s.io/model": "a100"}
	g.Expect(apply(hardware)).To(Succeed())
	gotMachine := &clusterv1.Machine{}
	g.Expect(a.Client.Get(ctx, client.ObjectKeyFromObject(machine), gotMachine)).To(Succeed())
	g.Expect(gotMachine.Labels).To(Equal(map[string]string{clusterv1.ClusterNameLabel: "c",
		"node.cluster.x-k8s.io/rack": "r1", "gpu.node.cluster.x-k8s.io/model": "a100"}))
	g.Expect(apply(map[string]string{"node.cluster.x-k8s.io/rack": "r2"})).To(Succeed())
	g.Expect(a.Client.Get(ctx, client.ObjectKeyFromObject(machine), gotMachine)).To(Succeed())
	g.Expect(gotMachine.Labels).To(Equal(map[string]string{clusterv1.ClusterNameLabel: "c", "node.cluster.x-k8s.io/rack": "r2"}))
	for name, patch := range map[string]string{
		"spec":                  `{"spec":{"providerID":"remote://elsewhere"}}`,
		"other label":           `{"metadata":{"labels":{"team":"b"}}}`,
		"cluster label":         `{"metadata":{"labels":{"` + clusterv1.ClusterNameLabel + `":"other"}}}`,
		"look-alike domain":     `{"metadata":{"labels":{"evilnode.cluster.x-k8s.io/rack":"r1"}}}`,
		"domain as a name part": `{"metadata":{"labels":{"example.com/node.cluster.x-k8s.io":"r1"}}}`,
		"annotation":            `{"metadata":{"annotations":{"a":"b"}}}`,
		"finalizer":             `{"metadata":{"finalizers":["example.com/keep"]}}`,
	} {
		g.Expect(merge(mc, machine.DeepCopy(), patch)).To(MatchError(ContainSubstring(machineOnly)), "Machine %s", name)
	}
	g.Expect(a.Client.Get(ctx, client.ObjectKeyFromObject(machine), gotMachine)).To(Succeed())
	g.Expect(gotMachine.Spec.ProviderID).To(BeEmpty())
	g.Expect(mc.Delete(ctx, machine.DeepCopy())).To(MatchError(ContainSubstring("may not create or delete")))
	other := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m1"}, Spec: *machine.Spec.DeepCopy()}
	g.Expect(mc.Create(ctx, other)).To(MatchError(ContainSubstring("may not create or delete")))

	// Another user is not affected.
	g.Expect(merge(a.Client, secret.DeepCopy(), `{"data":{"value":"cm90YXRlZA=="},"metadata":{"labels":{"team":"b"}}}`)).To(Succeed())
	g.Expect(merge(a.Client, machine.DeepCopy(), `{"spec":{"providerID":"remote://m0"},"metadata":{"labels":{"team":"b"}}}`)).To(Succeed())
	g.Expect(a.Client.Delete(ctx, secret.DeepCopy())).To(Succeed())
}

// widen grants the manager create and delete on Secrets and Machines in one namespace, as a careless RBAC change would.
func widen(t *testing.T, a *testenv.APIServer, ns, manager string) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "widened"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create", "delete"}},
		{APIGroups: []string{clusterv1.GroupVersion.Group}, Resources: []string{"machines"}, Verbs: []string{"create", "delete"}},
	}}
	g.Expect(a.Client.Create(ctx, role)).To(Succeed())
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "widened"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: manager}}}
	g.Expect(a.Client.Create(ctx, binding)).To(Succeed())
}
