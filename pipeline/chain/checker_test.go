package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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

// spansOf answers a Spans lookup over the stored readings rs, as Reader.Spans does.
func spansOf(rs []Reading, spans []Span) map[string][]Link {
	out := map[string][]Link{}
	for _, sp := range spans {
		for _, r := range rs {
			if r.Device == sp.Device && r.Seq >= sp.From && r.Seq < sp.To {
				out[r.Device] = append(out[r.Device], Link{Seq: r.Seq, Leaf: r.Leaf})
			}
		}
	}
	return out
}

// A reading that comes at or below the device's head (held back while its successor was
// checked and stored, or redelivered after a crash) has its own link checked against what is
// stored: a right prev links, a wrong one is a break at that reading, and an exact duplicate
// of a stored reading links like the original. ClickHouse is asked only for the seqs just
// before it, in one lookup.
func TestLateReadings(t *testing.T) {
	const wait = 10 * time.Second
	forged := []byte("forged predecessor")
	chain := func(n byte) []Reading { // d's readings 1..n, each naming the one before
		var rs []Reading
		for s := byte(1); s <= n; s++ {
			r := Reading{Device: "d", Seq: uint64(s), Leaf: leaf(s)}
			if s > 1 {
				r.Prev = prev(s - 1)
			}
			rs = append(rs, r)
		}
		return rs
	}
	with := func(rs []Reading, seq byte, p []byte) []Reading {
		rs = slices.Clone(rs)
		rs[seq-1].Prev = p
		return rs
	}
	for _, tc := range []struct {
		name    string
		stored  []Reading // before the worker learns the head
		arrive  []Reading // in this order, each stored as it comes
		want    []Anomaly // Device, Seq, Got, Expected, PrevSeq
		spanned Span      // what the one ClickHouse lookup asks
	}{
		{name: "held reading comes back after its successor, prev right", stored: chain(9), arrive: []Reading{chain(11)[10], chain(11)[9]},
			spanned: Span{Device: "d", From: 9, To: 10}},
		{name: "held reading comes back after its successor, prev wrong", stored: chain(9),
			arrive: []Reading{chain(11)[10], with(chain(11), 10, forged)[9]},
			want:   []Anomaly{{Device: "d", Seq: 10, Got: forged, Expected: prev(9), PrevSeq: 9}}, spanned: Span{Device: "d", From: 9, To: 10}},
		{name: "held reading comes back naming an older reading", stored: chain(9),
			arrive: []Reading{chain(11)[10], with(chain(11), 10, prev(5))[9]},
			want:   []Anomaly{{Device: "d", Seq: 10, Got: prev(5), Expected: prev(9), PrevSeq: 9}}, spanned: Span{Device: "d", From: 9, To: 10}},
		{name: "plain duplicate redelivery", stored: chain(10), arrive: []Reading{chain(10)[9]}, spanned: Span{Device: "d", From: 9, To: 10}},
		{name: "duplicate of a stored reading whose link was never settled, prev wrong", stored: with(chain(10), 10, forged),
			arrive: []Reading{with(chain(10), 10, forged)[9]},
			want:   []Anomaly{{Device: "d", Seq: 10, Got: forged, Expected: prev(9), PrevSeq: 9}}, spanned: Span{Device: "d", From: 9, To: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			stored := slices.Clone(tc.stored)
			lookup := &fakeLookup{spans: func(spans []Span) (map[string][]Link, error) { return spansOf(stored, spans), nil }}
			var recorded []Anomaly
			c := NewChecker(nil, lookup, func(_ context.Context, as []Anomaly) error { recorded = append(recorded, as...); return nil },
				Config{Worker: "w", Wait: wait}, quiet())
			h := NewHeads()
			last := stored[len(stored)-1]
			h.Learn([]string{"d"}, map[string]Link{"d": {Seq: last.Seq, Leaf: last.Leaf}})
			// Each reading is held and stored as ingest's flush does, since the wait began.
			since := time.Now().Add(-wait)
			msgs := make([]fakeMsg, len(tc.arrive))
			for i, r := range tc.arrive {
				s, ok := h.Check(r)
				if !ok {
					t.Fatalf("reading %d is no suspect", r.Seq)
				}
				c.mu.Lock()
				c.links.hold([]Held{{Suspect: s, Msg: &msgs[i]}}, since)
				c.links.stored(readings(r), since)
				c.mu.Unlock()
				stored = append(stored, r)
			}
			c.held.Add(int64(len(tc.arrive)))
			c.mu.Lock()
			settled, lookups := c.links.take(time.Now(), false)
			c.mu.Unlock()
			c.ack(ctx, settled)
			open, err := c.settle(ctx, lookups, since, false)
			if err != nil || len(open) != 0 {
				t.Fatalf("%d links open, %v", len(open), err)
			}
			for i := range msgs {
				if n := msgs[i].acks.Load(); n != 1 {
					t.Fatalf("reading %d acknowledged %d times", tc.arrive[i].Seq, n)
				}
			}
			if len(lookup.asked) != 1 || !slices.Equal(lookup.asked[0], []Span{tc.spanned}) {
				t.Fatalf("looked up %v, want once %+v", lookup.asked, tc.spanned)
			}
			if len(recorded) != len(tc.want) {
				t.Fatalf("recorded %+v, want %+v", recorded, tc.want)
			}
			for i, a := range recorded {
				w := tc.want[i]
				if a.Kind != Break || a.Device != w.Device || a.Seq != w.Seq || !bytes.Equal(a.Got, w.Got) || !bytes.Equal(a.Expected, w.Expected) || a.PrevSeq != w.PrevSeq {
					t.Fatalf("recorded %+v, want a break %+v", a, w)
				}
			}
		})
	}
}

