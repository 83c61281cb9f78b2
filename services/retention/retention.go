package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/services/config"
)

// Config is what a Runner needs besides its connection.
type Config struct {
	Schema    clickhouse.Schema // the analysts' database (ON CLUSTER on a cluster)
	Retention config.Retention
	Now       func() time.Time // time.Now if nil
}

// Runner drops the monthly partitions past their table's retention.
type Runner struct {
	ch  driver.Conn
	cfg Config
	log *slog.Logger
}

// New returns a Runner; Run or Step does the work.
func New(ch driver.Conn, cfg Config, log *slog.Logger) *Runner {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Retention.Every <= 0 {
		cfg.Retention.Every = time.Hour
	}
	return &Runner{ch: ch, cfg: cfg, log: log}
}

// tables are the tables each retention setting drops partitions of, by the first table's
// partitions (the others are partitioned alike).
func (r *Runner) tables() []struct {
	keep   time.Duration
	tables []string
} {
	rt := r.cfg.Retention
	return []struct {
		keep   time.Duration
		tables []string
	}{
		{rt.Readings, []string{"readings", "reading_lookup"}},
		{rt.Metrics, []string{"metrics"}},
		{rt.Rollups, []string{"metrics_1m", "metrics_1h"}},
		{rt.Rejected, []string{"rejected"}},
		{rt.Events, []string{"events"}},
	}
}

// Run steps every Retention.Every until ctx ends; a failed step is logged and tried again
// at the next.
func (r *Runner) Run(ctx context.Context) error {
	for {
		if dropped, err := r.Step(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("retention: partitions past their retention not dropped; trying again", "err", err, "in", r.cfg.Retention.Every)
		} else if len(dropped) > 0 {
			r.log.Info("retention: partitions dropped", "partitions", dropped)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.Retention.Every):
		}
	}
}

// monthEnd is the first instant after the month of a toYYYYMM partition (UTC).
func monthEnd(partition string) (time.Time, error) {
	v, err := strconv.Atoi(partition)
	if err != nil || v < 197001 || v%100 < 1 || v%100 > 12 {
		return time.Time{}, fmt.Errorf("partition %q is not a month YYYYMM", partition)
	}
	return time.Date(v/100, time.Month(v%100)+1, 1, 0, 0, 0, 0, time.UTC), nil
}

// Step drops, for each table with a retention, every partition whose whole month is older
// than now minus the retention, oldest first, and returns them as table/partition.
func (r *Runner) Step(ctx context.Context) ([]string, error) {
	db := r.cfg.Schema.Database
	now := r.cfg.Now()
	var dropped []string
	for _, t := range r.tables() {
		if t.keep <= 0 {
			continue
		}
		cutoff := now.Add(-t.keep)
		parts, err := r.partitions(ctx, t.tables[0])
		if err != nil {
			return dropped, err
		}
		for _, p := range parts {
			end, err := monthEnd(p)
			if err != nil {
				return dropped, fmt.Errorf("retention: %s: %w", t.tables[0], err)
			}
			if end.After(cutoff) {
				continue
			}
			if t.tables[0] == "readings" {
				// No waiting for a flush still writing into the month. A flush's rows and its
				// batch_leaves row, which holds the device time of each of its positions
				// (migration 0013) and which retention never drops, are one insert: every
				// position this drop removes keeps its time whether or not its batch record is
				// written yet, and the audit counts it expired from that time and the months in
				// expired. A wait would only narrow the gap it guarded (a flush can begin between
				// the check and the drop), and rows that no record will ever cover, left by a
				// worker killed between its rows and its record, would hold their month forever.
				// The positions of the readings that leave batches holding later ones are still
				// recorded: the audit needs them for the batches stored before 0013, whose
				// batch_leaves rows have no times (and whose records were written then).
				q := fmt.Sprintf("INSERT INTO %s.expired_positions (batch_id, leaf_index, device_id, seq) SELECT batch_id, leaf_index, device_id, seq FROM %s.readings "+
					"WHERE toYYYYMM(time) = %s AND batch_id IN (SELECT batch_id FROM %s.batches WHERE ts_max >= %d)", db, db, p, db, end.UnixMilli())
				if err := r.ch.Exec(ctx, q); err != nil {
					return dropped, fmt.Errorf("retention: positions of readings %s: %w", p, err)
				}
			}
			b, err := r.ch.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.expired (expired_at, table_name, partition, before)", db))
			if err != nil {
				return dropped, err
			}
			if err := errors.Join(b.Append(now, t.tables[0], p, end), b.Send()); err != nil {
				return dropped, fmt.Errorf("retention: record %s %s: %w", t.tables[0], p, err)
			}
			for _, table := range t.tables {
				q, err := r.cfg.Schema.Statement(clickhouse.Migration{}, fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION %s", db, table, p))
				if err != nil {
					return dropped, err
				}
				if err := r.ch.Exec(ctx, q); err != nil {
					return dropped, fmt.Errorf("retention: drop %s %s: %w", table, p, err)
				}
				dropped = append(dropped, table+"/"+p)
			}
		}
	}
	return dropped, nil
}

// partitions lists a table's partitions with data, oldest first.
func (r *Runner) partitions(ctx context.Context, table string) ([]string, error) {
	rows, err := r.ch.Query(ctx, "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active ORDER BY partition", r.cfg.Schema.Database, table)
	if err != nil {
		return nil, fmt.Errorf("retention: partitions of %s: %w", table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
