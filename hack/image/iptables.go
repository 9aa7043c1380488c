package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// iptablesProgram is the machine's iptables whose tools kube-proxy's image carries (Debian package iptables, installed
// by hack/prereqs.sh).
const iptablesProgram = "/usr/sbin/iptables"

// iptablesCommands are the commands kube-proxy runs in iptables mode, IPv4 and IPv6, found through the image's PATH.
var iptablesCommands = []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"}

// multiarch is the Debian multiarch directory name of each architecture the images are built for.
var multiarch = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}

// elfMachine is the ELF machine of each architecture the images are built for.
var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// maxSymlinks bounds the symlinks followed while resolving one path, as the kernel does (ELOOP).
const maxSymlinks = 40

// iptablesFiles are the layer entries of the machine's iptables tools for kube-proxy's image, copied as the machine
// lays them out: the commands of iptablesCommands next to program (symlinks through /etc/alternatives to the
// xtables-nft-multi or xtables-legacy-multi binary the machine uses, so the image uses the same backend as the
// kubelet and the CNI plugins on the node), every shared library they and the xtables extension modules load
// (DT_NEEDED, transitively), the dynamic loader, and every extension module. Each symlink on a path is kept as a
// symlink (/lib → usr/lib, ...), so the loader's and libxtables' compiled-in paths resolve in the image.
func iptablesFiles(program string, p Platform) ([]layerFile, error) {
	triplet, ok := multiarch[p.Arch]
	if !ok || p.OS != "linux" {
		return nil, fmt.Errorf("kube-proxy's image carries this machine's iptables: no multiarch directory known for %s/%s", p.OS, p.Arch)
	}
	c := &collector{entries: map[string]layerFile{}, machine: elfMachine[p.Arch], platform: p.OS + "/" + p.Arch,
		libDirs: []string{"/lib/" + triplet, "/usr/lib/" + triplet, "/lib64", "/usr/lib64", "/lib", "/usr/lib"}}
	var elfs []string
	for _, cmd := range iptablesCommands {
		file, err := c.add(filepath.Join(filepath.Dir(program), cmd))
		if err != nil {
			return nil, fmt.Errorf("%w (kube-proxy's image carries the machine's iptables: install the Debian package iptables, hack/prereqs.sh does)", err)
		}
		elfs = append(elfs, file)
	}
	// The commands' libraries first: a machine of another architecture fails here, naming it.
	seen := map[string]bool{}
	if err := c.addNeeded(elfs, seen); err != nil {
		return nil, err
	}
	elfs = nil
	modDir := "/usr/lib/" + triplet + "/xtables"
	mods, err := os.ReadDir(modDir)
	if err != nil {
		return nil, fmt.Errorf("the xtables extension modules: %w (install the Debian package iptables, hack/prereqs.sh does)", err)
	}
	for _, m := range mods {
		if strings.HasSuffix(m.Name(), ".so") {
			file, err := c.add(filepath.Join(modDir, m.Name()))
			if err != nil {
				return nil, err
			}
			elfs = append(elfs, file)
		}
	}
	if err := c.addNeeded(elfs, seen); err != nil {
		return nil, err
	}
	files := make([]layerFile, 0, len(c.entries))
	for _, f := range c.entries {
		files = append(files, f)
	}
	slices.SortFunc(files, func(a, b layerFile) int { return strings.Compare(a.Name, b.Name) })
	return files, nil
}

// collector gathers layer entries, keyed by name, from the machine's files.
type collector struct {
	entries  map[string]layerFile
	machine  elf.Machine
	platform string
	libDirs  []string
}

// add copies the machine's absolute path p into the layer as the machine resolves it: each directory on the way as a
// directory, each symlink as the same symlink, followed, and the regular file it ends at. It returns the file's path
// with every symlink resolved.
func (c *collector) add(p string) (string, error) {
	return c.addFrom("/", strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/"), 0)
}

// addFrom resolves the path components rest below the resolved directory dir, as add does.
func (c *collector) addFrom(dir string, rest []string, links int) (string, error) {
	for i, part := range rest {
		cur := filepath.Join(dir, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			return "", err
		}
		name := strings.TrimPrefix(cur, "/")
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			if links++; links > maxSymlinks {
				return "", fmt.Errorf("%s: too many levels of symbolic links", cur)
			}
			target, err := os.Readlink(cur)
			if err != nil {
				return "", err
			}
			c.entries[name] = layerFile{Name: name, Mode: 0o777, Link: target}
			next := target
			if !filepath.IsAbs(target) {
				next = filepath.Join(dir, target)
			}
			parts := strings.Split(strings.TrimPrefix(filepath.Clean(next), "/"), "/")
			return c.addFrom("/", append(parts, rest[i+1:]...), links)
		case fi.IsDir():
			c.entries[name+"/"] = layerFile{Name: name + "/", Mode: int64(fi.Mode().Perm()), Dir: true}
			dir = cur
		case fi.Mode().IsRegular() && i == len(rest)-1:
			if _, ok := c.entries[name]; !ok {
				data, err := os.ReadFile(cur)
				if err != nil {
					return "", err
				}
				c.entries[name] = layerFile{Name: name, Mode: int64(fi.Mode().Perm()), Data: data}
			}
			return cur, nil
		default:
			return "", fmt.Errorf("%s is neither a directory, a symlink nor a regular file at the end of the path", cur)
		}
	}
	return "", fmt.Errorf("%s is a directory, not a file", dir)
}

// addNeeded adds what the ELF files elfs need (needs), transitively, skipping the files in seen, which it extends.
func (c *collector) addNeeded(elfs []string, seen map[string]bool) error {
	for len(elfs) > 0 {
		file := elfs[0]
		elfs = elfs[1:]
		if seen[file] {
			continue
		}
		seen[file] = true
		deps, err := c.needs(file)
		if err != nil {
			return err
		}
		elfs = append(elfs, deps...)
	}
	return nil
}

// needs reads the ELF file (already added) and adds its program interpreter and the libraries it names (DT_NEEDED),
// found in libDirs, returning their resolved paths.
func (c *collector) needs(file string) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(c.entries[strings.TrimPrefix(file, "/")].Data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	defer f.Close()
	if f.Machine != c.machine {
		return nil, fmt.Errorf("%s is for %s, not %s: kube-proxy's image carries this machine's iptables, build it for this machine's architecture", file, f.Machine, c.platform)
	}
	var out []string
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(prog.Open(), 4096))
		if err != nil {
			return nil, fmt.Errorf("%s: reading its interpreter: %w", file, err)
		}
		interp, err := c.add(string(bytes.TrimRight(b, "\x00")))
		if err != nil {
			return nil, fmt.Errorf("%s: its interpreter: %w", file, err)
		}
		out = append(out, interp)
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	for _, lib := range libs {
		i := slices.IndexFunc(c.libDirs, func(d string) bool { _, err := os.Stat(filepath.Join(d, lib)); return err == nil })
		if i < 0 {
			return nil, fmt.Errorf("%s needs %s, found in none of %s", file, lib, strings.Join(c.libDirs, ", "))
		}
		resolved, err := c.add(filepath.Join(c.libDirs[i], lib))
		if err != nil {
			return nil, err
		}
		out = append(out, resolved)
	}
	return out, nil
}
