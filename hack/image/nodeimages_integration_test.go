//go:build integration

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
	containerd, ctr := filepath.Join(binDir(), "containerd"), filepath.Join(binDir(), "ctr")
	for _, f := range []string{containerd, ctr} {
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

	// A short path: a unix socket's path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "ctrd")
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	g.Expect(os.WriteFile(filepath.Join(dir, "config.toml"), []byte("version = 3\n"), 0o600)).To(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	daemon := exec.CommandContext(ctx, containerd, "--config", filepath.Join(dir, "config.toml"), "--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"), "--address", sock)
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
		// The snapshots mounted nothing (import only unpacks); unmount defensively all the same.
		_ = exec.Command("umount", "-R", filepath.Join(dir, "root")).Run()
	})
	run := func(args ...string) (string, error) {
		b, err := exec.Command(ctr, append([]string{"--address", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
		return string(b), err
	}
	g.Eventually(func() error { _, err := run("version"); return err }, 30*time.Second, 200*time.Millisecond).Should(Succeed())

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
