package chain

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

func leaf(n byte) [32]byte { return [32]byte{n} }

func prev(n byte) []byte { l := leaf(n); return l[:] }

// Check: a reading that names the head (with no seq between) costs nothing; anything else
// that names a predecessor is a suspect; the head moves on to the highest seq seen.
func TestCheck(t *testing.T) {
	l60 := Link{Seq: 60, Leaf: leaf(60)}
	for _, tc := range []struct {
		name     string
		learned  bool // the device's head was looked up
		head     *Link
		seq      uint64
		prev     []byte
		suspect  bool
		gap      bool
		hasFloor bool
		behind   bool
		headSeq  uint64 // after
	}{
		{name: "never learned: not checked, the chain starts here", seq: 5, prev: prev(4), headSeq: 5},
		{name: "first reading of a device with none stored", learned: true, seq: 1, headSeq: 1},
		{name: "a predecessor named where none is stored", learned: true, seq: 3, prev: prev(2), suspect: true, headSeq: 3},
		{name: "consecutive: settled by the worker alone", learned: true, head: &l60, seq: 61, prev: prev(60), headSeq: 61},
		{name: "skips 61..69: maybe a fork", learned: true, head: &l60, seq: 70, prev: prev(60), suspect: true, gap: true, hasFloor: true, headSeq: 70},
		{name: "another predecessor: ask the others", learned: true, head: &l60, seq: 61, prev: []byte("elsewhere"), suspect: true, hasFloor: true, headSeq: 61},
		{name: "another predecessor after a gap", learned: true, head: &l60, seq: 65, prev: prev(64), suspect: true, hasFloor: true, headSeq: 65},
		{name: "no prev: nothing to check", learned: true, head: &l60, seq: 61, headSeq: 61},
		{name: "older than the head: held back or redelivered, maybe never checked", learned: true, head: &l60, seq: 59, prev: []byte("x"), suspect: true, behind: true, headSeq: 60},
		{name: "the head again: a redelivery, maybe never settled", learned: true, head: &l60, seq: 60, prev: prev(59), suspect: true, behind: true, headSeq: 60},
		{name: "older than the head, no prev: nothing to check", learned: true, head: &l60, seq: 59, headSeq: 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHeads()
			if tc.learned {
				found := map[string]Link{}
				if tc.head != nil {
					found["d"] = *tc.head
				}
				h.Learn([]string{"d"}, found)
			}
			s, ok := h.Check(Reading{Device: "d", Seq: tc.seq, Leaf: leaf(byte(tc.seq)), Prev: tc.prev})
			if ok != tc.suspect {
				t.Fatalf("suspect %v, want %v", ok, tc.suspect)
			}
			if ok {
				want := Suspect{Device: "d", Seq: tc.seq, Prev: tc.prev, HasFloor: tc.hasFloor, Gap: tc.gap, Behind: tc.behind}
				if tc.hasFloor {
					want.Floor = *tc.head
				}
				if s.Device != want.Device || s.Seq != want.Seq || !bytes.Equal(s.Prev, want.Prev) || s.Floor != want.Floor ||
					s.HasFloor != want.HasFloor || s.Gap != want.Gap || s.Behind != want.Behind {
					t.Fatalf("suspect %+v, want %+v", s, want)
				}
				// ClickHouse is asked from the floor, or for a reading behind the head from
				// the seq before it; without either, from the start of the chain.
				from := want.Floor.Seq
				if tc.behind {
					from = tc.seq - 1
				}
				if sp := s.span(); sp != (Span{Device: "d", From: from, To: tc.seq}) {
					t.Fatalf("span %+v, want d %d..%d", sp, from, tc.seq)
				}
			}
			if got := h.m["d"]; !got.known || got.last.Seq != tc.headSeq || got.last.Leaf != leaf(byte(tc.headSeq)) {
				t.Fatalf("head %+v, want seq %d", got, tc.headSeq)
			}
		})
	}
}

