// Package mgmt builds, on this machine, a Cluster API management cluster with CAPR installed the way its users
// install it: a real kube-apiserver, etcd and kube-controller-manager from bin/, cert-manager's own controllers and
// CA injector, `clusterctl init` from a local repository holding what `make release-manifests` writes and Cluster
// API v1.14.2's own components, and the managers run as their Deployments were installed (arguments,
// ServiceAccount, RBAC, cert-manager certificates). The install tests, the end-to-end suite and `make quickstart`
// share it.
package mgmt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// T is what the package needs of a test (a *testing.T satisfies it); `make quickstart` runs it outside a test.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}

const (
	// ReleaseVersion is the version the release files are published under in the local repository.
	ReleaseVersion = "v0.1.0"
	// CAPIVersion is the Cluster API release whose own components clusterctl installs beside CAPR.
	CAPIVersion = "v1.14.2"
)

// SchemaCRD is the kind of a CustomResourceDefinition, for reading CRDs as metadata.
var SchemaCRD = apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition")

// StartAPIServer starts a bare management plane for one test: kube-apiserver and etcd, and kube-controller-manager
// with the controllers an install relies on: ClusterRole aggregation (Cluster API's manager is granted its rules,
// CAPR's included, by aggregation), and namespace and garbage collection (so that an uninstall really deletes).
func StartAPIServer(t T) *testenv.APIServer {
	t.Helper()
	a, err := testenv.StartAPIServer()
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { _ = a.Stop() })
	StartProcess(t, "kube-controller-manager", Tool(t, "kube-controller-manager"), "--kubeconfig="+a.Kubeconfig,
		"--controllers=clusterrole-aggregation-controller,namespace-controller,garbage-collector-controller",
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false")
	return a
}

// RunCmd runs a command in the repository root with extra environment and returns its combined output.
func RunCmd(t T, stdin string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = testenv.RootDir()
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Kubectl runs bin/Kubectl against the apiserver as an administrator.
func Kubectl(t T, a *testenv.APIServer, stdin string, args ...string) (string, error) {
	t.Helper()
	return RunCmd(t, stdin, nil, Tool(t, "kubectl"), append([]string{"--kubeconfig", a.Kubeconfig}, args...)...)
}

// BuildManager builds CAPR's manager binary from this checkout.
func BuildManager(t T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manager")
	if out, err := RunCmd(t, "", []string{"CGO_ENABLED=0"}, "go", "build", "-o", bin, "."); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a TCP port free on 127.0.0.1 for a program to listen on. It is below Linux's ephemeral range
// (32768 and up), so no outgoing connection takes it before the program listens, and never handed out twice.
func FreePort(t T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + mathrand.IntN(12000)
		if given[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		_ = l.Close()
		given[port] = true
		return port
	}
	t.Fatalf("no free port in 20000-31999")
	return 0
}

// StartCertManager runs cert-manager's own issuance controllers and CA injector (bin/cert-manager, built by
// hack/tools/cert-manager from cert-manager's module) against the apiserver, with cert-manager's CRDs installed.
func StartCertManager(t T, a *testenv.APIServer) {
	t.Helper()
	dir, err := RunCmd(t, "", nil, "go", "-C", filepath.Join(testenv.RootDir(), "hack", "tools", "cert-manager"),
		"list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager")
	if err != nil {
		t.Fatalf("locating cert-manager's module: %v: %s", err, dir)
	}
	StartProcess(t, "cert-manager", Tool(t, "cert-manager"), "--kubeconfig", a.Kubeconfig,
		"--install-crds", "--crds-dir", filepath.Join(strings.TrimSpace(dir), "deploy/crds"))
	NewWithT(t).Eventually(func() error {
		_, err := Kubectl(t, a, "", "get", "crd", "certificates.cert-manager.io", "issuers.cert-manager.io")
		return err
	}, time.Minute, 200*time.Millisecond).Should(Succeed())
}

// Process is a program the test started; its output is kept for the test to read.
type Process struct {
	once   sync.Once
	cmd    *exec.Cmd
	Logs   *testenv.SyncBuffer
	exited chan error
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// StartProcess starts a program and stops it (SIGTERM, then SIGKILL) when the test ends.
func StartProcess(t T, name, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{cmd: exec.Command(bin, args...), Logs: &testenv.SyncBuffer{}, exited: make(chan error, 1)}
	p.cmd.Env = slicesWithout(os.Environ(), "KUBECONFIG=")
	p.cmd.Stdout, p.cmd.Stderr = p.Logs, p.Logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(p.Logs.String(), 20000))
		}
	})
	return p
}

// Kill kills the program with SIGKILL and waits for it to exit, as a node failure or an OOM kill would.
func (p *Process) Kill() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		err := <-p.exited
		p.exited <- err
	})
}

