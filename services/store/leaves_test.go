package store_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/store"
)

// zeroEndedBatch is a batch of n readings whose odd leaves end in zero bytes (one, two, ...),
// with device times alternating between two months, written to the block in reverse order.
func zeroEndedBatch(id byte, n int, months ...time.Time) *write.Batch {
	b := &write.Batch{Created: time.Now().Truncate(time.Second), Worker: "w"}
	b.ID[0], b.Root[0] = id, id
	for i := range n {
		raw := fmt.Appendf(nil, "raw-%d-%d", id, i)
		leaf := sha256.Sum256(raw)
		if i%2 == 1 {
			clear(leaf[32-(i+1)/2:])
		}
		ts := months[i%len(months)].Add(time.Duration(i) * time.Second)
		b.Readings = append(b.Readings, write.Reading{Device: "d", Seq: uint64(id)*100 + uint64(i), TS: uint64(ts.UnixMilli()), ReceivedAt: time.Now(),
			Raw: raw, Leaf: leaf, LeafIndex: uint32(i), Metrics: []reading.Metric{{Name: "x", Value: 1}}})
	}
	slices.Reverse(b.Readings)
	return b
}

func checkLeaves(t *testing.T, ctx context.Context, s *store.Store, b *write.Batch, what string) {
	t.Helper()
	leaves, err := s.BatchLeaves(ctx, b.ID)
	if err != nil || len(leaves) != len(b.Readings) {
		t.Fatalf("%s: batch %x: %d leaves, want %d (%v)", what, b.ID[:1], len(leaves), len(b.Readings), err)
	}
	for _, r := range b.Readings {
		if leaves[r.LeafIndex] != r.Leaf {
			t.Fatalf("%s: batch %x leaf %d: %x, want %x", what, b.ID[:1], r.LeafIndex, leaves[r.LeafIndex], r.Leaf)
		}
	}
}

func exec(t *testing.T, ctx context.Context, conn driver.Conn, qs ...string) {
	t.Helper()
	for _, q := range qs {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// A batch's row of batch_leaves holds every byte of its leaves, those ending in zero bytes too,
// and the month of each position's device time: both are read from it once the batch's rows of
// readings are gone (as retention drops them). Expired reads the months retention dropped.
func TestBatchLeavesKeepTimes(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	w, s := write.New(conn, db), store.New(conn, db)
	jan, mar := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC), time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC)
	b := zeroEndedBatch(1, 6, jan, mar)
	if err := w.WriteBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	checkLeaves(t, ctx, s, b, "stored")
	exec(t, ctx, conn, "TRUNCATE TABLE "+db+".readings")
	checkLeaves(t, ctx, s, b, "without its rows of readings")

	// A row as the view wrote it before migration 0013 has no times.
	exec(t, ctx, conn, "INSERT INTO "+db+".batch_leaves (batch_id, n, distinct_indexes, max_index, leaves) SELECT toFixedString('old', 16), 1, 1, 0, toString(SHA256('x'))")
	var old [16]byte
	copy(old[:], "old")
	months, err := s.Audit().LeafMonths(ctx, [][16]byte{b.ID, old, {9}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{202601, 202603, 202601, 202603, 202601, 202603}; len(months) != 1 || !slices.Equal(months[b.ID], want) {
		t.Fatalf("months %v, want only batch %x with %v", months, b.ID[:1], want)
	}

	e, err := s.Audit().Expired(ctx)
	if err != nil || len(e.Months) != 0 || !e.Before.IsZero() {
		t.Fatalf("nothing expired: %+v, %v", e, err)
	}
	feb, jan1, mar1 := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	exec(t, ctx, conn, fmt.Sprintf("INSERT INTO %s.expired (expired_at, table_name, partition, before) SELECT now(), 'readings', '202601', toDateTime(%d) "+
		"UNION ALL SELECT now(), 'readings', '202512', toDateTime(%d) UNION ALL SELECT now(), 'metrics', '202602', toDateTime(%d)", db, feb.Unix(), jan1.Unix(), mar1.Unix()))
	e, err = s.Audit().Expired(ctx)
	if err != nil || len(e.Months) != 2 || !e.Months[202601] || !e.Months[202512] || !e.Before.Equal(feb) {
		t.Fatalf("expired: %+v, %v", e, err)
	}
}

// Migration 0013 repairs the rows the view of 0007 cut (toString drops a FixedString's trailing
// zero bytes) from the batches' rows of readings, with their times, where those are whole; a
// batch that retention has taken rows from already is left as it was.
func TestRepairCutLeaves(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	w, s := write.New(conn, db), store.New(conn, db)
	ms, err := clickhouse.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	statement := func(version uint32, prefix string) []string {
		t.Helper()
		for _, m := range ms {
			if m.Version != version {
				continue
			}
			for i, st := range m.Statements {
				if strings.HasPrefix(st, prefix) {
					var out []string
					for _, st := range m.Statements[i:] {
						out = append(out, strings.ReplaceAll(st, "{db}", db))
					}
					return out
				}
			}
		}
		t.Fatalf("migration %d has no statement %q", version, prefix)
		return nil
	}
	// batch_leaves and its view as migration 0007 made them.
	exec(t, ctx, conn, "DROP TABLE "+db+".batch_leaves_mv", "ALTER TABLE "+db+".batch_leaves DROP COLUMN times",
		statement(7, "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_leaves_mv")[0])
	jan, feb, mar := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC), time.Date(2026, 2, 3, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC)
	whole, partial, retried := zeroEndedBatch(1, 5, feb, mar), zeroEndedBatch(2, 4, jan, mar), zeroEndedBatch(3, 3, mar)
	for _, b := range []*write.Batch{whole, partial, retried, retried} {
		if err := w.WriteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	var cut uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".batch_leaves WHERE length(leaves) != 32 * n").Scan(&cut); err != nil || cut != 4 {
		t.Fatalf("%d rows of the old view cut, want 4 (%v)", cut, err)
	}
	// partial loses its January rows (retention), then 0013 runs (the view anew and the repair).
	exec(t, ctx, conn, "ALTER TABLE "+db+".readings DROP PARTITION 202601")
	exec(t, ctx, conn, statement(13, "")...)

	got, err := s.Audit().LeafMonths(ctx, [][16]byte{whole.ID, partial.ID, retried.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !slices.Equal(got[whole.ID], []uint32{202602, 202603, 202602, 202603, 202602}) || !slices.Equal(got[retried.ID], []uint32{202603, 202603, 202603}) {
		t.Fatalf("months after the repair %v, want those of batches 1 and 3 only", got)
	}
	exec(t, ctx, conn, "TRUNCATE TABLE "+db+".readings")
	checkLeaves(t, ctx, s, whole, "repaired, without its rows of readings")
	checkLeaves(t, ctx, s, retried, "stored twice, repaired, without its rows of readings")
	if leaves, err := s.BatchLeaves(ctx, partial.ID); err == nil {
		t.Fatalf("batch 2, cut and not repaired: %d leaves without its rows of readings", len(leaves))
	}
}
