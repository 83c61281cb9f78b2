package erasure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"
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
	// Sweep is between two sweeps (Eraser.Sweep): every entry carried out is applied again to
	// what was stored since in its range (a flush in flight at the erasure, a late
	// redelivery, a range reaching into the future). 0: DefaultSweep.
	Sweep time.Duration
}

// Eraser carries out the ledger's erase entries, in log order, each once, and keeps applying
// those carried out to what is stored later in their ranges (Sweep).
type Eraser struct {
	ch     driver.Conn
	js     jetstream.JetStream // nil: the stream is not touched (no NATS in this process)
	ledger *ledger.Client
	cfg    Config
	log    *slog.Logger
	done   uint64 // entries with a lower log index are carried out (done+1 is the next to look from)
	loaded bool
	seen   *marks // how far the last sweep looked; nil: no sweep yet, the next looks at everything
}

// New returns an Eraser; Run does the work.
func New(ch driver.Conn, js jetstream.JetStream, l *ledger.Client, cfg Config, log *slog.Logger) *Eraser {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = DefaultSweep
	}
	return &Eraser{ch: ch, js: js, ledger: l, cfg: cfg, log: log}
}

// Run carries out new erase entries every cfg.Every and sweeps every cfg.Sweep (the first
// sweep at once) until ctx ends; a failure is retried with backoff (up to 30 s), nothing is
// skipped.
func (e *Eraser) Run(ctx context.Context) error {
	wait := e.cfg.Every
	var sweepAt time.Time // the next sweep is due then
	for {
		n, err := e.Step(ctx)
		if !time.Now().Before(sweepAt) {
			sw, serr := e.Sweep(ctx)
			switch {
			case serr != nil:
				err = errors.Join(err, serr)
			case sw.More:
				sweepAt = time.Time{} // it stopped at its bound: on with it after the next step
			default:
				sweepAt = time.Now().Add(e.cfg.Sweep)
			}
		}
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
	if err := e.ch.Exec(big(ctx), q); err != nil {
		return fmt.Errorf("%.100s: %w", q, err)
	}
	return nil
}

// big is ctx for a statement that may name thousands of rows (a sweep's): 18.16 refuses more
// than 256 KiB of query text or 50,000 elements of syntax tree by default.
func big(ctx context.Context) context.Context {
	return chgo.Context(ctx, chgo.WithSettings(chgo.Settings{"max_query_size": 16 << 20, "max_ast_elements": 1 << 20, "max_expanded_ast_elements": 1 << 20}))
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
		byDev := map[string][]uint32{er.Dev: hours}
		stmts = append(stmts,
			fmt.Sprintf("ALTER TABLE %s.metrics_1m DELETE WHERE %s", db, inHours("period", "toStartOfHour(period)", byDev)),
			fmt.Sprintf("ALTER TABLE %s.metrics_1h DELETE WHERE %s", db, inHours("period", "period", byDev)))
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
		if err := e.rebuildRollups(ctx, map[string][]uint32{er.Dev: hours}, ""); err != nil {
			return 0, err
		}
	}
	if e.js != nil {
		if err := e.eraseStream(ctx, er.Dev, er.Covers); err != nil {
			return 0, err
		}
		if n > 0 {
			in := func(q uint64) bool { return seqMin <= q && q <= seqMax }
			quotes := func(ev rule.Event) bool { return in(ev.Seq) || slices.ContainsFunc(ev.Seqs, in) }
			if _, err := e.eraseEvents(ctx, er.Dev, 1, quotes); err != nil {
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

// hours are the hours (Unix seconds) whose rollups of the device hold values of the readings
// erased: the hours of the readings, whose rows stay, so that an erasure repeated after a
// failure past the metrics' deletion still rebuilds them.
func (e *Eraser) hours(ctx context.Context, cond string) ([]uint32, error) {
	rows, err := e.ch.Query(ctx, fmt.Sprintf("SELECT DISTINCT toUInt32(toStartOfHour(time)) FROM %s.readings WHERE %s", e.cfg.Schema.Database, cond))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []uint32
	for rows.Next() {
		var h uint32
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// inHours is the condition that a row's device and its DateTime col fall in one of the
// device's hours (Unix seconds; hourOf is the row's hour, col or an expression of it): the
// devices and the hours' span for the key and the parts' time ranges to narrow what is read,
// then the pairs, one set lookup per row however many devices and hours.
func inHours(col, hourOf string, hours map[string][]uint32) string {
	lo, hi := uint32(math.MaxUint32), uint32(0)
	var devs, pairs []string
	for _, dev := range slices.Sorted(maps.Keys(hours)) {
		devs = append(devs, dev)
		for _, h := range hours[dev] {
			lo, hi = min(lo, h), max(hi, h)
			pairs = append(pairs, fmt.Sprintf("('%s', %d)", dev, h))
		}
	}
	return fmt.Sprintf("device_id IN ('%s') AND %s BETWEEN toDateTime(%d) AND toDateTime(%d) AND (device_id, toUInt32(%s)) IN (%s)",
		strings.Join(devs, "', '"), col, lo, uint64(hi)+3599, hourOf, strings.Join(pairs, ", "))
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

// rebuildRollups recomputes the minute and hour rollups of each device's hours (Unix seconds)
// from the metric values there but those matching drop (a condition; "" drops none), in one
// insert per table. On 18.16 an insert into metrics_1m does not trigger metrics_1h_mv (which
// reads FROM metrics_1m_mv), so both are inserted; on a release whose cascade hangs on the
// table (metrics_1h_mv reads FROM metrics_1m) the minute insert makes the hour rows.
func (e *Eraser) rebuildRollups(ctx context.Context, hours map[string][]uint32, drop string) error {
	db := e.cfg.Schema.Database
	var def string
	if err := e.ch.QueryRow(ctx, "SELECT create_table_query FROM system.tables WHERE database = ? AND name = 'metrics_1h_mv'", db).Scan(&def); err != nil {
		return fmt.Errorf("metrics_1h_mv: %w", err)
	}
	where := inHours("time", "toStartOfHour(time)", hours)
	if drop != "" {
		where += " AND NOT (" + drop + ")"
	}
	states := "countState() AS count, minState(value) AS min, maxState(value) AS max, sumState(value) AS sum, avgState(value) AS avg, quantilesState(0.5, 0.9, 0.99)(value) AS quantiles"
	stmts := []string{fmt.Sprintf("INSERT INTO %s.metrics_1m SELECT device_id, metric, toStartOfMinute(time) AS period, %s FROM %s.metrics WHERE %s GROUP BY device_id, metric, period", db, states, db, where)}
	if strings.Contains(def, db+".metrics_1m_mv") {
		stmts = append(stmts, fmt.Sprintf("INSERT INTO %s.metrics_1h SELECT device_id, metric, toStartOfHour(time) AS period, %s FROM %s.metrics WHERE %s GROUP BY device_id, metric, period", db, states, db, where))
	}
	for _, st := range stmts {
		if err := e.ch.Exec(big(ctx), st); err != nil {
			return fmt.Errorf("rebuild the rollups: %w", err)
		}
	}
	return nil
}

// eraseStream deletes the device's messages in Readings whose reading covers says is erased
// (covers(device, seq, ts)), overwriting their bytes on disk (SecureDeleteMsg). Stored and
// anchored readings leave the stream anyway (anchor.purge_readings); this covers the rest.
func (e *Eraser) eraseStream(ctx context.Context, dev string, covers func(dev string, seq, ts uint64) bool) error {
	s, err := e.js.Stream(ctx, stream.Readings)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream.Readings, err)
	}
	subj := reading.Subject(dev)
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream %s: find %s's messages: %w", stream.Readings, dev, err)
		}
		seq = m.Sequence
		msg, derr := reading.Decode(m.Data)
		if derr != nil {
			continue // not a reading: nothing of the range, and ingest rejected it with its bytes
		}
		if !covers(msg.Reading.Device, msg.Reading.Seq, msg.Reading.TS) {
			continue
		}
		if err := s.SecureDeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("stream %s: delete message %d: %w", stream.Readings, seq, err)
		}
	}
}

// eraseEvents deletes from the Events stream, bytes overwritten, the rule events of dev (and
// their copies on the action subjects) from stream sequence from on that quotes says quote
// an erased reading, and returns how many it deleted.
func (e *Eraser) eraseEvents(ctx context.Context, dev string, from uint64, quotes func(rule.Event) bool) (int, error) {
	s, err := e.js.Stream(ctx, stream.Events)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil // no rules stage ever ran
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream.Events, err)
	}
	n := 0
	for _, subj := range []string{rule.SubjectPrefix + "*." + dev, stream.ActionSubject("*", "*", dev)} {
		for seq := max(from, 1); ; seq++ {
			m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return n, fmt.Errorf("stream %s: find %s's events: %w", stream.Events, dev, err)
			}
			seq = m.Sequence
			var ev rule.Event
			if json.Unmarshal(m.Data, &ev) != nil || ev.Device != dev || !quotes(ev) {
				continue
			}
			if err := s.SecureDeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return n, fmt.Errorf("stream %s: delete message %d: %w", stream.Events, seq, err)
			}
			n++
		}
	}
	return n, nil
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
