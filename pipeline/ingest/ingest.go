package ingest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/pipeline/batch"
	"github.com/anchorline/anchorline/pipeline/chain"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/stream"
)

// Config tunes a worker.
type Config struct {
	BatchSize int           // readings per batch (a ClickHouse insert)
	FlushAge  time.Duration // a partial batch is flushed after this long
	PullBatch int           // messages a pull asks for (the consumer keeps pulls overlapping)
	MaxSize   int           // largest reading accepted (the verifier's limit)
	Worker    string        // recorded with each batch
	Verifiers int           // goroutines verifying signatures; default GOMAXPROCS
	Flushers  int           // batches written concurrently; default 2
	AckWait   time.Duration // the consumer's ack wait; default 30s
	// ChainWait is how long a reading whose prev is not (yet) stored waits for its predecessor
	// (which another worker may be writing) before the break is recorded (chain.Config.Wait).
	// Keep it above AckWait, so that a predecessor held by a worker that died is redelivered
	// and stored first. Default AckWait + 5s.
	ChainWait time.Duration
	// Rules, if set, makes the worker publish each stored batch's verified readings for the
	// rules stage (stream.Verified) before it acknowledges them.
	Rules *RulesFeed
}

// RulesFeed is how a worker feeds the rules stage: the number of shards of stream.Verified,
// and the ledger height whose device registry the worker has applied (stamped on each
// message: the rules stage applies the rules in force at that height).
type RulesFeed struct {
	Shards int
	Height func() uint64
}

// Writer stores batches, rejects and chain breaks durably; *write.Writer is one.
type Writer interface {
	WriteBatch(ctx context.Context, b *write.Batch) error
	WriteRejects(ctx context.Context, rs []write.Reject) error
	WriteAnomalies(ctx context.Context, as []chain.Anomaly) error
}

// Observer receives measurements for histograms (the services layer exports them through
// OpenTelemetry); nil methods are not called.
type Observer interface {
	VerifyBatch(n int, d time.Duration)           // one chunk verified
	Flush(readings, rejects int, d time.Duration) // one flush made durable (rows, batch record)
}

// Stats are a worker's counters since it started.
type Stats struct {
	Received     uint64                   `json:"received"`
	Verified     uint64                   `json:"verified"`
	Rejected     uint64                   `json:"rejected"`
	Batches      uint64                   `json:"batches"`
	Inserted     uint64                   `json:"inserted"`
	Retries      uint64                   `json:"retries"`
	Deferred     uint64                   `json:"deferred"`      // checks that could not be made (ledger down): redelivered later
	Anomalies    uint64                   `json:"anomalies"`     // broken chain links recorded
	ChainHeld    int64                    `json:"chain_held"`    // stored readings whose link to their predecessor is not settled yet (not acknowledged)
	ChainRemote  uint64                   `json:"chain_remote"`  // links settled by another worker's answer (it stored the predecessor)
	ChainLookups uint64                   `json:"chain_lookups"` // links settled by looking them up in ClickHouse (breaks, or no answer in time)
	Redelivered  uint64                   `json:"redelivered"`   // messages JetStream delivered more than once (possible duplicates)
	RejectedBy   map[verify.Reason]uint64 `json:"rejected_by_reason"`
}

// Ingest is one worker. A worker is a pipeline: a pull consumer feeds chunks of messages to
// verifier goroutines (batch signature verification); an assembler checks device chains
// (chain.Heads) and cuts verified readings into batches; flusher goroutines write each batch
// and its rejects to ClickHouse, publish its batch record, and only then acknowledge its
// messages, except those of chain suspects, which the chain.Checker acknowledges once their
// links are settled.
type Ingest struct {
	js  jetstream.JetStream
	v   *verify.Verifier
	w   Writer
	cfg Config
	log *slog.Logger
	obs Observer

	received, verified, rejected, batches, inserted, retries, deferred, redelivered atomic.Uint64

	chain *chain.Checker

	mu       sync.Mutex
	byReason map[verify.Reason]uint64
	notReady error
}

// New returns a worker that stores with w and checks device chains against what lookup reads
// of the stored readings; the streams and consumer must exist (consume.EnsureStreams).
func New(js jetstream.JetStream, v *verify.Verifier, w Writer, lookup chain.Lookup, cfg Config, log *slog.Logger) *Ingest {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.PullBatch <= 0 {
		cfg.PullBatch = 500
	}
	if cfg.FlushAge <= 0 {
		cfg.FlushAge = 200 * time.Millisecond
	}
	if cfg.Verifiers <= 0 {
		cfg.Verifiers = runtime.GOMAXPROCS(0)
	}
	if cfg.Flushers <= 0 {
		cfg.Flushers = 2
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = chain.DefaultAckWait
	}
	checker := chain.NewChecker(js.Conn(), lookup, w.WriteAnomalies, chain.Config{Worker: cfg.Worker, AckWait: cfg.AckWait, Wait: cfg.ChainWait}, log)
	return &Ingest{js: js, v: v, w: w, cfg: cfg, log: log, byReason: map[verify.Reason]uint64{}, chain: checker}
}

