// Package internal_test guards the architecture: which of CAPR's packages each package may import.
package internal_test

import (
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/capr-project/cluster-api-provider-remote/"

// mayImport lists, for each package (by path in the module), the module's packages its non-test files may import.
// Each layer imports only layers below it: the API and the leaf libraries, then the host contract, then what
// speaks it (the SSH implementation and the fake), the task runner and the pool, then the reconcilers and the
// webhooks (which never import each other), then the manager's setup, then main. A new package must be placed here.
var mayImport = map[string][]string{
	"api/v1beta1":                     nil,
	"internal/docgen":                 nil,
	"internal/sshrunner":              nil,
	"internal/provisioning/cloudinit": nil,
	"internal/provisioning/ignition":  {"internal/provisioning/cloudinit"},
	"internal/metrics":                {"api/v1beta1"},
	"internal/host":                   {"api/v1beta1", "internal/sshrunner", "internal/provisioning/cloudinit", "internal/provisioning/ignition"},
	"internal/host/sshhost":           {"api/v1beta1", "internal/host", "internal/sshrunner", "internal/provisioning/cloudinit", "internal/provisioning/ignition"},
	"internal/host/fakehost":          {"api/v1beta1", "internal/host", "internal/sshrunner", "internal/provisioning/cloudinit", "internal/provisioning/ignition"},
	"internal/tasks":                  {"api/v1beta1", "internal/metrics"},
	"internal/pool":                   {"api/v1beta1", "internal/metrics"},
	"internal/webhooks":               {"api/v1beta1", "internal/metrics", "internal/pool"},
	"internal/controllers": {"api/v1beta1", "internal/metrics", "internal/pool", "internal/tasks", "internal/host",
		"internal/sshrunner", "internal/provisioning/cloudinit", "internal/provisioning/ignition"},
	"internal/manager": {"api/v1beta1", "internal/metrics", "internal/pool", "internal/tasks", "internal/host",
		"internal/host/sshhost", "internal/sshrunner", "internal/controllers", "internal/webhooks"},
	"": {"api/v1beta1", "internal/manager"},
}

func TestPackagesImportOnlyLayersBelow(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	check := func(dir string) {
		rel, _ := filepath.Rel(root, dir)
		if rel == "." {
			rel = ""
		}
		pkg, err := build.ImportDir(dir, 0)
		if err != nil || len(pkg.GoFiles) == 0 {
			return // no Go files, or only tests
		}
		allowed, known := mayImport[filepath.ToSlash(rel)]
		if !known {
			t.Errorf("package %q is not placed in a layer: add it to mayImport in internal/layers_test.go", rel)
			return
		}
		seen++
		for _, imp := range pkg.Imports {
			own, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if !slices.Contains(allowed, own) {
				t.Errorf("%s imports %s, which its layer may not (allowed: %v)", rel, own, allowed)
			}
		}
	}
	check(root)
	for _, top := range []string{"api", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if d.IsDir() {
				check(path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if seen < 8 {
		t.Fatalf("checked only %d packages; is the test run from internal/?", seen)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the module root was not found at %s: %v", root, err)
	}
}
