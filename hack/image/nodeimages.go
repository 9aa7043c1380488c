package main

import (
	"bufio"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// nodeRecipe says how one image a node runs is made: which static binary goes where, and as whom it runs.
type nodeRecipe struct {
	// Repo is the last element of the repository kubeadm names (registry.k8s.io/coredns/coredns: coredns).
	Repo string
	// Binary is the file in the binary directory.
	Binary string
	// Path is where the binary lies in the image; it is also the entrypoint.
	Path string
	// User is the image's user, as the upstream image sets it.
	User string
	// IPTables adds the machine's iptables tools, their libraries and the loader (iptablesFiles): the one image that
	// holds dynamically linked programs.
	IPTables bool
}

// nodeRecipes are the images `kubeadm config images list` names. kubeadm's static Pods run their binary by name
// (command: [kube-apiserver, ...], [etcd, ...]), found through the image's PATH; the kube-proxy DaemonSet runs
// /usr/local/bin/kube-proxy; the CoreDNS Deployment passes args only, so its entrypoint is /coredns as upstream's.
// kube-proxy (iptables mode, its default) runs iptables, iptables-save and iptables-restore (and ip6tables*): its image
// carries them from this machine, with their libraries and the loader, as upstream's distroless-iptables image does;
// it is the one image with dynamically linked programs, each image's own binary stays static. It carries no nft (the
// nftables mode is not used). etcd's image carries the etcd this repository builds (hack/tools) under the tag kubeadm
// names.
var nodeRecipes = []nodeRecipe{
	{Repo: "kube-apiserver", Binary: "kube-apiserver", Path: "/usr/local/bin/kube-apiserver", User: "0:0"},
	{Repo: "kube-controller-manager", Binary: "kube-controller-manager", Path: "/usr/local/bin/kube-controller-manager", User: "0:0"},
	{Repo: "kube-scheduler", Binary: "kube-scheduler", Path: "/usr/local/bin/kube-scheduler", User: "0:0"},
	{Repo: "kube-proxy", Binary: "kube-proxy", Path: "/usr/local/bin/kube-proxy", User: "0:0", IPTables: true},
	{Repo: "coredns", Binary: "coredns", Path: "/coredns", User: "65532:65532"},
	{Repo: "pause", Binary: "pause", Path: "/pause", User: "65535:65535"},
	{Repo: "etcd", Binary: "etcd", Path: "/usr/local/bin/etcd", User: "0:0"},
}

// smokeRecipe is the application image of the smoke Pod: an HTTP server on :8080 answering its host name.
var smokeRecipe = nodeRecipe{Repo: "smoke", Binary: "smoke", Path: "/smoke", User: "65532:65532"}

// nodePATH is every node image's PATH, so kubeadm's commands (kube-apiserver, etcd, ...) resolve.
const nodePATH = "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"

// plannedImage is one image to build: its full name and its recipe.
type plannedImage struct {
	Name   string
	Recipe nodeRecipe
}

// builtImage is one image written to the archive.
type builtImage struct {
	Name   string
	Digest string
	// Size is the bytes of its manifest, config and layer as stored.
	Size int64
}

// readImageList reads `kubeadm config images list` output: one image name a line.
func readImageList(r io.Reader) ([]string, error) {
	var list []string
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			list = append(list, line)
		}
	}
	return list, sc.Err()
}

// planNodeImages matches kubeadm's image list to nodeRecipes, one to one, leaving out the repositories in skip. An
// image kubeadm names without a recipe, or a recipe kubeadm no longer names, is an error: the images built must be
// exactly the ones kubeadm looks for.
func planNodeImages(kubeadmList, skip []string) ([]plannedImage, error) {
	var plan []plannedImage
	used := map[string]bool{}
	for _, s := range kubeadmList {
		ref, err := name.NewTag(s, name.StrictValidation)
		if err != nil {
			return nil, fmt.Errorf("kubeadm's image list: %q is not a tagged image name: %w", s, err)
		}
		repo := path.Base(ref.RepositoryStr())
		i := slices.IndexFunc(nodeRecipes, func(r nodeRecipe) bool { return r.Repo == repo })
		if i < 0 {
			return nil, fmt.Errorf("kubeadm names %s, which no recipe builds: add %q to nodeRecipes in hack/image/nodeimages.go", s, repo)
		}
		if used[repo] {
			return nil, fmt.Errorf("kubeadm names two images of repository %q: %s", repo, s)
		}
		used[repo] = true
		if !slices.Contains(skip, repo) {
			plan = append(plan, plannedImage{Name: ref.String(), Recipe: nodeRecipes[i]})
		}
	}
	for _, r := range nodeRecipes {
		if !used[r.Repo] {
			return nil, fmt.Errorf("kubeadm no longer names an image of repository %q: remove it from nodeRecipes in hack/image/nodeimages.go", r.Repo)
		}
	}
	for _, s := range skip {
		if !used[s] {
			return nil, fmt.Errorf("-skip %s: kubeadm names no such image (it names %s)", s, strings.Join(kubeadmList, ", "))
		}
	}
	return plan, nil
}

// checkStatic refuses a binary that is not a static ELF executable: the images hold no libc.
func checkStatic(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("%s: %w (build the node binaries first: make node-images)", file, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the images hold no libc: build it with CGO_ENABLED=0", file)
		}
	}
	return nil
}

