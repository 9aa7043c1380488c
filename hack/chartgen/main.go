// Command chartgen writes the Helm chart's templates from config/: it reads the clusterctl components (`kustomize
// build config/default` on stdin) and writes each object into the chart's templates with the chart's values put in
// (release namespace, name prefix, labels, cert-manager or given certificates, image and manager flags). `make
// manifests` runs it, so the chart never copies config/ by hand and `make verify-generate` catches drift.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// object is one decoded document of the kustomize output.
type object = map[string]any

// fileOf says which template file holds objects of a kind; the webhook configurations are split by name.
var fileOf = map[string]string{
	"ServiceAccount":                   "serviceaccount.yaml",
	"Role":                             "rbac.yaml",
	"RoleBinding":                      "rbac.yaml",
	"ClusterRole":                      "rbac.yaml",
	"ClusterRoleBinding":               "rbac.yaml",
	"Service":                          "service.yaml",
	"Deployment":                       "deployment.yaml",
	"PodDisruptionBudget":              "pdb.yaml",
	"ValidatingAdmissionPolicy":        "manager-policy.yaml",
	"ValidatingAdmissionPolicyBinding": "manager-policy.yaml",
	"Certificate":                      "certificate.yaml",
	"Issuer":                           "certificate.yaml",
	"MutatingWebhookConfiguration":     "webhooks.yaml",
	"ValidatingWebhookConfiguration":   "webhooks.yaml",
}

// guardConfiguration is the webhook configuration of the control-plane-endpoint guard (config/webhook/guards.yaml).
const guardConfiguration = "controlplane-endpoint-guard"

// sources name the config/ files each template comes from, for its header.
var sources = map[string]string{
	"serviceaccount.yaml":              "config/rbac/service_account.yaml",
	"rbac.yaml":                        "config/rbac (role.yaml is generated from the +kubebuilder:rbac markers)",
	"service.yaml":                     "config/webhook/service.yaml",
	"deployment.yaml":                  "config/manager/manager.yaml",
	"pdb.yaml":                         "config/manager/pdb.yaml",
	"manager-policy.yaml":              "config/rbac/manager_policy.yaml (which says why)",
	"certificate.yaml":                 "config/certmanager",
	"webhooks.yaml":                    "config/webhook/manifests.yaml (generated from the +kubebuilder:webhook markers) and config/webhook/kustomization.yaml's patch",
	"controlplane-endpoint-guard.yaml": "config/webhook/guards.yaml",
}

// wrappers are the conditions a whole template file is rendered under.
var wrappers = map[string][2]string{
	"certificate.yaml": {"{{- if .Values.certManager.enabled }}", "{{- end }}"},
	"pdb.yaml":         {"{{- if .Values.podDisruptionBudget.enabled }}", "{{- end }}"},
}

// needsCertificates are the templates that fail rendering when no webhook certificate is issued or given.
var needsCertificates = map[string]bool{"webhooks.yaml": true, "controlplane-endpoint-guard.yaml": true, "deployment.yaml": true}

// managerFlag is a manager flag config/manager/manager.yaml sets from a clusterctl variable, and its chart value.
type managerFlag struct {
	value string // key in values.yaml
	isInt bool
}

// managerFlags maps the clusterctl variables of config/manager/manager.yaml to the chart's values.
var managerFlags = map[string]managerFlag{
	"CAPR_DIAGNOSTICS_ADDRESS":                 {value: "diagnosticsAddress"},
	"CAPR_INSECURE_DIAGNOSTICS":                {value: "insecureDiagnostics"},
	"CAPR_SYNC_PERIOD":                         {value: "syncPeriod"},
	"CAPR_REMOTEMACHINE_CONCURRENCY":           {value: "remoteMachineConcurrency", isInt: true},
	"CAPR_BOOTSTRAP_CONCURRENCY":               {value: "bootstrapConcurrency", isInt: true},
	"CAPR_BOOTSTRAP_CONCURRENCY_PER_NAMESPACE": {value: "bootstrapConcurrencyPerNamespace", isInt: true},
	"CAPR_CLEANUP_CONCURRENCY":                 {value: "cleanupConcurrency", isInt: true},
	"CAPR_BOOTSTRAP_TIMEOUT":                   {value: "bootstrapTimeout"},
	"CAPR_CLEANUP_TIMEOUT":                     {value: "cleanupTimeout"},
	"CAPR_ORPHAN_CLAIM_GRACE":                  {value: "orphanClaimGrace"},
	"CAPR_POOL_PROBE_INTERVAL":                 {value: "poolProbeInterval"},
	"CAPR_LOG_LEVEL":                           {value: "logLevel", isInt: true},
	"CAPR_REPLICAS":                            {value: "replicas", isInt: true},
}

