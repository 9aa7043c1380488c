package pool

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzEndpoint checks that the host key an entry is locked under is stable: normalising a normalised endpoint
// changes nothing, and an IP address keeps naming the same address.
func FuzzEndpoint(f *testing.F) {
	f.Add("fd00:0010:0000:0000:0000:0000:0000:0007", int32(22))
	f.Add("::ffff:10.0.0.1", int32(2222))
	f.Add("Host.Example.COM.", int32(0))
	f.Add("fe80::1%eth0", int32(22))
	f.Fuzz(func(t *testing.T, address string, port int32) {
		if port < 0 || port > 65535 {
			return
		}
		// Admission accepts only IP addresses and DNS names; nothing else is ever locked.
		trimmed := strings.TrimRight(strings.ToLower(address), ".")
		if net.ParseIP(trimmed) == nil && len(validation.IsDNS1123Subdomain(trimmed)) > 0 {
			return
		}
		e := Endpoint(address, port)
		host, p, err := net.SplitHostPort(e)
		if err != nil {
			// Only addresses that are neither IPs nor DNS names (refused by validation) may not split.
			return
		}
		n, _ := strconv.Atoi(p)
		if again := Endpoint(host, int32(n)); again != e {
			t.Fatalf("not stable: %q -> %q -> %q", address, e, again)
		}
		if ip := net.ParseIP(address); ip != nil {
			if got := net.ParseIP(host); got == nil || !got.Equal(ip) {
				t.Fatalf("%q normalised to %q, another address", address, host)
			}
		}
	})
}
