// Package cloudinit turns Cluster API bootstrap data (a cloud-config document or a shell script) into an ordered plan
// of steps to run on a host over SSH, in the order cloud-init would run them. It is pure: no I/O.
package cloudinit

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"al.essio.dev/pkg/shellescape"
	"sigs.k8s.io/yaml"
)

// ErrUnsupported marks bootstrap data CAPR cannot run; the message says what and why. Never retried.
var ErrUnsupported = errors.New("unsupported bootstrap data")

// File is a file to write on the host.
type File struct {
	Path        string
	Content     []byte
	Permissions uint32
	Owner       string
	Append      bool
	// OwnerRequired fails the step when Owner does not exist (Ignition); otherwise the file stays root's, as
	// cloud-init's write_files runs before its users are made.
	OwnerRequired bool
}

// Step is one thing to do on the host: write a file or run a shell command. Source names where it came from in the
// bootstrap data (e.g. "runcmd[2]"), for error messages.
type Step struct {
	Source  string
	File    *File
	Command string
}

// Plan is the ordered steps of a bootstrap.
type Plan struct {
	// Format is "cloud-config", "shell" or "ignition".
	Format string
	Steps  []Step
}

// Vars are the instance data that cloud-init's jinja templates may read.
type Vars struct {
	// Hostname is the host's short hostname (ds.meta_data.local_hostname, v1.local_hostname).
	Hostname string
}

// Parse turns bootstrap data into a plan. format is the bootstrap Secret's `format` key ("" means cloud-config).
// Data that decodes to more than MaxDecodedSize is refused with ErrTooLarge.
func Parse(data []byte, format string, vars Vars) (*Plan, error) {
	if err := CheckRaw(data); err != nil {
		return nil, err
	}
	switch format {
	case "", "cloud-config":
	case "ignition":
		return nil, fmt.Errorf("%w: the bootstrap data is Ignition, which package ignition applies, not this one", ErrUnsupported)
	default:
		return nil, fmt.Errorf("%w: bootstrap data format %q is unknown; CAPR runs cloud-config and shell scripts", ErrUnsupported, format)
	}
	text := string(data)
	if strings.HasPrefix(text, "#!") {
		return &Plan{Format: "shell", Steps: []Step{{Source: "script", Command: text}}}, nil
	}
	body, err := renderJinja(text, vars)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(strings.TrimLeft(body, " \t\r\n"), "#cloud-config") {
		return nil, fmt.Errorf("%w: the bootstrap data is neither a cloud-config document (first line #cloud-config) nor a shell script (first line #!)", ErrUnsupported)
	}
	return parseCloudConfig(body, &Budget{})
}

var jinjaExpr = regexp.MustCompile(`\{\{-?\s*(.*?)\s*-?\}\}`)

// renderJinja renders a "## template: jinja" document's instance-data expressions; other documents are returned as
// they are. Only the expressions Cluster API templates use are known; any other is an error naming it.
func renderJinja(text string, vars Vars) (string, error) {
	first, rest, _ := strings.Cut(text, "\n")
	if strings.TrimSpace(first) != "## template: jinja" {
		return text, nil
	}
	if strings.Contains(rest, "{%") {
		return "", fmt.Errorf("%w: jinja statements ({%% ... %%}) are not supported, only instance-data expressions such as {{ ds.meta_data.local_hostname }}", ErrUnsupported)
	}
	// Each expression becomes the host name, which the host reports: the rendered text stays within the budget.
	if int64(len(rest))+int64(strings.Count(rest, "{{"))*int64(len(vars.Hostname)) > MaxDecodedSize {
		return "", tooLarge("the jinja template, the host name rendered")
	}
	var bad []string
	out := jinjaExpr.ReplaceAllStringFunc(rest, func(m string) string {
		expr := strings.ReplaceAll(jinjaExpr.FindStringSubmatch(m)[1], " ", "")
		switch expr {
		case "ds.meta_data.local_hostname", `ds.meta_data["local_hostname"]`, "ds.meta_data['local_hostname']",
			"v1.local_hostname", "local_hostname", "ds.meta_data.hostname", "v1.hostname":
			return vars.Hostname
		}
		bad = append(bad, m)
		return m
	})
	if len(bad) > 0 {
		return "", fmt.Errorf("%w: jinja expression %s is not known to CAPR; it renders only the host name ({{ ds.meta_data.local_hostname }})", ErrUnsupported, bad[0])
	}
	return out, nil
}

