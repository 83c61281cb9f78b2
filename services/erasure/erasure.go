package erasure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
)

// Config is what an Eraser needs besides its connections.
type Config struct {
	Schema clickhouse.Schema // the analysts' database (ON CLUSTER on a cluster)
	Every  time.Duration     // between two looks at the ledger; 0: one second
}

// Eraser carries out the ledger's erase entries, in log order, each once.
type Eraser struct {
	ch     driver.Conn
	js     jetstream.JetStream // nil: the stream is not touched (no NATS in this process)
	ledger *ledger.Client
	cfg    Config
	log    *slog.Logger
	done   uint64 // entries with a lower log index are carried out (done+1 is the next to look from)
	loaded bool
}

// New returns an Eraser; Run does the work.
func New(ch driver.Conn, js jetstream.JetStream, l *ledger.Client, cfg Config, log *slog.Logger) *Eraser {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	return &Eraser{ch: ch, js: js, ledger: l, cfg: cfg, log: log}
}

// Run carries out new erase entries every cfg.Every until ctx ends; a failed one is retried
// with backoff (up to 30 s), never skipped.
func (e *Eraser) Run(ctx context.Context) error {
	wait := e.cfg.Every
	for {
		n, err := e.Step(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			wait = min(2*wait, 30*time.Second)
			e.log.Warn("erasure: not carried out yet; trying again", "err", err, "in", wait)
		default:
			wait = e.cfg.Every
			if n > 0 {
				e.log.Debug("erasure: caught up with the ledger", "carried_out", n)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// Step carries out the committed erase entries not carried out yet and returns how many.
func (e *Eraser) Step(ctx context.Context) (int, error) {
	if !e.loaded {
		var next uint64
		q := fmt.Sprintf("SELECT max(entry_index) + 1, count() FROM %s.erasures", e.cfg.Schema.Database)
		var n uint64
		if err := e.ch.QueryRow(ctx, q).Scan(&next, &n); err != nil {
			return 0, fmt.Errorf("erasure: read progress: %w", err)
		}
		if n > 0 {
			e.done = next
		}
		e.loaded = true
	}
	es, err := e.ledger.Erasures(ctx, e.done, 100)
	if err != nil {
		return 0, fmt.Errorf("erasure: ledger: %w", err)
	}
	for i, x := range es.Erasures {
		er, err := entry.EraseOf(x.Entry)
		if err != nil {
			return i, fmt.Errorf("erasure: log entry %d: %w", x.Index, err)
		}
		start := time.Now()
		n, err := e.erase(ctx, x, er)
		if err != nil {
			return i, fmt.Errorf("erasure: log entry %d (device %s, %s %d..%d): %w", x.Index, er.Dev, er.By, er.From, er.To, err)
		}
		e.done = x.Index + 1
		e.log.Info("erasure carried out", "log_index", x.Index, "height", x.Height, "device", er.Dev, "by", er.By, "from", er.From, "to", er.To, "readings", n, "took", time.Since(start).Round(time.Millisecond))
	}
	return len(es.Erasures), nil
}

// Pending is the number of committed erase entries not carried out yet (at most 1,000 counted).
func (e *Eraser) Pending(ctx context.Context) (int, error) {
	es, err := e.ledger.Erasures(ctx, e.done, 1000)
	if err != nil {
		return 0, err
	}
	return len(es.Erasures), nil
}

// exec runs a statement of the analysts' schema (ON CLUSTER on a cluster).
func (e *Eraser) exec(ctx context.Context, st string) error {
	q, err := e.cfg.Schema.Statement(clickhouse.Migration{}, st)
	if err != nil {
		return err
	}
	if err := e.ch.Exec(ctx, q); err != nil {
		return fmt.Errorf("%.100s: %w", q, err)
	}
	return nil
}

// erase carries out one erase entry (idempotently: a crash halfway repeats it) and returns
// the number of readings it covers.
func (e *Eraser) erase(ctx context.Context, x ledger.Erasure, er *entry.Erase) (uint64, error) {
	db := e.cfg.Schema.Database
	col := "seq"
	if er.By == entry.EraseByTS {
		col = "ts"
	}
	// The device id matches ^[A-Za-z0-9_-]{1,64}$ and the bounds are integers (entry.Decode
	// checked both), so the condition is written out.
	cond := fmt.Sprintf("device_id = '%s' AND %s BETWEEN %d AND %d", er.Dev, col, er.From, er.To)
	var n, seqMin, seqMax uint64
	if err := e.ch.QueryRow(ctx, fmt.Sprintf("SELECT count(), min(seq), max(seq) FROM %s.readings WHERE %s", db, cond)).Scan(&n, &seqMin, &seqMax); err != nil {
		return 0, err
	}
	hours, err := e.hours(ctx, cond)
	if err != nil {
		return 0, err
	}
	// The bytes: readings keeps leaf, batch and position (the Merkle trees stay) and records
	// the entry; reading_lookup's copy goes; metric values go; rule events that quote the
	// readings go; the device's reject rows lose their bytes (they have no seq to select by).
	stmts := []string{
		fmt.Sprintf("ALTER TABLE %s.readings UPDATE raw = '', erased_by = %d WHERE %s", db, x.Index, cond),
		fmt.Sprintf("ALTER TABLE %s.metrics DELETE WHERE %s", db, cond),
		fmt.Sprintf("ALTER TABLE %s.rejected UPDATE raw = '' WHERE device_id = '%s' AND raw != ''", db, er.Dev),
	}
	if col == "seq" {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s.reading_lookup UPDATE raw = '' WHERE %s", db, cond))
	} else if n > 0 {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s.reading_lookup UPDATE raw = '' WHERE device_id = '%s' AND seq IN (SELECT seq FROM %s.readings WHERE %s)", db, er.Dev, db, cond))
	}
	if n > 0 {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s.events DELETE WHERE device_id = '%s' AND (seq BETWEEN %d AND %d OR arrayExists(s -> s BETWEEN %d AND %d, seqs))", db, er.Dev, seqMin, seqMax, seqMin, seqMax))
	}
	if len(hours) > 0 {
		in := "(" + strings.Join(hours, ", ") + ")"
		stmts = append(stmts,
			fmt.Sprintf("ALTER TABLE %s.metrics_1m DELETE WHERE device_id = '%s' AND toStartOfHour(period) IN %s", db, er.Dev, in),
			fmt.Sprintf("ALTER TABLE %s.metrics_1h DELETE WHERE device_id = '%s' AND period IN %s", db, er.Dev, in))
	}
	for _, st := range stmts {
		if err := e.exec(ctx, st); err != nil {
			return 0, err
		}
	}
	if err := e.waitMutations(ctx); err != nil {
		return 0, err
	}
	if len(hours) > 0 {
		if err := e.rebuildRollups(ctx, er.Dev, hours); err != nil {
			return 0, err
		}
	}
	if e.js != nil {
		if err := e.eraseStream(ctx, er); err != nil {
			return 0, err
		}
		if n > 0 {
			if err := e.eraseEvents(ctx, er.Dev, seqMin, seqMax); err != nil {
				return 0, err
			}
		}
	}
	signer := "admin"
	if o, _, err := e.ledger.Owner(ctx, er.Dev, int64(x.Height)); err == nil && o.Bound() && string(o.Key) == string(er.Key) {
		signer = "owner"
	}
	b, err := e.ch.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.erasures (entry_index, height, device_id, by, from_value, to_value, signer, reason, readings, done_at)", db))
	if err != nil {
		return 0, err
	}
	if err := errors.Join(b.Append(x.Index, x.Height, er.Dev, er.By, er.From, er.To, signer, er.Reason, n, time.Now()), b.Send()); err != nil {
		return 0, fmt.Errorf("record the erasure: %w", err)
	}
	return n, nil
}

// hours are the hours (as ClickHouse DateTime literals) whose rollups of the device hold
// values of the readings erased.
func (e *Eraser) hours(ctx context.Context, cond string) ([]string, error) {
	rows, err := e.ch.Query(ctx, fmt.Sprintf("SELECT DISTINCT toUInt32(toStartOfHour(time)) FROM %s.metrics WHERE %s", e.cfg.Schema.Database, cond))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var h uint32
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("toDateTime(%d)", h))
	}
	return out, rows.Err()
}

// waitMutations waits until the database has no mutation left to do (18.16 has no
// mutations_sync).
func (e *Eraser) waitMutations(ctx context.Context) error {
	for {
		var n uint64
		if err := e.ch.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND NOT is_done", e.cfg.Schema.Database).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rebuildRollups recomputes the device's minute and hour rollups of hours from the metric
// values left. On 18.16 an insert into metrics_1m does not trigger metrics_1h_mv (which reads
// FROM metrics_1m_mv), so both are inserted; on a release whose cascade hangs on the table
// (metrics_1h_mv reads FROM metrics_1m) the minute insert makes the hour rows.
func (e *Eraser) rebuildRollups(ctx context.Context, dev string, hours []string) error {
	db := e.cfg.Schema.Database
	var def string
	if err := e.ch.QueryRow(ctx, "SELECT create_table_query FROM system.tables WHERE database = ? AND name = 'metrics_1h_mv'", db).Scan(&def); err != nil {
		return fmt.Errorf("metrics_1h_mv: %w", err)
	}
	states := "countState() AS count, minState(value) AS min, maxState(value) AS max, sumState(value) AS sum, avgState(value) AS avg, quantilesState(0.5, 0.9, 0.99)(value) AS quantiles"
	where := fmt.Sprintf("device_id = '%s' AND toStartOfHour(time) IN (%s)", dev, strings.Join(hours, ", "))
	stmts := []string{fmt.Sprintf("INSERT INTO %s.metrics_1m SELECT device_id, metric, toStartOfMinute(time) AS period, %s FROM %s.metrics WHERE %s GROUP BY device_id, metric, period", db, states, db, where)}
	if strings.Contains(def, db+".metrics_1m_mv") {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO %s.metrics_1h SELECT device_id, metric, toStartOfHour(time) AS period, %s FROM %s.metrics WHERE %s GROUP BY device_id, metric, period", db, states, db, where))
	}
	for _, st := range stmts {
		if err := e.ch.Exec(ctx, st); err != nil {
			return fmt.Errorf("rebuild the rollups: %w", err)
		}
	}
	return nil
}

// eraseStream deletes the device's messages in Readings that the entry covers, overwriting
// their bytes on disk (SecureDeleteMsg). Stored and anchored readings leave the stream anyway
// (anchor.purge_readings); this covers the rest.
func (e *Eraser) eraseStream(ctx context.Context, er *entry.Erase) error {
	s, err := e.js.Stream(ctx, stream.Readings)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream.Readings, err)
	}
	subj := reading.Subject(er.Dev)
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream %s: find %s's messages: %w", stream.Readings, er.Dev, err)
		}
		seq = m.Sequence
		msg, derr := reading.Decode(m.Data)
		if derr != nil {
			continue // not a reading: nothing of the range, and ingest rejected it with its bytes
		}
		if !er.Covers(msg.Reading.Device, msg.Reading.Seq, msg.Reading.TS) {
			continue
		}
		if err := s.SecureDeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("stream %s: delete message %d: %w", stream.Readings, seq, err)
		}
	}
}

