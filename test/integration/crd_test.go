//go:build integration

package integration

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

func readCRD(t *testing.T, plural string) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(env.RootDir, "config", "crd", "bases", "infrastructure.cluster.x-k8s.io_"+plural+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(data, crd); err != nil {
		t.Fatal(err)
	}
	return crd
}

// undocumented returns the paths of the schema's properties that have no description.
func undocumented(path string, s *apiextensionsv1.JSONSchemaProps) []string {
	var missing []string
	for name, p := range s.Properties {
		child := path + "." + name
		if child == ".metadata" {
			continue // the standard ObjectMeta, documented by Kubernetes itself
		}
		if strings.TrimSpace(p.Description) == "" {
			missing = append(missing, child)
		}
		missing = append(missing, undocumented(child, &p)...)
	}
	if s.Items != nil && s.Items.Schema != nil {
		missing = append(missing, undocumented(path+"[]", s.Items.Schema)...)
	}
	return missing
}

// TestCRDsCarryContractLabelsAndDocs checks every CRD's Cluster API contract labels, categories and field docs.
func TestCRDsCarryContractLabelsAndDocs(t *testing.T) {
	for _, plural := range []string{"remoteclusters", "remoteclustertemplates", "remotemachines", "remotemachinetemplates", "pooledremotemachines"} {
		t.Run(plural, func(t *testing.T) {
			g := NewWithT(t)
			crd := readCRD(t, plural)
			g.Expect(crd.Labels).To(HaveKeyWithValue("cluster.x-k8s.io/v1beta1", "v1beta1"))
			g.Expect(crd.Labels).To(HaveKeyWithValue("cluster.x-k8s.io/v1beta2", "v1beta1"))
			g.Expect(crd.Spec.Names.Categories).To(ContainElement("cluster-api"))
			g.Expect(crd.Spec.Names.ShortNames).NotTo(BeEmpty())
			g.Expect(crd.Spec.Versions).To(HaveLen(1))
			schema := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
			g.Expect(undocumented("", schema)).To(BeEmpty(), "every field has a doc comment")
		})
	}
}

// TestPrinterColumns checks the columns `kubectl get` shows.
func TestPrinterColumns(t *testing.T) {
	for plural, want := range map[string][]string{
		"remotemachines":       {"Cluster", "Machine", "Address", "Pool", "Provisioned", "Age"},
		"pooledremotemachines": {"Pool", "Address", "Phase", "Machine", "Age"},
		"remoteclusters":       {"Cluster", "Endpoint", "Provisioned", "Age"},
	} {
		g := NewWithT(t)
		var got []string
		for _, c := range readCRD(t, plural).Spec.Versions[0].AdditionalPrinterColumns {
			got = append(got, c.Name)
		}
		g.Expect(got).To(Equal(want), plural)
	}
}

// TestKubectlExplainDocumentsEveryField runs bin/kubectl explain against the apiserver.
func TestKubectlExplainDocumentsEveryField(t *testing.T) {
	g := NewWithT(t)
	var out string
	// The apiserver publishes a new CRD's OpenAPI schema shortly after the CRD is established.
	g.Eventually(func() error {
		var err error
		out, _, err = env.Kubectl(context.Background(), "", "explain", "remotemachine.spec")
		return err
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(out).To(ContainSubstring("KIND:       RemoteMachine"))
	g.Expect(out).To(ContainSubstring("GROUP:      infrastructure.cluster.x-k8s.io"))
	g.Expect(out).NotTo(ContainSubstring("<empty>"))

	spec := readCRD(t, "remotemachines").Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	var fields []string
	for name := range spec.Properties {
		fields = append(fields, name)
	}
	sort.Strings(fields)
	g.Expect(fields).To(ContainElements("address", "port", "user", "sshKeyRef", "pool", "selector", "useSudo",
		"customCleanUpCommands", "workingDir", "providerID", "hostKeys", "hostKeyPolicy", "bastion", "pooledRemoteMachineRef"))
	for _, f := range fields {
		g.Expect(out).To(MatchRegexp(`(?m)^  `+f+`\s+<`), "kubectl explain lists %s", f)
	}
	// Each field's own documentation is served too.
	out, errOut, err := env.Kubectl(context.Background(), "", "explain", "remotemachine.spec.hostKeyPolicy")
	g.Expect(err).NotTo(HaveOccurred(), errOut)
	g.Expect(out).To(ContainSubstring("Strict requires"))
	g.Expect(out).To(MatchRegexp(`ENUM:\s+Strict\s+AcceptNew`))
}
