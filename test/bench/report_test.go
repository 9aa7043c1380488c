package main

import (
	"os"
	"strings"
	"testing"

	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
)

// TestRenderComparesLikeWithLike: a ratio is flagged REGRESSED only against a committed ratio measured against the
// same kind of baseline; a figure whose baseline changed is not compared.
func TestRenderComparesLikeWithLike(t *testing.T) {
	now := []rows.Row{
		{Figure: "P6", Baseline: "one Machine (0 -> 1) 5.236s", CAPR: "42s", Ratio: 8, Goal: 2},
		{Figure: "P4", Baseline: "GET p99 2.03ms", CAPR: "24ms", Ratio: 12, Goal: 3},
	}
	previous := map[string]committedRow{
		"P6": {ratio: 0.17, baseline: shape("50 x one Machine (5.39s)")},
		"P4": {ratio: 4.57, baseline: shape("GET p99 6.01ms")},
	}
	table := render(now, previous, false)
	for _, want := range []string{"committed 0.17 against another baseline (not compared)", "**REGRESSED** vs committed 4.57"} {
		if !strings.Contains(table, want) {
			t.Errorf("the table does not say %q:\n%s", want, table)
		}
	}
	if shape("one Machine (0 -> 1) 5.236s") != shape("one Machine (0 -> 1) 7s") {
		t.Errorf("the same baseline with other figures has another shape")
	}
}

// TestRenderKeepsTheLatestDetail: P6's breakdown grows with each size and rides on each size's row; the table is
// followed by the latest one only.
func TestRenderKeepsTheLatestDetail(t *testing.T) {
	now := []rows.Row{
		{Figure: "P3", Ratio: 1, Goal: 2, Detail: "### P3: heap\n\ntop"},
		{Figure: "P6", Ratio: 5, Goal: 2, Detail: "### Where P6's time goes\n\n| 1 | 50 |"},
		{Figure: "P6-200", Ratio: 20, Goal: 2, Detail: "### Where P6's time goes\n\n| 1 | 50 | 200 |"},
	}
	table := render(now, nil, false)
	if n := strings.Count(table, "### Where P6's time goes"); n != 1 {
		t.Errorf("the breakdown is printed %d times:\n%s", n, table)
	}
	if !strings.Contains(table, "| 1 | 50 | 200 |") || !strings.Contains(table, "### P3: heap") {
		t.Errorf("the latest breakdown or another figure's detail is missing:\n%s", table)
	}
	if strings.Index(table, "### P3") > strings.Index(table, "### Where P6") {
		t.Errorf("the details are not in the rows' order:\n%s", table)
	}
}

// TestCommittedHeapIsShownAsBefore: P3's heap of the committed run follows this run's, under its own heading, dated.
func TestCommittedHeapIsShownAsBefore(t *testing.T) {
	path := t.TempDir() + "/results.md"
	committed := "# CAPR benchmark results\n\nMachine: AMD EPYC, 2 logical CPUs; 2026-12-05 05:24 UTC; load average 1 2 3\n\n| figure |\n\n" +
		heapHeading + " (go tool pprof)\n\n```\n15.59MB sets.Insert\n```\n\n### Where P6's time goes\n\n| stage |\n"
	if err := os.WriteFile(path, []byte(committed), 0o644); err != nil {
		t.Fatal(err)
	}
	got := committedHeap(path)
	if !strings.Contains(got, "### P3 before: the heap in the committed run of 2026-12-05 05:24 UTC (go tool pprof)") ||
		!strings.Contains(got, "15.59MB sets.Insert") || strings.Contains(got, "Where P6") {
		t.Errorf("committedHeap:\n%s", got)
	}
	if committedHeap(t.TempDir()+"/none.md") != "" {
		t.Errorf("no committed results: no section")
	}
}
