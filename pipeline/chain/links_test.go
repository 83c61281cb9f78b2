package chain

import (
	"iter"
	"slices"
	"testing"
	"time"
)

func readings(rs ...Reading) iter.Seq[Reading] { return slices.Values(rs) }

// An answer settles only the immediate predecessor of the same device, and never a gap
// suspect; whatever else names the same leaf keeps waiting for ClickHouse.
func TestSettle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		s       Suspect
		device  string
		seq     uint64
		settled bool
	}{
		{"immediate predecessor", Suspect{Device: "d1", Seq: 61}, "d1", 60, true},
		{"seqs between: another worker may hold them", Suspect{Device: "d1", Seq: 62}, "d1", 60, false},
		{"a gap suspect", Suspect{Device: "d1", Seq: 61, Gap: true}, "d1", 60, false},
		{"another device", Suspect{Device: "d2", Seq: 61}, "d1", 60, false},
		{"a later reading", Suspect{Device: "d1", Seq: 61}, "d1", 61, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLinks()
			tc.s.Prev = prev(7) // the leaf the answer is about
			l.hold([]Held{{Suspect: tc.s}}, time.Now())
			l.told([]Reading{{Device: tc.device, Seq: tc.seq, Leaf: leaf(7)}})
			if got := len(l.settled) == 1; got != tc.settled {
				t.Fatalf("settled %v, want %v", got, tc.settled)
			}
			if got := l.waiting(); got != 1-len(l.settled) {
				t.Fatalf("%d waiting, %d settled", got, len(l.settled))
			}
		})
	}
}

// A worker's own stored readings settle its suspects by the same rule (a predecessor
// redelivered to it after its successor).
func TestStoredSettlesOwnSuspects(t *testing.T) {
	l := newLinks()
	now := time.Now()
	l.hold([]Held{{Suspect: Suspect{Device: "d", Seq: 5, Prev: prev(4)}}, {Suspect: Suspect{Device: "d", Seq: 9, Prev: prev(7)}}}, now)
	l.stored(readings(Reading{Device: "d", Seq: 4, Leaf: leaf(4)}, Reading{Device: "d", Seq: 7, Leaf: leaf(7)}), now)
	settled, lookup := l.take(now, false)
	if len(settled) != 1 || settled[0].Seq != 5 || len(lookup) != 0 || l.waiting() != 1 {
		t.Fatalf("settled %d (want seq 5), to look up %d, waiting %d", len(settled), len(lookup), l.waiting())
	}
}

// Questions about a predecessor go out every askEvery while its suspects are young; gap
// suspects are never asked about (answers cannot settle them). After lookupAfter a suspect is
// looked up in ClickHouse, then at most every lookupEvery; at shutdown all are.
func TestAskThenLookUp(t *testing.T) {
	t0 := time.Now()
	l := newLinks()
	l.hold([]Held{{Suspect: Suspect{Device: "d", Seq: 5, Prev: prev(4)}}, {Suspect: Suspect{Device: "d", Seq: 6, Prev: prev(4)}},
		{Suspect: Suspect{Device: "e", Seq: 9, Prev: prev(2), Gap: true}}, {Suspect: Suspect{Device: "e", Seq: 3, Prev: []byte("short")}}}, t0)
	for _, tc := range []struct {
		at  time.Duration
		due int
	}{{0, 1}, {100 * time.Millisecond, 0}, {askEvery, 1}, {askEvery + 10*time.Millisecond, 0}, {2 * askEvery, 1}, {lookupAfter, 0}} {
		if got := l.due(t0.Add(tc.at)); len(got) != tc.due || (tc.due == 1 && got[0] != leaf(4)) {
			t.Fatalf("at %v: asked about %x, want %d leaf", tc.at, got, tc.due)
		}
	}
	if _, lookup := l.take(t0.Add(lookupAfter-time.Millisecond), false); len(lookup) != 0 {
		t.Fatalf("%d looked up before lookupAfter", len(lookup))
	}
	t1 := t0.Add(lookupAfter)
	_, lookup := l.take(t1, false)
	if len(lookup) != 4 || l.waiting() != 0 {
		t.Fatalf("%d to look up, %d waiting; want 4, 0", len(lookup), l.waiting())
	}
	for _, w := range lookup {
		w.looked = t1
	}
	l.wait(lookup)
	if _, again := l.take(t1.Add(lookupEvery-time.Millisecond), false); len(again) != 0 {
		t.Fatalf("%d looked up again within lookupEvery", len(again))
	}
	if _, again := l.take(t1.Add(lookupEvery), false); len(again) != 4 {
		t.Fatalf("%d looked up again after lookupEvery, want 4", len(again))
	}
	l.hold([]Held{{Suspect: Suspect{Device: "f", Seq: 2, Prev: prev(1)}}}, t1)
	if _, all := l.take(t1, true); len(all) != 1 || l.waiting() != 0 {
		t.Fatalf("at shutdown %d taken, %d waiting", len(all), l.waiting())
	}
}

