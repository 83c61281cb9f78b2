package await

import (
	"context"
	"testing"
	"time"
)

// Until polls cond every 100 ms until it holds; if ctx ends first, the test fails with what
// was awaited and the last reason cond gave.
func Until(t testing.TB, ctx context.Context, what string, cond func() (bool, string)) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: never happened; last: %s", what, why)
		case <-tick.C:
		}
	}
}
