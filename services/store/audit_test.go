package store_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/audit"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/services/store"
)

// sizedSource is the store as the audit reads it, noting the most rows one Readings call
// returned.
type sizedSource struct {
	audit.Source
	mu          sync.Mutex
	calls, most int
	mostBatches int
}

func (s *sizedSource) Readings(ctx context.Context, ids [][16]byte) (map[[16]byte][]audit.Reading, error) {
	rows, err := s.Source.Readings(ctx, ids)
	n := 0
	for _, rs := range rows {
		n += len(rs)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.most, s.mostBatches = max(s.most, n), max(s.mostBatches, len(ids))
	return rows, err
}

// The audit reads and checks a range in windows: whatever their size, tampered data gives the
// same report, and no window's rows exceed the window (or the largest batch).
func TestAuditWindows(t *testing.T) {
	ctx := t.Context()
	_, db, conn := chserver.NewDatabase(t)
	d := auditData{readings: 9_000, devices: 7, perAnchor: 3}
	log := d.fill(ctx, t, write.New(conn, db))
	batch := func(i int) string {
		id := sha256Prefix("batch", i)
		return "unhex('" + hex.EncodeToString(id[:]) + "')"
	}
	anchor := func(i int) string {
		id := sha256Prefix("anchor", i)
		return "unhex('" + hex.EncodeToString(id[:]) + "')"
	}
	r, old := db+".readings", "toDateTime('2020-01-01 00:00:00')"
	for _, q := range []string{
		// Batch 0: a reading's bytes changed. Batch 1: a reading deleted. Batch 2: a row added
		// beyond the batch and a second row at a position.
		"ALTER TABLE " + r + " UPDATE raw = concat(raw, 'x') WHERE batch_id = " + batch(0) + " AND leaf_index = 5",
		"ALTER TABLE " + r + " DELETE WHERE batch_id = " + batch(1) + " AND leaf_index = 3",
		"INSERT INTO " + r + " SELECT device_id, 9999, ts, time, received_at, raw, leaf, batch_id, 5000, 0 FROM " + r + " WHERE batch_id = " + batch(2) + " AND leaf_index = 0",
		"INSERT INTO " + r + " SELECT device_id, 9998, ts, time, received_at, concat(raw, 'y'), SHA256(concat(unhex('00'), raw, 'y')), batch_id, 7, 0 FROM " + r + " WHERE batch_id = " + batch(2) + " AND leaf_index = 1",
		// A row in a batch nobody recorded, and a copy of an anchored reading left by an
		// interrupted write.
		"INSERT INTO " + r + " SELECT device_id, 9997, ts, time, " + old + ", raw, leaf, toFixedString('forged-batch-id!', 16), 0, 0 FROM " + r + " WHERE batch_id = " + batch(4) + " AND leaf_index = 0",
		"INSERT INTO " + r + " SELECT device_id, seq, ts, time, " + old + ", raw, leaf, toFixedString('interrupted-wri!', 16), leaf_index, 0 FROM " + r + " WHERE batch_id = " + batch(4) + " AND leaf_index = 1",
		// A batch recorded and never anchored.
		"INSERT INTO " + db + ".batches SELECT toFixedString('unanchored-batch', 16), root, 1, " + old + ", 'w', ts_min, ts_max FROM " + db + ".batches WHERE batch_id = " + batch(4),
		"INSERT INTO " + r + " SELECT device_id, 9996, ts, time, received_at, raw, leaf, toFixedString('unanchored-batch', 16), 0, 0 FROM " + r + " WHERE batch_id = " + batch(4) + " AND leaf_index = 2",
		// Anchor 2 (batches 6-8) loses its record; anchor 3 (batches 9-11) everything stored.
		"ALTER TABLE " + db + ".anchors DELETE WHERE anchor_id IN (" + anchor(2) + ", " + anchor(3) + ")",
		"ALTER TABLE " + db + ".batch_anchors DELETE WHERE anchor_id = " + anchor(3),
		"ALTER TABLE " + db + ".batches DELETE WHERE batch_id IN (" + batch(9) + ", " + batch(10) + ", " + batch(11) + ")",
		"ALTER TABLE " + r + " DELETE WHERE batch_id IN (" + batch(9) + ", " + batch(10) + ", " + batch(11) + ")",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	await.Until(t, ctx, "mutations done", func() (bool, string) {
		var n uint64
		err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND NOT is_done", db).Scan(&n)
		return err == nil && n == 0, fmt.Sprintf("%d mutations running (%v)", n, err)
	})

	src := store.New(conn, db).Audit()
	now := time.Now()
	for _, q := range []audit.Query{
		everything(),
		// The first 2,000 readings: the batches of anchors 4 and 5 are reached from their
		// anchors, committed in the day after the range.
		{To: 1_764_000_020_000, Grace: time.Minute, Now: now},
		{From: 1_764_000_010_000, To: 1_764_000_040_000, Device: "dev-0003", Grace: time.Minute, Now: now},
	} {
		want, err := audit.Run(ctx, src, log, q)
		if err != nil {
			t.Fatal(err)
		}
		got := map[audit.Kind]int{}
		for _, f := range want.Findings {
			got[f.Kind]++
		}
		t.Logf("from %d to %d %s: %d batches, %d readings, %d anchors, findings %v, %d unmatched", q.From, q.To, q.Device, want.Batches, want.Readings, want.Anchors, got, len(want.Unmatched))
		switch {
		case q.Device != "":
			if len(want.Findings) == 0 || want.Batches == 0 {
				t.Fatalf("device %s, one window: %d batches, findings %v", q.Device, want.Batches, want.Findings)
			}
		case q.To < math.MaxUint64:
			if want.Readings < 4_000 || got[audit.Missing] < 2 {
				t.Fatalf("to %d, one window: %d readings checked, findings %v", q.To, want.Readings, got)
			}
		// anchor 2's batches: each row modified; anchor 3: missing, once.
		case got[audit.Modified] < 3 || got[audit.Missing] != 2 || got[audit.Inserted] != 3 || got[audit.Unanchored] != 1 || len(want.Unmatched) != 1 || want.Interrupted != 1:
			t.Fatalf("one window: findings %v, unmatched %v, interrupted %d", got, want.Unmatched, want.Interrupted)
		}
		for _, window := range []int{1, 500, 2_000} {
			q.Window = window
			sized := &sizedSource{Source: src}
			got, err := audit.Run(ctx, sized, log, q)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s, windows of %d readings: report\n%+v\nwant (one window)\n%+v", q.Device, window, got, want)
			}
			if sized.most > max(window, 1_000)+2 || sized.calls < 2 {
				t.Errorf("%s, windows of %d readings: %d calls, up to %d rows (%d batches) in one", q.Device, window, sized.calls, sized.most, sized.mostBatches)
			}
		}
	}
}
