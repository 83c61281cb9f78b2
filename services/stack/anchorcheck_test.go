package stack

import (
	"context"
	"fmt"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/schemas/entry"
)

// The checks that every batch is anchored exactly once, shared by the tests that take the
// ledger away (TestLedgerOutage, TestFourValidators).

// awaitAllAnchored waits until all readings readings are stored once, sit in batch rows, every
// batch is covered by an anchor and every anchor that covers one is recorded.
func awaitAllAnchored(t *testing.T, ctx context.Context, ch driver.Conn, database string, readings uint64) {
	t.Helper()
	await.Until(t, ctx, "every reading stored and every batch anchored", func() (bool, string) {
		c := count(t, ctx, ch, "SELECT count() FROM "+database+".readings_unique")
		sized := count(t, ctx, ch, "SELECT toUInt64(sum(size)) FROM "+database+".batches FINAL")
		u := unanchored(t, ctx, ch, database)
		unrecorded := count(t, ctx, ch, "SELECT count() FROM (SELECT DISTINCT anchor_id FROM "+database+".batch_anchors) WHERE anchor_id NOT IN (SELECT anchor_id FROM "+database+".anchors)")
		return c == readings && sized == readings && u == 0 && unrecorded == 0,
			fmt.Sprintf("%d of %d readings, %d in batch rows, %d batches unanchored, %d anchors not recorded", c, readings, sized, u, unrecorded)
	})
}

// unanchored counts the batches that no anchor covers yet.
func unanchored(t *testing.T, ctx context.Context, ch driver.Conn, database string) uint64 {
	t.Helper()
	return count(t, ctx, ch, "SELECT count() FROM "+database+".batches FINAL WHERE batch_id NOT IN (SELECT batch_id FROM "+database+".batch_anchors)")
}

// anchoredOnce checks that every batch is in exactly one anchor, and that the anchors on the
// ledger and those recorded in ClickHouse are the same, each once, covering readings readings.
func anchoredOnce(t *testing.T, ctx context.Context, ch driver.Conn, database string, l *ledger.Client, readings uint64) {
	t.Helper()
	batches := count(t, ctx, ch, "SELECT count() FROM "+database+".batches FINAL")
	if twice := count(t, ctx, ch, "SELECT count() FROM (SELECT batch_id FROM "+database+".batch_anchors GROUP BY batch_id HAVING uniqExact(anchor_id) > 1)"); twice != 0 {
		t.Errorf("%d batches are in more than one anchor", twice)
	}
	if u := unanchored(t, ctx, ch, database); u != 0 {
		t.Errorf("%d batches are in no anchor", u)
	}
	if stray := count(t, ctx, ch, "SELECT count() FROM "+database+".batch_anchors WHERE batch_id NOT IN (SELECT batch_id FROM "+database+".batches)"); stray != 0 {
		t.Errorf("%d batch_anchors rows name no batch", stray)
	}

	type recorded struct {
		batches, covered       uint64
		readings, logIndex, at uint64
	}
	byID := map[string]*recorded{}
	rows, err := ch.Query(ctx, "SELECT anchor_id, batches, readings, log_index, height FROM "+database+".anchors FINAL")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var nb uint32
		var r recorded
		if err := rows.Scan(&id, &nb, &r.readings, &r.logIndex, &r.at); err != nil {
			t.Fatal(err)
		}
		r.batches = uint64(nb)
		byID[id] = &r
	}
	rows.Close()
	if raw := count(t, ctx, ch, "SELECT count() FROM "+database+".anchors"); raw != uint64(len(byID)) {
		t.Errorf("%d anchors rows for %d anchors: an anchor recorded twice", raw, len(byID))
	}
	if idx := count(t, ctx, ch, "SELECT uniqExact(log_index) FROM "+database+".anchors FINAL"); idx != uint64(len(byID)) {
		t.Errorf("%d anchors recorded at %d log indexes", len(byID), idx)
	}
	rows, err = ch.Query(ctx, "SELECT anchor_id, count() FROM "+database+".batch_anchors FINAL GROUP BY anchor_id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var c uint64
		if err := rows.Scan(&id, &c); err != nil {
			t.Fatal(err)
		}
		if r := byID[id]; r != nil {
			r.covered = c
		}
	}
	rows.Close()
	for id, r := range byID {
		if r.covered != r.batches {
			t.Errorf("anchor %x covers %d batches, batch_anchors lists %d", id, r.batches, r.covered)
		}
	}

	// The ledger's log: each anchor entry recorded, none anchoring a batch a second time.
	var onLedger, ledgerBatches, ledgerReadings uint64
	for from := uint64(0); ; {
		es, err := l.Entries(ctx, from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, le := range es.Entries {
			e, err := entry.Decode(le.Entry)
			if err != nil {
				t.Fatalf("ledger entry %d: %v", le.Index, err)
			}
			if e.Anchor == nil {
				continue
			}
			onLedger++
			ledgerBatches += e.Anchor.Batches
			ledgerReadings += e.Anchor.Readings
			r := byID[string(e.Anchor.ID)]
			switch {
			case r == nil:
				t.Errorf("anchor %x at log index %d is not recorded in ClickHouse", e.Anchor.ID, le.Index)
			case r.logIndex != le.Index || r.batches != e.Anchor.Batches || r.readings != e.Anchor.Readings:
				t.Errorf("anchor %x recorded as %+v, the ledger has log index %d, %d batches, %d readings", e.Anchor.ID, *r, le.Index, e.Anchor.Batches, e.Anchor.Readings)
			}
		}
		from += uint64(len(es.Entries))
		if len(es.Entries) == 0 || from >= es.LogSize {
			break
		}
	}
	if onLedger != uint64(len(byID)) {
		t.Errorf("%d anchors on the ledger, %d recorded", onLedger, len(byID))
	}
	if ledgerBatches != batches || ledgerReadings != readings {
		t.Errorf("the ledger's anchors cover %d batches and %d readings; there are %d batches of %d readings", ledgerBatches, ledgerReadings, batches, readings)
	}
	t.Logf("%d anchors over %d batches", onLedger, batches)
}
