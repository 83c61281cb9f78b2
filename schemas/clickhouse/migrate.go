package clickhouse

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migration is one numbered DDL file.
type Migration struct {
	Version    uint32
	Name       string   // file name, e.g. 0001_init.sql
	Statements []string // with {db} still in place
}

var validDB = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// LocalCluster is the cluster of one server (itself, as its default user) that a server
// without replicas defines for consent (services/access): the audiences' Distributed tables
// read the consented views through it, so the query on the far side runs as the cluster's
// user, and an analyst who may read only the audience's database still gets the rows.
// Anchorline's embedded server defines it; an external one must, to enforce consent.
const LocalCluster = "anchorline_local"

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		n, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseUint(n, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number and _", e.Name())
		}
		b, err := migrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		m := Migration{Version: uint32(v), Name: e.Name()}
		for _, st := range strings.Split(string(b), ";\n") {
			if st = strings.TrimSpace(stripComments(st)); st != "" {
				m.Statements = append(m.Statements, strings.TrimSuffix(st, ";"))
			}
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[i-1].Name, out[i].Name, out[i].Version)
		}
	}
	return out, nil
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// Schema names where Anchorline's tables live: a database on one server, or, with Cluster
// set, the same database on every node of a ClickHouse cluster (a remote_servers entry of its
// servers' configuration, with ZooKeeper and distributed_ddl), its tables replicated.
type Schema struct {
	Database string
	Cluster  string // clickhouse.cluster; empty: one server
}

// ErrClusterMismatch means a database was made for a cluster and is used without one, or the
// other way round.
var ErrClusterMismatch = errors.New("clickhouse.cluster does not match the database")

// Migrate applies the migrations to database on one server (Schema.Migrate without a cluster).
func Migrate(ctx context.Context, conn driver.Conn, database string) ([]string, error) {
	return Schema{Database: database}.Migrate(ctx, conn)
}

// Migrate creates the database if needed and applies the migrations it has not applied yet, in
// order, recording each in {database}.schema_migrations. Statements are idempotent (IF NOT
// EXISTS), so a migration interrupted half-way is completed by the next run. It returns the
// names of the migrations it applied.
//
// With a cluster every statement runs ON CLUSTER (the servers' distributed DDL queue, so that
// every node has the same tables), each MergeTree-family table becomes its Replicated form
// (ReplicatedMergeTree and so on, its ZooKeeper path /clickhouse/tables/{shard}/DB/TABLE_mN for
// the migration N that created it, its replica name the server's {replica} macro), and the
// statements that name {cluster} (Distributed tables) run too; an INSERT that fills a table
// from another runs on the connected node and reaches the other replicas by replication.
func (s Schema) Migrate(ctx context.Context, conn driver.Conn) ([]string, error) {
	database := s.Database
	if !validDB.MatchString(database) {
		return nil, fmt.Errorf("clickhouse.database %q: want letters, digits and _ (not starting with a digit)", database)
	}
	if s.Cluster != "" {
		if err := s.checkCluster(ctx, conn); err != nil {
			return nil, err
		}
	}
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	versions := Migration{Version: 0, Name: "schema_migrations", Statements: []string{
		"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version"}}
	for _, q := range []string{"CREATE DATABASE IF NOT EXISTS {db}", versions.Statements[0]} {
		st, err := s.Statement(versions, q)
		if err != nil {
			return nil, err
		}
		if err := conn.Exec(ctx, st); err != nil {
			return nil, fmt.Errorf("migrate %s: %w", database, s.ddlErr(err))
		}
	}
	if err := s.checkEngine(ctx, conn); err != nil {
		return nil, err
	}
	applied, err := appliedVersions(ctx, conn, database)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		for i, st := range m.Statements {
			if s.Cluster == "" && strings.Contains(st, "{cluster}") {
				continue
			}
			st = strings.ReplaceAll(st, "{db}", database)
			if strings.Contains(st, "{metrics_1m_source}") {
				src, err := cascadeSource(ctx, conn, database)
				if err != nil {
					return done, fmt.Errorf("migration %s, statement %d: %w", m.Name, i+1, err)
				}
				st = strings.ReplaceAll(st, "{metrics_1m_source}", database+"."+src)
			}
			if skip, err := columnGone(ctx, conn, st); err != nil || skip {
				if err != nil {
					return done, fmt.Errorf("migration %s, statement %d: %w", m.Name, i+1, err)
				}
				continue
			}
			st, err := s.Statement(m, st)
			if err != nil {
				return done, fmt.Errorf("migration %s, statement %d: %w", m.Name, i+1, err)
			}
			if err := conn.Exec(ctx, st); err != nil {
				return done, fmt.Errorf("migration %s, statement %d: %w", m.Name, i+1, s.ddlErr(err))
			}
		}
		if err := record(ctx, conn, database, m); err != nil {
			return done, fmt.Errorf("migration %s: record version: %w", m.Name, err)
		}
		done = append(done, m.Name)
	}
	return done, nil
}

