// Package nodehost starts test hosts that are real Kubernetes nodes: sshdtest hosts that also have a network
// namespace of their own on the bridge capr-nodes0 (172.30.0.x/24), their own containerd with the node images
// imported (nothing is ever pulled), an init standing in for systemd's containerd.service and kubelet.service, and a
// cgroup root of their own below every cgroup hierarchy, so several kubelets share this machine without touching
// each other. Stopping a host ends every process, container, mount, cgroup and link it made.
package nodehost

import (
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/standins"
)

//go:embed nodeinit
var nodeInit []byte

//go:embed systemctl
var systemctl []byte

const (
	// Bridge joins the node hosts' network namespaces to the machine's; it is made once and kept.
	Bridge = "capr-nodes0"
	// BridgeAddress is the machine's address on Bridge, the node hosts' default route.
	BridgeAddress = "172.30.0.1"
	// CRISocket is the containerd socket inside every node host.
	CRISocket = "unix:///run/containerd/containerd.sock"
	subnet    = "172.30.0."
)

// Binaries are the node commands a node host has on its PATH (/usr/local/bin), from the bin directory.
var Binaries = []string{"kubeadm", "kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "crictl"}

// CNIPlugins are the CNI plugins a node host has in /opt/cni/bin, from the bin directory's cni/.
var CNIPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

// kernelTunables are the sysctls the kubelet sets when they differ (vm.overcommit_memory=1, kernel.panic=10, ...).
// They are not per namespace: a kubelet writing them would change the whole machine, so each host sees files with
// the values the kubelet wants bound over them. A real host lets the kubelet set them.
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// Options shape a node host.
type Options struct {
	// Name is the host name, and so the Node's name.
	Name string
	// BinDir holds Binaries and cni/CNIPlugins (empty: $CAPR_BIN_DIR).
	BinDir string
	// ImagesDir holds the image archives imported into the host's containerd (empty: $CAPR_NODE_IMAGES).
	ImagesDir string
	// Users are accounts besides root.
	Users []sshdtest.User
	// ClientKeyPEM is the private key the host's users accept; empty makes a new one.
	ClientKeyPEM []byte
}

// Host is a running node host.
type Host struct {
	*sshdtest.Host
	// Name is the host name.
	Name string
	// Index is x in the host's address 172.30.0.x and in its Pod CIDR 10.244.x.0/24.
	Index int
	// PodCIDR is the range the host's CNI configuration gives its Pods; every host routes each 10.244.y.0/24 to
	// 172.30.0.y.
	PodCIDR string
	// CgroupRoot is the host's cgroup (the same path below every hierarchy, /capr-nx), the kubelet's cgroup root.
	CgroupRoot string

	opts  Options
	files string
	init  *exec.Cmd
}

// Missing says what a node host needs and does not find (the node binaries, the images, root), or "".
func Missing(binDir, imagesDir string) string {
	binDir, imagesDir = dirs(binDir, imagesDir)
	if os.Geteuid() != 0 {
		return "node hosts need root"
	}
	var missing []string
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			missing = append(missing, b)
		}
	}
	for _, p := range CNIPlugins {
		if _, err := os.Stat(filepath.Join(binDir, "cni", p)); err != nil {
			missing = append(missing, "cni/"+p)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("node hosts need %s in %s (CAPR_BIN_DIR)", strings.Join(missing, ", "), binDir)
	}
	if images, _ := imageArchives(imagesDir); len(images) == 0 {
		return fmt.Sprintf("node hosts need the node image archives in %s (CAPR_NODE_IMAGES)", imagesDir)
	}
	for _, tool := range []string{"ip", "flock", "nsenter"} { // the bridge and veths; nodeinit; entering the host
		if _, err := exec.LookPath(tool); err != nil {
			return "node hosts need " + tool + " on the machine"
		}
	}
	return ""
}

func dirs(binDir, imagesDir string) (string, string) {
	if binDir == "" {
		binDir = os.Getenv("CAPR_BIN_DIR")
	}
	if imagesDir == "" {
		imagesDir = os.Getenv("CAPR_NODE_IMAGES")
	}
	return binDir, imagesDir
}

func imageArchives(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".tar") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files)
	return files, nil
}

