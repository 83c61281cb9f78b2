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

// TestBatchLeaves reads a batch's leaves from its batch_leaves row (filled by the view on the
// insert into readings) and, for a batch without one (stored before the view existed), from
// readings: both give the leaves in leaf_index order.
func TestBatchLeaves(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	w, s := write.New(conn, db), store.New(conn, db)
	b1 := batch(1, 7)
	if err := w.WriteBatch(ctx, b1); err != nil {
		t.Fatal(err)
	}
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".batch_leaves").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("batch_leaves has %d rows, want 1 (%v)", rows, err)
	}
	check := func(b *write.Batch) {
		t.Helper()
		leaves, err := s.BatchLeaves(ctx, b.ID)
		if err != nil || len(leaves) != len(b.Readings) {
			t.Fatalf("batch %x: %d leaves, want %d (%v)", b.ID, len(leaves), len(b.Readings), err)
		}
		for i, r := range b.Readings {
			if leaves[i] != r.Leaf {
				t.Fatalf("batch %x leaf %d: %x, want %x", b.ID, i, leaves[i], r.Leaf)
			}
		}
	}
	check(b1)
	// Without the view, a batch has no batch_leaves row: its readings give the leaves.
	if err := conn.Exec(ctx, "DROP TABLE "+db+".batch_leaves_mv"); err != nil {
		t.Fatal(err)
	}
	b2 := batch(2, 5)
	if err := w.WriteBatch(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".batch_leaves").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("batch_leaves has %d rows, want 1 (%v)", rows, err)
	}
	check(b2)
	if _, err := s.BatchLeaves(ctx, [16]byte{9}); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("unknown batch: %v", err)
	}
}

// TestReadingsOf looks many readings up in one query of reading_lookup, and those it lacks in
// readings: a reading stored twice has both rows, one never stored has none.
func TestReadingsOf(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	w, s := write.New(conn, db), store.New(conn, db)
	b1, b2 := batch(1, 6), batch(2, 2) // b2 repeats seqs 1 and 2 of device d
	for _, b := range []*write.Batch{b1, b2} {
		if err := w.WriteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string) {
		t.Helper()
		keys := []store.ReadingKey{{Device: "d", Seq: 1}, {Device: "d", Seq: 5}, {Device: "d", Seq: 99}, {Device: "other", Seq: 1}}
		got, err := s.ReadingsOf(ctx, keys)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(got) != 2 || len(got[keys[0]]) != 2 || len(got[keys[1]]) != 1 {
			t.Fatalf("%s: rows %v", what, got)
		}
		r := got[keys[1]][0]
		if r.BatchID != b1.ID || r.LeafIndex != 4 || string(r.Raw) != string(b1.Readings[4].Raw) {
			t.Fatalf("%s: seq 5 is %+v", what, r)
		}
		if got[keys[0]][0].BatchID != b1.ID || got[keys[0]][1].BatchID != b2.ID {
			t.Fatalf("%s: the rows of seq 1 are not in batch id order", what)
		}
	}
	check("reading_lookup")
	rs, more, err := s.ReadingsRange(ctx, "d", 2, 5, 100)
	if err != nil || more || len(rs) != 5 || rs[0].Seq != 2 || rs[1].Seq != 2 || rs[4].Seq != 5 || rs[0].BatchID != b1.ID || rs[1].BatchID != b2.ID {
		t.Fatalf("range 2..5: %d rows, more %v, %v", len(rs), more, err)
	}
	if rs, more, err := s.ReadingsRange(ctx, "d", 1, 6, 3); err != nil || !more || len(rs) != 3 {
		t.Fatalf("range 1..6 limited to 3: %d rows, more %v, %v", len(rs), more, err)
	}
	// Rows reading_lookup lacks (stored without its view) are read from readings.
	if err := conn.Exec(ctx, "DROP TABLE "+db+".reading_lookup_mv"); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "TRUNCATE TABLE "+db+".reading_lookup"); err != nil {
		t.Fatal(err)
	}
	check("readings")
	if _, err := s.ReadingsOf(ctx, []store.ReadingKey{{Device: "d'; DROP TABLE x; --", Seq: 1}}); err == nil {
		t.Fatal("a device id outside the id syntax was accepted")
	}
}
