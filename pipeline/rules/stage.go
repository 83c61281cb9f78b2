package rules

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
)

// Ledger answers the rules at a height; *ledger.Client is one.
type Ledger interface {
	// RuleRecords are every rule's record at height (0: the latest) and the height.
	RuleRecords(ctx context.Context, height int64) ([]entry.RuleRecord, int64, error)
	// RuleAt is a rule's version at height, with its entry.
	RuleAt(ctx context.Context, id string, height int64) (ledger.Rule, ledger.RuleProof, error)
}

// Store is what the stage reads and writes in ClickHouse: *Reader reads, *write.Writer writes.
type Store interface {
	History(ctx context.Context, before map[string]uint64, n int) (map[string][]*rule.Sample, error)
	// Between returns each device's stored readings with from < seq < to (spans[device] =
	// {from, to}), in ascending seq, each once.
	Between(ctx context.Context, spans map[string][2]uint64) (map[string][]*rule.Sample, error)
	LastReadings(ctx context.Context) (map[string]Last, error)
	WriteEvents(ctx context.Context, evs []rule.Event) error
}

// Config tunes a stage.
type Config struct {
	Shards int // stream.Verified's shards (rules.shards); every process may serve every shard
	// AbsentEvery is how often absence rules are checked (default 1s): an absence event comes
	// at most this late.
	AbsentEvery time.Duration
	// Now is the stage's clock (default time.Now): events' time, absence.
	Now func() time.Time
	// GapWait is how long the stage waits for a device's missing seqs to be stored before it
	// evaluates the readings after them (default 500ms): another ingest worker may be
	// inserting them.
	GapWait time.Duration
}

// Stats are a stage's counters since it started.
type Stats struct {
	Messages  uint64 `json:"messages"`  // Verified messages processed
	Evaluated uint64 `json:"evaluated"` // readings evaluated (every rule in force that selects them)
	Late      uint64 `json:"late"`      // readings that came after a later seq of their device, not evaluated
	Filled    uint64 `json:"filled"`    // stored readings evaluated ahead of their message, to keep a device's seq order
	Events    uint64 `json:"events"`    // events stored and published
	Rules     int    `json:"rules"`     // rules in force at the latest height seen
	// Of the last 10,000 events of readings: how long after their readings were stored (the
	// Verified message's JetStream time) they were published.
	LatencyP50Ms float64 `json:"event_latency_p50_ms"`
	LatencyP99Ms float64 `json:"event_latency_p99_ms"`
}

// Stage is the rules stage of one process.
type Stage struct {
	js    jetstream.JetStream
	l     Ledger
	store Store
	cfg   Config
	log   *slog.Logger

	messages, evaluated, late, filled, events atomic.Uint64
	inForce                                   atomic.Int64
	// seenHeight is the highest ledger height of a message evaluated: absence checks use the
	// rules in force there (no ledger query every second).
	seenHeight atomic.Int64

	mu       sync.Mutex
	sets     map[int64]*ruleSet // by ledger height, the last few
	compiled map[ruleKey]*rule.Compiled
	// slots number the rule versions this stage has seen, for the devices' per-rule states
	// (device.states), in the order seen.
	slots map[ruleKey]int
	latMu sync.Mutex
	lat   []float64 // the last latencyKeep event latencies, ms, a ring
	latN  int
}

const latencyKeep = 10_000

