//go:build integration

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// binDir is where the tools are built (CAPR_BIN_DIR, else the repository's bin/).
func binDir() string {
	if d := os.Getenv("CAPR_BIN_DIR"); d != "" {
		return d
	}
	d, _ := filepath.Abs(filepath.Join("..", "..", "bin"))
	return d
}

// TestKubeadmImageList: the list the images are planned from (testdata) is what bin/kubeadm names for v1.36.3, so a
// kubeadm whose images differ (another etcd, pause or CoreDNS tag) fails here instead of at the nodes' preflight.
func TestKubeadmImageList(t *testing.T) {
	kubeadm := filepath.Join(binDir(), "kubeadm")
	if _, err := os.Stat(kubeadm); err != nil {
		t.Skipf("no %s (make %s builds it)", kubeadm, kubeadm)
	}
	g := NewWithT(t)
	out, err := exec.Command(kubeadm, "config", "images", "list", "--kubernetes-version", "v1.36.3").Output()
	g.Expect(err).NotTo(HaveOccurred())
	got, err := readImageList(strings.NewReader(string(out)))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(Equal(kubeadmList(t)))
	_, err = planNodeImages(got, nil)
	g.Expect(err).NotTo(HaveOccurred())
}

// TestNodeImagesImport imports the archive into a throwaway containerd with ctr, as the nodes do, and checks that
// every image is listed under the exact name kubeadm looks for, with the digest built (root only; needs bin/containerd
// and bin/ctr).
func TestNodeImagesImport(t *testing.T) {
	for _, f := range []string{filepath.Join(binDir(), "containerd"), filepath.Join(binDir(), "ctr")} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("no %s", f)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	g := NewWithT(t)
	bin := standInBinaries(t)
	plan, err := planNodeImages(kubeadmList(t), nil)
	g.Expect(err).NotTo(HaveOccurred())
	out := t.TempDir()
	built, err := BuildNodeImages(plan, "capr.local/smoke:v1", bin, out, Platform{OS: "linux", Arch: "amd64"})
	g.Expect(err).NotTo(HaveOccurred())
	sock := startContainerd(t)
	run := func(args ...string) (string, error) { return ctr(sock, args...) }

	imported, err := run("images", "import", filepath.Join(out, "images.tar"))
	t.Logf("ctr images import:\n%s", imported)
	g.Expect(err).NotTo(HaveOccurred(), imported)
	ls, err := run("images", "ls")
	t.Logf("ctr images ls:\n%s", ls)
	g.Expect(err).NotTo(HaveOccurred(), ls)
	for _, b := range built {
		g.Expect(ls).To(MatchRegexp(`(?m)^%s\s+\S+\s+%s\s`, strings.ReplaceAll(b.Name, ".", `\.`), b.Digest), b.Name)
	}
}

