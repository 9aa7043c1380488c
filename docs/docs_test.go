// Package docs holds CAPR's user documentation; its test keeps the README's promises in step with it.
package docs

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
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

// TestLinksResolve: every relative Markdown link in the README and in docs/ names a file that exists and, when it has
// an anchor, a heading of that file whose GitHub slug is the anchor, so no page points at a section that moved.
func TestLinksResolve(t *testing.T) {
	files := []string{filepath.Join("..", "README.md")}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, file := range files {
		text := readText(t, file)
		for _, target := range markdownLinks(text) {
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			path, anchor, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s links to %q: %s does not exist", file, target, dest)
				continue
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s links to %q: an anchor into a file that is not Markdown", file, target)
				continue
			}
			if !headingSlugs(readText(t, dest))[anchor] {
				t.Errorf("%s links to %q: %s has no heading with the slug %q", file, target, dest, anchor)
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no relative links to check")
	}
}

// linkRE matches an inline Markdown link or image, capturing its target (without a title).
var linkRE = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// markdownLinks returns the targets of the inline links in text outside fenced code blocks and code spans.
func markdownLinks(text string) []string {
	var targets []string
	for _, line := range proseLines(text) {
		line = codeSpanRE.ReplaceAllString(line, "")
		for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
			targets = append(targets, strings.Trim(m[1], "<>"))
		}
	}
	return targets
}

// codeSpanRE matches an inline code span.
var codeSpanRE = regexp.MustCompile("`[^`]*`")

// proseLines returns text's lines outside fenced code blocks.
func proseLines(text string) []string {
	var lines []string
	fenced := false
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			lines = append(lines, l)
		}
	}
	return lines
}

// headingSlugs returns the anchors GitHub gives the headings of a Markdown text: a repeated slug gets -1, -2, ...
func headingSlugs(text string) map[string]bool {
	slugs := map[string]bool{}
	seen := map[string]int{}
	for _, l := range proseLines(text) {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		title := strings.TrimLeft(l, "#")
		if len(title) == len(l) || len(l)-len(title) > 6 || !strings.HasPrefix(title, " ") {
			continue
		}
		s := slug(strings.TrimSpace(title))
		if n := seen[s]; n > 0 {
			slugs[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			slugs[s] = true
		}
		seen[s]++
	}
	return slugs
}

// slug is GitHub's anchor for a heading: lower case, spaces to '-', punctuation other than '-' and '_' dropped.
func slug(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// readText returns a file's contents.
func readText(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
