package main

// This test documents and proves the program: it starts a real kube-apiserver
// and etcd (controller-runtime envtest, binaries from the repository's bin/),
// runs the cert-manager binary with --install-crds, issues a CA and a serving
// certificate through SelfSigned and CA issuers (and one through a SelfSigned
// ClusterIssuer), and checks that the CA injector fills the caBundle of a
// ValidatingWebhookConfiguration, a MutatingWebhookConfiguration, a CRD's
// conversion webhook and an APIService; then that SIGTERM stops it with exit 0.
//
//	cd hack/tools/cert-manager && go test -v -count=1 .
//
// KUBEBUILDER_ASSETS overrides the directory of kube-apiserver and etcd
// (default ../../../bin); CERT_MANAGER_BIN names a prebuilt binary to test
// (by default the test builds this package).

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kscheme "k8s.io/client-go/kubernetes/scheme"
	apireg "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
)

const (
	ns          = "capr-system"
	serviceName = "capr-webhook-service"
)

func TestIssueAndInject(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		var err error
		if assets, err = filepath.Abs("../../../bin"); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			t.Fatalf("%s not found in %s: run make test-tools first (or set KUBEBUILDER_ASSETS)", b, assets)
		}
	}

	binary := os.Getenv("CERT_MANAGER_BIN")
	if binary == "" {
		binary = filepath.Join(t.TempDir(), "cert-manager")
		start := time.Now()
		if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		t.Logf("built %s in %s", binary, time.Since(start).Round(time.Second))
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	crdsDir := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")

	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "cert-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfigPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}

	// Run the program; on cleanup, SIGTERM must stop it cleanly (exit 0).
	var logs bytes.Buffer
	cmd := exec.Command(binary, "--kubeconfig", kubeconfigPath, "--install-crds", "--crds-dir", crdsDir)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("started: %s", strings.Join(cmd.Args, " "))
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("did not stop within 30s of SIGTERM")
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stopping cert-manager: %v", err)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("cert-manager logs (tail):\n%s", tail(logs.String(), 60))
		}
	})

	scheme := runtime.NewScheme()
	utilruntime.Must(kscheme.AddToScheme(scheme))
	utilruntime.Must(cmapi.AddToScheme(scheme))
	utilruntime.Must(apiextv1.AddToScheme(scheme))
	utilruntime.Must(apireg.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The CRDs are installed by the program; wait for the API to serve them.
	poll(ctx, t, "cert-manager CRDs served", func(ctx context.Context) (bool, error) {
		return c.List(ctx, &cmapi.IssuerList{}) == nil, nil
	})

	create := func(obj client.Object) {
		t.Helper()
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	create(&cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "selfsigned"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	})
	create(&cmapi.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "capr-selfsigned"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	})
	create(&cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "capr-ca"},
		Spec: cmapi.CertificateSpec{
			IsCA: true, CommonName: "capr-ca", SecretName: "capr-ca",
			IssuerRef: cmmeta.IssuerReference{Name: "selfsigned", Kind: "Issuer", Group: "cert-manager.io"},
		},
	})
	create(&cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "capr-ca-issuer"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "capr-ca"}}},
	})
	create(&cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "capr-serving-cert"},
		Spec: cmapi.CertificateSpec{
			DNSNames:   []string{serviceName + "." + ns + ".svc", serviceName + "." + ns + ".svc.cluster.local"},
			SecretName: "capr-webhook-server-cert",
			IssuerRef:  cmmeta.IssuerReference{Name: "capr-ca-issuer", Kind: "Issuer", Group: "cert-manager.io"},
		},
	})
	create(&cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "from-clusterissuer"},
		Spec: cmapi.CertificateSpec{
			DNSNames: []string{"example.capr.test"}, SecretName: "from-clusterissuer",
			IssuerRef: cmmeta.IssuerReference{Name: "capr-selfsigned", Kind: "ClusterIssuer", Group: "cert-manager.io"},
		},
	})

	for _, name := range []string{"capr-ca", "capr-serving-cert", "from-clusterissuer"} {
		poll(ctx, t, "Certificate "+name+" Ready", func(ctx context.Context) (bool, error) {
			var crt cmapi.Certificate
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &crt); err != nil {
				return false, err
			}
			for _, cond := range crt.Status.Conditions {
				if cond.Type == cmapi.CertificateConditionReady && cond.Status == cmmeta.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
	}

	var secret, caSecret corev1.Secret
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "capr-webhook-server-cert"}, &secret); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "capr-ca"}, &caSecret); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if len(secret.Data[k]) == 0 {
			t.Fatalf("Secret %s has no %s", secret.Name, k)
		}
	}
	if !bytes.Equal(secret.Data["ca.crt"], caSecret.Data["tls.crt"]) {
		t.Fatalf("leaf ca.crt is not the CA certificate")
	}
	leaf := parseCert(t, secret.Data["tls.crt"])
	roots := x509.NewCertPool()
	roots.AddCert(parseCert(t, secret.Data["ca.crt"]))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: serviceName + "." + ns + ".svc"}); err != nil {
		t.Fatalf("leaf does not verify against ca.crt: %v", err)
	}
	t.Logf("leaf issued: subject DNS %v, issuer %q, not after %s", leaf.DNSNames, leaf.Issuer.CommonName, leaf.NotAfter.Format(time.RFC3339))

	// CA injection.
	annotations := map[string]string{"cert-manager.io/inject-ca-from": ns + "/capr-serving-cert"}
	fail, none := admissionv1.Ignore, admissionv1.SideEffectClassNone
	path := "/validate"
	clientConfig := admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Namespace: ns, Name: serviceName, Path: &path}}
	rules := []admissionv1.RuleWithOperations{{
		Operations: []admissionv1.OperationType{admissionv1.Create},
		Rule:       admissionv1.Rule{APIGroups: []string{"example.capr.test"}, APIVersions: []string{"v1"}, Resources: []string{"widgets"}},
	}}
	create(&admissionv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "capr-validating", Annotations: annotations},
		Webhooks: []admissionv1.ValidatingWebhook{{
			Name: "vwidget.capr.test", ClientConfig: clientConfig, Rules: rules,
			FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
		}},
	})
	create(&admissionv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "capr-mutating", Annotations: annotations},
		Webhooks: []admissionv1.MutatingWebhook{{
			Name: "mwidget.capr.test", ClientConfig: clientConfig, Rules: rules,
			FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
		}},
	})
	poll(ctx, t, "ValidatingWebhookConfiguration caBundle injected", func(ctx context.Context) (bool, error) {
		var v admissionv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, types.NamespacedName{Name: "capr-validating"}, &v); err != nil {
			return false, err
		}
		return bytes.Equal(v.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"]), nil
	})
	poll(ctx, t, "MutatingWebhookConfiguration caBundle injected", func(ctx context.Context) (bool, error) {
		var m admissionv1.MutatingWebhookConfiguration
		if err := c.Get(ctx, types.NamespacedName{Name: "capr-mutating"}, &m); err != nil {
			return false, err
		}
		return bytes.Equal(m.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"]), nil
	})

	// A CRD's conversion webhook and an APIService get the CA as well.
	port := int32(443)
	create(&apiextv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets.example.capr.test", Annotations: annotations},
		Spec: apiextv1.CustomResourceDefinitionSpec{
			Group: "example.capr.test", Scope: apiextv1.NamespaceScoped,
			Names: apiextv1.CustomResourceDefinitionNames{Plural: "widgets", Singular: "widget", Kind: "Widget", ListKind: "WidgetList"},
			Versions: []apiextv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextv1.CustomResourceValidation{OpenAPIV3Schema: &apiextv1.JSONSchemaProps{Type: "object"}},
			}},
			Conversion: &apiextv1.CustomResourceConversion{
				Strategy: apiextv1.WebhookConverter,
				Webhook: &apiextv1.WebhookConversion{
					ClientConfig:             &apiextv1.WebhookClientConfig{Service: &apiextv1.ServiceReference{Namespace: ns, Name: serviceName, Path: &path, Port: &port}},
					ConversionReviewVersions: []string{"v1"},
				},
			},
		},
	})
	create(&apireg.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: "v1.aggregated.capr.test", Annotations: annotations},
		Spec: apireg.APIServiceSpec{
			Group: "aggregated.capr.test", Version: "v1", GroupPriorityMinimum: 1000, VersionPriority: 15,
			Service: &apireg.ServiceReference{Namespace: ns, Name: serviceName, Port: &port},
		},
	})
	poll(ctx, t, "CustomResourceDefinition conversion caBundle injected", func(ctx context.Context) (bool, error) {
		var crd apiextv1.CustomResourceDefinition
		if err := c.Get(ctx, types.NamespacedName{Name: "widgets.example.capr.test"}, &crd); err != nil {
			return false, err
		}
		return bytes.Equal(crd.Spec.Conversion.Webhook.ClientConfig.CABundle, secret.Data["ca.crt"]), nil
	})
	poll(ctx, t, "APIService caBundle injected", func(ctx context.Context) (bool, error) {
		var a apireg.APIService
		if err := c.Get(ctx, types.NamespacedName{Name: "v1.aggregated.capr.test"}, &a); err != nil {
			return false, err
		}
		return bytes.Equal(a.Spec.CABundle, secret.Data["ca.crt"]), nil
	})

	if err := stop(); err != nil {
		t.Fatalf("cert-manager did not exit cleanly on SIGTERM: %v", err)
	}
	t.Logf("cert-manager exited cleanly on SIGTERM")
}

func poll(ctx context.Context, t *testing.T, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	start := time.Now()
	if err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			t.Logf("%s: %v", what, err)
		}
		return ok, nil
	}); err != nil {
		t.Fatalf("timed out waiting for %s", what)
	}
	t.Logf("%s after %s", what, time.Since(start).Round(10*time.Millisecond))
}

func parseCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("no PEM block")
	}
	crt, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return crt
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
