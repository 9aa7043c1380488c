package webhooks

import (
	"fmt"
	"regexp"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// fingerprintPattern is a SHA-256 key fingerprint as ssh-keygen -l prints it: unpadded base64 of 32 bytes.
var fingerprintPattern = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)

var acceptHostKeyPath = field.NewPath("metadata", "annotations").Key(infrav1.AcceptHostKeyAnnotation)

// recordAcceptedBy makes the accept-host-key-by annotation say who set the accept-host-key annotation: the
// requesting user when it is set or changed, the stored value when it is not, nothing once it is removed. A value
// set by hand is overwritten, so the record cannot be forged.
func recordAcceptedBy(username string, old map[string]string, m client.Object) {
	a := m.GetAnnotations()
	value, set := a[infrav1.AcceptHostKeyAnnotation]
	oldValue, wasSet := old[infrav1.AcceptHostKeyAnnotation]
	switch {
	case !set:
		if _, ok := a[infrav1.AcceptHostKeyByAnnotation]; ok {
			delete(a, infrav1.AcceptHostKeyByAnnotation)
			m.SetAnnotations(a)
		}
	case !wasSet || value != oldValue:
		a[infrav1.AcceptHostKeyByAnnotation] = username
		m.SetAnnotations(a)
	default:
		if by, ok := old[infrav1.AcceptHostKeyByAnnotation]; ok {
			a[infrav1.AcceptHostKeyByAnnotation] = by
		} else {
			delete(a, infrav1.AcceptHostKeyByAnnotation)
		}
		m.SetAnnotations(a)
	}
}

// acceptHostKeyChanged says whether m sets the accept-host-key annotation to a value the stored object (old, nil on
// create) does not hold.
func acceptHostKeyChanged(old map[string]string, m client.Object) bool {
	value, set := m.GetAnnotations()[infrav1.AcceptHostKeyAnnotation]
	oldValue, wasSet := old[infrav1.AcceptHostKeyAnnotation]
	return set && (!wasSet || value != oldValue)
}

// validateAcceptHostKey refuses an accept-host-key annotation, set or changed, that is not a SHA-256 fingerprint.
// resource is what kubectl calls the kind (remotemachine, pooledremotemachine).
func validateAcceptHostKey(resource string, old map[string]string, m client.Object) field.ErrorList {
	if !acceptHostKeyChanged(old, m) {
		return nil
	}
	value := m.GetAnnotations()[infrav1.AcceptHostKeyAnnotation]
	if fingerprintPattern.MatchString(value) {
		return nil
	}
	return field.ErrorList{field.Invalid(acceptHostKeyPath, value, fmt.Sprintf(
		"must be the SHA-256 fingerprint of the host key to accept, as ssh-keygen -l prints it and the HostKeyMismatch condition names it: "+
			"SHA256: followed by 43 base64 characters; copy it from the condition (kubectl describe %s %s -n %s), check it on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then: "+
			"kubectl annotate --overwrite %s %s -n %s %s=SHA256:...",
		resource, m.GetName(), m.GetNamespace(), resource, m.GetName(), m.GetNamespace(), infrav1.AcceptHostKeyAnnotation))}
}
