// Command image builds CAPR's manager image without a container engine: one layer holding the static manager
// binary at /manager and nothing else, run as the non-root user 65532, for each platform given, gathered in one OCI
// image index and written as an OCI image layout (a directory) and as a tar archive of it. Every timestamp is the
// epoch and every file is owned by root, so the same binaries give the same digest.
//
//	go run . -bin-dir ../../bin -out ../../out/image -platforms linux/amd64,linux/arm64 -ref capr-manager:dev
//
// expects <bin-dir>/manager-<os>-<arch> for each platform and prints the index digest.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
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