const (
	providerLabel = "cluster.x-k8s.io/provider"
	injectCAFrom  = "cert-manager.io/inject-ca-from"
)

var (
	clusterctlVar = regexp.MustCompile(`^\$\{(CAPR_[A-Z_]+):=(.*)\}$`)
	flagWithVar   = regexp.MustCompile(`^(--[a-z-]+)=\$\{(CAPR_[A-Z_]+):=(.*)\}$`)
	prefixedName  = regexp.MustCompile(`capr-[a-z0-9-]*[a-z0-9]`)
	blockLine     = regexp.MustCompile(`^( *)(- )?[^ :]+: __capr_block_(\d+)__$`)
	exprToken     = regexp.MustCompile(`__capr_expr_(\d+)__`)
	nameToken     = regexp.MustCompile(`__capr_name__([a-z0-9-]+?)__`)
)

// generator turns the kustomize objects into templates.
type generator struct {
	prefix    string // kustomize's namePrefix
	namespace string // the components' namespace
	names     map[string]bool
	certName  string // the webhook serving Secret
	values    map[string]any
	blocks    []func(indent int) []string
	exprs     []string
}

func main() {
	out := flag.String("out", "charts/cluster-api-provider-remote/templates", "directory the templates are written to")
	valuesFile := flag.String("values", "charts/cluster-api-provider-remote/values.yaml", "the chart's values, which the defaults in config/ must equal")
	flag.Parse()
	if err := run(os.Stdin, *out, *valuesFile); err != nil {
		fmt.Fprintf(os.Stderr, "chartgen: %v\n", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out, valuesFile string) error {
	objs, err := decode(in)
	if err != nil {
		return err
	}
	valuesData, err := os.ReadFile(valuesFile)
	if err != nil {
		return err
	}
	g := &generator{prefix: "capr-", names: map[string]bool{}}
	if err := yaml.Unmarshal(valuesData, &g.values); err != nil {
		return fmt.Errorf("%s: %w", valuesFile, err)
	}
	if p, ok := g.values["namePrefix"].(string); ok {
		g.prefix = p
	}
	for _, o := range objs {
		name := str(o, "metadata", "name")
		g.names[name] = true
		switch kind(o) {
		case "Namespace":
			g.namespace = name
		case "Certificate":
			g.certName = str(o, "spec", "secretName")
		}
	}
	if g.namespace == "" {
		return errors.New("config/default renders no Namespace")
	}
	files := map[string][]string{}
	var order []string
	for _, o := range objs {
		k := kind(o)
		if k == "Namespace" || k == "CustomResourceDefinition" { // helm --create-namespace; crds/ is copied
			continue
		}
		file, ok := fileOf[k]
		if !ok {
			return fmt.Errorf("config/default renders a %s (%s) that the chart has no template for: add it to fileOf in hack/chartgen", k, str(o, "metadata", "name"))
		}
		if k == "ValidatingWebhookConfiguration" && str(o, "metadata", "name") == g.prefix+guardConfiguration {
			file = "controlplane-endpoint-guard.yaml"
		}
		text, err := g.template(o)
		if err != nil {
			return fmt.Errorf("%s %s: %w", k, str(o, "metadata", "name"), err)
		}
		if _, seen := files[file]; !seen {
			order = append(order, file)
		}
		files[file] = append(files[file], text)
	}
	sort.Strings(order)
	for _, file := range order {
		var b strings.Builder
		if needsCertificates[file] {
			b.WriteString("{{- include \"capr.validateCertificates\" . -}}\n")
		}
		fmt.Fprintf(&b, "# Generated by hack/chartgen (make manifests) from %s: edit config/, not this file.\n", sources[file])
		w, wrapped := wrappers[file]
		if wrapped {
			b.WriteString(w[0] + "\n")
		}
		b.WriteString(strings.Join(files[file], "---\n"))
		if wrapped {
			b.WriteString(w[1] + "\n")
		}
		if err := os.WriteFile(filepath.Join(out, file), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// decode reads every non-empty document of a YAML stream.
func decode(in io.Reader) ([]object, error) {
	dec := yaml.NewDecoder(in)
	var objs []object
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(o) > 0 {
			objs = append(objs, o)
		}
	}
}

// template returns an object as template text.
func (g *generator) template(o object) (string, error) {
	k, name := kind(o), str(o, "metadata", "name")
	meta := o["metadata"].(map[string]any)
	if err := g.metadata(meta); err != nil {
		return "", err
	}
	switch k {
	case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
		for _, w := range list(o["webhooks"]) {
			if err := g.clientConfig(w.(map[string]any)); err != nil {
				return "", err
			}
		}
	case "Service":
		spec := o["spec"].(map[string]any)
		if err := g.selector(spec, "selector"); err != nil {
			return "", err
		}
	case "PodDisruptionBudget":
		spec := o["spec"].(map[string]any)
		if err := g.selector(spec["selector"].(map[string]any), "matchLabels"); err != nil {
			return "", err
		}
		if err := g.sameAsValue(spec["minAvailable"], "podDisruptionBudget", "minAvailable"); err != nil {
			return "", err
		}
		spec["minAvailable"] = g.expr("{{ .Values.podDisruptionBudget.minAvailable }}")
	case "Deployment":
		if err := g.deployment(o); err != nil {
			return "", err
		}
	}
	g.names2tokens(o)
	text, err := g.render(o)
	if err != nil {
		return "", err
	}
	if k == "ClusterRoleBinding" && name == g.prefix+"manager-secrets-rolebinding" {
		text = secretsBinding(text)
	}
	return text, nil
}

// metadata puts the chart's labels in place of the provider label and makes the CA injection cert-manager's only
// when cert-manager is enabled.
func (g *generator) metadata(meta map[string]any) error {
	g.labels(meta)
	ann, _ := meta["annotations"].(map[string]any)
	if from, ok := ann[injectCAFrom].(string); ok {
		if from != g.namespace+"/"+g.prefix+"serving-cert" {
			return fmt.Errorf("%s is %q, not the serving Certificate", injectCAFrom, from)
		}
		delete(ann, injectCAFrom)
		if len(ann) == 0 {
			delete(meta, "annotations")
		}
		meta["__capr_annotations__"] = g.block(func(i int) []string {
			return indent(i, "{{- if .Values.certManager.enabled }}", "annotations:",
				"  "+injectCAFrom+": {{ include \"capr.injectCAFrom\" . }}", "{{- end }}")
		})
	}
	return nil
}

// labels replaces the provider label config/default adds by the chart's labels (which hold it).
func (g *generator) labels(meta map[string]any) {
	labels, _ := meta["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
		meta["labels"] = labels
	}
	delete(labels, providerLabel)
	labels["__capr_labels__"] = g.block(func(i int) []string {
		return []string{fmt.Sprintf("%s{{- include \"capr.labels\" . | nindent %d }}", strings.Repeat(" ", i), i)}
	})
}

// selector replaces a pod selector by the chart's, which must select what config/default's does.
func (g *generator) selector(parent map[string]any, key string) error {
	want := map[string]any{providerLabel: "infrastructure-remote", "control-plane": "controller-manager"}
	if !reflect.DeepEqual(parent[key], want) {
		return fmt.Errorf("%s is %v, not capr.selectorLabels (%v): change _helpers.tpl too", key, parent[key], want)
	}
	parent[key] = g.block(func(i int) []string {
		return []string{strings.Repeat(" ", i) + key + ":",
			fmt.Sprintf("%s{{- include \"capr.selectorLabels\" . | nindent %d }}", strings.Repeat(" ", i+2), i+2)}
	})
	return nil
}

// clientConfig makes a webhook call the release's Service, with the CA bundle given when cert-manager injects none.
func (g *generator) clientConfig(w map[string]any) error {
	cc, _ := w["clientConfig"].(map[string]any)
	svc, _ := cc["service"].(map[string]any)
	if len(cc) != 1 || len(svc) != 3 || svc["name"] != g.prefix+"webhook-service" || svc["namespace"] != g.namespace {
		return fmt.Errorf("webhook %v: clientConfig %v is not the webhook Service with a path", w["name"], cc)
	}
	path := svc["path"].(string)
	w["clientConfig"] = g.block(func(i int) []string {
		return []string{fmt.Sprintf("%s{{- include \"capr.webhookClientConfig\" (list . %q) | nindent %d }}", strings.Repeat(" ", i), path, i)}
	})
	return nil
}

// deployment puts the chart's values into the manager Deployment: replicas, image, flags, pod settings.
func (g *generator) deployment(o object) error {
	spec := o["spec"].(map[string]any)
	if err := g.clusterctlValue(spec, "replicas"); err != nil {
		return err
	}
	if err := g.selector(spec["selector"].(map[string]any), "matchLabels"); err != nil {
		return err
	}
	tmpl := spec["template"].(map[string]any)
	g.labels(tmpl["metadata"].(map[string]any))
	pod := tmpl["spec"].(map[string]any)
	containers := list(pod["containers"])
	if len(containers) != 1 {
		return fmt.Errorf("%d containers, the chart templates one", len(containers))
	}
	c := containers[0].(map[string]any)
	image := c["image"].(string)
	if repo, _ := g.values["image"].(map[string]any)["repository"].(string); !strings.HasPrefix(image, repo+":") {
		return fmt.Errorf("image %s is not values.yaml's image.repository %s", image, repo)
	}
	c["image"] = g.expr(`"{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"`)
	if err := g.sameAsValue(c["imagePullPolicy"], "image", "pullPolicy"); err != nil {
		return err
	}
	c["imagePullPolicy"] = g.expr("{{ .Values.image.pullPolicy }}")
	if err := g.args(c); err != nil {
		return err
	}
	if err := g.ports(c); err != nil {
		return err
	}
	for _, v := range []struct {
		parent      map[string]any
		key, values string
	}{
		{c, "resources", "resources"}, {c, "securityContext", "securityContext"},
		{pod, "securityContext", "podSecurityContext"}, {pod, "tolerations", "tolerations"},
		{pod, "imagePullSecrets", "imagePullSecrets"}, {pod, "nodeSelector", "nodeSelector"}, {pod, "affinity", "affinity"},
	} {
		if err := g.withValue(v.parent, v.key, v.values); err != nil {
			return err
		}
	}
	return nil
}

// clusterctlValue replaces a ${CAPR_X:=default} field by its chart value, whose default must be the same.
func (g *generator) clusterctlValue(parent map[string]any, key string) error {
	s, _ := parent[key].(string)
	m := clusterctlVar.FindStringSubmatch(s)
	if m == nil {
		return fmt.Errorf("%s is %v, not a clusterctl variable", key, parent[key])
	}
	f, ok := managerFlags[m[1]]
	if !ok {
		return fmt.Errorf("clusterctl variable %s has no chart value: add it to managerFlags in hack/chartgen and to values.yaml", m[1])
	}
	if err := g.sameAsValue(m[2], f.value); err != nil {
		return err
	}
	parent[key] = g.expr(fmt.Sprintf("{{ int .Values.%s }}", f.value))
	return nil
}

// args makes the manager's flags the chart's values: each clusterctl variable its value, --leader-elect
// leaderElect, and the flags config/default cannot express (watchNamespace, watchFilter, extraArgs) appended.
func (g *generator) args(c map[string]any) error {
	lines := []string{"args:"}
	for _, a := range list(c["args"]) {
		arg := a.(string)
		if arg == "--leader-elect" {
			lines = append(lines, "{{- if .Values.leaderElect }}", "- --leader-elect", "{{- end }}")
			continue
		}
		m := flagWithVar.FindStringSubmatch(arg)
		if m == nil {
			return fmt.Errorf("manager argument %q is neither --leader-elect nor --flag=${CAPR_VAR:=default}: teach hack/chartgen its chart value", arg)
		}
		f, ok := managerFlags[m[2]]
		if !ok {
			return fmt.Errorf("clusterctl variable %s has no chart value: add it to managerFlags in hack/chartgen and to values.yaml", m[2])
		}
		if err := g.sameAsValue(m[3], f.value); err != nil {
			return err
		}
		if f.isInt {
			lines = append(lines, fmt.Sprintf("- {{ printf \"%s=%%d\" (int .Values.%s) | quote }}", m[1], f.value))
		} else {
			lines = append(lines, fmt.Sprintf("- {{ printf \"%s=%%v\" .Values.%s | quote }}", m[1], f.value))
		}
	}
	lines = append(lines,
		"{{- with .Values.watchNamespace }}", `- {{ printf "--namespace=%v" . | quote }}`, "{{- end }}",
		"{{- with .Values.watchFilter }}", `- {{ printf "--watch-filter=%v" . | quote }}`, "{{- end }}",
		"{{- range .Values.extraArgs }}", "- {{ . | quote }}", "{{- end }}")
	c["args"] = g.block(func(i int) []string { return indent(i, lines...) })
	return nil
}

// ports serves the metrics on the port of the diagnosticsAddress value, and none when it has no port.
func (g *generator) ports(c map[string]any) error {
	var kept []any
	found := false
	for _, p := range list(c["ports"]) {
		port := p.(map[string]any)
		if port["name"] != "metrics" {
			kept = append(kept, port)
			continue
		}
		found = true
		addr, _ := g.values["diagnosticsAddress"].(string)
		if want := ":" + fmt.Sprint(port["containerPort"]); addr != want {
			return fmt.Errorf("the metrics port %v is not the port of values.yaml's diagnosticsAddress %q", port["containerPort"], addr)
		}
	}
	if !found {
		return errors.New("the manager container has no metrics port")
	}
	keptText, err := yamlText(map[string]any{"ports": kept})
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSuffix(keptText, "\n"), "\n")
	lines = append(lines,
		`{{- $metricsPort := .Values.diagnosticsAddress | toString | splitList ":" | last | int }}`,
		"{{- if gt $metricsPort 0 }}",
		"  - containerPort: {{ $metricsPort }}", "    name: metrics", "    protocol: TCP", "{{- end }}")
	c["ports"] = g.block(func(i int) []string { return indent(i, lines...) })
	return nil
}

// withValue makes a pod setting a chart value, whose default must be what config/ sets (or nothing).
func (g *generator) withValue(parent map[string]any, key, value string) error {
	if err := g.sameAsValue(parent[key], value); err != nil {
		return err
	}
	parent[key] = g.block(func(i int) []string {
		return []string{
			fmt.Sprintf("%s{{- with .Values.%s }}", strings.Repeat(" ", i), value),
			strings.Repeat(" ", i) + key + ":",
			fmt.Sprintf("%s{{- toYaml . | nindent %d }}", strings.Repeat(" ", i+2), i+2),
			strings.Repeat(" ", i) + "{{- end }}",
		}
	})
	return nil
}

// sameAsValue fails when what config/ sets differs from the chart value's default (nil and empty are the same).
func (g *generator) sameAsValue(configured any, path ...string) error {
	var v any = g.values
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	if empty(configured) && empty(v) {
		return nil
	}
	if fmt.Sprint(normal(configured)) != fmt.Sprint(normal(v)) {
		return fmt.Errorf("config/ sets %v where values.yaml's %s defaults to %v: make them the same", configured, strings.Join(path, "."), v)
	}
	return nil
}

// names2tokens marks, in every string, the names kustomize prefixed and its namespace, for the chart's to replace.
func (g *generator) names2tokens(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = g.names2tokens(e)
		}
	case []any:
		for i, e := range x {
			x[i] = g.names2tokens(e)
		}
	case string:
		if strings.HasPrefix(x, "__capr_") {
			return x
		}
		return prefixedName.ReplaceAllStringFunc(x, func(n string) string {
			switch {
			case n == g.namespace:
				return "__capr_ns__"
			case n == g.certName:
				return "__capr_certsecret__"
			case g.names[n]:
				return "__capr_name__" + strings.TrimPrefix(n, g.prefix) + "__"
			}
			return n
		})
	}
	return v
}

// render writes an object as YAML and puts the template text in place of the markers.
func (g *generator) render(o object) (string, error) {
	text, err := yamlText(o)
	if err != nil {
		return "", err
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if m := blockLine.FindStringSubmatch(line); m != nil {
			n, err := strconv.Atoi(m[3])
			if err != nil || n < 0 || n >= len(g.blocks) {
				return "", fmt.Errorf("an unknown template block in %q", line)
			}
			lines := g.blocks[n](len(m[1]) + len(m[2]))
			if m[2] != "" { // the first field of a list item: the item's dash goes on the block's first line
				first := strings.TrimLeft(lines[0], " ")
				if strings.HasPrefix(first, "{{") {
					return "", fmt.Errorf("a template block cannot start a list item: %q", line)
				}
				lines[0] = m[1] + "- " + first
			}
			out = append(out, lines...)
			continue
		}
		if strings.Contains(line, "__capr_block_") {
			return "", fmt.Errorf("a template block is not alone on its line: %q", line)
		}
		out = append(out, line)
	}
	text = strings.Join(out, "\n") + "\n"
	var unknown string
	text = exprToken.ReplaceAllStringFunc(text, func(t string) string {
		n, err := strconv.Atoi(exprToken.FindStringSubmatch(t)[1])
		if err != nil || n < 0 || n >= len(g.exprs) {
			unknown = t
			return t
		}
		return g.exprs[n]
	})
	if unknown != "" {
		return "", fmt.Errorf("an unknown template expression %q", unknown)
	}
	text = nameToken.ReplaceAllString(text, `{{ include "capr.name" (list . "$1") }}`)
	text = strings.ReplaceAll(text, "__capr_ns__", "{{ .Release.Namespace }}")
	text = strings.ReplaceAll(text, "__capr_certsecret__", `{{ include "capr.webhookCertSecretName" . }}`)
	if strings.Contains(text, "__capr_") {
		return "", fmt.Errorf("a marker is left in the template:\n%s", text)
	}
	return text, nil
}

// secretsBinding grants the Secrets in watchNamespace only, with a RoleBinding there, when that value is set.
func secretsBinding(text string) string {
	head, body, _ := strings.Cut(text, "roleRef:")
	nsBinding := strings.Replace(head, "kind: ClusterRoleBinding", "kind: RoleBinding", 1)
	nsBinding = regexp.MustCompile(`(?m)^(  name: .*)$`).ReplaceAllString(nsBinding, "$1\n  namespace: {{ .Values.watchNamespace }}")
	return "{{- if .Values.watchNamespace }}\n# watchNamespace is set: Secret access in that namespace only.\n" + nsBinding +
		"{{- else }}\n" + head + "{{- end }}\nroleRef:" + body
}

// block registers template lines that replace a field's line; the field's value is the marker.
func (g *generator) block(f func(indent int) []string) string {
	g.blocks = append(g.blocks, f)
	return fmt.Sprintf("__capr_block_%d__", len(g.blocks)-1)
}

// expr registers a template expression that replaces a scalar.
func (g *generator) expr(e string) string {
	g.exprs = append(g.exprs, e)
	return fmt.Sprintf("__capr_expr_%d__", len(g.exprs)-1)
}

func yamlText(v any) (string, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return b.String(), enc.Close()
}

func indent(i int, lines ...string) []string {
	out := make([]string, len(lines))
	for n, l := range lines {
		out[n] = strings.Repeat(" ", i) + l
	}
	return out
}

func kind(o object) string { s, _ := o["kind"].(string); return s }

func str(o object, path ...string) string {
	var v any = o
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	s, _ := v.(string)
	return s
}

func list(v any) []any { l, _ := v.([]any); return l }

func empty(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map, reflect.Slice, reflect.String:
		return rv.Len() == 0
	}
	return false
}

// normal makes values comparable across YAML's types: maps with sorted keys, scalars as their text.
func normal(v any) any {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([]string, 0, len(keys))
		for _, k := range keys {
			out = append(out, fmt.Sprintf("%s=%v", k, normal(x[k])))
		}
		return "{" + strings.Join(out, ",") + "}"
	case []any:
		out := make([]string, len(x))
		for i, e := range x {
			out[i] = fmt.Sprint(normal(e))
		}
		return "[" + strings.Join(out, ",") + "]"
	}
	return fmt.Sprint(v)
}
