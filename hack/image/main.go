// Command image builds CAPR's manager image without a container engine: one layer holding the static manager
// binary at /manager and nothing else, run as the non-root user 65532, for each platform given, gathered in one OCI
// image index and written as an OCI image layout (a directory) and as a tar archive of it. Every timestamp is the
// epoch and every file is owned by root, so the same binaries give the same digest.
//
//	go run . -bin-dir ../../bin -out ../../out/image -platforms linux/amd64,linux/arm64 -ref capr-manager:dev
//
// expects <bin-dir>/manager-<os>-<arch> for each platform and prints the index digest.
//
//	go run . node-images -kubeadm-images list.txt -bin-dir ../../bin/node -out ../../out/node-images -skip coredns
//
// builds the images kubeadm names (list.txt: `kubeadm config images list` output) and the smoke application image
// from static binaries, into one OCI archive for `ctr -n k8s.io images import` (see nodeimages.go).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "node-images" {
		if err := nodeImagesMain(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "image node-images: %v\n", err)
			os.Exit(1)
		}
		return
	}
	binDir := flag.String("bin-dir", "bin", "directory holding manager-<os>-<arch> for each platform")
	out := flag.String("out", "out/image", "directory of the OCI image layout to write; <out>.tar is its archive")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
	ref := flag.String("ref", "", "image reference recorded in the layout (org.opencontainers.image.ref.name)")
	flag.Parse()
	var list []Platform
	for _, p := range strings.Split(*platforms, ",") {
		os_, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok {
			fmt.Fprintf(os.Stderr, "image: platform %q is not os/arch\n", p)
			os.Exit(2)
		}
		list = append(list, Platform{OS: os_, Arch: arch})
	}
	digest, err := Build(*binDir, list, *out, *ref)
	if err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(digest)
}