// Exited says whether the program has exited.
func (p *Process) Exited() bool {
	select {
	case err := <-p.exited:
		p.exited <- err
		return true
	default:
		return false
	}
}

// stop stops the program: SIGTERM, then SIGKILL after 20 seconds. Stopping a stopped program does nothing.
func (p *Process) Stop() {
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

// WebhookRedirect carries the apiserver's calls to an installed webhook Service to a manager Process on this
// machine. A Service's endpoints cannot be a loopback address, so the Service is replaced by an ExternalName Service
// of the same name naming a loopback address where this forwarder listens on port 443. The apiserver resolves an
// ExternalName Service to that name, and still checks the serving certificate against
// <service>.<namespace>.svc with the CA bundle cert-manager injected: what it verifies is what was installed.
type WebhookRedirect struct {
	addr    string
	service *corev1.Service
	targets atomic.Pointer[[]string]
	next    atomic.Uint64
}

// SetTargets sets the webhook servers the calls go to, in turn (round robin), as a Service spreads them over a
// Deployment's replicas.
func (r *WebhookRedirect) SetTargets(addrs ...string) {
	r.targets.Store(&addrs)
}

func RedirectWebhookService(t T, a *testenv.APIServer, namespace, name string) *WebhookRedirect {
	t.Helper()
	g := NewWithT(t)
	var l net.Listener
	for i := 200; i < 254 && l == nil; i++ {
		l, _ = net.Listen("tcp", fmt.Sprintf("127.0.0.%d:443", i))
	}
	g.Expect(l).NotTo(BeNil(), "no free 127.0.0.x:443 to listen on")
	t.Cleanup(func() { _ = l.Close() })
	r := &WebhookRedirect{addr: l.Addr().String()}
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
	key := client.ObjectKey{Namespace: namespace, Name: name}
	svc := &corev1.Service{}
	g.Expect(a.Client.Get(ctx, key, svc)).To(Succeed())
	labels := svc.Labels
	host := strings.Split(r.addr, ":")[0]
	// Replaced until it stays replaced: an installer that manages the Service (cluster-api-operator) may create it
	// again right after it is deleted.
	g.Eventually(func() error {
		cur := &corev1.Service{}
		err := a.Client.Get(ctx, key, cur)
		switch {
		case err == nil && cur.Spec.Type == corev1.ServiceTypeExternalName && cur.Spec.ExternalName == host:
			r.service = cur
			return nil
		case err == nil:
			if err := a.Client.Delete(ctx, cur); client.IgnoreNotFound(err) != nil {
				return err
			}
		case !apierrors.IsNotFound(err):
			return err
		}
		redirected := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: host,
				Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(443)}}},
		}
		if err := a.Client.Create(ctx, redirected); err != nil {
			return err
		}
		return fmt.Errorf("created; checking that it stays")
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	return r
}

// remove deletes the ExternalName Service, so that a `helm upgrade` puts the Service back as it installs it.
func (r *WebhookRedirect) Remove(t T, a *testenv.APIServer) {
	t.Helper()
	NewWithT(t).Expect(a.Client.Delete(context.Background(), r.service)).To(Succeed())
}

func (r *WebhookRedirect) forward(in net.Conn) {
	defer in.Close()
	targets := r.targets.Load()
	if targets == nil || len(*targets) == 0 {
		return
	}
	// Round robin over the targets; one that does not answer is skipped, as a Service drops a Pod that is not ready.
	first := r.next.Add(1)
	var out net.Conn
	for i := range uint64(len(*targets)) {
		var err error
		if out, err = net.DialTimeout("tcp", (*targets)[(first+i)%uint64(len(*targets))], 2*time.Second); err == nil {
			break
		}
	}
	if out == nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
}

// InstalledManager is a manager binary run as a Deployment was installed: with the Deployment's arguments, as the
// Deployment's ServiceAccount (a token from the TokenRequest API, so the installed RBAC is what it gets), and with
// the serving certificate from the Secret the Deployment mounts.
type InstalledManager struct {
	*Process
	Deployment  *appsv1.Deployment
	WebhookAddr string
	// DiagnosticsAddr is where the diagnostics endpoint (/metrics) listens.
	DiagnosticsAddr string
	// redirect carries the apiserver's webhook calls to this Process, when the test set one up.
	Redirect *WebhookRedirect
}

// portArgs are the arguments that name this machine's ports or files: a Pod has its own network namespace and
// filesystem, processes on one machine do not, so these are the only installed arguments that are replaced.
var portArgs = []string{"--diagnostics-address", "--health-addr", "--webhook-port", "--webhook-cert-dir", "--kubeconfig"}