// ctr runs bin/ctr against the containerd at sock in the k8s.io namespace, as the nodes use, for two minutes at most.
func ctr(sock string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, filepath.Join(binDir(), "ctr"), append([]string{"--address", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
	return string(b), err
}

// startContainerd starts a throwaway containerd (bin/containerd, with bin/ on its PATH for the runc shim and runc) and
// returns its socket.
func startContainerd(t *testing.T) string {
	t.Helper()
	g := NewWithT(t)
	containerd := filepath.Join(binDir(), "containerd")
	// A short path: a unix socket's path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "ctrd")
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	g.Expect(os.WriteFile(filepath.Join(dir, "config.toml"), []byte("version = 3\n"), 0o600)).To(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	daemon := exec.CommandContext(ctx, containerd, "--config", filepath.Join(dir, "config.toml"), "--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"), "--address", sock)
	daemon.Env = append(os.Environ(), "PATH="+binDir()+string(os.PathListSeparator)+os.Getenv("PATH"))
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	g.Expect(err).NotTo(HaveOccurred())
	daemon.Stdout, daemon.Stderr = logf, logf
	g.Expect(daemon.Start()).To(Succeed())
	t.Cleanup(func() {
		cancel()
		_ = daemon.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("containerd's log:\n%s", b)
		}
		// Containers run with --rm leave no mount; unmount defensively all the same.
		_ = exec.Command("umount", "-R", filepath.Join(dir, "root")).Run()
	})
	g.Eventually(func() error { _, err := ctr(sock, "version"); return err }, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	return sock
}

// TestKubeProxyImageRuns imports kube-proxy's image (the real bin/kube-proxy) into a throwaway containerd and runs,
// in containers sharing a network namespace of their own, kube-proxy --version, iptables --version, rules using the
// extension modules kube-proxy's rules use (comment, statistic, DNAT, mark), iptables-restore, and iptables-save
// reading them back. The failure it guards: the image held kube-proxy alone, so on the nodes kube-proxy crash-looped
// with no iptables to run (root only; needs bin/containerd, bin/ctr, bin/runc and bin/kube-proxy).
func TestKubeProxyImageRuns(t *testing.T) {
	for _, f := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(binDir(), f)); err != nil || os.Geteuid() != 0 {
			t.Skipf("needs root and %s (make node-tools, make node-images)", filepath.Join(binDir(), f))
		}
	}
	g := NewWithT(t)
	i := slices.IndexFunc(nodeRecipes, func(r nodeRecipe) bool { return r.Repo == "kube-proxy" })
	const ref = "registry.k8s.io/kube-proxy:v1.36.3"
	out := t.TempDir()
	_, err := BuildNodeImages([]plannedImage{{Name: ref, Recipe: nodeRecipes[i]}}, "", binDir(), out, Platform{OS: "linux", Arch: "amd64"})
	g.Expect(err).NotTo(HaveOccurred())
	sock := startContainerd(t)
	imported, err := ctr(sock, "images", "import", filepath.Join(out, "images.tar"))
	g.Expect(err).NotTo(HaveOccurred(), imported)

	// A network namespace of the test's own, so no rule touches the machine's.
	netns := exec.Command("unshare", "--net", "sleep", "600")
	g.Expect(netns.Start()).To(Succeed())
	t.Cleanup(func() { _ = netns.Process.Kill(); _ = netns.Wait() })
	rules := filepath.Join(t.TempDir(), "rules")
	g.Expect(os.WriteFile(rules, []byte("*filter\n:KUBE-CAPR-RESTORED - [0:0]\n-A KUBE-CAPR-RESTORED -m comment --comment restored -j RETURN\nCOMMIT\n"), 0o644)).To(Succeed())
	// runc keeps its state by container name in /run/containerd/runc/k8s.io, shared with every containerd of the
	// machine: the test's process id keeps the names apart.
	n := 0
	inImage := func(args ...string) string {
		t.Helper()
		n++
		o, err := ctr(sock, append([]string{"run", "--rm", "--privileged", "--with-ns", fmt.Sprintf("network:/proc/%d/ns/net", netns.Process.Pid),
			"--mount", "type=bind,src=" + rules + ",dst=/rules,options=rbind:ro", ref, fmt.Sprintf("kube-proxy-test-%d-%d", os.Getpid(), n)}, args...)...)
		t.Logf("%s:\n%s", strings.Join(args, " "), o)
		g.Expect(err).NotTo(HaveOccurred(), o)
		return o
	}
	g.Expect(inImage("/usr/local/bin/kube-proxy", "--version")).To(ContainSubstring("Kubernetes v1.36.3"))
	g.Expect(inImage("iptables", "--version")).To(MatchRegexp(`iptables v1\.\d+\.\d+ \((nf_tables|legacy)\)`))
	g.Expect(inImage("ip6tables", "--version")).To(MatchRegexp(`ip6tables v1\.\d+\.\d+`))
	inImage("iptables", "-w", "-t", "nat", "-N", "KUBE-CAPR-TEST")
	inImage("iptables", "-w", "-t", "nat", "-A", "KUBE-CAPR-TEST", "-p", "tcp", "-m", "comment", "--comment", "capr test",
		"-m", "statistic", "--mode", "random", "--probability", "0.5", "-j", "DNAT", "--to-destination", "10.96.0.10:53")
	inImage("iptables", "-w", "-t", "filter", "-A", "FORWARD", "-m", "mark", "--mark", "0x4000/0x4000", "-j", "ACCEPT")
	inImage("iptables-restore", "-w", "--noflush", "/rules")
	saved := inImage("iptables-save")
	g.Expect(saved).To(ContainSubstring(`-A KUBE-CAPR-TEST -p tcp -m comment --comment "capr test" -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.96.0.10:53`))
	g.Expect(saved).To(ContainSubstring("-A FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT"))
	g.Expect(saved).To(ContainSubstring(`-A KUBE-CAPR-RESTORED -m comment --comment restored -j RETURN`))
	inImage("ip6tables-save")
}
