package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
)

// describeMachine says what the figures were measured on: CPU, cores, memory, kernel, Go, date.
func describeMachine(loadBefore string) string {
	model, cores := "unknown CPU", 0
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				model = strings.TrimSpace(v)
			case "processor":
				cores++
			}
		}
	}
	mem := "unknown"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
				mem = fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	kernel := "unknown"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	goVersion := runtime.Version()
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		goVersion = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("Machine: %s, %d logical CPUs (GOMAXPROCS %d), %s memory, Linux %s, %s %s/%s; %s; load average %s before the run, %s after",
		model, cores, runtime.GOMAXPROCS(0), mem, kernel, goVersion, runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02 15:04 MST"),
		loadBefore, loadAverage())
}

// committedRow is a figure of the committed results: its ratio, and its baseline's shape (the baseline's text
// without its figures), which says whether it measured against the same thing.
type committedRow struct {
	ratio    float64
	baseline string
}

// shape is a baseline's text without numbers and units: "one Machine (0 -> 1) 5.236s" → "one Machine ( -> )".
func shape(baseline string) string {
	return strings.Join(strings.FieldsFunc(baseline, func(r rune) bool {
		return r == ' ' || (r >= '0' && r <= '9') || r == '.' || r == 'µ'
	}), " ")
}

// readResults reads the rows of a results file written by writeResults, by figure; a missing file has none.
func readResults(path string) (map[string]committedRow, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]committedRow{}
	for _, line := range strings.Split(string(data), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 7 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "P") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(cells[5]), 64); err == nil {
			out[strings.TrimSpace(cells[1])] = committedRow{ratio: v, baseline: shape(strings.TrimSpace(cells[3]))}
		}
	}
	return out, nil
}

// regressed says whether a ratio is more than 20% worse than the committed one (lower ratios are better).
func regressed(now, was float64) bool {
	if was == 0 {
		return now > 0.01
	}
	return now > was*1.2
}

// render prints the table of figures; each ratio is compared with the committed one.
func render(all []rows.Row, previous map[string]committedRow, short bool) string {
	var b strings.Builder
	b.WriteString("| figure | what | baseline | CAPR | ratio | goal | verdict | vs committed |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	var notes, details []string
	for _, r := range all {
		if r.Detail != "" {
			// A later detail under the same heading (P6's breakdown, grown by each size) replaces the earlier one.
			if i := slices.IndexFunc(details, func(d string) bool { return firstLine(d) == firstLine(r.Detail) }); i >= 0 {
				details[i] = r.Detail
			} else {
				details = append(details, r.Detail)
			}
		}
		if r.Err != "" {
			fmt.Fprintf(&b, "| %s | %s | | | | | ERROR | |\n", r.Figure, firstLine(r.Err))
			notes = append(notes, fmt.Sprintf("%s could not be measured: %s", r.Figure, r.Err))
			continue
		}
		verdict := "meets"
		if !r.Meets() {
			verdict = "**MISSES**"
		}
		vs := "(none committed)"
		if c, ok := previous[r.Figure]; ok {
			was := c.ratio
			switch {
			case short:
				vs = fmt.Sprintf("committed %.2f at full scale (not compared)", was)
			case c.baseline != shape(r.Baseline):
				vs = fmt.Sprintf("committed %.2f against another baseline (not compared)", was)
			case regressed(r.Ratio, was):
				vs = fmt.Sprintf("**REGRESSED** vs committed %.2f", was)
			default:
				vs = fmt.Sprintf("ok vs committed %.2f", was)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2f | <= %s | %s | %s |\n", r.Figure, r.What, r.Baseline, r.CAPR, r.Ratio,
			strconv.FormatFloat(r.Goal, 'f', -1, 64), verdict, vs)
		if r.Note != "" {
			notes = append(notes, r.Note)
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		for _, n := range notes {
			b.WriteString("- " + n + "\n")
		}
	}
	for _, d := range details {
		b.WriteString("\n" + strings.TrimSpace(d) + "\n")
	}
	return b.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return strings.ReplaceAll(s, "|", "/")
}

func writeResults(path, machine, table string, s scale) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	content := "# CAPR benchmark results\n\n" +
		"Written by `make bench` (" + scaleName(s) + "); every ratio is CAPR against a baseline measured in the same run, lower is better.\n" +
		"`make bench` compares its ratios with this file and flags one more than 20% worse as REGRESSED.\n\n" +
		machine + "\n\n" + table
	return os.WriteFile(path, []byte(content), 0o644)
}

// loadAverage is the first three fields of /proc/loadavg: other work on the machine shows in every figure.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// heapHeading starts the section of P3's heap profile in a results file.
const heapHeading = "### P3: the loaded manager's heap"

// committedHeap is the P3 heap section of the committed results at path, retitled as the run before this one, or ""
// when it has none.
func committedHeap(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	text := string(data)
	start := strings.Index(text, heapHeading)
	if start < 0 {
		return ""
	}
	section := text[start+len(heapHeading):]
	if end := strings.Index(section, "\n### "); end >= 0 {
		section = section[:end]
	}
	when := "the committed run"
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "Machine: ") {
			// "Machine: <what>; <date> UTC; load average ..."
			if parts := strings.Split(line, "; "); len(parts) >= 2 {
				when = "the committed run of " + parts[1]
			}
			break
		}
	}
	return "\n\n### P3 before: the heap in " + when + section
}
