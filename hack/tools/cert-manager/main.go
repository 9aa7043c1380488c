// Command cert-manager runs real cert-manager code against a kube-apiserver,
// in one process, for CAPR's integration tests (envtest), where no container
// image of cert-manager can be pulled.
//
// cert-manager's own binaries (cmd/controller, cmd/cainjector) are separate Go
// modules that the module proxy does not serve, so this program wires the same
// library code that they wire, from the main module
// github.com/cert-manager/cert-manager:
//
//   - pkg/controller: the ContextFactory and the registry of known controllers
//     (controller.Known). The packages imported below register themselves in
//     it; this program starts the ones cert-manager needs to issue a
//     Certificate from a SelfSigned or CA Issuer/ClusterIssuer:
//   - pkg/controller/issuers, pkg/controller/clusterissuers (with the issuer
//     implementations pkg/issuer/selfsigned and pkg/issuer/ca),
//   - pkg/controller/certificaterequests/{approver,selfsigned,ca},
//   - pkg/controller/certificates/{trigger,issuing,keymanager,requestmanager,
//     readiness,revisionmanager} (the certificates controllers that
//     cert-manager's controller enables by default).
//   - pkg/controller/cainjector: the CA injector, for
//     Validating/MutatingWebhookConfigurations, CustomResourceDefinitions and
//     APIServices (annotations cert-manager.io/inject-ca-from,
//     cert-manager.io/inject-ca-from-secret, cert-manager.io/inject-apiserver-ca),
//     run by a controller-runtime manager as cmd/cainjector does.
//
// ACME, Vault and Venafi issuers, the ingress/gateway shims and cert-manager's
// webhook (defaulting/validation) are not run. Leader election is off, no
// metrics/health port is opened, logs go to stderr (klog; -v=N for more).
//
// With --install-crds the program first applies the CRDs found in --crds-dir
// (server-side apply) and waits until they are Established. The plain CRDs ship
// in the cert-manager module as deploy/crds/*.yaml:
//
//	CRDS="$(go -C hack/tools/cert-manager list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)/deploy/crds"
//	bin/cert-manager --kubeconfig "$KUBECONFIG" --install-crds --crds-dir "$CRDS"
//
// SIGINT and SIGTERM stop every controller and the program exits 0.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	apireg "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	cmscheme "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned/scheme"
	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	crapprover "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Issuer implementations used by the issuers/clusterissuers controllers.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// controllers are the names (as in controller.Known) of the controllers run.
var controllers = []string{
	issuers.ControllerName,
	clusterissuers.ControllerName,
	crapprover.ControllerName,
	crselfsigned.CRControllerName,
	crca.CRControllerName,
	trigger.ControllerName,
	issuing.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	readiness.ControllerName,
	revisionmanager.ControllerName,
}

const fieldManager = "capr-cert-manager-crds"

func main() {
	// An own FlagSet: controller-runtime registers --kubeconfig on flag.CommandLine.
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "path to the kubeconfig of the kube-apiserver (required)")
	installCRDs := fs.Bool("install-crds", false, "apply the CRDs in --crds-dir and wait until they are Established before starting")
	crdsDir := fs.String("crds-dir", "", "directory of cert-manager's plain CRD YAML files (deploy/crds of the cert-manager module)")
	clusterResourceNamespace := fs.String("cluster-resource-namespace", "kube-system", "namespace holding the Secrets of ClusterIssuers")
	workers := fs.Int("workers", 5, "workers per cert-manager controller")
	klog.InitFlags(fs) // -v etc.; klog writes to stderr
	_ = fs.Parse(os.Args[1:])

	logf.InitLogs()
	defer logf.FlushLogs()
	ctrl.SetLogger(logf.Log)
	log := logf.Log.WithName("capr-cert-manager")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log)

	err := run(ctx, *kubeconfig, *installCRDs, *crdsDir, *clusterResourceNamespace, *workers)
	if err != nil && ctx.Err() == nil { // an error caused by a signal is a clean stop
		log.Error(err, "exiting")
		logf.FlushLogs()
		os.Exit(1)
	}
	log.Info("stopped")
}