// Observe sets the observer; call before Run.
func (g *Ingest) Observe(o Observer) { g.obs = o }

// Stats returns a snapshot of the counters.
func (g *Ingest) Stats() Stats {
	g.mu.Lock()
	by := make(map[verify.Reason]uint64, len(g.byReason))
	for k, v := range g.byReason {
		by[k] = v
	}
	g.mu.Unlock()
	c := g.chain.Stats()
	return Stats{Received: g.received.Load(), Verified: g.verified.Load(), Rejected: g.rejected.Load(),
		Batches: g.batches.Load(), Inserted: g.inserted.Load(), Retries: g.retries.Load(), Deferred: g.deferred.Load(),
		Anomalies: c.Anomalies, ChainHeld: c.Held, ChainRemote: c.Remote, ChainLookups: c.Lookups,
		Redelivered: g.redelivered.Load(), RejectedBy: by}
}

// Ready is nil, or why the worker cannot make progress right now (it keeps retrying): a write,
// a pull or a chain lookup failing.
func (g *Ingest) Ready() error {
	g.mu.Lock()
	err := g.notReady
	g.mu.Unlock()
	if err != nil {
		return err
	}
	return g.chain.Ready()
}

func (g *Ingest) setReady(err error) {
	g.mu.Lock()
	g.notReady = err
	g.mu.Unlock()
}

func (g *Ingest) failed(err error) {
	g.log.Warn("ingest: will retry", "worker", g.cfg.Worker, "err", err)
	g.setReady(err)
}

// chunk is a run of messages in arrival order; n numbers chunks so that the assembler can put
// them back in order after parallel verification (a device's chain is checked in order).
type chunk struct {
	n    uint64
	msgs []jetstream.Msg
}

// checked is a chunk of messages with their verification results.
type checked struct {
	n       uint64
	msgs    []jetstream.Msg
	results []verify.Result
}

// flush is the work of one flush: the messages it covers and what they produced.
type flush struct {
	msgs     []jetstream.Msg
	rejects  []write.Reject
	suspects []suspect // readings whose chain link is settled after the flush
	b        *batch.Builder
	first    time.Time
	// The lowest and highest Readings stream sequence of msgs (seqUnknown if one had no
	// metadata): the batch record carries them for retention.
	seqMin, seqMax uint64
	seqUnknown     bool
	// turn is closed when the previous flush has published its verified readings (or given
	// up), next when this one has: flushes run concurrently, but the rules stage gets a
	// worker's batches in the order they were cut, so a device's readings come in seq order.
	turn, next chan struct{}
}

// suspect is a reading of the flush whose chain link is to be settled: its message (msgs[i])
// is acknowledged by the chain checker, not by the flush.
type suspect struct {
	i int
	chain.Suspect
}