// nodeImage is the image of recipe r for p: one layer with the binary at r.Path and an empty /tmp, and the machine's
// iptables tools when r.IPTables.
func nodeImage(binDir string, r nodeRecipe, p Platform) (v1.Image, error) {
	file := filepath.Join(binDir, r.Binary)
	if err := checkStatic(file); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var files []layerFile
	rel := strings.TrimPrefix(r.Path, "/")
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		files = append([]layerFile{{Name: d + "/", Mode: 0o755, Dir: true}}, files...)
	}
	files = append(files, layerFile{Name: rel, Mode: 0o555, Data: data}, layerFile{Name: "tmp/", Mode: 0o1777, Dir: true})
	if r.IPTables {
		if files, err = withIPTables(files, p); err != nil {
			return nil, err
		}
	}
	return singleLayerImage(files, p, "make node-images: "+r.Binary, v1.Config{
		User: r.User, Entrypoint: []string{r.Path}, Env: []string{nodePATH}, WorkingDir: "/",
		Labels: map[string]string{"org.opencontainers.image.source": source, "org.opencontainers.image.title": r.Repo},
	})
}

// BuildNodeImages builds the planned images and the smoke image smokeRef (none when empty) from the static binaries
// in binDir, and writes them as one OCI image layout, out/layout, archived as out/images.tar: each manifest named by
// io.containerd.image.name (what `ctr images import` names the image) and org.opencontainers.image.ref.name.
func BuildNodeImages(plan []plannedImage, smokeRef, binDir, out string, p Platform) ([]builtImage, error) {
	if smokeRef != "" {
		ref, err := name.NewTag(smokeRef, name.StrictValidation)
		if err != nil {
			return nil, fmt.Errorf("-smoke-ref %q: %w", smokeRef, err)
		}
		plan = append(slices.Clone(plan), plannedImage{Name: ref.String(), Recipe: smokeRecipe})
	}
	dir := filepath.Join(out, "layout")
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, err
	}
	var built []builtImage
	for _, pi := range plan {
		img, err := nodeImage(binDir, pi.Recipe, p)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", pi.Name, err)
		}
		if err := lp.AppendImage(img, layout.WithPlatform(v1.Platform{OS: p.OS, Architecture: p.Arch}),
			layout.WithAnnotations(map[string]string{"io.containerd.image.name": pi.Name, "org.opencontainers.image.ref.name": pi.Name})); err != nil {
			return nil, err
		}
		b, err := describe(pi.Name, img)
		if err != nil {
			return nil, err
		}
		built = append(built, b)
	}
	if err := archive(dir, filepath.Join(out, "images.tar")); err != nil {
		return nil, err
	}
	return built, nil
}

// describe is img's name, manifest digest and stored size.
func describe(ref string, img v1.Image) (builtImage, error) {
	d, err := img.Digest()
	if err != nil {
		return builtImage{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return builtImage{}, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return builtImage{}, err
	}
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return builtImage{Name: ref, Digest: d.String(), Size: size}, nil
}

// nodeImagesMain is `image node-images`: it reads kubeadm's list and writes the archive, printing one line per
// image: name, digest, size.
func nodeImagesMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("node-images", flag.ContinueOnError)
	list := fs.String("kubeadm-images", "", "file holding `kubeadm config images list` output (- for stdin)")
	binDir := fs.String("bin-dir", "bin/node", "directory holding the static binaries, named as nodeRecipes' Binary")
	out := fs.String("out", "out/node-images", "directory to write layout/ and images.tar into")
	skip := fs.String("skip", "", "comma-separated repositories kubeadm names that are not built (e.g. coredns)")
	smokeRef := fs.String("smoke-ref", "capr.local/smoke:v1", "name of the smoke application image (empty: none)")
	arch := fs.String("arch", "amd64", "architecture of the images (linux only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *list == "" {
		return errors.New("-kubeadm-images is required: the output of `kubeadm config images list --kubernetes-version <v>`")
	}
	var r io.Reader = os.Stdin
	if *list != "-" {
		f, err := os.Open(*list)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	names, err := readImageList(r)
	if err != nil {
		return err
	}
	var skipped []string
	if *skip != "" {
		skipped = strings.Split(*skip, ",")
	}
	plan, err := planNodeImages(names, skipped)
	if err != nil {
		return err
	}
	built, err := BuildNodeImages(plan, *smokeRef, *binDir, *out, Platform{OS: "linux", Arch: *arch})
	if err != nil {
		return err
	}
	for _, b := range built {
		fmt.Fprintf(stdout, "%s %s %d\n", b.Name, b.Digest, b.Size)
	}
	return nil
}

// withIPTables is files and the machine's iptables tools (iptablesFiles), sorted by name, each directory once.
func withIPTables(files []layerFile, p Platform) ([]layerFile, error) {
	ipt, err := iptablesFiles(iptablesProgram, p)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if i := slices.IndexFunc(ipt, func(g layerFile) bool { return g.Name == f.Name }); i >= 0 {
			if !f.Dir || !ipt[i].Dir {
				return nil, fmt.Errorf("the image's %s is also one of the machine's iptables files", f.Name)
			}
			continue
		}
		ipt = append(ipt, f)
	}
	slices.SortFunc(ipt, func(a, b layerFile) int { return strings.Compare(a.Name, b.Name) })
	return ipt, nil
}
