{{/*
Name of an object: namePrefix followed by the name config/ gives it (kustomize's namePrefix).
Usage: include "capr.name" (list . "manager")
*/}}
{{- define "capr.name" -}}
{{- $ := index . 0 -}}
{{- printf "%s%s" $.Values.namePrefix (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of every object: the provider label config/default adds, the label `clusterctl init` adds to every component
(clusterctl move only discovers kinds whose CRD carries it, clusterctl delete finds the components by the provider
label), and Helm's standard labels.
*/}}
{{- define "capr.labels" -}}
cluster.x-k8s.io/provider: infrastructure-remote
clusterctl.cluster.x-k8s.io: ""
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
Selector of the manager pods: exactly config/default's, so the Deployment, PodDisruptionBudget and Service select
the same pods as the clusterctl components do.
*/}}
{{- define "capr.selectorLabels" -}}
cluster.x-k8s.io/provider: infrastructure-remote
control-plane: controller-manager
{{- end -}}

{{/*
Name of the TLS Secret the webhook server serves.
*/}}
{{- define "capr.webhookCertSecretName" -}}
{{- if .Values.webhook.certSecretName -}}
{{- .Values.webhook.certSecretName -}}
{{- else if .Values.certManager.enabled -}}
{{- include "capr.name" (list . "webhook-service-cert") -}}
{{- end -}}
{{- end -}}

{{/*
Fails rendering when the webhook certificate is neither issued by cert-manager nor given.
*/}}
{{- define "capr.validateCertificates" -}}
{{- if not .Values.certManager.enabled -}}
{{- $service := printf "%s.%s.svc" (include "capr.name" (list . "webhook-service")) .Release.Namespace -}}
{{- if not .Values.webhook.certSecretName -}}
{{- fail (printf "certManager.enabled is false: set webhook.certSecretName to the name of a kubernetes.io/tls Secret (tls.crt, tls.key) in namespace %s holding a certificate for %s" .Release.Namespace $service) -}}
{{- end -}}
{{- if not .Values.webhook.caBundle -}}
{{- fail "certManager.enabled is false: set webhook.caBundle to the base64-encoded PEM of the CA certificate that signed the webhook.certSecretName certificate" -}}
{{- end -}}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (b64dec .Values.webhook.caBundle)) -}}
{{- fail "webhook.caBundle is not the base64 encoding of a PEM certificate (-----BEGIN CERTIFICATE-----): encode the CA's PEM file with base64 -w0" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Value of the cert-manager.io/inject-ca-from annotation of the webhook configurations: <namespace>/<Certificate>.
*/}}
{{- define "capr.injectCAFrom" -}}
{{- .Release.Namespace }}/{{ include "capr.name" (list . "serving-cert") -}}
{{- end -}}

{{/*
clientConfig of a webhook: the webhook Service, and the CA bundle when it is given rather than injected.
Usage: include "capr.webhookClientConfig" (list . "/path")
*/}}
{{- define "capr.webhookClientConfig" -}}
{{- $ := index . 0 -}}
clientConfig:
  service:
    name: {{ include "capr.name" (list $ "webhook-service") }}
    namespace: {{ $.Release.Namespace }}
    path: {{ index . 1 }}
  {{- if not $.Values.certManager.enabled }}
  caBundle: {{ $.Values.webhook.caBundle }}
  {{- end }}
{{- end -}}