// New returns a stage; the streams and consumers must exist (consume.Topology.EnsureRules).
func New(js jetstream.JetStream, l Ledger, store Store, cfg Config, log *slog.Logger) *Stage {
	if cfg.Shards < 1 {
		cfg.Shards = 1
	}
	if cfg.AbsentEvery <= 0 {
		cfg.AbsentEvery = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GapWait <= 0 {
		cfg.GapWait = 500 * time.Millisecond
	}
	return &Stage{js: js, l: l, store: store, cfg: cfg, log: log, sets: map[int64]*ruleSet{}, compiled: map[ruleKey]*rule.Compiled{}, slots: map[ruleKey]int{}}
}

// Stats returns the counters.
func (s *Stage) Stats() Stats {
	st := Stats{Messages: s.messages.Load(), Evaluated: s.evaluated.Load(), Late: s.late.Load(), Filled: s.filled.Load(), Events: s.events.Load(), Rules: int(s.inForce.Load())}
	s.latMu.Lock()
	xs := slices.Clone(s.lat)
	s.latMu.Unlock()
	if len(xs) > 0 {
		slices.Sort(xs)
		at := func(p float64) float64 { return xs[min(len(xs)-1, int(p*float64(len(xs))))] }
		st.LatencyP50Ms, st.LatencyP99Ms = at(0.50), at(0.99)
	}
	return st
}

// observe records one event's latency.
func (s *Stage) observe(ms float64) {
	s.latMu.Lock()
	defer s.latMu.Unlock()
	if len(s.lat) < latencyKeep {
		s.lat = append(s.lat, ms)
	} else {
		s.lat[s.latN%latencyKeep] = ms
	}
	s.latN++
}

type ruleKey struct {
	id      string
	version uint64
}

// inForce is a rule version in force, compiled, with the log index of its entry and its
// slot (Stage.slots).
type inForce struct {
	c     *rule.Compiled
	key   ruleKey
	index uint64
	slot  int
}

// ruleSet is the rules in force at a height.
type ruleSet struct {
	height  int64
	rules   []inForce
	history int // readings of a device the windows of these rules need
	// byDevice lists, per device, the rules (indexes into rules) that name it; others are the
	// rules that select by tags or select every device, which each reading is checked against.
	byDevice map[string][]int
	others   []int
}

// selecting returns the indexes of the rules that may select a reading of dev: those that
// name it (and so select it), then the others (Selects decides, by tags). The two are
// disjoint: a rule with tags or without devices is only among the others.
func (rs *ruleSet) selecting(dev string) (named, others []int) {
	return rs.byDevice[dev], rs.others
}

// rulesAt returns the rules in force at height (0: the latest), cached by height.
func (s *Stage) rulesAt(ctx context.Context, height int64) (*ruleSet, error) {
	s.mu.Lock()
	if rs, ok := s.sets[height]; ok && height > 0 {
		s.mu.Unlock()
		return rs, nil
	}
	s.mu.Unlock()
	records, h, err := s.l.RuleRecords(ctx, height)
	if err != nil {
		return nil, fmt.Errorf("rules at height %d: %w", height, err)
	}
	// The entries of versions this stage has not compiled yet (once per version).
	for _, rec := range records {
		k := ruleKey{rec.ID, rec.Version}
		s.mu.Lock()
		_, known := s.compiled[k]
		s.mu.Unlock()
		if rec.Status != entry.RuleActive || known {
			continue
		}
		r, _, err := s.l.RuleAt(ctx, rec.ID, h)
		if err != nil {
			return nil, fmt.Errorf("rule %s at height %d: %w", rec.ID, h, err)
		}
		c, err := rule.Compile(r.Rule)
		if err != nil {
			// The ledger compiled it when it accepted it; a rule this build cannot compile is
			// one of a newer rule format.
			s.log.Error("rules: a rule in force does not compile here; it is not evaluated", "rule", k.id, "version", k.version, "err", err)
		}
		s.mu.Lock()
		s.compiled[k] = c // nil: not evaluated
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := &ruleSet{height: h, history: 1, byDevice: map[string][]int{}}
	for _, rec := range records {
		k := ruleKey{rec.ID, rec.Version}
		c := s.compiled[k]
		if rec.Status != entry.RuleActive || c == nil {
			continue
		}
		i := len(rs.rules)
		slot, ok := s.slots[k]
		if !ok {
			slot = len(s.slots)
			s.slots[k] = slot
		}
		rs.rules = append(rs.rules, inForce{c: c, key: k, index: rec.Index, slot: slot})
		rs.history = max(rs.history, c.HistoryNeeded())
		if len(c.Rule.Tags) > 0 || len(c.Rule.Devices) == 0 {
			rs.others = append(rs.others, i)
		}
		if len(c.Rule.Tags) == 0 {
			for _, d := range c.Rule.Devices {
				rs.byDevice[d] = append(rs.byDevice[d], i)
			}
		}
	}
	if height > 0 {
		if len(s.sets) > 64 {
			clear(s.sets)
		}
		s.sets[height] = rs
	}
	s.inForce.Store(int64(len(rs.rules)))
	return rs, nil
}

// device is what a shard keeps of one device.
type device struct {
	lastSeq      uint64
	seen         bool // a reading was evaluated (lastSeq is its seq)
	history      []*rule.Sample
	lastReceived int64 // Unix ms
	lastTags     map[string]string
	states       []rule.State       // by rule slot (inForce.slot)
	absentFired  map[ruleKey]uint64 // seq+1 of the last reading an absence event fired after
	warmFor      int                // the history length its stored readings were loaded for
}

// state is the device's state of the rule in slot.
func (d *device) state(slot int) *rule.State {
	if slot >= len(d.states) {
		d.states = append(d.states, make([]rule.State, slot+1-len(d.states))...)
	}
	return &d.states[slot]
}

// shard is the state of one shard: its devices.
type shard struct {
	n       int
	devices map[string]*device
}

// Run serves every shard (each shard's messages go to whichever process the server pinned
// them to) until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, s.cfg.Shards+1)
	for i := range s.cfg.Shards {
		wg.Go(func() { errs[i] = s.serve(ctx, i) })
	}
	wg.Go(func() { errs[s.cfg.Shards] = s.storeEvents(ctx) })
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(errs...)
}

// serve processes shard i's messages, and checks its absence rules, until ctx ends.
func (s *Stage) serve(ctx context.Context, i int) error {
	c, err := s.js.Consumer(ctx, stream.Verified, stream.RulesConsumerPrefix+strconv.Itoa(i))
	if err != nil {
		return fmt.Errorf("rules: shard %d: %w", i, err)
	}
	sh := &shard{n: i, devices: map[string]*device{}}
	if err := s.loadLast(ctx, sh); err != nil {
		return err
	}
	tick := time.NewTicker(s.cfg.AbsentEvery)
	defer tick.Stop()
	// A consumer iterator that stops (the server restarted, the pin moved) is made again,
	// with backoff, for as long as ctx lasts.
	for w := retry.Default().Start(); ; {
		msgs, stop, err := s.pull(ctx, c, i)
		if err == nil {
			err = s.drain(ctx, sh, msgs, tick.C)
			stop()
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("rules: shard consumer stopped; consuming again", "shard", i, "err", err)
		if w.Wait(ctx, err) != nil {
			return nil
		}
	}
}

// pull starts pulling shard i's messages into a channel, closed when the iterator stops.
func (s *Stage) pull(ctx context.Context, c jetstream.Consumer, i int) (<-chan jetstream.Msg, func(), error) {
	it, err := c.Messages(jetstream.PullPriorityGroup(stream.RulesGroup), jetstream.PullMaxMessages(16))
	if err != nil {
		return nil, nil, fmt.Errorf("rules: shard %d: %w", i, err)
	}
	msgs := make(chan jetstream.Msg)
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return msgs, it.Stop, nil
}

// drain handles msgs and the absence ticks until msgs closes (an error) or ctx ends (nil).
// The shard's consumer holds one message unacknowledged (consume.RulesMaxAckPending, for
// order across takeovers), so messages are handled one at a time; ingest makes them large
// (stream.MaxVerifiedChunk). Their events are stored in ClickHouse apart (storeEvents).
func (s *Stage) drain(ctx context.Context, sh *shard, msgs <-chan jetstream.Msg, tick <-chan time.Time) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return errors.New("the message iterator stopped")
			}
			s.handle(ctx, sh, m)
		case <-tick:
			s.absence(ctx, sh)
		}
	}
}

