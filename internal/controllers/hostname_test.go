package controllers

import (
	"fmt"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

func TestCheckHostname(t *testing.T) {
	for i, tc := range []struct {
		reported, want string
	}{
		{"node-1", "node-1"},
		{" Worker-1.Example.COM\n", "worker-1.example.com"},
		{"bad_name", ""},
		{"x; true", ""},
		{"[REDACTED]", ""},
		{"", ""},
		{strings.Repeat("a", 254), ""},
		{"-leading-dash", ""},
	} {
		t.Run(fmt.Sprintf("case%d", i), func(t *testing.T) {
			g := NewWithT(t)
			got, err := checkHostname(tc.reported)
			g.Expect(got).To(Equal(tc.want))
			g.Expect(err != nil).To(Equal(tc.want == ""))
			if err != nil {
				g.Expect(len(err.Error())).To(BeNumerically("<", 512))
			}
		})
	}
}
