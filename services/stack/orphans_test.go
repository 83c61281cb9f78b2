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
// than the age asked for, with the root their stored leaves make; a batch whose row does not
// match its readings is not offered for anchoring.
func TestOrphanBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, db, ch := chserver.NewDatabase(t)
	w := write.New(ch, db)
	mk := func(worker string, n int, created time.Time) *write.Batch {
		b := batch.New(worker, n)
		for i := range n {
			raw := fmt.Appendf(nil, "%s reading %d", worker, i)
			b.Add(write.Reading{Device: "orphan-dev", Seq: uint64(i + 1), TS: uint64(created.UnixMilli()), ReceivedAt: created, Raw: raw,
				Leaf: reading.Leaf(raw), Metrics: []reading.Metric{{Name: "t", Value: 1}}})
		}
		wb, _, err := b.Flush(created)
		if err != nil {
			t.Fatal(err)
		}
		return wb
	}
	old := time.Now().Add(-10 * time.Minute)
	orphan := mk("w1", 5, old)
	young := mk("w2", 3, time.Now())
	tampered := mk("w3", 4, old)
	tampered.Root = sha256.Sum256([]byte("not the root of its readings"))
	for _, b := range []*write.Batch{orphan, young, tampered} {
		if err := w.WriteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	rec := recorder{w: w, s: store.New(ch, db), log: testLogger(t)}
	got, err := rec.Orphans(ctx, time.Now().Add(-2*time.Minute), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != orphan.ID || got[0].Root != orphan.Root || got[0].Size != 5 {
		t.Fatalf("orphans %+v, want only batch %x (size 5, root %x)", got, orphan.ID, orphan.Root)
	}
}