// loadLast learns the shard's devices' last readings, so that a device that went quiet while
// no process served the shard still fires absence rules.
func (s *Stage) loadLast(ctx context.Context, sh *shard) error {
	last, err := retry.Do(ctx, retry.Default(), s.store.LastReadings, func(err error, next time.Duration) {
		s.log.Warn("rules: cannot read the devices' last readings, retrying", "shard", sh.n, "err", err, "in", next)
	})
	if err != nil {
		return err
	}
	for dev, l := range last {
		if stream.ShardOf(dev, s.cfg.Shards) == sh.n {
			sh.devices[dev] = &device{lastSeq: l.Seq, seen: true, lastReceived: l.ReceivedMS, absentFired: map[ruleKey]uint64{}}
		}
	}
	return nil
}

// handle evaluates one message's readings, then stores and publishes its events, retrying
// until they are durable, then acknowledges it. If ctx ends first nothing is acknowledged:
// the message is delivered again and evaluated to the same event ids. A message that does not
// decode is acknowledged and logged: it cannot become readable later.
func (s *Stage) handle(ctx context.Context, sh *shard, m jetstream.Msg) {
	vb, err := stream.DecodeVerified(m.Data())
	if err != nil {
		s.log.Error("rules: message that is not a verified batch; dropped", "subject", m.Subject(), "err", err)
		_ = m.Ack()
		return
	}
	// Evaluation fails only before it changes the shard's state (the rules at the height, the
	// history of new devices), so it is retried as a whole; its events, once decided, are
	// emitted until they are durable.
	var evs []rule.Event
	for w := retry.Default().Start(); ; {
		if evs, err = s.evaluate(ctx, sh, vb); err == nil {
			break
		}
		s.log.Warn("rules: cannot evaluate; retrying", "shard", sh.n, "err", err)
		_ = m.InProgress()
		if w.Wait(ctx, err) != nil {
			return
		}
	}
	for w := retry.Default().Start(); ; {
		if err = s.emit(ctx, evs); err == nil {
			break
		}
		s.log.Warn("rules: cannot store or publish events; retrying", "shard", sh.n, "events", len(evs), "err", err)
		_ = m.InProgress()
		if w.Wait(ctx, err) != nil {
			return
		}
	}
	if err := m.Ack(); err != nil {
		s.log.Warn("rules: ack failed; the message will be evaluated again (its events keep their ids)", "err", err)
	}
	s.messages.Add(1)
	s.events.Add(uint64(len(evs)))
	if md, err := m.Metadata(); err == nil && len(evs) > 0 {
		ms := float64(s.cfg.Now().Sub(md.Timestamp).Microseconds()) / 1000
		for range evs {
			s.observe(ms)
		}
	}
}

