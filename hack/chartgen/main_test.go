package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

const chart = "charts/cluster-api-provider-remote"

// deployment is a manager Deployment as config/default renders it, with one manager flag.
const deployment = `apiVersion: v1
kind: Namespace
metadata:
  name: capr-system
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: capr-controller-manager
  namespace: capr-system
spec:
  replicas: ${CAPR_REPLICAS:=2}
  selector:
    matchLabels:
      cluster.x-k8s.io/provider: infrastructure-remote
      control-plane: controller-manager
  template:
    metadata:
      labels:
        control-plane: controller-manager
    spec:
      containers:
      - name: manager
        image: ghcr.io/capr-project/cluster-api-provider-remote:v0.1.0
        imagePullPolicy: IfNotPresent
        args:
        - ARG
        ports:
        - containerPort: 8443
          name: metrics
`

// valuesYAML are the chart values the deployment above uses.
const valuesYAML = `replicas: 2
image:
  repository: ghcr.io/capr-project/cluster-api-provider-remote
  pullPolicy: IfNotPresent
diagnosticsAddress: ":8443"
syncPeriod: 10m
`

// TestConfigAndValuesMustAgree: a default in config/ that the chart's values.yaml does not share, a flag or a kind
// the chart has no value or template for, fail the generation with what to change. Before chartgen the chart and
// config/ were two hand-written copies whose defaults could differ unnoticed until the install test.
func TestConfigAndValuesMustAgree(t *testing.T) {
	values := filepath.Join(t.TempDir(), "values.yaml")
	NewWithT(t).Expect(os.WriteFile(values, []byte(valuesYAML), 0o600)).To(Succeed())
	for name, tc := range map[string]struct{ in, want string }{
		"same defaults":      {in: strings.Replace(deployment, "ARG", "--sync-period=${CAPR_SYNC_PERIOD:=10m}", 1)},
		"other default":      {in: strings.Replace(deployment, "ARG", "--sync-period=${CAPR_SYNC_PERIOD:=5m}", 1), want: "values.yaml's syncPeriod"},
		"flag without value": {in: strings.Replace(deployment, "ARG", "--new=${CAPR_NEW:=1}", 1), want: "CAPR_NEW has no chart value"},
		"fixed flag":         {in: strings.Replace(deployment, "ARG", "--fixed=1", 1), want: `"--fixed=1"`},
		"kind without template": {
			in:   strings.Replace(deployment, "ARG", "--leader-elect", 1) + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: capr-x\n",
			want: "ConfigMap (capr-x) that the chart has no template for"},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			err := run(strings.NewReader(tc.in), t.TempDir(), values)
			if tc.want == "" {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)))
		})
	}
}
