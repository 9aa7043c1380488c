package sshrunner

import (
	"encoding/base64"
	"index/suffixarray"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unsafe"
)

// redactor hides secrets in text: every secret, each of its lines, each value inside it that looks like key
// material or a token (see secretWords), and their base64 forms, wherever they appear in a line; a whole line that
// is a piece of a secret or of its base64 form (a secret re-wrapped across lines); and, secret or not, anything
// shaped like a kubeadm bootstrap token and any long base64 or hex run (certificate keys, k0s join tokens). It is
// built once per connection; a line costs a pass proportional to its length.
type redactor struct {
	r *strings.Replacer
	// prefixes holds the first 8 bytes of every needle: a line none of whose 8-byte windows is here holds no needle,
	// and skips the replacer (which copies every line it is given).
	prefixes map[uint64]struct{}
	// longest is the length of the longest needle.
	longest int
	// corpus indexes the secrets, to find lines that are a piece of one.
	corpus *suffixarray.Index
}

const redacted = "[REDACTED]"

const (
	// minNeedle is the shortest secret, or line of a secret, that is redacted; values inside secrets and base64
	// forms need minPiece.
	minNeedle = 8
	minPiece  = 16
	// maxEncoded is the longest secret whose base64 forms become needles; the base64 form of a longer one is a run
	// that minRun redacts anyway.
	maxEncoded = 1024
	// minRun is the length from which a run of base64 or hex characters (with a digit) is redacted, secret or not.
	minRun = 64
	// maxCorpus bounds the secrets indexed for the piece-of-a-secret check.
	maxCorpus = 4 << 20
)

// bootstrapToken is the shape of a kubeadm bootstrap token ("abcdef.0123456789abcdef").
var bootstrapToken = regexp.MustCompile(`\b[a-z0-9]{6}\.[a-z0-9]{16}\b`)

func newRedactor(secrets []string) *redactor {
	r := &redactor{prefixes: map[uint64]struct{}{}}
	var needles []string
	seen := map[string]bool{}
	add := func(s string, minLen int) {
		s = strings.TrimSpace(s)
		if len(s) < minLen || seen[s] {
			return
		}
		seen[s] = true
		needles = append(needles, s)
	}
	var corpus []byte
	for _, s := range secrets {
		values := []string{s}
		values = append(values, strings.Split(s, "\n")...)
		for i, v := range values {
			add(v, minNeedle)
			if i == 0 {
				for _, w := range secretWords(s) {
					add(w, minPiece)
					values = append(values, w)
				}
			}
		}
		for _, v := range values {
			if v = strings.TrimSpace(v); len(v) >= minNeedle && len(v) <= maxEncoded {
				for _, e := range base64Forms(v) {
					add(e, minPiece)
				}
			}
		}
		if len(corpus)+len(s) < maxCorpus {
			corpus = append(append(corpus, s...), 0)
		}
	}
	// Longer first: a secret that contains another is replaced whole.
	sort.SliceStable(needles, func(i, j int) bool { return len(needles[i]) > len(needles[j]) })
	pairs := make([]string, 0, 2*len(needles))
	for _, n := range needles {
		pairs = append(pairs, n, redacted)
		r.prefixes[window(n, 0)] = struct{}{}
		r.longest = max(r.longest, len(n))
	}
	if len(pairs) > 0 {
		r.r = strings.NewReplacer(pairs...)
	}
	if len(corpus) > 0 {
		r.corpus = suffixarray.New(corpus)
	}
	return r
}

// base64Forms returns the parts of a value's base64 encodings (standard and URL alphabets, at the three byte
// alignments it can have inside a longer encoded text) that do not depend on the bytes around it.
func base64Forms(v string) []string {
	var out []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for offset := 0; offset < 3; offset++ {
			e := enc.EncodeToString(append(make([]byte, offset), v...))
			start, end := 0, (offset+len(v))/3*4
			if offset > 0 {
				start = 4
			}
			if end-start >= minPiece {
				out = append(out, e[start:end])
			}
		}
	}
	return out
}

// window returns the 8 bytes of s at i as a number.
func window(s string, i int) uint64 {
	var w uint64
	for j := 0; j < 8; j++ {
		w |= uint64(s[i+j]) << (8 * j)
	}
	return w
}

// mayHold says whether s can contain a needle: some 8-byte window of it starts one.
func (r *redactor) mayHold(s string) bool {
	if r.r == nil {
		return false
	}
	for i := 0; i+8 <= len(s); i++ {
		if _, ok := r.prefixes[window(s, i)]; ok {
			return true
		}
	}
	return false
}

