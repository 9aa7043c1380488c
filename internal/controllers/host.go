package controllers

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// HostService is what the controllers need of hosts: every SSH connection goes through it. The real one is
// *sshhost.Service; tests of the fast tier pass a *fakehost.Service. Key acceptance and pinning stay controller
// logic over Scan.
type HostService interface {
	// Scan reads the key a host presents (or its bastion's, when that is not pinned yet) without logging in.
	Scan(ctx context.Context, cfg sshrunner.Config) (host.ScanResult, error)
	// Bootstrap runs bootstrap data on a host at most once per identity.
	Bootstrap(ctx context.Context, in host.BootstrapRequest) (*host.BootstrapResult, error)
	// Adopt reports the finished bootstrap of identity the host holds, and runs nothing (clusterctl move).
	Adopt(ctx context.Context, cfg sshrunner.Config, identity string) (*host.BootstrapResult, error)
	// Cleanup cleans a host whose marker names the identity; it returns the new host keys when it regenerated them.
	Cleanup(ctx context.Context, in host.CleanupRequest) ([]string, error)
	// Facts logs in, checks CAPR's prerequisites and measures the host.
	Facts(ctx context.Context, cfg sshrunner.Config) (*host.Facts, error)
}

// ErrMissingSecret marks a Secret that a host's connection needs and that does not exist, lacks its key, or holds
// a key that cannot be used.
var ErrMissingSecret = fmt.Errorf("secret missing")

// hostConfig builds the SSH configuration of a host, reading its key Secrets directly from the apiserver (never
// cached). secrets collects strings that must never be logged.
func hostConfig(ctx context.Context, reader client.Reader, namespace string, h *infrav1.RemoteHost, log logr.Logger) (sshrunner.Config, []string, error) {
	signer, secrets, err := readKey(ctx, reader, namespace, h.SSHKeyRef)
	if err != nil {
		return sshrunner.Config{}, nil, err
	}
	cfg := sshrunner.Config{
		Endpoint: sshrunner.Endpoint{
			Address: h.Address, Port: int(h.Port), User: h.User, Signer: signer,
			HostKeys: h.HostKeys,
		},
		Sudo: h.UseSudo,
		Log:  log,
	}
	if b := h.Bastion; b != nil {
		ref := b.SSHKeyRef
		bsigner, bsecrets, err := readKey(ctx, reader, namespace, &ref)
		if err != nil {
			return sshrunner.Config{}, nil, fmt.Errorf("bastion: %w", err)
		}
		secrets = append(secrets, bsecrets...)
		cfg.Bastion = &sshrunner.Endpoint{
			Address: b.Address, Port: int(b.Port), User: b.User, Signer: bsigner,
			HostKeys: b.HostKeys,
		}
	}
	cfg.Secrets = secrets
	return cfg, secrets, nil
}

func readKey(ctx context.Context, reader client.Reader, namespace string, ref *infrav1.SecretReference) (ssh.Signer, []string, error) {
	if ref == nil {
		return nil, nil, fmt.Errorf("%w: no sshKeyRef", ErrMissingSecret)
	}
	s := &corev1.Secret{}
	if err := reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Errorf("%w: Secret %s/%s (sshKeyRef) does not exist", ErrMissingSecret, namespace, ref.Name)
		}
		return nil, nil, err
	}
	key := s.Data["value"]
	if len(key) == 0 {
		return nil, nil, fmt.Errorf("%w: Secret %s/%s has no data key 'value' holding the SSH private key", ErrMissingSecret, namespace, ref.Name)
	}
	signer, err := sshrunner.ParsePrivateKey(key, s.Data["passphrase"])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: Secret %s/%s: %w", ErrMissingSecret, namespace, ref.Name, err)
	}
	secrets := []string{string(key)}
	if p := s.Data["passphrase"]; len(p) > 0 {
		secrets = append(secrets, string(p))
	}
	return signer, secrets, nil
}

// needsPin says whether a host's key, or its bastion's, is still to be pinned.
func needsPin(h *infrav1.RemoteHost) bool {
	return len(h.HostKeys) == 0 || (h.Bastion != nil && len(h.Bastion.HostKeys) == 0)
}

// pin records a scanned key in h, the way its hostKeyPolicy allows: AcceptNew pins the first key seen; Strict
// never pins, and a host without keys under it is an error. The key is pinned in spec, and stored, before any
// connection carries data or a command: every later connection (bootstrap, retries, cleanup, adoption, the probe)
// requires it.
func pin(h *infrav1.RemoteHost, res host.ScanResult) error {
	if res.Bastion {
		b := h.Bastion
		if b == nil || len(b.HostKeys) > 0 {
			return nil
		}
		if b.HostKeyPolicy == infrav1.HostKeyPolicyStrict {
			return fmt.Errorf("%w: the bastion presented %s and its hostKeyPolicy is Strict with no hostKeys pinned; add the bastion's key to bastion.hostKeys",
				sshrunner.ErrHostKeyUnknown, fingerprint(res.Key))
		}
		b.HostKeys = []string{res.Key}
		return nil
	}
	if len(h.HostKeys) > 0 {
		return nil
	}
	if h.HostKeyPolicy == infrav1.HostKeyPolicyStrict {
		return fmt.Errorf("%w: the host presented %s and hostKeyPolicy is Strict with no hostKeys pinned; add the host's key to hostKeys",
			sshrunner.ErrHostKeyUnknown, fingerprint(res.Key))
	}
	h.HostKeys = []string{res.Key}
	return nil
}

// fingerprint returns a key's type and SHA-256 fingerprint, or the key itself if it does not parse.
func fingerprint(key string) string {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
	if err != nil {
		return key
	}
	return pk.Type() + " " + ssh.FingerprintSHA256(pk)
}

// fingerprints returns fingerprint of each key.
func fingerprints(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fingerprint(k)
	}
	return out
}
