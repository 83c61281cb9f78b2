package anchoring

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/natstest"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
)

func startNATS(t *testing.T) jetstream.JetStream {
	t.Helper()
	js := natstest.Start(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream.Batches, Subjects: []string{stream.BatchesSubject}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, stream.Batches, jetstream.ConsumerConfig{Durable: stream.AnchorConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	return js
}

// anchorKey is the tests' anchoring key, authorised in startLedger's genesis.
var anchorKey = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

func startLedger(t *testing.T) *node.Node {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(context.Background(), node.Config{Home: t.TempDir(), ChainID: "anchoring-test",
		TimeoutCommit: 50 * time.Millisecond, Admins: []ed25519.PublicKey{pub}, Logger: quiet(),
		AnchorKeys: []ed25519.PublicKey{reading.Ed25519Public(anchorKey)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("stop ledger: %v", err)
		}
	})
	return n
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// memRecorder keeps anchors in memory and fails its first `fail` calls.
type memRecorder struct {
	mu      sync.Mutex
	fail    int
	calls   int
	anchors []Anchor
}

func (r *memRecorder) RecordAnchor(_ context.Context, a Anchor) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls <= r.fail {
		return errors.New("clickhouse is down")
	}
	r.anchors = append(r.anchors, a)
	return nil
}

func (r *memRecorder) Anchored(_ context.Context, ids [][16]byte) (map[[16]byte]bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[[16]byte]bool{}
	for _, a := range r.anchors {
		for _, b := range a.Batches {
			out[b.ID] = true
		}
	}
	return out, nil
}

func (r *memRecorder) snapshot() []Anchor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Anchor(nil), r.anchors...)
}