// cloudConfig is the part of the cloud-config schema Cluster API bootstrap providers emit.
type cloudConfig struct {
	BootCmd    []any       `json:"bootcmd"`
	WriteFiles []writeFile `json:"write_files"`
	RunCmd     []any       `json:"runcmd"`
	Users      []any       `json:"users"`
	NTP        *ntp        `json:"ntp"`
	Mounts     [][]string  `json:"mounts"`
}

type writeFile struct {
	Path        string `json:"path"`
	Content     string `json:"content"`
	Encoding    string `json:"encoding"`
	Owner       string `json:"owner"`
	Permissions any    `json:"permissions"`
	Append      bool   `json:"append"`
	Defer       bool   `json:"defer"`
}

type ntp struct {
	Enabled *bool    `json:"enabled"`
	Servers []string `json:"servers"`
	Pools   []string `json:"pools"`
}

// known are the top-level keys CAPR runs; keys it ignores on purpose are listed in ignored with the reason.
var (
	known   = map[string]bool{"bootcmd": true, "write_files": true, "runcmd": true, "users": true, "ntp": true, "mounts": true}
	ignored = map[string]bool{
		// Already true of a running host reached over SSH, or cloud-init housekeeping with no effect here.
		"package_update": true, "package_upgrade": true, "final_message": true, "output": true,
		"manage_etc_hosts": true, "preserve_hostname": true, "ssh_pwauth": true, "disable_root": true,
	}
)

func parseCloudConfig(body string, budget *Budget) (*Plan, error) {
	if err := checkYAMLSize(body); err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(body), &raw); err != nil {
		return nil, fmt.Errorf("%w: the cloud-config is not valid YAML: %w", ErrUnsupported, err)
	}
	var unknown []string
	for k := range raw {
		if !known[k] && !ignored[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("%w: cloud-config key(s) %s are not supported by CAPR; it runs bootcmd, write_files, runcmd, users, ntp and mounts (prepare disks and packages on the host beforehand)",
			ErrUnsupported, strings.Join(unknown, ", "))
	}
	var cc cloudConfig
	if err := yaml.Unmarshal([]byte(body), &cc); err != nil {
		return nil, fmt.Errorf("%w: the cloud-config does not match the cloud-init schema: %w", ErrUnsupported, err)
	}
	plan := &Plan{Format: "cloud-config"}
	// cloud-init's order: bootcmd (init stage), write_files, users, mounts, ntp (config stage), deferred
	// write_files, then runcmd (final stage).
	if err := addCommands(plan, "bootcmd", cc.BootCmd, budget); err != nil {
		return nil, err
	}
	if err := addFiles(plan, cc.WriteFiles, false, budget); err != nil {
		return nil, err
	}
	if err := addUsers(plan, cc.Users); err != nil {
		return nil, err
	}
	addMounts(plan, cc.Mounts)
	addNTP(plan, cc.NTP)
	if err := addFiles(plan, cc.WriteFiles, true, budget); err != nil {
		return nil, err
	}
	if err := addCommands(plan, "runcmd", cc.RunCmd, budget); err != nil {
		return nil, err
	}
	return plan, nil
}

// addCommands adds runcmd/bootcmd entries: a string runs in a shell, a list is an argv run without one.
func addCommands(plan *Plan, key string, entries []any, budget *Budget) error {
	for i, e := range entries {
		src := fmt.Sprintf("%s[%d]", key, i)
		var cmd string
		switch v := e.(type) {
		case string:
			cmd = v
		case []any:
			argv := make([]string, 0, len(v))
			for _, a := range v {
				switch s := a.(type) {
				case string:
					argv = append(argv, s)
				case float64, bool, int64:
					argv = append(argv, fmt.Sprint(s))
				default:
					return fmt.Errorf("%w: %s has an argument that is not a string", ErrUnsupported, src)
				}
			}
			if len(argv) == 0 {
				return fmt.Errorf("%w: %s is an empty list", ErrUnsupported, src)
			}
			cmd = shellescape.QuoteCommand(argv)
		default:
			return fmt.Errorf("%w: %s must be a string or a list of strings", ErrUnsupported, src)
		}
		if err := budget.Take(len(cmd), src); err != nil {
			return err
		}
		plan.Steps = append(plan.Steps, Step{Source: src, Command: cmd})
	}
	return nil
}

