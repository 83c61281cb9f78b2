package chserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/dircopy"
	"github.com/anchorline/anchorline/internal/testlog"
	"github.com/anchorline/anchorline/schemas/clickhouse"
)

// The restores below use the schema's real tables, made ON CLUSTER in their replicated form by
// clickhouse.Schema.Migrate on a shard of two 18.16 replicas sharing a private ZooKeeper.
const (
	backupCluster = "anchorline"
	backupDB      = "anchorline"
)

// digestQueries are, for every table that holds data, its row count and a checksum of its rows
// that does not depend on how its parts happen to be merged: ReplacingMergeTree tables are read
// FINAL, the rollups (AggregatingMergeTree) merged per key. The test data's metric values are
// small integers, so the rollups' sums are exact whatever the order of the merges.
var digestQueries = []struct{ table, query string }{
	{"readings", "SELECT count(), sum(cityHash64(device_id, seq, ts, time, received_at, raw, leaf, batch_id, leaf_index)) FROM {db}.readings"},
	{"metrics", "SELECT count(), sum(cityHash64(device_id, seq, ts, time, metric, value)) FROM {db}.metrics"},
	{"metrics_1m", rollupDigest},
	{"metrics_1h", rollupDigest},
	{"rejected", "SELECT count(), sum(cityHash64(received_at, subject, device_id, reason, detail, raw)) FROM {db}.rejected"},
	{"batches", "SELECT count(), sum(cityHash64(batch_id, root, size, created_at, worker, ts_min, ts_max)) FROM {db}.batches FINAL"},
	{"anchors", "SELECT count(), sum(cityHash64(anchor_id, root, batches, readings, height, log_index, tx_hash, entry, anchored_at)) FROM {db}.anchors FINAL"},
	{"batch_anchors", "SELECT count(), sum(cityHash64(batch_id, anchor_id, batch_index)) FROM {db}.batch_anchors FINAL"},
	{"anomalies", "SELECT count(), sum(cityHash64(detected_at, device_id, seq, kind, expected, got, prev_seq, batch_id, worker)) FROM {db}.anomalies"},
	{"device_heads", "SELECT count(), sum(cityHash64(device_id, head_seq, head_leaf)) FROM {db}.device_heads FINAL"},
	{"batch_leaves", "SELECT count(), sum(cityHash64(batch_id, n, distinct_indexes, max_index, leaves)) FROM {db}.batch_leaves FINAL"},
	{"reading_lookup", "SELECT count(), sum(cityHash64(device_id, seq, time, raw, batch_id, leaf_index)) FROM {db}.reading_lookup"},
}

const rollupDigest = `SELECT count(), sum(cityHash64(device_id, metric, period, c, lo, hi, s)) FROM (
	SELECT device_id, metric, period, countMerge(count) AS c, minMerge(min) AS lo, maxMerge(max) AS hi, sumMerge(sum) AS s
	FROM {db}.{table} GROUP BY device_id, metric, period)`

// digest is each table's row count and checksum.
type digest map[string][2]uint64

func (d digest) String() string {
	var b strings.Builder
	for _, q := range digestQueries {
		fmt.Fprintf(&b, " %s=%d/%x", q.table, d[q.table][0], d[q.table][1])
	}
	return b.String()
}

func readDigest(ctx context.Context, conn driver.Conn) (digest, error) {
	d := digest{}
	for _, q := range digestQueries {
		st := strings.NewReplacer("{db}", backupDB, "{table}", q.table).Replace(q.query)
		var n, sum uint64
		if err := conn.QueryRow(ctx, st).Scan(&n, &sum); err != nil {
			return nil, fmt.Errorf("%s: %w", q.table, err)
		}
		d[q.table] = [2]uint64{n, sum}
	}
	return d, nil
}

// awaitDigest waits until the replica on conn holds exactly want.
func awaitDigest(t *testing.T, ctx context.Context, what string, conn driver.Conn, want digest) {
	t.Helper()
	await.Until(t, ctx, what, func() (bool, string) {
		got, err := readDigest(ctx, conn)
		if err != nil {
			return false, err.Error()
		}
		return maps.Equal(got, want), "have" + got.String() + "; want" + want.String()
	})
}