func RunAsInstalled(t T, a *testenv.APIServer, namespace, deployment, bin string, extra ...string) *InstalledManager {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	m := &InstalledManager{Deployment: &appsv1.Deployment{}}
	g.Expect(a.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: deployment}, m.Deployment)).To(Succeed())
	pod := m.Deployment.Spec.Template.Spec
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

	health, webhookPort := FreePort(t), FreePort(t)
	m.DiagnosticsAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	var args []string
	for _, arg := range pod.Containers[0].Args {
		if !hasAnyPrefix(arg, portArgs) {
			args = append(args, arg)
		}
	}
	args = append(args, "--kubeconfig="+kubeconfig,
		fmt.Sprintf("--health-addr=127.0.0.1:%d", health),
		"--diagnostics-address="+m.DiagnosticsAddr,
		fmt.Sprintf("--webhook-port=%d", webhookPort),
		"--webhook-cert-dir="+certDir)
	args = append(args, extra...)
	m.WebhookAddr = fmt.Sprintf("127.0.0.1:%d", webhookPort)
	m.Process = StartProcess(t, deployment, bin, args...)
	g.Eventually(func(g Gomega) {
		g.Expect(m.exited).NotTo(Receive(), "%s exited early", deployment)
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health))
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	}, 2*time.Minute, 200*time.Millisecond).Should(Succeed(), func() string { return tail(m.Logs.String(), 5000) })
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

// ExpectInstalled checks that every object of a components stream exists in the apiserver.
func ExpectInstalled(t T, a *testenv.APIServer, objs []*unstructured.Unstructured) {
	t.Helper()
	g := NewWithT(t)
	for _, want := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(want.GroupVersionKind())
		err := a.Client.Get(context.Background(), client.ObjectKeyFromObject(want), got)
		g.Expect(err).NotTo(HaveOccurred(), "%s %s", want.GetKind(), client.ObjectKeyFromObject(want))
	}
}

// NoForbidden fails when a manager's log shows a request its RBAC refused.
func NoForbidden(g Gomega, logs string) {
	for _, line := range strings.Split(logs, "\n") {
		g.Expect(strings.ToLower(line)).NotTo(ContainSubstring("forbidden"), "a request was refused by RBAC: %s", line)
	}
}

