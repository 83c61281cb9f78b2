package anchoring

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/stream"
)

// Batch is a parsed batch record.
type Batch struct {
	ID   [16]byte
	Root merkle.Hash
	Size uint64
}

// ErrBadRecord marks a batch record that cannot be anchored (malformed JSON or fields).
var ErrBadRecord = errors.New("anchoring: bad batch record")

// ParseRecord parses and checks one batch record (stream.BatchRecord); the anchor needs its id,
// root and size.
func ParseRecord(data []byte) (Batch, error) {
	var r stream.BatchRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return Batch{}, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	var b Batch
	id, err := hex.DecodeString(r.ID)
	if err != nil || len(id) != len(b.ID) {
		return Batch{}, fmt.Errorf("%w: id %q is not 16 bytes of hex", ErrBadRecord, r.ID)
	}
	copy(b.ID[:], id)
	if b.Root, err = merkle.ParseHash(r.Root); err != nil {
		return Batch{}, fmt.Errorf("%w: root: %w", ErrBadRecord, err)
	}
	if r.Size == 0 {
		return Batch{}, fmt.Errorf("%w: size 0", ErrBadRecord)
	}
	b.Size = r.Size
	return b, nil
}

// Ledger commits entries; *ledger.Client implements it.
type Ledger interface {
	Submit(ctx context.Context, entry []byte) (ledger.Receipt, error)
}

// Anchor is one committed anchor, as recorded for analysts and proofs.
type Anchor struct {
	ID       [16]byte
	Root     merkle.Hash
	Batches  []Batch // in anchor order: batch_index is the position
	Readings uint64
	Entry    []byte
	Time     time.Time
	Height   int64 // block that included the entry
	LogIndex uint64
	TxHash   []byte
}

// Recorder stores a committed anchor (ClickHouse `anchors` and `batch_anchors`); it must be
// idempotent, since a crash between recording and acknowledging repeats it. Anchored tells
// which batches some anchor already covers: a batch record redelivered after a restart is
// acknowledged, not anchored again.
type Recorder interface {
	RecordAnchor(ctx context.Context, a Anchor) error
	Anchored(ctx context.Context, batchIDs [][16]byte) (map[[16]byte]bool, error)
}

// Orphans finds stored batches whose record never reached the stream: an ingest worker that
// died after writing a batch and before publishing its record. (Its readings come again, into
// a new batch; the first batch stays in ClickHouse and must be anchored like any other, or the
// audit would find readings no anchor covers.) Orphans returns up to limit batches created
// before olderThan that no anchor covers, each with the root of its stored leaves.
type Orphans interface {
	Orphans(ctx context.Context, olderThan time.Time, limit int) ([]Batch, error)
}

// DefaultOrphanAge is how old a batch no anchor covers must be before the active service
// anchors it without a record: well past the time a record takes to arrive and be anchored.
const DefaultOrphanAge = 2 * time.Minute

// Config tunes the service.
type Config struct {
	Stream, Consumer string        // stream and durable consumer of batch records (schemas/stream)
	Interval         time.Duration // how often an anchor is committed (if anything is pending)
	MaxBatches       int           // most batches in one anchor; more wait for the next interval
	// Key is the anchoring key: every anchor entry carries its public key and is signed by it
	// (DESIGN 2.3, authorised writers). The ledger accepts the anchors only if genesis or an
	// admin's anchor_key entry authorised the key. Required.
	Key ed25519.PrivateKey
	// Retry paces the retries of finding the consumer and of recording a committed anchor
	// (the zero value is retry.Default()). Recording is retried until the context ends
	// whatever Retry.Timeout says: the anchor is on the ledger already.
	Retry retry.Policy
	// Lease, if set, makes this service anchor only while it holds the lease, and only batches
	// it claimed (several services: one active, the others standing by). Run renews it.
	Lease *Lease
	// Orphans, if set, is asked every OrphanAge/4 (while active) for batches without a record
	// older than OrphanAge (default DefaultOrphanAge); they are anchored like the others.
	Orphans   Orphans
	OrphanAge time.Duration
	// Intents, if set, makes each anchor written there before it is submitted and removed once
	// recorded; the active service records the anchors of intents whose entry the ledger
	// committed (a predecessor that died in between) and drops those it never committed. The
	// Ledger must then also implement Finder.
	Intents *Intents
}

