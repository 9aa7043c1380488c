package webhooks

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// Paths of the control-plane-endpoint guard. Its webhook configuration is config/webhook/guards.yaml: it needs
// matchConditions so that it only fires for objects that concern CAPR.
const (
	ClusterGuardPath      = "/validate-capr-cluster-controlplaneendpoint"
	ControlPlaneGuardPath = "/validate-capr-controlplane-controlplaneendpoint"
)

// EndpointGuard enforces the rule that a cluster whose control plane runs on RemoteMachines has a
// controlPlaneEndpoint (on the Cluster or on its RemoteCluster). It checks the Cluster, the control-plane object
// and, as a backstop, each control-plane RemoteMachine, so `kubectl apply` fails whatever the order of documents.
// It reads uncached: the object it must see may have been created by the previous document of the same apply.
type EndpointGuard struct {
	// APIReader reads from the apiserver.
	APIReader client.Reader
	// Mapper finds the served version of a control-plane kind.
	Mapper meta.RESTMapper
}

// SetupWebhookWithManager registers the guard's handlers.
func (g *EndpointGuard) SetupWebhookWithManager(mgr ctrl.Manager) error {
	mgr.GetWebhookServer().Register(ClusterGuardPath, &webhook.Admission{Handler: admission.HandlerFunc(g.handleCluster)})
	mgr.GetWebhookServer().Register(ControlPlaneGuardPath, &webhook.Admission{Handler: admission.HandlerFunc(g.handleControlPlane)})
	return nil
}

var clusterGK = schema.GroupKind{Group: clusterv1.GroupVersion.Group, Kind: "Cluster"}

// handleCluster checks a Cluster (v1beta1 or v1beta2) whose infrastructure is a RemoteCluster.
func (g *EndpointGuard) handleCluster(ctx context.Context, req admission.Request) admission.Response {
	cluster, old, err := decodeRequest(req)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if old != nil && equality.Semantic.DeepEqual(clusterGuardFields(old), clusterGuardFields(cluster)) {
		return admission.Allowed("")
	}
	if ok, err := g.hasEndpoint(ctx, cluster); ok || err != nil {
		return allowedOrErrored(err)
	}
	cpGroup, cpKind, cpName := reference(cluster, "spec", "controlPlaneRef")
	if cpKind == "" {
		return admission.Allowed("")
	}
	cp, err := g.get(ctx, schema.GroupKind{Group: cpGroup, Kind: cpKind}, cluster.GetNamespace(), cpName)
	if cp == nil || err != nil {
		// Not created yet: the control plane's own check catches it when it is.
		return allowedOrErrored(err)
	}
	kind, template := machineTemplateInfrastructure(cp)
	if kind != "RemoteMachineTemplate" {
		return admission.Allowed("")
	}
	return deny(apierrors.NewInvalid(clusterGK, cluster.GetName(), field.ErrorList{endpointRequired(cluster.GetName(),
		fmt.Sprintf("%s %q runs the control plane on RemoteMachines (RemoteMachineTemplate %q)", cpKind, cpName, template))}))
}

// handleControlPlane checks a control-plane object (KubeadmControlPlane, K0sControlPlane) whose machines are
// RemoteMachines, against the Cluster that references it.
func (g *EndpointGuard) handleControlPlane(ctx context.Context, req admission.Request) admission.Response {
	cp, old, err := decodeRequest(req)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	kind, template := machineTemplateInfrastructure(cp)
	if kind != "RemoteMachineTemplate" {
		return admission.Allowed("")
	}
	if old != nil {
		if oldKind, _ := machineTemplateInfrastructure(old); oldKind == kind {
			return admission.Allowed("")
		}
	}
	clusters := &clusterv1.ClusterList{}
	if err := g.APIReader.List(ctx, clusters, client.InNamespace(cp.GetNamespace())); err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	cpKind := cp.GetObjectKind().GroupVersionKind().Kind
	for i := range clusters.Items {
		c := &clusters.Items[i]
		ref := c.Spec.ControlPlaneRef
		if ref.Kind != cpKind || ref.Name != cp.GetName() {
			continue
		}
		u, err := toUnstructured(c)
		if err != nil {
			return admission.Errored(http.StatusInternalServerError, err)
		}
		if ok, err := g.hasEndpoint(ctx, u); ok || err != nil {
			if err != nil {
				return admission.Errored(http.StatusInternalServerError, err)
			}
			continue
		}
		gk := cp.GetObjectKind().GroupVersionKind().GroupKind()
		return deny(apierrors.NewInvalid(gk, cp.GetName(), field.ErrorList{endpointRequired(c.Name,
			fmt.Sprintf("%s %q runs the control plane on RemoteMachines (RemoteMachineTemplate %q)", cpKind, cp.GetName(), template))}))
	}
	return admission.Allowed("")
}

