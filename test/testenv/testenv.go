// Package testenv starts the management plane every CAPR integration test runs against: a real kube-apiserver and
// etcd (built from the Go module proxy into bin/ by `make test-tools`), CAPR's CRDs and Cluster API v1.14's CRDs,
// and a controller-runtime webhook server that the apiserver calls over TLS. The webhook server serves CAPR's
// webhooks and Cluster API's own conversion and admission webhooks for Cluster, Machine, MachineSet and
// MachineDeployment, so `cluster.x-k8s.io/v1beta1` documents are converted to the v1beta2 storage version for real.
package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	controlplanev1 "sigs.k8s.io/cluster-api/api/controlplane/kubeadm/v1beta2"
	clusterv1beta1 "sigs.k8s.io/cluster-api/api/core/v1beta1" //nolint:staticcheck // the v1beta1 documents users apply are converted through it
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	coreadmission "sigs.k8s.io/cluster-api/core/webhooks/admission"
	capiconversion "sigs.k8s.io/cluster-api/core/webhooks/conversion"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/manager"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// CAPIWebhookResources are the Cluster API kinds whose admission webhooks the environment serves.
var CAPIWebhookResources = []string{"clusters", "machines", "machinesets", "machinedeployments"}

var setAPIVersionGetter sync.Once

// Options customise an Environment.
type Options struct {
	// Manager runs CAPR's controllers in the environment's manager, with these settings (manager.DefaultOptions()
	// and a test's knobs); the environment sets the scheme, servers and namespace. Nil serves the webhooks only.
	Manager *manager.Options
	// Setup registers extra controllers or webhooks with the environment's manager (e.Manager) before it starts.
	Setup func(e *Environment) error
	// ExtraCRDPaths are more CRD files or directories to install.
	ExtraCRDPaths []string
	// Quiet logs errors only.
	Quiet bool
	// LogTo also receives the manager's logs (for scanning them for secrets).
	LogTo io.Writer
}

// Environment is a running management plane.
type Environment struct {
	// Config reaches the apiserver as an administrator.
	Config *rest.Config
	// Client is an uncached client with CAPR's and Cluster API's kinds in its scheme.
	Client client.Client
	// Manager is the running manager serving the webhooks; Manager.GetClient() is its cached client.
	Manager ctrl.Manager
	// Claimer is the pool claimer the webhooks use; controllers under test share it.
	Claimer *pool.Claimer
	// Scheme knows every kind the environment serves.
	Scheme *kruntime.Scheme
	// Kubeconfig is the path of an administrator kubeconfig file, for bin/kubectl.
	Kubeconfig string
	// ManagerKubeconfig is a kubeconfig with the in-process manager's own identity, for a manager process whose
	// writes CAPR's in-process webhooks must accept as CAPR's.
	ManagerKubeconfig string
	// RootDir is the repository root; BinDir holds the tool binaries.
	RootDir, BinDir string
	// WebhookCertDir, WebhookHost and WebhookPort are where the webhook server serves; a test may start another
	// webhook server (a manager process) with the same certificate.
	WebhookCertDir string
	WebhookHost    string
	WebhookPort    int

	env          *envtest.Environment
	kubectlCache string
	cancel       context.CancelFunc
	done         chan error
}

// ManagerNamespace is the namespace the test manager acts as running in.
const ManagerNamespace = "capr-system"

// RootDir returns the repository root.
func RootDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BinDir returns the directory holding kube-apiserver, etcd and kubectl: $CAPR_BIN_DIR or <root>/bin.
func BinDir() string {
	if d := os.Getenv("CAPR_BIN_DIR"); d != "" {
		return d
	}
	return filepath.Join(RootDir(), "bin")
}