var (
	createRe = regexp.MustCompile(`^(CREATE (?:TABLE|VIEW|MATERIALIZED VIEW|DATABASE) IF NOT EXISTS ([A-Za-z0-9_{}]+)(?:\.([A-Za-z0-9_]+))?)(\s|$)`)
	engineRe = regexp.MustCompile(`ENGINE = (MergeTree|ReplacingMergeTree|AggregatingMergeTree|SummingMergeTree|CollapsingMergeTree)(\(([^)]*)\))?`)
	dropRe   = regexp.MustCompile(`^DROP TABLE IF EXISTS [A-Za-z0-9_]+\.[A-Za-z0-9_]+$`)
	alterRe  = regexp.MustCompile(`^(ALTER TABLE [A-Za-z0-9_]+\.[A-Za-z0-9_]+) `)
)

// WithDatabase returns s for another database on the same servers.
func (s Schema) WithDatabase(database string) Schema { s.Database = database; return s }

// Statement is st (its {db} in place or not) as it runs: unchanged on one server; on a cluster
// ON CLUSTER, with replicated engines and {cluster} filled in. A statement of a shape it does not
// know is an error rather than something run on one node only.
func (s Schema) Statement(m Migration, st string) (string, error) {
	st = strings.ReplaceAll(st, "{db}", s.Database)
	if s.Cluster == "" {
		return st, nil
	}
	on := " ON CLUSTER " + s.Cluster
	st = strings.ReplaceAll(st, "{cluster}", s.Cluster)
	switch {
	case strings.HasPrefix(st, "INSERT INTO "):
		return st, nil
	case dropRe.MatchString(st):
		return st + on, nil
	case alterRe.MatchString(st):
		return alterRe.ReplaceAllString(st, "${1}"+on+" "), nil
	}
	c := createRe.FindStringSubmatchIndex(st)
	if c == nil {
		return "", fmt.Errorf("no cluster form for %.60q", st)
	}
	table := ""
	if c[6] >= 0 {
		table = st[c[6]:c[7]]
	}
	head, rest := st[:c[3]]+on, st[c[3]:]
	rest = engineRe.ReplaceAllStringFunc(rest, func(e string) string {
		p := engineRe.FindStringSubmatch(e)
		args := fmt.Sprintf("'/clickhouse/tables/{shard}/%s/%s_m%d', '{replica}'", s.Database, table, m.Version)
		if p[3] != "" {
			args += ", " + p[3]
		}
		return "ENGINE = Replicated" + p[1] + "(" + args + ")"
	})
	return head + rest, nil
}

// Sync waits until the connected replica has fetched everything the other replicas of its shard
// had written when it was called (SYSTEM SYNC REPLICA on each replicated table of the database),
// so that what it reads next is complete up to then: the tables replicate independently, and a
// replica that lags holds a batch's readings before its batch record, say. Without a cluster it
// does nothing.
func (s Schema) Sync(ctx context.Context, conn driver.Conn) error {
	if s.Cluster == "" {
		return nil
	}
	rows, err := conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? AND engine LIKE 'Replicated%' ORDER BY name", s.Database)
	if err != nil {
		return fmt.Errorf("sync replica %s: %w", s.Database, err)
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return fmt.Errorf("sync replica %s: %w", s.Database, err)
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sync replica %s: %w", s.Database, err)
	}
	for _, t := range tables {
		if err := conn.Exec(ctx, "SYSTEM SYNC REPLICA "+s.Database+"."+t); err != nil {
			return fmt.Errorf("sync replica %s.%s: %w", s.Database, t, err)
		}
	}
	return nil
}

