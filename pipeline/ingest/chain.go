package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/pipeline/write"
)

// Device chains (DESIGN 2.1 `prev`). A reading's prev must be the leaf of the device's previous
// stored reading. A worker checks it against the device's latest reading it has seen: a match
// is the common case and costs nothing. Workers share the consumer, so a device's previous
// reading may have gone to another worker, stored or still on its way: a reading that does not
// match is a suspect, and so is a match that skips seqs (another worker may hold the readings
// between: the link would then be a fork). A suspect is stored like any other, but its message
// is acknowledged only once its link is settled: another worker answers that it stored the
// immediate predecessor (ask, below), or ClickHouse holds the predecessor as the latest
// reading before it (lookup). A link that provably points elsewhere, or whose predecessor
// stays missing for ChainWait of healthy ClickHouse time, is a break, recorded in `anomalies`
// before the acknowledgement. A crash before that redelivers the message, so a break is never
// lost by acknowledging too early.

// chainState is what the worker knows of a device's chain: its latest reading.
type chainState struct {
	last   write.Last
	stored bool // a reading of the device is known (else prev must be absent)
}

// suspect is a stored reading whose link has not been confirmed yet; its message is held.
type suspect struct {
	i        int // index of its message in the flush
	msg      jetstream.Msg
	device   string
	seq      uint64
	prev     []byte
	floor    write.Last // the device's latest reading the worker knew of before this one
	hasFloor bool
	// gap: prev names the floor, but seqs lie between them that another worker may have
	// stored (then prev skips them: a fork). Only ClickHouse can tell; answers cannot.
	gap     bool
	batch   [16]byte
	since   time.Time // handed to the checker
	touched time.Time // last InProgress
	looked  time.Time // last looked up in ClickHouse
	asked   time.Time // last asked the other workers about
	decided *write.Anomaly
}

// Kinds of anomaly.
const (
	kindChainBreak = "chain_break"
	// kindChainUnconfirmed: the worker stopped before the link was settled (the predecessor
	// had not been stored yet): a break unless the predecessor is stored later.
	kindChainUnconfirmed = "chain_unconfirmed"
)