// NewScheme returns a scheme with the kinds the environment serves.
func NewScheme() *kruntime.Scheme {
	s := kruntime.NewScheme()
	for _, add := range []func(*kruntime.Scheme) error{
		clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, clusterv1.AddToScheme, clusterv1beta1.AddToScheme,
		infrav1.AddToScheme, controlplanev1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// ModuleDir returns the directory of a Go module in the module cache, e.g. sigs.k8s.io/cluster-api.
func ModuleDir(module string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = RootDir()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locating module %s: %w", module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("module %s is not downloaded; run 'go mod download'", module)
	}
	return dir, nil
}

// Start starts kube-apiserver and etcd, installs the CRDs and webhooks, and starts a manager serving the webhooks.
func Start(opts Options) (*Environment, error) {
	var out io.Writer = os.Stderr
	if opts.LogTo != nil {
		out = io.MultiWriter(os.Stderr, opts.LogTo)
	}
	logOpts := []zap.Opts{zap.WriteTo(out)}
	if opts.Quiet {
		logOpts = append(logOpts, zap.Level(zapcore.ErrorLevel))
	}
	ctrl.SetLogger(zap.New(logOpts...))
	root, bin := RootDir(), BinDir()
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run 'make test-tools' first", b, bin)
		}
	}
	capiDir, err := ModuleDir("sigs.k8s.io/cluster-api")
	if err != nil {
		return nil, err
	}
	capiMutating, capiValidating, err := capiWebhookConfigurations(filepath.Join(capiDir, "core", "config", "webhook", "manifests.yaml"))
	if err != nil {
		return nil, err
	}

	scheme := NewScheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDInstallOptions: envtest.CRDInstallOptions{
			Scheme: scheme,
			Paths: append([]string{
				filepath.Join(root, "config", "crd", "bases"),
				filepath.Join(capiDir, "core", "config", "crd", "bases"),
				filepath.Join(capiDir, "controlplane", "kubeadm", "config", "crd", "bases"),
				filepath.Join(capiDir, "bootstrap", "kubeadm", "config", "crd", "bases"),
				filepath.Join(root, "test", "testenv", "testdata"),
			}, opts.ExtraCRDPaths...),
			ErrorIfPathMissing: true,
		},
		WebhookInstallOptions: envtest.WebhookInstallOptions{
			Paths:              []string{filepath.Join(root, "config", "webhook")},
			MutatingWebhooks:   capiMutating,
			ValidatingWebhooks: capiValidating,
			// Cluster API's types convert through registered converters, not Hub/Convertible methods, so point
			// every CRD's conversion at the local webhook server.
			IgnoreSchemeConvertible: true,
		},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", bin, err)
	}
	e := &Environment{Config: cfg, Scheme: scheme, RootDir: root, BinDir: bin, env: env,
		WebhookCertDir: env.WebhookInstallOptions.LocalServingCertDir,
		WebhookHost:    env.WebhookInstallOptions.LocalServingHost,
		WebhookPort:    env.WebhookInstallOptions.LocalServingPort}
	if err := e.start(opts); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return e, nil
}

