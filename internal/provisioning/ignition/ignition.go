// Package ignition turns an Ignition config (the bootstrap Secret's `format: ignition`) into the same kind of plan
// as package cloudinit, for hosts that are already running (Flatcar and other Ignition hosts reached over SSH). It
// parses with Ignition's own config packages: spec 3.x with github.com/coreos/ignition/v2 (translated to 3.5), and
// spec 2.x, which Cluster API's kubeadm bootstrap provider emits, with github.com/flatcar/ignition (as Flatcar's
// Ignition reads it), mapped field by field onto the 3.5 types. It applies what a running host can take: users and
// groups without password hashes, storage.directories, storage.files, storage.links and systemd.units, in Ignition's
// order, and refuses, naming the field, what only a first boot can do (disks, RAID, filesystems, LUKS, kernel
// arguments, password hashes) or what the host cannot be assumed to reach (remote sources, merged or replaced
// configs). It is pure: no I/O.
package ignition

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"path"
	"sort"
	"strconv"
	"strings"

	"al.essio.dev/pkg/shellescape"
	v3 "github.com/coreos/ignition/v2/config/v3_5"
	"github.com/coreos/ignition/v2/config/v3_5/types"
	"github.com/vincent-petithory/dataurl"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
)

// Format is the plan's format.
const Format = "ignition"

// UnitDir is where units and their drop-ins are written, as Ignition does.
const UnitDir = "/etc/systemd/system"

var q = shellescape.Quote

// Parse turns an Ignition config into a plan. Errors wrap cloudinit.ErrUnsupported and name the field; a config
// whose contents decode to more than cloudinit.MaxDecodedSize is refused with cloudinit.ErrTooLarge.
func Parse(data []byte) (*cloudinit.Plan, error) {
	if err := cloudinit.CheckRaw(data); err != nil {
		return nil, err
	}
	var stub struct {
		Ignition struct {
			Version string `json:"version"`
		} `json:"ignition"`
	}
	if err := json.Unmarshal(data, &stub); err != nil {
		return nil, fmt.Errorf("%w: the Ignition config is not valid JSON: %w", cloudinit.ErrUnsupported, err)
	}
	var cfg types.Config
	switch v := stub.Ignition.Version; {
	case strings.HasPrefix(v, "2."):
		c, err := parseV2(data)
		if err != nil {
			return nil, err
		}
		cfg = c
	case strings.HasPrefix(v, "3."):
		c, rpt, err := v3.ParseCompatibleVersion(data)
		if err != nil {
			return nil, fmt.Errorf("%w: the Ignition config (spec %s) is invalid: %w%s", cloudinit.ErrUnsupported, v, err, report(rpt.String()))
		}
		cfg = c
	default:
		return nil, fmt.Errorf("%w: ignition.version %q is not an Ignition spec CAPR reads (2.0 to 2.3, 3.0 to 3.5)", cloudinit.ErrUnsupported, v)
	}
	return build(cfg)
}

func report(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return " (" + strings.ReplaceAll(s, "\n", "; ") + ")"
}

func unsupported(field, why string) error {
	return fmt.Errorf("%w: Ignition field %s cannot be applied to a running host over SSH: %s", cloudinit.ErrUnsupported, field, why)
}

// refuse checks the parts of a config a running host cannot take, naming the first field found.
func refuse(c types.Config) error {
	switch {
	case len(c.Ignition.Config.Merge) > 0:
		return unsupported("ignition.config.merge", "CAPR applies only the config it is given and fetches no other")
	case c.Ignition.Config.Replace.Source != nil:
		return unsupported("ignition.config.replace", "CAPR applies only the config it is given and fetches no other")
	case len(c.KernelArguments.ShouldExist)+len(c.KernelArguments.ShouldNotExist) > 0:
		return unsupported("kernelArguments", "kernel arguments take a reboot into a changed boot loader; set them on the host")
	case len(c.Storage.Disks) > 0:
		return unsupported("storage.disks", "partitioning is done before the system runs from its disks; prepare disks beforehand")
	case len(c.Storage.Raid) > 0:
		return unsupported("storage.raid", "arrays are built before the system runs from them; prepare them beforehand")
	case len(c.Storage.Filesystems) > 0:
		return unsupported("storage.filesystems", "filesystems are made and mounted by Ignition at first boot; prepare and mount them beforehand")
	case len(c.Storage.Luks) > 0:
		return unsupported("storage.luks", "encrypted volumes are set up at first boot; prepare them beforehand")
	}
	for i, u := range c.Passwd.Users {
		if u.PasswordHash != nil {
			return unsupported(fmt.Sprintf("passwd.users[%d].passwordHash", i), "CAPR never sets passwords (use sshAuthorizedKeys)")
		}
		if u.ShouldExist != nil && !*u.ShouldExist {
			return unsupported(fmt.Sprintf("passwd.users[%d].shouldExist", i), "CAPR does not delete accounts")
		}
	}
	for i, g := range c.Passwd.Groups {
		if g.PasswordHash != nil {
			return unsupported(fmt.Sprintf("passwd.groups[%d].passwordHash", i), "CAPR never sets passwords")
		}
		if g.ShouldExist != nil && !*g.ShouldExist {
			return unsupported(fmt.Sprintf("passwd.groups[%d].shouldExist", i), "CAPR does not delete groups")
		}
	}
	return nil
}