// Run pulls and processes messages until ctx ends. On the way out it finishes what it holds
// if it can within a few seconds; whatever is not acknowledged is redelivered to some worker.
func (g *Ingest) Run(ctx context.Context) error {
	cons, err := g.consumer(ctx)
	if err != nil {
		return nil // ctx ended
	}
	// The pipeline keeps going a little after ctx ends, to finish in-flight work.
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()

	// Workers answer each other's questions about chain links.
	stopListening, err := g.chain.Listen()
	if err != nil {
		return err
	}
	defer stopListening()

	msgs := make(chan jetstream.Msg, g.cfg.PullBatch)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done(): // not acked: redelivered after the ack wait
		}
	}, jetstream.PullMaxMessages(g.cfg.PullBatch), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoHeartbeat) {
			g.failed(fmt.Errorf("pull from %s: %w", stream.Readings, err))
		}
	}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", stream.Readings, err)
	}

	chunks := make(chan chunk, g.cfg.Verifiers)
	results := make(chan checked, g.cfg.Verifiers)
	flushes := make(chan *flush, g.cfg.Flushers)

	var verifiers, flushers sync.WaitGroup
	go func() { // chunker: stops at ctx end
		defer close(chunks)
		g.chunk(ctx, msgs, chunks)
		cc.Stop()
	}()
	for range g.cfg.Verifiers {
		verifiers.Add(1)
		go func() {
			defer verifiers.Done()
			for c := range chunks {
				in := make([]verify.Input, len(c.msgs))
				for i, m := range c.msgs {
					in[i] = verify.Input{Subject: m.Subject(), Raw: m.Data()}
				}
				out := make([]verify.Result, len(c.msgs))
				t := time.Now()
				g.v.CheckBatch(work, in, out)
				if g.obs != nil {
					g.obs.VerifyBatch(len(in), time.Since(t))
				}
				results <- checked{n: c.n, msgs: c.msgs, results: out}
			}
		}()
	}
	go func() { verifiers.Wait(); close(results) }()
	for range g.cfg.Flushers {
		flushers.Add(1)
		go func() {
			defer flushers.Done()
			for f := range flushes {
				g.flush(work, f)
			}
		}()
	}
	// Once ctx ends, in-flight work gets a bounded time (a flush retrying against a ClickHouse
	// that is down would otherwise hold the shutdown): then it is abandoned, unacknowledged.
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
		case <-finished:
			return
		}
		select {
		case <-time.After(10 * time.Second):
			stopWork()
		case <-finished:
		}
	}()
	flushed := make(chan struct{})
	chainsDone := make(chan struct{})
	go func() { defer close(chainsDone); g.chain.Run(work, flushed) }()
	g.assemble(ctx, results, flushes)
	close(flushes)
	flushers.Wait()
	close(flushed)
	<-chainsDone
	return nil
}

func (g *Ingest) consumer(ctx context.Context) (jetstream.Consumer, error) {
	return retry.Do(ctx, retry.Default(), func(ctx context.Context) (jetstream.Consumer, error) {
		cons, err := g.js.Consumer(ctx, stream.Readings, stream.IngestConsumer)
		if err != nil {
			err = fmt.Errorf("consumer %s on %s: %w", stream.IngestConsumer, stream.Readings, err)
			g.failed(err)
		}
		return cons, err
	}, nil)
}

// Chunk sizes. Batch verification costs less per signature the more it verifies at once, and
// flattens above about a thousand (pipeline/verify's BenchmarkCheckBatchSizes on the 2-core
// machine, a whole check per reading: about 46 µs alone, 17 in 64s, 13 in 256s, 12 in 512s,
// 11-12 in 1024s to 4096s). So a chunk waits a little for more messages: it is cut at
// maxChunk, or chunkWait(FlushAge) after its first message, whichever comes first. The wait
// is small against FlushAge, which a trickle waits anyway; a 2 ms wait cut chunks of one or
// two hundred whenever the pull did not keep up.
const (
	maxChunk     = 2048
	minChunkWait = 2 * time.Millisecond
	maxChunkWait = 25 * time.Millisecond
)

func chunkWait(flushAge time.Duration) time.Duration {
	return min(max(flushAge/8, minChunkWait), maxChunkWait)
}

// chunk groups messages for batch verification: a chunk is sent when it is full or
// chunkWait after its first message, so a trickle is not held back.
func (g *Ingest) chunk(ctx context.Context, msgs <-chan jetstream.Msg, chunks chan<- chunk) {
	size := min(maxChunk, max(g.cfg.BatchSize, 64))
	wait := chunkWait(g.cfg.FlushAge)
	var cur []jetstream.Msg
	var n uint64
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	send := func() {
		if len(cur) > 0 {
			chunks <- chunk{n: n, msgs: cur}
			n++
			cur = nil
		}
	}
	for {
		select {
		case <-ctx.Done():
			send()
			return
		case m := <-msgs:
			g.received.Add(1)
			if len(cur) == 0 {
				timer.Reset(wait)
			}
			cur = append(cur, m)
			if len(cur) >= size {
				timer.Stop()
				send()
			}
		case <-timer.C:
			send()
		}
	}
}