func (e *Environment) start(opts Options) error {
	var err error
	if e.Client, err = client.New(e.Config, client.Options{Scheme: e.Scheme}); err != nil {
		return err
	}
	if e.Kubeconfig, err = writeAdminKubeconfig(e.env); err != nil {
		return err
	}
	if e.ManagerKubeconfig, err = writeConfig(e.Config); err != nil {
		return err
	}
	if e.kubectlCache, err = os.MkdirTemp("", "capr-kubectl-cache-"); err != nil {
		return err
	}
	// The manager is CAPR's, set up as installed; by default it serves the webhooks only (a test runs the
	// controllers in process with opts.Manager, or as a manager process).
	mo := manager.DefaultOptions()
	mo.WebhooksOnly = true
	if opts.Manager != nil {
		mo = *opts.Manager
	}
	mo.Scheme, mo.ManagerNamespace = e.Scheme, ManagerNamespace
	mo.WebhookHost, mo.WebhookPort, mo.WebhookCertDir = e.WebhookHost, e.WebhookPort, e.WebhookCertDir
	mo.Metrics, mo.HealthAddr, mo.LeaderElection = metricsserver.Options{BindAddress: "0"}, "0", false
	mgr, err := manager.New(e.Config, mo)
	if err != nil {
		return err
	}
	e.Manager = mgr
	// The getter is global to the process; the first environment's answers for a second one too (a test's second
	// management cluster), as both have the same CRDs, and it outlives the second one.
	setAPIVersionGetter.Do(func() {
		capiconversion.SetAPIVersionGetter(func(ctx context.Context, gk schema.GroupKind) (string, error) {
			return ContractAPIVersion(ctx, mgr.GetAPIReader(), gk)
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	e.Claimer = pool.NewClaimer(mgr)
	mo.Claimer = e.Claimer
	// The manager's own namespace holds the Leases of the hosts offered by pool entries.
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ManagerNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := manager.Setup(ctx, mgr, mo); err != nil {
		return err
	}
	// Cluster API's manager does not run here: the environment serves its webhooks.
	for _, w := range []interface{ SetupWebhookWithManager(ctrl.Manager) error }{
		&coreadmission.Cluster{Client: mgr.GetAPIReader()},
		&coreadmission.Machine{},
		&coreadmission.MachineSet{},
		&coreadmission.MachineDeployment{},
	} {
		if err := w.SetupWebhookWithManager(mgr); err != nil {
			return err
		}
	}
	if opts.Setup != nil {
		if err := opts.Setup(e); err != nil {
			return err
		}
	}
	go func() { e.done <- mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return errors.New("manager cache did not sync")
	}
	return WaitForTLS(ctx, net.JoinHostPort(e.WebhookHost, strconv.Itoa(e.WebhookPort)), time.Minute)
}

// WaitForTLS waits until a TLS server answers a handshake at addr.
func WaitForTLS(ctx context.Context, addr string, timeout time.Duration) error {
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return false, nil
		}
		_ = conn.Close()
		return true, nil
	})
}

// Stop stops the manager, kube-apiserver and etcd.
func (e *Environment) Stop() error {
	if e.cancel != nil {
		e.cancel()
		if err := <-e.done; err != nil {
			fmt.Fprintf(os.Stderr, "manager stopped with an error: %v\n", err)
		}
	}
	_ = os.RemoveAll(e.kubectlCache)
	_ = os.Remove(e.Kubeconfig)
	_ = os.Remove(e.ManagerKubeconfig)
	return e.env.Stop()
}

// Run is a TestMain body: it starts the environment, runs the package's tests and stops it.
func Run(m *testing.M, opts Options, env **Environment) int {
	e, err := Start(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the test environment: %v\n", err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the test environment: %v\n", err)
	}
	return code
}

// NewNamespace creates a namespace for one test and deletes it when the test ends.
func (e *Environment) NewNamespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "capr-test-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), ns) })
	return ns.Name
}