func addFiles(plan *Plan, files []writeFile, deferred bool, budget *Budget) error {
	for i, f := range files {
		if f.Defer != deferred {
			continue
		}
		src := fmt.Sprintf("write_files[%d]", i)
		if f.Path == "" || !strings.HasPrefix(f.Path, "/") {
			return fmt.Errorf("%w: %s needs an absolute path", ErrUnsupported, src)
		}
		content, err := decode(f.Content, f.Encoding, budget, src+" ("+f.Path+")")
		if errors.Is(err, ErrTooLarge) {
			return err
		}
		if err != nil {
			return fmt.Errorf("%w: %s (%s): %w", ErrUnsupported, src, f.Path, err)
		}
		perms, err := permissions(f.Permissions)
		if err != nil {
			return fmt.Errorf("%w: %s (%s): %w", ErrUnsupported, src, f.Path, err)
		}
		owner := f.Owner
		if owner == "" {
			owner = "root:root"
		}
		plan.Steps = append(plan.Steps, Step{Source: src, File: &File{Path: f.Path, Content: content, Permissions: perms, Owner: owner, Append: f.Append}})
	}
	return nil
}

// decode applies a write_files encoding, charging the decoded content of what to the budget.
func decode(content, encoding string, budget *Budget, what string) ([]byte, error) {
	var out []byte
	var err error
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "text/plain":
		out = []byte(content)
	case "b64", "base64":
		out, err = base64.StdEncoding.DecodeString(strings.TrimSpace(content))
	case "gz", "gzip":
		return budget.Gunzip([]byte(content), what)
	case "gz+b64", "gzip+base64", "gz+base64", "gzip+b64":
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(content))
		if err != nil {
			return nil, err
		}
		return budget.Gunzip(b, what)
	default:
		return nil, fmt.Errorf("encoding %q is unknown (use b64, base64, gzip, gz, gz+b64, gzip+base64 or gz+base64)", encoding)
	}
	if err != nil {
		return nil, err
	}
	return out, budget.Take(len(out), what)
}

// permissions reads an octal mode given as a string ('0640') or a number (cloud-init reads both).
func permissions(p any) (uint32, error) {
	switch v := p.(type) {
	case nil:
		return 0o644, nil
	case string:
		if v == "" {
			return 0o644, nil
		}
		m, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(v), "0o"), 8, 32)
		if err != nil || m > 0o7777 {
			return 0, fmt.Errorf("permissions %q are not an octal file mode", v)
		}
		return uint32(m), nil
	case float64:
		// YAML 1.1 (as cloud-init reads it) parses an unquoted 0640 as an octal number; cloud-init uses a number as
		// the mode itself.
		if v < 0 || v > 0o7777 || v != float64(uint32(v)) {
			return 0, fmt.Errorf("permissions %v are not a file mode", v)
		}
		return uint32(v), nil
	}
	return 0, fmt.Errorf("permissions must be an octal string such as '0640'")
}

