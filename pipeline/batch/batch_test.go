package batch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/pipeline/write"
)

func TestFlush(t *testing.T) {
	b := New("w1", 4)
	if _, _, err := b.Flush(time.Now()); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty flush: %v", err)
	}
	var leaves []merkle.Hash
	for i, ts := range []uint64{30, 10, 20} {
		l := merkle.ReadingLeaf([]byte{byte(i)})
		leaves = append(leaves, l)
		b.Add(write.Reading{Device: "d", Seq: uint64(i), TS: ts, Leaf: l})
	}
	if b.Len() != 3 || b.Age() <= 0 {
		t.Fatalf("len %d age %v", b.Len(), b.Age())
	}
	now := time.UnixMilli(1_764_000_000_123)
	out, rec, err := b.Flush(now)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := merkle.Root(leaves)
	if out.Root != root || rec.Root != root.String() || rec.ID != hex.EncodeToString(out.ID[:]) || rec.Size != 3 {
		t.Fatalf("batch %x root %x, record %+v", out.ID, out.Root, rec)
	}
	for i, r := range out.Readings {
		if r.LeafIndex != uint32(i) {
			t.Fatalf("reading %d has leaf index %d", i, r.LeafIndex)
		}
		// Each leaf's path leads to the root (what a proof bundle carries).
		path, err := merkle.InclusionPath(leaves, uint64(i))
		if err != nil || merkle.VerifyInclusion(uint64(i), 3, r.Leaf, path, out.Root) != nil {
			t.Fatalf("leaf %d does not prove into the root: %v", i, err)
		}
	}
	if rec.TSMin != 10 || rec.TSMax != 30 || rec.Created != now.UnixMilli() || rec.Worker != "w1" {
		t.Fatalf("record %+v", rec)
	}
	if b.Len() != 0 || b.Age() != 0 {
		t.Fatal("builder not emptied")
	}
	// The flushed batch keeps its readings when the builder is reused.
	b.Add(write.Reading{Leaf: sha256.Sum256(nil)})
	if out.Readings[0].Seq != 0 || len(out.Readings) != 3 {
		t.Fatal("reuse overwrote a flushed batch")
	}
	// The batch id carries the flush time (stream.NewID).
	if got := out.ID[:6]; string(got) != string([]byte{0x01, 0x9a, 0xb6, 0x97, 0xe8, 0x7b}) {
		t.Fatalf("batch id %x does not begin with the flush time", out.ID)
	}
}

// BenchmarkFlush1000 is the batch stage of ingest per batch of 1,000 readings: adding them,
// the batch root over their leaves and the batch record.
func BenchmarkFlush1000(b *testing.B) {
	const n = 1000
	rs := make([]write.Reading, n)
	for i := range rs {
		rs[i] = write.Reading{Device: "d", Seq: uint64(i), TS: uint64(i), Leaf: merkle.ReadingLeaf([]byte{byte(i), byte(i >> 8)})}
	}
	bl := New("w1", n)
	now := time.UnixMilli(1_764_000_000_123)
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range rs {
			bl.Add(r)
		}
		if _, _, err := bl.Flush(now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/reading")
}
