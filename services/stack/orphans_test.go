package stack

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/batch"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/store"
)

// A worker that dies after writing a batch and before publishing its record leaves a batch no
// record announces. The anchoring service's recorder finds such batches once they are older
// than the age asked for, with the root their stored leaves make, if its readings were stored
// again in another batch (as the redelivery after the worker's death does); a batch whose row
// does not match its readings, or whose readings are stored nowhere else, is not offered.
func TestOrphanBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, db, ch := chserver.NewDatabase(t)
	w := write.New(ch, db)
	mk := func(worker, dev string, n int, created time.Time) *write.Batch {
		b := batch.New(worker, n)
		for i := range n {
			raw := fmt.Appendf(nil, "%s reading %d", dev, i)
			b.Add(write.Reading{Device: dev, Seq: uint64(i + 1), TS: uint64(created.UnixMilli()), ReceivedAt: created, Raw: raw,
				Leaf: reading.Leaf(raw), Metrics: []reading.Metric{{Name: "t", Value: 1}}})
		}
		wb, _, err := b.Flush(created)
		if err != nil {
			t.Fatal(err)
		}
		return wb
	}
	old := time.Now().Add(-10 * time.Minute)
	orphan := mk("w1", "dev-a", 5, old)
	again := mk("w2", "dev-a", 5, old.Add(time.Minute)) // the same readings, delivered again
	young := mk("w2", "dev-b", 3, time.Now())
	tampered := mk("w3", "dev-c", 4, old)
	tampered.Root = sha256.Sum256([]byte("not the root of its readings"))
	inserted := mk("w4", "dev-d", 2, old) // rows no ingest delivered again: not laundered into an anchor
	for _, b := range []*write.Batch{orphan, again, young, tampered, inserted} {
		if err := w.WriteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	rec := recorder{w: w, s: store.New(ch, db), log: testLogger(t)}
	got, err := rec.Orphans(ctx, time.Now().Add(-2*time.Minute), 100)
	if err != nil {
		t.Fatal(err)
	}
	// orphan and again are both unanchored and old; each has its readings in the other.
	ids := map[[16]byte]bool{}
	for _, b := range got {
		ids[b.ID] = true
		if b.ID == orphan.ID && (b.Root != orphan.Root || b.Size != 5) {
			t.Fatalf("orphan %+v, want size 5 and root %x", b, orphan.Root)
		}
	}
	if len(got) != 2 || !ids[orphan.ID] || !ids[again.ID] {
		t.Fatalf("orphans %+v, want batches %x and %x only", got, orphan.ID, again.ID)
	}
}
