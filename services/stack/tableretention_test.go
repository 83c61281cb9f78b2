package stack

import (
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/anchor/audit"
	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/batch"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/retention"
	"github.com/anchorline/anchorline/services/store"
)

// TestTableRetention: with clickhouse.retention.readings, the retention runner drops the monthly
// partitions of readings whose whole month is past it; the audit reports the anchored readings
// that left, in a batch of their own or in a batch that also holds recent readings, as expired
// and not missing, also those whose batch record was written only after their month was
// dropped (a flush racing the drop), and still finds a recent reading deleted; the proofs of
// the readings left still verify.
func TestTableRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := devConfig(t, chAddr, database, t.TempDir())
	cfg.Ingest.MaxAge = 0 // readings of three months ago are accepted
	cfg.Anchor.Interval = 200 * time.Millisecond
	d, cfg, js := startTestDev(t, ctx, cfg)
	client := d.APIClient()
	old := func() time.Time { return time.Now().Add(-90 * 24 * time.Hour) }
	whole, mixed, racer := newDevice(t, "rt-old", reading.Ed25519), newDevice(t, "rt-mixed", reading.Ed25519), newDevice(t, "rt-race", reading.Ed25519)
	for _, dv := range []*testDevice{whole, mixed, racer} {
		register(t, ctx, client, d.AdminKey, dv.ID, dv.Key.Public())
	}
	// A batch of old readings only; then a batch of old and recent ones.
	whole.Now = old
	for range 5 {
		raw := whole.next(t)
		publish(t, js, reading.Subject(whole.ID), reading.MsgID(whole.ID, whole.Seq), raw)
	}
	await.Until(t, ctx, "the first batch anchored", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".batch_anchors")
		return n == 1, fmt.Sprint(n)
	})
	for i := range 10 {
		mixed.Now = time.Now
		if i < 5 {
			mixed.Now = old
		}
		raw := mixed.next(t)
		publish(t, js, reading.Subject(mixed.ID), reading.MsgID(mixed.ID, mixed.Seq), raw)
	}
	await.Until(t, ctx, "15 readings anchored", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE batch_id IN (SELECT batch_id FROM "+database+".batch_anchors)")
		return n == 15, fmt.Sprint(n)
	})
	// A flush that the retention step overtakes: its rows (three old readings of rt-race, then
	// three recent ones) are in readings, as a flush writes them first (pipeline/write), but its
	// batch record is not written yet when the step drops their month.
	// The first one's leaf ends in a zero byte, as one leaf in 256 does: the view before
	// migration 0013 cut such a leaf short in the batch's row of batch_leaves, and a proof of a
	// reading left then read the batch's leaves from readings, where leaf 0 had been dropped
	// (500 "leaf 0 is missing from readings").
	raced := batch.New("rt-race", 6)
	for i := range 6 {
		racer.Now = time.Now
		if i < 3 {
			racer.Now = old
		}
		seq, prev, at := racer.Seq, racer.Prev, old()
		raw := racer.next(t)
		for k := 1; i == 0 && reading.Leaf(raw)[31] != 0; k++ {
			racer.Seq, racer.Prev = seq, prev
			racer.Now = func() time.Time { return at.Add(time.Duration(k) * time.Millisecond) }
			raw = racer.next(t)
		}
		m, err := reading.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		raced.Add(write.Reading{Device: racer.ID, Seq: m.Reading.Seq, TS: m.Reading.TS, ReceivedAt: time.Now(), Raw: raw, Leaf: reading.Leaf(raw)})
	}
	rb, rec, err := raced.Flush(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	insertRows(t, ctx, ch, database, rb)
	// One step of the retention runner the anchoring role runs every clickhouse.retention.every.
	rt := cfg.ClickHouse.Retention
	rt.Readings = 40 * 24 * time.Hour
	dropped, err := retention.New(ch, retention.Config{Schema: clickhouse.Schema{Database: database}, Retention: rt}, testLogger(t)).Step(ctx)
	if err != nil || len(dropped) != 2 {
		t.Fatalf("retention step: dropped %v, %v", dropped, err)
	}
	left := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
	pos := count(t, ctx, ch, "SELECT count() FROM "+database+".expired_positions")
	// pos is 5 when the old and recent readings of rt-mixed share a batch (as a flush of them
	// all at once makes them), 0 if a flush split them; none of rt-race's, whose batch had no
	// record.
	if left != 8 || (pos != 5 && pos != 0) {
		t.Fatalf("after retention: %d readings left, %d positions recorded", left, pos)
	}
	// The flush goes on: its batch record, written and published as ingest does, and anchored.
	insertRecord(t, ctx, ch, database, rb)
	if err := consume.PublishBatch(ctx, js, rec); err != nil {
		t.Fatal(err)
	}
	// The anchor's own row comes after its batch_anchors rows (pipeline/write WriteAnchor).
	await.Until(t, ctx, "rt-race's batch anchored and its anchor recorded", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors WHERE anchor_id IN (SELECT anchor_id FROM "+database+".batch_anchors WHERE batch_id = unhex(?))", hex.EncodeToString(rb.ID[:]))
		return n > 0, fmt.Sprint(n)
	})
	run := func() audit.Report {
		t.Helper()
		rep, err := audit.Run(ctx, store.New(ch, database).Audit(), ledger.AuditLog{Client: d.Ledger}, audit.Query{To: math.MaxUint64, Grace: time.Minute, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := run(); !rep.OK() || rep.Expired != 13 {
		t.Fatalf("audit after retention: expired %d, findings %+v (report %+v)", rep.Expired, rep.Findings, rep)
	}
	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The proofs of readings left in batches that lost others, rt-race's too: batch_leaves
	// holds their batches' leaves, whatever their bytes.
	for _, r := range []struct {
		dev *testDevice
		seq uint64
	}{{mixed, 8}, {racer, 5}} {
		b, err := client.Proof(ctx, r.dev.ID, r.seq)
		if err != nil {
			t.Fatalf("the proof of %s seq %d: %v", r.dev.ID, r.seq, err)
		}
		if _, err := proof.Verify(b, trust); err != nil {
			t.Fatalf("the proof of %s seq %d, a reading left in a batch that lost others: %v", r.dev.ID, r.seq, err)
		}
	}
	// A recent reading deleted is a finding still.
	if err := ch.Exec(ctx, "ALTER TABLE "+database+".readings DELETE WHERE device_id = 'rt-mixed' AND seq = 9"); err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "the deletion done", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		return n == 7, fmt.Sprint(n)
	})
	rep := run()
	if rep.OK() || len(rep.Findings) != 1 || rep.Findings[0].Kind != audit.Missing || rep.Expired != 13 {
		t.Fatalf("audit after a deletion: expired %d, findings %+v", rep.Expired, rep.Findings)
	}
}

