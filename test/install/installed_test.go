package install

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// startAPIServer starts a bare management plane for one test: kube-apiserver and etcd, and kube-controller-manager
// with the controllers an install relies on: ClusterRole aggregation (Cluster API's manager is granted its rules,
// CAPR's included, by aggregation), and namespace and garbage collection (so that an uninstall really deletes).
func startAPIServer(t *testing.T) *testenv.APIServer {
	t.Helper()
	a, err := testenv.StartAPIServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop() })
	startProcess(t, "kube-controller-manager", tool(t, "kube-controller-manager"), "--kubeconfig="+a.Kubeconfig,
		"--controllers=clusterrole-aggregation-controller,namespace-controller,garbage-collector-controller",
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false")
	return a
}

// runCmd runs a command in the repository root with extra environment and returns its combined output.
func runCmd(t *testing.T, stdin string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = testenv.RootDir()
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kubectl runs bin/kubectl against the apiserver as an administrator.
func kubectl(t *testing.T, a *testenv.APIServer, stdin string, args ...string) (string, error) {
	t.Helper()
	return runCmd(t, stdin, nil, tool(t, "kubectl"), append([]string{"--kubeconfig", a.Kubeconfig}, args...)...)
}

// buildManager builds CAPR's manager binary from this checkout.
func buildManager(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manager")
	if out, err := runCmd(t, "", []string{"CGO_ENABLED=0"}, "go", "build", "-o", bin, "."); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freePort returns a TCP port free on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCertManager runs cert-manager's own issuance controllers and CA injector (bin/cert-manager, built by
// hack/tools/cert-manager from cert-manager's module) against the apiserver, with cert-manager's CRDs installed.
func startCertManager(t *testing.T, a *testenv.APIServer) {
	t.Helper()
	dir, err := runCmd(t, "", nil, "go", "-C", filepath.Join(testenv.RootDir(), "hack", "tools", "cert-manager"),
		"list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager")
	if err != nil {
		t.Fatalf("locating cert-manager's module: %v: %s", err, dir)
	}
	startProcess(t, "cert-manager", tool(t, "cert-manager"), "--kubeconfig", a.Kubeconfig,
		"--install-crds", "--crds-dir", filepath.Join(strings.TrimSpace(dir), "deploy/crds"))
	NewWithT(t).Eventually(func() error {
		_, err := kubectl(t, a, "", "get", "crd", "certificates.cert-manager.io", "issuers.cert-manager.io")
		return err
	}, time.Minute, 200*time.Millisecond).Should(Succeed())
}

// process is a program the test started; its output is kept for the test to read.
type process struct {
	once   sync.Once
	cmd    *exec.Cmd
	logs   *testenv.SyncBuffer
	exited chan error
}

// startProcess starts a program and stops it (SIGTERM, then SIGKILL) when the test ends.
func startProcess(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), logs: &testenv.SyncBuffer{}, exited: make(chan error, 1)}
	p.cmd.Env = slicesWithout(os.Environ(), "KUBECONFIG=")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(p.logs.String(), 20000))
		}
	})
	return p
}

// stop stops the program: SIGTERM, then SIGKILL after 20 seconds. Stopping a stopped program does nothing.
func (p *process) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.exited:
			p.exited <- err
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
		}
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func slicesWithout(env []string, prefix string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}

// webhookRedirect carries the apiserver's calls to an installed webhook Service to a manager process on this
// machine. A Service's endpoints cannot be a loopback address, so the Service is replaced by an ExternalName Service
// of the same name naming a loopback address where this forwarder listens on port 443. The apiserver resolves an
// ExternalName Service to that name, and still checks the serving certificate against
// <service>.<namespace>.svc with the CA bundle cert-manager injected: what it verifies is what was installed.
type webhookRedirect struct {
	addr    string
	service *corev1.Service
	target  atomic.Pointer[string]
}

func redirectWebhookService(t *testing.T, a *testenv.APIServer, namespace, name string) *webhookRedirect {
	t.Helper()
	g := NewWithT(t)
	var l net.Listener
	for i := 200; i < 254 && l == nil; i++ {
		l, _ = net.Listen("tcp", fmt.Sprintf("127.0.0.%d:443", i))
	}
	g.Expect(l).NotTo(BeNil(), "no free 127.0.0.x:443 to listen on")
	t.Cleanup(func() { _ = l.Close() })
	r := &webhookRedirect{addr: l.Addr().String()}
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go r.forward(in)
		}
	}()

	ctx := context.Background()
	svc := &corev1.Service{}
	g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, svc)).To(Succeed())
	g.Expect(a.Client.Delete(ctx, svc)).To(Succeed())
	redirected := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: svc.Labels},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: strings.Split(r.addr, ":")[0],
			Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(443)}}},
	}
	g.Eventually(func() error { return a.Client.Create(ctx, redirected) }, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	r.service = redirected
	return r
}

// remove deletes the ExternalName Service, so that a `helm upgrade` puts the Service back as it installs it.
func (r *webhookRedirect) remove(t *testing.T, a *testenv.APIServer) {
	t.Helper()
	NewWithT(t).Expect(a.Client.Delete(context.Background(), r.service)).To(Succeed())
}

func (r *webhookRedirect) forward(in net.Conn) {
	defer in.Close()
	target := r.target.Load()
	if target == nil {
		return
	}
	out, err := net.DialTimeout("tcp", *target, 5*time.Second)
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
}

