package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// User is the user the manager runs as: distroless's "nonroot".
const User = "65532:65532"

// Entrypoint is the manager binary's path in the image.
const Entrypoint = "/manager"

// Platform is one os/arch of the image.
type Platform struct{ OS, Arch string }

// epoch is every timestamp of the image, so equal inputs give equal digests.
var epoch = time.Unix(0, 0).UTC()

// Build writes the image index of the manager binaries <binDir>/manager-<os>-<arch> to the OCI layout out (and its
// archive out.tar) and returns the index's digest.
func Build(binDir string, platforms []Platform, out, ref string) (string, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := image(filepath.Join(binDir, "manager-"+p.OS+"-"+p.Arch), p)
		if err != nil {
			return "", err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1, Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}}})
	}
	digest, err := idx.Digest()
	if err != nil {
		return "", err
	}
	if err := os.RemoveAll(out); err != nil {
		return "", err
	}
	lp, err := layout.Write(out, empty.Index)
	if err != nil {
		return "", err
	}
	var opts []layout.Option
	if ref != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}))
	}
	if err := lp.AppendIndex(idx, opts...); err != nil {
		return "", err
	}
	if err := archive(out, out+".tar"); err != nil {
		return "", err
	}
	return digest.String(), nil
}

// image is one platform's image: a single layer with the binary at /manager, run as User.
func image(binary string, p Platform) (v1.Image, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("reading the manager binary for %s/%s: %w (build it first: make image builds every platform)", p.OS, p.Arch, err)
	}
	return singleLayerImage([]layerFile{{Name: Entrypoint[1:], Mode: 0o555, Data: data}}, p, "make image: the manager binary",
		v1.Config{User: User, Entrypoint: []string{Entrypoint}, WorkingDir: "/",
			Labels: map[string]string{"org.opencontainers.image.source": source, "org.opencontainers.image.title": "CAPR manager"}})
}

// source is the repository every image built here names as its source.
const source = "https://github.com/capr-project/cluster-api-provider-remote"

// layerFile is one entry of a layer: a directory when Dir is set, a symlink to Link when Link is set, else a regular
// file holding Data.
type layerFile struct {
	Name string
	Mode int64
	Dir  bool
	Link string
	Data []byte
}

// singleLayerImage is an OCI image for p of one layer holding files, with config, every timestamp the epoch and every
// entry owned by root.
func singleLayerImage(files []layerFile, p Platform, createdBy string, config v1.Config) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.Name, Mode: f.Mode, Size: int64(len(f.Data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			h.Typeflag, h.Size = tar.TypeDir, 0
		case f.Link != "":
			h.Typeflag, h.Size, h.Linkname = tar.TypeSymlink, 0, f.Link
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: createdBy}})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = p.OS, p.Arch
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config = config
	return mutate.ConfigFile(img, cfg)
}

// archive writes dir as a tar file with sorted entries, epoch times and root ownership.
func archive(dir, file string) error {
	var paths []string
	if err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			paths = append(paths, path)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(paths)
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, path := range paths {
		info, err := os.Stat(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Mode: 0o644, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: info.Size()}
		if info.IsDir() {
			h.Name, h.Mode, h.Typeflag, h.Size = h.Name+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !info.IsDir() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if _, err := tw.Write(data); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
