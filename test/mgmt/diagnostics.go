package mgmt

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// Diagnostics reads a manager's secure diagnostics endpoint (/metrics, /debug/pprof/...) as a scraper would: with
// a ServiceAccount token the apiserver authenticates, granted exactly those paths.
type Diagnostics struct {
	addr, token string
	client      *http.Client
}

// NewDiagnostics grants a ServiceAccount "capr-diagnostics-reader" in namespace the diagnostics paths and returns
// a reader of the endpoint at addr.
func NewDiagnostics(t T, a *testenv.APIServer, namespace, addr string) *Diagnostics {
	t.Helper()
	d, err := DiagnosticsReader(context.Background(), a.Client, a.Config, namespace, addr)
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return d
}

// DiagnosticsReader is NewDiagnostics outside a test: c and cfg reach the apiserver as an administrator.
func DiagnosticsReader(ctx context.Context, c client.Client, cfg *rest.Config, namespace, addr string) (*Diagnostics, error) {
	const name = "capr-diagnostics-reader"
	for _, o := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
			Rules: []rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{"/metrics", "/debug/pprof/*"}}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}}},
	} {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	token, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](7200)}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return &Diagnostics{addr: addr, token: token.Status.Token, client: &http.Client{
		Timeout: 2 * time.Minute,
		// The endpoint serves a self-signed certificate outside a cluster; the token is what is checked here.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}}, nil
}

// Get returns the body of path (e.g. "/metrics", "/debug/pprof/profile?seconds=20").
func (d *Diagnostics) Get(path string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, "https://"+d.addr+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}
