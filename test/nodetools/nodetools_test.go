//go:build integration

// Package nodetools checks the node parts `make node-tools` builds into bin/: each runs, reports the version its
// go.mod under hack/tools pins, and is statically linked (the images made from them carry no libc).
package nodetools

import (
	"bufio"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// pin returns the version of module that the go.mod in hack/tools/<dir> requires.
func pin(t *testing.T, dir, module string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(testenv.RootDir(), "hack", "tools", dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(strings.TrimPrefix(s.Text(), "require "))
		if len(fields) >= 2 && fields[0] == module && fields[1] != "=>" {
			return fields[1]
		}
	}
	t.Fatalf("hack/tools/%s/go.mod does not require %s", dir, module)
	return ""
}

// TestNodeTools runs each node part and checks it reports the pinned version and has no ELF interpreter. It fails
// on a binary built without the version stamped in (kubeadm reports v0.0.0, containerd 2.4.2+unknown), on runc
// built without seccomp, and on a binary linked against the host's libc.
func TestNodeTools(t *testing.T) {
	bin := testenv.BinDir()
	if _, err := os.Stat(filepath.Join(bin, "kubelet")); err != nil {
		t.Skipf("%s absent: run make node-tools to build the node parts", filepath.Join(bin, "kubelet"))
	}
	k8s := pin(t, ".", "k8s.io/kubernetes")
	containerd := pin(t, "containerd", "github.com/containerd/containerd/v2")
	runc := pin(t, "runc", "github.com/opencontainers/runc")
	cni := pin(t, "cni", "github.com/containernetworking/plugins")
	crictl := pin(t, "crictl", "sigs.k8s.io/cri-tools")

	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of the output
	}{
		{"kubeadm", []string{"version", "-o", "short"}, []string{k8s}},
		{"kubelet", []string{"--version"}, []string{"Kubernetes " + k8s}},
		{"kube-scheduler", []string{"--version"}, []string{"Kubernetes " + k8s}},
		{"kube-proxy", []string{"--version"}, []string{"Kubernetes " + k8s}},
		{"containerd", []string{"--version"}, []string{"containerd github.com/containerd/containerd/v2 " + containerd}},
		{"containerd-shim-runc-v2", []string{"-v"}, []string{"Version:  " + containerd}},
		{"ctr", []string{"--version"}, []string{"ctr github.com/containerd/containerd/v2 " + containerd}},
		{"runc", []string{"--version"}, []string{"runc version " + strings.TrimPrefix(runc, "v"), "libseccomp: "}},
		{"crictl", []string{"--version"}, []string{"crictl version " + crictl}},
		{"cni/host-local", nil, []string{"CNI host-local plugin " + cni}},
		{"cni/bridge", nil, []string{"CNI bridge plugin " + cni}},
		{"cni/loopback", nil, []string{"CNI loopback plugin " + cni}},
		{"cni/portmap", nil, []string{"CNI portmap plugin " + cni}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			path := filepath.Join(bin, tc.name)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, path, tc.args...).CombinedOutput()
			g.Expect(err).NotTo(HaveOccurred(), "%s %v: %s", path, tc.args, out)
			for _, w := range tc.want {
				g.Expect(string(out)).To(ContainSubstring(w), "%s %v", path, tc.args)
			}

			f, err := elf.Open(path)
			g.Expect(err).NotTo(HaveOccurred())
			defer func() { _ = f.Close() }()
			for _, p := range f.Progs {
				g.Expect(p.Type).NotTo(Equal(elf.PT_INTERP), "%s is dynamically linked; make node-tools links it statically", path)
			}
		})
	}
}