// build makes the plan in Ignition's order (files stage): users and groups, then directories, files and links
// (shallowest path first, hard links last), then units (written, masked, enabled). Then, as the host is already
// running and will not boot into its targets, systemd reloads its units and the enabled ones are started, in order.
func build(c types.Config) (*cloudinit.Plan, error) {
	if err := refuse(c); err != nil {
		return nil, err
	}
	plan := &cloudinit.Plan{Format: Format}
	budget := &cloudinit.Budget{}
	for i, g := range c.Passwd.Groups {
		plan.Steps = append(plan.Steps, groupStep(i, g))
	}
	for i, u := range c.Passwd.Users {
		plan.Steps = append(plan.Steps, userStep(i, u))
	}
	steps, err := entries(c.Storage, budget)
	if err != nil {
		return nil, err
	}
	plan.Steps = append(plan.Steps, steps...)
	steps, err = units(c.Systemd.Units, budget)
	if err != nil {
		return nil, err
	}
	plan.Steps = append(plan.Steps, steps...)
	return plan, nil
}

func groupStep(i int, g types.PasswdGroup) cloudinit.Step {
	args := []string{"groupadd"}
	if g.Gid != nil {
		args = append(args, "--gid", strconv.Itoa(*g.Gid))
	}
	if g.System != nil && *g.System {
		args = append(args, "--system")
	}
	args = append(args, g.Name)
	return cloudinit.Step{Source: fmt.Sprintf("passwd.groups[%d]", i),
		Command: fmt.Sprintf("getent group %s >/dev/null || %s", q(g.Name), shellescape.QuoteCommand(args))}
}

// userStep creates a missing user with useradd (as Ignition does), or adds an existing one to the groups; then
// appends the SSH keys to the user's authorized_keys.
func userStep(i int, u types.PasswdUser) cloudinit.Step {
	args := []string{"useradd"}
	opt := func(flag string, v *string) {
		if v != nil && *v != "" {
			args = append(args, flag, *v)
		}
	}
	if u.UID != nil {
		args = append(args, "--uid", strconv.Itoa(*u.UID))
	}
	opt("--comment", u.Gecos)
	opt("--home-dir", u.HomeDir)
	if u.NoCreateHome != nil && *u.NoCreateHome {
		args = append(args, "--no-create-home")
	} else {
		args = append(args, "--create-home")
	}
	opt("--gid", u.PrimaryGroup)
	opt("--shell", u.Shell)
	if u.NoUserGroup != nil && *u.NoUserGroup {
		args = append(args, "--no-user-group")
	}
	if u.System != nil && *u.System {
		args = append(args, "--system")
	}
	if u.NoLogInit != nil && *u.NoLogInit {
		args = append(args, "--no-log-init")
	}
	var groups []string
	for _, g := range u.Groups {
		groups = append(groups, string(g))
	}
	if len(groups) > 0 {
		args = append(args, "--groups", strings.Join(groups, ","))
	}
	args = append(args, u.Name)
	name := q(u.Name)
	var b strings.Builder
	fmt.Fprintf(&b, "if getent passwd %s >/dev/null; then :", name)
	if len(groups) > 0 {
		fmt.Fprintf(&b, " && usermod -aG %s %s", q(strings.Join(groups, ",")), name)
	}
	fmt.Fprintf(&b, "; else %s; fi", shellescape.QuoteCommand(args))
	if len(u.SSHAuthorizedKeys) > 0 {
		var keys []string
		for _, k := range u.SSHAuthorizedKeys {
			keys = append(keys, q(string(k)))
		}
		fmt.Fprintf(&b, ` && h=$(getent passwd %s | cut -d: -f6) && [ -n "$h" ] && mkdir -p "$h/.ssh" && printf '%%s\n' %s >> "$h/.ssh/authorized_keys" && chmod 700 "$h/.ssh" && chmod 600 "$h/.ssh/authorized_keys" && chown %s: "$h/.ssh" "$h/.ssh/authorized_keys"`,
			name, strings.Join(keys, " "), name)
	}
	return cloudinit.Step{Source: fmt.Sprintf("passwd.users[%d]", i), Command: b.String()}
}

