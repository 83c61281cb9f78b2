package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/store"
)

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }

func batch(id byte, n int) *write.Batch {
	b := &write.Batch{Created: time.Now().Truncate(time.Second), Worker: "w"}
	b.ID[0], b.Root[0] = id, id
	for i := range n {
		raw := []byte(fmt.Sprintf("raw-%d-%d", id, i))
		b.Readings = append(b.Readings, write.Reading{Device: "d", Seq: uint64(i + 1), TS: 1_764_000_000_000, ReceivedAt: time.Now(),
			Raw: raw, Leaf: sha256.Sum256(raw), LeafIndex: uint32(i), Metrics: []reading.Metric{{Name: "x", Value: 1}}})
	}
	return b
}

func TestReadsAndAnchors(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	w, s := write.New(conn, db), store.New(conn, db)
	b1, b2 := batch(1, 5), batch(2, 3)
	// b2 repeats readings 1..3 of device d: as after a crash between insert and ack.
	for _, b := range []*write.Batch{b1, b2} {
		if err := w.WriteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Reading(ctx, "d", 99); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("missing reading: %v", err)
	}
	if _, _, err := s.BatchAnchor(ctx, b2.ID); !errors.Is(err, lookup.ErrNotAnchored) {
		t.Fatalf("unanchored: %v", err)
	}
	c, err := s.Counts(ctx)
	if err != nil || c.Readings != 8 || c.Duplicates != 3 || c.Batches != 2 || c.UnanchoredBatches != 2 || c.Anchors != 0 || c.LastAnchor != nil {
		t.Fatalf("counts %+v %v", c, err)
	}

	// Anchor only b2: the duplicate reading is served from the anchored copy.
	a := write.Anchor{Root: [32]byte{9}, Batches: 1, Readings: 3, Height: 12, LogIndex: 4, TxHash: "ab", Entry: []byte("entry"), AnchoredAt: time.Now().Truncate(time.Second)}
	a.ID[0] = 7
	for range 2 { // recording twice is harmless
		if err := w.WriteAnchor(ctx, a, [][16]byte{b2.ID}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.Reading(ctx, "d", 2)
	if err != nil || r.BatchID != b2.ID || r.LeafIndex != 1 || string(r.Raw) != "raw-2-1" {
		t.Fatalf("reading %+v %v", r, err)
	}
	done, err := s.AnchoredBatches(ctx, [][16]byte{b1.ID, b2.ID})
	if err != nil || len(done) != 1 || !done[b2.ID] {
		t.Fatalf("anchored batches %v %v", done, err)
	}
	aid, idx, err := s.BatchAnchor(ctx, b2.ID)
	if err != nil || aid != a.ID || idx != 0 {
		t.Fatalf("batch anchor %x %d %v", aid, idx, err)
	}
	got, err := s.Anchor(ctx, a.ID)
	if err != nil || got.Height != 12 || got.LogIndex != 4 || string(got.Entry) != "entry" || got.Root != a.Root {
		t.Fatalf("anchor %+v %v", got, err)
	}
	bs, err := s.AnchorBatches(ctx, a.ID)
	if err != nil || len(bs) != 1 || bs[0].ID != b2.ID || bs[0].Size != 3 || bs[0].Root != b2.Root {
		t.Fatalf("anchor batches %+v %v", bs, err)
	}
	// A retried insert stores the same leaves twice: BatchLeaves still returns one per index.
	if err := w.WriteBatch(ctx, b2); err != nil {
		t.Fatal(err)
	}
	leaves, err := s.BatchLeaves(ctx, b2.ID)
	if err != nil || len(leaves) != 3 || leaves[2] != b2.Readings[2].Leaf {
		t.Fatalf("leaves %d %v", len(leaves), err)
	}
	var unique uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".readings_unique").Scan(&unique); err != nil || unique != 5 {
		t.Fatalf("readings_unique has %d rows, want 5 (%v)", unique, err)
	}
	c, err = s.Counts(ctx)
	if err != nil || c.Anchors != 1 || c.UnanchoredBatches != 1 || c.LastAnchor == nil || c.LastAnchor.ID != a.ID {
		t.Fatalf("counts %+v %v", c, err)
	}
}