// evaluate runs the rules in force at the message's height on its readings, in seq order per
// device, and returns the events. An error comes before any change to the shard's state.
func (s *Stage) evaluate(ctx context.Context, sh *shard, vb *stream.VerifiedBatch) ([]rule.Event, error) {
	rs, err := s.rulesAt(ctx, int64(vb.Height))
	if err != nil {
		return nil, err
	}
	for h := s.seenHeight.Load(); int64(vb.Height) > h && !s.seenHeight.CompareAndSwap(h, int64(vb.Height)); h = s.seenHeight.Load() {
	}
	readings := slices.Clone(vb.Readings)
	slices.SortStableFunc(readings, func(a, b stream.VerifiedReading) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Seq, b.Seq))
	})
	if err := s.warm(ctx, sh, rs, readings); err != nil {
		return nil, err
	}
	if readings, err = s.fillGaps(ctx, sh, readings); err != nil {
		return nil, err
	}
	now := s.cfg.Now().UnixMilli()
	var evs []rule.Event
	var evaluated uint64
	for _, r := range readings {
		d := sh.devices[r.Device]
		if d.seen && r.Seq <= d.lastSeq {
			s.late.Add(1)
			continue
		}
		d.history = append(d.history, sampleOf(r))
		if over := len(d.history) - rs.history; over > 0 {
			d.history = slices.Delete(d.history, 0, over)
		}
		d.lastSeq, d.seen, d.lastTags = r.Seq, true, r.Tags
		d.lastReceived = max(d.lastReceived, r.ReceivedMS)
		named, others := rs.selecting(r.Device)
		for _, i := range named {
			evs = s.step(rs, &rs.rules[i], d, r, now, evs, &evaluated)
		}
		for _, i := range others {
			if f := &rs.rules[i]; f.c.Rule.Selects(r.Device, r.Tags) {
				evs = s.step(rs, f, d, r, now, evs, &evaluated)
			}
		}
	}
	s.evaluated.Add(evaluated)
	return evs, nil
}

