package chain

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/natstest"
)

// fakeMsg counts what the checker does to a held message.
type fakeMsg struct{ acks, inProgress atomic.Int32 }

func (m *fakeMsg) Ack() error        { m.acks.Add(1); return nil }
func (m *fakeMsg) InProgress() error { m.inProgress.Add(1); return nil }

// fakeLookup answers with its function fields and keeps the spans it was asked.
type fakeLookup struct {
	mu    sync.Mutex
	asked [][]Span
	spans func(spans []Span) (map[string][]Link, error)
}

func (f *fakeLookup) Heads(context.Context, []string) (map[string]Link, error) { return nil, nil }

func (f *fakeLookup) Spans(_ context.Context, spans []Span) (map[string][]Link, error) {
	f.mu.Lock()
	f.asked = append(f.asked, spans)
	f.mu.Unlock()
	return f.spans(spans)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// settle acknowledges the links ClickHouse confirms, records the broken ones before
// acknowledging them (a failed record keeps them, decided, for the next round), keeps the open
// ones in progress, and keeps everything when the lookup fails.
func TestCheckerSettle(t *testing.T) {
	ctx := t.Context()
	lookup := &fakeLookup{spans: func([]Span) (map[string][]Link, error) {
		return map[string][]Link{"d": {{Seq: 9, Leaf: leaf(9)}}, "e": {{Seq: 17, Leaf: leaf(17)}, {Seq: 19, Leaf: leaf(19)}}}, nil
	}}
	var recorded []Anomaly
	recordErr := errors.New("clickhouse: connection refused")
	record := func(_ context.Context, as []Anomaly) error {
		if recordErr != nil {
			return recordErr
		}
		recorded = append(recorded, as...)
		return nil
	}
	c := NewChecker(nil, lookup, record, Config{Worker: "w", AckWait: 3 * time.Second, Wait: 10 * time.Second}, quiet())
	now := time.Now()
	msgs := [3]fakeMsg{}
	ws := []*waiter{
		{Held: Held{Suspect: Suspect{Device: "d", Seq: 10, Prev: prev(9)}, Msg: &msgs[0]}, since: now},                                  // linked
		{Held: Held{Suspect: Suspect{Device: "e", Seq: 20, Prev: prev(17)}, Batch: [16]byte{2}, Msg: &msgs[1]}, since: now},             // a fork
		{Held: Held{Suspect: Suspect{Device: "f", Seq: 30, Prev: prev(29)}, Msg: &msgs[2]}, since: now, touched: now.Add(-time.Second)}, // open
	}
	c.held.Add(3)

	open, err := c.settle(ctx, ws, now, false)
	if !errors.Is(err, recordErr) || len(open) != 2 || msgs[0].acks.Load() != 1 || msgs[1].acks.Load() != 0 || msgs[2].acks.Load() != 0 {
		t.Fatalf("record failing: %d open, acks %d %d %d, %v", len(open), msgs[0].acks.Load(), msgs[1].acks.Load(), msgs[2].acks.Load(), err)
	}
	if msgs[2].inProgress.Load() != 1 {
		t.Fatal("an open link's message was not kept in progress")
	}
	if got := lookup.asked[0]; len(got) != 3 {
		t.Fatalf("looked up %+v, want one span per device", got)
	}

	recordErr = nil
	open, err = c.settle(ctx, open, now, false)
	if err != nil || len(open) != 1 || open[0].Device != "f" || msgs[1].acks.Load() != 1 {
		t.Fatalf("record working: %d open, fork acked %d times, %v", len(open), msgs[1].acks.Load(), err)
	}
	if len(recorded) != 1 || recorded[0].Device != "e" || recorded[0].Kind != Break || recorded[0].PrevSeq != 19 || recorded[0].BatchID != [16]byte{2} || recorded[0].Worker != "w" {
		t.Fatalf("recorded %+v", recorded)
	}
	if got := lookup.asked[1]; len(got) != 1 || got[0] != (Span{Device: "f", From: 0, To: 30}) {
		t.Fatalf("looked up %+v again, want only the open link's span (the fork was decided)", got)
	}
	if s := c.Stats(); s.Held != 1 || s.Lookups != 2 || s.Anomalies != 1 || s.Remote != 0 {
		t.Fatalf("stats %+v", s)
	}

	lookup.spans = func([]Span) (map[string][]Link, error) { return nil, errors.New("clickhouse: timeout") }
	if open, err = c.settle(ctx, open, now, true); err == nil || len(open) != 1 || msgs[2].acks.Load() != 0 {
		t.Fatalf("lookup failing: %d open, %v", len(open), err)
	}
}

// Two workers settle each other's links over NATS: once asked, a worker keeps what it stores
// and answers; the asker acknowledges without asking ClickHouse.
func TestCheckerAsksPeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	nc := natstest.Start(t).Conn()
	never := &fakeLookup{spans: func([]Span) (map[string][]Link, error) { return nil, nil }}
	record := func(context.Context, []Anomaly) error { return errors.New("no anomaly expected") }
	var cs [2]*Checker
	var wg sync.WaitGroup
	for i := range cs {
		cs[i] = NewChecker(nc, never, record, Config{Worker: "w"}, quiet())
		stop, err := cs[i].Listen()
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		wg.Add(1)
		go func() { defer wg.Done(); cs[i].Run(ctx, nil) }()
	}
	defer wg.Wait()
	defer cancel()
	a, b := cs[0], cs[1]
	m := &fakeMsg{}
	a.Hold([]Held{{Suspect: Suspect{Device: "d", Seq: 5, Prev: prev(4)}, Msg: m}})
	waitFor(ctx, t, "b to be asked", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return !b.links.asked.IsZero() })
	b.Stored(readings(Reading{Device: "d", Seq: 4, Leaf: leaf(4)}))
	waitFor(ctx, t, "a's link to be settled", func() bool { return m.acks.Load() == 1 })
	if s := a.Stats(); s.Remote != 1 || s.Held != 0 || s.Lookups != 0 {
		t.Fatalf("asker's stats %+v, want the link settled by the answer", s)
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
