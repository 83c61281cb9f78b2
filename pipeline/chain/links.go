package chain

import (
	"iter"
	"time"
)

const (
	// linkTTL is how long a worker remembers the readings it stored for the others' questions;
	// a successor usually comes within milliseconds.
	linkTTL = time.Second
	// rememberFor: a worker keeps what it stores for the others' questions only while it has
	// been asked within this long; a worker alone is never asked, so it pays nothing.
	rememberFor = time.Minute
	// askEvery spaces the questions about one predecessor; after lookupAfter a suspect is
	// looked up in ClickHouse instead, and again at most every lookupEvery.
	askEvery    = 300 * time.Millisecond
	lookupAfter = 2 * time.Second
	lookupEvery = time.Second
)

// Msg is a suspect's held message: acknowledged once its link is settled, kept in progress
// while it waits. jetstream.Msg is one.
type Msg interface {
	Ack() error
	InProgress() error
}

// Held is a suspect that is stored (in batch Batch) with its message, not acknowledged yet.
type Held struct {
	Suspect
	Batch [16]byte
	Msg   Msg
}

// waiter is a held suspect waiting for its link to be settled.
type waiter struct {
	Held
	since   time.Time // held from
	touched time.Time // last kept in progress
	looked  time.Time // last looked up in ClickHouse
	asked   time.Time // last asked the other workers about
	decided *Anomaly  // broken, not recorded yet
}

// links is the bookkeeping of held suspects: those waiting for their predecessor by the leaf
// they name, those settled, and (once another worker has asked) the readings this worker
// stored lately, to answer. It does no I/O and reads no clock: every method that needs the
// time is given it. It is not safe for concurrent use (the Checker locks it).
type links struct {
	byPrev   map[string][]*waiter // waiting suspects by the predecessor leaf they name
	settled  []*waiter            // predecessor found: to acknowledge
	cur, old map[[32]byte]kept    // readings this worker stored lately; old goes at the next rotation
	rotated  time.Time
	asked    time.Time // last time another worker asked
}

// kept is a reading this worker stored, as a successor's prev names it.
type kept struct {
	device string
	seq    uint64
}

func newLinks() links { return links{byPrev: map[string][]*waiter{}} }

// hold takes held suspects: they wait for their predecessor from now.
func (l *links) hold(hs []Held, now time.Time) {
	for _, h := range hs {
		w := &waiter{Held: h, since: now, touched: now}
		l.byPrev[string(h.Prev)] = append(l.byPrev[string(h.Prev)], w)
	}
}

// due returns the predecessor leaves to ask the other workers about now: those of suspects
// that are no gap, wait less than lookupAfter and were not asked about within askEvery. Every
// suspect naming a returned leaf counts as asked.
func (l *links) due(now time.Time) [][32]byte {
	var out [][32]byte
	for k, ws := range l.byPrev {
		if len(k) != 32 {
			continue // no reading has such a leaf
		}
		for _, w := range ws {
			if !w.Gap && now.Sub(w.since) < lookupAfter && now.Sub(w.asked) >= askEvery {
				out = append(out, [32]byte([]byte(k)))
				for _, w := range ws {
					w.asked = now
				}
				break
			}
		}
	}
	return out
}

// answer returns the readings among leaves that this worker stored lately, for another
// worker's question; being asked makes it remember what it stores from now on.
func (l *links) answer(leaves [][32]byte, now time.Time) []Reading {
	l.asked = now
	var out []Reading
	for _, k := range leaves {
		r, ok := l.cur[k]
		if !ok {
			r, ok = l.old[k]
		}
		if ok {
			out = append(out, Reading{Device: r.device, Seq: r.seq, Leaf: k})
		}
	}
	return out
}

// told settles the suspects whose predecessors another worker says it stored.
func (l *links) told(rs []Reading) {
	for _, r := range rs {
		if ws := l.byPrev[string(r.Leaf[:])]; len(ws) > 0 {
			l.byPrev[string(r.Leaf[:])] = l.settle(ws, r.Device, r.Seq)
		}
	}
}

// stored takes the readings this worker has just made durable: they settle its own waiting
// suspects (a predecessor redelivered after its successor came), and while other workers ask
// questions they are kept to answer them.
func (l *links) stored(rs iter.Seq[Reading], now time.Time) {
	if len(l.byPrev) > 0 {
		for r := range rs {
			if ws := l.byPrev[string(r.Leaf[:])]; len(ws) > 0 {
				l.byPrev[string(r.Leaf[:])] = l.settle(ws, r.Device, r.Seq)
			}
		}
	}
	if now.Sub(l.asked) > rememberFor {
		l.cur, l.old = nil, nil // alone: nobody asks
		return
	}
	if l.cur == nil || now.Sub(l.rotated) > linkTTL {
		l.old, l.cur, l.rotated = l.cur, make(map[[32]byte]kept, max(len(l.cur), 64)), now
	}
	for r := range rs {
		l.cur[r.Leaf] = kept{device: r.Device, seq: r.Seq}
	}
}

// settle moves the suspects of ws that the stored reading (device, seq) settles
// (Suspect.settledBy) to settled and returns the others.
func (l *links) settle(ws []*waiter, device string, seq uint64) []*waiter {
	keep := ws[:0]
	for _, w := range ws {
		if w.settledBy(device, seq) {
			l.settled = append(l.settled, w)
			continue
		}
		keep = append(keep, w)
	}
	return keep
}

// take returns the settled suspects and removes from the waiting ones those to look up in
// ClickHouse now: all of them if all, else those waiting at least lookupAfter and not looked
// up within lookupEvery.
func (l *links) take(now time.Time, all bool) (settled, lookup []*waiter) {
	settled, l.settled = l.settled, nil
	for k, ws := range l.byPrev {
		keep := ws[:0]
		for _, w := range ws {
			if all || (now.Sub(w.since) >= lookupAfter && now.Sub(w.looked) >= lookupEvery) {
				lookup = append(lookup, w)
				continue
			}
			keep = append(keep, w)
		}
		if len(keep) == 0 {
			delete(l.byPrev, k)
		} else {
			l.byPrev[k] = keep
		}
	}
	return settled, lookup
}

// stale returns the messages of the waiting suspects not kept in progress within every (the
// first lookup may come after the ack wait, lookupAfter), counting them as kept from now.
func (l *links) stale(now time.Time, every time.Duration) []Msg {
	var out []Msg
	for _, ws := range l.byPrev {
		for _, w := range ws {
			if now.Sub(w.touched) > every {
				out = append(out, w.Msg)
				w.touched = now
			}
		}
	}
	return out
}

// wait puts suspects back among the waiting ones.
func (l *links) wait(ws []*waiter) {
	for _, w := range ws {
		l.byPrev[string(w.Prev)] = append(l.byPrev[string(w.Prev)], w)
	}
}

// waiting counts the waiting suspects.
func (l *links) waiting() int {
	n := 0
	for _, ws := range l.byPrev {
		n += len(ws)
	}
	return n
}

// drain returns the settled suspects.
func (l *links) drain() []*waiter {
	s := l.settled
	l.settled = nil
	return s
}