// Finder finds a committed entry by its bytes (lookup.ErrNotFound if the ledger has not
// committed it); *ledger.Client implements it.
type Finder interface {
	Lookup(ctx context.Context, entry []byte) (ledger.Receipt, error)
}

// Intents older than intentGrace are resolved by the active service: younger ones may still be
// on their way to the ledger. One the ledger has not committed after intentGiveUp never will be
// (its batch records went back to the consumer and were anchored again).
const (
	intentGrace  = 10 * time.Second
	intentGiveUp = 2 * time.Minute
)

// Stats are the service's counters.
type Stats struct {
	Anchors       uint64    `json:"anchors"`
	Batches       uint64    `json:"batches"`
	Readings      uint64    `json:"readings"`
	Pending       int       `json:"pending_batches"`
	BadRecords    uint64    `json:"bad_records"`
	LastHeight    int64     `json:"last_height"`
	LastAnchorID  string    `json:"last_anchor_id,omitempty"`
	LastAnchorAt  time.Time `json:"last_anchor_at,omitzero"`
	Active        bool      `json:"active"` // holds the lease (always, without one)
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_at,omitzero"`
}

// Service is the anchor service.
type Service struct {
	js     jetstream.JetStream
	ledger Ledger
	rec    Recorder
	cfg    Config
	log    *slog.Logger

	obs   Observer
	mu    sync.Mutex
	stats Stats
	// done remembers recently anchored batch ids, so a redelivered record is acked, not
	// anchored twice. Bounded: the oldest generation is dropped.
	done, doneOld map[[16]byte]struct{}
}

// New returns a service; call Run.
func New(js jetstream.JetStream, l Ledger, rec Recorder, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Stream == "" || cfg.Consumer == "" {
		return nil, errors.New("anchoring: stream and consumer must be named")
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("anchoring: interval %v must be positive", cfg.Interval)
	}
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("anchoring: key is %d bytes, want an Ed25519 private key (anchor.key)", len(cfg.Key))
	}
	if cfg.MaxBatches <= 0 {
		cfg.MaxBatches = 10_000
	}
	if cfg.OrphanAge <= 0 {
		cfg.OrphanAge = DefaultOrphanAge
	}
	if _, ok := l.(Finder); cfg.Intents != nil && !ok {
		return nil, errors.New("anchoring: intents need a ledger that can look entries up (Finder)")
	}
	return &Service{js: js, ledger: l, rec: rec, cfg: cfg, log: log,
		done: map[[16]byte]struct{}{}, doneOld: map[[16]byte]struct{}{}}, nil
}

// Stats returns a snapshot of the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Ready reports nil, or why the last anchoring attempt failed (cleared on success).
func (s *Service) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stats.LastError != "" {
		return errors.New("anchoring: " + s.stats.LastError)
	}
	return nil
}

// The phases of one anchoring round, as Observer.Phase names them.
const (
	PhaseCollect = "collect" // fetch batch records
	PhaseIntents = "intents" // resolve the intents stopped services left (every few seconds)
	PhaseOrphans = "orphans" // look for orphaned batches to adopt (every OrphanAge/4)
	PhaseCheck   = "check"   // ask the store which queued batches are anchored already
	PhaseClaim   = "claim"   // claim the batches through the lease
	PhaseIntent  = "intent"  // write the anchor's intent
	PhaseSubmit  = "submit"  // submit the entry and wait for its block
	PhaseRecord  = "record"  // store the anchor, remove the intent, ack the records
)

// Observer is told how long each phase of an anchoring round took.
type Observer interface {
	Phase(phase string, d time.Duration)
}