// owner is the chown argument for a node: user and group by name or id, root when not given (as Ignition does).
func owner(n types.Node) string {
	u, g := "0", "0"
	if n.User.Name != nil && *n.User.Name != "" {
		u = *n.User.Name
	} else if n.User.ID != nil {
		u = strconv.Itoa(*n.User.ID)
	}
	if n.Group.Name != nil && *n.Group.Name != "" {
		g = *n.Group.Name
	} else if n.Group.ID != nil {
		g = strconv.Itoa(*n.Group.ID)
	}
	return u + ":" + g
}

func mode(m *int, def uint32) uint32 {
	if m == nil {
		return def
	}
	return uint32(*m & 0o7777)
}

type entry struct {
	path  string
	steps func() ([]cloudinit.Step, error)
}

// entries orders directories, files and symbolic links from the shallowest path to the deepest, then hard links,
// as Ignition does.
func entries(s types.Storage, budget *cloudinit.Budget) ([]cloudinit.Step, error) {
	var list, hard []entry
	for i, d := range s.Directories {
		d.Path = path.Clean(d.Path)
		list = append(list, entry{d.Path, func() ([]cloudinit.Step, error) { return directory(i, d), nil }})
	}
	for i, f := range s.Files {
		f.Path = path.Clean(f.Path)
		list = append(list, entry{f.Path, func() ([]cloudinit.Step, error) { return file(i, f, budget) }})
	}
	for i, l := range s.Links {
		l.Path = path.Clean(l.Path)
		e := entry{l.Path, func() ([]cloudinit.Step, error) { return link(i, l), nil }}
		if l.Hard != nil && *l.Hard {
			hard = append(hard, e)
		} else {
			list = append(list, e)
		}
	}
	sort.SliceStable(list, func(i, j int) bool { return depth(list[i].path) < depth(list[j].path) })
	var out []cloudinit.Step
	for _, e := range append(list, hard...) {
		steps, err := e.steps()
		if err != nil {
			return nil, err
		}
		out = append(out, steps...)
	}
	return out, nil
}

func depth(p string) int {
	return strings.Count(path.Clean(p), "/")
}

// removeOnOverwrite is Ignition's overwrite: whatever is at the path is removed first.
func removeOnOverwrite(src string, n types.Node) []cloudinit.Step {
	if n.Overwrite != nil && *n.Overwrite {
		return []cloudinit.Step{{Source: src, Command: "rm -rf " + q(n.Path)}}
	}
	return nil
}

func directory(i int, d types.Directory) []cloudinit.Step {
	src := fmt.Sprintf("storage.directories[%d]", i)
	p := q(d.Path)
	return append(removeOnOverwrite(src, d.Node), cloudinit.Step{Source: src, Command: fmt.Sprintf(
		"if [ -L %[1]s ] || { [ -e %[1]s ] && [ ! -d %[1]s ]; }; then echo %[2]s >&2; exit 1; fi; mkdir -p %[1]s && chmod %[3]o %[1]s && chown %[4]s %[1]s",
		p, q("capr: "+d.Path+" exists and is not a directory, and overwrite is false"), mode(d.Mode, 0o755), q(owner(d.Node)))})
}