// ddlErr adds the cluster to an error of a statement run ON CLUSTER: a node that does not
// answer makes the DDL wait distributed_ddl_task_timeout and fail.
func (s Schema) ddlErr(err error) error {
	if s.Cluster == "" {
		return err
	}
	return fmt.Errorf("on cluster %s (every node must be up and share ZooKeeper; clickhouse.cluster names a remote_servers entry): %w", s.Cluster, err)
}

// checkCluster fails unless the connected server knows s.Cluster.
func (s Schema) checkCluster(ctx context.Context, conn driver.Conn) error {
	if !validDB.MatchString(s.Cluster) {
		return fmt.Errorf("clickhouse.cluster %q: want letters, digits and _ (a remote_servers entry)", s.Cluster)
	}
	rows, err := conn.Query(ctx, "SELECT DISTINCT cluster FROM system.clusters ORDER BY cluster")
	if err != nil {
		return fmt.Errorf("clickhouse.cluster %s: %w", s.Cluster, err)
	}
	defer rows.Close()
	var known []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return fmt.Errorf("clickhouse.cluster %s: %w", s.Cluster, err)
		}
		if c == s.Cluster {
			return nil
		}
		known = append(known, c)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("clickhouse.cluster %s: %w", s.Cluster, err)
	}
	return fmt.Errorf("clickhouse.cluster %s: the server has no such cluster in remote_servers (it has: %s)", s.Cluster, strings.Join(known, ", "))
}

// checkEngine fails with ErrClusterMismatch if schema_migrations was made the other way
// (replicated without a cluster configured, or the other way round).
func (s Schema) checkEngine(ctx context.Context, conn driver.Conn) error {
	var engine string
	err := conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = 'schema_migrations'", s.Database).Scan(&engine)
	if err != nil {
		return fmt.Errorf("schema of %s: %w", s.Database, err)
	}
	replicated := strings.HasPrefix(engine, "Replicated")
	switch {
	case replicated && s.Cluster == "":
		return fmt.Errorf("%w: database %s is replicated across a cluster: set clickhouse.cluster to its name", ErrClusterMismatch, s.Database)
	case !replicated && s.Cluster != "":
		return fmt.Errorf("%w: database %s was made on one server, without clickhouse.cluster: migrate a new database on the cluster (and copy the data with INSERT SELECT) or unset clickhouse.cluster", ErrClusterMismatch, s.Database)
	}
	return nil
}

// cascadeSource finds out what a materialized view must read FROM to be triggered by what
// another view (metrics_1m_mv, writing TO metrics_1m) writes: 18.16 triggers views on the first
// view, current releases views on its target table. It builds the two chains with probe tables
// in database, inserts one row, and answers "metrics_1m_mv" or "metrics_1m".
func cascadeSource(ctx context.Context, conn driver.Conn, database string) (string, error) {
	p := database + "._cascade_probe_"
	drop := func() error {
		var errs []error
		for _, t := range []string{"via_table_mv", "via_view_mv", "a_mv", "via_table", "via_view", "a", "src"} {
			errs = append(errs, conn.Exec(ctx, "DROP TABLE IF EXISTS "+p+t))
		}
		return errors.Join(errs...)
	}
	if err := drop(); err != nil {
		return "", fmt.Errorf("cascade probe: %w", err)
	}
	defer func() { _ = drop() }()
	for _, q := range []string{
		"CREATE TABLE " + p + "src (x UInt8) ENGINE = Null",
		"CREATE TABLE " + p + "a (x UInt8) ENGINE = Memory",
		"CREATE TABLE " + p + "via_view (x UInt8) ENGINE = Memory",
		"CREATE TABLE " + p + "via_table (x UInt8) ENGINE = Memory",
		"CREATE MATERIALIZED VIEW " + p + "a_mv TO " + p + "a AS SELECT x FROM " + p + "src",
		"CREATE MATERIALIZED VIEW " + p + "via_view_mv TO " + p + "via_view AS SELECT x FROM " + p + "a_mv",
		"CREATE MATERIALIZED VIEW " + p + "via_table_mv TO " + p + "via_table AS SELECT x FROM " + p + "a",
		"INSERT INTO " + p + "src SELECT 1",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			return "", fmt.Errorf("cascade probe: %w", err)
		}
	}
	var viaView, viaTable uint64
	if err := conn.QueryRow(ctx, "SELECT (SELECT count() FROM "+p+"via_view), (SELECT count() FROM "+p+"via_table)").Scan(&viaView, &viaTable); err != nil {
		return "", fmt.Errorf("cascade probe: %w", err)
	}
	switch {
	case viaTable > 0:
		return "metrics_1m", nil
	case viaView > 0:
		return "metrics_1m_mv", nil
	}
	return "", errors.New("cascade probe: this ClickHouse triggers no materialized view from what another one writes, so metrics_1h cannot be built from metrics_1m")
}