// Observe sets the observer; call before Run.
func (s *Service) Observe(o Observer) { s.obs = o }

// phase reports the time since start as phase and returns now, the next phase's start.
func (s *Service) phase(phase string, start time.Time) time.Time {
	now := time.Now()
	if s.obs != nil {
		s.obs.Phase(phase, now.Sub(start))
	}
	return now
}

type pending struct {
	batch Batch
	msgs  []jetstream.Msg
}

// Run anchors until ctx ends. Pending batch records that were not anchored stay unacknowledged
// in JetStream and are anchored by the next run.
func (s *Service) Run(ctx context.Context) error {
	cons, err := s.consumer(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var queue []*pending
	byID := map[[16]byte]*pending{}
	if l := s.cfg.Lease; l != nil {
		lctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); l.Run(lctx) }()
		defer func() { stop(); <-done }()
	}
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	var lastSweep, lastIntents time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !s.active() {
			// A standby fetches nothing; what it fetched while active goes back to the
			// consumer at once, for the active service.
			for _, p := range queue {
				for _, m := range p.msgs {
					_ = m.Nak()
				}
			}
			queue = queue[:0]
			clear(byID)
			continue
		}
		start := time.Now()
		queue = s.collect(ctx, cons, queue, byID)
		start = s.phase(PhaseCollect, start)
		if s.cfg.Intents != nil && time.Since(lastIntents) >= intentGrace/2 {
			lastIntents = time.Now()
			s.resolveIntents(ctx)
			start = s.phase(PhaseIntents, start)
		}
		if s.cfg.Orphans != nil && time.Since(lastSweep) >= s.cfg.OrphanAge/4 {
			lastSweep = time.Now()
			queue = s.adopt(ctx, queue, byID)
			start = s.phase(PhaseOrphans, start)
		}
		s.mu.Lock()
		s.stats.Pending = len(queue)
		s.mu.Unlock()
		if len(queue) == 0 {
			continue
		}
		queue = s.dropAnchored(ctx, queue, byID)
		start = s.phase(PhaseCheck, start)
		if len(queue) == 0 {
			continue
		}
		n := min(len(queue), s.cfg.MaxBatches)
		ps, claims, err := s.claim(ctx, queue[:n])
		start = s.phase(PhaseClaim, start)
		if err != nil {
			s.failed(err, s.cfg.Interval)
			continue
		}
		if len(ps) == 0 {
			continue // another service claimed them: they are acked once found anchored
		}
		if err := s.anchor(ctx, ps, claims, start); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.failed(err, s.cfg.Interval)
			continue // the same batches are tried again next interval
		}
		anchored := map[[16]byte]bool{}
		for _, p := range ps {
			delete(byID, p.batch.ID)
			s.remember(p.batch.ID)
			anchored[p.batch.ID] = true
		}
		kept := queue[:0]
		for _, p := range queue {
			if !anchored[p.batch.ID] {
				kept = append(kept, p)
			}
		}
		queue = kept
	}
}

// active reports whether this service may anchor now: it holds the lease, or has none.
func (s *Service) active() bool {
	held := s.cfg.Lease == nil || s.cfg.Lease.Held()
	s.mu.Lock()
	s.stats.Active = held
	s.mu.Unlock()
	return held
}