// step evaluates rule f on d's latest reading r, counts it in evaluated, and appends its
// event, if it fires, to evs.
func (s *Stage) step(rs *ruleSet, f *inForce, d *device, r stream.VerifiedReading, now int64, evs []rule.Event, evaluated *uint64) []rule.Event {
	if f.c.Rule.Absence() {
		return evs
	}
	*evaluated++
	st := d.state(f.slot)
	var fired *rule.Firing
	*st, fired = f.c.Step(*st, d.history)
	if fired == nil {
		return evs
	}
	return append(evs, rule.Event{ID: rule.EventID(f.key.id, f.key.version, r.Device, r.Seq, rule.KindFire),
		Rule: f.key.id, Version: f.key.version, RuleIndex: f.index, Height: uint64(rs.height), Device: r.Device, Kind: rule.KindFire,
		Seq: r.Seq, ArmedAt: fired.ArmedAt, Seqs: fired.Used, Partial: fired.Partial, Time: now, Actions: actionKinds(f.c.Rule)})
}

// fillGaps adds to readings (sorted by device and seq) the stored readings of their devices
// that lie between the last one the shard evaluated and the message's latest: with several
// ingest workers, a device's readings may be stored in batches whose messages come out of
// order, and the earlier one's are evaluated now, in order (when their own message comes they
// are behind, and skipped). A seq no worker stored (a rejected reading) stays a gap.
func (s *Stage) fillGaps(ctx context.Context, sh *shard, readings []stream.VerifiedReading) ([]stream.VerifiedReading, error) {
	spans := map[string][2]uint64{}
	next := map[string]uint64{}
	for _, r := range readings {
		d := sh.devices[r.Device]
		want, ok := next[r.Device]
		if !ok {
			want = 1
			if d.seen {
				want = d.lastSeq + 1
			}
		}
		if r.Seq > want {
			sp, had := spans[r.Device]
			if !had {
				sp[0] = want - 1
			}
			sp[1] = r.Seq
			spans[r.Device] = sp
		}
		next[r.Device] = max(want, r.Seq+1)
	}
	if len(spans) == 0 {
		return readings, nil
	}
	have := map[string]map[uint64]bool{}
	for _, r := range readings {
		if have[r.Device] == nil {
			have[r.Device] = map[uint64]bool{}
		}
		have[r.Device][r.Seq] = true
	}
	// A reading another worker is still inserting becomes visible within its insert: ask
	// again for a while (GapWait) for the seqs still missing; a seq nobody stored stays a gap.
	stored := map[string][]*rule.Sample{}
	for deadline := s.cfg.Now().Add(s.cfg.GapWait); ; {
		got, err := s.store.Between(ctx, spans)
		if err != nil {
			return nil, err
		}
		for dev, ss := range got {
			for _, smp := range ss {
				if !have[dev][smp.Seq] {
					have[dev][smp.Seq] = true
					stored[dev] = append(stored[dev], smp)
				}
			}
		}
		for dev, sp := range spans {
			if complete(have[dev], sp) {
				delete(spans, dev)
			}
		}
		if len(spans) == 0 || !s.cfg.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	added := 0
	for dev, ss := range stored {
		for _, smp := range ss {
			vr := stream.VerifiedReading{Device: dev, Seq: smp.Seq, TS: smp.TS, Tags: smp.Tags}
			for _, m := range smp.Metrics {
				vr.Metrics = append(vr.Metrics, stream.VerifiedMetric{Name: m.Name, Value: m.Value})
			}
			readings = append(readings, vr)
			added++
		}
	}
	if added > 0 {
		slices.SortStableFunc(readings, func(a, b stream.VerifiedReading) int {
			return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Seq, b.Seq))
		})
		s.filled.Add(uint64(added))
	}
	return readings, nil
}