// learnChains looks up, in one query, the latest stored reading of the chunk's devices the
// worker has not seen yet. If the lookup fails, those devices' chains are not checked this time.
func (g *Ingest) learnChains(ctx context.Context, chains map[string]*chainState, c checked) {
	var unknown []string
	asked := map[string]bool{}
	for _, r := range c.results {
		if r.Err != nil || r.Msg.Reading.Prev == nil {
			continue
		}
		dev := r.Msg.Reading.Device
		if chains[dev] == nil && !asked[dev] {
			unknown = append(unknown, dev)
			asked[dev] = true
		}
	}
	if len(unknown) == 0 {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	last, err := g.w.LastReadings(lctx, unknown)
	if err != nil {
		g.log.Warn("ingest: cannot look up device chains; not checking them this time", "devices", len(unknown), "err", err)
		return
	}
	for _, dev := range unknown {
		l, ok := last[dev]
		chains[dev] = &chainState{last: l, stored: ok}
	}
}

// checkChain compares the reading's prev with the device's latest reading the worker knows,
// makes the reading a suspect of the flush if they differ, and moves the chain on. A reading
// older than that one (a redelivery) was checked when it first came.
func (g *Ingest) checkChain(f *flush, chains map[string]*chainState, r write.Reading) {
	st := chains[r.Device]
	if st == nil {
		// Not looked up (its reading has no prev, or the lookup failed): start from here, so
		// that the device's next readings are checked against this one.
		st = &chainState{}
		chains[r.Device] = st
	} else if r.Prev != nil && (!st.stored || st.last.Seq < r.Seq) {
		if !st.stored || !bytes.Equal(r.Prev, st.last.Leaf[:]) {
			f.suspects = append(f.suspects, &suspect{i: len(f.msgs), device: r.Device, seq: r.Seq, prev: r.Prev,
				floor: st.last, hasFloor: st.stored})
		} else if r.Seq > st.last.Seq+1 {
			f.suspects = append(f.suspects, &suspect{i: len(f.msgs), device: r.Device, seq: r.Seq, prev: r.Prev,
				floor: st.last, hasFloor: true, gap: true})
		}
	}
	if !st.stored || r.Seq > st.last.Seq {
		st.last, st.stored = write.Last{Seq: r.Seq, Leaf: r.Leaf}, true
	}
}

// links is the chain bookkeeping shared by the flushers, the NATS handlers and the checker:
// the suspects waiting for their predecessor and, once another worker has asked, the readings
// this worker stored lately. Its methods lock it.
type links struct {
	mu       sync.Mutex
	byPrev   map[string][]*suspect // held suspects by the predecessor leaf they name
	settled  []*suspect            // predecessor found: to acknowledge
	cur, old map[[32]byte]link     // readings this worker stored lately; old goes at the next rotation
	rotated  time.Time
	asked    time.Time // last time another worker asked: stored readings are kept for a minute after
}

// link is a stored reading, as a successor's prev names it.
type link struct {
	device string
	seq    uint64
}

const (
	// linkTTL is how long a worker remembers the readings it stored for the others' questions;
	// a successor usually comes within milliseconds.
	linkTTL = time.Second
	// askEvery spaces the questions about one suspect; after lookupAfter it is looked up in
	// ClickHouse instead.
	askEvery    = 300 * time.Millisecond
	lookupAfter = 2 * time.Second
)

// Workers settle each other's suspects over core NATS. A worker with suspects asks on
// AskSubject "who stored these leaves?" (the leaves, 32 bytes each; reply subject its own);
// a worker that stored some answers with their (device, seq, leaf) records
// (len(device) u8 ‖ device ‖ seq u64 BE ‖ leaf). A worker alone asks nobody, so it pays
// nothing (it keeps what it stored only once asked: the first questions after a second worker
// starts go unanswered); a lost message only delays a link until it is looked up in ClickHouse.
const (
	AskSubject      = "anchorline.ingest.chain.ask"
	tellSubjectRoot = "anchorline.ingest.chain.tell."
	instanceHeader  = "Anchorline-Instance"
	maxAsk          = 16 << 10 // leaves per question
)

// ask publishes the questions about the waiting suspects that are due.
func (g *Ingest) ask() {
	leaves := g.links.due()
	nc := g.js.Conn()
	for len(leaves) > 0 {
		n := min(len(leaves), maxAsk)
		data := make([]byte, 0, 32*n)
		for _, l := range leaves[:n] {
			data = append(data, l[:]...)
		}
		msg := nats.NewMsg(AskSubject)
		msg.Reply = tellSubjectRoot + g.instance
		msg.Header.Set(instanceHeader, g.instance)
		msg.Data = data
		if err := nc.PublishMsg(msg); err != nil {
			g.log.Debug("ingest: chain question not sent; ClickHouse will be asked", "err", err)
			return
		}
		leaves = leaves[n:]
	}
}

// due returns the predecessor leaves of the suspects to ask about now.
func (l *links) due() [][32]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	var out [][32]byte
	for k, ss := range l.byPrev {
		if len(k) != 32 {
			continue // no reading has such a leaf
		}
		for _, s := range ss {
			if !s.gap && now.Sub(s.since) < lookupAfter && now.Sub(s.asked) >= askEvery {
				out = append(out, [32]byte([]byte(k)))
				for _, s := range ss {
					s.asked = now
				}
				break
			}
		}
	}
	return out
}

// onAsk answers another worker's question with the asked readings this worker stored lately.
func (g *Ingest) onAsk(m *nats.Msg) {
	if m.Header.Get(instanceHeader) == g.instance || m.Reply == "" {
		return
	}
	var answer []byte
	l := &g.links
	l.mu.Lock()
	l.asked = time.Now()
	for data := m.Data; len(data) >= 32; data = data[32:] {
		k := [32]byte(data[:32])
		r, ok := l.cur[k]
		if !ok {
			r, ok = l.old[k]
		}
		if ok {
			answer = append(answer, byte(len(r.device)))
			answer = append(answer, r.device...)
			answer = binary.BigEndian.AppendUint64(answer, r.seq)
			answer = append(answer, k[:]...)
		}
	}
	l.mu.Unlock()
	if len(answer) > 0 {
		if err := g.js.Conn().Publish(m.Reply, answer); err != nil {
			g.log.Debug("ingest: chain answer not sent", "err", err)
		}
	}
}

// onTell settles the suspects whose predecessors another worker says it stored.
func (g *Ingest) onTell(m *nats.Msg) {
	data := m.Data
	l := &g.links
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(data) > 0 {
		n := int(data[0])
		if len(data) < 1+n+8+32 {
			g.log.Warn("ingest: malformed chain answer ignored", "bytes", len(m.Data))
			return
		}
		dev := string(data[1 : 1+n])
		seq := binary.BigEndian.Uint64(data[1+n:])
		leaf := string(data[1+n+8 : 1+n+8+32])
		data = data[1+n+8+32:]
		if ss := l.byPrev[leaf]; len(ss) > 0 {
			l.byPrev[leaf] = l.settle(ss, dev, seq)
		}
	}
}

