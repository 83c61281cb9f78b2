package anchoring

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/stream"
)

// intentAnchor is an anchor over one batch, as a service builds it before submitting.
func intentAnchor(t *testing.T, at time.Time) Anchor {
	t.Helper()
	b := randomBatch(3)
	a := Anchor{ID: stream.NewID(at), Batches: []Batch{b}, Readings: b.Size, Time: at}
	var err error
	if a.Root, err = merkle.Root([]merkle.Hash{merkle.AnchorLeaf(b.ID, b.Size, b.Root)}); err != nil {
		t.Fatal(err)
	}
	if a.Entry, err = entry.NewSignedAnchor(anchorKey, a.ID, a.Root, 1, a.Readings, at); err != nil {
		t.Fatal(err)
	}
	return a
}

// A service killed after the ledger committed its anchor and before recording it leaves the
// anchor's intent: the next active service records that anchor (at the height and log index
// the ledger committed it), drops the intent of an anchor the ledger never committed, and
// leaves no intent of its own anchors behind.
func TestIntents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := startNATS(t)
	n := startLedger(t)
	intents, err := OpenIntents(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The predecessor's two intents: one committed (it died before recording), one never
	// submitted, older than intentGiveUp.
	committed := intentAnchor(t, time.Now().Add(-30*time.Second))
	lost := intentAnchor(t, time.Now().Add(-3*time.Minute))
	for _, a := range []Anchor{committed, lost} {
		if err := intents.put(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := n.Client().Submit(ctx, committed.Entry)
	if err != nil {
		t.Fatal(err)
	}

	rec := &memRecorder{}
	s, err := New(js, n.Client(), rec, Config{Key: anchorKey, Stream: stream.Batches, Consumer: stream.AnchorConsumer, Interval: 100 * time.Millisecond,
		Intents: intents}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	own := randomBatch(4)
	publishBatch(t, js, own)
	runService(t, ctx, s)
	await.Until(t, ctx, "the committed anchor recorded, the service's own anchored, no intent left", func() (bool, string) {
		as, err := intents.List(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(rec.snapshot()) == 2 && len(as) == 0, fmt.Sprintf("%d anchors recorded, %d intents left", len(rec.snapshot()), len(as))
	})
	for _, a := range rec.snapshot() {
		if a.ID == lost.ID {
			t.Fatal("an anchor the ledger never committed was recorded")
		}
		if a.ID == committed.ID && (a.Height != rc.Height || a.LogIndex != rc.LogIndex || len(a.Batches) != 1 || a.Batches[0] != committed.Batches[0]) {
			t.Fatalf("recorded %+v, want height %d log index %d and its batch", a, rc.Height, rc.LogIndex)
		}
	}
	// Resolved intents are purged, markers and all: the stream holds nothing.
	info, err := intents.stream.Info(ctx)
	if err != nil || info.State.Msgs != 0 {
		t.Fatalf("intents stream holds %d messages after every intent was resolved (%v), want 0", info.State.Msgs, err)
	}
	if _, err := New(js, nil, rec, Config{Key: anchorKey, Stream: stream.Batches, Consumer: stream.AnchorConsumer, Interval: time.Second, Intents: intents}, quiet()); err == nil {
		t.Fatal("intents without a ledger that finds entries were accepted")
	}
}

// runService runs s until the test ends, then checks that Run returned no error.
func runService(t *testing.T, ctx context.Context, s *Service) {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}
