package chain

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Config tunes a Checker.
type Config struct {
	Worker string // recorded with each anomaly
	// AckWait is the consumer's ack wait: a held message is kept in progress every AckWait/3.
	// Default DefaultAckWait.
	AckWait time.Duration
	// Wait is how long a suspect whose predecessor is not (yet) stored waits for it, counted
	// while ClickHouse answers, before the break is recorded. Keep it above AckWait, so that a
	// predecessor held by a worker that died is redelivered and stored first. Default
	// AckWait + 5s.
	Wait time.Duration
}

// DefaultAckWait is the ack wait assumed when Config.AckWait is not set.
const DefaultAckWait = 30 * time.Second

const (
	tick         = 100 * time.Millisecond // how often the checker asks, settles and looks up
	finalAfter   = 2 * time.Second        // after the last suspect is held, links still open are recorded as Unconfirmed
	queryTimeout = 10 * time.Second       // one ClickHouse lookup
)

// Recorder writes anomalies durably (ClickHouse `anomalies`); write.Writer.WriteAnomalies is
// one. A message is acknowledged only after its anomaly is recorded.
type Recorder func(ctx context.Context, as []Anomaly) error

// Stats are a checker's counters since it started.
type Stats struct {
	Held      int64  // stored readings whose link is not settled yet (not acknowledged)
	Remote    uint64 // links settled by another worker's answer (it stored the predecessor)
	Lookups   uint64 // links settled by looking them up in ClickHouse (breaks, or no answer in time)
	Anomalies uint64 // broken links recorded
}

// Checker settles the links of one ingest worker's suspects: it holds their messages, asks
// the other workers over core NATS (wire.go), looks up in ClickHouse what no answer settled,
// records the breaks and acknowledges. Hold, Stored, Stats and Ready may be called from any
// goroutine, Learn from the one that owns the Heads; Listen and Run once each.
type Checker struct {
	nc       *nats.Conn
	lookup   Lookup
	record   Recorder
	cfg      Config
	log      *slog.Logger
	instance string // names this worker in questions and answers

	mu    sync.Mutex
	links links
	err   error // the last lookup's failure; nil once one succeeds

	held                       atomic.Int64
	remote, lookups, anomalies atomic.Uint64
}

// NewChecker returns a checker that talks to the other workers over nc, looks links up with
// lookup and records breaks with record.
func NewChecker(nc *nats.Conn, lookup Lookup, record Recorder, cfg Config, log *slog.Logger) *Checker {
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.Wait <= 0 {
		cfg.Wait = cfg.AckWait + 5*time.Second
	}
	return &Checker{nc: nc, lookup: lookup, record: record, cfg: cfg, log: log, instance: nuid.Next(), links: newLinks()}
}

// Stats returns a snapshot of the counters.
func (c *Checker) Stats() Stats {
	return Stats{Held: c.held.Load(), Remote: c.remote.Load(), Lookups: c.lookups.Load(), Anomalies: c.anomalies.Load()}
}