// KubernetesVersion is the version of the kubeadm in binDir (e.g. v1.36.3).
func KubernetesVersion(binDir string) (string, error) {
	binDir, _ = dirs(binDir, "")
	out, err := exec.Command(filepath.Join(binDir, "kubeadm"), "version", "-o", "short").Output()
	return strings.TrimSpace(string(out)), err
}

// inotifyLimits are the smallest per-user inotify limits node hosts need. Every kubelet and containerd watches
// files with inotify, and all the hosts' run as root, one user of the machine: with the default 128 instances, the
// tenth or so kubelet fails to start cAdvisor ("inotify_init: too many open files") and never registers its Node.
// kind asks for the same limits for the same reason.
var inotifyLimits = map[string]int{"fs/inotify/max_user_instances": 8192, "fs/inotify/max_user_watches": 524288}

var (
	inotifyOnce sync.Once
	inotifyErr  error
)

// raiseInotifyLimits raises the machine's inotify limits to inotifyLimits where they are lower (never lowers them).
func raiseInotifyLimits() error {
	for name, want := range inotifyLimits {
		path := "/proc/sys/" + name
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if have, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && have >= want {
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(want)), 0o644); err != nil {
			return fmt.Errorf("node hosts need %s >= %d (each kubelet and containerd uses inotify): %w", strings.ReplaceAll(name, "/", "."), want, err)
		}
	}
	return nil
}

// Start starts a node host; the test skips (or a program stops) if Missing says something is missing.
func Start(t sshdtest.T, opts Options) *Host {
	t.Helper()
	opts.BinDir, opts.ImagesDir = dirs(opts.BinDir, opts.ImagesDir)
	if why := Missing(opts.BinDir, opts.ImagesDir); why != "" {
		if s, ok := t.(interface{ Skip(args ...any) }); ok {
			s.Skip(why)
		}
		t.Fatal(why)
	}
	inotifyOnce.Do(func() { inotifyErr = raiseInotifyLimits() })
	if inotifyErr != nil {
		t.Fatal(inotifyErr)
	}
	h := &Host{Name: opts.Name, opts: opts, files: t.TempDir()}
	h.Index = h.reserveIndex(t)
	h.CgroupRoot = "/" + h.veth() // unique on the machine, as the veth's name
	h.PodCIDR = fmt.Sprintf("10.244.%d.0/24", h.Index)
	h.writeMachineFiles(t)
	// Registered before the host starts, so that a failed setup leaves nothing either; Stop runs once.
	t.Cleanup(func() {
		if h.Host != nil {
			h.Stop() // the sshd host's Stop, which runs its Teardown (this host's)
		}
		_ = exec.Command("ip", "link", "del", h.veth()).Run()
	})
	binds := []sshdtest.Bind{
		{Source: filepath.Join(h.files, "bin"), Target: "/usr/local/bin"},
		{Source: filepath.Join(opts.BinDir, "cni"), Target: "/opt/cni/bin"},
	}
	for name := range kernelTunables {
		binds = append(binds, sshdtest.Bind{Source: filepath.Join(h.files, "sysctl", strings.ReplaceAll(name, "/", ".")), Target: "/proc/sys/" + name, File: true})
	}
	sort.Slice(binds[2:], func(i, j int) bool { return binds[2+i].Target < binds[2+j].Target })
	h.Host = sshdtest.StartWith(t, sshdtest.Options{
		Users:        opts.Users,
		Hostname:     opts.Name,
		ClientKeyPEM: opts.ClientKeyPEM,
		Sbin:         filepath.Join(h.files, "sbin"),
		OwnNetwork:   true,
		// What a node writes. /opt is private so that /opt/cni/bin stays inside.
		Private: []string{"/var/lib/kubelet", "/var/lib/containerd", "/var/lib/etcd", "/var/lib/cni", "/var/log", "/opt"},
		Binds:   binds,
		Setup: func(sh *sshdtest.Host, pid int) string {
			h.Host = sh
			return h.setup(t, pid)
		},
		Teardown: func(*sshdtest.Host) { h.teardown(t) },
	})
	return h
}

func (h *Host) veth() string { return fmt.Sprintf("capr-n%d", h.Index) }

// Address is the host's address on the bridge.
func (h *Host) address() string { return subnet + strconv.Itoa(h.Index) }