// assemble cuts verified readings into batches and hands each full or old enough batch to the
// flushers. It returns when results is closed, after handing over what is left.
func (g *Ingest) assemble(ctx context.Context, results <-chan checked, flushes chan<- *flush) {
	turn := make(chan struct{})
	close(turn)
	newFlush := func() *flush {
		f := &flush{b: batch.New(g.cfg.Worker, g.cfg.BatchSize), turn: turn, next: make(chan struct{})}
		turn = f.next
		return f
	}
	f := newFlush()
	heads := chain.NewHeads()
	tick := time.NewTicker(max(g.cfg.FlushAge/4, 5*time.Millisecond))
	defer tick.Stop()
	handOver := func() {
		if len(f.msgs) > 0 {
			flushes <- f
			f = newFlush()
		}
	}
	// Chunks come back from the verifiers in any order: put them back in arrival order.
	var next uint64
	early := map[uint64]checked{}
	for {
		select {
		case c, ok := <-results:
			if !ok {
				handOver()
				return
			}
			early[c.n] = c
			for {
				c, ok := early[next]
				if !ok {
					break
				}
				delete(early, next)
				next++
				g.chain.Learn(ctx, heads, chained(c))
				for i, m := range c.msgs {
					g.add(f, m, c.results[i], heads)
					if f.b.Len() >= g.cfg.BatchSize {
						handOver()
					}
				}
			}
		case <-tick.C:
			if len(f.msgs) > 0 && time.Since(f.first) >= g.cfg.FlushAge {
				handOver()
			}
		}
	}
}

// add puts one checked message into the flush, as a reading or as a reject.
func (g *Ingest) add(f *flush, msg jetstream.Msg, res verify.Result, heads *chain.Heads) {
	var received time.Time
	if md, err := msg.Metadata(); err == nil {
		received = md.Timestamp
		if md.NumDelivered > 1 {
			g.redelivered.Add(1)
		}
		if sq := md.Sequence.Stream; f.seqMin == 0 || sq < f.seqMin {
			f.seqMin = sq
		}
		f.seqMax = max(f.seqMax, md.Sequence.Stream)
	} else {
		received = time.Now()
		f.seqUnknown = true
	}
	if res.Err != nil {
		rej, ok := errors.AsType[*verify.Rejection](res.Err)
		if !ok {
			// The check could not be made (the ledger did not answer): try again later.
			g.failed(res.Err)
			g.deferred.Add(1)
			_ = msg.NakWithDelay(time.Second)
			return
		}
		rj := write.Reject{ReceivedAt: received, Subject: msg.Subject(), Device: rej.Device, Reason: rej.Reason, Detail: rej.Detail, Raw: msg.Data()}
		if rej.Reason == verify.NoConsent {
			// Privacy wins over keeping the reject whole: the leaf shows a reading came.
			rj.Raw, rj.Leaf = nil, merkle.LeafHash(msg.Data())
		}
		f.rejects = append(f.rejects, rj)
	} else {
		r := res.Msg.Reading
		wr := write.Reading{Device: r.Device, Seq: r.Seq, TS: r.TS, ReceivedAt: received, Raw: msg.Data(),
			Leaf: res.Leaf, Prev: r.Prev, Metrics: r.Metrics, Tags: r.Tags}
		if s, ok := heads.Check(chain.Reading{Device: r.Device, Seq: r.Seq, Leaf: res.Leaf, Prev: r.Prev}); ok {
			f.suspects = append(f.suspects, suspect{i: len(f.msgs), Suspect: s})
		}
		f.b.Add(wr)
	}
	if len(f.msgs) == 0 {
		f.first = time.Now()
	}
	f.msgs = append(f.msgs, msg)
}

