package ignition

import (
	"encoding/json"
	"fmt"

	v3 "github.com/coreos/ignition/v2/config/v3_5"
	"github.com/coreos/ignition/v2/config/v3_5/types"
	v2 "github.com/flatcar/ignition/config/v2_3"
	v2types "github.com/flatcar/ignition/config/v2_3/types"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
)

// parseV2 reads a spec 2.0 to 2.3 config with Flatcar's Ignition config package (Cluster API's kubeadm bootstrap
// provider emits 2.3.0 with it) and maps the parts a running host can take onto spec 3.5, with the meaning they
// have in spec 2 (a file is overwritten unless it is appended to; append: true appends the contents). The result
// goes through Ignition's 3.5 parser and validation. What has no place on a running host is refused by name here,
// as spec 2 names it.
func parseV2(data []byte) (types.Config, error) {
	c, rpt, err := v2.Parse(data)
	if err != nil {
		return types.Config{}, fmt.Errorf("%w: the Ignition config (spec 2.x) is invalid: %w%s", cloudinit.ErrUnsupported, err, report(rpt.String()))
	}
	switch {
	case len(c.Ignition.Config.Append) > 0:
		return types.Config{}, unsupported("ignition.config.append", "CAPR applies only the config it is given and fetches no other")
	case c.Ignition.Config.Replace != nil:
		return types.Config{}, unsupported("ignition.config.replace", "CAPR applies only the config it is given and fetches no other")
	case len(c.Storage.Disks) > 0:
		return types.Config{}, unsupported("storage.disks", "partitioning is done before the system runs from its disks; prepare disks beforehand")
	case len(c.Storage.Raid) > 0:
		return types.Config{}, unsupported("storage.raid", "arrays are built before the system runs from them; prepare them beforehand")
	case len(c.Storage.Filesystems) > 0:
		return types.Config{}, unsupported("storage.filesystems", "filesystems are made and mounted by Ignition at first boot; prepare and mount them beforehand")
	case len(c.Networkd.Units) > 0:
		return types.Config{}, unsupported("networkd.units", "write the files to /etc/systemd/network with storage.files and have a unit restart systemd-networkd")
	}
	out := types.Config{Ignition: types.Ignition{Version: types.MaxVersion.String()}}
	node := func(field string, n v2types.Node) (types.Node, error) {
		if n.Filesystem != "root" {
			return types.Node{}, unsupported(field+".filesystem", fmt.Sprintf("only the root filesystem is there; %q is one Ignition would mount at first boot", n.Filesystem))
		}
		t := types.Node{Path: n.Path, Overwrite: n.Overwrite}
		if n.User != nil {
			t.User = types.NodeUser{ID: n.User.ID, Name: nonEmpty(n.User.Name)}
		}
		if n.Group != nil {
			t.Group = types.NodeGroup{ID: n.Group.ID, Name: nonEmpty(n.Group.Name)}
		}
		return t, nil
	}
	for i, d := range c.Storage.Directories {
		n, err := node(fmt.Sprintf("storage.directories[%d]", i), d.Node)
		if err != nil {
			return types.Config{}, err
		}
		out.Storage.Directories = append(out.Storage.Directories, types.Directory{Node: n, DirectoryEmbedded1: types.DirectoryEmbedded1{Mode: d.Mode}})
	}
	for i, f := range c.Storage.Files {
		n, err := node(fmt.Sprintf("storage.files[%d]", i), f.Node)
		if err != nil {
			return types.Config{}, err
		}
		res := types.Resource{Source: nonEmpty(f.Contents.Source), Compression: nonEmpty(f.Contents.Compression), Verification: types.Verification{Hash: f.Contents.Verification.Hash}}
		t := types.File{Node: n, FileEmbedded1: types.FileEmbedded1{Mode: f.Mode}}
		if f.Append {
			t.Append = []types.Resource{res}
		} else {
			t.Contents = res
			if t.Overwrite == nil {
				// Spec 2 replaces a file that is there; spec 3 needs overwrite for it.
				t.Overwrite = ptrTo(true)
				if t.Contents.Source == nil {
					t.Contents.Source = ptrTo("data:,")
				}
			}
		}
		out.Storage.Files = append(out.Storage.Files, t)
	}
	for i, l := range c.Storage.Links {
		n, err := node(fmt.Sprintf("storage.links[%d]", i), l.Node)
		if err != nil {
			return types.Config{}, err
		}
		out.Storage.Links = append(out.Storage.Links, types.Link{Node: n, LinkEmbedded1: types.LinkEmbedded1{Target: ptrTo(l.Target), Hard: ptrTo(l.Hard)}})
	}
	for _, u := range c.Systemd.Units {
		t := types.Unit{Name: u.Name, Contents: nonEmpty(u.Contents), Enabled: u.Enabled}
		if u.Enable && t.Enabled == nil {
			t.Enabled = ptrTo(true)
		}
		if u.Mask {
			t.Mask = ptrTo(true)
		}
		for _, d := range u.Dropins {
			t.Dropins = append(t.Dropins, types.Dropin{Name: d.Name, Contents: ptrTo(d.Contents)})
		}
		out.Systemd.Units = append(out.Systemd.Units, t)
	}
	for i, g := range c.Passwd.Groups {
		if g.PasswordHash != "" {
			return types.Config{}, unsupported(fmt.Sprintf("passwd.groups[%d].passwordHash", i), "CAPR never sets passwords")
		}
		out.Passwd.Groups = append(out.Passwd.Groups, types.PasswdGroup{Name: g.Name, Gid: g.Gid, System: ptrTo(g.System)})
	}
	for i, u := range c.Passwd.Users {
		switch {
		case u.PasswordHash != nil:
			return types.Config{}, unsupported(fmt.Sprintf("passwd.users[%d].passwordHash", i), "CAPR never sets passwords (use sshAuthorizedKeys)")
		case u.Create != nil:
			return types.Config{}, unsupported(fmt.Sprintf("passwd.users[%d].create", i), "the deprecated create section is not read; give its fields on the user")
		}
		t := types.PasswdUser{Name: u.Name, UID: u.UID, Gecos: nonEmpty(u.Gecos), HomeDir: nonEmpty(u.HomeDir), NoCreateHome: ptrTo(u.NoCreateHome),
			NoLogInit: ptrTo(u.NoLogInit), NoUserGroup: ptrTo(u.NoUserGroup), PrimaryGroup: nonEmpty(u.PrimaryGroup), Shell: nonEmpty(u.Shell), System: ptrTo(u.System)}
		for _, g := range u.Groups {
			t.Groups = append(t.Groups, types.Group(g))
		}
		for _, k := range u.SSHAuthorizedKeys {
			t.SSHAuthorizedKeys = append(t.SSHAuthorizedKeys, types.SSHAuthorizedKey(k))
		}
		out.Passwd.Users = append(out.Passwd.Users, t)
	}
	// Ignition's 3.5 parser validates the result as it would a config written in 3.5.
	raw, err := json.Marshal(out)
	if err != nil {
		return types.Config{}, fmt.Errorf("%w: the Ignition config (spec 2.x) cannot be mapped to spec 3.5: %w", cloudinit.ErrUnsupported, err)
	}
	cfg, rpt3, err := v3.Parse(raw)
	if err != nil {
		return types.Config{}, fmt.Errorf("%w: the Ignition config (spec 2.x) is invalid as spec 3.5: %w%s", cloudinit.ErrUnsupported, err, report(rpt3.String()))
	}
	return cfg, nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func ptrTo[T any](v T) *T { return &v }
