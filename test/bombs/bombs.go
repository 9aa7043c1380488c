// Package bombs makes small bootstrap data that decodes to a lot, for tests of CAPR's decoding budget.
package bombs

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"strings"
)

// Gzip returns size zero bytes gzip-compressed (about size/1000 bytes).
func Gzip(size int) []byte {
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	chunk := make([]byte, 1<<20)
	for size > 0 {
		k := min(size, len(chunk))
		_, _ = w.Write(chunk[:k]) // a bytes.Buffer never fails
		size -= k
	}
	_ = w.Close()
	return b.Bytes()
}

// CloudConfig is a cloud-config of files gzip+base64 write_files, each decompressing to size zero bytes.
func CloudConfig(files, size int) []byte {
	enc := base64.StdEncoding.EncodeToString(Gzip(size))
	var b strings.Builder
	b.WriteString("#cloud-config\nwrite_files:\n")
	for i := range files {
		fmt.Fprintf(&b, "- path: /var/lib/bomb/%d\n  encoding: gz+b64\n  content: %s\n", i, enc)
	}
	b.WriteString("runcmd:\n- touch /var/lib/bomb/ran\n")
	return []byte(b.String())
}

// Ignition is an Ignition config (spec 3.4.0) of files gzip-compressed data: URL files, each decompressing to size
// zero bytes.
func Ignition(files, size int) []byte {
	src := "data:;base64," + base64.StdEncoding.EncodeToString(Gzip(size))
	var b strings.Builder
	b.WriteString(`{"ignition":{"version":"3.4.0"},"storage":{"files":[`)
	for i := range files {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"path":"/var/lib/bomb/%d","contents":{"source":%q,"compression":"gzip"}}`, i, src)
	}
	b.WriteString("]}}")
	return []byte(b.String())
}
