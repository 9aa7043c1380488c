// Package rows carries the figures of `make bench` between the processes that measure them: test/bench measures
// P1, P3, P4 and P5 itself and runs the benchmarks that need their own test rigs (P2 in package controllers, P6 in
// package e2e), which append their rows to the file named by $BENCH_ROWS.
package rows

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Env names the file a benchmark appends its rows to; unset, Append does nothing.
const Env = "BENCH_ROWS"

// Row is one figure: a measurement of CAPR against a baseline measured in the same run, and the goal for their
// ratio (lower is better).
type Row struct {
	// Figure is the name of the figure, e.g. "P2a".
	Figure string `json:"figure"`
	// What says what was measured.
	What string `json:"what"`
	// Baseline and CAPR are the two measurements as they are printed (with their units).
	Baseline string `json:"baseline"`
	CAPR     string `json:"capr"`
	// Ratio is CAPR against the baseline; Goal is the largest ratio that meets the goal.
	Ratio float64 `json:"ratio"`
	Goal  float64 `json:"goal"`
	// Note is printed under the table (how the figure was measured, what it depends on).
	Note string `json:"note,omitempty"`
	// Detail is Markdown printed after the notes (a breakdown of where the time went).
	Detail string `json:"detail,omitempty"`
	// Err says why the figure could not be measured; the other fields may be empty.
	Err string `json:"error,omitempty"`
}

// Meets says whether the ratio meets the goal.
func (r Row) Meets() bool { return r.Err == "" && r.Ratio <= r.Goal }

// Append adds rows to the file named by $BENCH_ROWS, one JSON object a line; it does nothing when that is unset.
func Append(rs ...Row) error {
	path := os.Getenv(Env)
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	for _, r := range rs {
		b, err := json.Marshal(r)
		if err != nil {
			_ = f.Close()
			return err
		}
		if _, err := f.Write(append(b, '\n')); err != nil {
			_ = f.Close()
			return err
		}
	}
	return f.Close()
}

// Read returns the rows in a file written by Append; a missing file holds none.
func Read(path string) ([]Row, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Row
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var r Row
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, nil
}
