package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/pipeline/batch"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/pipeline/write"
)

// Config tunes a worker.
type Config struct {
	BatchSize int           // readings per batch
	FlushAge  time.Duration // a partial batch is flushed after this long
	PullBatch int           // messages per pull
	MaxSize   int           // largest reading accepted (the verifier's limit)
	Worker    string        // recorded with each batch
}

// Writer stores batches and rejects durably; *write.Writer is one.
type Writer interface {
	WriteBatch(ctx context.Context, b *write.Batch) error
	WriteRejects(ctx context.Context, rs []write.Reject) error
}

// Stats are a worker's counters since it started.
type Stats struct {
	Received   uint64            `json:"received"`
	Verified   uint64            `json:"verified"`
	Rejected   uint64            `json:"rejected"`
	Batches    uint64            `json:"batches"`
	Inserted   uint64            `json:"inserted"`
	Retries    uint64            `json:"retries"`
	RejectedBy map[string]uint64 `json:"rejected_by_reason"`
}

// Ingest is one worker.
type Ingest struct {
	js  jetstream.JetStream
	v   *verify.Verifier
	w   Writer
	cfg Config
	log *slog.Logger

	received, verified, rejected, batches, inserted, retries atomic.Uint64
	mu                                                       sync.Mutex
	byReason                                                 map[string]uint64
	notReady                                                 error
}

// New returns a worker; the streams and consumer must exist (consume.EnsureStreams).
func New(js jetstream.JetStream, v *verify.Verifier, w Writer, cfg Config, log *slog.Logger) *Ingest {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.PullBatch <= 0 {
		cfg.PullBatch = 500
	}
	if cfg.FlushAge <= 0 {
		cfg.FlushAge = 200 * time.Millisecond
	}
	return &Ingest{js: js, v: v, w: w, cfg: cfg, log: log, byReason: map[string]uint64{}}
}

// Stats returns a snapshot of the counters.
func (g *Ingest) Stats() Stats {
	g.mu.Lock()
	by := make(map[string]uint64, len(g.byReason))
	for k, v := range g.byReason {
		by[k] = v
	}
	g.mu.Unlock()
	return Stats{Received: g.received.Load(), Verified: g.verified.Load(), Rejected: g.rejected.Load(),
		Batches: g.batches.Load(), Inserted: g.inserted.Load(), Retries: g.retries.Load(), RejectedBy: by}
}

// Ready is nil, or why the worker cannot make progress right now (it keeps retrying).
func (g *Ingest) Ready() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.notReady
}

func (g *Ingest) setReady(err error) {
	g.mu.Lock()
	g.notReady = err
	g.mu.Unlock()
}

// flush is the work of one flush: the messages it covers and what they produced.
type flush struct {
	msgs    []jetstream.Msg
	rejects []write.Reject
	b       *batch.Builder
	first   time.Time
}