// CheckRemoteMachine is the backstop: a control-plane RemoteMachine of a Cluster with no endpoint is refused.
func (g *EndpointGuard) CheckRemoteMachine(ctx context.Context, m *infrav1.RemoteMachine) field.ErrorList {
	clusterName := m.Labels[pool.ClusterNameLabel]
	if !hasLabel(m.Labels, pool.ControlPlaneLabel) || clusterName == "" {
		return nil
	}
	cluster, err := g.get(ctx, clusterGK, m.Namespace, clusterName)
	if cluster == nil || err != nil {
		if err != nil {
			return field.ErrorList{field.InternalError(field.NewPath("metadata", "labels").Key(pool.ClusterNameLabel), err)}
		}
		return nil
	}
	if ok, err := g.hasEndpoint(ctx, cluster); ok || err != nil {
		if err != nil {
			return field.ErrorList{field.InternalError(field.NewPath("metadata", "labels").Key(pool.ClusterNameLabel), err)}
		}
		return nil
	}
	return field.ErrorList{endpointRequired(clusterName, fmt.Sprintf("RemoteMachine %q is one of its control-plane machines", m.Name))}
}

func endpointRequired(cluster, why string) *field.Error {
	return field.Required(field.NewPath("spec", "controlPlaneEndpoint"), fmt.Sprintf(
		"Cluster %q must set spec.controlPlaneEndpoint because %s; add spec.controlPlaneEndpoint with the host "+
			"(IP address or DNS name of a load balancer or virtual IP in front of the control-plane hosts, or of the "+
			"first control-plane host) and port (usually 6443) to the Cluster, or to its RemoteCluster", cluster, why))
}

// hasEndpoint says whether a Cluster (unstructured, v1beta1 or v1beta2) or its RemoteCluster has an endpoint host.
func (g *EndpointGuard) hasEndpoint(ctx context.Context, cluster *unstructured.Unstructured) (bool, error) {
	if host, _, _ := unstructured.NestedString(cluster.Object, "spec", "controlPlaneEndpoint", "host"); host != "" {
		return true, nil
	}
	group, kind, name := reference(cluster, "spec", "infrastructureRef")
	if kind != "RemoteCluster" || group != infrav1.GroupVersion.Group {
		return false, nil
	}
	rc := &infrav1.RemoteCluster{}
	err := g.APIReader.Get(ctx, types.NamespacedName{Namespace: cluster.GetNamespace(), Name: name}, rc)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil && rc.Spec.ControlPlaneEndpoint.Host != "", err
}

// get reads an object of any kind at its preferred version; a kind or object that does not exist is nil, nil.
func (g *EndpointGuard) get(ctx context.Context, gk schema.GroupKind, namespace, name string) (*unstructured.Unstructured, error) {
	mapping, err := g.Mapper.RESTMapping(gk)
	if meta.IsNoMatchError(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(mapping.GroupVersionKind)
	err = g.APIReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, u)
	// CAPR may read only the control-plane kinds it knows (KubeadmControlPlane, K0sControlPlane,
	// K0smotronControlPlane): another kind's machines are not CAPR's to check.
	if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return u, nil
}

// reference reads an object reference in either Cluster API shape: v1beta2 {apiGroup, kind, name} or v1beta1
// {apiVersion, kind, name}.
func reference(u *unstructured.Unstructured, path ...string) (group, kind, name string) {
	ref, _, _ := unstructured.NestedMap(u.Object, path...)
	kind, _ = ref["kind"].(string)
	name, _ = ref["name"].(string)
	if group, _ = ref["apiGroup"].(string); group == "" {
		apiVersion, _ := ref["apiVersion"].(string)
		group, _, _ = strings.Cut(apiVersion, "/")
		if !strings.Contains(apiVersion, "/") {
			group = ""
		}
	}
	return group, kind, name
}

// machineTemplateInfrastructure returns the kind and name of a control plane's machine infrastructure template:
// spec.machineTemplate.infrastructureRef (KubeadmControlPlane v1beta1, K0sControlPlane) or
// spec.machineTemplate.spec.infrastructureRef (KubeadmControlPlane v1beta2).
func machineTemplateInfrastructure(cp *unstructured.Unstructured) (kind, name string) {
	for _, path := range [][]string{{"spec", "machineTemplate", "spec", "infrastructureRef"}, {"spec", "machineTemplate", "infrastructureRef"}} {
		if _, kind, name = reference(cp, path...); kind != "" {
			return kind, name
		}
	}
	return "", ""
}

// clusterGuardFields are the Cluster fields the guard depends on.
func clusterGuardFields(u *unstructured.Unstructured) []any {
	ep, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "controlPlaneEndpoint")
	cp, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "controlPlaneRef")
	infra, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "infrastructureRef")
	return []any{ep, cp, infra}
}

func decodeRequest(req admission.Request) (obj, old *unstructured.Unstructured, err error) {
	obj = &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(req.Object.Raw); err != nil {
		return nil, nil, err
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace(req.Namespace)
	}
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		old = &unstructured.Unstructured{}
		if err := old.UnmarshalJSON(req.OldObject.Raw); err != nil {
			return nil, nil, err
		}
	}
	return obj, old, nil
}

func toUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetNamespace(obj.GetNamespace())
	return u, nil
}

func allowedOrErrored(err error) admission.Response {
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.Allowed("")
}

func deny(err *apierrors.StatusError) admission.Response {
	status := err.Status()
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: false, Result: &status}}
}
