package controllers

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// reportedHostname returns the host name a host reported (capr-hostname=, or hostname's output), lower-cased as
// the kubelet does, when it is a DNS subdomain (RFC 1123: lower-case letters, digits, '-' and '.', at most 253
// characters); otherwise "" (the name is not put in status.addresses nor used to find the Node), and the host's
// text is logged, cut and already redacted, saying why it was not used.
func reportedHostname(ctx context.Context, reported string) string {
	name, err := checkHostname(reported)
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("The host reported an invalid host name; it is not used", "reason", err.Error())
		return ""
	}
	return name
}

// checkHostname validates a host name reported by a host; the error quotes it cut to 64 bytes.
func checkHostname(reported string) (string, error) {
	name := strings.ToLower(strings.TrimSpace(reported))
	if name == "" {
		return "", fmt.Errorf("the host reported no host name")
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", fmt.Errorf("the host reported the host name %q, which is not a DNS subdomain (RFC 1123): %s",
			sshrunner.Truncate(name, 64), sshrunner.Truncate(strings.Join(errs, "; "), 256))
	}
	return name, nil
}
