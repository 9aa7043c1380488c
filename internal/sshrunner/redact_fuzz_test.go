package sshrunner

import (
	"strings"
	"testing"
)

// FuzzRedact checks that a token-like value inside a secret (a bootstrap token, a key line, a certificate key) never
// survives redaction of a line that contains it, whatever surrounds it, and that redaction never panics.
func FuzzRedact(f *testing.F) {
	f.Add("token: abcdef.0123456789abcdef\n", "abcdef.0123456789abcdef", "joining with ", " now")
	f.Add("certificateKey: \"8f3c2a9d4e5b6a7c8d9e0f1a2b3c4d5e\"", "8f3c2a9d4e5b6a7c8d9e0f1a2b3c4d5e", "--certificate-key=", "")
	f.Add("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ", "x", "y")
	f.Fuzz(func(t *testing.T, secret, value, before, after string) {
		r := newRedactor([]string{secret})
		line := before + value + after
		out := r.Replace(line)
		if !strings.Contains(secret, value) {
			return
		}
		if containsWord(secretWords(secret), value) && strings.Contains(out, value) {
			t.Fatalf("value %q of the secret survived in %q", value, out)
		}
		// The token shape is matched as a word: not glued to other letters or digits.
		standalone := !endsWithWordChar(before) && !startsWithWordChar(after)
		if standalone && value != "" && bootstrapToken.FindString(value) == value && strings.Contains(out, value) {
			t.Fatalf("bootstrap token %q survived in %q", value, out)
		}
	})
}

func containsWord(words []string, w string) bool {
	for _, x := range words {
		if x == w {
			return true
		}
	}
	return false
}

func isWordChar(b byte) bool {
	return b == '_' || (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')
}

func endsWithWordChar(s string) bool   { return s != "" && isWordChar(s[len(s)-1]) }
func startsWithWordChar(s string) bool { return s != "" && isWordChar(s[0]) }
