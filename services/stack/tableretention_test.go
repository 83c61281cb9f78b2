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
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/store"
)

// TestTableRetention: with clickhouse.retention.readings, the anchoring role drops the monthly
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
	cfg.ClickHouse.Retention.Readings = 40 * 24 * time.Hour
	cfg.ClickHouse.Retention.Every = 300 * time.Millisecond
	d, cfg, js := startTestDev(t, ctx, cfg)
	client := d.APIClient()
	old := func() time.Time { return time.Now().Add(-90 * 24 * time.Hour) }
	whole, mixed := newDevice(t, "rt-old", reading.Ed25519), newDevice(t, "rt-mixed", reading.Ed25519)
	for _, dv := range []*testDevice{whole, mixed} {
		register(t, ctx, client, d.AdminKey, dv.ID, dv.Key.Public())
	}
	// A batch of old readings only (retention may drop them as soon as the batch has its
	// record); then a batch of old and recent ones.
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
	// Retention may drop the old partition before or after the second batch is anchored:
	// wait for what is left.
	await.Until(t, ctx, "the old readings dropped, the recent ones anchored", func() (bool, string) {
		left := count(t, ctx, ch, "SELECT count() FROM "+database+".readings")
		pos := count(t, ctx, ch, "SELECT count() FROM "+database+".expired_positions")
		recent := count(t, ctx, ch, "SELECT count() FROM "+database+".readings WHERE device_id = 'rt-mixed' AND seq > 5 AND batch_id IN (SELECT batch_id FROM "+database+".batch_anchors)")
		// pos is 5 when the old and recent readings of rt-mixed share a batch (as a flush of
		// them all at once makes them), 0 if a flush split them.
		return left == 5 && (pos == 5 || pos == 0) && recent == 5, fmt.Sprintf("%d readings left, %d positions recorded, %d anchored", left, pos, recent)
	})
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
	b, err := client.Proof(ctx, mixed.ID, 8)
	if err != nil {
		t.Fatal(err)
	}
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