// A reading behind the head whose span holds no stored reading (the device skipped seqs
// before it) is not broken for having waited: the next lookup reaches further back and
// places it.
func TestBehindLooksFurther(t *testing.T) {
	ctx := t.Context()
	var stored []Reading
	for s := byte(100); s <= 200; s++ {
		if s < 150 || s >= 160 { // the device skipped 150..159: 160 names 149
			stored = append(stored, Reading{Device: "d", Seq: uint64(s), Leaf: leaf(s)})
		}
	}
	lookup := &fakeLookup{spans: func(spans []Span) (map[string][]Link, error) { return spansOf(stored, spans), nil }}
	record := func(context.Context, []Anomaly) error { return errors.New("no anomaly expected") }
	const wait = time.Second
	c := NewChecker(nil, lookup, record, Config{Worker: "w", Wait: wait}, quiet())
	h := NewHeads()
	h.Learn([]string{"d"}, map[string]Link{"d": {Seq: 200, Leaf: leaf(200)}})
	s, ok := h.Check(Reading{Device: "d", Seq: 160, Leaf: leaf(160), Prev: prev(149)}) // redelivered
	if !ok || !s.Behind {
		t.Fatalf("suspect %+v (%v), want one behind the head", s, ok)
	}
	m := &fakeMsg{}
	since := time.Now().Add(-2 * wait)
	ws := []*waiter{{Held: Held{Suspect: s, Msg: m}, since: since, touched: time.Now()}}
	c.held.Add(1)
	for i, want := range []Span{{Device: "d", From: 159, To: 160}, {Device: "d", From: 160 - reach, To: 160}} {
		open, err := c.settle(ctx, ws, since, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := lookup.asked[i]; !slices.Equal(got, []Span{want}) {
			t.Fatalf("lookup %d asked %+v, want %+v", i, got, want)
		}
		ws = open
	}
	if len(ws) != 0 || m.acks.Load() != 1 {
		t.Fatalf("%d open after looking further back, acked %d times", len(ws), m.acks.Load())
	}
}

// Readings redelivered in bulk after a crash, one per device, are settled by one lookup of
// one narrow span per device, not of each device's history.
func TestRedeliveriesLookedUpTogether(t *testing.T) {
	ctx := t.Context()
	var stored []Reading
	h := NewHeads()
	var ws []*waiter
	since := time.Now().Add(-time.Minute)
	for i := range 300 {
		dev := fmt.Sprintf("d%d", i)
		top := uint64(1000 + 37*i)
		for s := top - 3; s <= top; s++ {
			stored = append(stored, Reading{Device: dev, Seq: s, Leaf: leaf(byte(s))})
		}
		h.Learn([]string{dev}, map[string]Link{dev: {Seq: top, Leaf: leaf(byte(top))}})
		s, ok := h.Check(Reading{Device: dev, Seq: top - 1, Leaf: leaf(byte(top - 1)), Prev: prev(byte(top - 2))})
		if !ok {
			t.Fatalf("redelivered reading of %s is no suspect", dev)
		}
		ws = append(ws, &waiter{Held: Held{Suspect: s, Msg: &fakeMsg{}}, since: since, touched: time.Now()})
	}
	lookup := &fakeLookup{spans: func(spans []Span) (map[string][]Link, error) { return spansOf(stored, spans), nil }}
	record := func(context.Context, []Anomaly) error { return errors.New("no anomaly expected") }
	c := NewChecker(nil, lookup, record, Config{Worker: "w"}, quiet())
	c.held.Add(int64(len(ws)))
	open, err := c.settle(ctx, ws, since, false)
	if err != nil || len(open) != 0 {
		t.Fatalf("%d open, %v", len(open), err)
	}
	if len(lookup.asked) != 1 || len(lookup.asked[0]) != 300 {
		t.Fatalf("%d lookups, want 1 of 300 spans", len(lookup.asked))
	}
	for _, sp := range lookup.asked[0] {
		if sp.To-sp.From != 1 {
			t.Fatalf("span %+v, want only the seq before the reading", sp)
		}
	}
	if s := c.Stats(); s.Held != 0 || s.Anomalies != 0 || s.Lookups != 300 {
		t.Fatalf("stats %+v", s)
	}
}
