package controllers

import (
	"context"
	"fmt"
	"io"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/sshrunner"
)

// Host is what the controllers need of a connection to a machine. The real one is an *sshrunner.Client.
type Host interface {
	Run(ctx context.Context, script string, stdin io.Reader) error
	Output(ctx context.Context, script string, stdin io.Reader) (string, error)
	Upload(ctx context.Context, path string, data []byte, mode uint32, owner string, appendTo bool) error
	Close() error
}

// Dialer connects to a host.
type Dialer func(ctx context.Context, cfg sshrunner.Config) (Host, error)

// DialSSH is the real Dialer.
func DialSSH(ctx context.Context, cfg sshrunner.Config) (Host, error) {
	c, err := sshrunner.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
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
			HostKeys: h.HostKeys, Policy: sshrunner.Policy(h.HostKeyPolicy),
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
			HostKeys: b.HostKeys, Policy: sshrunner.Policy(b.HostKeyPolicy),
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
