// Package sshdtest starts real OpenSSH sshd hosts for tests. Each host listens on its own 127.0.0.x address and
// runs in its own mount namespace with a private copy of /etc (its own users, sudoers and files) and a private
// /run and /var/lib/capr, so hosts share neither CAPR's files nor /etc. It needs root and /usr/sbin/sshd.
package sshdtest

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"al.essio.dev/pkg/shellescape"
	"golang.org/x/crypto/ssh"
)

// T is the part of T the hosts use; a benchmark program can provide its own.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// User is an account on a host.
type User struct {
	// Name of the account; root always exists.
	Name string
	// Sudo grants passwordless sudo.
	Sudo bool
}

// Options shape a host beyond its users.
type Options struct {
	// Users are accounts besides root.
	Users []User
	// Hostname gives the host a UTS namespace of its own with this host name (empty: the machine's name).
	Hostname string
	// Sbin is a directory mounted over /usr/local/sbin inside the host, which is on root's PATH before /usr/bin: the
	// place for stand-in commands (empty: the machine's).
	Sbin string
	// Private are more directories given an empty tmpfs of their own inside the host (e.g. /var/lib/kubelet).
	Private []string
	// ClientKeyPEM is the private key the host's users accept (OpenSSH PEM); empty makes a new one. Hosts of one
	// pool that share a key can share one key Secret.
	ClientKeyPEM []byte
	// SystemHostKeys makes the host's sshd work as a distribution's does: it serves the keys in the host's own
	// /etc/ssh (ssh_host_{rsa,ecdsa,ed25519}_key, of which only the ed25519 one, HostKey, is made at start) and
	// writes its pid to /run/sshd.pid, so ssh-keygen -A and kill -HUP "$(cat /run/sshd.pid)" on the host manage
	// them. Otherwise its one key lives in Dir, outside the host's /etc.
	SystemHostKeys bool
	// OwnNetwork gives the host a network namespace of its own (lo only); Setup must then connect it and return the
	// address sshd listens on, on port 22.
	OwnNetwork bool
	// Binds are bind mounts made inside the host after the Private tmpfs dirs, in order.
	Binds []Bind
	// Setup runs once the host's namespaces exist (the process holding them is pid) and before its sshd starts, at
	// every start; with OwnNetwork it returns the address sshd listens on.
	Setup func(h *Host, pid int) (address string)
	// Teardown runs first when the host stops, while its namespaces still exist.
	Teardown func(h *Host)
}

// Bind is a bind mount inside a host: Source (a path on the machine) mounted over Target (created if missing).
type Bind struct {
	Source, Target string
	// File binds a file rather than a directory.
	File bool
}

// Host is a running sshd.
type Host struct {
	// Address and Port the sshd listens on.
	Address string
	Port    int
	// HostKey is the host's public key in authorized_keys format.
	HostKey string
	// ClientKeyPEM is the private key (OpenSSH PEM) every user of the host accepts; ClientSigner is the same key.
	ClientKeyPEM []byte
	ClientSigner ssh.Signer
	// Dir holds the host's files: etc/ (mounted over /etc inside the host), the sshd config and keys.
	Dir string
	// MachineID is the host's own /etc/machine-id (32 hex digits), as a kubelet on it would report it.
	MachineID string

	t      T
	holder *exec.Cmd // keeps the host's namespaces
	sshd   *exec.Cmd
	opts   Options
}

// rootNeeded says why the hosts need root.
const rootNeeded = "needs root: each test host is an sshd in its own mount namespace (run as root, as make test does in CI; make test-unit runs the tier that needs none)"

// SuiteNeedsRoot ends a test binary whose suite runs sshd hosts throughout, with one line and status 0, when it is
// not run as root. Call it first in TestMain.
func SuiteNeedsRoot(suite string) {
	if os.Geteuid() == 0 {
		return
	}
	fmt.Printf("SKIP %s: %s\n", suite, rootNeeded)
	os.Exit(0)
}

// Start starts a host with the given extra users.
func Start(t T, users ...User) *Host {
	t.Helper()
	return StartWith(t, Options{Users: users})
}