// Kubectl runs bin/kubectl against the environment with stdin as input and returns stdout, stderr and the error.
func (e *Environment) Kubectl(ctx context.Context, stdin string, args ...string) (string, string, error) {
	base := []string{"--kubeconfig", e.Kubeconfig, "--cache-dir", e.kubectlCache}
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "kubectl"), append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// writeAdminKubeconfig writes a kubeconfig file of a system:masters user of the environment's apiserver.
func writeAdminKubeconfig(env *envtest.Environment) (string, error) {
	user, err := env.AddUser(envtest.User{Name: "capr-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", err
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "capr-kubeconfig-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = f.Write(data)
	return f.Name(), err
}

// APIServer is a bare management plane: kube-apiserver and etcd from bin/ with nothing installed, for tests that
// install CAPR the way users do (clusterctl, Helm).
type APIServer struct {
	// Config reaches the apiserver as an administrator.
	Config *rest.Config
	// Client is an uncached administrator client with CAPR's and Cluster API's kinds in its scheme.
	Client client.Client
	// Kubeconfig is the path of an administrator kubeconfig file.
	Kubeconfig string

	env *envtest.Environment
}

// StartAPIServer starts kube-apiserver and etcd from bin/, with RBAC authorization and service-account tokens.
func StartAPIServer() (*APIServer, error) {
	env := &envtest.Environment{BinaryAssetsDirectory: BinDir()}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", BinDir(), err)
	}
	a := &APIServer{Config: cfg, env: env}
	if a.Client, err = client.New(cfg, client.Options{Scheme: NewScheme()}); err == nil {
		a.Kubeconfig, err = writeAdminKubeconfig(env)
	}
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return a, nil
}

// Stop stops kube-apiserver and etcd.
func (a *APIServer) Stop() error {
	_ = os.Remove(a.Kubeconfig)
	return a.env.Stop()
}

// ContractAPIVersion returns the apiVersion Cluster API uses for a kind: the newest version its CRD lists under the
// newest contract label (cluster.x-k8s.io/v1beta2, then cluster.x-k8s.io/v1beta1).
func ContractAPIVersion(ctx context.Context, c client.Reader, gk schema.GroupKind) (string, error) {
	crds := &apiextensionsv1.CustomResourceDefinitionList{}
	if err := c.List(ctx, crds); err != nil {
		return "", err
	}
	for _, crd := range crds.Items {
		if crd.Spec.Group != gk.Group || crd.Spec.Names.Kind != gk.Kind {
			continue
		}
		for _, contract := range []string{"v1beta2", "v1beta1"} {
			if versions := crd.Labels[clusterv1.GroupVersion.Group+"/"+contract]; versions != "" {
				list := strings.Split(versions, "_")
				return schema.GroupVersion{Group: gk.Group, Version: list[len(list)-1]}.String(), nil
			}
		}
		return "", fmt.Errorf("CRD %s has no cluster.x-k8s.io contract label", crd.Name)
	}
	return "", fmt.Errorf("no CRD for %s", gk)
}

// capiWebhookConfigurations reads Cluster API's webhook manifest and keeps the webhooks for CAPIWebhookResources,
// under names that do not clash with CAPR's own configurations.
func capiWebhookConfigurations(path string) ([]*admissionv1.MutatingWebhookConfiguration, []*admissionv1.ValidatingWebhookConfiguration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var mutating []*admissionv1.MutatingWebhookConfiguration
	var validating []*admissionv1.ValidatingWebhookConfiguration
	wanted := func(rules []admissionv1.RuleWithOperations) bool {
		for _, r := range rules {
			for _, res := range r.Resources {
				if slices.Contains(CAPIWebhookResources, res) {
					return true
				}
			}
		}
		return false
	}
	for _, doc := range strings.Split(string(data), "\n---") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, nil, err
		}
		switch meta.Kind {
		case "MutatingWebhookConfiguration":
			cfg := &admissionv1.MutatingWebhookConfiguration{}
			if err := yaml.Unmarshal([]byte(doc), cfg); err != nil {
				return nil, nil, err
			}
			cfg.Name = "capi-" + cfg.Name
			cfg.Webhooks = slices.DeleteFunc(cfg.Webhooks, func(w admissionv1.MutatingWebhook) bool { return !wanted(w.Rules) })
			mutating = append(mutating, cfg)
		case "ValidatingWebhookConfiguration":
			cfg := &admissionv1.ValidatingWebhookConfiguration{}
			if err := yaml.Unmarshal([]byte(doc), cfg); err != nil {
				return nil, nil, err
			}
			cfg.Name = "capi-" + cfg.Name
			cfg.Webhooks = slices.DeleteFunc(cfg.Webhooks, func(w admissionv1.ValidatingWebhook) bool { return !wanted(w.Rules) })
			validating = append(validating, cfg)
		}
	}
	if len(mutating) == 0 || len(validating) == 0 {
		return nil, nil, fmt.Errorf("no webhook configurations in %s", path)
	}
	return mutating, validating, nil
}

// writeConfig writes a rest.Config (certificate authentication) as a kubeconfig file.
func writeConfig(cfg *rest.Config) (string, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["manager"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "manager"}
	kc.CurrentContext = "envtest"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "capr-manager-kubeconfig-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = f.Write(data)
	return f.Name(), err
}

// LabelCRDsAsClusterctlInstalled labels every CRD as `clusterctl init` labels the components it installs; clusterctl
// move only discovers kinds whose CRD carries the label.
func (e *Environment) LabelCRDsAsClusterctlInstalled(ctx context.Context) error {
	crds := &apiextensionsv1.CustomResourceDefinitionList{}
	if err := e.Client.List(ctx, crds); err != nil {
		return err
	}
	for i := range crds.Items {
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"clusterctl.cluster.x-k8s.io":""}}}`))
		if err := e.Client.Patch(ctx, &crds.Items[i], patch); err != nil {
			return err
		}
	}
	return nil
}
