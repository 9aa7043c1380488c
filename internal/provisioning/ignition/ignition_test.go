package ignition_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	bootstrapv1 "sigs.k8s.io/cluster-api/api/bootstrap/kubeadm/v1beta2"
	capicloudinit "sigs.k8s.io/cluster-api/bootstrap/kubeadm/pkg/cloudinit"
	capiignition "sigs.k8s.io/cluster-api/bootstrap/kubeadm/pkg/ignition"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/ignition"
)

// describe is a plan as one line per step, to compare whole.
func describe(p *cloudinit.Plan) string {
	var b strings.Builder
	for _, s := range p.Steps {
		if f := s.File; f != nil {
			fmt.Fprintf(&b, "%s: file %s %o %s append=%v required=%v %q\n", s.Source, f.Path, f.Permissions, f.Owner, f.Append, f.OwnerRequired, f.Content)
		} else {
			fmt.Fprintf(&b, "%s: %s\n", s.Source, s.Command)
		}
	}
	return b.String()
}

func gzipB64(s string) string {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func TestParseSpec3(t *testing.T) {
	sum := sha512.Sum512([]byte("compressed\n"))
	config := `{
  "ignition": {"version": "3.4.0"},
  "passwd": {
    "groups": [{"name": "kube", "gid": 4000}],
    "users": [{"name": "core", "groups": ["kube", "wheel"], "sshAuthorizedKeys": ["ssh-ed25519 AAAA k1"]}]
  },
  "storage": {
    "directories": [{"path": "/etc/capr/a/b", "mode": 448, "user": {"id": 1000}}],
    "files": [
      {"path": "/etc/capr/a/b/deep", "contents": {"source": "data:,plain%20text%0A"}, "mode": 420},
      {"path": "/etc/capr/b64", "contents": {"source": "data:;base64,aGVsbG8K"}, "mode": 384, "user": {"name": "core"}, "group": {"name": "kube"}, "overwrite": true},
      {"path": "/etc/capr/gz", "contents": {"source": "data:;base64,` + gzipB64("compressed\n") + `", "compression": "gzip", "verification": {"hash": "sha512-` + hex.EncodeToString(sum[:]) + `"}}},
      {"path": "/etc/capr/log", "append": [{"source": "data:,one%0A"}, {"source": "data:,two%0A"}], "mode": 416}
    ],
    "links": [
      {"path": "/etc/capr/hard", "target": "/etc/capr/b64", "hard": true},
      {"path": "/etc/capr/link", "target": "/etc/capr/b64"}
    ]
  },
  "systemd": {"units": [
    {"name": "kubeadm.service", "enabled": true, "contents": "[Service]\nType=oneshot\nExecStart=/usr/bin/kubeadm init\n[Install]\nWantedBy=multi-user.target\n",
     "dropins": [{"name": "10-env.conf", "contents": "[Service]\nEnvironment=A=1\n"}]},
    {"name": "containerd.service", "dropins": [{"name": "capr.conf", "contents": "[Service]\nLimitNOFILE=1048576\n"}], "enabled": true},
    {"name": "update-engine.service", "mask": true},
    {"name": "locksmithd.service", "enabled": false}
  ]}
}`
	plan, err := ignition.Parse([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	want := `passwd.groups[0]: getent group kube >/dev/null || groupadd --gid 4000 kube
passwd.users[0]: if getent passwd core >/dev/null; then : && usermod -aG kube,wheel core; else useradd --create-home --groups kube,wheel core; fi && h=$(getent passwd core | cut -d: -f6) && [ -n "$h" ] && mkdir -p "$h/.ssh" && printf '%s\n' 'ssh-ed25519 AAAA k1' >> "$h/.ssh/authorized_keys" && chmod 700 "$h/.ssh" && chmod 600 "$h/.ssh/authorized_keys" && chown core: "$h/.ssh" "$h/.ssh/authorized_keys"
storage.files[1]: rm -rf /etc/capr/b64
storage.files[1]: file /etc/capr/b64 600 core:kube append=false required=true "hello\n"
storage.files[2]: if [ -e /etc/capr/gz ] || [ -L /etc/capr/gz ]; then echo 'capr: /etc/capr/gz exists and overwrite is false' >&2; exit 1; fi
storage.files[2]: file /etc/capr/gz 644 0:0 append=false required=true "compressed\n"
storage.files[3]: if [ -L /etc/capr/log ] || { [ -e /etc/capr/log ] && [ ! -f /etc/capr/log ]; }; then echo 'capr: /etc/capr/log exists and is not a regular file, and overwrite is false' >&2; exit 1; fi; [ -e /etc/capr/log ] || { mkdir -p /etc/capr && : > /etc/capr/log; }
storage.files[3]: file /etc/capr/log 0  append=true required=false "one\n"
storage.files[3]: file /etc/capr/log 0  append=true required=false "two\n"
storage.files[3]: chmod 640 /etc/capr/log && chown 0:0 /etc/capr/log
storage.links[1]: if [ -L /etc/capr/link ]; then [ "$(readlink /etc/capr/link)" = /etc/capr/b64 ] || { echo 'capr: /etc/capr/link exists and is not a symbolic link to /etc/capr/b64, and overwrite is false' >&2; exit 1; }; elif [ -e /etc/capr/link ]; then echo 'capr: /etc/capr/link exists and is not a symbolic link to /etc/capr/b64, and overwrite is false' >&2; exit 1; else mkdir -p /etc/capr && ln -s /etc/capr/b64 /etc/capr/link; fi
storage.directories[0]: if [ -L /etc/capr/a/b ] || { [ -e /etc/capr/a/b ] && [ ! -d /etc/capr/a/b ]; }; then echo 'capr: /etc/capr/a/b exists and is not a directory, and overwrite is false' >&2; exit 1; fi; mkdir -p /etc/capr/a/b && chmod 700 /etc/capr/a/b && chown 1000:0 /etc/capr/a/b
storage.files[0]: if [ -e /etc/capr/a/b/deep ] || [ -L /etc/capr/a/b/deep ]; then echo 'capr: /etc/capr/a/b/deep exists and overwrite is false' >&2; exit 1; fi
storage.files[0]: file /etc/capr/a/b/deep 644 0:0 append=false required=true "plain text\n"
storage.links[0]: if [ -e /etc/capr/hard ] || [ -L /etc/capr/hard ]; then [ /etc/capr/hard -ef /etc/capr/b64 ] || { echo 'capr: /etc/capr/hard exists and is not a hard link to /etc/capr/b64, and overwrite is false' >&2; exit 1; }; else mkdir -p /etc/capr && ln /etc/capr/b64 /etc/capr/hard; fi
systemd.units[0].dropins[0]: file /etc/systemd/system/kubeadm.service.d/10-env.conf 644 0:0 append=false required=true "[Service]\nEnvironment=A=1\n"
systemd.units[0]: file /etc/systemd/system/kubeadm.service 644 0:0 append=false required=true "[Service]\nType=oneshot\nExecStart=/usr/bin/kubeadm init\n[Install]\nWantedBy=multi-user.target\n"
systemd.units[1].dropins[0]: file /etc/systemd/system/containerd.service.d/capr.conf 644 0:0 append=false required=true "[Service]\nLimitNOFILE=1048576\n"
systemd.units[2].mask: rm -rf /etc/systemd/system/update-engine.service && systemctl mask update-engine.service
systemd.units: systemctl daemon-reload
systemd.units[0].enabled: systemctl enable kubeadm.service
systemd.units[1].enabled: systemctl enable containerd.service
systemd.units[3].enabled: systemctl disable locksmithd.service
systemd.units[0].start: systemctl start kubeadm.service
systemd.units[1].start: systemctl start containerd.service
`
	if got := describe(plan); got != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, want)
	}
	if plan.Format != "ignition" {
		t.Fatalf("format %q", plan.Format)
	}
}

// TestRefusals checks that what a running host cannot take is refused, naming the field.
func TestRefusals(t *testing.T) {
	for _, tc := range []struct{ config, field string }{
		{`{"ignition":{"version":"3.4.0"},"storage":{"disks":[{"device":"/dev/sdb","wipeTable":true}]}}`, "storage.disks"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"raid":[{"name":"md0","level":"raid1","devices":["/dev/sdb","/dev/sdc"]}]}}`, "storage.raid"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"filesystems":[{"device":"/dev/sdb","format":"ext4","path":"/var/lib"}]}}`, "storage.filesystems"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"luks":[{"name":"data","device":"/dev/sdb"}]}}`, "storage.luks"},
		{`{"ignition":{"version":"3.4.0"},"passwd":{"users":[{"name":"core","passwordHash":"$6$x$y"}]}}`, "passwd.users[0].passwordHash"},
		{`{"ignition":{"version":"3.4.0"},"passwd":{"groups":[{"name":"g","passwordHash":"$6$x$y"}]}}`, "passwd.groups[0].passwordHash"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"https://example.com/a"}}]}}`, "storage.files[0].contents.source"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","append":[{"source":"data:,x"},{"source":"s3://bucket/a"}]}]}}`, "storage.files[0].append[1].source"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"tftp://host/a"}}]}}`, "storage.files[0].contents.source"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"gs://bucket/a"}}]}}`, "storage.files[0].contents.source"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"http://host/a"}}]}}`, "storage.files[0].contents.source"},
		{`{"ignition":{"version":"3.4.0"},"ignition":{"version":"3.4.0","config":{"merge":[{"source":"https://example.com/c.ign"}]}}}`, "ignition.config.merge"},
		{`{"ignition":{"version":"3.4.0","config":{"replace":{"source":"https://example.com/c.ign"}}}}`, "ignition.config.replace"},
		{`{"ignition":{"version":"3.4.0"},"kernelArguments":{"shouldExist":["nosmt"]}}`, "kernelArguments"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a","contents":{"source":"data:,x","verification":{"hash":"sha512-` + strings.Repeat("0", 128) + `"}}}]}}`, "storage.files[0].contents.verification.hash"},
		{`{"ignition":{"version":"2.3.0"},"storage":{"files":[{"filesystem":"oem","path":"/a","contents":{"source":"data:,x"}}]}}`, "storage.files[0].filesystem"},
		{`{"ignition":{"version":"2.3.0"},"networkd":{"units":[{"name":"00-eth0.network","contents":"[Match]\nName=eth0\n"}]}}`, "networkd.units"},
		{`{"ignition":{"version":"2.3.0"},"passwd":{"users":[{"name":"core","passwordHash":"$6$x$y"}]}}`, "passwd.users[0].passwordHash"},
		{`{"ignition":{"version":"2.3.0","config":{"append":[{"source":"https://example.com/c.ign"}]}}}`, "ignition.config.append"},
		{`{"ignition":{"version":"2.2.0"},"storage":{"files":[{"filesystem":"root","path":"/etc/a","contents":{"source":"https://example.com/a"}}]}}`, "storage.files[0].contents.source"},
		{`{"ignition":{"version":"9.0.0"}}`, `ignition.version "9.0.0"`},
		{`#cloud-config`, "not valid JSON"},
		{`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"relative"}]}}`, "invalid"},
	} {
		_, err := ignition.Parse([]byte(tc.config))
		if !errors.Is(err, cloudinit.ErrUnsupported) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: want an ErrUnsupported naming %s, got %v", tc.config, tc.field, err)
		}
	}
}