// StartWith starts a host shaped by opts.
func StartWith(t T, opts Options) *Host {
	t.Helper()
	if os.Geteuid() != 0 {
		if s, ok := t.(interface{ Skip(args ...any) }); ok {
			s.Skip(rootNeeded) // a test: skipped with one line
		}
		t.Fatal(rootNeeded) // a program (the quickstart): stops
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		t.Fatal("sshdtest needs OpenSSH's sshd (apt-get install openssh-server)")
	}
	h := &Host{t: t, Dir: t.TempDir(), opts: opts}
	// Non-root users read their authorized keys and home below Dir.
	must(t, os.Chmod(h.Dir, 0o755))
	must(t, os.Chmod(filepath.Dir(h.Dir), 0o755))
	if opts.ClientKeyPEM != nil {
		signer, err := ssh.ParsePrivateKey(opts.ClientKeyPEM)
		must(t, err)
		h.ClientKeyPEM, h.ClientSigner = opts.ClientKeyPEM, signer
	} else {
		h.ClientKeyPEM, h.ClientSigner = newKey(t)
	}
	h.writeFiles()
	h.RotateHostKey()
	if !opts.OwnNetwork {
		h.Address, h.Port = freeAddress(t)
	}
	h.start()
	t.Cleanup(h.Stop)
	return h
}

// newKey returns a new ed25519 private key as OpenSSH PEM and as a signer.
func newKey(t T) ([]byte, ssh.Signer) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), signer
}

// freeAddress picks a random 127.0.0.x address and a port free on it.
func freeAddress(t T) (string, int) {
	for range 50 {
		n, _ := rand.Int(rand.Reader, big.NewInt(250))
		addr := fmt.Sprintf("127.0.0.%d", n.Int64()+3)
		l, err := net.Listen("tcp", addr+":0")
		if err != nil {
			continue
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		return addr, port
	}
	t.Fatal("no free loopback address")
	return "", 0
}

func (h *Host) path(p ...string) string { return filepath.Join(append([]string{h.Dir}, p...)...) }

func (h *Host) writeFiles() {
	t := h.t
	if out, err := exec.Command("cp", "-a", "/etc", h.path("etc")).CombinedOutput(); err != nil {
		t.Fatalf("copying /etc: %v: %s", err, out)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	h.MachineID = hex.EncodeToString(id)
	must(t, os.WriteFile(h.path("etc", "machine-id"), []byte(h.MachineID+"\n"), 0o444))
	appendFile := func(name, text string) {
		f, err := os.OpenFile(h.path("etc", name), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(text); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.WriteFile(h.path("root-bashrc"), []byte("# ~/.bashrc of a fresh host's root: nothing runs at login.\n"), 0o644))
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(h.ClientSigner.PublicKey())))
	must(t, os.MkdirAll(h.path("keys"), 0o755))
	must(t, os.WriteFile(h.path("keys", "root"), []byte(pub+"\n"), 0o644))
	for i, u := range h.opts.Users {
		uid := 20000 + i
		home := h.path("home", u.Name)
		must(t, os.MkdirAll(home, 0o755))
		must(t, os.Chown(home, uid, uid))
		appendFile("passwd", fmt.Sprintf("%s:x:%d:%d::%s:/bin/sh\n", u.Name, uid, uid, home))
		appendFile("group", fmt.Sprintf("%s:x:%d:\n", u.Name, uid))
		appendFile("shadow", fmt.Sprintf("%s:*:19000:0:99999:7:::\n", u.Name))
		must(t, os.WriteFile(h.path("keys", u.Name), []byte(pub+"\n"), 0o644))
		if u.Sudo {
			must(t, os.WriteFile(h.path("etc", "sudoers.d", "capr-"+u.Name), []byte(u.Name+" ALL=(ALL) NOPASSWD:ALL\n"), 0o440))
		}
	}
	hostKeys, pidFile := "HostKey "+h.path("host_key"), "none"
	if h.opts.SystemHostKeys {
		old, _ := filepath.Glob(h.path("etc", "ssh", "ssh_host_*"))
		for _, f := range old {
			must(t, os.Remove(f))
		}
		hostKeys, pidFile = "HostKey /etc/ssh/ssh_host_rsa_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\nHostKey /etc/ssh/ssh_host_ed25519_key", "/run/sshd.pid"
	}
	config := fmt.Sprintf(`%s
AuthorizedKeysFile %s/%%u
PidFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
LogLevel ERROR
`, hostKeys, h.path("keys"), pidFile)
	must(t, os.WriteFile(h.path("sshd_config"), []byte(config), 0o600))
}

// RotateHostKey gives the host a new host key (it takes effect at the next start) and returns it.
func (h *Host) RotateHostKey() string {
	keyPEM, signer := newKey(h.t)
	h.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	path := h.path("host_key")
	if h.opts.SystemHostKeys {
		path = h.path("etc", "ssh", "ssh_host_ed25519_key")
		must(h.t, os.WriteFile(path+".pub", []byte(h.HostKey+"\n"), 0o644))
	}
	must(h.t, os.WriteFile(path, keyPEM, 0o600))
	return h.HostKey
}

// PublicHostKeys returns the public host keys in the host's /etc/ssh (ssh_host_*_key.pub), in authorized_keys
// format without comments.
func (h *Host) PublicHostKeys() []string {
	files, _ := filepath.Glob(h.path("etc", "ssh", "ssh_host_*_key.pub"))
	var keys []string
	for _, f := range files {
		text, err := os.ReadFile(f)
		must(h.t, err)
		key, _, _, _, err := ssh.ParseAuthorizedKey(text)
		must(h.t, err)
		keys = append(keys, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))))
	}
	return keys
}