func run(ctx context.Context, kubeconfig string, installCRDs bool, crdsDir, clusterResourceNamespace string, workers int) error {
	if kubeconfig == "" {
		return fmt.Errorf("--kubeconfig is required")
	}
	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	if installCRDs {
		if crdsDir == "" {
			return fmt.Errorf("--install-crds needs --crds-dir")
		}
		if err := applyCRDs(ctx, restConfig, crdsDir); err != nil {
			return err
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	if err := startController(ctx, g, kubeconfig, clusterResourceNamespace, workers); err != nil {
		return err
	}
	g.Go(func() error { return runCAInjector(ctx, restConfig) })
	return g.Wait()
}

// startController does what cmd/controller/app.Run does for the chosen
// controllers: build them from the ContextFactory, run them, then start the
// shared informers they registered.
func startController(ctx context.Context, g *errgroup.Group, kubeconfig, clusterResourceNamespace string, workers int) error {
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   20, // cert-manager's defaults
		KubernetesAPIBurst: 50,
		IssuerOptions:      controller.IssuerOptions{ClusterResourceNamespace: clusterResourceNamespace},
		CertificateOptions: controller.CertificateOptions{
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return fmt.Errorf("building cert-manager controller context: %w", err)
	}
	cctx, err := factory.Build()
	if err != nil {
		return err
	}
	for _, name := range controllers {
		constructor, ok := controller.Known()[name]
		if !ok {
			return fmt.Errorf("cert-manager controller %q is not registered", name)
		}
		c, err := constructor(factory)
		if err != nil {
			return fmt.Errorf("creating cert-manager controller %q: %w", name, err)
		}
		logf.FromContext(ctx).Info("starting controller", "controller", name)
		g.Go(func() error { return c.Run(workers, ctx) })
	}
	cctx.SharedInformerFactory.Start(ctx.Done())
	cctx.KubeSharedInformerFactory.Start(ctx.Done())
	cctx.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	g.Go(func() error {
		<-ctx.Done()
		cctx.SharedInformerFactory.Shutdown()
		cctx.KubeSharedInformerFactory.Shutdown()
		cctx.HTTP01ResourceMetadataInformersFactory.Shutdown()
		return nil
	})
	return nil
}

// runCAInjector does what cmd/cainjector/app.Run does, with leader election
// and the metrics server off, and every injectable kind enabled.
func runCAInjector(ctx context.Context, restConfig *rest.Config) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(kscheme.AddToScheme(scheme))
	utilruntime.Must(cmscheme.AddToScheme(scheme))
	utilruntime.Must(apiextv1.AddToScheme(scheme))
	utilruntime.Must(apireg.AddToScheme(scheme))

	cfg := rest.CopyConfig(restConfig)
	cfg.UserAgent = "cert-manager-cainjector"
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Cache:   cache.Options{ReaderFailOnMissingInformer: true},
		Client:  client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		return fmt.Errorf("creating cainjector manager: %w", err)
	}
	// As cmd/cainjector: the Certificate data source needs the Certificate CRD.
	cs := apiextclient.NewForConfigOrDie(cfg)
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "certificates.cert-manager.io", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("waiting for the certificates.cert-manager.io CRD: %w", err)
	}
	if err := cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		EnableCertificatesDataSource: true,
		EnabledReconcilersFor: map[string]bool{
			cainjector.MutatingWebhookConfigurationName:   true,
			cainjector.ValidatingWebhookConfigurationName: true,
			cainjector.APIServiceName:                     true,
			cainjector.CustomResourceDefinitionName:       true,
		},
	}); err != nil {
		return fmt.Errorf("registering cainjector controllers: %w", err)
	}
	logf.FromContext(ctx).Info("starting cainjector")
	return mgr.Start(ctx)
}

// applyCRDs server-side applies every CustomResourceDefinition in dir/*.yaml
// and waits until each is Established.
func applyCRDs(ctx context.Context, restConfig *rest.Config, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no *.yaml in --crds-dir %s", dir)
	}
	cs, err := apiextclient.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	log := logf.FromContext(ctx)
	var names []string
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte("{{")) {
			return fmt.Errorf("%s is a Helm template; use the plain CRDs of deploy/crds, not deploy/charts", file)
		}
		reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := reader.Read()
			if err == io.EOF {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			var crd apiextv1.CustomResourceDefinition
			if err := yaml.Unmarshal(js, &crd); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			if crd.Kind != "CustomResourceDefinition" {
				continue // empty document or other kind
			}
			force := true
			if _, err := cs.ApiextensionsV1().CustomResourceDefinitions().Patch(ctx, crd.Name, types.ApplyPatchType, js,
				metav1.PatchOptions{FieldManager: fieldManager, Force: &force}); err != nil {
				return fmt.Errorf("applying CRD %s: %w", crd.Name, err)
			}
			log.Info("applied CRD", "name", crd.Name)
			names = append(names, crd.Name)
		}
	}
	for _, name := range names {
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			crd, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextv1.Established && c.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		}); err != nil {
			return fmt.Errorf("CRD %s not Established: %w", name, err)
		}
	}
	log.Info("CRDs established", "count", len(names))
	return nil
}
