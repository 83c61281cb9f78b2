package stack

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/audit"
	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/retention"
	"github.com/anchorline/anchorline/services/store"
)

// TestTableRetention: with clickhouse.retention.readings, the retention runner drops the monthly
// partitions of readings whose whole month is past it; the audit reports the anchored readings
// that left, in a batch of their own or in a batch that also holds recent readings, as expired
// and not missing, and still finds a recent reading deleted; the proofs of the readings left
// still verify.
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
	whole, mixed := newDevice(t, "rt-old", reading.Ed25519), newDevice(t, "rt-mixed", reading.Ed25519)
	for _, dv := range []*testDevice{whole, mixed} {
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
	// One step of the retention runner the anchoring role runs every clickhouse.retention.every
	// (run here once everything is written: a flush writing into a month while it is dropped
	// is a known gap, see the README).
	rt := cfg.ClickHouse.Retention
	rt.Readings = 40 * 24 * time.Hour
	dropped, err := retention.New(ch, retention.Config{Schema: clickhouse.Schema{Database: database}, Retention: rt}, testLogger(t)).Step(ctx)
	if err != nil || len(dropped) != 2 {
		t.Fatalf("retention step: dropped %v, %v", dropped, err)
	}
	left := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
	pos := count(t, ctx, ch, "SELECT count() FROM "+database+".expired_positions")
	// pos is 5 when the old and recent readings of rt-mixed share a batch (as a flush of them
	// all at once makes them), 0 if a flush split them.
	if left != 5 || (pos != 5 && pos != 0) {
		t.Fatalf("after retention: %d readings left, %d positions recorded", left, pos)
	}
	run := func() audit.Report {
		t.Helper()
		rep, err := audit.Run(ctx, store.New(ch, database).Audit(), ledger.AuditLog{Client: d.Ledger}, audit.Query{To: math.MaxUint64, Grace: time.Minute, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := run(); !rep.OK() || rep.Expired != 10 {
		t.Fatalf("audit after retention: expired %d, findings %+v (report %+v)", rep.Expired, rep.Findings, rep)
	}
	trust, err := client.Trust(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	await.Until(t, ctx, "the proof of rt-mixed seq 8", func() (bool, string) {
		b, err = client.Proof(ctx, mixed.ID, 8)
		return err == nil, fmt.Sprint(err)
	})
	if _, err := proof.Verify(b, trust); err != nil {
		t.Fatalf("the proof of a reading left in a batch that lost others: %v", err)
	}
	// A recent reading deleted is a finding still.
	if err := ch.Exec(ctx, "ALTER TABLE "+database+".readings DELETE WHERE device_id = 'rt-mixed' AND seq = 9"); err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "the deletion done", func() (bool, string) {
		n := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		return n == 4, fmt.Sprint(n)
	})
	rep := run()
	if rep.OK() || len(rep.Findings) != 1 || rep.Findings[0].Kind != audit.Missing || rep.Expired != 10 {
		t.Fatalf("audit after a deletion: expired %d, findings %+v", rep.Expired, rep.Findings)
	}
}