// fill inserts the readings from..from+n (n a multiple of 1000) with two metrics each, and the
// batch records (one per 100 readings), anchors (one per 1,000), rejections and anomalies that
// go with them, in two inserts per table so that tables have several parts, spread over about
// a month per 900 readings so that the partitioned tables have several partitions. The views
// fill the rollups and device_heads. Every insert is INSERT SELECT: 18.16 refuses Exec with
// bound values.
func fill(ctx context.Context, conn driver.Conn, from, n uint64) error {
	var sts []string
	for _, half := range [][2]uint64{{from, n / 2}, {from + n/2, n / 2}} {
		x := fmt.Sprintf("(SELECT number + %d AS x FROM system.numbers LIMIT %d)", half[0], half[1])
		b := fmt.Sprintf("(SELECT number + %d AS b FROM system.numbers LIMIT %d)", half[0]/100, half[1]/100)
		a := fmt.Sprintf("(SELECT number + %d AS a FROM system.numbers LIMIT %d)", half[0]/1000, max(half[1]/1000, 1))
		sts = append(sts,
			`INSERT INTO {db}.readings (device_id, seq, ts, time, received_at, raw, leaf, batch_id, leaf_index)
			SELECT concat('dev-', toString(x % 50)), intDiv(x, 50), 1700000000000 + x * 3000000, toDateTime(1700000000 + x * 3000),
				toDateTime(1700000001 + x * 3000), concat('raw-', toString(x)), SHA256(toString(x)),
				toFixedString(substring(SHA256(concat('b', toString(intDiv(x, 100)))), 1, 16), 16), toUInt32(x % 100)
			FROM `+x,
			`INSERT INTO {db}.metrics (device_id, seq, ts, time, metric, value)
			SELECT concat('dev-', toString(x % 50)), intDiv(x, 50), 1700000000000 + x * 3000000, toDateTime(1700000000 + x * 3000),
				metric, toFloat64(x % 97)
			FROM `+x+` ARRAY JOIN ['temp', 'humidity'] AS metric`,
			`INSERT INTO {db}.rejected (received_at, subject, device_id, reason, detail, raw)
			SELECT toDateTime(1700000000 + x * 3000), concat('readings.dev-', toString(x % 50)), concat('dev-', toString(x % 50)),
				'bad_signature', 'signature does not verify', concat('junk-', toString(x))
			FROM `+x+` WHERE x % 20 = 0`,
			`INSERT INTO {db}.anomalies (detected_at, device_id, seq, kind, expected, got, prev_seq, batch_id, worker)
			SELECT toDateTime(1700000000 + x * 3000), concat('dev-', toString(x % 50)), intDiv(x, 50), 'gap', 'seq +1', 'seq +2',
				intDiv(x, 50) - 1, toFixedString(substring(SHA256(concat('b', toString(intDiv(x, 100)))), 1, 16), 16), 'w1'
			FROM `+x+` WHERE x % 100 = 7`,
			`INSERT INTO {db}.batches (batch_id, root, size, created_at, worker, ts_min, ts_max)
			SELECT toFixedString(substring(SHA256(concat('b', toString(b))), 1, 16), 16), SHA256(concat('root', toString(b))), 100,
				toDateTime(1700000000 + b * 300000), 'w1', 1700000000000 + b * 300000000, 1700000000000 + (b + 1) * 300000000 - 1
			FROM `+b,
			`INSERT INTO {db}.anchors (anchor_id, root, batches, readings, height, log_index, tx_hash, entry, anchored_at)
			SELECT toFixedString(substring(SHA256(concat('a', toString(a))), 1, 16), 16), SHA256(concat('anchor', toString(a))), 10, 1000,
				a + 2, a, hex(SHA256(concat('tx', toString(a)))), concat('entry-', toString(a)), toDateTime(1700000000 + a * 3000000)
			FROM `+a,
			`INSERT INTO {db}.batch_anchors (batch_id, anchor_id, batch_index)
			SELECT toFixedString(substring(SHA256(concat('b', toString(b))), 1, 16), 16),
				toFixedString(substring(SHA256(concat('a', toString(intDiv(b, 10)))), 1, 16), 16), toUInt32(b % 10)
			FROM `+b,
		)
	}
	for _, st := range sts {
		if err := conn.Exec(ctx, strings.ReplaceAll(st, "{db}", backupDB)); err != nil {
			return fmt.Errorf("%.60s: %w", strings.Join(strings.Fields(st), " "), err)
		}
	}
	return nil
}