// A worker keeps what it stores for the others only once asked, answers from the last two
// generations (linkTTL each), and forgets everything once nobody asked for rememberFor.
func TestAnswers(t *testing.T) {
	t0 := time.Now()
	l := newLinks()
	r4 := Reading{Device: "d", Seq: 4, Leaf: leaf(4)}
	l.stored(readings(r4), t0)
	if got := l.answer([][32]byte{leaf(4)}, t0); len(got) != 0 {
		t.Fatalf("answered %v before ever being asked", got)
	}
	l.stored(readings(r4), t0)
	if got := l.answer([][32]byte{leaf(4), leaf(5)}, t0); len(got) != 1 || got[0].Device != "d" || got[0].Seq != 4 || got[0].Leaf != leaf(4) {
		t.Fatalf("answered %v, want d/4", got)
	}
	t1 := t0.Add(linkTTL + time.Millisecond)
	l.stored(readings(Reading{Device: "d", Seq: 5, Leaf: leaf(5)}), t1) // rotates: 4 is in old
	if got := l.answer([][32]byte{leaf(4), leaf(5)}, t1); len(got) != 2 {
		t.Fatalf("answered %v after one rotation, want d/4 and d/5", got)
	}
	t2 := t1.Add(linkTTL + time.Millisecond)
	l.stored(readings(Reading{Device: "d", Seq: 6, Leaf: leaf(6)}), t2) // rotates again: 4 is gone
	if got := l.answer([][32]byte{leaf(4), leaf(5)}, t2); len(got) != 1 || got[0].Seq != 5 {
		t.Fatalf("answered %v after two rotations, want d/5", got)
	}
	l.stored(readings(Reading{Device: "d", Seq: 7, Leaf: leaf(7)}), t2.Add(rememberFor+time.Millisecond))
	if l.cur != nil || l.old != nil {
		t.Fatal("still keeping stored readings after nobody asked for rememberFor")
	}
}

// A run of readings redelivered together is held before it is stored, so its own readings
// settle the links of all but the first: only that one is left to look up.
func TestRunSettlesItself(t *testing.T) {
	l := newLinks()
	now := time.Now()
	var hs []Held
	var rs []Reading
	for s := byte(10); s < 20; s++ {
		hs = append(hs, Held{Suspect: Suspect{Device: "d", Seq: uint64(s), Prev: prev(s - 1), Behind: true, from: uint64(s - 1)}})
		rs = append(rs, Reading{Device: "d", Seq: uint64(s), Leaf: leaf(s)})
	}
	l.hold(hs, now)
	l.stored(readings(rs...), now)
	settled, lookup := l.take(now, true)
	if len(settled) != 9 || len(lookup) != 1 || lookup[0].Seq != 10 {
		t.Fatalf("%d settled, %d to look up (want 9 and seq 10)", len(settled), len(lookup))
	}
}

// Waiting suspects are kept in progress every so often from the moment they are held, not
// only once they are looked up (which may come after the ack wait).
func TestStale(t *testing.T) {
	t0 := time.Now()
	l := newLinks()
	a, b := &fakeMsg{}, &fakeMsg{}
	l.hold([]Held{{Suspect: Suspect{Device: "d", Seq: 5, Prev: prev(4)}, Msg: a}}, t0)
	l.hold([]Held{{Suspect: Suspect{Device: "d", Seq: 9, Prev: prev(8)}, Msg: b}}, t0.Add(time.Second))
	const every = 600 * time.Millisecond
	ms := time.Millisecond
	for _, tc := range []struct {
		at   time.Duration
		want []Msg
	}{{600 * ms, nil}, {601 * ms, []Msg{a}}, {1200 * ms, nil}, {1210 * ms, []Msg{a}}, {1610 * ms, []Msg{b}}, {1811 * ms, []Msg{a}}} {
		if got := l.stale(t0.Add(tc.at), every); !slices.Equal(got, tc.want) {
			t.Fatalf("at %v kept %d in progress, want %d", tc.at, len(got), len(tc.want))
		}
	}
}
