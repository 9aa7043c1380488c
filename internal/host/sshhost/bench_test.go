//go:build integration

package sshhost

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
	"github.com/capr-project/cluster-api-provider-remote/test/measure"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// p2Script is the bootstrap every host runs: a few files and commands, like a small worker join.
const p2Script = `#!/bin/sh
set -e
mkdir -p /run/p2
for i in 1 2 3 4 5 6 7 8; do head -c 4096 /dev/zero | tr '\0' x > /run/p2/file-$i; done
echo joined > /run/p2/state
`

// BenchmarkP2 is make bench's P2: the same bootstrap run by CAPR on 100 real sshd hosts at once (5 with -short),
// against OpenSSH's ssh running that script on the same hosts at once (goal <= 1.1); and on one host, against ssh on
// that host (goal <= 1.0). It prints the ratios and appends them to $BENCH_ROWS for test/bench's table.
func BenchmarkP2(b *testing.B) {
	hosts := 100
	if testing.Short() {
		hosts = 5
	}
	all := make([]*sshdtest.Host, hosts)
	for i := range all {
		all[i] = sshdtest.Start(b)
	}
	bootstrap := func(h *sshdtest.Host, uid string) error {
		cfg := sshrunner.Config{Endpoint: sshrunner.Endpoint{Address: h.Address, Port: h.Port, User: "root", Signer: h.ClientSigner, HostKeys: []string{h.HostKey}}, Log: logr.Discard()}
		_, err := (&Service{}).Bootstrap(context.Background(), host.BootstrapRequest{Identity: uid, Config: cfg, Data: []byte(p2Script)})
		return err
	}
	// A host forgets its bootstrap: the script's files, Cluster API's sentinel and lock, and CAPR's marker and done
	// record (which live in /var/lib/capr so that they survive a reboot).
	reset := func(h *sshdtest.Host) {
		if out, err := h.Exec("rm -rf /run/p2 /run/cluster-api /var/lib/capr/*"); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
	median := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}

	// One host, five times.
	var single []time.Duration
	for i := range 5 {
		reset(all[0])
		start := time.Now()
		if err := bootstrap(all[0], fmt.Sprintf("one-%d", i)); err != nil {
			b.Fatal(err)
		}
		single = append(single, time.Since(start))
	}

	// The OpenSSH client running the same script, five times.
	dir := b.TempDir()
	key, knownHosts, script := filepath.Join(dir, "key"), filepath.Join(dir, "known_hosts"), filepath.Join(dir, "script")
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(os.WriteFile(key, all[0].ClientKeyPEM, 0o600))
	must(os.WriteFile(knownHosts, []byte(fmt.Sprintf("[%s]:%d %s\n", all[0].Address, all[0].Port, all[0].HostKey)), 0o600))
	must(os.WriteFile(script, []byte(p2Script), 0o600))
	var plain []time.Duration
	for range 5 {
		reset(all[0])
		in, err := os.Open(script)
		must(err)
		start := time.Now()
		cmd := exec.Command("ssh", "-i", key, "-p", strconv.Itoa(all[0].Port), "-o", "UserKnownHostsFile="+knownHosts,
			"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "root@"+all[0].Address, "sh", "-s")
		cmd.Stdin = in
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("ssh: %v: %s", err, out)
		}
		plain = append(plain, time.Since(start))
		_ = in.Close()
	}

	// The OpenSSH client on all hosts at once: what the machine itself allows, as all hosts share its cores.
	var kh []byte
	for _, h := range all {
		kh = append(kh, fmt.Sprintf("[%s]:%d %s\n", h.Address, h.Port, h.HostKey)...)
		reset(h)
	}
	must(os.WriteFile(knownHosts, kh, 0o600))
	for i, h := range all {
		must(os.WriteFile(filepath.Join(dir, fmt.Sprintf("key-%d", i)), h.ClientKeyPEM, 0o600))
	}
	sshdBefore, childBefore := sshdCPU(), rusage(syscall.RUSAGE_CHILDREN)
	start := time.Now()
	var wg sync.WaitGroup
	for i, h := range all {
		wg.Go(func() {
			cmd := exec.Command("ssh", "-i", filepath.Join(dir, fmt.Sprintf("key-%d", i)), "-p", strconv.Itoa(h.Port), "-o", "UserKnownHostsFile="+knownHosts,
				"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "root@"+h.Address, "sh", "-s")
			cmd.Stdin = strings.NewReader(p2Script)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Errorf("ssh %s: %v: %s", h.Address, err, out)
			}
		})
	}
	wg.Wait()
	sshMany := time.Since(start)
	sshHosts, sshClients := sshdCPU()-sshdBefore, rusage(syscall.RUSAGE_CHILDREN)-childBefore

	// All hosts at once.
	for _, h := range all {
		reset(h)
	}
	sshdBefore, selfBefore := sshdCPU(), rusage(syscall.RUSAGE_SELF)
	start = time.Now()
	errs := make([]error, hosts)
	for i, h := range all {
		wg.Go(func() { errs[i] = bootstrap(h, fmt.Sprintf("many-%d", i)) })
	}
	wg.Wait()
	many := time.Since(start)
	caprHosts, caprClient := sshdCPU()-sshdBefore, rusage(syscall.RUSAGE_SELF)-selfBefore
	cpu := fmt.Sprintf("CPU on %d hosts at once: the hosts' sshd and what they ran %s with OpenSSH's client, %s with CAPR's; the client side %s (the ssh processes) against %s (CAPR's SSH client and bootstrap, this process)",
		hosts, sshHosts.Round(10*time.Millisecond), caprHosts.Round(10*time.Millisecond), sshClients.Round(10*time.Millisecond), caprClient.Round(10*time.Millisecond))
	for _, err := range errs {
		must(err)
	}
	for _, h := range all {
		if out, _ := h.Exec("cat /run/p2/state"); out != "joined\n" {
			b.Fatalf("host %s was not bootstrapped: %q", h.Address, out)
		}
	}

	one, ssh := median(single), median(plain)
	fmt.Printf("\nP2  the same bootstrap on %d real sshd hosts\n", hosts)
	fmt.Printf("    OpenSSH ssh on one host                  %8s\n", ssh.Round(time.Millisecond))
	fmt.Printf("    CAPR on one host                         %8s\n", one.Round(time.Millisecond))
	fmt.Printf("    OpenSSH ssh on %d hosts at once          %8s (all hosts share this machine's cores)\n", hosts, sshMany.Round(time.Millisecond))
	fmt.Printf("    CAPR on %d hosts at once                 %8s (%.2f times one host)\n", hosts, many.Round(time.Millisecond), float64(many)/float64(one))
	fmt.Printf("    %s\n", cpu)
	r := []rows.Row{
		{Figure: "P2a", What: fmt.Sprintf("one bootstrap on %d real sshd hosts at once", hosts),
			Baseline: fmt.Sprintf("OpenSSH ssh on the %d hosts %s", hosts, ms(sshMany)), CAPR: ms(many),
			Ratio: float64(many) / float64(sshMany), Goal: 1.1},
		{Figure: "P2b", What: "one bootstrap on one real sshd host (median of 5)",
			Baseline: "OpenSSH ssh " + ms(ssh), CAPR: ms(one),
			Ratio: float64(one) / float64(ssh), Goal: 1.0,
			Note: "P2: ssh runs the script with `sh -s` in one session; CAPR runs it in one session too, and also checks the host's prerequisites, takes its lock, writes its marker and done record, and stores and removes the script. " + cpu + "."},
	}
	for _, x := range r {
		fmt.Printf("    %s %.2f (goal <= %.1f)\n", x.Figure, x.Ratio, x.Goal)
	}
	if err := rows.Append(r...); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(many)/float64(sshMany), "x-ssh-many-hosts")
	b.ReportMetric(float64(one)/float64(ssh), "x-ssh-one-host")
}

// rusage is the CPU time (user + system) of this process or of its reaped children.
func rusage(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sshdCPU is the CPU time of every sshd process on the machine and of the children it reaped: the hosts' side of
// the sessions and everything the sessions ran.
func sshdCPU() time.Duration {
	var total time.Duration
	for _, p := range measure.Processes() {
		if p.Name == "sshd" {
			total += p.CPU + p.ChildrenCPU
		}
	}
	return total
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
