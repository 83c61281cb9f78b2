package clickhouse_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/clickhouse"
)

// Every statement of every migration has a form that runs on a cluster: ON CLUSTER, replicated
// engines, each (re)created table on its own ZooKeeper path.
func TestClusterStatements(t *testing.T) {
	ms, err := clickhouse.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	s := clickhouse.Schema{Database: "db", Cluster: "c"}
	paths := map[string]string{}
	for _, m := range ms {
		for i, st := range m.Statements {
			got, err := s.Statement(m, st)
			if err != nil {
				t.Fatalf("%s statement %d: %v", m.Name, i+1, err)
			}
			if strings.Contains(got, "{db}") || strings.Contains(got, "{cluster}") {
				t.Errorf("%s statement %d keeps a placeholder: %s", m.Name, i+1, got)
			}
			if !strings.HasPrefix(got, "INSERT") && !strings.Contains(got, " ON CLUSTER c") {
				t.Errorf("%s statement %d runs on one node: %s", m.Name, i+1, got)
			}
			if strings.Contains(got, "MergeTree") && !strings.Contains(got, "ENGINE = Replicated") {
				t.Errorf("%s statement %d makes a table that is not replicated: %s", m.Name, i+1, got)
			}
			if _, path, ok := strings.Cut(got, "Replicated"); ok {
				path = path[strings.Index(path, "'"):]
				path = path[:strings.Index(path[1:], "'")+2]
				if prev, ok := paths[path]; ok {
					t.Errorf("%s statement %d and %s share the ZooKeeper path %s", m.Name, i+1, prev, path)
				}
				paths[path] = fmt.Sprintf("%s statement %d", m.Name, i+1)
			}
		}
	}
	one := clickhouse.Schema{Database: "db"}
	st, err := one.Statement(ms[0], ms[0].Statements[0])
	if err != nil || strings.Contains(st, "CLUSTER") || strings.Contains(st, "Replicated") {
		t.Fatalf("without a cluster: %s, %v", st, err)
	}
	if _, err := s.Statement(ms[0], "OPTIMIZE TABLE db.readings"); err == nil {
		t.Fatal("a statement without a cluster form was accepted")
	}
}