// flush makes the flush durable (rejects, batch, batch record and, feeding the rules stage,
// the batch's verified readings, after the previous flush's), retrying with backoff, then
// acknowledges its messages. If ctx ends first nothing is acknowledged: JetStream redelivers.
func (g *Ingest) flush(ctx context.Context, f *flush) {
	var turnOnce sync.Once
	closeTurn := func() { turnOnce.Do(func() { close(f.next) }) }
	// However this flush ends (nothing to publish, an error, ctx done), the next one's turn
	// comes once this one's has.
	defer func() {
		go func() {
			select {
			case <-f.turn:
			case <-ctx.Done():
			}
			closeTurn()
		}()
	}()
	var b *write.Batch
	var rec stream.BatchRecord
	if f.b.Len() > 0 {
		var err error
		if b, rec, err = f.b.Flush(time.Now()); err != nil {
			g.log.Error("ingest: cannot close batch", "err", err)
			return
		}
		if !f.seqUnknown {
			rec.StreamSeqMin, rec.StreamSeqMax = f.seqMin, f.seqMax
		}
	}
	var verified []*nats.Msg
	if b != nil && g.cfg.Rules != nil {
		var err error
		if verified, err = verifiedMsgs(b, g.cfg.Rules); err != nil {
			g.log.Error("ingest: cannot encode the verified readings for the rules stage", "batch", rec.ID, "err", err)
			return
		}
	}
	start := time.Now()
	rejectsDone, batchDone, recordDone := len(f.rejects) == 0, b == nil, b == nil
	verifiedDone := len(verified) == 0
	lastProgress := time.Now()
	for w := retry.Default().Start(); ; {
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
		if err == nil && !verifiedDone {
			select {
			case <-f.turn:
			case <-ctx.Done():
				return
			}
			if err = publishAll(ctx, g.js, verified); err == nil {
				verifiedDone = true
				closeTurn()
			}
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		g.retries.Add(1)
		g.failed(fmt.Errorf("flush of %d messages: %w", len(f.msgs), err))
		if time.Since(lastProgress) > 10*time.Second {
			for _, m := range f.msgs {
				_ = m.InProgress() // keep them ours while we retry
			}
			lastProgress = time.Now()
		}
		if w.Wait(ctx, err) != nil {
			return
		}
	}
	held := make([]bool, len(f.msgs))
	hs := make([]chain.Held, len(f.suspects))
	for k, s := range f.suspects {
		held[s.i] = true
		hs[k] = chain.Held{Suspect: s.Suspect, Batch: b.ID, Msg: f.msgs[s.i]}
	}
	// Held first: the batch's own readings settle the links of its suspects that follow them
	// (a run of readings redelivered together after a crash settles all but its first).
	g.chain.Hold(hs)
	if b != nil {
		g.chain.Stored(stored(b.Readings))
	}
	for i, m := range f.msgs {
		if held[i] {
			continue // acknowledged by the chain checker
		}
		if err := m.Ack(); err != nil {
			// Redelivered after the ack wait: a duplicate row, visible and removable.
			g.log.Warn("ingest: ack failed; the message will be redelivered", "subject", m.Subject(), "err", err)
		}
	}
	g.setReady(nil)
	if g.obs != nil {
		g.obs.Flush(lenReadings(b), len(f.rejects), time.Since(start))
	}
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
}

// chained returns the devices of a chunk's valid readings that name a predecessor: their
// chains are checked.
func chained(c checked) []string {
	var devs []string
	for _, r := range c.results {
		if r.Err == nil && r.Msg.Reading.Prev != nil {
			devs = append(devs, r.Msg.Reading.Device)
		}
	}
	return devs
}

// stored is what the chain checker needs of stored readings.
func stored(rs []write.Reading) iter.Seq[chain.Reading] {
	return func(yield func(chain.Reading) bool) {
		for _, r := range rs {
			if !yield(chain.Reading{Device: r.Device, Seq: r.Seq, Leaf: r.Leaf}) {
				return
			}
		}
	}
}

func lenReadings(b *write.Batch) int {
	if b == nil {
		return 0
	}
	return len(b.Readings)
}

// verifiedMsgs are the stream.Verified messages of a stored batch: its readings split by
// shard, in leaf_index order, in chunks of at most stream.MaxVerifiedChunk, each with a
// Nats-Msg-Id of batch, shard and chunk, so that a retried flush publishes nothing twice.
func verifiedMsgs(b *write.Batch, feed *RulesFeed) ([]*nats.Msg, error) {
	shards := max(feed.Shards, 1)
	var height uint64
	if feed.Height != nil {
		height = feed.Height()
	}
	byShard := make([][]stream.VerifiedReading, shards)
	for _, r := range b.Readings {
		ms := make([]stream.VerifiedMetric, len(r.Metrics))
		for i, m := range r.Metrics {
			ms[i] = stream.VerifiedMetric{Name: m.Name, Value: m.Value}
		}
		sh := stream.ShardOf(r.Device, shards)
		byShard[sh] = append(byShard[sh], stream.VerifiedReading{Device: r.Device, Seq: r.Seq, TS: r.TS,
			ReceivedMS: r.ReceivedAt.UnixMilli(), Metrics: ms, Tags: r.Tags})
	}
	id := hex.EncodeToString(b.ID[:])
	var out []*nats.Msg
	for sh, rs := range byShard {
		for c := 0; len(rs) > 0; c++ {
			n := min(len(rs), stream.MaxVerifiedChunk)
			var data []byte
			for {
				vb := stream.VerifiedBatch{Batch: b.ID[:], Height: height, Readings: rs[:n]}
				var err error
				if data, err = vb.Encode(); err != nil {
					return nil, err
				}
				if len(data) <= stream.MaxVerifiedBytes || n == 1 {
					break
				}
				n /= 2 // readings with many metrics or tags: fewer to a message
			}
			m := nats.NewMsg(stream.VerifiedSubject(sh))
			m.Data = data
			m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s/%d/%d", id, sh, c))
			out = append(out, m)
			rs = rs[n:]
		}
	}
	return out, nil
}

// publishAll publishes msgs asynchronously and waits until JetStream has stored every one.
func publishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) error {
	acks := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		acks = append(acks, f)
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
