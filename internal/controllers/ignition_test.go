//go:build integration

package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/standins"
)

// ignitionConfig has files (plain and base64 data URLs, an append, owner by name), a directory, a symbolic and a
// hard link, a oneshot unit with a drop-in, enabled, and a masked unit.
const ignitionConfig = `{
  "ignition": {"version": "3.4.0"},
  "storage": {
    "directories": [{"path": "/etc/capr-ign/dir", "mode": 448, "user": {"name": "nobody"}}],
    "files": [
      {"path": "/etc/capr-ign/plain", "contents": {"source": "data:,hello%20ignition%0A"}, "mode": 416, "user": {"name": "nobody"}, "group": {"name": "nogroup"}},
      {"path": "/etc/capr-ign/dir/b64", "contents": {"source": "data:;base64,c2VjcmV0LXRva2VuLWFiY2RlZi4wMTIzNDU2Nzg5YWJjZGVmCg=="}, "mode": 384},
      {"path": "/etc/capr-ign/log", "append": [{"source": "data:,one%0A"}, {"source": "data:,two%0A"}]}
    ],
    "links": [
      {"path": "/etc/capr-ign/link", "target": "/etc/capr-ign/plain"},
      {"path": "/etc/capr-ign/hard", "target": "/etc/capr-ign/dir/b64", "hard": true}
    ]
  },
  "systemd": {"units": [
    {"name": "capr-test.service", "enabled": true,
     "contents": "[Unit]\nConditionPathExists=/etc/capr-ign/plain\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'cat /etc/capr-ign/link > /run/capr-unit-ran'\n[Install]\nWantedBy=multi-user.target\n",
     "dropins": [{"name": "10-post.conf", "contents": "[Service]\nExecStartPost=/bin/sh -c 'echo post >> /run/capr-unit-ran'\n"}]},
    {"name": "update-engine.service", "mask": true}
  ]}
}`

// TestIgnitionBootstrap applies Ignition bootstrap data on a real sshd host, with a systemctl stand-in on its PATH
// that records its calls and runs a started oneshot unit's commands.
func TestIgnitionBootstrap(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	sbin := filepath.Join(t.TempDir(), "sbin")
	g.Expect(os.MkdirAll(sbin, 0o755)).To(Succeed())
	g.Expect(os.WriteFile(filepath.Join(sbin, "systemctl"), standins.Systemctl, 0o755)).To(Succeed())
	h := sshdtest.StartWith(t, sshdtest.Options{Sbin: sbin})
	f := newFixture(t, ignitionConfig, "ignition")
	f.keySecret(t, "key", h)
	rm := f.remoteMachine()
	rm.Spec.Address, rm.Spec.Port = h.Address, int32(h.Port)
	rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())

	g.Eventually(func(g Gomega) {
		c := condition(get(g, rm), infrav1.BootstrapSucceededCondition)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), c.Message)
	}, 90*time.Second, 250*time.Millisecond).Should(Succeed())

	out, err := h.Exec(`cd /etc/capr-ign && stat -c '%n %a %U:%G %h' dir plain dir/b64 log hard && readlink link && cat plain log dir/b64 && ` +
		`readlink /etc/systemd/system/update-engine.service /etc/systemd/system/multi-user.target.wants/capr-test.service && ` +
		`cat /etc/systemd/system/capr-test.service.d/10-post.conf /run/capr-unit-ran /run/capr-systemctl.log /run/cluster-api/bootstrap-success.complete`)
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(Equal(`dir 700 nobody:root 2
plain 640 nobody:nogroup 1
dir/b64 600 root:root 2
log 644 root:root 1
hard 600 root:root 2
/etc/capr-ign/plain
hello ignition
one
two
secret-token-abcdef.0123456789abcdef
/dev/null
/etc/systemd/system/capr-test.service
[Service]
ExecStartPost=/bin/sh -c 'echo post >> /run/capr-unit-ran'
hello ignition
post
mask update-engine.service
daemon-reload
enable capr-test.service
start capr-test.service
ran capr-test.service: exit 0
success
`))
}
