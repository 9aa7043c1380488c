package webhooks

import (
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// validateAddress checks that address is an IP address or a DNS name.
func validateAddress(path *field.Path, address string) field.ErrorList {
	if address == "" || net.ParseIP(address) != nil {
		return nil
	}
	if msgs := validation.IsDNS1123Subdomain(strings.ToLower(address)); len(msgs) > 0 {
		return field.ErrorList{field.Invalid(path, address,
			"must be an IPv4 or IPv6 address or a DNS name (without port or scheme): "+strings.Join(msgs, "; "))}
	}
	return nil
}

// validateHostKeys checks that every entry is one public key in authorized_keys format.
func validateHostKeys(path *field.Path, keys []string) field.ErrorList {
	var errs field.ErrorList
	for i, k := range keys {
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil || len(strings.TrimSpace(string(rest))) > 0 {
			errs = append(errs, field.Invalid(path.Index(i), k,
				"must be one public host key in authorized_keys format, e.g. the output of 'ssh-keyscan -t ed25519 HOST' without the host name: 'ssh-ed25519 AAAA...'"))
		}
	}
	return errs
}

// validateRemoteHost checks the fields of a host that the API schema cannot: address syntax and host keys.
func validateRemoteHost(path *field.Path, h *infrav1.RemoteHost) field.ErrorList {
	errs := validateAddress(path.Child("address"), h.Address)
	errs = append(errs, validateHostKeys(path.Child("hostKeys"), h.HostKeys)...)
	if h.HostKeyPolicy == infrav1.HostKeyPolicyStrict && len(h.HostKeys) == 0 && h.Address != "" {
		errs = append(errs, field.Required(path.Child("hostKeys"),
			"hostKeyPolicy Strict needs at least one pinned host key; add the host's key or use hostKeyPolicy AcceptNew"))
	}
	if b := h.Bastion; b != nil {
		bp := path.Child("bastion")
		errs = append(errs, validateAddress(bp.Child("address"), b.Address)...)
		errs = append(errs, validateHostKeys(bp.Child("hostKeys"), b.HostKeys)...)
		if b.HostKeyPolicy == infrav1.HostKeyPolicyStrict && len(b.HostKeys) == 0 {
			errs = append(errs, field.Required(bp.Child("hostKeys"),
				"hostKeyPolicy Strict needs at least one pinned host key for the bastion; add it or use AcceptNew"))
		}
	}
	return errs
}

// invalid turns a field.ErrorList into the one Invalid error admission returns, or nil.
func invalid(kind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(infrav1.GroupVersion.WithKind(kind).GroupKind(), name, errs)
}
