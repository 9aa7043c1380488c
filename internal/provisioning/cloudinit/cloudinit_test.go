package cloudinit_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	bootstrapv1 "sigs.k8s.io/cluster-api/api/bootstrap/kubeadm/v1beta2"
	capicloudinit "sigs.k8s.io/cluster-api/bootstrap/kubeadm/pkg/cloudinit"
	"sigs.k8s.io/cluster-api/util/secret"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
)

func commands(p *cloudinit.Plan) []string {
	var out []string
	for _, s := range p.Steps {
		if s.File == nil {
			out = append(out, s.Command)
		}
	}
	return out
}

func files(p *cloudinit.Plan) map[string]*cloudinit.File {
	out := map[string]*cloudinit.File{}
	for _, s := range p.Steps {
		if s.File != nil {
			out[s.File.Path] = s.File
		}
	}
	return out
}

// TestKubeadmControlPlaneInit parses the cloud-init that Cluster API v1.14.2's kubeadm bootstrap code generates for
// the first control-plane machine.
func TestKubeadmControlPlaneInit(t *testing.T) {
	g := NewWithT(t)
	certs := secret.NewCertificatesForInitialControlPlane(&bootstrapv1.ClusterConfiguration{})
	g.Expect(certs.Generate()).To(Succeed())
	appendTrue := true
	data, err := capicloudinit.NewInitControlPlane(&capicloudinit.ControlPlaneInput{
		BaseUserData: capicloudinit.BaseUserData{
			BootCommands:        []string{"echo boot"},
			PreKubeadmCommands:  []string{"echo pre", "hostnamectl set-hostname '{{ ds.meta_data.local_hostname }}'"},
			PostKubeadmCommands: []string{"echo post"},
			AdditionalFiles: []bootstrapv1.File{
				{Path: "/etc/extra.conf", Content: "extra\n", Permissions: "0600", Owner: "root:root"},
				{Path: "/etc/appended", Content: "more\n", Append: &appendTrue},
				{Path: "/etc/encoded", Content: base64.StdEncoding.EncodeToString([]byte("decoded\n")), Encoding: bootstrapv1.Base64},
			},
			NTP:   &bootstrapv1.NTP{Servers: []string{"time.example.com"}, Enabled: &appendTrue},
			Users: []bootstrapv1.User{{Name: "ops", Sudo: "ALL=(ALL) NOPASSWD:ALL", SSHAuthorizedKeys: []string{"ssh-ed25519 AAAA ops"}}},
		},
		Certificates:         certs,
		ClusterConfiguration: "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n",
		InitConfiguration:    "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  name: '{{ ds.meta_data.local_hostname }}'\n",
	})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(data)).To(HavePrefix("## template: jinja\n#cloud-config"))

	plan, err := cloudinit.Parse(data, "cloud-config", cloudinit.Vars{Hostname: "node-a"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(plan.Format).To(Equal("cloud-config"))

	fs := files(plan)
	g.Expect(fs).To(HaveKey("/etc/kubernetes/pki/ca.crt"))
	g.Expect(fs).To(HaveKey("/etc/kubernetes/pki/ca.key"))
	g.Expect(fs["/etc/kubernetes/pki/ca.key"].Permissions).To(Equal(uint32(0o600)))
	g.Expect(string(fs["/run/kubeadm/kubeadm.yaml"].Content)).To(ContainSubstring("name: 'node-a'"), "jinja rendered with the host name")
	g.Expect(fs["/run/kubeadm/kubeadm.yaml"].Permissions).To(Equal(uint32(0o640)))
	g.Expect(fs["/etc/extra.conf"].Permissions).To(Equal(uint32(0o600)))
	g.Expect(fs["/etc/appended"].Append).To(BeTrue())
	g.Expect(string(fs["/etc/encoded"].Content)).To(Equal("decoded\n"))
	g.Expect(fs).To(HaveKey("/etc/sudoers.d/90-cloud-init-ops"))
	g.Expect(fs).To(HaveKey("/etc/systemd/timesyncd.conf.d/cluster-api.conf"))

	cmds := commands(plan)
	g.Expect(cmds[0]).To(Equal("echo boot"), "bootcmd runs first")
	g.Expect(strings.Join(cmds, "\n")).To(ContainSubstring("hostnamectl set-hostname 'node-a'"))
	var order []string
	for _, c := range cmds {
		for _, want := range []string{"echo pre", "kubeadm init", "echo post"} {
			if strings.HasPrefix(c, want) {
				order = append(order, want)
			}
		}
	}
	g.Expect(order).To(Equal([]string{"echo pre", "kubeadm init", "echo post"}))
	g.Expect(strings.Join(cmds, "\n")).To(ContainSubstring("echo success > /run/cluster-api/bootstrap-success.complete"))

	// Files are written before runcmd runs.
	lastFile, firstRun := -1, -1
	for i, s := range plan.Steps {
		if s.File != nil && !strings.HasPrefix(s.Source, "users") && s.Source != "ntp" {
			lastFile = i
		}
		if firstRun < 0 && strings.HasPrefix(s.Source, "runcmd") {
			firstRun = i
		}
	}
	g.Expect(lastFile).To(BeNumerically("<", firstRun))
}

// TestKubeadmWorkerJoin parses the cloud-init Cluster API generates for a worker.
func TestKubeadmWorkerJoin(t *testing.T) {
	g := NewWithT(t)
	data, err := capicloudinit.NewNode(&capicloudinit.NodeInput{
		BaseUserData:      capicloudinit.BaseUserData{KubeadmVerbosity: "--v=2"},
		JoinConfiguration: "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n",
	})
	g.Expect(err).NotTo(HaveOccurred())
	plan, err := cloudinit.Parse(data, "", cloudinit.Vars{Hostname: "w"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(files(plan)).To(HaveKey("/run/kubeadm/kubeadm-join-config.yaml"))
	g.Expect(strings.Join(commands(plan), "\n")).To(ContainSubstring("kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml --v=2"))
}

func gzipped(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.Bytes()
}

// TestK0sStyleAndEncodings covers k0s bootstrap data (argv runcmd, plain #cloud-config) and every encoding.
func TestK0sStyleAndEncodings(t *testing.T) {
	g := NewWithT(t)
	gz := gzipped("zipped\n")
	doc := `#cloud-config
write_files:
- path: /etc/k0s/k0s.yaml
  permissions: "0644"
  content: |
    apiVersion: k0s.k0sproject.io/v1beta1
    kind: ClusterConfig
- path: /etc/k0s/token
  permissions: 0600
  owner: k0s:k0s
  encoding: b64
  content: ` + base64.StdEncoding.EncodeToString([]byte("secret-token")) + `
- path: /a
  encoding: gz+b64
  content: ` + base64.StdEncoding.EncodeToString(gz) + `
- path: /b
  encoding: gzip+base64
  content: ` + base64.StdEncoding.EncodeToString(gz) + `
- path: /c
  encoding: gz+base64
  content: ` + base64.StdEncoding.EncodeToString(gz) + `
- path: /d
  encoding: base64
  content: ` + base64.StdEncoding.EncodeToString([]byte("plain\n")) + `
- path: /late
  content: written after users
  defer: true
runcmd:
- curl -sSLf https://get.k0s.sh | sudo sh
- [k0s, install, worker, --token-file, /etc/k0s/token, "--labels=a=b c"]
- [k0s, start]
`
	plan, err := cloudinit.Parse([]byte(doc), "", cloudinit.Vars{})
	g.Expect(err).NotTo(HaveOccurred())
	fs := files(plan)
	g.Expect(fs["/etc/k0s/token"].Permissions).To(Equal(uint32(0o600)), "an unquoted 0600 is read as octal")
	g.Expect(fs["/etc/k0s/token"].Owner).To(Equal("k0s:k0s"))
	g.Expect(string(fs["/etc/k0s/token"].Content)).To(Equal("secret-token"))
	for _, p := range []string{"/a", "/b", "/c"} {
		g.Expect(string(fs[p].Content)).To(Equal("zipped\n"), p)
	}
	g.Expect(string(fs["/d"].Content)).To(Equal("plain\n"))
	g.Expect(fs["/etc/k0s/k0s.yaml"].Owner).To(Equal("root:root"))
	g.Expect(plan.Steps[len(plan.Steps)-4].File.Path).To(Equal("/late"), "deferred files come just before runcmd")
	g.Expect(commands(plan)).To(Equal([]string{
		"curl -sSLf https://get.k0s.sh | sudo sh",
		"k0s install worker --token-file /etc/k0s/token '--labels=a=b c'",
		"k0s start",
	}))
}

func TestShellScriptAndRefusals(t *testing.T) {
	g := NewWithT(t)
	plan, err := cloudinit.Parse([]byte("#!/bin/bash\necho hi\n"), "", cloudinit.Vars{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(plan.Format).To(Equal("shell"))
	g.Expect(plan.Steps).To(HaveLen(1))

	for _, tc := range []struct {
		data, format, want string
	}{
		{`{"ignition":{"version":"3.4.0"}}`, "ignition", "Ignition"},
		{"#cloud-config\n", "yaml", `format "yaml" is unknown`},
		{"hello", "", "neither a cloud-config document"},
		{"#cloud-config\npackages: [nginx]\nruncmd: [ls]\n", "", "key(s) packages are not supported"},
		{"#cloud-config\ndisk_setup: {}\nfs_setup: []\n", "", "disk_setup, fs_setup"},
		{"#cloud-config\nwrite_files:\n- path: /x\n  encoding: rot13\n  content: a\n", "", `write_files[0] (/x): encoding "rot13" is unknown`},
		{"#cloud-config\nwrite_files:\n- path: /x\n  permissions: 'rw-'\n", "", `permissions "rw-" are not an octal file mode`},
		{"#cloud-config\nwrite_files:\n- path: relative\n", "", "needs an absolute path"},
		{"#cloud-config\nruncmd:\n- {a: b}\n", "", "runcmd[0] must be a string or a list"},
		{"## template: jinja\n#cloud-config\nruncmd:\n- echo {{ ds.meta_data.instance_id }}\n", "", "jinja expression {{ ds.meta_data.instance_id }} is not known"},
	} {
		_, err := cloudinit.Parse([]byte(tc.data), tc.format, cloudinit.Vars{})
		g.Expect(err).To(MatchError(cloudinit.ErrUnsupported), tc.want)
		g.Expect(err.Error()).To(ContainSubstring(tc.want))
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("#cloud-config\nwrite_files:\n- path: /a\n  content: x\nruncmd: [ls, [echo, hi]]\n"), "")
	f.Add([]byte("## template: jinja\n#cloud-config\nruncmd:\n- echo {{ v1.local_hostname }}\n"), "cloud-config")
	f.Add([]byte("#!/bin/sh\ntrue\n"), "")
	f.Add([]byte("#cloud-config\nusers: [default, {name: a, groups: [x, y], sudo: ALL}]\nmounts: [[/dev/sdb, /data]]\nntp: {servers: [a]}\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, format string) {
		plan, err := cloudinit.Parse(data, format, cloudinit.Vars{Hostname: "h"})
		if err == nil && plan == nil {
			t.Fatal("nil plan without an error")
		}
		if err != nil && plan != nil {
			t.Fatal("a plan and an error")
		}
	})
}