// newCluster starts a shard of two replicas under dir, migrates the schema on it ON CLUSTER
// and returns it with a connection to each replica.
func newCluster(t *testing.T, ctx context.Context, dir string) (*Shard, []driver.Conn) {
	t.Helper()
	sh, err := StartShard(ctx, dir, backupCluster, 2, testlog.New(t))
	if err != nil { // zkserver.ErrNotInstalled says to run scripts/install-zookeeper.sh
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sh.Stop() })
	conns := make([]driver.Conn, 2)
	for i := range conns {
		conns[i] = openReplica(t, ctx, sh, i)
	}
	if _, err := (clickhouse.Schema{Database: backupDB, Cluster: backupCluster}).Migrate(ctx, conns[0]); err != nil {
		t.Fatal(err)
	}
	return sh, conns
}

func openReplica(t *testing.T, ctx context.Context, sh *Shard, i int) driver.Conn {
	t.Helper()
	c, err := sh.Replicas[i].Open(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dataPath is the replica's ClickHouse <path>: metadata/, data/, shadow/, flags/.
func dataPath(s *Server) string { return filepath.Join(s.dir, "data") }

// TestBackupReplicaLostDisk: replica 2 of a shard loses its whole data path (tables, parts,
// metadata) while replica 1 goes on taking inserts. It is made a replica again as ClickHouse's
// "Recovery After Complete Data Loss" says: the table definitions (metadata/) copied from
// replica 1 (they name the ZooKeeper path with the {shard} and {replica} macros, so they are
// the same on every replica), the flag flags/force_restore_data, and a start under its old
// {replica} name, whose entry in ZooKeeper still lists the parts it had. It fetches every part
// from replica 1: both hold the same rows of every table, and it is a writable replica again
// (what it takes reaches replica 1). The server removes the flag once it has loaded the tables.
// (In a probe, 18.16 also fetched everything without the flag: on an empty disk it logs
// "Removing missing part from ZooKeeper and queueing a fetch" for each part and starts; the
// flag is what ClickHouse's procedure asks for, and it only lifts checks against local parts
// that ZooKeeper does not know, of which an empty disk has none.)
func TestBackupReplicaLostDisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	begin := time.Now()
	sh, conns := newCluster(t, ctx, t.TempDir())
	if err := fill(ctx, conns[0], 0, 4000); err != nil {
		t.Fatal(err)
	}
	before, err := readDigest(ctx, conns[0])
	if err != nil {
		t.Fatal(err)
	}
	awaitDigest(t, ctx, "replica 2 replicates the first rows", conns[1], before)
	t.Logf("cluster migrated and filled after %v:%v", time.Since(begin).Round(time.Millisecond), before)

	// Replica 2's disk is lost; replica 1 takes more rows meanwhile.
	r2 := sh.Replicas[1]
	conns[1].Close()
	if err := r2.Stop(); err != nil {
		t.Fatal(err)
	}
	path2 := dataPath(r2)
	if err := os.RemoveAll(path2); err != nil {
		t.Fatal(err)
	}
	if err := fill(ctx, conns[0], 4000, 2000); err != nil {
		t.Fatal(err)
	}
	want, err := readDigest(ctx, conns[0])
	if err != nil {
		t.Fatal(err)
	}

	// The recovery: table definitions from replica 1 (which keeps running), the flag, a start.
	if err := dircopy.Tree(filepath.Join(path2, "metadata"), filepath.Join(dataPath(sh.Replicas[0]), "metadata")); err != nil {
		t.Fatal(err)
	}
	flag := filepath.Join(path2, "flags", "force_restore_data")
	if err := os.MkdirAll(filepath.Dir(flag), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flag, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := sh.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	conns[1] = openReplica(t, ctx, sh, 1)
	// The server consumes the flag when it has loaded the tables (a later restart checks
	// again).
	if _, err := os.Stat(flag); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("flags/force_restore_data after the start: %v, want it removed by the server", err)
	}
	awaitDigest(t, ctx, "replica 2 fetches every part from replica 1", conns[1], want)
	t.Logf("replica 2 holds every row again %v after its start:%v", time.Since(restarted).Round(time.Millisecond), want)

	var readonly uint64
	if err := conns[1].QueryRow(ctx, "SELECT count() FROM system.replicas WHERE database = ? AND is_readonly", backupDB).Scan(&readonly); err != nil || readonly != 0 {
		t.Fatalf("replica 2: %d read-only replicated tables (%v), want none", readonly, err)
	}
	// A replica again: rows it takes reach replica 1.
	if err := fill(ctx, conns[1], 6000, 1000); err != nil {
		t.Fatal(err)
	}
	after, err := readDigest(ctx, conns[1])
	if err != nil {
		t.Fatal(err)
	}
	awaitDigest(t, ctx, "replica 1 replicates what the recovered replica took", conns[0], after)
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}

// TestBackupRestoreFromFreeze backs a cluster up with ALTER TABLE ... FREEZE on one replica (a
// hard-linked snapshot of the table's parts under <path>/shadow/N/data/DB/TABLE/), copies the
// snapshot away, loses the whole cluster (both replicas and ZooKeeper), and restores it into a
// new one: the schema migrated afresh, the parts copied into each table's detached/ on one
// replica and attached there with ALTER TABLE ... ATTACH PART. Replication carries the attached
// parts to the other replica: both hold every row of every table, the rollups and device heads
// as they were (an attach does not run the materialized views again, so the rollups are
// restored from their own parts, not doubled), and the restored cluster takes new rows.
func TestBackupRestoreFromFreeze(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	begin := time.Now()
	oldDir := t.TempDir()
	old, conns := newCluster(t, ctx, oldDir)
	if err := fill(ctx, conns[0], 0, 6000); err != nil {
		t.Fatal(err)
	}
	want, err := readDigest(ctx, conns[0])
	if err != nil {
		t.Fatal(err)
	}
	awaitDigest(t, ctx, "replica 2 replicates the rows", conns[1], want)
	t.Logf("cluster migrated and filled after %v:%v", time.Since(begin).Round(time.Millisecond), want)

	// The backup: FREEZE each table on replica 1, copy the snapshot out of shadow/, remove it.
	backup := t.TempDir()
	shadow := filepath.Join(dataPath(old.Replicas[0]), "shadow")
	parts := map[string][]string{} // table: part names
	for _, q := range digestQueries {
		if err := conns[0].Exec(ctx, "ALTER TABLE "+backupDB+"."+q.table+" FREEZE"); err != nil {
			t.Fatalf("freeze %s: %v", q.table, err)
		}
	}
	snaps, err := filepath.Glob(filepath.Join(shadow, "*", "data", backupDB, "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range snaps {
		table, part := filepath.Base(filepath.Dir(p)), filepath.Base(p)
		if err := dircopy.Tree(filepath.Join(backup, table, part), p); err != nil {
			t.Fatal(err)
		}
		parts[table] = append(parts[table], part)
	}
	if err := os.RemoveAll(shadow); err != nil {
		t.Fatal(err)
	}
	for _, q := range digestQueries {
		if len(parts[q.table]) == 0 {
			t.Fatalf("FREEZE left no parts of %s under %s", q.table, shadow)
		}
	}
	t.Logf("backup of %d parts: %v", len(snaps), parts)

	// The whole cluster is lost: replicas, ZooKeeper and their disks.
	for _, c := range conns {
		c.Close() // a server that still has clients waits for them before it exits
	}
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(oldDir); err != nil {
		t.Fatal(err)
	}

	// The restore: a new cluster, the schema, the parts attached on one replica.
	restoreBegin := time.Now()
	sh, conns := newCluster(t, ctx, t.TempDir())
	tables := filepath.Join(dataPath(sh.Replicas[0]), "data", backupDB)
	for _, q := range digestQueries {
		for _, part := range parts[q.table] {
			if err := dircopy.Tree(filepath.Join(tables, q.table, "detached", part), filepath.Join(backup, q.table, part)); err != nil {
				t.Fatal(err)
			}
		}
		slices.Sort(parts[q.table])
		for _, part := range parts[q.table] {
			if err := conns[0].Exec(ctx, "ALTER TABLE "+backupDB+"."+q.table+" ATTACH PART '"+part+"'"); err != nil {
				t.Fatalf("attach %s part %s: %v", q.table, part, err)
			}
		}
	}
	awaitDigest(t, ctx, "replica 1 holds the restored rows", conns[0], want)
	awaitDigest(t, ctx, "replica 2 replicates the attached parts", conns[1], want)
	t.Logf("restored on both replicas %v after the new cluster started", time.Since(restoreBegin).Round(time.Millisecond))

	// The restored cluster is whole: new rows, through the views, reach the other replica.
	if err := fill(ctx, conns[1], 6000, 1000); err != nil {
		t.Fatal(err)
	}
	after, err := readDigest(ctx, conns[1])
	if err != nil {
		t.Fatal(err)
	}
	if after["metrics_1m"][0] <= want["metrics_1m"][0] || after["device_heads"] == want["device_heads"] {
		t.Fatalf("new rows did not reach the rollups or device heads: before%v; after%v", want, after)
	}
	awaitDigest(t, ctx, "replica 1 replicates new rows", conns[0], after)
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}
