package ignition_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vincent-petithory/dataurl"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/ignition"
)

// probe replaces every command the plan script runs with a shell function that records its arguments; a step's
// command (sh -c) is evaluated in a subshell with the same functions. PATH leads nowhere, so a value that escaped
// its quoting could not run a program either.
const probe = `PATH=/nonexistent
rec() { printf '<%s>' "$@" >> "$REC"; printf '\n' >> "$REC"; }
for c in mkdir chmod chown mv rm ln systemctl; do eval "$c() { rec $c \"\$@\"; }"; done
mktemp() { echo tmpfile; }
base64() { while IFS= read -r _; do :; done; }
readlink() { :; }
sh() { [ "$1" = -c ] && ( eval "$2" ); }
`

// FuzzParseIgnition builds Ignition configs from arbitrary paths, owner, contents, link target and unit, parses
// them with Ignition's parser, and runs the plan's script with every command replaced by a recorder: each value must
// reach its command as one whole argument. Parse must never panic, and refuse only with ErrUnsupported.
func FuzzParseIgnition(f *testing.F) {
	f.Add("etc/kubeadm.sh", "core", "#!/bin/bash\nkubeadm join\n", "l/link", "/etc/kubeadm.sh", "kubeadm", "[Service]\nExecStart=/bin/true\n")
	f.Add("a b/'q'\"$(touch pwned)\"`x`", "nobody; touch pwned", "CAPR_EOF\n$(x)\n", "x y/$(id)", "'; touch pwned; '", "x$(id)'", "[Unit]\nDescription=$(touch pwned)\n")
	f.Add("a\nb", "a\nb", "\x00\xff", "l\nm", "t\nu", "n\no", "")
	f.Fuzz(func(t *testing.T, file, user, content, linkPath, target, unit, unitContents string) {
		for _, s := range []string{file, user, linkPath, target, unit} {
			if s == "" || strings.ContainsRune(s, 0) || strings.Contains(s, "..") {
				return // no NUL in a shell argument; .. could lead to an existing path, which stops the script
			}
		}
		for _, s := range []string{file, user, linkPath, target, unit, unitContents} {
			if !utf8.ValidString(s) {
				return // an Ignition config is JSON: a string that is not UTF-8 cannot be written in one
			}
		}
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		root := "/nonexistent-capr-fuzz/"
		unitName := unit + ".service"
		cfg := map[string]any{
			"ignition": map[string]any{"version": "3.4.0"},
			"storage": map[string]any{
				"files": []any{map[string]any{"path": root + file, "overwrite": true, "mode": 0o640,
					"contents": map[string]any{"source": dataurl.EncodeBytes([]byte(content))}, "user": map[string]any{"name": user}}},
				"links": []any{map[string]any{"path": root + "l/" + linkPath, "target": target}},
			},
			"systemd": map[string]any{"units": []any{map[string]any{"name": unitName, "enabled": true, "contents": unitContents}}},
		}
		data, err := json.Marshal(cfg)
		if err != nil {
			return
		}
		plan, err := ignition.Parse(data)
		if err != nil {
			if !errors.Is(err, cloudinit.ErrUnsupported) {
				t.Fatalf("a refusal is not ErrUnsupported: %v", err)
			}
			return
		}
		filePath, link := path.Clean(root+file), path.Clean(root+"l/"+linkPath)
		dir := t.TempDir()
		rec := dir + "/rec"
		cmd := exec.Command("/bin/sh", "-c", probe+cloudinit.Script(plan))
		cmd.Dir, cmd.Env = dir, []string{"REC=" + rec}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("the script failed: %v\n%s", err, out)
		}
		got, _ := os.ReadFile(rec)
		want := []string{
			"<rm><-rf><" + filePath + ">\n",
			"<mkdir><-p><" + path.Dir(filePath) + ">\n<chmod><640><tmpfile>\n<chown><" + user + ":0><tmpfile>\n<mv><-f><tmpfile><" + filePath + ">\n",
			"<mkdir><-p><" + path.Dir(link) + ">\n<ln><-s><" + target + "><" + link + ">\n",
			"<systemctl><daemon-reload>\n<systemctl><enable><" + unitName + ">\n",
		}
		if !strings.Contains(unitName, "@.") {
			want = append(want, "<systemctl><start><"+unitName+">\n")
		}
		if unitContents != "" {
			want = append(want, "<mv><-f><tmpfile><"+ignition.UnitDir+"/"+unitName+">\n")
		}
		for _, w := range want {
			if !strings.Contains(string(got), w) {
				t.Fatalf("the commands did not get the values whole:\ngot:  %q\nwant: %q", got, w)
			}
		}
	})
}
