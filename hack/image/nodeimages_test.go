package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	. "github.com/onsi/gomega"
)

// kubeadmList is `kubeadm config images list --kubernetes-version v1.36.3`, as kubeadm printed it (the integration
// tier checks the file against bin/kubeadm).
func kubeadmList(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "kubeadm-images-v1.36.3.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	list, err := readImageList(f)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// TestPlanNodeImages: the images planned are exactly the ones kubeadm names, less the skipped ones. The failures it
// guards: kubeadm naming an image no recipe builds (a new component, a renamed repository) or no longer naming one
// a recipe builds would leave a node without an image kubeadm's preflight looks for, or build one nobody runs.
func TestPlanNodeImages(t *testing.T) {
	g := NewWithT(t)
	list := kubeadmList(t)
	plan, err := planNodeImages(list, []string{"coredns"})
	g.Expect(err).NotTo(HaveOccurred())
	var names []string
	for _, p := range plan {
		names = append(names, p.Name)
	}
	want := slices.DeleteFunc(slices.Clone(list), func(s string) bool { return strings.Contains(s, "/coredns:") })
	g.Expect(names).To(Equal(want))
	g.Expect(names).To(ContainElements("registry.k8s.io/kube-apiserver:v1.36.3", "registry.k8s.io/etcd:3.6.8-0", "registry.k8s.io/pause:3.10.2"))

	all, err := planNodeImages(list, nil)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(all).To(HaveLen(len(list)))

	for _, tc := range []struct {
		name string
		list []string
		skip []string
		err  string
	}{
		{"an image without a recipe", append(slices.Clone(list), "registry.k8s.io/kube-foo:v1.36.3"), nil, `add "kube-foo" to nodeRecipes`},
		{"a recipe kubeadm no longer names", slices.DeleteFunc(slices.Clone(list), func(s string) bool { return strings.Contains(s, "/etcd:") }), nil, `no longer names an image of repository "etcd"`},
		{"the same repository twice", append(slices.Clone(list), "registry.k8s.io/pause:3.9"), nil, `two images of repository "pause"`},
		{"a skip kubeadm does not name", list, []string{"cordns"}, "-skip cordns: kubeadm names no such image"},
		{"a name without a tag", append(slices.Clone(list[:len(list)-1]), "registry.k8s.io/etcd"), nil, "not a tagged image name"},
	} {
		_, err := planNodeImages(tc.list, tc.skip)
		g.Expect(err).To(MatchError(ContainSubstring(tc.err)), tc.name)
	}
}

// buildStatic builds the static Go program ./<pkg> into dir/<out>.
func buildStatic(t *testing.T, pkg, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=", "-o", out, "./"+pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
}

// standInBinaries is a directory of the real pause and smoke binaries, with the pause binary standing in for every
// other recipe's (the Kubernetes binaries, whose contents the image builder does not look at).
func standInBinaries(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	buildStatic(t, "pause", filepath.Join(bin, "pause"))
	buildStatic(t, "smoke", filepath.Join(bin, "smoke"))
	pause, err := os.ReadFile(filepath.Join(bin, "pause"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range nodeRecipes {
		if r.Binary != "pause" {
			if err := os.WriteFile(filepath.Join(bin, r.Binary), pause, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return bin
}

// TestNodeImages builds every node image (the real pause and smoke binaries; the pause binary stands in for the
// Kubernetes binaries, whose contents this tier does not look at) twice and checks: the same digests and the same
// archive bytes both times; the layout names each image for ctr (io.containerd.image.name) with its platform; each
// config's user, PATH and entrypoint; each layer's entries; and a dynamically linked binary is refused (the images
// hold no libc, so it could not start on the node).
func TestNodeImages(t *testing.T) {
	g := NewWithT(t)
	bin := standInBinaries(t)
	plan, err := planNodeImages(kubeadmList(t), nil)
	g.Expect(err).NotTo(HaveOccurred())
	p := Platform{OS: "linux", Arch: "amd64"}
	out := t.TempDir()
	first, err := BuildNodeImages(plan, "capr.local/smoke:v1", bin, filepath.Join(out, "a"), p)
	g.Expect(err).NotTo(HaveOccurred())
	second, err := BuildNodeImages(plan, "capr.local/smoke:v1", bin, filepath.Join(out, "b"), p)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(second).To(Equal(first), "the same binaries gave other digests")
	a, _ := os.ReadFile(filepath.Join(out, "a", "images.tar"))
	b, _ := os.ReadFile(filepath.Join(out, "b", "images.tar"))
	g.Expect(a).NotTo(BeEmpty())
	g.Expect(a).To(Equal(b), "the same binaries gave two different archives")

	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
			Platform    struct{ OS, Architecture string }
		} `json:"manifests"`
	}
	raw, err := os.ReadFile(filepath.Join(out, "a", "layout", "index.json"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(json.Unmarshal(raw, &index)).To(Succeed())
	g.Expect(index.Manifests).To(HaveLen(len(plan) + 1))
	lp, err := layout.FromPath(filepath.Join(out, "a", "layout"))
	g.Expect(err).NotTo(HaveOccurred())
	for i, m := range index.Manifests {
		want := first[i]
		t.Logf("%s %s %d", want.Name, want.Digest, want.Size)
		g.Expect(m.Annotations).To(Equal(map[string]string{"io.containerd.image.name": want.Name, "org.opencontainers.image.ref.name": want.Name}))
		g.Expect(m.Digest).To(Equal(want.Digest))
		g.Expect(m.Platform.OS + "/" + m.Platform.Architecture).To(Equal("linux/amd64"))

		r := smokeRecipe
		if i < len(plan) {
			g.Expect(want.Name).To(Equal(plan[i].Name))
			r = plan[i].Recipe
		} else {
			g.Expect(want.Name).To(Equal("capr.local/smoke:v1"))
		}
		img, err := lp.Image(mustHash(t, m.Digest))
		g.Expect(err).NotTo(HaveOccurred())
		cfg, err := img.ConfigFile()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(cfg.OS + "/" + cfg.Architecture).To(Equal("linux/amd64"))
		g.Expect(cfg.Created.Unix()).To(BeZero())
		g.Expect(cfg.Config.Entrypoint).To(Equal([]string{r.Path}), want.Name)
		g.Expect(cfg.Config.Cmd).To(BeEmpty())
		g.Expect(cfg.Config.Env).To(Equal([]string{"PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"}))
		g.Expect(cfg.Config.User).To(Equal(r.User))
		layers, err := img.Layers()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(layers).To(HaveLen(1))
		if r.IPTables {
			// The machine's iptables tools besides (TestKubeProxyImageIPTables looks at them).
			g.Expect(layerEntries(t, layers[0])).To(ContainElements(wantEntries(r.Path)), want.Name)
		} else {
			g.Expect(layerEntries(t, layers[0])).To(Equal(wantEntries(r.Path)), want.Name)
		}
	}
	byRepo := map[string]string{}
	for _, r := range append(slices.Clone(nodeRecipes), smokeRecipe) {
		byRepo[r.Repo] = r.User + " " + r.Path
	}
	// kubeadm's static Pods run the control-plane binaries by name (found through PATH) as root; the kube-proxy
	// DaemonSet runs /usr/local/bin/kube-proxy; CoreDNS's Deployment passes args to the entrypoint /coredns.
	g.Expect(byRepo).To(Equal(map[string]string{
		"kube-apiserver": "0:0 /usr/local/bin/kube-apiserver", "kube-controller-manager": "0:0 /usr/local/bin/kube-controller-manager",
		"kube-scheduler": "0:0 /usr/local/bin/kube-scheduler", "kube-proxy": "0:0 /usr/local/bin/kube-proxy",
		"etcd": "0:0 /usr/local/bin/etcd", "pause": "65535:65535 /pause", "coredns": "65532:65532 /coredns",
		"smoke": "65532:65532 /smoke",
	}))

	// A dynamically linked binary (this machine's /bin/true) is refused, naming the fix.
	if checkStatic("/bin/true") == nil {
		t.Skip("/bin/true is static here: no dynamically linked binary to refuse")
	}
	g.Expect(os.Remove(filepath.Join(bin, "etcd"))).To(Succeed())
	dyn, err := os.ReadFile("/bin/true")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(os.WriteFile(filepath.Join(bin, "etcd"), dyn, 0o755)).To(Succeed())
	_, err = BuildNodeImages(plan, "", bin, filepath.Join(out, "c"), p)
	g.Expect(err).To(MatchError(ContainSubstring("is dynamically linked; the images hold no libc: build it with CGO_ENABLED=0")))
}

// wantEntries is the layer of a binary at path: its parent directories, the binary, and /tmp.
func wantEntries(path string) []string {
	var dirs []string
	rel := strings.TrimPrefix(path, "/")
	for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
		dirs = append([]string{d + "/ 755"}, dirs...)
	}
	return append(dirs, rel+" 555", "tmp/ 1777")
}

// layerEntries lists a layer's entries as "name mode", checking each is owned by root with an epoch time.
func layerEntries(t *testing.T, l interface{ Uncompressed() (io.ReadCloser, error) }) []string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var entries []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 0 {
			t.Fatalf("%s: owner %d:%d, time %s; want root and the epoch", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		entries = append(entries, fmt.Sprintf("%s %o", h.Name, h.Mode))
	}
}

// mustHash parses a digest.
func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