// claim claims ps's batches through the lease (all of them without one) and returns those
// this service claimed.
func (s *Service) claim(ctx context.Context, ps []*pending) ([]*pending, *Claims, error) {
	if s.cfg.Lease == nil {
		return ps, nil, nil
	}
	ids := make([][16]byte, len(ps))
	for i, p := range ps {
		ids[i] = p.batch.ID
	}
	claims, ok, err := s.cfg.Lease.Claim(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	var mine []*pending
	for i, p := range ps {
		if ok[i] {
			mine = append(mine, p)
		} else {
			s.log.Info("anchoring: batch claimed by another anchoring service; left to it", "batch", hex.EncodeToString(p.batch.ID[:]))
		}
	}
	return mine, claims, nil
}

// dropAnchored acknowledges and removes the queued batches an earlier run already anchored
// (it committed and recorded them but stopped before acknowledging). If the recorder cannot
// tell, nothing is dropped: anchoring a batch twice is harmless, losing one is not.
func (s *Service) dropAnchored(ctx context.Context, queue []*pending, byID map[[16]byte]*pending) []*pending {
	ids := make([][16]byte, len(queue))
	for i, p := range queue {
		ids[i] = p.batch.ID
	}
	done, err := s.rec.Anchored(ctx, ids)
	if err != nil {
		s.log.Warn("anchoring: cannot tell which batches are anchored already", "err", err)
		return queue
	}
	kept := queue[:0]
	for _, p := range queue {
		if !done[p.batch.ID] {
			kept = append(kept, p)
			continue
		}
		for _, m := range p.msgs {
			_ = m.Ack()
		}
		delete(byID, p.batch.ID)
		s.remember(p.batch.ID)
	}
	return kept
}

// resolveIntents records the anchors of intents the ledger committed and removes them; it
// removes the intents the ledger did not commit within intentGiveUp.
func (s *Service) resolveIntents(ctx context.Context) {
	as, err := s.cfg.Intents.List(ctx)
	if err != nil {
		s.log.Warn("anchoring: cannot read anchor intents", "err", err)
		return
	}
	finder := s.ledger.(Finder)
	for _, a := range as {
		age := time.Since(a.Time)
		if age < intentGrace {
			continue
		}
		rc, err := finder.Lookup(ctx, a.Entry)
		switch {
		case errors.Is(err, lookup.ErrNotFound):
			if age > intentGiveUp {
				s.log.Info("anchoring: dropping the intent of an anchor the ledger never committed", "anchor", hex.EncodeToString(a.ID[:]))
				_ = s.cfg.Intents.Remove(ctx, a.ID)
			}
			continue
		case err != nil:
			s.log.Warn("anchoring: cannot look an intended anchor up on the ledger", "anchor", hex.EncodeToString(a.ID[:]), "err", err)
			continue
		}
		a.Height, a.LogIndex, a.TxHash = rc.Height, rc.LogIndex, rc.TxHash
		if err := s.rec.RecordAnchor(ctx, a); err != nil {
			s.log.Warn("anchoring: cannot record a committed anchor left by a stopped service; retrying later", "anchor", hex.EncodeToString(a.ID[:]), "err", err)
			continue
		}
		for _, b := range a.Batches {
			s.remember(b.ID)
		}
		s.log.Warn("anchoring: recorded an anchor a stopped anchoring service committed but did not record", "anchor", hex.EncodeToString(a.ID[:]),
			"height", a.Height, "log_index", a.LogIndex, "batches", len(a.Batches))
		if err := s.cfg.Intents.Remove(ctx, a.ID); err != nil {
			s.log.Warn("anchoring: intent not removed", "anchor", hex.EncodeToString(a.ID[:]), "err", err)
		}
	}
}

// adopt adds the orphaned batches Orphans finds to queue, as pending batches without records.
func (s *Service) adopt(ctx context.Context, queue []*pending, byID map[[16]byte]*pending) []*pending {
	bs, err := s.cfg.Orphans.Orphans(ctx, time.Now().Add(-s.cfg.OrphanAge), s.cfg.MaxBatches)
	if err != nil {
		s.log.Warn("anchoring: cannot look for batches without a record", "err", err)
		return queue
	}
	for _, b := range bs {
		if _, ok := byID[b.ID]; ok || s.anchored(b.ID) {
			continue
		}
		s.log.Warn("anchoring: anchoring a stored batch whose record never arrived (its worker stopped before publishing it)", "batch", hex.EncodeToString(b.ID[:]), "size", b.Size)
		p := &pending{batch: b}
		byID[b.ID] = p
		queue = append(queue, p)
	}
	return queue
}

// consumer finds the durable consumer, retrying while JetStream is not reachable.
func (s *Service) consumer(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := retry.Do(ctx, s.cfg.Retry, func(ctx context.Context) (jetstream.Consumer, error) {
		return s.js.Consumer(ctx, s.cfg.Stream, s.cfg.Consumer)
	}, func(err error, next time.Duration) {
		s.log.WarnContext(ctx, "anchoring: batch consumer not available, retrying", "stream", s.cfg.Stream, "consumer", s.cfg.Consumer, "err", err, "retry_in", next)
	})
	if err != nil {
		return nil, fmt.Errorf("anchoring: consumer %s on %s: %w", s.cfg.Consumer, s.cfg.Stream, err)
	}
	return cons, nil
}

// collect fetches every batch record that is waiting, adds new batches to queue and keeps
// redeliveries with the batch they repeat.
func (s *Service) collect(ctx context.Context, cons jetstream.Consumer, queue []*pending, byID map[[16]byte]*pending) []*pending {
	for ctx.Err() == nil {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			s.failed(fmt.Errorf("fetch batch records: %w", err), s.cfg.Interval)
			return queue
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			b, err := ParseRecord(msg.Data())
			if err != nil {
				// Not anchorable and never will be: keep it out of the way but visible.
				s.log.Error("anchoring: batch record cannot be anchored; terminated", "subject", msg.Subject(), "err", err, "data", string(msg.Data()))
				s.mu.Lock()
				s.stats.BadRecords++
				s.mu.Unlock()
				_ = msg.Term()
				continue
			}
			if s.anchored(b.ID) {
				_ = msg.Ack()
				continue
			}
			if p, ok := byID[b.ID]; ok {
				p.msgs = append(p.msgs, msg)
				continue
			}
			p := &pending{batch: b, msgs: []jetstream.Msg{msg}}
			byID[b.ID] = p
			queue = append(queue, p)
		}
		if err := batch.Error(); err != nil {
			s.failed(fmt.Errorf("fetch batch records: %w", err), s.cfg.Interval)
			return queue
		}
		if n < 1000 {
			return queue
		}
	}
	return queue
}

