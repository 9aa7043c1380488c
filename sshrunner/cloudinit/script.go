package cloudinit

import (
	"encoding/base64"
	"fmt"
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

// Script renders a plan as one shell script: files are written from base64 (atomically, via a temporary file
// beside the target), commands run in order, and the first failing step stops the script and names itself.
func Script(plan *Plan) string {
	q := shellescape.Quote
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# Written by CAPR; removed when the bootstrap ends.\nfail() { printf '%s%s\\n' '" + StepMarker + "' \"$1\" >&2; exit " + fmt.Sprint(ExitStepFailed) + "; }\n")
	for _, s := range plan.Steps {
		fmt.Fprintf(&b, "# %s\n", oneLine(s.Source))
		if f := s.File; f != nil {
			dir := path.Dir(f.Path)
			enc := base64.StdEncoding.EncodeToString(f.Content)
			target := q(f.Path)
			if f.Append {
				fmt.Fprintf(&b, "mkdir -p %s && base64 -d >> %s <<'CAPR_EOF' || fail %s\n%s\nCAPR_EOF\n", q(dir), target, q(s.Source), wrap(enc))
				continue
			}
			fmt.Fprintf(&b, "mkdir -p %s && t=$(mktemp %s) && base64 -d > \"$t\" <<'CAPR_EOF' || fail %s\n%s\nCAPR_EOF\n",
				q(dir), q(dir+"/.capr-write.XXXXXX"), q(s.Source), wrap(enc))
			if f.OwnerRequired {
				fmt.Fprintf(&b, "chmod %o \"$t\" && chown %s \"$t\" && mv -f \"$t\" %s || { rm -f \"$t\"; fail %s; }\n",
					f.Permissions, q(f.Owner), target, q(s.Source))
				continue
			}
			fmt.Fprintf(&b, "chmod %o \"$t\" && { chown %s \"$t\" 2>/dev/null || printf '%%s\\n' %s >&2; } && mv -f \"$t\" %s || fail %s\n",
				f.Permissions, q(f.Owner), q("capr: owner "+f.Owner+" does not exist yet, keeping root"), target, q(s.Source))
			continue
		}
		if plan.Format == "shell" {
			// Run as its own file, so its #! line chooses the interpreter and it cannot read the rest of this one.
			fmt.Fprintf(&b, "t=$(mktemp) && base64 -d > \"$t\" <<'CAPR_EOF' && chmod 700 \"$t\" || fail %s\n%s\nCAPR_EOF\n", q(s.Source), wrap(base64.StdEncoding.EncodeToString([]byte(s.Command))))
			fmt.Fprintf(&b, "\"$t\" < /dev/null; rc=$?; rm -f \"$t\"; [ $rc -eq 0 ] || fail %s\n", q(s.Source))
			continue
		}
		fmt.Fprintf(&b, "sh -c %s < /dev/null || fail %s\n", q(s.Command), q(s.Source))
	}
	return b.String()
}

func wrap(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
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