// stored takes the readings this worker has just made durable: they settle its own waiting
// suspects (a predecessor redelivered after its successor came), and while other workers ask
// questions they are kept to answer them.
func (l *links) stored(rs []write.Reading) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byPrev) > 0 {
		for _, r := range rs {
			if ss := l.byPrev[string(r.Leaf[:])]; len(ss) > 0 {
				l.byPrev[string(r.Leaf[:])] = l.settle(ss, r.Device, r.Seq)
			}
		}
	}
	if time.Since(l.asked) > time.Minute {
		l.cur, l.old = nil, nil // alone: nobody asks
		return
	}
	if l.cur == nil || time.Since(l.rotated) > linkTTL {
		l.old, l.cur, l.rotated = l.cur, make(map[[32]byte]link, max(len(l.cur), len(rs))), time.Now()
	}
	for _, r := range rs {
		l.cur[r.Leaf] = link{device: r.Device, seq: r.Seq}
	}
}

// settle moves the suspects of ss that the stored reading (dev, seq) immediately precedes to
// settled and returns the others. An answer settles only a consecutive link: nothing can lie
// between seq and seq+1. Any other (a device that skipped seqs, or a fork to an older reading)
// is left for the lookup in ClickHouse, which sees every reading between and records a fork.
func (l *links) settle(ss []*suspect, dev string, seq uint64) []*suspect {
	keep := ss[:0]
	for _, s := range ss {
		if s.device == dev && seq+1 == s.seq && !s.gap {
			l.settled = append(l.settled, s)
			continue
		}
		keep = append(keep, s)
	}
	return keep
}

// hold takes a flushed batch's suspects: they wait for their predecessor.
func (g *Ingest) hold(ss []*suspect) {
	if len(ss) == 0 {
		return
	}
	g.chainHeld.Add(int64(len(ss)))
	now := time.Now()
	l := &g.links
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range ss {
		s.since, s.touched = now, now
		l.byPrev[string(s.prev)] = append(l.byPrev[string(s.prev)], s)
	}
}

// take returns the settled suspects and removes from the waiting ones those to look up in
// ClickHouse now: all of them if all, else those waiting longer than lookupAfter and not
// looked up within the last second.
func (l *links) take(all bool) (settled, lookup []*suspect) {
	l.mu.Lock()
	defer l.mu.Unlock()
	settled, l.settled = l.settled, nil
	now := time.Now()
	for k, ss := range l.byPrev {
		keep := ss[:0]
		for _, s := range ss {
			if all || (now.Sub(s.since) >= lookupAfter && now.Sub(s.looked) >= time.Second) {
				lookup = append(lookup, s)
				continue
			}
			keep = append(keep, s)
		}
		if len(keep) == 0 {
			delete(l.byPrev, k)
		} else {
			l.byPrev[k] = keep
		}
	}
	return settled, lookup
}

// wait puts suspects back among the waiting ones.
func (l *links) wait(ss []*suspect) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range ss {
		l.byPrev[string(s.prev)] = append(l.byPrev[string(s.prev)], s)
	}
}

func (l *links) waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ss := range l.byPrev {
		n += len(ss)
	}
	return n
}

// checkChains asks the other workers about waiting suspects, acknowledges settled ones and
// looks up in ClickHouse those that no answer settled, until flushed is closed (no more
// suspects will come); then it keeps going for a little while and records what is left as
// unconfirmed.
func (g *Ingest) checkChains(ctx context.Context, flushed <-chan struct{}) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	healthy := time.Now() // since when ClickHouse has answered without failing
	var final time.Time   // set once flushed is closed
	for {
		select {
		case <-ctx.Done():
			return // the held messages are redelivered
		case <-flushed:
			flushed, final = nil, time.Now()
		case <-tick.C:
		}
		last := !final.IsZero() && time.Since(final) > 2*time.Second
		g.ask()
		settled, lookup := g.links.take(last)
		g.ack(settled)
		g.chainRemote.Add(uint64(len(settled)))
		if len(lookup) > 0 {
			pending, err := g.lookup(ctx, lookup, healthy, last)
			if err != nil {
				g.failed(err)
				healthy = time.Now().Add(time.Hour) // not healthy until a lookup succeeds
			} else if healthy.After(time.Now()) {
				healthy = time.Now()
			}
			g.links.wait(pending)
		}
		if !final.IsZero() && g.links.waiting() == 0 {
			g.ack(g.links.drain())
			return
		}
	}
}