// Ready is nil, or why links cannot be looked up right now (the checker keeps trying).
func (c *Checker) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Learn looks up, in one query, the latest stored reading of the devices of devs that h does
// not know yet. If the lookup fails, those devices' chains are not checked this time.
func (c *Checker) Learn(ctx context.Context, h *Heads, devs []string) {
	unknown := h.Unknown(devs)
	if len(unknown) == 0 {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	found, err := c.lookup.Heads(lctx, unknown)
	if err != nil {
		c.log.WarnContext(ctx, "chain: cannot look up device heads; not checking them this time", "devices", len(unknown), "err", err)
		return
	}
	h.Learn(unknown, found)
}

// Hold takes stored suspects: their messages wait for their links to be settled.
func (c *Checker) Hold(hs []Held) {
	if len(hs) == 0 {
		return
	}
	c.held.Add(int64(len(hs)))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.links.hold(hs, time.Now())
}

// Stored takes readings this worker has just made durable: they settle its own suspects that
// name them, and are kept a while to answer the other workers' questions.
func (c *Checker) Stored(rs iter.Seq[Reading]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.links.stored(rs, time.Now())
}

// Run settles links until ctx ends (the held messages are then redelivered) or until last is
// closed (no more suspects will be held) and every held suspect is settled: once last is
// closed it keeps going for a little while, then records what is left as Unconfirmed.
func (c *Checker) Run(ctx context.Context, last <-chan struct{}) {
	t := time.NewTicker(tick)
	defer t.Stop()
	healthy := time.Now() // since when ClickHouse has answered without failing
	var final time.Time   // set once last is closed
	for {
		select {
		case <-ctx.Done():
			return
		case <-last:
			last, final = nil, time.Now()
		case <-t.C:
		}
		stopping := !final.IsZero() && time.Since(final) > finalAfter
		c.ask(ctx)
		c.mu.Lock()
		stale := c.links.stale(time.Now(), c.cfg.AckWait/3)
		settled, lookup := c.links.take(time.Now(), stopping)
		c.mu.Unlock()
		for _, m := range stale {
			_ = m.InProgress() // still ours while its link is open; a failure only risks a redelivery
		}
		c.ack(ctx, settled)
		c.remote.Add(uint64(len(settled)))
		if len(lookup) > 0 {
			pending, err := c.settle(ctx, lookup, healthy, stopping)
			c.mu.Lock()
			c.err = err
			c.links.wait(pending)
			c.mu.Unlock()
			if err != nil {
				c.log.WarnContext(ctx, "chain: will retry", "worker", c.cfg.Worker, "err", err)
				healthy = time.Now().Add(time.Hour) // not healthy until a lookup succeeds
			} else if healthy.After(time.Now()) {
				healthy = time.Now()
			}
		}
		if !final.IsZero() {
			c.mu.Lock()
			n := c.links.waiting()
			var rest []*waiter
			if n == 0 {
				rest = c.links.drain()
			}
			c.mu.Unlock()
			if n == 0 {
				c.ack(ctx, rest)
				return
			}
		}
	}
}

func (c *Checker) ack(ctx context.Context, ws []*waiter) {
	for _, w := range ws {
		if err := w.Msg.Ack(); err != nil {
			c.log.WarnContext(ctx, "chain: ack failed; the message will be redelivered", "device", w.Device, "seq", w.Seq, "err", err)
		}
	}
	c.held.Add(-int64(len(ws)))
}

// settle looks up the stored readings before each suspect in ClickHouse, decides what it
// can, records the breaks and acknowledges the decided; it returns the suspects still open
// (all of them if the lookup fails). With stopping no link stays open.
func (c *Checker) settle(ctx context.Context, ws []*waiter, healthy time.Time, stopping bool) ([]*waiter, error) {
	stored, err := c.spans(ctx, ws)
	if err != nil {
		return ws, fmt.Errorf("chain check of %d readings: %w", len(ws), err)
	}
	now := time.Now()
	var linked, broken []*waiter
	open := ws[:0]
	for _, w := range ws {
		w.looked = now
		if w.decided == nil {
			v := decide(&w.Suspect, stored[w.Device], now.Sub(later(w.since, healthy)), c.cfg.Wait, stopping)
			switch {
			case v.linked:
				linked = append(linked, w)
				continue
			case v.kind != "":
				w.decided = w.anomaly(v, now, w.Batch, c.cfg.Worker)
			case v.further:
				w.lookFurther()
			}
		}
		if w.decided != nil {
			broken = append(broken, w)
			continue
		}
		if now.Sub(w.touched) > c.cfg.AckWait/3 {
			_ = w.Msg.InProgress() // still ours while its predecessor may be on its way
			w.touched = now
		}
		open = append(open, w)
	}
	c.ack(ctx, linked)
	c.lookups.Add(uint64(len(linked)))
	if len(broken) > 0 {
		as := make([]Anomaly, len(broken))
		for i, w := range broken {
			as[i] = *w.decided
		}
		if err := c.record(ctx, as); err != nil {
			return append(open, broken...), fmt.Errorf("record %d chain anomalies: %w", len(as), err)
		}
		c.anomalies.Add(uint64(len(as)))
		c.lookups.Add(uint64(len(as)))
		c.ack(ctx, broken)
	}
	return open, nil
}

// spans looks up the stored readings the undecided suspects of ws need (Suspect.span), one
// span per device.
func (c *Checker) spans(ctx context.Context, ws []*waiter) (map[string][]Link, error) {
	byDev := map[string]Span{}
	for _, w := range ws {
		if w.decided != nil {
			continue
		}
		sp := w.span()
		if cur, ok := byDev[w.Device]; ok {
			sp.From, sp.To = min(sp.From, cur.From), max(sp.To, cur.To)
		}
		byDev[w.Device] = sp
	}
	if len(byDev) == 0 {
		return nil, nil
	}
	list := make([]Span, 0, len(byDev))
	for _, sp := range byDev {
		list = append(list, sp)
	}
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	return c.lookup.Spans(qctx, list)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