// anchor commits one anchor over ps (claimed by claims, if not nil), records it and
// acknowledges the batch records.
func (s *Service) anchor(ctx context.Context, ps []*pending, claims *Claims, start time.Time) error {
	// Keep the records and the claims ours while the ledger works: tell JetStream the records
	// are in progress, renew the claims.
	stop := s.keepAlive(ps, claims)
	defer stop()

	a := Anchor{Batches: make([]Batch, len(ps)), Time: time.Now()}
	leaves := make([]merkle.Hash, len(ps))
	for i, p := range ps {
		a.Batches[i] = p.batch
		a.Readings += p.batch.Size
		leaves[i] = merkle.AnchorLeaf(p.batch.ID, p.batch.Size, p.batch.Root)
	}
	var err error
	if a.Root, err = merkle.Root(leaves); err != nil {
		return err
	}
	a.ID = stream.NewID(a.Time)
	if a.Entry, err = entry.NewSignedAnchor(s.cfg.Key, a.ID, a.Root, uint64(len(ps)), a.Readings, a.Time); err != nil {
		return fmt.Errorf("encode anchor entry: %w", err)
	}
	if s.cfg.Intents != nil {
		if err := s.cfg.Intents.put(ctx, a); err != nil {
			return err // nothing submitted: the batches are tried again
		}
	}
	start = s.phase(PhaseIntent, start)
	stopWatch := s.watchCommit(a.ID, len(ps))
	rc, err := s.ledger.Submit(ctx, a.Entry)
	stopWatch()
	if err != nil {
		return fmt.Errorf("commit anchor %x: %w", a.ID, err)
	}
	start = s.phase(PhaseSubmit, start)
	a.Height, a.LogIndex, a.TxHash = rc.Height, rc.LogIndex, rc.TxHash
	// The entry is on the ledger: record it, however long that takes.
	forever := s.cfg.Retry
	forever.Timeout = 0
	if _, err := retry.Do(ctx, forever, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, s.rec.RecordAnchor(ctx, a)
	}, func(err error, next time.Duration) {
		s.failed(fmt.Errorf("record anchor %x (committed at height %d): %w", a.ID, a.Height, err), next)
	}); err != nil {
		return fmt.Errorf("record anchor %x (committed at height %d): %w", a.ID, a.Height, err)
	}
	if s.cfg.Intents != nil {
		if err := s.cfg.Intents.Remove(ctx, a.ID); err != nil {
			s.log.Warn("anchoring: intent of a recorded anchor not removed; the next check removes it", "anchor", hex.EncodeToString(a.ID[:]), "err", err)
		}
	}
	for _, p := range ps {
		for _, m := range p.msgs {
			if err := m.DoubleAck(ctx); err != nil {
				// The record comes back after AckWait and is acked then as already anchored.
				s.log.Warn("anchoring: ack of batch record failed; it will be redelivered", "batch", hex.EncodeToString(p.batch.ID[:]), "err", err)
			}
		}
	}
	s.phase(PhaseRecord, start)
	s.mu.Lock()
	s.stats.Anchors++
	s.stats.Batches += uint64(len(ps))
	s.stats.Readings += a.Readings
	s.stats.LastHeight = a.Height
	s.stats.LastAnchorID = hex.EncodeToString(a.ID[:])
	s.stats.LastAnchorAt = a.Time
	s.stats.LastError = ""
	s.mu.Unlock()
	s.log.Info("anchor committed", "anchor", hex.EncodeToString(a.ID[:]), "batches", len(ps), "readings", a.Readings, "height", a.Height, "log_index", a.LogIndex)
	return nil
}