func (l *links) drain() []*suspect {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.settled
	l.settled = nil
	return s
}

func (g *Ingest) ack(ss []*suspect) {
	for _, s := range ss {
		if err := s.msg.Ack(); err != nil {
			g.log.Warn("ingest: ack failed; the message will be redelivered", "subject", s.msg.Subject(), "err", err)
		}
	}
	g.chainHeld.Add(-int64(len(ss)))
}

// lookup looks up the stored readings before each suspect in ClickHouse and decides what it
// can; it returns the suspects still undecided. With last, nothing stays undecided: links
// not settled are recorded as unconfirmed.
func (g *Ingest) lookup(ctx context.Context, pending []*suspect, healthy time.Time, last bool) ([]*suspect, error) {
	spans := map[string]*write.Span{}
	for _, s := range pending {
		if s.decided != nil {
			continue
		}
		sp := spans[s.device]
		if sp == nil {
			sp = &write.Span{Device: s.device, From: s.floor.Seq, To: s.seq}
			spans[s.device] = sp
		}
		sp.From, sp.To = min(sp.From, s.floor.Seq), max(sp.To, s.seq)
	}
	var stored map[string][]write.Last
	if len(spans) > 0 {
		list := make([]write.Span, 0, len(spans))
		for _, sp := range spans {
			list = append(list, *sp)
		}
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		stored, err = g.w.Spans(qctx, list)
		cancel()
		if err != nil {
			return pending, fmt.Errorf("chain check of %d readings: %w", len(pending), err)
		}
	}
	now := time.Now()
	var ok, anomalies []*suspect
	keep := pending[:0]
	for _, s := range pending {
		s.looked = now
		if s.decided == nil {
			fine, prev, has, found := s.judge(stored[s.device])
			waited := now.Sub(later(s.since, healthy))
			switch {
			case fine:
				ok = append(ok, s)
				continue
			case found || waited >= g.cfg.ChainWait || last:
				kind := kindChainBreak
				if !found && waited < g.cfg.ChainWait {
					kind = kindChainUnconfirmed
				}
				s.decided = &write.Anomaly{DetectedAt: now, Device: s.device, Seq: s.seq, Kind: kind,
					Got: s.prev, PrevSeq: prev.Seq, BatchID: s.batch, Worker: g.cfg.Worker}
				if has {
					s.decided.Expected = bytes.Clone(prev.Leaf[:])
				}
			}
		}
		if s.decided != nil {
			anomalies = append(anomalies, s)
			continue
		}
		if now.Sub(s.touched) > g.cfg.AckWait/3 {
			_ = s.msg.InProgress() // still ours while its predecessor may be on its way
			s.touched = now
		}
		keep = append(keep, s)
	}
	g.ack(ok)
	g.chainLookups.Add(uint64(len(ok)))
	if len(anomalies) > 0 {
		as := make([]write.Anomaly, len(anomalies))
		for i, s := range anomalies {
			as[i] = *s.decided
		}
		if err := g.w.WriteAnomalies(ctx, as); err != nil {
			return append(keep, anomalies...), fmt.Errorf("record %d chain anomalies: %w", len(as), err)
		}
		g.anomalies.Add(uint64(len(as)))
		g.chainLookups.Add(uint64(len(as)))
		g.ack(anomalies)
	}
	return keep, nil
}

// judge places the suspect among its device's stored readings before it (plus the floor,
// which may not be stored yet). prev is the latest of them (has: there is one). ok: the
// suspect's prev is prev's leaf. found: it is the leaf of an earlier one, so the link is
// broken whatever else arrives.
func (s *suspect) judge(stored []write.Last) (ok bool, prev write.Last, has, found bool) {
	cands := stored
	if s.hasFloor {
		cands = append([]write.Last{s.floor}, stored...)
	}
	for _, c := range cands {
		if c.Seq < s.seq && (!has || c.Seq > prev.Seq) {
			prev, has = c, true
		}
	}
	for _, c := range cands {
		if c.Seq >= s.seq || !bytes.Equal(c.Leaf[:], s.prev) {
			continue
		}
		if c.Seq == prev.Seq {
			return true, prev, has, true
		}
		found = true
	}
	return false, prev, has, found
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
