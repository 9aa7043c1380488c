package cloudinit

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"path"
	"strings"

	"al.essio.dev/pkg/shellescape"
)

// A script stops at the first failing step, printing StepMarker and the step's source on stderr, and exits with
// ExitStepFailed.
const (
	StepMarker     = "capr-failed-step: "
	ExitStepFailed = 98
)

// Script renders a plan as one shell script in memory; WriteScript and NewScriptReader stream it instead.
func Script(plan *Plan) string {
	var b strings.Builder
	_ = WriteScript(&b, plan) // a strings.Builder never fails
	return b.String()
}

// NewScriptReader returns the script of a plan as a stream made piece by piece as it is read: each file's content
// is base64-encoded as it goes, so the script is never held whole in memory. Close it to stop the writer early.
func NewScriptReader(plan *Plan) io.ReadCloser {
	r, w := io.Pipe()
	go func() { _ = w.CloseWithError(WriteScript(w, plan)) }()
	return r
}

// WriteScript writes a plan as one shell script: files are written from base64 (atomically, via a temporary file
// beside the target), commands run in order, and the first failing step stops the script and names itself.
func WriteScript(w io.Writer, plan *Plan) error {
	q := shellescape.Quote
	b := bufio.NewWriterSize(w, 64<<10)
	_, _ = b.WriteString("#!/bin/sh\n# Written by CAPR; removed when the bootstrap ends.\nfail() { printf '%s%s\\n' '" + StepMarker + "' \"$1\" >&2; exit " + fmt.Sprint(ExitStepFailed) + "; }\n")
	for _, s := range plan.Steps {
		fmt.Fprintf(b, "# %s\n", oneLine(s.Source))
		if f := s.File; f != nil {
			dir := path.Dir(f.Path)
			target := q(f.Path)
			if f.Append {
				fmt.Fprintf(b, "mkdir -p %s && base64 -d >> %s <<'CAPR_EOF' || fail %s\n", q(dir), target, q(s.Source))
				writeBase64(b, f.Content)
				_, _ = b.WriteString("\nCAPR_EOF\n")
				continue
			}
			fmt.Fprintf(b, "mkdir -p %s && t=$(mktemp %s) && base64 -d > \"$t\" <<'CAPR_EOF' || fail %s\n",
				q(dir), q(dir+"/.capr-write.XXXXXX"), q(s.Source))
			writeBase64(b, f.Content)
			_, _ = b.WriteString("\nCAPR_EOF\n")
			if f.OwnerRequired {
				fmt.Fprintf(b, "chmod %o \"$t\" && chown %s \"$t\" && mv -f \"$t\" %s || { rm -f \"$t\"; fail %s; }\n",
					f.Permissions, q(f.Owner), target, q(s.Source))
				continue
			}
			fmt.Fprintf(b, "chmod %o \"$t\" && { chown %s \"$t\" 2>/dev/null || printf '%%s\\n' %s >&2; } && mv -f \"$t\" %s || fail %s\n",
				f.Permissions, q(f.Owner), q("capr: owner "+f.Owner+" does not exist yet, keeping root"), target, q(s.Source))
			continue
		}
		if plan.Format == "shell" {
			// Run as its own file, so its #! line chooses the interpreter and it cannot read the rest of this one.
			fmt.Fprintf(b, "t=$(mktemp) && base64 -d > \"$t\" <<'CAPR_EOF' && chmod 700 \"$t\" || fail %s\n", q(s.Source))
			writeBase64(b, []byte(s.Command))
			_, _ = b.WriteString("\nCAPR_EOF\n")
			fmt.Fprintf(b, "\"$t\" < /dev/null; rc=$?; rm -f \"$t\"; [ $rc -eq 0 ] || fail %s\n", q(s.Source))
			continue
		}
		fmt.Fprintf(b, "sh -c %s < /dev/null || fail %s\n", q(s.Command), q(s.Source))
	}
	return b.Flush()
}

// writeBase64 writes data in base64, in lines of 76 characters; a bufio.Writer keeps the first error for Flush.
func writeBase64(b *bufio.Writer, data []byte) {
	enc := base64.NewEncoder(base64.StdEncoding, &lineWriter{w: b})
	_, _ = enc.Write(data)
	_ = enc.Close()
}

// lineWriter breaks what it writes into lines of 76 bytes, with no line break after the last one.
type lineWriter struct {
	w   *bufio.Writer
	col int
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if l.col == 76 {
			_ = l.w.WriteByte('\n') // a bufio.Writer keeps the first error for Flush
			l.col = 0
		}
		k := min(76-l.col, len(p))
		_, _ = l.w.Write(p[:k])
		l.col += k
		p = p[k:]
	}
	return n, nil
}

// oneLine makes s safe in a comment: a line break would end the comment and make the rest of s shell code.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
