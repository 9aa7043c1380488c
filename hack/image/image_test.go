package main

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestImage builds the manager for this machine's platform, makes its image twice and checks: the same digest both
// times; the config runs /manager as user 65532; the one layer holds the binary and nothing else; and, unpacked, the
// binary starts (--help) as that user with a read-only root (as root only: it mounts and chroots).
func TestImage(t *testing.T) {
	dir := t.TempDir()
	p := Platform{OS: "linux", Arch: runtime.GOARCH}
	build := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=", "-o", filepath.Join(dir, "manager-linux-"+p.Arch), ".")
	build.Dir = filepath.Join("..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+p.Arch)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the manager: %v\n%s", err, out)
	}
	first, err := Build(dir, []Platform{p}, filepath.Join(dir, "a"), "capr:test")
	if err != nil {
		t.Fatal(err)
	}
	second, err := Build(dir, []Platform{p}, filepath.Join(dir, "b"), "capr:test")
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatalf("the same binary gave two digests: %s and %s", first, second)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "a.tar"))
	b, _ := os.ReadFile(filepath.Join(dir, "b.tar"))
	if string(a) != string(b) {
		t.Fatal("the same binary gave two different archives")
	}

	lp, err := layout.FromPath(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	outer, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	om, _ := outer.IndexManifest()
	idx, err := outer.ImageIndex(om.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := idx.Digest(); d.String() != first {
		t.Fatalf("the layout holds index %s, Build said %s", d, first)
	}
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 1 || im.Manifests[0].Platform == nil || im.Manifests[0].Platform.Architecture != p.Arch {
		t.Fatalf("the index should hold one image for linux/%s: %+v", p.Arch, im.Manifests)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s: user %q, entrypoint %q, os/arch %s/%s, created %s", first, cfg.Config.User, cfg.Config.Entrypoint, cfg.OS, cfg.Architecture, cfg.Created.UTC())
	if cfg.Config.User != "65532:65532" || strings.Join(cfg.Config.Entrypoint, " ") != "/manager" || cfg.OS != "linux" || cfg.Architecture != p.Arch {
		t.Fatalf("unexpected config: %+v", cfg.Config)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer, got %d (%v)", len(layers), err)
	}
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		f, err := os.OpenFile(filepath.Join(root, filepath.Base(h.Name)), os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
	}
	if strings.Join(names, ",") != "manager" {
		t.Fatalf("the layer should hold the manager alone, holds %v", names)
	}

	if os.Geteuid() != 0 {
		t.Skip("running the unpacked binary as user 65532 on a read-only root needs root (mount, chroot)")
	}
	run := exec.Command("unshare", "-m", "sh", "-c", `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec chroot --userspec=65532:65532 "$1" /manager --help`, "run", root)
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("/manager --help as 65532 on a read-only root: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--bootstrap-concurrency") {
		t.Fatalf("--help printed no flags:\n%s", out)
	}
}