// reserveIndex picks a free x for 172.30.0.x: the outer veth capr-nx is made now (in the machine's namespace), so
// two tests never pick the same x; setup moves its peer into the host.
func (h *Host) reserveIndex(t sshdtest.T) int {
	ensureBridge(t)
	for range 100 {
		n, _ := rand.Int(rand.Reader, big.NewInt(252))
		h.Index = int(n.Int64()) + 2
		out, err := exec.Command("ip", "link", "add", h.veth(), "type", "veth", "peer", "name", h.veth()+"p").CombinedOutput()
		if err == nil {
			return h.Index
		}
		if !strings.Contains(string(out), "File exists") {
			t.Fatalf("making the veth %s: %v: %s", h.veth(), err, out)
		}
	}
	t.Fatal("no free node address in " + subnet + "0/24")
	return 0
}

func ensureBridge(t sshdtest.T) {
	run := func(args ...string) string {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "File exists") {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("link", "add", Bridge, "type", "bridge")
	run("addr", "replace", BridgeAddress+"/24", "dev", Bridge)
	run("link", "set", Bridge, "up")
}

func (h *Host) writeMachineFiles(t sshdtest.T) {
	write := func(path string, data []byte, mode os.FileMode) {
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		must(t, os.WriteFile(path, data, mode))
	}
	write(filepath.Join(h.files, "sbin", "systemctl"), systemctl, 0o755)
	write(filepath.Join(h.files, "sbin", "systemctl-units"), standins.Systemctl, 0o755)
	write(filepath.Join(h.files, "nodeinit"), nodeInit, 0o755)
	must(t, os.MkdirAll(filepath.Join(h.files, "bin"), 0o755))
	for _, b := range Binaries {
		must(t, os.Symlink(filepath.Join(h.opts.BinDir, b), filepath.Join(h.files, "bin", b)))
	}
	if _, err := os.Stat(filepath.Join(h.opts.BinDir, "kubectl")); err == nil {
		must(t, os.Symlink(filepath.Join(h.opts.BinDir, "kubectl"), filepath.Join(h.files, "bin", "kubectl")))
	}
	for name, value := range kernelTunables {
		write(filepath.Join(h.files, "sysctl", strings.ReplaceAll(name, "/", ".")), []byte(value+"\n"), 0o444)
	}
}

// setup runs in every start of the host, after its namespaces exist and before its sshd starts.
func (h *Host) setup(t sshdtest.T, pid int) string {
	h.makeCgroups(t)
	h.writeHostFiles(t)
	h.overlayLibexec(t)
	h.connect(t, pid)
	h.startInit(t)
	h.importImages(t)
	return h.address()
}

// overlayLibexec gives the host a /usr/libexec of its own, the machine's with the host's changes on top: the kubelet
// and the controller manager make /usr/libexec/kubernetes/kubelet-plugins/volume/exec there, which a tmpfs of its own
// could not hold without a mount point made on the machine.
func (h *Host) overlayLibexec(t sshdtest.T) {
	dir := filepath.Join(h.files, "libexec")
	_ = os.RemoveAll(dir) // a start after a stop begins afresh, as after a reboot
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	must(t, os.MkdirAll(upper, 0o755))
	must(t, os.MkdirAll(work, 0o755))
	if out, err := h.Exec(fmt.Sprintf("mount -t overlay overlay -o lowerdir=/usr/libexec,upperdir=%s,workdir=%s /usr/libexec", upper, work)); err != nil {
		t.Fatalf("mounting the host's /usr/libexec: %v: %s", err, out)
	}
}

// cgroupHierarchies are the cgroup mounts below /sys/fs/cgroup (v1 controllers, name=systemd, the v2 unified one).
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var dirs []string
	for _, e := range entries {
		d := filepath.Join("/sys/fs/cgroup", e.Name())
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		dirs = []string{"/sys/fs/cgroup"} // cgroup v2 alone
	}
	return dirs
}

// makeCgroups makes the host's cgroup root, and its system child for the host's init and daemons, in every
// hierarchy (a cpuset cgroup needs its cpus and mems before a process can join).
func (h *Host) makeCgroups(t sshdtest.T) {
	for _, hier := range cgroupHierarchies() {
		for _, rel := range []string{h.CgroupRoot, h.CgroupRoot + "/system"} {
			dir := filepath.Join(hier, rel)
			must(t, os.MkdirAll(dir, 0o755))
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if cur, err := os.ReadFile(filepath.Join(dir, f)); err == nil && strings.TrimSpace(string(cur)) == "" {
					parent, _ := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
					must(t, os.WriteFile(filepath.Join(dir, f), parent, 0o644))
				}
			}
		}
	}
}