func (h *Host) start() {
	t := h.t
	// The holder process keeps the host's namespaces (and so its private mounts) while sshd stops and starts.
	script := fmt.Sprintf("set -e; mount --bind %s /etc; mount -t tmpfs tmpfs /run; mkdir -p /var/lib/capr; mount -t tmpfs tmpfs /var/lib/capr; ",
		shellescape.Quote(h.path("etc")))
	// Root logs in as on a fresh server: bash, started by sshd, reads ~/.bashrc, and this machine's own
	// (/root/.bashrc: here pyenv's init, whose rehash lock makes logins at the same moment wait on each other) is
	// not a host's. A clean one takes its place inside the host.
	if _, err := os.Stat("/root/.bashrc"); err == nil {
		script += fmt.Sprintf("mount --bind %s /root/.bashrc; ", shellescape.Quote(h.path("root-bashrc")))
	}
	for _, dir := range h.opts.Private {
		script += fmt.Sprintf("mkdir -p %[1]s; mount -t tmpfs tmpfs %[1]s; ", shellescape.Quote(dir))
	}
	if h.opts.Sbin != "" {
		script += fmt.Sprintf("mount --bind %s /usr/local/sbin; ", shellescape.Quote(h.opts.Sbin))
	}
	for _, b := range h.opts.Binds {
		mk := "mkdir -p " + shellescape.Quote(b.Target)
		if b.File {
			mk = "[ -e " + shellescape.Quote(b.Target) + " ] || touch " + shellescape.Quote(b.Target)
		}
		script += fmt.Sprintf("%s; mount --bind %s %s; ", mk, shellescape.Quote(b.Source), shellescape.Quote(b.Target))
	}
	unshare := []string{"--mount", "--propagation", "private"}
	if h.opts.Hostname != "" {
		unshare = append(unshare, "--uts")
		script += fmt.Sprintf("hostname %s; ", shellescape.Quote(h.opts.Hostname))
	}
	if h.opts.OwnNetwork {
		unshare = append(unshare, "--net")
	}
	script += "mkdir -p /run/sshd; chmod 755 /run/sshd; echo ready; exec sleep infinity"
	h.holder = exec.Command("unshare", append(unshare, "--", "sh", "-c", script)...)
	var logs bytes.Buffer
	h.holder.Stderr = &logs
	out, err := h.holder.StdoutPipe()
	must(t, err)
	h.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.holder.Start(); err != nil {
		t.Fatalf("starting the host's namespace: %v", err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		_ = h.holder.Process.Kill()
		_ = h.holder.Wait()
		t.Fatalf("setting up the host's namespace failed: %s", logs.String())
	}
	if h.opts.Setup != nil {
		address := h.opts.Setup(h, h.holder.Process.Pid)
		if h.opts.OwnNetwork {
			h.Address, h.Port = address, 22
		}
	}
	h.StartSSHD()
}

// StartSSHD starts the host's sshd again after StopSSHD, in the same namespaces: the host's files, /run and
// /var/lib/capr are as they were.
func (h *Host) StartSSHD() {
	t := h.t
	args := append(h.NsenterArgs(), "--", "/usr/sbin/sshd", "-D", "-e", "-f", h.path("sshd_config"), "-o", "ListenAddress="+h.Address, "-o", fmt.Sprintf("Port=%d", h.Port))
	h.sshd = exec.Command("nsenter", args...)
	var logs bytes.Buffer
	h.sshd.Stdout, h.sshd.Stderr = &logs, &logs
	// Its own process group: StopSSHD stops sshd and its per-connection processes, and nothing else.
	h.sshd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := h.sshd.Start(); err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	addr := net.JoinHostPort(h.Address, strconv.Itoa(h.Port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.Close()
			return
		}
		if time.Now().After(deadline) || h.sshd.ProcessState != nil {
			t.Fatalf("sshd on %s did not start: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StopSSHD stops the host's sshd and every SSH connection it serves (SIGKILL), as when sshd crashes or the host
// drops off the network. Commands a session started go on (sshd runs each in a session of its own), and so do the
// host's files; StartSSHD brings sshd back.
func (h *Host) StopSSHD() {
	if h.sshd == nil || h.sshd.Process == nil {
		return
	}
	_ = syscall.Kill(-h.sshd.Process.Pid, syscall.SIGKILL)
	_, _ = h.sshd.Process.Wait()
	h.sshd = nil
	// sshd serves each connection in a session of its own (sshd-session): find them in the host's mount namespace.
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.holder.Process.Pid))
	if err != nil {
		return
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if other, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); other == ns && strings.HasPrefix(string(comm), "sshd") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Stop stops the sshd and ends the host's namespaces; the host's files below Dir stay until the test ends. A start
// after Stop (Restart) is like a reboot: /run and /var/lib/capr start empty.
func (h *Host) Stop() {
	if h.opts.Teardown != nil && h.holder != nil {
		h.opts.Teardown(h)
	}
	h.StopSSHD()
	if h.holder == nil || h.holder.Process == nil {
		return
	}
	_ = h.holder.Process.Kill()
	_ = h.holder.Wait()
	h.holder = nil
}

// Restart stops and starts the sshd on the same address and port (with the current host key).
func (h *Host) Restart() {
	h.Stop()
	h.start()
}

// Exec runs a shell command inside the host's mount namespace, as root, and returns its output.
func (h *Host) Exec(command string) (string, error) {
	if h.holder == nil {
		return "", fmt.Errorf("host %s is stopped", h.Address)
	}
	out, err := exec.Command("nsenter", append(h.NsenterArgs(), "--", "sh", "-c", command)...).CombinedOutput()
	return string(out), err
}

// NsenterArgs are the arguments of nsenter that enter the host's namespaces (the command follows, after "--").
func (h *Host) NsenterArgs() []string {
	args := []string{"--target", strconv.Itoa(h.holder.Process.Pid), "--mount"}
	if h.opts.Hostname != "" {
		args = append(args, "--uts")
	}
	if h.opts.OwnNetwork {
		args = append(args, "--net")
	}
	return args
}

// HolderPID is the pid of the process that holds the host's namespaces (0 when stopped).
func (h *Host) HolderPID() int {
	if h.holder == nil || h.holder.Process == nil {
		return 0
	}
	return h.holder.Process.Pid
}

// Endpoint returns "address:port".
func (h *Host) Endpoint() string { return net.JoinHostPort(h.Address, strconv.Itoa(h.Port)) }

func must(t T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// StandIns writes shell scripts named after commands (name → body, without the #! line) into a new directory, for
// Options.Sbin, and returns it.
func StandIns(t T, scripts map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sbin")
	must(t, os.MkdirAll(dir, 0o755))
	for name, body := range scripts {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	}
	return dir
}
