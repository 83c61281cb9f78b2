package chain_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/chain"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/reading"
)

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }

// The Reader reads back what write stored: each device's head (device_heads) and the readings
// in seq spans (readings).
func TestReader(t *testing.T) {
	ctx := t.Context()
	_, db, conn := chserver.NewDatabase(t)
	b := &write.Batch{Created: time.Now().Truncate(time.Second), Worker: "w1"}
	b.ID[0], b.Root[0] = 0xab, 0xcd
	for i := range 9 { // devices d0, d1, d2, seqs 1..9
		raw := []byte(fmt.Sprintf("raw-%d", i))
		b.Readings = append(b.Readings, write.Reading{Device: fmt.Sprintf("d%d", i%3), Seq: uint64(i + 1), TS: 1_764_000_000_000,
			ReceivedAt: time.Now(), Raw: raw, Leaf: sha256.Sum256(raw), LeafIndex: uint32(i), Metrics: []reading.Metric{{Name: "x", Value: 1}}})
	}
	if err := write.New(conn, db).WriteBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	r := chain.NewReader(conn, db)
	heads, err := r.Heads(ctx, []string{"d0", "d2", "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]chain.Link{"d0": {Seq: 7, Leaf: b.Readings[6].Leaf}, "d2": {Seq: 9, Leaf: b.Readings[8].Leaf}}
	if !reflect.DeepEqual(heads, want) {
		t.Fatalf("heads %+v, want %+v", heads, want)
	}
	spans, err := r.Spans(ctx, []chain.Span{{Device: "d0", From: 2, To: 8}, {Device: "d1", From: 0, To: 3}, {Device: "d2", From: 7, To: 9}})
	if err != nil {
		t.Fatal(err)
	}
	// d0 has seqs 1, 4, 7; d1 2, 5, 8; d2 3, 6, 9.
	wantSpans := map[string][]chain.Link{
		"d0": {{Seq: 4, Leaf: b.Readings[3].Leaf}, {Seq: 7, Leaf: b.Readings[6].Leaf}},
		"d1": {{Seq: 2, Leaf: b.Readings[1].Leaf}},
	}
	if !reflect.DeepEqual(spans, wantSpans) {
		t.Fatalf("spans %+v, want %+v", spans, wantSpans)
	}
}
