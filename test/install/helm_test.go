package install

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// helm runs a Helm binary of bin/ against the apiserver, with its home directories in the test's.
func helm(t *testing.T, a *testenv.APIServer, bin string, args ...string) (string, error) {
	t.Helper()
	return chartRun(t, tool(t, bin), append(args, "--kubeconfig", a.Kubeconfig)...)
}

// ownCertificate makes a CA and a serving certificate for the webhook Service, stores them as the TLS Secret the
// chart is given without cert-manager, and returns the chart values naming them.
func ownCertificate(t *testing.T, a *testenv.APIServer, ns string) []string {
	t.Helper()
	g := NewWithT(t)
	certs, key, err := certutil.GenerateSelfSignedCertKey("capr-webhook-service."+ns+".svc", nil, nil)
	g.Expect(err).NotTo(HaveOccurred())
	serving, rest := pem.Decode(certs)
	ca, _ := pem.Decode(rest)
	g.Expect(serving).NotTo(BeNil())
	g.Expect(ca).NotTo(BeNil(), "the generated chain has no CA")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "capr-webhook-tls"},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": pem.EncodeToMemory(serving), "tls.key": key}}
	g.Expect(a.Client.Create(context.Background(), secret)).To(Succeed())
	return []string{"--set", "certManager.enabled=false", "--set", "webhook.certSecretName=capr-webhook-tls",
		"--set-string", "webhook.caBundle=" + base64.StdEncoding.EncodeToString(pem.EncodeToMemory(ca))}
}

// TestHelmInstall installs the chart with Helm 4 and Helm 3, with cert-manager's certificate and with a certificate
// of the user's, runs the manager as installed, and uses CAPR through the installed webhooks: a pool claim works,
// the leader holds its Lease, no request is refused by RBAC. Then `helm upgrade` changes a value and `helm
// uninstall` leaves only the CRDs.
func TestHelmInstall(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	manager := buildManager(t)
	a := startAPIServer(t)
	startCertManager(t, a)
	// The manager watches Cluster API's kinds: their CRDs are a Cluster API install's, which the chart does not do.
	capiDir, err := testenv.ModuleDir("sigs.k8s.io/cluster-api")
	g.Expect(err).NotTo(HaveOccurred())
	out, err := kubectl(t, a, "", "apply", "--server-side", "-f", filepath.Join(capiDir, "core", "config", "crd", "bases"))
	g.Expect(err).NotTo(HaveOccurred(), out)

	// Each install goes to a namespace of its own: without a namespace controller a deleted namespace is never gone.
	for i, helmBin := range []string{"helm", "helm3"} {
		for j, mode := range []string{"cert-manager", "own-certificate"} {
			t.Run(helmBin+"/"+mode, func(t *testing.T) {
				g := NewWithT(t)
				system := fmt.Sprintf("capr-system-%d%d", i, j)
				out, err := kubectl(t, a, "", "create", "namespace", system)
				g.Expect(err).NotTo(HaveOccurred(), out)
				var values []string
				if mode == "own-certificate" {
					values = ownCertificate(t, a, system)
				}
				out, err = helm(t, a, helmBin, append([]string{"install", "capr", chartPath(), "-n", system}, values...)...)
				g.Expect(err).NotTo(HaveOccurred(), out)

				kinds := map[string][]string{
					"MutatingWebhookConfiguration":   {"capr-mutating-webhook-configuration"},
					"ValidatingWebhookConfiguration": {"capr-validating-webhook-configuration", "capr-controlplane-endpoint-guard"},
				}
				waitCABundles(t, a, kinds)
				redirect := redirectWebhookService(t, a, system, "capr-webhook-service")
				capr := runAsInstalled(t, a, system, "capr-controller-manager", manager, "--leader-elect-namespace="+system)
				redirect.target.Store(&capr.webhookAddr)

				// A pool claim through the installed webhooks.
				ns := "helm-" + fmt.Sprint(time.Now().UnixNano())
				g.Expect(a.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
				entry := testenv.NewEntry(ns, "default", 0)
				g.Eventually(func() error { return a.Client.Create(ctx, entry) }, time.Minute, time.Second).Should(Succeed())
				rm := testenv.NewPooledMachine(ns, "m0", "default")
				g.Eventually(func() error { return a.Client.Create(ctx, rm) }, 30*time.Second, time.Second).Should(Succeed())
				g.Expect(rm.Spec.Address).To(Equal(entry.Spec.Machine.Address))
				g.Expect(rm.Spec.PooledRemoteMachineRef).NotTo(BeNil())
				g.Expect(rm.Spec.PooledRemoteMachineRef.Name).To(Equal(entry.Name))
				// The controllers, on the leader, bind the claim.
				g.Eventually(func(g Gomega) {
					got := &infrav1.PooledRemoteMachine{}
					g.Expect(a.Client.Get(ctx, client.ObjectKeyFromObject(entry), got)).To(Succeed())
					g.Expect(got.Spec.ClaimRef).NotTo(BeNil())
					g.Expect(got.Spec.ClaimRef.UID).To(Equal(rm.UID))
				}, time.Minute, 500*time.Millisecond).Should(Succeed())
				lease := &coordinationv1.Lease{}
				g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: system, Name: "controller-leader-election-capr"}, lease)).To(Succeed())
				g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).NotTo(BeEmpty())
				noForbidden(g, capr.logs.String())
				// Leave the pool entry free for the uninstall (a claimed entry cannot be deleted).
				g.Expect(a.Client.Delete(ctx, rm)).To(Succeed())
				g.Eventually(func() bool {
					return apierrors.IsNotFound(a.Client.Get(ctx, client.ObjectKeyFromObject(rm), rm))
				}, time.Minute, 500*time.Millisecond).Should(BeTrue())

				// Upgrade to a changed value, with the manager stopped and the Service back as it was installed.
				capr.stop()
				redirect.remove(t, a)
				out, err = helm(t, a, helmBin, append([]string{"upgrade", "capr", chartPath(), "-n", system, "--set", "bootstrapConcurrency=3"}, values...)...)
				g.Expect(err).NotTo(HaveOccurred(), out)
				deployment := &appsv1.Deployment{}
				g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: system, Name: "capr-controller-manager"}, deployment)).To(Succeed())
				g.Expect(deployment.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--bootstrap-concurrency=3"))

				// Uninstall: nothing the chart rendered is left but its CRDs.
				rendered, err := helm(t, a, helmBin, "get", "manifest", "capr", "-n", system)
				g.Expect(err).NotTo(HaveOccurred(), rendered)
				out, err = helm(t, a, helmBin, "uninstall", "capr", "-n", system, "--wait")
				g.Expect(err).NotTo(HaveOccurred(), out)
				for _, obj := range chartParseObjects(t, rendered) {
					g.Eventually(func() bool {
						err := a.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
						return apierrors.IsNotFound(err)
					}, time.Minute, 500*time.Millisecond).Should(BeTrue(), "%s %s is left after uninstall", obj.GetKind(), obj.GetName())
				}
				crd := &metav1.PartialObjectMetadata{}
				crd.SetGroupVersionKind(schemaCRD)
				g.Expect(a.Client.Get(ctx, client.ObjectKey{Name: "remotemachines.infrastructure.cluster.x-k8s.io"}, crd)).To(Succeed())

			})
		}
	}
}