func publishBatch(t *testing.T, js jetstream.JetStream, b Batch) {
	t.Helper()
	data, _ := json.Marshal(stream.BatchRecord{ID: hex.EncodeToString(b.ID[:]), Root: b.Root.String(), Size: b.Size})
	msg := nats.NewMsg(stream.BatchesSubject)
	msg.Data = data
	msg.Header.Set(nats.MsgIdHdr, hex.EncodeToString(b.ID[:]))
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

func randomBatch(i int) Batch {
	b := Batch{ID: stream.NewID(time.Now()), Size: uint64(10 + i)}
	_, _ = rand.Read(b.Root[:])
	return b
}

func TestAnchorsPendingBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := startNATS(t)
	n := startLedger(t)
	rec := &memRecorder{fail: 2} // ClickHouse down at first: the anchor is recorded later, not lost
	s, err := New(js, n.Client(), rec, Config{Key: anchorKey, Stream: stream.Batches, Consumer: stream.AnchorConsumer, Interval: 200 * time.Millisecond}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	phases := &phaseLog{n: map[string]int{}}
	s.Observe(phases)
	var batches []Batch
	for i := range 5 {
		b := randomBatch(i)
		batches = append(batches, b)
		publishBatch(t, js, b)
	}
	publishBatch(t, js, batches[0]) // a repeat inside the duplicate window is dropped by JetStream
	msg := nats.NewMsg(stream.BatchesSubject)
	msg.Data = []byte(`{"id":"zz"}`)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	for len(rec.snapshot()) == 0 || s.Stats().Batches < 5 {
		select {
		case <-ctx.Done():
			t.Fatalf("not anchored: %+v", s.Stats())
		case <-time.After(50 * time.Millisecond):
		}
	}
	anchored := map[[16]byte]bool{}
	for _, a := range rec.snapshot() {
		leaves := make([]merkle.Hash, len(a.Batches))
		for i, b := range a.Batches {
			leaves[i] = merkle.AnchorLeaf(b.ID, b.Size, b.Root)
			if anchored[b.ID] {
				t.Errorf("batch %x anchored twice", b.ID)
			}
			anchored[b.ID] = true
		}
		root, err := merkle.Root(leaves)
		if err != nil || root != a.Root {
			t.Fatalf("anchor root %s, recomputed %s (%v)", a.Root, root, err)
		}
		// The entry is in the ledger's log at the recorded index, as of the recorded block.
		p, err := n.Client().EntryProof(ctx, a.LogIndex, a.Height)
		if err != nil {
			t.Fatal(err)
		}
		if string(p.Entry) != string(a.Entry) {
			t.Fatal("ledger holds a different entry at the anchor's log index")
		}
		if err := merkle.VerifyInclusion(p.LogIndex, p.LogSize, merkle.EntryLeaf(p.Entry), p.Path, p.LogRoot); err != nil {
			t.Fatal(err)
		}
		e, err := entry.Decode(a.Entry)
		if err != nil || e.Anchor == nil || e.Anchor.Batches != uint64(len(a.Batches)) || string(e.Anchor.Root) != string(a.Root[:]) {
			t.Fatalf("entry %+v, %v", e, err)
		}
		if !e.Anchor.Signed() || !reading.Ed25519Public(anchorKey).Equal(ed25519.PublicKey(e.Anchor.Key)) {
			t.Fatalf("anchor %x is not signed by the anchoring key", a.ID)
		}
	}
	for _, b := range batches {
		if !anchored[b.ID] {
			t.Errorf("batch %x not anchored", b.ID)
		}
	}
	if st := s.Stats(); st.BadRecords != 1 || st.Readings != 10+11+12+13+14 {
		t.Errorf("stats %+v", st)
	}
	// Every phase of a round that anchored was timed.
	for _, ph := range []string{PhaseCollect, PhaseCheck, PhaseClaim, PhaseIntent, PhaseSubmit, PhaseRecord} {
		if phases.count(ph) == 0 {
			t.Errorf("phase %s never observed (observed: %v)", ph, phases.snapshot())
		}
	}
	// Everything is acknowledged once recorded: nothing pending or in flight on the consumer.
	for {
		c, err := js.Consumer(ctx, stream.Batches, stream.AnchorConsumer)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("batch records still pending: %d pending, %d unacked", info.NumPending, info.NumAckPending)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestParseRecord(t *testing.T) {
	id := stream.NewID(time.UnixMilli(1_700_000_000_000))
	good := fmt.Sprintf(`{"id":"%x","root":"%s","size":3,"worker":"w"}`, id, merkle.EmptyRoot())
	b, err := ParseRecord([]byte(good))
	if err != nil || b.ID != id || b.Size != 3 || b.Root != merkle.EmptyRoot() {
		t.Fatalf("parse: %+v %v", b, err)
	}
	for _, bad := range []string{`{`, `{"id":"00","root":"` + merkle.EmptyRoot().String() + `","size":1}`,
		fmt.Sprintf(`{"id":"%x","root":"00","size":1}`, id), fmt.Sprintf(`{"id":"%x","root":"%s","size":0}`, id, merkle.EmptyRoot())} {
		if _, err := ParseRecord([]byte(bad)); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: %v, want ErrBadRecord", bad, err)
		}
	}
}

// TestParseRecordGolden reads the contract's golden batch record, as ingest publishes it.
func TestParseRecordGolden(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "schemas", "stream", "testdata", "batch_record.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b.ID[:]); got != "0189a3f2b1c00123456789abcdef0011" || b.Size != 1000 ||
		b.Root.String() != "5f1c3e0a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e" {
		t.Fatalf("golden record parsed as %x %s %d", b.ID, b.Root, b.Size)
	}
}

// ledgerFunc is a Ledger made of a function.
type ledgerFunc func(ctx context.Context, entry []byte) (ledger.Receipt, error)

func (f ledgerFunc) Submit(ctx context.Context, entry []byte) (ledger.Receipt, error) {
	return f(ctx, entry)
}

// signalHandler is a slog handler that sends each record's message on a channel, dropping
// those nobody waits for.
type signalHandler chan string

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h <- r.Message:
	default:
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// TestNeedsKey: the service signs every anchor, so it refuses to start without a key.
func TestNeedsKey(t *testing.T) {
	if _, err := New(nil, nil, &memRecorder{}, Config{Stream: stream.Batches, Consumer: stream.AnchorConsumer, Interval: time.Second}, quiet()); err == nil {
		t.Fatal("a service without an anchoring key was built")
	}
}

// TestWaitsForTheConsumer starts the service before its consumer exists: it reports that it
// is retrying, and anchors once the consumer is there.
func TestWaitsForTheConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	js := natstest.Start(t)
	logs := make(signalHandler, 16)
	rec := &memRecorder{}
	committed := ledgerFunc(func(context.Context, []byte) (ledger.Receipt, error) { return ledger.Receipt{Height: 7}, nil })
	s, err := New(js, committed, rec, Config{Key: anchorKey, Stream: stream.Batches, Consumer: stream.AnchorConsumer, Interval: 20 * time.Millisecond,
		Retry: retry.Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}}, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { done <- s.Run(runCtx) }()
	for msg := ""; msg != "anchoring: batch consumer not available, retrying"; {
		select {
		case msg = <-logs:
		case <-ctx.Done():
			t.Fatal("the missing consumer was not reported")
		}
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream.Batches, Subjects: []string{stream.BatchesSubject}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, stream.Batches, jetstream.ConsumerConfig{Durable: stream.AnchorConsumer, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	publishBatch(t, js, randomBatch(0))
	for len(rec.snapshot()) == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("not anchored: %+v", s.Stats())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if a := rec.snapshot()[0]; a.Height != 7 || len(a.Batches) != 1 {
		t.Fatalf("anchor %+v", a)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestStopsWhileWaitingForTheConsumer: a service stopped before its consumer exists ends
// cleanly.
func TestStopsWhileWaitingForTheConsumer(t *testing.T) {
	js := natstest.Start(t)
	logs := make(signalHandler, 16)
	s, err := New(js, nil, &memRecorder{}, Config{Key: anchorKey, Stream: stream.Batches, Consumer: stream.AnchorConsumer, Interval: time.Second}, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-logs // it is retrying
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run stopped while waiting: %v, want nil", err)
	}
}

// orphanRecorder is a memRecorder that also reports stored batches without a record.
type orphanRecorder struct {
	memRecorder
	orphans []Batch
	asked   time.Time
	sweeps  int
}

func (r *orphanRecorder) Orphans(_ context.Context, olderThan time.Time, _ int) ([]Batch, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked, r.sweeps = olderThan, r.sweeps+1
	return r.orphans, nil
}

// A batch that was stored but whose record never arrived is anchored from what Orphans says,
// once, alongside batches that came with records.
func TestAnchorsOrphans(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := startNATS(t)
	n := startLedger(t)
	orphan, announced := randomBatch(1), randomBatch(2)
	rec := &orphanRecorder{orphans: []Batch{orphan}}
	s, err := New(js, n.Client(), rec, Config{Key: anchorKey, Stream: stream.Batches, Consumer: stream.AnchorConsumer, Interval: 100 * time.Millisecond,
		Orphans: rec, OrphanAge: 400 * time.Millisecond}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	publishBatch(t, js, announced)
	runService(t, ctx, s)
	await.Until(t, ctx, "both batches anchored", func() (bool, string) {
		st := s.Stats()
		return st.Batches >= 2, fmt.Sprintf("%+v", st)
	})
	// Orphans keeps reporting the batch (as a store would until its anchor is recorded there);
	// the service anchors it once.
	sweeps := func() int { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.sweeps }
	after := sweeps()
	await.Until(t, ctx, "two more sweeps", func() (bool, string) {
		return sweeps() >= after+2, fmt.Sprintf("%d sweeps", sweeps())
	})
	count := map[[16]byte]int{}
	for _, a := range rec.snapshot() {
		for _, b := range a.Batches {
			count[b.ID]++
		}
	}
	if count[orphan.ID] != 1 || count[announced.ID] != 1 {
		t.Fatalf("anchored %d times the orphan and %d times the announced batch, want once each", count[orphan.ID], count[announced.ID])
	}
	rec.mu.Lock()
	asked := rec.asked
	rec.mu.Unlock()
	if age := time.Since(asked); age < 400*time.Millisecond {
		t.Fatalf("asked for batches older than %v ago, want at least OrphanAge", age)
	}
}

// phaseLog counts the phases an Observer is told of.
type phaseLog struct {
	mu sync.Mutex
	n  map[string]int
}

func (p *phaseLog) Phase(phase string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d >= 0 {
		p.n[phase]++
	}
}

func (p *phaseLog) count(phase string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[phase]
}

func (p *phaseLog) snapshot() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.n)
}
