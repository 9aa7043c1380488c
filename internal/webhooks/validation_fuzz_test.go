package webhooks

import (
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// FuzzValidateRemoteHost feeds the host validation arbitrary addresses, host keys and policies: it never panics,
// an address it accepts is an IP address or a DNS name, and a host key it accepts is exactly one public key that
// the SSH runner can use.
func FuzzValidateRemoteHost(f *testing.F) {
	f.Add("192.0.2.10", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "AcceptNew", "bastion.example.com")
	f.Add("ssh://host:22", "ssh-ed25519 not-a-key", "Strict", "")
	f.Add("fd00::1", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\nssh-rsa AAAA", "Strict", "bad_host!")
	f.Fuzz(func(t *testing.T, address, key, policy, bastion string) {
		h := &infrav1.RemoteHost{Address: address, HostKeys: []string{key}, HostKeyPolicy: infrav1.HostKeyPolicy(policy)}
		if bastion != "" {
			h.Bastion = &infrav1.Bastion{Address: bastion, HostKeys: []string{key}, SSHKeyRef: infrav1.SecretReference{Name: "k"}}
		}
		errs := validateRemoteHost(field.NewPath("spec"), h)
		if !hasErrorAt(errs, "spec.address") && address != "" && net.ParseIP(address) == nil &&
			len(validation.IsDNS1123Subdomain(strings.ToLower(address))) > 0 {
			t.Fatalf("accepted address %q", address)
		}
		if !hasErrorAt(errs, "spec.hostKeys[0]") {
			pk, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(key))
			if err != nil || pk == nil || strings.TrimSpace(string(rest)) != "" {
				t.Fatalf("accepted host key %q that the SSH runner cannot use: %v", key, err)
			}
		}
	})
}

func hasErrorAt(errs field.ErrorList, path string) bool {
	for _, e := range errs {
		if e.Field == path {
			return true
		}
	}
	return false
}