// WaitCABundles waits until cert-manager's CA injector filled every webhook of the named configurations.
func WaitCABundles(t T, a *testenv.APIServer, kinds map[string][]string) {
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

// ClusterctlEnv keeps clusterctl off the network and out of the user's home.
func ClusterctlEnv(t T) []string {
	home := t.TempDir()
	return []string{"CLUSTERCTL_DISABLE_VERSIONCHECK=true", "HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}
}

// ReleaseFiles runs `make release-manifests` into a temporary directory and returns it.
func ReleaseFiles(t T) string {
	t.Helper()
	out := t.TempDir()
	if log, err := RunCmd(t, "", nil, "make", "-s", "release-manifests", "RELEASE_DIR="+out); err != nil {
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

// LocalRepository lays out a clusterctl local repository: CAPR's release files, and Cluster API's core, kubeadm
// bootstrap and kubeadm control-plane components built with kustomize from Cluster API's module, each with its
// metadata.yaml. It returns the path of a clusterctl configuration file naming them.
func LocalRepository(t T, release string) string {
	t.Helper()
	repo := t.TempDir()
	capiDir, err := testenv.ModuleDir("sigs.k8s.io/cluster-api")
	if err != nil {
		t.Fatalf("%v", err)
	}
	type provider struct{ name, kind, label, version, file, source string }
	providers := []provider{
		{"cluster-api", "CoreProvider", "cluster-api", CAPIVersion, "core-components.yaml", filepath.Join(capiDir, "core", "config", "default")},
		{"kubeadm", "BootstrapProvider", "bootstrap-kubeadm", CAPIVersion, "bootstrap-components.yaml", filepath.Join(capiDir, "bootstrap", "kubeadm", "config", "default")},
		{"kubeadm", "ControlPlaneProvider", "control-plane-kubeadm", CAPIVersion, "control-plane-components.yaml", filepath.Join(capiDir, "controlplane", "kubeadm", "config", "default")},
		{"remote", "InfrastructureProvider", "infrastructure-remote", ReleaseVersion, "infrastructure-components.yaml", ""},
	}
	config := "providers:\n"
	for _, p := range providers {
		dir := filepath.Join(repo, p.label, p.version)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("%v", err)
		}
		if p.source == "" {
			entries, err := os.ReadDir(release)
			if err != nil {
				t.Fatalf("%v", err)
			}
			for _, e := range entries {
				copyFile(t, filepath.Join(release, e.Name()), filepath.Join(dir, e.Name()))
			}
		} else {
			components, err := RunCmd(t, "", nil, Tool(t, "kustomize"), "build", p.source)
			if err != nil {
				t.Fatalf("kustomize build %s: %v\n%s", p.source, err, components)
			}
			if err := os.WriteFile(filepath.Join(dir, p.file), []byte(components), 0o644); err != nil {
				t.Fatalf("%v", err)
			}
			copyFile(t, filepath.Join(capiDir, "metadata.yaml"), filepath.Join(dir, "metadata.yaml"))
		}
		config += fmt.Sprintf("- name: %s\n  type: %s\n  url: %s\n", p.name, p.kind, filepath.Join(dir, p.file))
	}
	path := filepath.Join(repo, "clusterctl.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	return path
}

func copyFile(t T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
}

// RunCAPIManagers runs Cluster API's core, kubeadm bootstrap and kubeadm control-plane managers as `clusterctl init`
// installed them, with their webhooks reached through their installed Services and certificates.
func RunCAPIManagers(t T, a *testenv.APIServer) {
	t.Helper()
	RunCAPIManagersWith(t, a, nil)
}

// RunCAPIManagersWith runs Cluster API's managers like RunCAPIManagers, giving each the extra arguments listed under
// its Deployment's name (e.g. capi-kubeadm-bootstrap-controller-manager: --feature-gates=...), after its installed
// ones.
func RunCAPIManagersWith(t T, a *testenv.APIServer, extra map[string][]string) {
	t.Helper()
	for _, m := range []struct{ namespace, deployment, binary string }{
		{"capi-system", "capi-controller-manager", "capi-manager"},
		{"capi-kubeadm-bootstrap-system", "capi-kubeadm-bootstrap-controller-manager", "capi-kubeadm-bootstrap-manager"},
		{"capi-kubeadm-control-plane-system", "capi-kubeadm-control-plane-controller-manager", "capi-kubeadm-control-plane-manager"},
	} {
		service := strings.TrimSuffix(m.deployment, "controller-manager") + "webhook-service"
		redirect := RedirectWebhookService(t, a, m.namespace, service)
		// Cluster API's managers offer no flag for their leader-election namespace, which only a Pod can tell them.
		installed := RunAsInstalled(t, a, m.namespace, m.deployment, Tool(t, m.binary), append([]string{"--leader-elect=false"}, extra[m.deployment]...)...)
		redirect.SetTargets(installed.WebhookAddr)
	}
}

// RunCAPR runs CAPR's manager as installed in namespace system, with its webhooks reached through the installed
// Service and certificate.
func RunCAPR(t T, a *testenv.APIServer, system, manager string) *InstalledManager {
	t.Helper()
	redirect := RedirectWebhookService(t, a, system, "capr-webhook-service")
	// Outside a Pod the manager cannot read its namespace from the service-account mount: it is given as a flag.
	capr := RunAsInstalled(t, a, system, "capr-controller-manager", manager, "--leader-elect-namespace="+system)
	redirect.SetTargets(capr.WebhookAddr)
	capr.Redirect = redirect
	NewWithT(t).Expect(capr.Deployment.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--leader-elect"))
	return capr
}

// ExpectLeaderAndNoForbidden checks that CAPR's leader holds its Lease and that the installed RBAC refused nothing.
func ExpectLeaderAndNoForbidden(t T, a *testenv.APIServer, system string, capr *InstalledManager) {
	t.Helper()
	g := NewWithT(t)
	// The webhooks answer before leader election ends (they serve on every replica): the Lease may come a moment later.
	g.Eventually(func(g Gomega) {
		lease := &coordinationv1.Lease{}
		g.Expect(a.Client.Get(context.Background(), client.ObjectKey{Namespace: system, Name: "controller-leader-election-capr"}, lease)).To(Succeed())
		g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).NotTo(BeEmpty())
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	NoForbidden(g, capr.Logs.String())
}

// ParseObjects splits a multi-document YAML stream into objects, skipping empty documents.
func ParseObjects(t T, stream string) []*unstructured.Unstructured {
	t.Helper()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("reading YAML: %v", err)
		}
		var m map[string]interface{}
		if err := yaml.UnmarshalStrict(doc, &m); err != nil { // strict: a duplicated key is an error
			t.Fatalf("parsing YAML document: %v\n%s", err, doc)
		}
		if len(m) == 0 {
			continue // only comments
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// ClusterctlVariable is a clusterctl variable with a default, ${NAME:=default}, as config/manager/manager.yaml uses.
var ClusterctlVariable = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*):=([^}]*)\}`)

// Tool returns the path of a binary `make test-tools` builds into bin/, failing when it is missing.
func Tool(t T, name string) string {
	t.Helper()
	path := filepath.Join(testenv.BinDir(), name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run make test-tools (%v)", path, err)
	}
	return path
}