// Replace returns s with every secret replaced by [REDACTED].
func (r *redactor) Replace(s string) string {
	if r.pieceOfSecret(s) {
		return redacted
	}
	if r.mayHold(s) {
		s = r.r.Replace(s)
	}
	if len(s) >= 23 && strings.IndexByte(s, '.') >= 0 {
		s = bootstrapToken.ReplaceAllString(s, redacted)
	}
	return redactRuns(s)
}

// ReplaceCut redacts the first part of a line that was cut: the end of the part, where a secret may begin and be
// cut short, is dropped before redaction.
func (r *redactor) ReplaceCut(s string) string {
	s = s[:len(s)-min(len(s), max(r.longest, minRun), 4096)]
	s = strings.TrimRightFunc(s, func(c rune) bool { return c < 128 && runeChar[c] })
	return r.Replace(s) + "… (line cut)"
}

// pieceOfSecret says whether a whole line (trimmed) of 16 or more characters is a part of a secret, or decodes, as
// base64 at any alignment, to a part of one: a secret printed re-wrapped, or base64-encoded and wrapped.
func (r *redactor) pieceOfSecret(line string) bool {
	t := strings.TrimSpace(line)
	if r.corpus == nil || len(t) < minPiece || len(t) > len(r.corpus.Bytes()) {
		return false
	}
	// Lookup only reads the bytes: no copy of the line.
	if len(r.corpus.Lookup(unsafe.Slice(unsafe.StringData(t), len(t)), 1)) > 0 { //nolint:gosec // a read-only view of t, not kept past the call
		return true
	}
	body := strings.TrimRight(t, "=")
	for i := 0; i < len(body); i++ {
		if c := body[i]; c >= 128 || !runeChar[c] {
			return false
		}
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for k := 0; k < 4; k++ {
			seg := body[k:]
			seg = seg[:len(seg)/4*4]
			if len(seg) < 12 {
				continue
			}
			if dec, err := enc.DecodeString(seg); err == nil && len(r.corpus.Lookup(dec, 1)) > 0 {
				return true
			}
		}
	}
	return false
}

// runeChar marks the characters of base64 (both alphabets), which hex is part of.
var runeChar = func() (t [128]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_" {
		t[c] = true
	}
	return t
}()

// redactRuns replaces every run of minRun or more base64 characters that holds a digit (key material, certificate
// keys, k0s tokens), except a sha256 digest ("sha256:" and 64 hex digits: a CA hash or image digest, no secret).
func redactRuns(s string) string {
	var b *strings.Builder
	last := 0
	for i := 0; i < len(s); {
		if c := s[i]; c >= 128 || !runeChar[c] {
			i++
			continue
		}
		j, digit := i, false
		for j < len(s) && s[j] < 128 && runeChar[s[j]] {
			digit = digit || (s[j] >= '0' && s[j] <= '9')
			j++
		}
		end := j
		for end < len(s) && end-j < 2 && s[end] == '=' {
			end++
		}
		if j-i >= minRun && digit && !isDigest(s, i, j) {
			if b == nil {
				b = &strings.Builder{}
			}
			b.WriteString(s[last:i])
			b.WriteString(redacted)
			last = end
		}
		i = end
	}
	if b == nil {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// isDigest says whether s[i:j] is the 64 hex digits of a "sha256:" digest.
func isDigest(s string, i, j int) bool {
	if j-i != 64 || !strings.HasSuffix(s[:i], "sha256:") {
		return false
	}
	return strings.IndexFunc(s[i:j], func(c rune) bool { return !unicode.Is(unicode.ASCII_Hex_Digit, c) }) < 0
}

// secretWords returns the values inside a secret that look like key material or tokens: runs of 16 or more
// characters between separators (space, quotes, and ,;:=()[]{}<>|&) that mix letters and digits, except file
// paths (starting with /) shorter than 40 characters.
func secretWords(s string) []string {
	words := strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || strings.ContainsRune("'\"`,;:=()[]{}<>|&", r)
	})
	var out []string
	for _, w := range words {
		if len(w) < 16 || (strings.HasPrefix(w, "/") && len(w) < 40) {
			continue
		}
		if strings.ContainsFunc(w, unicode.IsDigit) && strings.ContainsFunc(w, unicode.IsLetter) {
			out = append(out, w)
		}
	}
	return out
}
