package clickhouse_test

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/clickhouse"
)

// quantileRankError is the largest rank error the rollups' quantiles may have, as a fraction of
// the period's values: a quantile q of level p is good when the share of the period's values
// below q and the share at or below q bracket p within it. ClickHouse's quantiles keep a
// reservoir of 8,192 values per state, so up to that many values per period they are exact up to
// interpolation between neighbours; beyond, a sample (README, "For analysts").
const quantileRankError = 0.01

// value is one metric value, as ingest stores it.
type value struct {
	dev, metric string
	seq         uint64
	at          time.Time
	v           float64
}

// insertMetrics inserts vs into metrics in one block.
func insertMetrics(t *testing.T, ctx context.Context, conn driver.Conn, db string, cols string, vs []value, extra ...any) {
	t.Helper()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".metrics ("+cols+")")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range vs {
		args := append([]any{x.dev, x.seq, uint64(x.at.UnixMilli()), x.at, x.metric, x.v}, extra...)
		if err := b.Append(args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

// fleetValues are three devices' two metrics, one reading every 7 s over three hours, in
// values that sum exactly in float64 (multiples of 1/4), so sums can be compared exactly.
func fleetValues() []value {
	base := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	var out []value
	for d := range 3 {
		for i := range 3 * 3600 / 7 {
			at := base.Add(time.Duration(i*7) * time.Second)
			dev := fmt.Sprintf("d%d", d)
			seq := uint64(i + 1)
			out = append(out,
				value{dev, "temp", seq, at, float64((i*37+d*11)%400) / 4},
				value{dev, "hum", seq, at, float64((i*13)%97) - 20})
		}
	}
	return out
}

// checkRollups compares every row of a rollup with the same aggregates computed from metrics:
// count, min, max and sum exactly, avg to the last bits, quantiles within quantileRankError.
func checkRollups(t *testing.T, ctx context.Context, conn driver.Conn, db string, vs []value) {
	t.Helper()
	for _, r := range []struct {
		table string
		trunc func(time.Time) time.Time
	}{
		{"metrics_1m", func(at time.Time) time.Time { return at.Truncate(time.Minute) }},
		{"metrics_1h", func(at time.Time) time.Time { return at.Truncate(time.Hour) }},
	} {
		want := map[string][]float64{}
		for _, x := range vs {
			k := fmt.Sprintf("%s/%s/%d", x.dev, x.metric, r.trunc(x.at).Unix())
			want[k] = append(want[k], x.v)
		}
		rows, err := conn.Query(ctx, "SELECT device_id, metric, period, countMerge(count), minMerge(min), maxMerge(max), sumMerge(sum), avgMerge(avg), quantilesMerge(0.5, 0.9, 0.99)(quantiles) FROM "+db+"."+r.table+" GROUP BY device_id, metric, period")
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for rows.Next() {
			var dev, metric string
			var period time.Time
			var n uint64
			var lo, hi, sum, avg float64
			var q []float64
			if err := rows.Scan(&dev, &metric, &period, &n, &lo, &hi, &sum, &avg, &q); err != nil {
				t.Fatal(err)
			}
			k := fmt.Sprintf("%s/%s/%d", dev, metric, period.Unix())
			w := append([]float64(nil), want[k]...)
			sort.Float64s(w)
			var wsum float64
			for _, x := range w {
				wsum += x
			}
			if len(w) == 0 || n != uint64(len(w)) || lo != w[0] || hi != w[len(w)-1] || sum != wsum || math.Abs(avg-wsum/float64(len(w))) > 1e-9 {
				t.Fatalf("%s %s: count %d min %g max %g sum %g avg %g; metrics give %d %g %g %g", r.table, k, n, lo, hi, sum, avg, len(w), w[0], w[len(w)-1], wsum)
			}
			for i, p := range []float64{0.5, 0.9, 0.99} {
				below := sort.SearchFloat64s(w, q[i])                                     // values < q
				atOrBelow := sort.Search(len(w), func(j int) bool { return w[j] > q[i] }) // values <= q
				tol := max(quantileRankError, 1/float64(len(w)))
				if float64(below)/float64(len(w)) > p+tol || float64(atOrBelow)/float64(len(w)) < p-tol {
					t.Fatalf("%s %s: quantile %g is %g, whose rank is %d..%d of %d", r.table, k, p, q[i], below, atOrBelow, len(w))
				}
			}
			seen++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if seen != len(want) {
			t.Fatalf("%s has %d periods, metrics %d", r.table, seen, len(want))
		}
	}
}

// TestRollupsMatchMetrics inserts three hours of a small fleet in blocks, the first hour's
// last quarter late (after the hours that follow it), and compares both rollups with the
// aggregates computed from metrics.
func TestRollupsMatchMetrics(t *testing.T) {
	ctx := context.Background()
	_, db, conn := chserver.NewDatabase(t)
	vs := fleetValues()
	var late, onTime []value
	for _, x := range vs {
		if x.at.Hour() == 10 && x.at.Minute() >= 45 {
			late = append(late, x)
		} else {
			onTime = append(onTime, x)
		}
	}
	const cols = "device_id, seq, ts, time, metric, value"
	for i := 0; i < len(onTime); i += 1000 {
		insertMetrics(t, ctx, conn, db, cols, onTime[i:min(i+1000, len(onTime))])
	}
	insertMetrics(t, ctx, conn, db, cols, late)
	checkRollups(t, ctx, conn, db, vs)
}

// TestRollupsRebuiltOnUpgrade migrates a database made with the first four migrations, whose
// metrics carry batch ids and whose rollups are of the first form, and checks that the rollups
// are rebuilt from metrics, once, also when the migration runs again after an interruption.
func TestRollupsRebuiltOnUpgrade(t *testing.T) {
	ctx := context.Background()
	_, _, conn := chserver.NewDatabase(t)
	db := fmt.Sprintf("upgrade_%d", time.Now().UnixNano())
	t.Cleanup(func() { _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db) })
	ms, err := clickhouse.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:4] {
		for _, st := range m.Statements {
			if err := conn.Exec(ctx, replaceDB(st, db)); err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
		}
	}
	vs := fleetValues()
	insertMetrics(t, ctx, conn, db, "device_id, seq, ts, time, metric, value, batch_id", vs, string(make([]byte, 16)))
	// Record the four as applied, as the Migrate of an older build did.
	for _, m := range ms[:4] {
		if err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+db+".schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version"); err != nil {
			t.Fatal(err)
		}
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at)")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(m.Version, m.Name, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 2 {
		applied, err := clickhouse.Migrate(ctx, conn, db)
		if err != nil || len(applied) != len(ms)-4 {
			t.Fatalf("round %d: applied %v, %v", round, applied, err)
		}
		var batchCols uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = 'metrics' AND name = 'batch_id'", db).Scan(&batchCols); err != nil || batchCols != 0 {
			t.Fatalf("round %d: metrics.batch_id still there (%d, %v)", round, batchCols, err)
		}
		var prevCols, unique, metricsUnique uint64
		if err := conn.QueryRow(ctx, "SELECT (SELECT count() FROM system.columns WHERE database = ? AND table = 'readings' AND name = 'prev'), (SELECT count() FROM "+db+".readings_unique), (SELECT count() FROM "+db+".metrics_unique)", db).Scan(&prevCols, &unique, &metricsUnique); err != nil || prevCols != 0 || metricsUnique != uint64(len(vs)) {
			t.Fatalf("round %d: readings.prev columns %d, readings_unique %d rows, metrics_unique %d of %d (%v)", round, prevCols, unique, metricsUnique, len(vs), err)
		}
		checkRollups(t, ctx, conn, db, vs)
		// As if it had been interrupted before it was recorded: it runs again.
		if err := conn.Exec(ctx, "ALTER TABLE "+db+".schema_migrations DELETE WHERE version >= 5"); err != nil {
			t.Fatal(err)
		}
		waitMutations(t, ctx, conn, db)
	}
}

func replaceDB(st, db string) string { return strings.ReplaceAll(st, "{db}", db) }

// waitMutations waits until every mutation of db is done.
func waitMutations(t *testing.T, ctx context.Context, conn driver.Conn, db string) {
	t.Helper()
	await.Until(t, ctx, "mutations of "+db, func() (bool, string) {
		var pending uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND is_done = 0", db).Scan(&pending); err != nil {
			return false, err.Error()
		}
		return pending == 0, fmt.Sprintf("%d mutations pending", pending)
	})
}
