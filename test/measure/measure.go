// Package measure reads what the benchmarks and tests measure outside the code under test: the machine's processes
// (/proc) and Prometheus metrics in their text format.
package measure

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of /proc's CPU times on Linux.
const clockTick = 100

// Process is one process as /proc/<pid>/stat shows it.
type Process struct {
	PID, PPID int
	// Name is the program's name (comm).
	Name string
	// CPU is the time (user + system) the process used itself; ChildrenCPU what the children it reaped used.
	CPU, ChildrenCPU time.Duration
}

// ReadProcess reads /proc/<pid>/stat; false when the process is gone.
func ReadProcess(pid int) (Process, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Process{}, false
	}
	s := string(data)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return Process{}, false
	}
	// After the name: state ppid ... utime(11) stime(12) cutime(13) cstime(14), counting from state.
	f := strings.Fields(s[end+1:])
	if len(f) < 15 {
		return Process{}, false
	}
	ticks := func(i int) time.Duration {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(v) * time.Second / clockTick
	}
	ppid, _ := strconv.Atoi(f[1])
	return Process{PID: pid, PPID: ppid, Name: s[open+1 : end], CPU: ticks(11) + ticks(12), ChildrenCPU: ticks(13) + ticks(14)}, true
}

// Processes reads every process of the machine, by PID.
func Processes() map[int]Process {
	out := map[int]Process{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if p, ok := ReadProcess(pid); ok {
			out[pid] = p
		}
	}
	return out
}

// MachineBusy is the machine's CPU time spent not idle, from /proc/stat.
func MachineBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var busy int64
	for i, v := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTick
}

// Metrics reads Prometheus metrics in the text format: "name{labels}" → value.
func Metrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}
