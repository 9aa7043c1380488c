package cloudinit

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	yaml3 "go.yaml.in/yaml/v3"
)

// MaxDecodedSize is CAPR's limit for one bootstrap: the bootstrap data itself, and the file contents and commands
// of its plan after base64 decoding, gzip decompression and YAML alias expansion, each stay within it, and so does
// their total. One file may take all of it.
const MaxDecodedSize = 64 << 20

// ErrTooLarge marks bootstrap data that decodes to more than MaxDecodedSize; nothing is sent to the host and it is
// never retried.
var ErrTooLarge = errors.New("bootstrap data too large")

// Budget counts what one bootstrap decodes to against MaxDecodedSize. The zero value is an unused budget.
type Budget struct {
	used int64
}

func tooLarge(what string) error {
	return fmt.Errorf("%w: the bootstrap data decodes to more than %d MiB (at %s); CAPR's limit for one bootstrap is %d MiB after base64, gzip and YAML aliases: ship large files another way (e.g. fetch them in a runcmd)",
		ErrTooLarge, MaxDecodedSize>>20, what, MaxDecodedSize>>20)
}

// CheckRaw refuses bootstrap data (the bootstrap Secret's value) larger than MaxDecodedSize before anything reads it.
func CheckRaw(data []byte) error {
	if len(data) > MaxDecodedSize {
		return tooLarge("the bootstrap Secret's value")
	}
	return nil
}

// Take charges n bytes decoded for what (a field of the bootstrap data).
func (b *Budget) Take(n int, what string) error {
	if int64(n) > MaxDecodedSize-b.used {
		return tooLarge(what)
	}
	b.used += int64(n)
	return nil
}

// Gunzip decompresses the gzip data of what and charges what it decompresses to. It first counts the decompressed
// bytes without keeping them, stopping as soon as they exceed what is left, and only then decompresses into a
// buffer of that size: a gzip bomb costs time bounded by the budget, and no memory.
func (b *Budget) Gunzip(data []byte, what string) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	left := MaxDecodedSize - b.used
	n, err := io.Copy(io.Discard, io.LimitReader(zr, left+1))
	if err != nil {
		return nil, err
	}
	if n > left {
		return nil, tooLarge(what)
	}
	if err := zr.Reset(bytes.NewReader(data)); err != nil {
		return nil, err
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(zr, out); err != nil {
		return nil, err
	}
	b.used += n
	return out, nil
}

// yamlNodeCost is what one YAML node costs beyond its text once decoded (map and slice entries, interfaces, the
// JSON it is converted to): a document of many tiny aliased nodes is as large as one of long strings.
const yamlNodeCost = 64

// checkYAMLSize refuses a YAML document whose aliases expand it past MaxDecodedSize: the YAML decoder copies an
// anchored node at every alias, so a small document can decode to gigabytes. It reads the document as a node tree,
// which keeps aliases as they are, and adds up each node's expanded size once.
func checkYAMLSize(body string) error {
	var doc yaml3.Node
	if err := yaml3.Unmarshal([]byte(body), &doc); err != nil {
		return fmt.Errorf("%w: the cloud-config is not valid YAML: %w", ErrUnsupported, err)
	}
	sizes := map[*yaml3.Node]int64{}
	var size func(n *yaml3.Node, depth int) (int64, error)
	size = func(n *yaml3.Node, depth int) (int64, error) {
		if n == nil {
			return 0, nil
		}
		if s, ok := sizes[n]; ok {
			if s < 0 {
				return 0, fmt.Errorf("%w: the cloud-config has an alias to a node that contains it", ErrUnsupported)
			}
			return s, nil
		}
		if depth > 10000 {
			return 0, fmt.Errorf("%w: the cloud-config nests more than 10000 levels deep", ErrUnsupported)
		}
		sizes[n] = -1
		total := int64(yamlNodeCost + len(n.Value))
		children := n.Content
		if n.Kind == yaml3.AliasNode {
			children = []*yaml3.Node{n.Alias}
		}
		for _, c := range children {
			s, err := size(c, depth+1)
			if err != nil {
				return 0, err
			}
			if total += s; total > MaxDecodedSize {
				return 0, tooLarge("the cloud-config's YAML, its aliases expanded")
			}
		}
		sizes[n] = total
		return total, nil
	}
	_, err := size(&doc, 0)
	return err
}
