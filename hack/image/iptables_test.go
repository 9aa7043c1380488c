package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// layerNode is one entry of a layer read back: a directory, a symlink (Link) or a regular file (Data).
type layerNode struct {
	Type byte
	Mode int64
	Link string
	Data []byte
}

// readLayer reads a layer's entries by name, without a trailing slash.
func readLayer(t *testing.T, l interface{ Uncompressed() (io.ReadCloser, error) }) map[string]layerNode {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	nodes := map[string]layerNode{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nodes
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		nodes[strings.TrimSuffix(h.Name, "/")] = layerNode{Type: h.Typeflag, Mode: h.Mode, Link: h.Linkname, Data: data}
	}
}

// resolveInLayer resolves the absolute path p inside the layer as the kernel would in a container whose root is the
// layer: every symlink followed, each from the directory holding it. It returns the file's name, or "" when a
// component is missing.
func resolveInLayer(nodes map[string]layerNode, p string) string {
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	dir := ""
	for links := 0; len(parts) > 0; {
		cur := path.Join(dir, parts[0])
		n, ok := nodes[cur]
		switch {
		case !ok:
			return ""
		case n.Type == tar.TypeSymlink:
			if links++; links > maxSymlinks {
				return ""
			}
			target := n.Link
			if !path.IsAbs(target) {
				target = path.Join("/", dir, target)
			}
			parts = append(strings.Split(strings.TrimPrefix(path.Clean(target), "/"), "/"), parts[1:]...)
			dir = ""
		case n.Type == tar.TypeDir:
			dir, parts = cur, parts[1:]
		case len(parts) == 1:
			return cur
		default:
			return ""
		}
	}
	return ""
}

// TestKubeProxyImageIPTables: kube-proxy's image holds what its iptables mode runs, so the kube-proxy Pods on the
// nodes start. The failure it guards: the image held the kube-proxy binary alone, and kube-proxy crash-looped on the
// nodes (no iptables in its PATH), leaving Service IPs dead and CoreDNS never Ready. The image is checked as a
// container sees it: each command kube-proxy runs resolves, through the layer's own symlinks, to an ELF program
// whose loader and every library it or an xtables extension module needs (transitively) lie in the layer; every
// extension module of the machine is there; and the same machine gives the same digest.
func TestKubeProxyImageIPTables(t *testing.T) {
	g := NewWithT(t)
	if _, err := os.Stat(iptablesProgram); err != nil {
		t.Fatalf("%v: hack/prereqs.sh installs iptables, which kube-proxy's image carries", err)
	}
	bin := t.TempDir()
	buildStatic(t, "pause", filepath.Join(bin, "kube-proxy"))
	i := slices.IndexFunc(nodeRecipes, func(r nodeRecipe) bool { return r.Repo == "kube-proxy" })
	g.Expect(i).To(BeNumerically(">=", 0))
	r := nodeRecipes[i]
	g.Expect(r.IPTables).To(BeTrue())
	p := Platform{OS: "linux", Arch: "amd64"}
	img, err := nodeImage(bin, r, p)
	g.Expect(err).NotTo(HaveOccurred())
	again, err := nodeImage(bin, r, p)
	g.Expect(err).NotTo(HaveOccurred())
	d1, err := img.Digest()
	g.Expect(err).NotTo(HaveOccurred())
	d2, err := again.Digest()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d2).To(Equal(d1), "the same machine gave two digests")

	layers, err := img.Layers()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(layers).To(HaveLen(1))
	entries := layerEntries(t, layers[0]) // root-owned, epoch times
	g.Expect(slices.IsSorted(entries)).To(BeTrue(), "the layer's entries are not sorted")
	nodes := readLayer(t, layers[0])
	g.Expect(resolveInLayer(nodes, r.Path)).To(Equal("usr/local/bin/kube-proxy"))
	g.Expect(nodes["usr/local/bin/kube-proxy"].Mode).To(Equal(int64(0o555)))

	// Every ELF file of the layer: its loader and each library it names are in the layer, where the loader looks.
	var elfFiles []string
	for name, n := range nodes {
		if n.Type == tar.TypeReg && bytes.HasPrefix(n.Data, []byte(elf.ELFMAG)) {
			elfFiles = append(elfFiles, name)
		}
	}
	slices.Sort(elfFiles)
	libDirs := []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"}
	for _, name := range elfFiles {
		f, err := elf.NewFile(bytes.NewReader(nodes[name].Data))
		g.Expect(err).NotTo(HaveOccurred(), name)
		g.Expect(f.Machine).To(Equal(elf.EM_X86_64), name)
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				b, err := io.ReadAll(prog.Open())
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(resolveInLayer(nodes, string(bytes.TrimRight(b, "\x00")))).NotTo(BeEmpty(), "%s: its loader %s", name, b)
			}
		}
		libs, err := f.ImportedLibraries()
		g.Expect(err).NotTo(HaveOccurred(), name)
		for _, lib := range libs {
			found := slices.ContainsFunc(libDirs, func(d string) bool { return resolveInLayer(nodes, d+"/"+lib) != "" })
			g.Expect(found).To(BeTrue(), "%s needs %s, not in the layer", name, lib)
		}
	}

	// Each command kube-proxy runs is a dynamically linked program (the one exception to static binaries).
	for _, cmd := range iptablesCommands {
		file := resolveInLayer(nodes, "/usr/sbin/"+cmd)
		g.Expect(file).NotTo(BeEmpty(), cmd)
		g.Expect(elfFiles).To(ContainElement(file), cmd)
		g.Expect(path.Base(file)).To(Or(Equal("xtables-nft-multi"), Equal("xtables-legacy-multi")), cmd)
		g.Expect(nodes[file].Mode&0o111).NotTo(BeZero(), cmd)
	}
	g.Expect(resolveInLayer(nodes, "/lib64/ld-linux-x86-64.so.2")).NotTo(BeEmpty())
	g.Expect(resolveInLayer(nodes, "/usr/lib/x86_64-linux-gnu/libc.so.6")).NotTo(BeEmpty())

	// Every extension module of the machine, among them those kube-proxy's rules use.
	mods, err := filepath.Glob("/usr/lib/x86_64-linux-gnu/xtables/*.so")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(mods).NotTo(BeEmpty())
	for _, m := range mods {
		g.Expect(resolveInLayer(nodes, m)).NotTo(BeEmpty(), m)
	}
	for _, m := range []string{"comment", "mark", "MARK", "conntrack", "statistic", "DNAT", "SNAT", "MASQUERADE", "multiport", "addrtype", "REJECT"} {
		found := resolveInLayer(nodes, "/usr/lib/x86_64-linux-gnu/xtables/libxt_"+m+".so") != "" ||
			resolveInLayer(nodes, "/usr/lib/x86_64-linux-gnu/xtables/libipt_"+m+".so") != ""
		g.Expect(found).To(BeTrue(), "the xtables module of %s", m)
	}

	// Without the machine's iptables, or for another architecture, the error names the fix.
	_, err = iptablesFiles("/nonexistent/sbin/iptables", p)
	g.Expect(err).To(MatchError(ContainSubstring("install the Debian package iptables, hack/prereqs.sh does")))
	_, err = iptablesFiles(iptablesProgram, Platform{OS: "linux", Arch: "arm64"})
	g.Expect(err).To(MatchError(ContainSubstring("build it for this machine's architecture")))
}
