package chain

import (
	"fmt"
	"testing"
)

// Every span lands in exactly one group, a group holds at most 200 devices, and what a group
// reads (its seq range times its devices) stays within twice what its spans name.
func TestGroupSpans(t *testing.T) {
	var spans []Span
	for i := range 450 {
		from := uint64(1000 + i%7)
		spans = append(spans, Span{Device: fmt.Sprintf("near%d", i), From: from, To: from + 3})
	}
	spans = append(spans,
		Span{Device: "new", From: 0, To: 5000},          // no known floor: a wide span
		Span{Device: "far", From: 900_000, To: 900_002}, // a device far ahead
		Span{Device: "near1", From: 990, To: 1002},      // a second suspect of near1: merged
	)
	groups := groupSpans(spans)
	seen := map[string]Span{}
	for _, g := range groups {
		if len(g) > 200 {
			t.Fatalf("group of %d", len(g))
		}
		from, to, sum := g[0].From, g[0].To, uint64(0)
		for _, sp := range g {
			if _, dup := seen[sp.Device]; dup {
				t.Fatalf("%s in two groups", sp.Device)
			}
			seen[sp.Device] = sp
			from, to, sum = min(from, sp.From), max(to, sp.To), sum+sp.To-sp.From
		}
		if n := uint64(len(g)); (to-from)*n > 2*sum+64*n {
			t.Errorf("group of %d reads seq %d..%d for spans of %d in all", n, from, to, sum)
		}
	}
	if len(seen) != 452 {
		t.Fatalf("%d devices grouped, want 452", len(seen))
	}
	if sp := seen["near1"]; sp.From != 990 || sp.To != 1004 {
		t.Errorf("near1 merged to %+v, want 990..1004", sp)
	}
	if len(groups) > 5 {
		t.Errorf("%d groups for 450 close spans and 2 outliers, want at most 5", len(groups))
	}
}
