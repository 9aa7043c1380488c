package testenv

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// SeedBlocks returns the YAML code blocks of the user's reference document (test/integration/testdata), unchanged.
func SeedBlocks(t testing.TB) []string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(RootDir(), "test", "integration", "testdata", "remote-machine-provider.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		blocks = append(blocks, m[1])
	}
	if len(blocks) != 5 {
		t.Fatalf("the reference document has %d YAML blocks, the test expects 5", len(blocks))
	}
	return blocks
}

// JoinDocuments joins YAML blocks into one multi-document stream.
func JoinDocuments(blocks ...string) string {
	out := make([]string, 0, len(blocks))
	for _, b := range blocks {
		out = append(out, strings.TrimPrefix(strings.TrimSpace(b), "---"))
	}
	return strings.Join(out, "\n---\n")
}