// complete reports whether have holds every seq strictly between sp[0] and sp[1].
func complete(have map[uint64]bool, sp [2]uint64) bool {
	for q := sp[0] + 1; q < sp[1]; q++ {
		if !have[q] {
			return false
		}
	}
	return true
}

// warm gives each device of readings that the shard does not hold yet (or holds without
// enough history for rs's windows) its stored readings before the message's first of it, and
// replays the rules on them without firing: after a restart or a takeover, a device's windows
// and edges are as they were. What the replay cannot see (a hysteresis armed before the
// history it reads) starts unarmed, so the next crossing fires (schemas/rule.md).
func (s *Stage) warm(ctx context.Context, sh *shard, rs *ruleSet, readings []stream.VerifiedReading) error {
	before := map[string]uint64{}
	for _, r := range readings {
		if d, ok := sh.devices[r.Device]; ok && (len(d.history) >= rs.history || d.warmFor >= rs.history) {
			continue
		}
		if _, done := before[r.Device]; !done {
			before[r.Device] = r.Seq
		}
	}
	if len(before) == 0 {
		return nil
	}
	hist, err := s.store.History(ctx, before, rs.history)
	if err != nil {
		return err
	}
	for dev := range before {
		d, ok := sh.devices[dev]
		if !ok {
			d = &device{absentFired: map[ruleKey]uint64{}}
			sh.devices[dev] = d
		}
		// The readings before the message's first: a message redelivered after a crash is
		// evaluated again from the state its readings found.
		d.warmFor, d.history, d.seen, d.lastSeq = rs.history, hist[dev], false, 0
		clear(d.states)
		h := d.history
		if len(h) == 0 {
			continue
		}
		last := h[len(h)-1]
		d.lastSeq, d.seen, d.lastTags = last.Seq, true, last.Tags
		for i := range h {
			for _, f := range rs.rules {
				if !f.c.Rule.Absence() && f.c.Rule.Selects(dev, h[i].Tags) {
					st := d.state(f.slot)
					*st, _ = f.c.Step(*st, h[:i+1])
				}
			}
		}
	}
	return nil
}

// absence fires the absence rules in force (at the latest height) for the shard's devices
// that sent nothing for their rule's time, once per quiet period: a device's next reading
// re-arms them.
func (s *Stage) absence(ctx context.Context, sh *shard) {
	rs, err := s.rulesAt(ctx, s.seenHeight.Load())
	if err != nil {
		s.log.Warn("rules: cannot read the rules in force for absence checks", "err", err)
		return
	}
	now := s.cfg.Now().UnixMilli()
	var evs []rule.Event
	var fired []*device
	var keys []ruleKey
	for _, f := range rs.rules {
		if !f.c.Rule.Absence() {
			continue
		}
		for dev, d := range sh.devices {
			if !d.seen || d.absentFired[f.key] == d.lastSeq+1 || !f.c.Rule.Selects(dev, d.lastTags) || !f.c.AbsenceDue(d.lastReceived, now) {
				continue
			}
			evs = append(evs, rule.Event{ID: rule.EventID(f.key.id, f.key.version, dev, d.lastSeq, rule.KindAbsent),
				Rule: f.key.id, Version: f.key.version, RuleIndex: f.index, Height: uint64(rs.height), Device: dev, Kind: rule.KindAbsent,
				Seq: d.lastSeq, Seqs: []uint64{d.lastSeq}, Time: now, LastSeen: d.lastReceived, Actions: actionKinds(f.c.Rule)})
			fired, keys = append(fired, d), append(keys, f.key)
		}
	}
	if len(evs) == 0 {
		return
	}
	if err := s.emit(ctx, evs); err != nil {
		s.log.Warn("rules: cannot store or publish absence events; the next check tries again", "events", len(evs), "err", err)
		return
	}
	for i, d := range fired {
		d.absentFired[keys[i]] = d.lastSeq + 1
	}
	s.events.Add(uint64(len(evs)))
}