// dropColumn is an ALTER TABLE db.table DROP COLUMN column statement: 18.16 has no IF EXISTS
// for it, so Migrate skips one whose column is gone already (a migration run again after it was
// interrupted).
var dropColumn = regexp.MustCompile(`^ALTER TABLE ([A-Za-z0-9_]+)\.([A-Za-z0-9_]+) DROP COLUMN ([A-Za-z0-9_]+)$`)

// addColumn is a migration statement that adds a column (18.16 has no ADD COLUMN IF NOT
// EXISTS): Migrate skips it when the column is there already (a migration interrupted).
var addColumn = regexp.MustCompile(`^ALTER TABLE ([A-Za-z0-9_]+)\.([A-Za-z0-9_]+) ADD COLUMN ([A-Za-z0-9_]+) `)

// columnGone reports whether st drops a column that the table does not have, or adds one
// that it has: either way there is nothing left to do.
func columnGone(ctx context.Context, conn driver.Conn, st string) (bool, error) {
	m, adds := dropColumn.FindStringSubmatch(st), false
	if m == nil {
		if m, adds = addColumn.FindStringSubmatch(st), true; m == nil {
			return false, nil
		}
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", m[1], m[2], m[3]).Scan(&n); err != nil {
		return false, err
	}
	return (n == 0) != adds, nil
}

func appliedVersions(ctx context.Context, conn driver.Conn, database string) (map[uint32]bool, error) {
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM "+database+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate %s: read versions: %w", database, err)
	}
	defer rows.Close()
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("migrate %s: %w", database, err)
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate %s: %w", database, err)
	}
	return applied, nil
}

// ErrNotMigrated means the database lacks migrations this build needs: run `anchorline migrate`.
var ErrNotMigrated = errors.New("schema not migrated")

// Check checks database on one server (Schema.Check without a cluster).
func Check(ctx context.Context, conn driver.Conn, database string) error {
	return Schema{Database: database}.Check(ctx, conn)
}

// Check returns nil if every migration of this build is applied to the database, and otherwise
// an error wrapping ErrNotMigrated that names the first missing one, or ErrClusterMismatch if the
// database was made with another clickhouse.cluster setting. It changes nothing.
func (s Schema) Check(ctx context.Context, conn driver.Conn) error {
	database := s.Database
	var exists uint8
	if err := conn.QueryRow(ctx, "SELECT count() > 0 FROM system.tables WHERE database = ? AND name = 'schema_migrations'", database).Scan(&exists); err != nil {
		return fmt.Errorf("check schema of %s: %w", database, err)
	}
	if exists == 0 {
		return fmt.Errorf("%w: database %s has no schema (run anchorline migrate)", ErrNotMigrated, database)
	}
	if err := s.checkEngine(ctx, conn); err != nil {
		return err
	}
	applied, err := appliedVersions(ctx, conn, database)
	if err != nil {
		return err
	}
	ms, err := Migrations()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if !applied[m.Version] {
			return fmt.Errorf("%w: database %s lacks migration %s (run anchorline migrate)", ErrNotMigrated, database, m.Name)
		}
	}
	return nil
}

// record inserts a version row. Inserts go through PrepareBatch with a column list: the only
// insert path that works on ClickHouse 18.16 (Exec with bound values does not).
func record(ctx context.Context, conn driver.Conn, database string, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+database+".schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(m.Version, m.Name, time.Now()); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}