// installedManager is a manager binary run as a Deployment was installed: with the Deployment's arguments, as the
// Deployment's ServiceAccount (a token from the TokenRequest API, so the installed RBAC is what it gets), and with
// the serving certificate from the Secret the Deployment mounts.
type installedManager struct {
	*process
	deployment  *appsv1.Deployment
	webhookAddr string
}

// portArgs are the arguments that name this machine's ports or files: a Pod has its own network namespace and
// filesystem, processes on one machine do not, so these are the only installed arguments that are replaced.
var portArgs = []string{"--diagnostics-address", "--health-addr", "--webhook-port", "--webhook-cert-dir", "--kubeconfig"}

func runAsInstalled(t *testing.T, a *testenv.APIServer, namespace, deployment, bin string, extra ...string) *installedManager {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	m := &installedManager{deployment: &appsv1.Deployment{}}
	g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: deployment}, m.deployment)).To(Succeed())
	pod := m.deployment.Spec.Template.Spec
	g.Expect(pod.Containers).NotTo(BeEmpty())

	// The ServiceAccount's token.
	cs, err := kubernetes.NewForConfig(a.Config)
	g.Expect(err).NotTo(HaveOccurred())
	token, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, pod.ServiceAccountName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	kc := clientcmdapi.NewConfig()
	kc.Clusters["installed"] = &clientcmdapi.Cluster{Server: a.Config.Host, CertificateAuthorityData: a.Config.CAData}
	kc.AuthInfos["installed"] = &clientcmdapi.AuthInfo{Token: token.Status.Token}
	kc.Contexts["installed"] = &clientcmdapi.Context{Cluster: "installed", AuthInfo: "installed"}
	kc.CurrentContext = "installed"
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	g.Expect(clientcmd.WriteToFile(*kc, kubeconfig)).To(Succeed())

	// The serving certificate from the Secret volume the container mounts as the webhook certificate directory.
	certDir := filepath.Join(dir, "certs")
	g.Expect(os.Mkdir(certDir, 0o700)).To(Succeed())
	for _, v := range pod.Volumes {
		if v.Secret == nil {
			continue
		}
		secret := &corev1.Secret{}
		g.Eventually(func() error {
			return a.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: v.Secret.SecretName}, secret)
		}, time.Minute, 200*time.Millisecond).Should(Succeed(), "the certificate Secret %s", v.Secret.SecretName)
		for _, k := range []string{"tls.crt", "tls.key"} {
			g.Expect(secret.Data).To(HaveKey(k))
			g.Expect(os.WriteFile(filepath.Join(certDir, k), secret.Data[k], 0o600)).To(Succeed())
		}
	}

	health, webhookPort := freePort(t), freePort(t)
	var args []string
	for _, arg := range pod.Containers[0].Args {
		if !hasAnyPrefix(arg, portArgs) {
			args = append(args, arg)
		}
	}
	args = append(args, "--kubeconfig="+kubeconfig,
		fmt.Sprintf("--health-addr=127.0.0.1:%d", health),
		fmt.Sprintf("--diagnostics-address=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("--webhook-port=%d", webhookPort),
		"--webhook-cert-dir="+certDir)
	args = append(args, extra...)
	m.webhookAddr = fmt.Sprintf("127.0.0.1:%d", webhookPort)
	m.process = startProcess(t, deployment, bin, args...)
	g.Eventually(func(g Gomega) {
		g.Expect(m.exited).NotTo(Receive(), "%s exited early", deployment)
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health))
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	}, 2*time.Minute, 200*time.Millisecond).Should(Succeed(), func() string { return tail(m.logs.String(), 5000) })
	return m
}

func hasAnyPrefix(arg string, flags []string) bool {
	for _, f := range flags {
		if arg == f || strings.HasPrefix(arg, f+"=") {
			return true
		}
	}
	return false
}

// expectInstalled checks that every object of a components stream exists in the apiserver.
func expectInstalled(t *testing.T, a *testenv.APIServer, objs []*unstructured.Unstructured) {
	t.Helper()
	g := NewWithT(t)
	for _, want := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(want.GroupVersionKind())
		err := a.Client.Get(context.Background(), client.ObjectKeyFromObject(want), got)
		g.Expect(err).NotTo(HaveOccurred(), "%s %s", want.GetKind(), client.ObjectKeyFromObject(want))
	}
}

// noForbidden fails when a manager's log shows a request its RBAC refused.
func noForbidden(g Gomega, logs string) {
	for _, line := range strings.Split(logs, "\n") {
		g.Expect(strings.ToLower(line)).NotTo(ContainSubstring("forbidden"), "a request was refused by RBAC: %s", line)
	}
}

// waitCABundles waits until cert-manager's CA injector filled every webhook of the named configurations.
func waitCABundles(t *testing.T, a *testenv.APIServer, kinds map[string][]string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		for kind, names := range kinds {
			for _, name := range names {
				u := &unstructured.Unstructured{}
				u.SetAPIVersion("admissionregistration.k8s.io/v1")
				u.SetKind(kind)
				g.Expect(a.Client.Get(context.Background(), client.ObjectKey{Name: name}, u)).To(Succeed())
				hooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
				g.Expect(hooks).NotTo(BeEmpty())
				for _, h := range hooks {
					ca, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "caBundle")
					g.Expect(ca).NotTo(BeEmpty(), "%s %s has no CA bundle", kind, name)
				}
			}
		}
	}, 2*time.Minute, 500*time.Millisecond).Should(Succeed())
}
