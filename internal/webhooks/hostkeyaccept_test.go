//go:build integration

package webhooks_test

import (
	"context"
	"fmt"
	"testing"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestAcceptHostKeyAnnotationAdmission: the accept-host-key annotation must be a SHA-256 fingerprint; admission
// records who set it in accept-host-key-by, which cannot be forged; a claimed entry points at its RemoteMachine; and
// only CAPR replaces a claimed entry's pinned keys.
func TestAcceptHostKeyAnnotationAdmission(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 2, nil)
	as := func(user string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:masters"}}
		c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
		g.Expect(err).NotTo(HaveOccurred())
		return c
	}
	alice, bob := as("alice"), as("bob")
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(testenv.HostKey))
	g.Expect(err).NotTo(HaveOccurred())
	fp := ssh.FingerprintSHA256(pk)
	other := "SHA256:" + "A23456789012345678901234567890123456789012B"[:43]
	annotate := func(c client.Client, obj client.Object, key, value string) error {
		v := "null"
		if value != "" {
			v = fmt.Sprintf("%q", value)
		}
		return c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, key, v))))
	}
	m := testenv.NewPooledMachine(ns, "m", "default")
	g.Expect(alice.Create(ctx, m)).To(Succeed())
	rm := func() *infrav1.RemoteMachine {
		out := &infrav1.RemoteMachine{}
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(m), out)).To(Succeed())
		return out
	}

	// Not a fingerprint: refused, naming the annotation and the fix.
	for _, bad := range []string{"yes", "SHA256:short", "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48", " " + fp} {
		err := annotate(alice, rm(), infrav1.AcceptHostKeyAnnotation, bad)
		g.Expect(err).To(MatchError(ContainSubstring("metadata.annotations[" + infrav1.AcceptHostKeyAnnotation + "]: Invalid value")))
		g.Expect(err).To(MatchError(ContainSubstring("as ssh-keygen -l prints it")))
		g.Expect(err).To(MatchError(ContainSubstring("kubectl annotate --overwrite remotemachine m -n " + ns + " " + infrav1.AcceptHostKeyAnnotation + "=SHA256:...")))
		if bad == "yes" {
			t.Logf("refused: %v", err)
		}
	}

	// Who set it is recorded, and cannot be forged.
	g.Expect(annotate(alice, rm(), infrav1.AcceptHostKeyAnnotation, fp)).To(Succeed())
	g.Expect(rm().Annotations).To(HaveKeyWithValue(infrav1.AcceptHostKeyByAnnotation, "alice"))
	g.Expect(annotate(bob, rm(), infrav1.AcceptHostKeyByAnnotation, "mallory")).To(Succeed())
	g.Expect(rm().Annotations).To(HaveKeyWithValue(infrav1.AcceptHostKeyByAnnotation, "alice"), "a hand-set value is overwritten")
	g.Expect(annotate(bob, rm(), infrav1.AcceptHostKeyByAnnotation, "")).To(Succeed())
	g.Expect(rm().Annotations).To(HaveKeyWithValue(infrav1.AcceptHostKeyByAnnotation, "alice"))
	g.Expect(annotate(bob, rm(), infrav1.AcceptHostKeyAnnotation, other)).To(Succeed())
	g.Expect(rm().Annotations).To(HaveKeyWithValue(infrav1.AcceptHostKeyByAnnotation, "bob"), "a new value is bob's")
	g.Expect(annotate(bob, rm(), infrav1.AcceptHostKeyAnnotation, "")).To(Succeed())
	g.Expect(rm().Annotations).NotTo(HaveKey(infrav1.AcceptHostKeyByAnnotation), "removed with it")
	g.Expect(annotate(bob, rm(), infrav1.AcceptHostKeyByAnnotation, "mallory")).To(Succeed())
	g.Expect(rm().Annotations).NotTo(HaveKey(infrav1.AcceptHostKeyByAnnotation), "nothing to record")

	// A RemoteMachine created with it: the creator is recorded.
	direct := testenv.NewPooledMachine(ns, "direct", "")
	direct.Spec.Address, direct.Spec.SSHKeyRef = "10.0.0.99", &infrav1.SecretReference{Name: "key"}
	direct.Annotations = map[string]string{infrav1.AcceptHostKeyAnnotation: fp, infrav1.AcceptHostKeyByAnnotation: "mallory"}
	g.Expect(bob.Create(ctx, direct)).To(Succeed())
	g.Expect(direct.Annotations).To(HaveKeyWithValue(infrav1.AcceptHostKeyByAnnotation, "bob"))

	// The claimed entry: the key is accepted on its RemoteMachine.
	claimed := getEntry(t, ns, rm().Spec.PooledRemoteMachineRef.Name)
	err = annotate(alice, claimed, infrav1.AcceptHostKeyAnnotation, fp)
	g.Expect(err).To(MatchError(ContainSubstring("the entry is claimed by RemoteMachine m")))
	t.Logf("refused: %v", err)
	g.Expect(err).To(MatchError(ContainSubstring("kubectl annotate remotemachine m -n " + ns + " " + infrav1.AcceptHostKeyAnnotation + "=" + fp)))
	// Only CAPR replaces a claimed entry's pinned keys (when the key is accepted on the RemoteMachine).
	newKeys := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"machine":{"hostKeys":[%q]}}}`, hostKeyB)))
	g.Expect(alice.Patch(ctx, getEntry(t, ns, claimed.Name), newKeys)).To(MatchError(ContainSubstring("machine cannot change while the entry is claimed by RemoteMachine m")))
	g.Expect(env.Client.Patch(ctx, getEntry(t, ns, claimed.Name), newKeys)).To(Succeed(), "CAPR's identity")
	g.Expect(getEntry(t, ns, claimed.Name).Spec.Machine.HostKeys).To(Equal([]string{hostKeyB}))

	// A free entry takes the annotation, validated and recorded the same way.
	free := "default-000"
	if claimed.Name == free {
		free = "default-001"
	}
	err = annotate(alice, getEntry(t, ns, free), infrav1.AcceptHostKeyAnnotation, "SHA256:nope")
	g.Expect(err).To(MatchError(ContainSubstring("kubectl annotate --overwrite pooledremotemachine " + free + " -n " + ns)))
	g.Expect(annotate(alice, getEntry(t, ns, free), infrav1.AcceptHostKeyAnnotation, fp)).To(Succeed())
	g.Expect(getEntry(t, ns, free).Annotations).To(HaveKeyWithValue(infrav1.AcceptHostKeyByAnnotation, "alice"))
	g.Expect(annotate(bob, getEntry(t, ns, free), infrav1.AcceptHostKeyByAnnotation, "mallory")).To(Succeed())
	g.Expect(getEntry(t, ns, free).Annotations).To(HaveKeyWithValue(infrav1.AcceptHostKeyByAnnotation, "alice"))
}

// hostKeyB is another valid ed25519 host key.
const hostKeyB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILpRKCHUdPVhqZSzhd1QdHyil3mkvO48vF2iOhO80d4E"
