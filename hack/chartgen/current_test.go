//go:build integration

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestTemplatesAreCurrent: the chart's templates are what chartgen writes from config/default today, so a change in
// config/ that is not regenerated into the chart fails here as in `make verify-generate`.
func TestTemplatesAreCurrent(t *testing.T) {
	g := NewWithT(t)
	root := testenv.RootDir()
	out, err := exec.Command(filepath.Join(testenv.BinDir(), "kustomize"), "build", filepath.Join(root, "config", "default")).Output()
	g.Expect(err).NotTo(HaveOccurred(), "kustomize build config/default (make test-tools builds bin/kustomize)")
	dir := t.TempDir()
	g.Expect(run(bytes.NewReader(out), dir, filepath.Join(root, chart, "values.yaml"))).To(Succeed())
	written, err := os.ReadDir(dir)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(written).NotTo(BeEmpty())
	for _, f := range written {
		want, err := os.ReadFile(filepath.Join(dir, f.Name()))
		g.Expect(err).NotTo(HaveOccurred())
		got, err := os.ReadFile(filepath.Join(root, chart, "templates", f.Name()))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(got)).To(Equal(string(want)), "%s is stale: run make manifests", f.Name())
	}
}