// Unknown lists each device once, and neither learned nor seen ones.
func TestUnknown(t *testing.T) {
	h := NewHeads()
	h.Learn([]string{"a"}, nil)
	h.Check(Reading{Device: "b", Seq: 1})
	if got := h.Unknown([]string{"c", "a", "b", "d", "c"}); !slices.Equal(got, []string{"c", "d"}) {
		t.Fatalf("unknown %v, want [c d]", got)
	}
}

// decide: ClickHouse settles a link when the suspect's prev is the leaf of the device's latest
// stored reading before it (counting the floor); a prev that names an earlier one is a fork,
// broken at once; a predecessor still missing after the wait is a break, and at shutdown an
// open link is unconfirmed.
func TestDecide(t *testing.T) {
	const wait = 10 * time.Second
	links := func(seqs ...byte) []Link {
		var out []Link
		for _, s := range seqs {
			out = append(out, Link{Seq: uint64(s), Leaf: leaf(s)})
		}
		return out
	}
	floor60 := Suspect{Device: "d", Seq: 70, Prev: prev(60), Floor: Link{Seq: 60, Leaf: leaf(60)}, HasFloor: true, Gap: true}
	behind := func(seq, from byte, p []byte) Suspect {
		return Suspect{Seq: uint64(seq), Prev: p, Behind: true, from: uint64(from)}
	}
	for _, tc := range []struct {
		name    string
		s       Suspect
		stored  []Link
		waited  time.Duration
		final   bool
		linked  bool
		kind    Kind
		prevSeq uint64 // the latest stored before the suspect
		hasPrev bool
		further bool
	}{
		{name: "predecessor stored", s: Suspect{Seq: 10, Prev: prev(9)}, stored: links(7, 8, 9), linked: true, prevSeq: 9, hasPrev: true},
		{name: "predecessor stored twice", s: Suspect{Seq: 10, Prev: prev(9)}, stored: links(9, 9), linked: true, prevSeq: 9, hasPrev: true},
		{name: "predecessor is the floor, not stored yet", s: Suspect{Seq: 10, Prev: prev(9), Floor: Link{Seq: 9, Leaf: leaf(9)}, HasFloor: true},
			linked: true, prevSeq: 9, hasPrev: true},
		{name: "readings at or after the suspect do not count", s: Suspect{Seq: 10, Prev: prev(9)}, stored: links(9, 10, 11), linked: true, prevSeq: 9, hasPrev: true},
		{name: "predecessor missing: wait", s: Suspect{Seq: 10, Prev: prev(9)}, stored: links(7, 8), waited: wait - time.Millisecond, prevSeq: 8, hasPrev: true},
		{name: "predecessor missing after the wait: break", s: Suspect{Seq: 10, Prev: prev(9)}, stored: links(7, 8), waited: wait, kind: Break, prevSeq: 8, hasPrev: true},
		{name: "predecessor missing at shutdown: unconfirmed", s: Suspect{Seq: 10, Prev: prev(9)}, stored: links(7, 8), final: true, kind: Unconfirmed, prevSeq: 8, hasPrev: true},
		{name: "missing after the wait at shutdown: break", s: Suspect{Seq: 10, Prev: prev(9)}, stored: links(8), waited: wait, final: true, kind: Break, prevSeq: 8, hasPrev: true},
		{name: "fork to an older stored reading: break at once", s: Suspect{Seq: 10, Prev: prev(7)}, stored: links(7, 8, 9), kind: Break, prevSeq: 9, hasPrev: true},
		{name: "fork to the floor over readings between", s: floor60, stored: links(65), kind: Break, prevSeq: 65, hasPrev: true},
		{name: "gap with nothing between", s: floor60, linked: true, prevSeq: 60, hasPrev: true},
		{name: "nothing stored before it", s: Suspect{Seq: 3, Prev: prev(2)}, waited: wait, kind: Break},
		{name: "nothing stored before it, waiting", s: Suspect{Seq: 3, Prev: prev(2)}},
		{name: "behind the head, predecessor stored", s: behind(10, 9, prev(9)), stored: links(9, 11), linked: true, prevSeq: 9, hasPrev: true},
		{name: "an exact duplicate of a stored reading", s: behind(10, 9, prev(9)), stored: links(9, 10), linked: true, prevSeq: 9, hasPrev: true},
		{name: "behind the head, wrong prev, waiting", s: behind(10, 9, []byte("forged")), stored: links(9, 10), prevSeq: 9, hasPrev: true},
		{name: "behind the head, wrong prev after the wait: break", s: behind(10, 9, []byte("forged")), stored: links(9, 10), waited: wait,
			kind: Break, prevSeq: 9, hasPrev: true},
		{name: "behind the head, fork to an older reading: break at once", s: behind(10, 5, prev(6)), stored: links(6, 9), kind: Break, prevSeq: 9, hasPrev: true},
		{name: "behind the head, nothing in its span: look further back, however long it waited", s: behind(10, 9, prev(8)), waited: wait, further: true},
		{name: "behind the head, nothing in its span at shutdown: unconfirmed", s: behind(10, 9, prev(8)), final: true, kind: Unconfirmed},
		{name: "behind the head, span from seq 0 and nothing stored: break", s: behind(1, 0, prev(0)), waited: wait, kind: Break},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := decide(&tc.s, tc.stored, tc.waited, wait, tc.final)
			if v.linked != tc.linked || v.kind != tc.kind || v.prev.Seq != tc.prevSeq || v.hasPrev != tc.hasPrev || v.further != tc.further {
				t.Fatalf("verdict %+v, want linked %v kind %q prev %d (%v) further %v", v, tc.linked, tc.kind, tc.prevSeq, tc.hasPrev, tc.further)
			}
			if v.hasPrev && v.prev.Leaf != leaf(byte(tc.prevSeq)) {
				t.Fatalf("prev leaf %x, want that of seq %d", v.prev.Leaf, tc.prevSeq)
			}
		})
	}
}