func file(i int, f types.File, budget *cloudinit.Budget) ([]cloudinit.Step, error) {
	src := fmt.Sprintf("storage.files[%d]", i)
	steps := removeOnOverwrite(src, f.Node)
	perms, own := mode(f.Mode, 0o644), owner(f.Node)
	p := q(f.Path)
	if f.Contents.Source != nil {
		content, err := fetch(src+".contents", f.Contents, budget)
		if err != nil {
			return nil, err
		}
		if f.Overwrite == nil || !*f.Overwrite {
			steps = append(steps, cloudinit.Step{Source: src, Command: fmt.Sprintf("if [ -e %[1]s ] || [ -L %[1]s ]; then echo %[2]s >&2; exit 1; fi",
				p, q("capr: "+f.Path+" exists and overwrite is false"))})
		}
		steps = append(steps, cloudinit.Step{Source: src, File: &cloudinit.File{Path: f.Path, Content: content, Permissions: perms, Owner: own, OwnerRequired: true}})
	} else {
		// No contents: an existing regular file is kept (its mode and owner set), a missing one is created empty.
		steps = append(steps, cloudinit.Step{Source: src, Command: fmt.Sprintf(
			"if [ -L %[1]s ] || { [ -e %[1]s ] && [ ! -f %[1]s ]; }; then echo %[2]s >&2; exit 1; fi; [ -e %[1]s ] || { mkdir -p %[3]s && : > %[1]s; }",
			p, q("capr: "+f.Path+" exists and is not a regular file, and overwrite is false"), q(path.Dir(f.Path)))})
	}
	for j, r := range f.Append {
		content, err := fetch(fmt.Sprintf("%s.append[%d]", src, j), r, budget)
		if err != nil {
			return nil, err
		}
		steps = append(steps, cloudinit.Step{Source: src, File: &cloudinit.File{Path: f.Path, Content: content, Append: true}})
	}
	if f.Contents.Source == nil || len(f.Append) > 0 {
		steps = append(steps, cloudinit.Step{Source: src, Command: fmt.Sprintf("chmod %o %s && chown %s %s", perms, p, q(own), p)})
	}
	return steps, nil
}

