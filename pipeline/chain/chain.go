package chain

import (
	"bytes"
	"time"
)

// The rules. A worker checks a reading's prev against the device's latest reading it has seen
// (Heads): a match is the common case and costs nothing. Workers share the consumer, so a
// device's previous reading may have gone to another worker, stored or still on its way: a
// reading that does not match is a suspect, and so is a match that skips seqs (another worker
// may hold the readings between: the link would then be a fork). A suspect is stored like any
// other, but its message is acknowledged only once its link is settled: another worker answers
// that it stored the immediate predecessor (seq-1, and never for a gap), or ClickHouse holds the
// predecessor as the latest reading before it (decide). A reading at or below the device's
// latest reading the worker knows is a suspect too (Behind): it was held back (its check
// deferred, say) or redelivered (its worker died before settling it) while a later reading
// was checked, so its own link may never have been checked; ClickHouse places it among the
// stored readings before it (or an answer names its immediate predecessor), and an exact
// duplicate of a stored reading links like the original. A link that provably points elsewhere,
// or whose predecessor stays missing for Config.Wait of healthy ClickHouse time, is a Break,
// recorded before the acknowledgement; a crash before that redelivers the message, so a break is
// never lost by acknowledging too early. A worker that stops with links still open records
// them as Unconfirmed.

// Kind is the kind of an anomaly (the `kind` column of `anomalies`).
type Kind string

// Kinds of anomaly.
const (
	// Break: the reading's prev is not the leaf of the device's previous stored reading.
	Break Kind = "chain_break"
	// Unconfirmed: the worker stopped before the link was settled (the predecessor had not
	// been stored yet): a break unless the predecessor is stored later.
	Unconfirmed Kind = "chain_unconfirmed"
)

// Link is a device's reading as far as its chain is concerned.
type Link struct {
	Seq  uint64
	Leaf [32]byte
}

// Reading is a reading as the chain check sees it: arriving (Heads.Check) or stored
// (Checker.Stored, a peer's answer; Prev is not used there).
type Reading struct {
	Device string
	Seq    uint64
	Leaf   [32]byte
	Prev   []byte // nil: the reading names no predecessor
}

// Span names a device's readings with From <= seq < To.
type Span struct {
	Device   string
	From, To uint64
}

// Anomaly is a link found broken, a row of `anomalies`: the reading's prev (Got) is not the
// leaf of the device's previous stored reading (Expected; empty if there was none).
type Anomaly struct {
	DetectedAt time.Time
	Device     string
	Seq        uint64
	Kind       Kind
	Expected   []byte
	Got        []byte
	PrevSeq    uint64 // seq of the previous stored reading, 0 if none
	BatchID    [16]byte
	Worker     string
}

// Heads is what one worker knows of each device's chain: its latest reading. It is not safe
// for concurrent use: one goroutine, the one that sees readings in arrival order, owns it.
type Heads struct {
	m map[string]head
}

type head struct {
	last  Link
	known bool // a reading of the device is known (else prev must be absent)
}

// NewHeads returns an empty Heads.
func NewHeads() *Heads { return &Heads{m: map[string]head{}} }

// Unknown returns, once each and in order, the devices of devs whose head has been neither
// learned nor seen: look them up (Lookup.Heads) and Learn them before Check.
func (h *Heads) Unknown(devs []string) []string {
	var out []string
	listed := map[string]bool{}
	for _, d := range devs {
		if _, ok := h.m[d]; !ok && !listed[d] {
			out = append(out, d)
			listed[d] = true
		}
	}
	return out
}

// Learn records the looked-up heads of devs: found holds those that have a stored reading; the
// others have none, so their first reading must name no predecessor.
func (h *Heads) Learn(devs []string, found map[string]Link) {
	for _, d := range devs {
		l, ok := found[d]
		h.m[d] = head{last: l, known: ok}
	}
}

// Check compares r's prev with the device's latest reading this worker knows and moves the
// chain on. It returns a suspect when they differ, when they match but seqs lie between (Gap),
// and when r is not above that reading (Behind: a reading held back or redelivered, whose
// link may never have been checked; r's own earlier copy may be stored). A device never
// learned is not checked: its chain starts at r.
func (h *Heads) Check(r Reading) (Suspect, bool) {
	st, seen := h.m[r.Device]
	s := Suspect{Device: r.Device, Seq: r.Seq, Prev: r.Prev}
	suspect := false
	if seen && r.Prev != nil {
		switch {
		case st.known && r.Seq <= st.last.Seq:
			s.Behind, s.from, suspect = true, max(r.Seq, 1)-1, true
		case !st.known || !bytes.Equal(r.Prev, st.last.Leaf[:]):
			s.Floor, s.HasFloor, suspect = st.last, st.known, true
		case r.Seq > st.last.Seq+1:
			s.Floor, s.HasFloor, s.Gap, suspect = st.last, true, true, true
		}
	}
	if !st.known || r.Seq > st.last.Seq {
		st = head{last: Link{Seq: r.Seq, Leaf: r.Leaf}, known: true}
	}
	h.m[r.Device] = st
	if !suspect {
		return Suspect{}, false
	}
	return s, true
}