// Run pulls and processes messages until ctx ends. On the way out it flushes what it holds if
// it can; whatever is not acknowledged is redelivered to some worker after the ack wait.
func (g *Ingest) Run(ctx context.Context) error {
	cons, err := g.consumer(ctx)
	if err != nil {
		return nil // ctx ended
	}
	f := &flush{b: batch.New(g.cfg.Worker, g.cfg.BatchSize)}
	for ctx.Err() == nil {
		wait := 100 * time.Millisecond
		if len(f.msgs) > 0 {
			wait = max(g.cfg.FlushAge-time.Since(f.first), 5*time.Millisecond)
		}
		want := min(g.cfg.PullBatch, g.cfg.BatchSize-f.b.Len())
		msgs, err := cons.Fetch(max(want, 1), jetstream.FetchMaxWait(wait))
		if err != nil {
			g.failed(fmt.Errorf("pull from %s: %w", consume.ReadingsStream, err))
			sleep(ctx, time.Second)
			continue
		}
		for msg := range msgs.Messages() {
			g.process(ctx, f, msg)
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			g.failed(fmt.Errorf("pull from %s: %w", consume.ReadingsStream, err))
		}
		if len(f.msgs) > 0 && (f.b.Len() >= g.cfg.BatchSize || time.Since(f.first) >= g.cfg.FlushAge) {
			if !g.flush(ctx, f) {
				return nil
			}
			f = &flush{b: batch.New(g.cfg.Worker, g.cfg.BatchSize)}
		}
	}
	if len(f.msgs) > 0 {
		// Best effort on the way out, bounded: what is not written now is redelivered.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		g.flush(fctx, f)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (g *Ingest) consumer(ctx context.Context) (jetstream.Consumer, error) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		cons, err := g.js.Consumer(ctx, consume.ReadingsStream, consume.IngestConsumer)
		if err == nil {
			return cons, nil
		}
		g.failed(fmt.Errorf("consumer %s on %s: %w", consume.IngestConsumer, consume.ReadingsStream, err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func (g *Ingest) failed(err error) {
	g.log.Warn("ingest: will retry", "worker", g.cfg.Worker, "err", err)
	g.setReady(err)
}

// process verifies one message and adds it to the flush, as a reading or as a reject.
func (g *Ingest) process(ctx context.Context, f *flush, msg jetstream.Msg) {
	g.received.Add(1)
	received := time.Now()
	if md, err := msg.Metadata(); err == nil {
		received = md.Timestamp
	}
	v, err := g.v.Check(ctx, msg.Subject(), msg.Data())
	var rej *verify.Rejection
	switch {
	case errors.As(err, &rej):
		f.rejects = append(f.rejects, write.Reject{ReceivedAt: received, Subject: msg.Subject(), Device: rej.Device,
			Reason: rej.Reason, Detail: rej.Detail, Raw: msg.Data()})
	case err != nil:
		// The check could not be made (the ledger did not answer): leave it for later.
		g.failed(err)
		_ = msg.NakWithDelay(time.Second)
		g.received.Add(^uint64(0))
		return
	default:
		r := v.Msg.Reading
		f.b.Add(write.Reading{Device: r.Device, Seq: r.Seq, TS: r.TS, ReceivedAt: received, Raw: msg.Data(),
			Leaf: v.Leaf, Prev: r.Prev, Metrics: r.Metrics})
	}
	if len(f.msgs) == 0 {
		f.first = time.Now()
	}
	f.msgs = append(f.msgs, msg)
}

// flush makes the flush durable (rejects, batch, batch record), retrying with backoff, then
// acknowledges its messages. It returns false if ctx ended first (nothing is acknowledged).
func (g *Ingest) flush(ctx context.Context, f *flush) bool {
	var b *write.Batch
	var rec consume.BatchRecord
	if f.b.Len() > 0 {
		var err error
		if b, rec, err = f.b.Flush(time.Now()); err != nil {
			g.log.Error("ingest: cannot close batch", "err", err)
			return false
		}
	}
	rejectsDone, batchDone, recordDone := len(f.rejects) == 0, b == nil, b == nil
	lastProgress := time.Now()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		var err error
		if !rejectsDone {
			if err = g.w.WriteRejects(ctx, f.rejects); err == nil {
				rejectsDone = true
			}
		}
		if err == nil && !batchDone {
			if err = g.w.WriteBatch(ctx, b); err == nil {
				batchDone = true
			}
		}
		if err == nil && !recordDone {
			if err = consume.PublishBatch(ctx, g.js, rec); err == nil {
				recordDone = true
			}
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		g.retries.Add(1)
		g.failed(fmt.Errorf("flush of %d messages: %w", len(f.msgs), err))
		if time.Since(lastProgress) > 10*time.Second {
			for _, m := range f.msgs {
				_ = m.InProgress() // keep them ours while we retry
			}
			lastProgress = time.Now()
		}
		sleep(ctx, wait)
	}
	for _, m := range f.msgs {
		if err := m.Ack(); err != nil {
			// Redelivered after the ack wait: a duplicate row, visible and removable.
			g.log.Warn("ingest: ack failed; the message will be redelivered", "subject", m.Subject(), "err", err)
		}
	}
	g.setReady(nil)
	g.rejected.Add(uint64(len(f.rejects)))
	if len(f.rejects) > 0 {
		g.mu.Lock()
		for _, r := range f.rejects {
			g.byReason[r.Reason]++
		}
		g.mu.Unlock()
	}
	if b != nil {
		g.verified.Add(uint64(len(b.Readings)))
		g.inserted.Add(uint64(len(b.Readings)))
		g.batches.Add(1)
		g.log.Debug("batch flushed", "batch", rec.ID, "size", rec.Size, "rejects", len(f.rejects))
	}
	return true
}
