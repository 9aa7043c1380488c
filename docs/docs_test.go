// Package docs holds CAPR's user documentation; its test keeps the README's promises in step with it.
package docs

import (
	"os"
	"strings"
	"testing"
)

// TestReadmePromisesTheSecurityModel: every guarantee of the security model appears word for word in the README's
// Security section, and the README promises nothing there that the model does not.
func TestReadmePromisesTheSecurityModel(t *testing.T) {
	model := section(t, "security-model.md", "## Guarantees")
	readme := section(t, "../README.md", "## Security")
	if len(model) == 0 {
		t.Fatal("the security model lists no guarantees")
	}
	if strings.Join(model, "\n") != strings.Join(readme, "\n") {
		t.Errorf("the README's Security section and docs/security-model.md differ:\nmodel:\n%s\nREADME:\n%s", strings.Join(model, "\n"), strings.Join(readme, "\n"))
	}
}

// section returns the list items ("- ...") under the heading in file, up to the next heading of that level.
func section(t *testing.T, file, heading string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("%s has no %q heading", file, heading)
	}
	text = text[i+len(heading)+2:]
	if j := strings.Index(text, "\n## "); j >= 0 {
		text = text[:j]
	}
	var items []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "- ") {
			items = append(items, l)
		}
	}
	return items
}
