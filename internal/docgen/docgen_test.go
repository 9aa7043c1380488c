package docgen

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated pages under docs/")

// TestReferenceIsUpToDate: the committed reference pages are what the API's source generates (make docs rewrites
// them).
func TestReferenceIsUpToDate(t *testing.T) {
	pages, err := Pages(filepath.Join("..", "..", "api", "v1beta1"))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range pages {
		path := filepath.Join("..", "..", "docs", name)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != string(want) {
			t.Errorf("docs/%s is stale: run make docs and commit it", name)
		}
	}
}

// TestTroubleshootingCoversEveryReason: every reason constant of the API appears on the troubleshooting page, so a
// new reason cannot ship without saying what to do about it.
func TestTroubleshootingCoversEveryReason(t *testing.T) {
	reasons, err := Reasons(filepath.Join("..", "..", "api", "v1beta1"))
	if err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join("..", "..", "docs", "troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reasons {
		if !strings.Contains(string(page), "`"+r+"`") {
			t.Errorf("docs/troubleshooting.md does not say what reason %s means and what to do", r)
		}
	}
}
