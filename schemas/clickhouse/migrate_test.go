package clickhouse_test

import (
	"context"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/clickhouse"
)

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }

// NewDatabase migrates once; a second and third Migrate apply nothing and change nothing.
func TestMigrateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	for range 2 {
		applied, err := clickhouse.Migrate(ctx, conn, db)
		if err != nil || len(applied) != 0 {
			t.Fatalf("second migrate applied %v, %v", applied, err)
		}
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".schema_migrations").Scan(&n); err != nil {
		t.Fatal(err)
	}
	ms, err := clickhouse.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if n != uint64(len(ms)) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, len(ms))
	}
	rows, err := conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ?", db)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, s)
	}
	sort.Strings(tables)
	want := "anchors anomalies batch_anchors batch_leaves batch_leaves_mv batches consent_state device_heads device_heads_mv erasures events expired expired_positions metrics metrics_1h metrics_1h_mv metrics_1m metrics_1m_mv metrics_unique reading_lookup reading_lookup_mv readings readings_unique rejected schema_migrations"
	if got := strings.Join(tables, " "); got != want {
		t.Fatalf("tables:\n got %s\nwant %s", got, want)
	}
}

func TestMigrateRejectsBadDatabaseName(t *testing.T) {
	_, _, conn := chserver.NewDatabase(t)
	if _, err := clickhouse.Migrate(context.Background(), conn, "x; DROP TABLE y"); err == nil || !strings.Contains(err.Error(), "clickhouse.database") {
		t.Fatalf("bad name: %v", err)
	}
}

// The materialized views fill both rollups from metrics.
func TestRollups(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".metrics (device_id, seq, ts, time, metric, value)")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	for i := range 120 { // two minutes, one value a second
		ts := base.Add(time.Duration(i) * time.Second)
		if err := batch.Append("d1", uint64(i+1), uint64(ts.UnixMilli()), ts, "temp", float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT period, countMerge(count), minMerge(min), maxMerge(max), sumMerge(sum), avgMerge(avg), quantilesMerge(0.5, 0.9, 0.99)(quantiles) FROM "+db+".metrics_1m WHERE device_id = 'd1' AND metric = 'temp' GROUP BY period ORDER BY period")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var period time.Time
		var n uint64
		var lo, hi, sum, avg float64
		var q []float64
		if err := rows.Scan(&period, &n, &lo, &hi, &sum, &avg, &q); err != nil {
			t.Fatal(err)
		}
		if n != 60 || hi-lo != 59 || avg != (lo+hi)/2 || sum != avg*60 || len(q) != 3 || q[0] < lo || q[2] > hi {
			t.Errorf("minute %s: n=%d min=%g max=%g sum=%g avg=%g q=%v", period, n, lo, hi, sum, avg, q)
		}
		got = append(got, period.UTC().Format("15:04"))
	}
	if strings.Join(got, ",") != "10:00,10:01" {
		t.Fatalf("minutes %v", got)
	}
	var n uint64
	var hi float64
	if err := conn.QueryRow(ctx, "SELECT countMerge(count), maxMerge(max) FROM "+db+".metrics_1h WHERE device_id = 'd1'").Scan(&n, &hi); err != nil {
		t.Fatal(err)
	}
	if n != 120 || hi != 119 {
		t.Fatalf("hour: n=%d max=%g", n, hi)
	}
}
