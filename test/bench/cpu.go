package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/capr-project/cluster-api-provider-remote/test/measure"
)

// cpuUse is the CPU time (user + system) of this process and of each program it started (kube-apiserver, etcd,
// a manager), by program name.
type cpuUse map[string]time.Duration

type cpuMeter struct{ start cpuUse }

// startCPU starts measuring the CPU this process and its descendants use.
func startCPU() *cpuMeter { return &cpuMeter{start: readCPU()} }

func (m *cpuMeter) stop() cpuUse {
	now := readCPU()
	for k, v := range m.start {
		now[k] -= v
	}
	return now
}

func readCPU() cpuUse {
	use := cpuUse{}
	var walk func(pid int, name string)
	walk = func(pid int, name string) {
		p, ok := measure.ReadProcess(pid)
		if !ok {
			return
		}
		if name == "" {
			name = p.Name
		}
		use[name] += p.CPU
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, t := range tasks {
			data, _ := os.ReadFile(t)
			for _, c := range strings.Fields(string(data)) {
				if cp, err := strconv.Atoi(c); err == nil {
					walk(cp, "")
				}
			}
		}
	}
	walk(os.Getpid(), "bench")
	return use
}

// sumCPU prints CPU use summed over measurements, per program, largest first.
func sumCPU(uses []cpuUse) string {
	total := cpuUse{}
	for _, u := range uses {
		for k, v := range u {
			total[k] += v
		}
	}
	names := make([]string, 0, len(total))
	for k, v := range total {
		if v > 0 {
			names = append(names, k)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return int(total[b] - total[a]) })
	parts := make([]string, 0, len(names))
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s %s", k, total[k].Round(10*time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

func totalCPU(uses []cpuUse) time.Duration {
	var t time.Duration
	for _, u := range uses {
		for _, v := range u {
			t += v
		}
	}
	return t
}

func perOp(uses []cpuUse, ops int) string {
	return (totalCPU(uses) / time.Duration(max(ops, 1))).Round(10 * time.Microsecond).String()
}
