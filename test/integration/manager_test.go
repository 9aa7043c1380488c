//go:build integration

package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

func buildManager(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manager")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = env.RootDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestManagerBinary runs the manager binary: --help documents every flag, bad flags fail clearly, and a manager
// against the test apiserver becomes ready and stops cleanly on SIGTERM.
func TestManagerBinary(t *testing.T) {
	g := NewWithT(t)
	bin := buildManager(t)

	out, _ := exec.Command(bin, "--help").CombinedOutput()
	for _, flag := range []string{"--leader-elect", "--leader-elect-namespace", "--diagnostics-address", "--insecure-diagnostics", "--health-addr",
		"--webhook-port", "--webhook-cert-dir", "--namespace", "--watch-filter", "--sync-period",
		"--remotemachine-concurrency", "--bootstrap-concurrency", "--bootstrap-concurrency-per-namespace", "--cleanup-concurrency", "--kubeconfig"} {
		g.Expect(string(out)).To(MatchRegexp(`(?m)^\s+`+flag+`\b.*\S`), "--help explains %s", flag)
	}

	out, err := exec.Command(bin, "--bootstrap-concurrency=0").CombinedOutput()
	g.Expect(err).To(HaveOccurred())
	g.Expect(string(out)).To(ContainSubstring("--bootstrap-concurrency must be at least 1"))
	out, err = exec.Command(bin, "--bootstrap-concurrency=4", "--bootstrap-concurrency-per-namespace=5").CombinedOutput()
	g.Expect(err).To(HaveOccurred())
	g.Expect(string(out)).To(ContainSubstring("--bootstrap-concurrency-per-namespace must be between 0"))
	out, err = exec.Command(bin, "--cleanup-concurrency=0").CombinedOutput()
	g.Expect(err).To(HaveOccurred())
	g.Expect(string(out)).To(ContainSubstring("--cleanup-concurrency must be at least 1"))

	health, metrics, webhook := freePort(t), freePort(t), freePort(t)
	cmd := exec.Command(bin,
		"--health-addr", fmt.Sprintf("127.0.0.1:%d", health),
		"--diagnostics-address", fmt.Sprintf("127.0.0.1:%d", metrics),
		"--webhook-port", strconv.Itoa(webhook),
		"--webhook-cert-dir", env.WebhookCertDir,
		"--leader-elect", "--leader-elect-namespace", "default")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig)
	logs := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	g.Expect(cmd.Start()).To(Succeed())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	ready := func() int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health))
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		return resp.StatusCode
	}
	g.Eventually(func(g Gomega) {
		g.Expect(exited).NotTo(Receive(), "the manager exited early")
		g.Expect(ready()).To(Equal(http.StatusOK))
	}, 60*time.Second, 100*time.Millisecond).Should(Succeed(), func() string { return logs.String() })

	g.Expect(cmd.Process.Signal(syscall.SIGTERM)).To(Succeed())
	var exitErr error
	g.Eventually(exited, 30*time.Second).Should(Receive(&exitErr))
	g.Expect(exitErr).NotTo(HaveOccurred(), logs.String())
}