// addUsers creates users (name, groups, shell, sudo, ssh_authorized_keys, lock_passwd) idempotently.
func addUsers(plan *Plan, users []any) error {
	q := shellescape.Quote
	for i, u := range users {
		src := fmt.Sprintf("users[%d]", i)
		if s, ok := u.(string); ok {
			if s == "default" {
				continue // the image's default user: nothing to create on an existing host
			}
			u = map[string]any{"name": s}
		}
		m, ok := u.(map[string]any)
		if !ok {
			return fmt.Errorf("%w: %s must be a name or a mapping", ErrUnsupported, src)
		}
		name, _ := m["name"].(string)
		if name == "" {
			return fmt.Errorf("%w: %s has no name", ErrUnsupported, src)
		}
		var b strings.Builder
		args := []string{"useradd", "--create-home"}
		for key, flag := range map[string]string{"shell": "--shell", "homedir": "--home-dir", "primary_group": "--gid", "gecos": "--comment"} {
			if v, ok := m[key].(string); ok && v != "" {
				args = append(args, flag, v)
			}
		}
		args = append(args, name)
		fmt.Fprintf(&b, "id -u %s >/dev/null 2>&1 || %s", q(name), shellescape.QuoteCommand(args))
		switch g := m["groups"].(type) {
		case string:
			if g != "" {
				fmt.Fprintf(&b, " && usermod -aG %s %s", q(strings.ReplaceAll(g, " ", "")), q(name))
			}
		case []any:
			var gs []string
			for _, x := range g {
				gs = append(gs, fmt.Sprint(x))
			}
			if len(gs) > 0 {
				fmt.Fprintf(&b, " && usermod -aG %s %s", q(strings.Join(gs, ",")), q(name))
			}
		}
		if lock, ok := m["lock_passwd"].(bool); !ok || lock {
			fmt.Fprintf(&b, " && passwd -l %s >/dev/null", q(name))
		}
		steps := []Step{{Source: src, Command: b.String()}}
		if sudo, ok := m["sudo"].(string); ok && sudo != "" {
			steps = append(steps, Step{Source: src + ".sudo", File: &File{Path: "/etc/sudoers.d/90-cloud-init-" + name, Content: []byte(name + " " + sudo + "\n"), Permissions: 0o440, Owner: "root:root"}})
		}
		if keys, ok := m["ssh_authorized_keys"].([]any); ok && len(keys) > 0 {
			var content strings.Builder
			for _, k := range keys {
				content.WriteString(fmt.Sprint(k) + "\n")
			}
			home := "/home/" + name
			if h, ok := m["homedir"].(string); ok && h != "" {
				home = h
			}
			steps = append(steps, Step{Source: src + ".ssh_authorized_keys", File: &File{Path: home + "/.ssh/authorized_keys", Content: []byte(content.String()), Permissions: 0o600, Owner: name + ":" + name, Append: true}})
		}
		plan.Steps = append(plan.Steps, steps...)
	}
	return nil
}

// addMounts appends the mounts to /etc/fstab (if not there yet) and mounts them.
func addMounts(plan *Plan, mounts [][]string) {
	for i, m := range mounts {
		if len(m) < 2 {
			continue
		}
		fields := append([]string(nil), m...)
		for len(fields) < 6 {
			fields = append(fields, []string{"", "", "auto", "defaults,nofail", "0", "2"}[len(fields)])
		}
		line := strings.Join(fields, "\t")
		plan.Steps = append(plan.Steps, Step{Source: fmt.Sprintf("mounts[%d]", i), Command: fmt.Sprintf(
			"mkdir -p %s && (grep -qF %s /etc/fstab || echo %s >> /etc/fstab) && (mountpoint -q %s || mount %s)",
			shellescape.Quote(fields[1]), shellescape.Quote(line), shellescape.Quote(line), shellescape.Quote(fields[1]), shellescape.Quote(fields[1]))})
	}
}

// addNTP configures systemd-timesyncd with the servers and restarts it.
func addNTP(plan *Plan, n *ntp) {
	if n == nil || (n.Enabled != nil && !*n.Enabled) || len(n.Servers)+len(n.Pools) == 0 {
		return
	}
	servers := strings.Join(append(append([]string(nil), n.Servers...), n.Pools...), " ")
	plan.Steps = append(plan.Steps,
		Step{Source: "ntp", File: &File{Path: "/etc/systemd/timesyncd.conf.d/cluster-api.conf", Content: []byte("[Time]\nNTP=" + servers + "\n"), Permissions: 0o644, Owner: "root:root"}},
		Step{Source: "ntp", Command: "systemctl restart systemd-timesyncd || true"})
}