// TestCluster migrates a database on a cluster of two replicas (ClickHouse 18.16 and Debian's
// ZooKeeper): every table exists on both with its replicated engine, readings and rollups written
// on one replica are read on the other and through the Distributed tables, the versions are
// replicated too (migrating from the other node applies nothing), and a database made the
// other way round is refused with ErrClusterMismatch.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	shard, err := chserver.StartShard(ctx, t.TempDir(), "anchorline", 2, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = shard.Stop() }()
	conns := make([]driver.Conn, 2)
	for i, r := range shard.Replicas {
		if conns[i], err = r.Open(ctx, "default"); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	s := clickhouse.Schema{Database: "clustered", Cluster: "anchorline"}
	ms, err := clickhouse.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	applied, err := s.Migrate(ctx, conns[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(ms) {
		t.Fatalf("applied %v, want all %d migrations", applied, len(ms))
	}
	tables := func(c driver.Conn) map[string]string {
		rows, err := c.Query(ctx, "SELECT name, engine FROM system.tables WHERE database = 'clustered'")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var n, e string
			if err := rows.Scan(&n, &e); err != nil {
				t.Fatal(err)
			}
			out[n] = e
		}
		return out
	}
	t0, t1 := tables(conns[0]), tables(conns[1])
	for _, name := range []string{"readings", "metrics", "metrics_1m", "metrics_1h", "rejected", "batches", "anchors", "batch_anchors", "batch_leaves", "reading_lookup", "anomalies", "device_heads", "schema_migrations"} {
		if !strings.HasPrefix(t0[name], "Replicated") || t0[name] != t1[name] {
			t.Errorf("table %s: engine %q on replica 1, %q on replica 2; want the same Replicated engine", name, t0[name], t1[name])
		}
	}
	for _, name := range []string{"readings_all", "metrics_all", "metrics_1m_all", "metrics_1h_all", "rejected_all", "anomalies_all"} {
		if t0[name] != "Distributed" || t1[name] != "Distributed" {
			t.Errorf("table %s: %q and %q, want Distributed on both", name, t0[name], t1[name])
		}
	}
	for _, name := range []string{"metrics_1m_mv", "metrics_1h_mv", "device_heads_mv", "batch_leaves_mv", "reading_lookup_mv", "readings_unique", "metrics_unique"} {
		if t0[name] == "" || t1[name] == "" {
			t.Errorf("view %s missing: %q, %q", name, t0[name], t1[name])
		}
	}

	// A reading and its metric written on replica 1: the rows, the minute and hour rollups, the
	// device head and the batch's leaves and device times arrive on replica 2.
	for _, q := range []string{
		"INSERT INTO clustered.readings (device_id, seq, ts, time, received_at, raw, leaf, batch_id, leaf_index) SELECT 'd1', 1, 1700000000000, toDateTime(1700000000), now(), 'raw', toFixedString('l', 32), toFixedString('b', 16), 0",
		"INSERT INTO clustered.metrics (device_id, seq, ts, time, metric, value) SELECT 'd1', 1, 1700000000000, toDateTime(1700000000), 'temp', 21.5",
	} {
		if err := conns[0].Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		"SELECT count() FROM clustered.readings",
		"SELECT count() FROM clustered.metrics",
		"SELECT toUInt64(countMerge(count)) FROM clustered.metrics_1m",
		"SELECT toUInt64(countMerge(count)) FROM clustered.metrics_1h",
		"SELECT count() FROM clustered.device_heads",
		"SELECT count() FROM clustered.batch_leaves WHERE times = [toDateTime(1700000000)] AND length(leaves) = 32",
		"SELECT count() FROM clustered.readings_all",
		"SELECT toUInt64(countMerge(count)) FROM clustered.metrics_1h_all",
	} {
		await.Until(t, ctx, "replica 2: "+q, func() (bool, string) {
			var n uint64
			if err := conns[1].QueryRow(ctx, q).Scan(&n); err != nil {
				return false, err.Error()
			}
			return n == 1, fmt.Sprintf("%d rows", n)
		})
	}

	// Sync returns once replica 2 has what replica 1 wrote.
	if err := conns[0].Exec(ctx, "INSERT INTO clustered.batches (batch_id, root, size, created_at, worker, ts_min, ts_max) SELECT toFixedString('s', 16), toFixedString('r', 32), 1, now(), 'w', 0, 0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx, conns[1]); err != nil {
		t.Fatal(err)
	}
	var synced uint64
	if err := conns[1].QueryRow(ctx, "SELECT count() FROM clustered.batches").Scan(&synced); err != nil || synced != 1 {
		t.Fatalf("after Sync replica 2 has %d batch rows (%v), want 1", synced, err)
	}

	// The versions are replicated: migrating from replica 2 applies nothing; Check passes there.
	await.Until(t, ctx, "versions on replica 2", func() (bool, string) {
		err := s.Check(ctx, conns[1])
		return err == nil, fmt.Sprint(err)
	})
	if applied, err := s.Migrate(ctx, conns[1]); err != nil || len(applied) != 0 {
		t.Fatalf("second migrate from replica 2: %v, %v", applied, err)
	}

	// Made one way, used the other: refused.
	if err := clickhouse.Check(ctx, conns[1], "clustered"); !errors.Is(err, clickhouse.ErrClusterMismatch) || !strings.Contains(err.Error(), "clickhouse.cluster") {
		t.Fatalf("check without a cluster: %v", err)
	}
	if _, err := clickhouse.Migrate(ctx, conns[0], "single"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WithDatabase("single").Migrate(ctx, conns[0]); !errors.Is(err, clickhouse.ErrClusterMismatch) {
		t.Fatalf("cluster migrate of a one-server database: %v", err)
	}
	if _, err := (clickhouse.Schema{Database: "other", Cluster: "nosuch"}).Migrate(ctx, conns[0]); err == nil || !strings.Contains(err.Error(), "clickhouse.cluster nosuch") || !strings.Contains(err.Error(), "anchorline") {
		t.Fatalf("unknown cluster: %v", err)
	}
}