// TestParseKubeadmBootstrapProviderOutput parses what Cluster API's kubeadm bootstrap provider (v1.14.2) emits for
// format: ignition (spec 2.3.0), made by its own code: files, users, the kubeadm script and kubeadm.service.
func TestParseKubeadmBootstrapProviderOutput(t *testing.T) {
	data, _, err := capiignition.NewNode(&capiignition.NodeInput{NodeInput: &capicloudinit.NodeInput{
		BaseUserData: capicloudinit.BaseUserData{
			PreKubeadmCommands:  []string{"echo pre"},
			PostKubeadmCommands: []string{"echo post"},
			WriteFiles: []bootstrapv1.File{
				{Path: "/etc/kubernetes/pki/ca.crt", Content: "CA\n", Permissions: "0640", Owner: "root:root"},
				{Path: "/etc/capr/b64", Content: base64.StdEncoding.EncodeToString([]byte("bin\x00ary")), Encoding: bootstrapv1.Base64, Permissions: "0644"},
			},
			Users: []bootstrapv1.User{{Name: "capi", SSHAuthorizedKeys: []string{"ssh-ed25519 AAAA capi"}, Sudo: "ALL=(ALL) NOPASSWD:ALL"}},
		},
		JoinConfiguration: "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"version":"2.3.0"`)) {
		t.Fatalf("the kubeadm bootstrap provider no longer emits spec 2.3.0: %s", data)
	}
	plan, err := ignition.Parse(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	got := describe(plan)
	for _, want := range []string{
		"passwd.users[0]: if getent passwd capi >/dev/null; then :; else useradd --create-home capi; fi && h=$(getent passwd capi",
		`storage.files[0]: file /etc/sudoers.d/capi 600 0:0 append=false required=true "capi ALL=(ALL) NOPASSWD:ALL\n"`,
		`storage.files[1]: file /etc/kubernetes/pki/ca.crt 640 root:root append=false required=true "CA\n"`,
		`storage.files[2]: file /etc/capr/b64 644 0:0 append=false required=true "bin\x00ary"`,
		"storage.files[3]: file /etc/kubeadm.sh 700 0:0 append=false required=true \"#!/bin/bash\\nset -e\\n\\necho pre\\n\\nkubeadm join --config /etc/kubeadm.yml \\nmkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete\\nmv /etc/kubeadm.yml /tmp/\\n\\necho post\\n\"",
		"storage.files[4]: file /etc/kubeadm.yml 600 0:0 append=false required=true \"---\\napiVersion: kubeadm.k8s.io/v1beta4\\nkind: JoinConfiguration\\n\"",
		"systemd.units[0]: file /etc/systemd/system/kubeadm.service 644 0:0",
		"ExecStart=/bin/bash /etc/kubeadm.sh",
		"systemd.units: systemctl daemon-reload\nsystemd.units[0].enabled: systemctl enable kubeadm.service\nsystemd.units[0].start: systemctl start kubeadm.service\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the plan lacks %q:\n%s", want, got)
		}
	}
	// Spec 2 overwrites files: no existence guard, the file is replaced.
	if !strings.Contains(got, "storage.files[3]: rm -rf /etc/kubeadm.sh\n") {
		t.Errorf("spec 2 files are overwritten:\n%s", got)
	}
}
