package sshrunner

import (
	"fmt"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// TestRedactionCostsNothingWithoutSecrets: every line used to go through the replacer, which copies it whole,
// however many secrets there are. A line that cannot hold a needle (none of its 8-byte windows starts one) now
// costs one pass and no allocation, and a line that holds one is still redacted.
func TestRedactionCostsNothingWithoutSecrets(t *testing.T) {
	g := NewWithT(t)
	var secrets []string
	for i := 0; i < 2000; i++ {
		secrets = append(secrets, fmt.Sprintf("secret-value-%04d-k3y", i))
	}
	r := newRedactor(secrets)
	line := strings.Repeat("[kubelet-start] waiting for the kubelet to perform the TLS Bootstrap ", 900)
	g.Expect(testing.AllocsPerRun(20, func() { _ = r.Replace(line) })).To(BeZero())
	g.Expect(r.Replace(line + "secret-value-1234-k3y")).To(HaveSuffix(" " + redacted))
}