// insertRows inserts a batch's rows into readings as pipeline/write does (one block, with the
// batch id and leaf index of each), and not its batch record.
func insertRows(t *testing.T, ctx context.Context, ch driver.Conn, database string, b *write.Batch) {
	t.Helper()
	ins, err := ch.PrepareBatch(ctx, "INSERT INTO "+database+".readings (device_id, seq, ts, time, received_at, raw, leaf, batch_id, leaf_index)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range b.Readings {
		if err := ins.Append(r.Device, r.Seq, r.TS, time.UnixMilli(int64(r.TS)), r.ReceivedAt, string(r.Raw), string(r.Leaf[:]), string(b.ID[:]), r.LeafIndex); err != nil {
			t.Fatal(err)
		}
	}
	if err := ins.Send(); err != nil {
		t.Fatal(err)
	}
}

// insertRecord inserts a batch's record into batches as pipeline/write does.
func insertRecord(t *testing.T, ctx context.Context, ch driver.Conn, database string, b *write.Batch) {
	t.Helper()
	tsMin, tsMax := b.Readings[0].TS, b.Readings[0].TS
	for _, r := range b.Readings {
		tsMin, tsMax = min(tsMin, r.TS), max(tsMax, r.TS)
	}
	ins, err := ch.PrepareBatch(ctx, "INSERT INTO "+database+".batches (batch_id, root, size, created_at, worker, ts_min, ts_max)")
	if err != nil {
		t.Fatal(err)
	}
	if err := ins.Append(string(b.ID[:]), string(b.Root[:]), uint32(len(b.Readings)), b.Created, b.Worker, tsMin, tsMax); err != nil {
		t.Fatal(err)
	}
	if err := ins.Send(); err != nil {
		t.Fatal(err)
	}
}