// Suspect is a reading whose link to its predecessor is not confirmed yet.
type Suspect struct {
	Device string
	Seq    uint64
	Prev   []byte
	// Floor is the device's latest reading the worker knew before this one (HasFloor: it knew
	// one); it may not be stored yet.
	Floor    Link
	HasFloor bool
	// Gap: prev names the floor, but seqs lie between them that another worker may have
	// stored (then prev skips them: a fork). Only ClickHouse can tell; answers cannot.
	Gap bool
	// Behind: the reading is not above the device's latest reading the worker knew, so it has
	// no floor. ClickHouse is asked for the stored readings from seq-1 up to it; while that
	// span holds none, each lookup reaches further back (lookFurther), down to seq 0.
	Behind bool
	from   uint64 // for Behind: where the span looked up starts
}

// reach is how many times wider a Behind suspect's span gets each time it held no stored
// reading before the suspect: a device that skipped seqs, or one whose predecessor is not
// stored yet, is placed within a few lookups without reading its whole history at once.
const reach = 64

// settledBy reports whether another worker's stored reading (device, seq) settles the link:
// only an immediate predecessor does, since nothing can lie between seq and seq+1. Any other
// link (a device that skipped seqs, or a fork to an older reading) is left to ClickHouse, which
// sees every reading between.
func (s *Suspect) settledBy(device string, seq uint64) bool {
	return s.Device == device && seq+1 == s.Seq && !s.Gap
}

// span is the seq range ClickHouse must show to place the suspect: from its floor (0 without
// one; for Behind, as far back as it has been looked for) up to it.
func (s *Suspect) span() Span {
	if s.Behind {
		return Span{Device: s.Device, From: s.from, To: s.Seq}
	}
	return Span{Device: s.Device, From: s.Floor.Seq, To: s.Seq}
}

// lookFurther widens a Behind suspect's span back (reach times), down to seq 0 at most.
func (s *Suspect) lookFurther() {
	if w := s.Seq - s.from; w == 0 || w > s.Seq/reach {
		s.from = 0
	} else {
		s.from = s.Seq - w*reach
	}
}

// verdict is what the stored readings before a suspect say of its link.
type verdict struct {
	linked  bool // prev is the leaf of the latest reading before the suspect
	kind    Kind // a broken link's kind; "" while the link is open (and when linked)
	prev    Link // the latest reading before the suspect (has: there is one)
	hasPrev bool
	further bool // open: a Behind suspect's span held no stored reading; look further back
}

// decide settles a suspect's link from its device's stored readings before it (a
// Lookup.Spans answer, in any order). waited is how long the suspect has waited while
// ClickHouse answered; wait is how long a missing predecessor is waited for. With final (the
// worker is stopping) no link stays open: one not settled is Unconfirmed. A Behind suspect
// whose span holds no stored reading before it is not placed yet, however long it waited:
// the previous stored reading may lie further back (further).
func decide(s *Suspect, stored []Link, waited, wait time.Duration, final bool) verdict {
	linked, prev, has, found := s.judge(stored)
	v := verdict{linked: linked, prev: prev, hasPrev: has}
	unplaced := s.Behind && !has && s.from > 0
	switch {
	case linked:
	case found || (waited >= wait && !unplaced):
		v.kind = Break
	case final:
		v.kind = Unconfirmed
	case unplaced:
		v.further = true
	}
	return v
}

// judge places the suspect among its device's stored readings before it (plus the floor,
// which may not be stored yet). prev is the latest of them (has: there is one). ok: the
// suspect's prev is prev's leaf. found: it is the leaf of an earlier one, so the link is
// broken whatever else arrives (a fork).
func (s *Suspect) judge(stored []Link) (ok bool, prev Link, has, found bool) {
	cands := stored
	if s.HasFloor {
		cands = append([]Link{s.Floor}, stored...)
	}
	for _, c := range cands {
		if c.Seq < s.Seq && (!has || c.Seq > prev.Seq) {
			prev, has = c, true
		}
	}
	for _, c := range cands {
		if c.Seq >= s.Seq || !bytes.Equal(c.Leaf[:], s.Prev) {
			continue
		}
		if c.Seq == prev.Seq {
			return true, prev, has, true
		}
		found = true
	}
	return false, prev, has, found
}

// anomaly is the record of a broken link.
func (s *Suspect) anomaly(v verdict, now time.Time, batch [16]byte, worker string) *Anomaly {
	a := &Anomaly{DetectedAt: now, Device: s.Device, Seq: s.Seq, Kind: v.kind, Got: s.Prev, PrevSeq: v.prev.Seq,
		BatchID: batch, Worker: worker}
	if v.hasPrev {
		a.Expected = bytes.Clone(v.prev.Leaf[:])
	}
	return a
}
