package write_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
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
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".metrics WHERE batch_id = unhex(?)", hex.EncodeToString(b.ID[:])).Scan(&n); err != nil || n != 30 {
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

	rejects := []write.Reject{{ReceivedAt: time.Now(), Subject: "iot.readings.x", Device: "x", Reason: "bad_signature", Detail: "no", Raw: []byte{1, 2}},
		{ReceivedAt: time.Now(), Subject: "iot.readings.y", Reason: "bad_cbor", Detail: "eof", Raw: []byte("junk")}}
	if err := w.WriteRejects(ctx, rejects); err != nil {
		t.Fatal(err)
	}
	var reason, rawRej string
	if err := conn.QueryRow(ctx, "SELECT reason, raw FROM "+db+".rejected WHERE subject = 'iot.readings.y'").Scan(&reason, &rawRej); err != nil || reason != "bad_cbor" || rawRej != "junk" {
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

func TestAnomaliesAndLastReadings(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	w := write.New(conn, db)
	b := testBatch(9) // devices d0, d1, d2, seqs 1..9
	if err := w.WriteBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	last, err := w.LastReadings(ctx, []string{"d0", "d2", "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	if len(last) != 2 || last["d0"].Seq != 7 || last["d0"].Leaf != b.Readings[6].Leaf || last["d2"].Seq != 9 {
		t.Fatalf("last readings %+v", last)
	}
	spans, err := w.Spans(ctx, []write.Span{{Device: "d0", From: 2, To: 8}, {Device: "d1", From: 0, To: 3}, {Device: "d2", From: 7, To: 9}})
	if err != nil {
		t.Fatal(err)
	}
	// d0 has seqs 1, 4, 7; d1 2, 5, 8; d2 3, 6, 9.
	want := map[string][]write.Last{
		"d0": {{Seq: 4, Leaf: b.Readings[3].Leaf}, {Seq: 7, Leaf: b.Readings[6].Leaf}},
		"d1": {{Seq: 2, Leaf: b.Readings[1].Leaf}},
	}
	if !reflect.DeepEqual(spans, want) {
		t.Fatalf("spans %+v, want %+v", spans, want)
	}
	a := write.Anomaly{DetectedAt: time.Now(), Device: "d0", Seq: 10, Kind: "chain_break", Expected: b.Readings[6].Leaf[:], Got: []byte("x"), PrevSeq: 7, Worker: "w"}
	if err := w.WriteAnomalies(ctx, []write.Anomaly{a}); err != nil {
		t.Fatal(err)
	}
	var dev, got string
	var prevSeq uint64
	if err := conn.QueryRow(ctx, "SELECT device_id, got, prev_seq FROM "+db+".anomalies").Scan(&dev, &got, &prevSeq); err != nil || dev != "d0" || got != "x" || prevSeq != 7 {
		t.Fatalf("anomaly row %s %q %d %v", dev, got, prevSeq, err)
	}
}
