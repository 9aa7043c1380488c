package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// managerProcess is CAPR's manager binary run against the environment, its webhooks off (the environment serves
// them), as CAPR's ServiceAccount.
type managerProcess struct {
	diagAddr string
	cmd      *exec.Cmd
	logs     *syncBuilder
	exited   chan error
}

// syncBuilder is a strings.Builder the manager's output goroutines write to.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// buildManager builds CAPR's manager from this checkout into dir.
func buildManager(root, dir string) (string, error) {
	bin := filepath.Join(dir, "manager")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build of the manager: %v\n%s", err, out)
	}
	return bin, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startManager starts the manager and waits until it is ready.
func startManager(bin, kubeconfig string) (*managerProcess, error) {
	health, err := freePort()
	if err != nil {
		return nil, err
	}
	diag, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &managerProcess{logs: &syncBuilder{}, exited: make(chan error, 1), diagAddr: fmt.Sprintf("127.0.0.1:%d", diag)}
	p.cmd = exec.Command(bin, "--kubeconfig="+kubeconfig, "--webhook-port=0", "--leader-elect=false",
		fmt.Sprintf("--health-addr=127.0.0.1:%d", health), fmt.Sprintf("--diagnostics-address=127.0.0.1:%d", diag), "-v=0")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.exited <- p.cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-p.exited:
			return nil, fmt.Errorf("the manager exited: %v\n%s", err, tail(p.logs.String()))
		default:
		}
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health)); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("the manager did not become ready:\n%s", tail(p.logs.String()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}

func (p *managerProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		_ = err // how it exited does not matter once it is stopped
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		err := <-p.exited
		_ = err
	}
}

// status returns a field of /proc/<pid>/status in bytes (VmHWM, VmRSS).
func (p *managerProcess) status(field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, p.cmd.Process.Pid)
}

// cpu returns the manager's CPU time so far.
func (p *managerProcess) cpu() time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(u+st) * 10 * time.Millisecond
}

// settle waits until the manager has caught up (it used under 2% of a core for 3 seconds), at most limit.
func (p *managerProcess) settle(limit time.Duration) {
	deadline := time.Now().Add(limit)
	last := p.cpu()
	quiet := 0
	for time.Now().Before(deadline) && quiet < 3 {
		time.Sleep(time.Second)
		now := p.cpu()
		if now-last <= 20*time.Millisecond {
			quiet++
		} else {
			quiet = 0
		}
		last = now
	}
}

// storedSize sums the JSON size of every object of a kind as the apiserver returns it, managed fields included:
// what etcd stores for a custom resource.
func storedSize(ctx context.Context, c client.Client, kind string) (int64, int, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(infrav1.GroupVersion.WithKind(kind + "List"))
	if err := c.List(ctx, list); err != nil {
		return 0, 0, err
	}
	var size int64
	for i := range list.Items {
		b, err := json.Marshal(list.Items[i].Object)
		if err != nil {
			return 0, 0, err
		}
		size += int64(len(b))
	}
	return size, len(list.Items), nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// p3 measures the loaded manager: its peak RSS once it has caught up with every pool entry and RemoteMachine,
// against the objects' size in etcd plus an idle manager's peak RSS.
func p3(ctx context.Context, env *testenv.Environment, bin, kubeconfig string, idle int64, limit time.Duration) (rows.Row, error) {
	m, err := startManager(bin, kubeconfig)
	if err != nil {
		return rows.Row{}, err
	}
	start := time.Now()
	m.settle(limit)
	settled := time.Since(start)
	hwm, err := m.status("VmHWM")
	heap := heapTop(ctx, env, m.diagAddr)
	m.stop()
	if err != nil {
		return rows.Row{}, err
	}
	entries, nEntries, err := storedSize(ctx, env.Client, "PooledRemoteMachine")
	if err != nil {
		return rows.Row{}, err
	}
	machines, nMachines, err := storedSize(ctx, env.Client, "RemoteMachine")
	if err != nil {
		return rows.Row{}, err
	}
	size := entries + machines
	fmt.Printf("P3  manager with %d pool entries (%s as stored) and %d RemoteMachines (%s): peak RSS %s after %s; idle manager %s\n",
		nEntries, mib(entries), nMachines, mib(machines), mib(hwm), settled.Round(time.Second), mib(idle))
	return rows.Row{Figure: "P3", What: fmt.Sprintf("manager peak RSS with %d pool entries and %d RemoteMachines", nEntries, nMachines),
		Baseline: fmt.Sprintf("objects %s + idle %s", mib(size), mib(idle)), CAPR: "peak RSS " + mib(hwm),
		Ratio: float64(hwm) / float64(size+idle), Goal: 2,
		Detail: heap,
		Note:   fmt.Sprintf("P3: the manager binary as a process (VmHWM of /proc/<pid>/status once it has caught up); ratio = peak RSS / (the objects' JSON size as stored in etcd, managed fields included, + the idle manager's peak RSS), the issue's goal <= 2. The growth alone, (peak RSS - idle) / objects, is %.2f.", float64(hwm-idle)/float64(size))}, nil
}

// heapTop is the top of the loaded manager's heap profile (in-use space), read from its diagnostics endpoint, as
// Markdown; what went wrong instead, when it could not be read.
func heapTop(ctx context.Context, env *testenv.Environment, addr string) string {
	out := "### P3: the loaded manager's heap (go tool pprof -top -sample_index=inuse_space)\n\n"
	d, err := mgmt.DiagnosticsReader(ctx, env.Client, env.Config, "default", addr)
	if err != nil {
		return out + "not read: " + err.Error() + "\n"
	}
	data, err := d.Get("/debug/pprof/heap")
	if err != nil {
		return out + "not read: " + err.Error() + "\n"
	}
	f, err := os.CreateTemp("", "capr-p3-heap-*.pprof")
	if err != nil {
		return out + "not read: " + err.Error() + "\n"
	}
	defer os.Remove(f.Name())
	if keep := os.Getenv("P3_HEAP_PROFILE"); keep != "" {
		_ = os.WriteFile(keep, data, 0o644) // for go tool pprof by hand
	}
	_, _ = f.Write(data)
	_ = f.Close()
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=15", "-sample_index=inuse_space", f.Name()).CombinedOutput()
	if err != nil {
		return out + "not read: " + err.Error() + "\n"
	}
	lines := strings.Split(strings.TrimSpace(string(top)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			lines = lines[i:]
			break
		}
	}
	return out + "```\n" + strings.Join(lines, "\n") + "\n```\n"
}
