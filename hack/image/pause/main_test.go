package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestPauseExitsOnTERM: pause blocks until SIGTERM, then exits 0 (a kubelet stopping a Pod sends SIGTERM; exiting by
// the signal's default action instead would mark the sandbox failed).
func TestPauseExitsOnTERM(t *testing.T) {
	g := NewWithT(t)
	bin := filepath.Join(t.TempDir(), "pause")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(out))

	cmd := exec.Command(bin)
	stderr, err := cmd.StderrPipe()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cmd.Start()).To(Succeed())
	// The warning is printed once the signal handlers are installed.
	line, err := bufio.NewReader(stderr).ReadString('\n')
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(line).To(ContainSubstring("pause should be the first process"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	g.Consistently(done, 200*time.Millisecond).ShouldNot(Receive(), "pause exited before any signal")
	g.Expect(cmd.Process.Signal(syscall.SIGTERM)).To(Succeed())
	g.Eventually(done, 10*time.Second).Should(Receive(BeNil()))
}

// TestReap: an exited child is reaped (as PID 1 of a Pod, pause inherits every orphan; unreaped, they stay zombies
// holding PIDs), and a running one is not waited for.
func TestReap(t *testing.T) {
	g := NewWithT(t)
	exited := exec.Command("true")
	g.Expect(exited.Start()).To(Succeed())
	running := exec.Command("sleep", "60")
	g.Expect(running.Start()).To(Succeed())
	defer func() { _ = running.Process.Kill(); _ = running.Wait() }()
	stat := filepath.Join("/proc", strconv.Itoa(exited.Process.Pid), "stat")
	g.Eventually(func() string {
		b, _ := os.ReadFile(stat)
		f := strings.Fields(string(b))
		if len(f) < 3 {
			return ""
		}
		return f[2]
	}, 10*time.Second).Should(Equal("Z"), "the child should be a zombie before reaping")
	g.Expect(reap()).To(Equal(1))
	_, err := os.Stat(stat)
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "the zombie should be gone")
	g.Expect(running.Process.Signal(syscall.Signal(0))).To(Succeed(), "the running child should be left alone")
}
