//go:build integration

package e2e

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestQuickstart runs the quickstart program (what `make quickstart` runs) as a user would: its table shows the
// control-plane machine and the two workers Running on three distinct hosts, and Ctrl-C (SIGINT) tears everything
// down, leaving no process and no file behind.
func TestQuickstart(t *testing.T) {
	g := NewWithT(t)
	// Every process the quickstart leaves behind would become this test's child.
	g.Expect(unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)).To(Succeed())
	bin := filepath.Join(t.TempDir(), "quickstart")
	out, err := mgmt.RunCmd(t, "", nil, "go", "build", "-o", bin, "./test/e2e/quickstart")
	g.Expect(err).NotTo(HaveOccurred(), out)

	cmd := exec.Command(bin)
	cmd.Dir = testenv.RootDir()
	stdout, err := cmd.StdoutPipe()
	g.Expect(err).NotTo(HaveOccurred())
	cmd.Stderr = cmd.Stdout
	g.Expect(cmd.Start()).To(Succeed())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 1000)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			lines <- scanner.Text()
		}
		close(lines)
	}()

	var output []string
	var root string
	running := map[string]string{} // machine → host
	ready := false
	timeout := time.After(8 * time.Minute)
	row := regexp.MustCompile(`^(\S+)\s+Running\s+(\S+)\s+(quickstart-\d) \(`)
	for !ready {
		select {
		case line, ok := <-lines:
			g.Expect(ok).To(BeTrue(), "the quickstart exited early:\n%s", strings.Join(output, "\n"))
			output = append(output, line)
			if m := regexp.MustCompile(`in (/\S+capr-quickstart-\S+)$`).FindStringSubmatch(line); m != nil {
				root = m[1]
			}
			if m := row.FindStringSubmatch(line); m != nil {
				running[m[1]] = m[3]
			}
			ready = strings.Contains(line, "Press Ctrl-C to stop everything")
		case <-timeout:
			t.Fatalf("the quickstart did not get ready:\n%s", strings.Join(output, "\n"))
		}
	}
	t.Log(strings.Join(output, "\n"))
	g.Expect(root).NotTo(BeEmpty())
	g.Expect(running).To(HaveLen(3), "the table shows three machines Running")
	hosts := map[string]bool{}
	workers := 0
	for machine, host := range running {
		hosts[host] = true
		if strings.HasPrefix(machine, "workers-") {
			workers++
		}
	}
	g.Expect(hosts).To(HaveLen(3), "on three distinct hosts")
	g.Expect(workers).To(Equal(2))

	// Ctrl-C.
	g.Expect(cmd.Process.Signal(syscall.SIGINT)).To(Succeed())
	done := make(chan error, 1)
	go func() {
		for range lines {
		}
		done <- cmd.Wait()
	}()
	g.Eventually(done, 2*time.Minute).Should(Receive(BeNil()))
	_, err = os.Stat(root)
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "%s is left behind", root)
	g.Expect(children()).To(BeEmpty(), "processes left behind")
}

// children lists this process's living children (with the subreaper set, also the quickstart's orphans). Orphans
// that already exited are reaped first, as a subreaper must: sshd's per-connection processes can outlive their
// parent by a moment when a client drops the connection during the key exchange, as CAPR's host-key scan does.
func children() []string {
	for {
		var status syscall.WaitStatus
		if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); err != nil || pid <= 0 {
			break
		}
	}
	self := strconv.Itoa(os.Getpid())
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		stat, _ := io.ReadAll(f)
		_ = f.Close()
		// pid (comm) state ppid ...
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndex(s, ")")+1:])
		if len(fields) > 1 && fields[1] == self {
			comm := s[strings.Index(s, "(")+1 : strings.LastIndex(s, ")")]
			found = append(found, e.Name()+" "+comm)
		}
	}
	return found
}
