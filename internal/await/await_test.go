package await

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestUntilHolds(t *testing.T) {
	n := 0
	Until(t, t.Context(), "the third look", func() (bool, string) { n++; return n == 3, "" })
	if n != 3 {
		t.Fatalf("looked %d times, want 3", n)
	}
}

// recorder is a testing.TB that records a failure instead of stopping the test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	panic(r) // Fatalf must not return; the test recovers it
}

func TestUntilFailsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	r := &recorder{TB: t}
	func() {
		defer func() { _ = recover() }()
		Until(r, ctx, "never", func() (bool, string) { return false, "still not" })
	}()
	if !strings.Contains(r.failed, "never happened") {
		t.Fatalf("failure %q, want it to say what never happened", r.failed)
	}
}