// A Behind suspect's span reaches reach times further back each time, and stops at seq 0.
func TestLookFurther(t *testing.T) {
	const top = ^uint64(0)
	for _, tc := range []struct {
		seq  uint64
		from []uint64 // after each lookFurther
	}{
		{seq: 10_000, from: []uint64{10_000 - reach, 10_000 - reach*reach, 0, 0}},
		{seq: 1, from: []uint64{0}},
		{seq: 0, from: []uint64{0}},
		{seq: top, from: []uint64{top - reach, top - reach*reach}},
	} {
		s := Suspect{Seq: tc.seq, Behind: true, from: max(tc.seq, 1) - 1}
		for i, want := range tc.from {
			s.lookFurther()
			if s.from != want {
				t.Fatalf("seq %d, step %d: from %d, want %d", tc.seq, i, s.from, want)
			}
		}
	}
}

// The anomaly names what the suspect claims (Got) and what ClickHouse holds before it
// (Expected, PrevSeq), and where it was stored.
func TestAnomaly(t *testing.T) {
	now := time.Now()
	s := Suspect{Device: "d", Seq: 10, Prev: prev(7)}
	a := s.anomaly(verdict{kind: Break, prev: Link{Seq: 9, Leaf: leaf(9)}, hasPrev: true}, now, [16]byte{1}, "w1")
	if a.Device != "d" || a.Seq != 10 || a.Kind != Break || !bytes.Equal(a.Got, prev(7)) || !bytes.Equal(a.Expected, prev(9)) ||
		a.PrevSeq != 9 || a.BatchID != [16]byte{1} || a.Worker != "w1" || !a.DetectedAt.Equal(now) {
		t.Fatalf("anomaly %+v", a)
	}
	if a := s.anomaly(verdict{kind: Unconfirmed}, now, [16]byte{}, "w1"); a.Expected != nil || a.PrevSeq != 0 || a.Kind != Unconfirmed {
		t.Fatalf("anomaly without a stored predecessor %+v", a)
	}
}
