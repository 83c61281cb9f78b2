package write_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/chain"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/reading"
)

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }

func testBatch(n int) *write.Batch {
	b := &write.Batch{Created: time.Now().Truncate(time.Second), Worker: "w1"}
	b.ID[0], b.Root[0] = 0xab, 0xcd
	for i := range n {
		raw := []byte(fmt.Sprintf("raw-%d", i))
		b.Readings = append(b.Readings, write.Reading{Device: fmt.Sprintf("d%d", i%3), Seq: uint64(i + 1),
			TS: 1_764_000_000_000 + uint64(i), ReceivedAt: time.Now().Truncate(time.Second), Raw: raw,
			Leaf: sha256.Sum256(raw), Prev: []byte{byte(i)}, LeafIndex: uint32(i),
			Metrics: []reading.Metric{{Name: "temp", Value: float64(i)}, {Name: "hum", Value: 40}, {Name: "v", Value: -1.5}}})
	}
	return b
}

func TestWriteBatchAndRejects(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	w := write.New(conn, db)
	if err := w.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	b := testBatch(10)
	if err := w.WriteBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	var (
		dev              string
		seq, ts          uint64
		raw, leaf, batch string
		idx              uint32
	)
	if err := conn.QueryRow(ctx, "SELECT device_id, seq, ts, raw, leaf, batch_id, leaf_index FROM "+db+".readings WHERE seq = 5").
		Scan(&dev, &seq, &ts, &raw, &leaf, &batch, &idx); err != nil {
		t.Fatal(err)
	}
	r := b.Readings[4]
	if dev != r.Device || ts != r.TS || raw != string(r.Raw) || leaf != string(r.Leaf[:]) || batch != string(b.ID[:]) || idx != 4 {
		t.Fatalf("row: %s %d %d %q %x %x %d", dev, seq, ts, raw, leaf, batch, idx)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".metrics WHERE seq <= 10").Scan(&n); err != nil || n != 30 {
		t.Fatalf("metrics: %d %v", n, err)
	}
	var size uint32
	var root string
	var tsMin, tsMax uint64
	if err := conn.QueryRow(ctx, "SELECT size, root, ts_min, ts_max FROM "+db+".batches").Scan(&size, &root, &tsMin, &tsMax); err != nil {
		t.Fatal(err)
	}
	if size != 10 || root != string(b.Root[:]) || tsMin != b.Readings[0].TS || tsMax != b.Readings[9].TS {
		t.Fatalf("batch row: %d %x %d %d", size, root, tsMin, tsMax)
	}

	rejects := []write.Reject{{ReceivedAt: time.Now(), Subject: reading.Subject("x"), Device: "x", Reason: verify.BadSignature, Detail: "no", Raw: []byte{1, 2}},
		{ReceivedAt: time.Now(), Subject: reading.Subject("y"), Reason: verify.BadCBOR, Detail: "eof", Raw: []byte("junk")}}
	if err := w.WriteRejects(ctx, rejects); err != nil {
		t.Fatal(err)
	}
	var reason, rawRej string
	if err := conn.QueryRow(ctx, "SELECT reason, raw FROM "+db+".rejected WHERE subject = ?", reading.Subject("y")).Scan(&reason, &rawRej); err != nil || reason != string(verify.BadCBOR) || rawRej != "junk" {
		t.Fatalf("reject row: %s %q %v", reason, rawRej, err)
	}
	if err := w.WriteBatch(ctx, &write.Batch{}); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}

func BenchmarkWriteBatch(b *testing.B) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(b)
	w := write.New(conn, db)
	batch := testBatch(1000)
	b.ResetTimer()
	for range b.N {
		if err := w.WriteBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "readings/s")
}

func TestWriteAnomaliesAndAnchor(t *testing.T) {
	ctx := t.Context()
	_, db, conn := chserver.NewDatabase(t)
	w := write.New(conn, db)
	leaf := sha256.Sum256([]byte("prev"))
	a := chain.Anomaly{DetectedAt: time.Now(), Device: "d0", Seq: 10, Kind: chain.Break, Expected: leaf[:], Got: []byte("x"), PrevSeq: 7, Worker: "w"}
	if err := w.WriteAnomalies(ctx, []chain.Anomaly{a}); err != nil {
		t.Fatal(err)
	}
	var dev, kind, expected, got string
	var prevSeq uint64
	if err := conn.QueryRow(ctx, "SELECT device_id, kind, expected, got, prev_seq FROM "+db+".anomalies").Scan(&dev, &kind, &expected, &got, &prevSeq); err != nil ||
		dev != "d0" || kind != "chain_break" || expected != string(leaf[:]) || got != "x" || prevSeq != 7 {
		t.Fatalf("anomaly row %s %s %x %q %d %v", dev, kind, expected, got, prevSeq, err)
	}

	an := write.Anchor{Root: [32]byte{9}, Batches: 2, Readings: 3, Height: 12, LogIndex: 4, TxHash: "ab", Entry: []byte("entry"),
		AnchoredAt: time.Now().Truncate(time.Second)}
	an.ID[0] = 7
	batches := [][16]byte{{1}, {2}}
	for range 2 { // recording twice is harmless: both tables replace by key
		if err := w.WriteAnchor(ctx, an, batches); err != nil {
			t.Fatal(err)
		}
	}
	var root, entry, tx string
	var height, logIndex, readings uint64
	var nBatches uint32
	if err := conn.QueryRow(ctx, "SELECT root, batches, readings, height, log_index, tx_hash, entry FROM "+db+".anchors FINAL").
		Scan(&root, &nBatches, &readings, &height, &logIndex, &tx, &entry); err != nil ||
		root != string(an.Root[:]) || nBatches != 2 || readings != 3 || height != 12 || logIndex != 4 || tx != "ab" || entry != "entry" {
		t.Fatalf("anchor row %x %d %d %d %d %s %q %v", root, nBatches, readings, height, logIndex, tx, entry, err)
	}
	rows, err := conn.Query(ctx, "SELECT batch_id, anchor_id, batch_index FROM "+db+".batch_anchors FINAL ORDER BY batch_index")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var n uint32
	for ; rows.Next(); n++ {
		var batch, anchor string
		var idx uint32
		if err := rows.Scan(&batch, &anchor, &idx); err != nil {
			t.Fatal(err)
		}
		if idx != n || batch != string(batches[n][:]) || anchor != string(an.ID[:]) {
			t.Fatalf("batch_anchors row %d: %x %x %d", n, batch, anchor, idx)
		}
	}
	if err := rows.Err(); err != nil || n != 2 {
		t.Fatalf("%d batch_anchors rows, want 2 (%v)", n, err)
	}
}
