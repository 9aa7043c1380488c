package host

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"

	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
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
			got, err := CheckHostname(tc.reported)
			g.Expect(got).To(Equal(tc.want))
			g.Expect(err != nil).To(Equal(tc.want == ""))
			if err != nil {
				g.Expect(len(err.Error())).To(BeNumerically("<", 512))
			}
		})
	}
}

// TestParseHostKeyLines reads the keys hostkeys.sh prints in pieces, and refuses what is not a key of the named type
// or more keys than an entry pins.
func TestParseHostKeyLines(t *testing.T) {
	g := NewWithT(t)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMBRNGdwJtXBkLOD2GQqtH6atsCQI0MACXSTooMtRa46"
	pieces := "capr-host-key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMBRNGdw JtXBkLOD2GQqtH6atsCQI0MACXSTooMt Ra46 "
	keys, err := ParseHostKeyLines("noise\n" + pieces + "\n" + pieces + "\n")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(keys).To(Equal([]string{key}), "read once, whatever the pieces")

	for name, out := range map[string]string{
		"none":       "capr: done\n",
		"no key":     "capr-host-key=ssh-ed25519\n",
		"not base64": "capr-host-key=ssh-ed25519 !!!!\n",
		"wrong type": "capr-host-key=ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMBRNGdwJtXBkLOD2GQqtH6atsCQI0MACXSTooMtRa46\n",
	} {
		_, err := ParseHostKeyLines(out)
		g.Expect(err).To(HaveOccurred(), name)
	}
	var many string
	for range MaxHostKeys + 1 {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		g.Expect(err).NotTo(HaveOccurred())
		sshPub, err := ssh.NewPublicKey(pub)
		g.Expect(err).NotTo(HaveOccurred())
		many += HostKeyMarker + string(ssh.MarshalAuthorizedKey(sshPub))
	}
	_, err = ParseHostKeyLines(many)
	g.Expect(err).To(MatchError(ContainSubstring("more than 16 host keys")))
}

// TestParseFacts reads what facts.sh prints, leaving out what is not a positive quantity or a known architecture.
func TestParseFacts(t *testing.T) {
	g := NewWithT(t)
	f := ParseFacts("noise\ncapr-fact cpu=4\n  capr-fact memory=16314336Ki\ncapr-fact arch=aarch64\ncapr-fact os=Linux\n")
	g.Expect(f.Capacity.Cpu().String()).To(Equal("4"))
	g.Expect(f.Capacity.Memory().String()).To(Equal("16314336Ki"))
	g.Expect(string(f.NodeInfo.Architecture)).To(Equal("arm64"))
	g.Expect(f.NodeInfo.OperatingSystem).To(Equal("linux"))

	f = ParseFacts("capr-fact cpu=-1\ncapr-fact memory=lots\ncapr-fact arch=vax\n")
	g.Expect(f.Capacity).To(BeNil(), "nothing measured")
	g.Expect(f.NodeInfo.Architecture).To(BeEmpty())
	g.Expect(ParseFacts("").Capacity).To(BeNil())
}

// TestValidMachineID accepts only systemd's shape of /etc/machine-id.
func TestValidMachineID(t *testing.T) {
	g := NewWithT(t)
	id := strings.Repeat("0123456789abcdef", 2)
	g.Expect(ValidMachineID(" " + id + "\n")).To(Equal(id))
	for _, bad := range []string{"", strings.ToUpper(id), id + "0", id[:31], "[REDACTED]", "0123456789abcdef0123456789abcdeg"} {
		g.Expect(ValidMachineID(bad)).To(BeEmpty(), bad)
	}
}

// TestOutputLines reads the failed step, the last message and the missing prerequisites from a command's tail, and
// leaves CAPR's own markers out of what users read.
func TestOutputLines(t *testing.T) {
	g := NewWithT(t)
	tail := []string{HostnameMarker + "h1", MachineIDMarker + "x", "some output", StepMarker + "runcmd[1]: exit 4", "capr: the run failed", ""}
	g.Expect(FailedStep(tail)).To(Equal("runcmd[1]: exit 4"))
	g.Expect(FailedStep([]string{"x"})).To(Equal("(unknown)"))
	g.Expect(OutputTail(tail)).To(Equal("some output | capr: the run failed | "))
	g.Expect(OutputTail([]string{HostnameMarker + "h1"})).To(Equal("(none)"))
	g.Expect(LastLine(tail)).To(Equal("the run failed"))
	g.Expect(LastLine(nil)).To(Equal("(no output)"))
	g.Expect(MissingPrerequisites([]string{"x", MissingMarker + " flock tail-with---pid(GNU-coreutils)"})).To(Equal("flock tail-with---pid(GNU-coreutils)"))
	g.Expect(MissingPrerequisites(nil)).To(Equal("(unknown)"))
	g.Expect(PrerequisitesError("flock")).To(MatchError(ErrHostPrerequisites))
	g.Expect(PrerequisitesError("flock").Error()).To(ContainSubstring("missing flock"))
}

// TestContractErrors wraps each outcome in its sentinel and names the files to look at.
func TestContractErrors(t *testing.T) {
	g := NewWithT(t)
	g.Expect(AlreadyBootstrappedError()).To(MatchError(ErrHostAlreadyBootstrapped))
	g.Expect(AlreadyBootstrappedError().Error()).To(ContainSubstring(MarkerFile))
	g.Expect(StepFailedError([]string{StepMarker + "s1"})).To(MatchError(ContainSubstring("step s1 failed")))
	g.Expect(errors.Is(StepFailedError(nil), ErrBootstrapFailed)).To(BeTrue())
	g.Expect(errors.Is(RefusedError(nil), ErrBootstrapFailed)).To(BeTrue())
	g.Expect(errors.Is(DiskFullError("/tmp", nil), ErrHostDiskFull)).To(BeTrue())
	g.Expect(NotAdoptableError("ns/m1/uid-1")).To(MatchError(ContainSubstring("(UID uid-1)")))
	g.Expect(errors.Is(NotAdoptableError("ns/m1/uid-1"), ErrBootstrapNotFound)).To(BeTrue())
	g.Expect(errors.Is(ForeignCleanupError(nil), ErrForeignBootstrap)).To(BeTrue())
	g.Expect(errors.Is(ConnectionLostError("during the cleanup"), sshrunner.ErrUnreachable)).To(BeTrue())
}
