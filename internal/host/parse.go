package host

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// MaxHostKeys is how many host keys a host may report, as many as spec.machine.hostKeys holds.
const MaxHostKeys = 16

// ParseHostKeyLines reads the public keys hostkeys.sh printed: "capr-host-key=<type> <base64 in pieces>", each
// returned once in authorized_keys format.
func ParseHostKeyLines(out string) ([]string, error) {
	var keys []string
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), HostKeyMarker)
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			return nil, fmt.Errorf("the host printed a malformed host key line %q", sshrunner.Truncate(line, 200))
		}
		raw, err := base64.StdEncoding.DecodeString(strings.Join(fields[1:], ""))
		if err != nil {
			return nil, fmt.Errorf("the host printed a %s host key that is not base64: %w", sshrunner.Truncate(fields[0], 64), err)
		}
		key, err := ssh.ParsePublicKey(raw)
		if err != nil || key.Type() != fields[0] {
			return nil, fmt.Errorf("the host printed a %s host key that does not parse as one", sshrunner.Truncate(fields[0], 64))
		}
		text := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
		if !slices.Contains(keys, text) {
			keys = append(keys, text)
		}
		if len(keys) > MaxHostKeys {
			return nil, fmt.Errorf("the host printed more than %d host keys", MaxHostKeys)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("regenerating the host's SSH host keys printed no key")
	}
	return keys, nil
}

// ParseFacts reads what facts.sh printed: the host's cpu and memory as a ResourceList, and its architecture and
// operating system by Kubernetes' names (kubernetes.io/arch, kubernetes.io/os). What cannot be read is left out.
func ParseFacts(out string) Facts {
	capacity := corev1.ResourceList{}
	var info infrav1.NodeInfo
	for _, line := range strings.Split(out, "\n") {
		kv, ok := strings.CutPrefix(strings.TrimSpace(line), FactMarker)
		if !ok {
			continue
		}
		key, value, _ := strings.Cut(kv, "=")
		switch key {
		case "cpu", "memory":
			if q, err := resource.ParseQuantity(value); err == nil && q.Sign() > 0 {
				capacity[corev1.ResourceName(key)] = q
			}
		case "arch":
			info.Architecture = architectures[value]
		case "os":
			info.OperatingSystem = strings.ToLower(value)
		}
	}
	if len(capacity) == 0 {
		capacity = nil
	}
	return Facts{Capacity: capacity, NodeInfo: info}
}

// architectures maps uname -m to the architectures Cluster API's autoscaling contract names.
var architectures = map[string]infrav1.Architecture{
	"x86_64":  infrav1.ArchitectureAmd64,
	"amd64":   infrav1.ArchitectureAmd64,
	"aarch64": infrav1.ArchitectureArm64,
	"arm64":   infrav1.ArchitectureArm64,
	"s390x":   infrav1.ArchitectureS390x,
	"ppc64le": infrav1.ArchitecturePpc64le,
}

// machineIDPattern is the shape of /etc/machine-id (systemd's machine-id(5)): 32 lower-case hex digits.
var machineIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ValidMachineID returns the machine-id a host reported, or "" when it is not one.
func ValidMachineID(s string) string {
	s = strings.TrimSpace(s)
	if machineIDPattern.MatchString(s) {
		return s
	}
	return ""
}

// CheckHostname validates a host name reported by a host (capr-hostname=, or hostname's output), lower-cased as the
// kubelet does: it must be a DNS subdomain (RFC 1123). The error quotes it cut to 64 bytes.
func CheckHostname(reported string) (string, error) {
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

// FailedStep returns the step of the plan the output names as failed, or "(unknown)".
func FailedStep(tail []string) string {
	for i := len(tail) - 1; i >= 0; i-- {
		if s, ok := strings.CutPrefix(tail[i], StepMarker); ok {
			return s
		}
	}
	return "(unknown)"
}

// OutputTail joins the last lines of a command's (redacted) output, without CAPR's own markers.
func OutputTail(lines []string) string {
	var keep []string
	for _, l := range lines {
		if !strings.HasPrefix(l, HostnameMarker) && !strings.HasPrefix(l, MachineIDMarker) && !strings.HasPrefix(l, StepMarker) {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return "(none)"
	}
	return strings.Join(keep, " | ")
}

// LastLine returns the last non-empty line of the output, without the scripts' "capr: " prefix.
func LastLine(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			return strings.TrimPrefix(lines[i], MessagePrefix)
		}
	}
	return "(no output)"
}

// MissingPrerequisites returns what prerequisites.sh listed as missing, or "(unknown)".
func MissingPrerequisites(lines []string) string {
	missing := "(unknown)"
	for _, l := range lines {
		if m, ok := strings.CutPrefix(l, MissingMarker); ok {
			missing = strings.TrimSpace(m)
		}
	}
	return missing
}

// PrerequisitesError is ErrHostPrerequisites naming what is missing and what CAPR needs.
func PrerequisitesError(missing string) error {
	return fmt.Errorf("%w: missing %s. CAPR needs a POSIX sh, flock and setsid (util-linux), GNU tail with --pid, mktemp, base64, nohup, grep and hostname, and root (log in as root, or set useSudo with passwordless sudo)",
		ErrHostPrerequisites, missing)
}