// watchCommit reports, for Ready and Stats, an anchor that the ledger has not committed within
// a few intervals (Submit keeps confirming and resubmitting it: building another anchor could
// commit the same batches twice): the ledger may have lost its quorum.
func (s *Service) watchCommit(id [16]byte, batches int) (stop func()) {
	after := max(3*s.cfg.Interval, 5*time.Second)
	start := time.Now()
	t := time.AfterFunc(after, func() {
		s.failed(fmt.Errorf("anchor %x of %d batches not committed after %s: the ledger makes no block with it (are too few validators up?); still waiting for it",
			id, batches, time.Since(start).Round(time.Second)), after)
	})
	return func() { t.Stop() }
}

// keepAlive marks the records in progress every few seconds, and renews the claims every
// third of the lease's TTL, until stop is called.
func (s *Service) keepAlive(ps []*pending, claims *Claims) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		renew := time.Hour
		if claims != nil {
			renew = claims.l.ttl / 3
		}
		r := time.NewTicker(renew)
		defer r.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, p := range ps {
					for _, m := range p.msgs {
						_ = m.InProgress() // best effort: a redelivery is recognised and merged
					}
				}
			case <-r.C:
				ctx, cancel := context.WithTimeout(context.Background(), renew)
				if err := claims.Renew(ctx); err != nil {
					s.log.Warn("anchoring: claims not renewed; another service may claim these batches once they lapse", "err", err)
				}
				cancel()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// failed logs a failure that is retried after next and keeps it for Ready and Stats.
func (s *Service) failed(err error, next time.Duration) {
	s.log.Warn("anchoring: will retry", "err", err, "retry_in", next)
	s.mu.Lock()
	s.stats.LastError = err.Error()
	s.stats.LastErrorTime = time.Now()
	s.mu.Unlock()
}

const rememberBatches = 100_000

func (s *Service) remember(id [16]byte) {
	if len(s.done) >= rememberBatches {
		s.doneOld, s.done = s.done, map[[16]byte]struct{}{}
	}
	s.done[id] = struct{}{}
}

func (s *Service) anchored(id [16]byte) bool {
	_, a := s.done[id]
	_, b := s.doneOld[id]
	return a || b
}