func (h *Host) writeHostFiles(t sshdtest.T) {
	etc := func(p ...string) string { return filepath.Join(append([]string{h.Dir, "etc"}, p...)...) }
	write := func(path, text string) {
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		must(t, os.WriteFile(path, []byte(text), 0o644))
	}
	pause, err := pauseImage(h.opts.BinDir)
	must(t, err)
	write(etc("containerd", "config.toml"), fmt.Sprintf(containerdConfig, pause))
	write(etc("crictl.yaml"), "runtime-endpoint: "+CRISocket+"\nimage-endpoint: "+CRISocket+"\ntimeout: 10\n")
	write(etc("cni", "net.d", "10-capr.conflist"), fmt.Sprintf(cniConfig, h.PodCIDR))
	// The kubelet's per-host flags, as a host's /etc/default/kubelet holds them (nodeinit reads it, as kubeadm's
	// drop-in does): kubeadm configurations shared by several hosts (a MachineDeployment's) cannot carry them.
	write(etc("default", "kubelet"), "KUBELET_EXTRA_ARGS=--cgroup-root="+h.CgroupRoot+"\n")
	hosts, err := os.ReadFile(etc("hosts"))
	must(t, err)
	if line := h.address() + " " + h.Name + "\n"; !strings.Contains(string(hosts), line) {
		write(etc("hosts"), string(hosts)+line)
	}
}

// containerdConfig is the hosts' containerd configuration: cgroupfs (the kubelet's driver here), overlayfs, the CNI
// plugins in /opt/cni/bin, kubeadm's pause image as the sandbox image (%s), and oom_score_adj kept at 0 or above
// (this machine's root cannot lower it). The opt plugin (/opt/containerd) is not needed.
const containerdConfig = `version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "%s"

[plugins.'io.containerd.cri.v1.runtime']
  # This machine gives root no CAP_SYS_RESOURCE, so no process may lower its oom_score_adj below 0: the kubelet's
  # -998 for sandboxes (and negative scores for other Pods) would fail every container (runc: "failed to update
  # /proc/self/oom_score_adj: Permission denied"). Clamped to containerd's own score instead; a real host needs no such thing.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/local/bin/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
`

// cniConfig gives Pods an address in the host's Pod CIDR (%s) on the bridge cni0; Pods of other hosts are reached
// through the routes setup adds (no masquerading, so Pods see each other's addresses).
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "capr",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// pauseImage is the pause image kubeadm of binDir names.
func pauseImage(binDir string) (string, error) {
	version, err := KubernetesVersion(binDir)
	if err != nil {
		return "", fmt.Errorf("kubeadm version: %w", err)
	}
	out, err := exec.Command(filepath.Join(binDir, "kubeadm"), "config", "images", "list", "--kubernetes-version", version).Output()
	if err != nil {
		return "", fmt.Errorf("kubeadm config images list: %w", err)
	}
	for _, image := range strings.Fields(string(out)) {
		if strings.Contains(image, "/pause:") {
			return image, nil
		}
	}
	return "", errors.New("kubeadm config images list names no pause image")
}