// eraseEvents deletes from the Events stream, bytes overwritten, the rule events (and their
// copies on the action subjects) of dev that quote a reading with a seq in lo..hi.
func (e *Eraser) eraseEvents(ctx context.Context, dev string, lo, hi uint64) error {
	s, err := e.js.Stream(ctx, stream.Events)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // no rules stage ever ran
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream.Events, err)
	}
	in := func(q uint64) bool { return lo <= q && q <= hi }
	for _, subj := range []string{rule.SubjectPrefix + "*." + dev, stream.ActionSubject("*", "*", dev)} {
		for seq := uint64(1); ; seq++ {
			m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return fmt.Errorf("stream %s: find %s's events: %w", stream.Events, dev, err)
			}
			seq = m.Sequence
			var ev rule.Event
			if json.Unmarshal(m.Data, &ev) != nil || ev.Device != dev || !(in(ev.Seq) || slices.ContainsFunc(ev.Seqs, in)) {
				continue
			}
			if err := s.SecureDeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("stream %s: delete message %d: %w", stream.Events, seq, err)
			}
		}
	}
	return nil
}

// Progress is how far ClickHouse is with the ledger's erase entries.
type Progress struct {
	Done     uint64 `json:"done"`     // erase entries carried out
	Pending  uint64 `json:"pending"`  // committed on the ledger, not carried out yet
	Readings uint64 `json:"readings"` // readings erased
}

// ProgressOf compares the ledger's erase entries with those carried out (the readings each
// erased, by log index: store.ErasuresDone).
func ProgressOf(ctx context.Context, done map[uint64]uint64, l *ledger.Client) (Progress, error) {
	p := Progress{Done: uint64(len(done))}
	for _, n := range done {
		p.Readings += n
	}
	for from := uint64(0); ; {
		es, err := l.Erasures(ctx, from, 1000)
		if err != nil {
			return p, err
		}
		for _, x := range es.Erasures {
			if _, ok := done[x.Index]; !ok {
				p.Pending++
			}
			from = x.Index + 1
		}
		if len(es.Erasures) < 1000 {
			return p, nil
		}
	}
}