func link(i int, l types.Link) []cloudinit.Step {
	src := fmt.Sprintf("storage.links[%d]", i)
	p, t := q(l.Path), q(derefString(l.Target))
	steps := removeOnOverwrite(src, l.Node)
	hard := l.Hard != nil && *l.Hard
	// An existing link to the same target is kept, as Ignition does; anything else at the path fails.
	var cmd string
	if hard {
		cmd = fmt.Sprintf("if [ -e %[1]s ] || [ -L %[1]s ]; then [ %[1]s -ef %[2]s ] || { echo %[3]s >&2; exit 1; }; else mkdir -p %[4]s && ln %[2]s %[1]s; fi",
			p, t, q("capr: "+l.Path+" exists and is not a hard link to "+derefString(l.Target)+", and overwrite is false"), q(path.Dir(l.Path)))
	} else {
		cmd = fmt.Sprintf("if [ -L %[1]s ]; then [ \"$(readlink %[1]s)\" = %[2]s ] || { echo %[3]s >&2; exit 1; }; elif [ -e %[1]s ]; then echo %[3]s >&2; exit 1; else mkdir -p %[4]s && ln -s %[2]s %[1]s; fi",
			p, t, q("capr: "+l.Path+" exists and is not a symbolic link to "+derefString(l.Target)+", and overwrite is false"), q(path.Dir(l.Path)))
		if l.User.Name != nil || l.User.ID != nil || l.Group.Name != nil || l.Group.ID != nil {
			cmd += fmt.Sprintf(" && chown -h %s %s", q(owner(l.Node)), p)
		}
	}
	return append(steps, cloudinit.Step{Source: src, Command: cmd})
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// units writes units and drop-ins, masks and unmasks, reloads systemd, enables and disables, and starts the enabled
// units last. Ignition writes a preset file that systemd applies at first boot; a running host gets the same from
// systemctl enable, and start does what booting into the unit's target would.
func units(list []types.Unit, budget *cloudinit.Budget) ([]cloudinit.Step, error) {
	var writes, masks, enables, starts []cloudinit.Step
	for i, u := range list {
		src := fmt.Sprintf("systemd.units[%d]", i)
		if strings.ContainsAny(u.Name, "/\x00") || u.Name == "" {
			return nil, fmt.Errorf("%w: %s.name %q is not a unit name", cloudinit.ErrUnsupported, src, u.Name)
		}
		for j, d := range u.Dropins {
			if d.Contents == nil {
				continue
			}
			if strings.ContainsAny(d.Name, "/\x00") || d.Name == "" {
				return nil, fmt.Errorf("%w: %s.dropins[%d].name %q is not a drop-in file name", cloudinit.ErrUnsupported, src, j, d.Name)
			}
			if err := budget.Take(len(*d.Contents), fmt.Sprintf("%s.dropins[%d].contents", src, j)); err != nil {
				return nil, err
			}
			writes = append(writes, cloudinit.Step{Source: fmt.Sprintf("%s.dropins[%d]", src, j),
				File: &cloudinit.File{Path: UnitDir + "/" + u.Name + ".d/" + d.Name, Content: []byte(*d.Contents), Permissions: 0o644, Owner: "0:0", OwnerRequired: true}})
		}
		if u.Contents != nil && *u.Contents != "" {
			if err := budget.Take(len(*u.Contents), src+".contents"); err != nil {
				return nil, err
			}
			writes = append(writes, cloudinit.Step{Source: src, File: &cloudinit.File{Path: UnitDir + "/" + u.Name, Content: []byte(*u.Contents), Permissions: 0o644, Owner: "0:0", OwnerRequired: true}})
		}
		n := q(u.Name)
		if u.Mask != nil {
			if *u.Mask {
				// As Ignition does: whatever is at the unit's path gives way to the mask.
				masks = append(masks, cloudinit.Step{Source: src + ".mask", Command: fmt.Sprintf("rm -rf %s && systemctl mask %s", q(UnitDir+"/"+u.Name), n)})
			} else {
				masks = append(masks, cloudinit.Step{Source: src + ".mask", Command: fmt.Sprintf("if [ \"$(readlink %s)\" = /dev/null ]; then systemctl unmask %s; fi", q(UnitDir+"/"+u.Name), n)})
			}
		}
		if u.Enabled != nil {
			if *u.Enabled {
				enables = append(enables, cloudinit.Step{Source: src + ".enabled", Command: "systemctl enable " + n})
				if !strings.Contains(u.Name, "@.") {
					starts = append(starts, cloudinit.Step{Source: src + ".start", Command: "systemctl start " + n})
				}
			} else {
				enables = append(enables, cloudinit.Step{Source: src + ".enabled", Command: "systemctl disable " + n})
			}
		}
	}
	if len(list) == 0 {
		return nil, nil
	}
	steps := append(writes, masks...)
	steps = append(steps, cloudinit.Step{Source: "systemd.units", Command: "systemctl daemon-reload"})
	steps = append(steps, enables...)
	return append(steps, starts...), nil
}

// fetch returns a resource's contents: a data URL (plain or base64), gzip-decompressed if the resource says so
// (within the budget), and checked against its verification hash. Any other source is refused: the host cannot be
// assumed to reach it.
func fetch(field string, r types.Resource, budget *cloudinit.Budget) ([]byte, error) {
	src := derefString(r.Source)
	if src == "" {
		return nil, nil
	}
	scheme, _, _ := strings.Cut(src, ":")
	if !strings.EqualFold(scheme, "data") {
		return nil, unsupported(field+".source", fmt.Sprintf("the %s source is fetched by Ignition, and CAPR cannot assume the host reaches it; inline the contents as a data: URL", scheme))
	}
	u, err := dataurl.DecodeString(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %s.source is not a valid data URL: %w", cloudinit.ErrUnsupported, field, err)
	}
	data := u.Data
	switch c := derefString(r.Compression); c {
	case "":
		if err := budget.Take(len(data), field); err != nil {
			return nil, err
		}
	case "gzip":
		data, err = budget.Gunzip(data, field)
		if errors.Is(err, cloudinit.ErrTooLarge) {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s is not gzip data: %w", cloudinit.ErrUnsupported, field, err)
		}
	default:
		return nil, fmt.Errorf("%w: %s.compression %q is not supported (gzip is)", cloudinit.ErrUnsupported, field, c)
	}
	if h := derefString(r.Verification.Hash); h != "" {
		if err := verify(data, h); err != nil {
			return nil, fmt.Errorf("%w: %s.verification.hash: %w", cloudinit.ErrUnsupported, field, err)
		}
	}
	return data, nil
}

func verify(data []byte, h string) error {
	kind, want, _ := strings.Cut(h, "-")
	var hasher hash.Hash
	switch kind {
	case "sha512":
		hasher = sha512.New()
	case "sha256":
		hasher = sha256.New()
	default:
		return fmt.Errorf("hash function %q is not supported (sha512 and sha256 are)", kind)
	}
	hasher.Write(data)
	if got := hex.EncodeToString(hasher.Sum(nil)); !strings.EqualFold(got, want) {
		return errors.New("the contents do not match the hash")
	}
	return nil
}
