//go:build integration

package install

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// helm runs a Helm binary of bin/ against the apiserver, with its home directories in the test's.
func helm(t *testing.T, a *testenv.APIServer, bin string, args ...string) (string, error) {
	t.Helper()
	return chartRun(t, mgmt.Tool(t, bin), append(args, "--kubeconfig", a.Kubeconfig)...)
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
// of the user's, beside Cluster API installed by clusterctl, runs the manager as installed, and uses CAPR through the
// installed webhooks: the reference document applies, a pool claim works, a RemoteMachine bootstraps on a real sshd
// host, the leader holds its Lease, no request is refused by RBAC. Then `helm upgrade` changes a value and `helm
// uninstall` leaves only the CRDs.
func TestHelmInstall(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	manager := mgmt.BuildManager(t)
	a := mgmt.StartAPIServer(t)
	mgmt.StartCertManager(t, a)
	// Cluster API installed with clusterctl, and its managers running, as CAPR's users have it.
	config := mgmt.LocalRepository(t, mgmt.ReleaseFiles(t))
	out, err := mgmt.RunCmd(t, "", mgmt.ClusterctlEnv(t), mgmt.Tool(t, "clusterctl"), "init", "--config", config, "--kubeconfig", a.Kubeconfig)
	g.Expect(err).NotTo(HaveOccurred(), out)
	mgmt.RunCAPIManagers(t, a)

	// Each install goes to a namespace of its own, so that one install's leftovers (its CRs) never meet the next.
	for i, helmBin := range []string{"helm", "helm3"} {
		for j, mode := range []string{"cert-manager", "own-certificate"} {
			t.Run(helmBin+"/"+mode, func(t *testing.T) {
				g := NewWithT(t)
				system := fmt.Sprintf("capr-system-%d%d", i, j)
				out, err := mgmt.Kubectl(t, a, "", "create", "namespace", system)
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
				mgmt.WaitCABundles(t, a, kinds)
				capr := mgmt.RunCAPR(t, a, system, manager)
				applySeedDocument(t, a)
				bootstrapOnHost(t, a, "workload-"+system, sshdtest.Start(t))
				mgmt.ExpectLeaderAndNoForbidden(t, a, system, capr)

				// Upgrade to a changed value, with the manager stopped and the Service back as it was installed.
				capr.Stop()
				capr.Redirect.Remove(t, a)
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
				for _, obj := range mgmt.ParseObjects(t, rendered) {
					g.Eventually(func() bool {
						err := a.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
						return apierrors.IsNotFound(err)
					}, time.Minute, 500*time.Millisecond).Should(BeTrue(), "%s %s is left after uninstall", obj.GetKind(), obj.GetName())
				}
				crd := &metav1.PartialObjectMetadata{}
				crd.SetGroupVersionKind(mgmt.SchemaCRD)
				g.Expect(a.Client.Get(ctx, client.ObjectKey{Name: "remotemachines.infrastructure.cluster.x-k8s.io"}, crd)).To(Succeed())
			})
		}
	}
}