// emit stores events in ClickHouse, then publishes each on its subject with its id as
// Nats-Msg-Id (the Events stream drops a repeat), and waits until JetStream has them.
func (s *Stage) emit(ctx context.Context, evs []rule.Event) error {
	if len(evs) == 0 {
		return nil
	}
	msgs := make([]*nats.Msg, 0, len(evs))
	for _, e := range evs {
		data, err := json.Marshal(e)
		if err != nil {
			return err
		}
		actions := strings.Join(e.Actions, ",")
		m := nats.NewMsg(rule.Subject(e.Rule, e.Device))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, e.ID)
		m.Header.Set(HeaderActions, actions)
		msgs = append(msgs, m)
		// Once more for each kind of action the event has besides itself, on the subject its
		// runner consumes (stream.ActionsSubjects).
		kinds := slices.Compact(slices.Sorted(slices.Values(e.Actions)))
		for _, kind := range kinds {
			if kind == rule.ActionEvent {
				continue
			}
			a := nats.NewMsg(stream.ActionSubject(kind, e.Rule, e.Device))
			a.Data = data
			a.Header.Set(jetstream.MsgIDHeader, e.ID+"/"+kind)
			a.Header.Set(HeaderActions, actions)
			msgs = append(msgs, a)
		}
	}
	acks := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := s.js.PublishMsgAsync(m)
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

func sampleOf(r stream.VerifiedReading) *rule.Sample {
	ms := make([]reading.Metric, len(r.Metrics))
	for i, m := range r.Metrics {
		ms[i] = reading.Metric{Name: m.Name, Value: m.Value}
	}
	return &rule.Sample{Device: r.Device, Seq: r.Seq, TS: r.TS, Metrics: ms, Tags: r.Tags}
}

func actionKinds(r rule.Rule) []string {
	out := make([]string, len(r.Actions))
	for i, a := range r.Actions {
		out[i] = a.Kind
	}
	return out
}

// storeEvents stores the events published on the Events stream in ClickHouse, up to
// stream.EventsPerInsert per insert, through the shared durable consumer
// stream.EventsStoreConsumer, acknowledging each event once its insert is done: an event is
// durable once published (the stage acknowledges its readings then), and stored at least once
// (the events table folds an event stored twice: ReplacingMergeTree by its id).
func (s *Stage) storeEvents(ctx context.Context) error {
	for w := retry.Default().Start(); ; {
		err := s.storeEventsOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("rules: storing events in ClickHouse stopped; again", "err", err)
		if w.Wait(ctx, err) != nil {
			return nil
		}
	}
}

func (s *Stage) storeEventsOnce(ctx context.Context) error {
	c, err := s.js.Consumer(ctx, stream.Events, stream.EventsStoreConsumer)
	if err != nil {
		return fmt.Errorf("rules: events store consumer: %w", err)
	}
	for ctx.Err() == nil {
		batch, err := c.Fetch(stream.EventsPerInsert, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return fmt.Errorf("rules: fetch events: %w", err)
		}
		var msgs []jetstream.Msg
		var evs []rule.Event
		for m := range batch.Messages() {
			var ev rule.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				s.log.Error("rules: an event that does not decode; not stored", "subject", m.Subject(), "err", err)
				_ = m.Ack()
				continue
			}
			msgs, evs = append(msgs, m), append(evs, ev)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Debug("rules: fetch of events ended", "err", err)
		}
		if len(evs) == 0 {
			continue
		}
		for w := retry.Default().Start(); ; {
			if err = s.store.WriteEvents(ctx, evs); err == nil {
				break
			}
			s.log.Warn("rules: cannot store events; retrying", "events", len(evs), "err", err)
			if w.Wait(ctx, err) != nil {
				return nil
			}
		}
		for _, m := range msgs {
			_ = m.Ack()
		}
	}
	return nil
}