// connect moves the veth's peer into the host as eth0 with the host's address, a default route through the bridge
// and a route to every other host's Pod CIDR, and turns on forwarding (kubeadm's preflight wants it).
func (h *Host) connect(t sshdtest.T, pid int) {
	outer := h.veth()
	if err := exec.Command("ip", "link", "show", outer).Run(); err != nil { // after a stop: made again
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, err := exec.Command("ip", "link", "add", outer, "type", "veth", "peer", "name", outer+"p").CombinedOutput()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("making the veth %s again: %v: %s", outer, err, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, args := range [][]string{
		{"link", "set", outer + "p", "netns", strconv.Itoa(pid)},
		{"link", "set", outer, "master", Bridge},
		{"link", "set", outer, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	batch := []string{
		"link set lo up",
		"link set " + outer + "p name eth0",
		"addr add " + h.address() + "/24 dev eth0",
		"link set eth0 up",
		"route add default via " + BridgeAddress,
	}
	for y := 2; y < 255; y++ {
		if y != h.Index {
			batch = append(batch, fmt.Sprintf("route add 10.244.%d.0/24 via %s%d", y, subnet, y))
		}
	}
	ns := strconv.Itoa(pid)
	cmd := exec.Command("nsenter", "--target", ns, "--net", "--", "ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(batch, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("configuring the host's network: %v: %s", err, out)
	}
	for _, sysctl := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
		if out, err := exec.Command("nsenter", "--target", ns, "--net", "--", "sysctl", "-qw", sysctl).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s in the host: %v: %s", sysctl, err, out)
		}
	}
}

// startInit starts the host's init (nodeinit), which starts containerd and, once kubeadm configured it, the kubelet.
func (h *Host) startInit(t sshdtest.T) {
	args := append(h.NsenterArgs(), "--", "sh", filepath.Join(h.files, "nodeinit"), h.CgroupRoot)
	h.init = exec.Command("nsenter", args...)
	h.init.Env = []string{"PATH=" + hostPath, "HOME=/root"}
	// Its own process group: teardown ends it (the supervisors) with one signal.
	h.init.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := h.init.Start(); err != nil {
		t.Fatalf("starting the host's init: %v", err)
	}
	h.waitFor(t, "containerd", 60*time.Second, "ctr version")
}

// Run runs a shell command inside the host as root, with the host's PATH (its node binaries first).
func (h *Host) Run(command string) (string, error) {
	return h.Exec("PATH=" + hostPath + "; export PATH; " + command)
}

// hostPath is root's PATH on a host, as sshd gives it.
const hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// waitFor polls a command in the host until it succeeds, or fails the test after timeout.
func (h *Host) waitFor(t sshdtest.T, what string, timeout time.Duration, command string) {
	deadline := time.Now().Add(timeout)
	for {
		out, err := h.Run(command)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := h.Run("tail -n 30 /var/log/capr-node/" + what + ".log")
			t.Fatalf("%s in host %s did not answer within %s: %v: %s\n%s", what, h.Name, timeout, err, out, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *Host) importImages(t sshdtest.T) {
	archives, err := imageArchives(h.opts.ImagesDir)
	must(t, err)
	for _, a := range archives {
		if out, err := h.Run("ctr -n k8s.io images import --platform linux/amd64 " + a); err != nil {
			t.Fatalf("importing %s into host %s: %v: %s", a, h.Name, err, out)
		}
	}
}

// teardown ends everything the host runs: its init, every process in its cgroup (containerd, shims, containers,
// the kubelet) and in its network namespace (SSH sessions' commands), then removes its cgroups and its veth.
func (h *Host) teardown(t sshdtest.T) {
	if h.init != nil && h.init.Process != nil {
		_ = syscall.Kill(-h.init.Process.Pid, syscall.SIGKILL)
		_ = h.init.Wait()
		h.init = nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		pids := append(h.cgroupProcs(), h.netnsProcs()...)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host %s: processes %v did not end", h.Name, pids)
		}
		h.freeze("FROZEN")
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		h.freeze("THAWED")
		time.Sleep(50 * time.Millisecond)
	}
	for _, hier := range cgroupHierarchies() {
		root := filepath.Join(hier, h.CgroupRoot)
		for {
			err := removeTree(root)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("host %s: removing cgroup %s: %v", h.Name, root, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	_ = exec.Command("ip", "link", "del", h.veth()).Run()
}

func (h *Host) freeze(state string) {
	for _, hier := range cgroupHierarchies() {
		if f := filepath.Join(hier, h.CgroupRoot, "freezer.state"); fileExists(f) {
			_ = os.WriteFile(f, []byte(state), 0o644)
		}
	}
}

// cgroupProcs are the processes in the host's cgroup tree, in any hierarchy.
func (h *Host) cgroupProcs() []int {
	seen := map[int]bool{}
	var pids []int
	for _, hier := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(hier, h.CgroupRoot), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// netnsProcs are the processes in the host's network namespace but its holder (sshdtest ends it).
func (h *Host) netnsProcs() []int {
	holder := h.HolderPID()
	if holder == 0 {
		return nil
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", holder))
	if err != nil {
		return nil
	}
	procs, _ := os.ReadDir("/proc")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == holder {
			continue
		}
		if other, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); other == ns {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeTree removes a cgroup directory and its children, deepest first (cgroup dirs hold only virtual files).
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return syscall.Rmdir(dir)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func must(t sshdtest.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
