package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/audit"
	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/services/store"
)

// BenchmarkAudit audits 160,000 readings (about 290 batches of 100 to 1,000 readings, 200
// devices, 8 batches to an anchor) in a real ClickHouse, as `anchorline audit` does, and
// reports readings/s:
//
//	go test -run '^$' -bench BenchmarkAudit -benchtime 5x ./services/store
func BenchmarkAudit(b *testing.B) {
	ctx := b.Context()
	_, db, conn := chserver.NewDatabase(b)
	d := auditData{readings: 160_000, devices: 200, perAnchor: 8}
	log := d.fill(ctx, b, write.New(conn, db))
	src := store.New(conn, db).Audit()
	var rep audit.Report
	for b.Loop() {
		var err error
		if rep, err = audit.Run(ctx, src, log, everything()); err != nil {
			b.Fatal(err)
		}
	}
	if !rep.OK() || rep.Readings != d.readings {
		b.Fatalf("audit of untouched data: %d readings, findings %v, unmatched %v", rep.Readings, rep.Findings, rep.Unmatched)
	}
	b.ReportMetric(float64(rep.Readings)*float64(b.N)/b.Elapsed().Seconds(), "readings/s")
}

// auditLog is the ledger's log as the audit reads it: anchor entries, served 1,000 at a time
// (as the ledger node's /entries pages are).
type auditLog [][]byte

func (l auditLog) Entries(_ context.Context, from uint64) ([]audit.LogEntry, uint64, error) {
	var out []audit.LogEntry
	for i := from; i < uint64(len(l)) && i < from+1000; i++ {
		out = append(out, audit.LogEntry{Index: i, Entry: l[i]})
	}
	return out, uint64(len(l)), nil
}

// auditData describes data for the audit: readings readings of devices devices, in batches of
// 100 to 1,000 readings (their sizes cycle), perAnchor batches to an anchor.
type auditData struct {
	readings, devices, perAnchor int
}

// fill writes the readings, batches and anchors through pipeline/write, as ingest and the
// anchoring service do, and returns the ledger's log holding the anchors. The data is the same
// on every call (only created_at and received_at follow the clock).
func (d auditData) fill(ctx context.Context, t testing.TB, w *write.Writer) auditLog {
	t.Helper()
	var log auditLog
	seqs := make([]uint64, d.devices)
	created := time.Now().Add(-time.Hour).Truncate(time.Second)
	var pending [][16]byte
	var leaves []merkle.Hash
	readings, lastTS := uint64(0), uint64(0)
	anchor := func() {
		if len(pending) == 0 {
			return
		}
		root, err := merkle.Root(leaves)
		if err != nil {
			t.Fatal(err)
		}
		a := write.Anchor{Root: root, Batches: uint32(len(pending)), Readings: readings, Height: uint64(len(log) + 2),
			LogIndex: uint64(len(log)), TxHash: "00", AnchoredAt: created}
		a.ID = sha256Prefix("anchor", len(log))
		// Anchored two seconds after its last reading's device time, as with devices whose
		// clocks are right.
		if a.Entry, err = entry.NewAnchor(a.ID, root, uint64(len(pending)), readings, time.UnixMilli(int64(lastTS)+2000)); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteAnchor(ctx, a, pending); err != nil {
			t.Fatal(err)
		}
		log = append(log, a.Entry)
		pending, leaves, readings = nil, nil, 0
	}
	for n, batches := 0, 0; n < d.readings; batches++ {
		size := min(100+(batches*337)%901, d.readings-n)
		b := &write.Batch{ID: sha256Prefix("batch", batches), Created: created, Worker: "w"}
		rowLeaves := make([]merkle.Hash, size)
		for i := range size {
			dev := (n + i) % d.devices
			seqs[dev]++
			raw := make([]byte, 0, 180)
			for len(raw) < 180 { // a COSE_Sign1 reading is about this long
				h := sha256.Sum256(binary.BigEndian.AppendUint64(fmt.Appendf(raw[:0:0], "%d/%d", dev, seqs[dev]), uint64(len(raw))))
				raw = append(raw, h[:]...)
			}
			raw = raw[:180]
			rowLeaves[i] = merkle.ReadingLeaf(raw)
			b.Readings = append(b.Readings, write.Reading{Device: fmt.Sprintf("dev-%04d", dev), Seq: seqs[dev],
				TS: 1_764_000_000_000 + uint64(n+i)*10, ReceivedAt: created, Raw: raw, Leaf: rowLeaves[i], LeafIndex: uint32(i)})
		}
		root, err := merkle.Root(rowLeaves)
		if err != nil {
			t.Fatal(err)
		}
		b.Root = root
		if err := w.WriteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		n += size
		lastTS = b.Readings[size-1].TS
		pending = append(pending, b.ID)
		leaves = append(leaves, merkle.AnchorLeaf(b.ID, uint64(size), root))
		readings += uint64(size)
		if len(pending) == d.perAnchor {
			anchor()
		}
	}
	anchor()
	return log
}

func sha256Prefix(kind string, i int) [16]byte {
	h := sha256.Sum256(fmt.Appendf(nil, "%s %d", kind, i))
	return [16]byte(h[:16])
}

// everything is a query over all readings, as `anchorline audit` without flags makes it.
func everything() audit.Query {
	return audit.Query{To: math.MaxUint64, Grace: time.Minute, Now: time.Now()}
}
