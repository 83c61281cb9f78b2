package bench

// The plain-connector reference: what a generic NATS→ClickHouse connector pays for the same
// readings when it checks nothing. It stands in for Telegraf configured as
//
//	[[inputs.nats_consumer]]            # a JetStream push subscription, per-message acks
//	  jetstream_subjects = ["plain.>"]
//	  max_undelivered_messages = 20000  # the in-flight window: MaxAckPending below
//	  data_format = "json_v2"           # each message decoded into generic fields
//	[[outputs.sql]]
//	  driver = "clickhouse"             # clickhouse-go through database/sql
//	  metric_batch_size = 10000         # one transaction per 10,000 rows
//
// and is built the same way, in this process:
//   - input: a durable push consumer on its own stream (PLAIN, subjects plain.>) with explicit
//     acks and MaxAckPending plainWindow, on a NATS connection of its own; the handler decodes
//     each message with json.Unmarshal into a map[string]any, picks the fields by name and
//     hands the row to the output;
//   - output: rows are buffered; at plainBatch rows (or when nothing has arrived for
//     plainFlushIdle, for a last short batch) one transaction: db.Begin,
//     tx.Prepare("INSERT INTO … (columns)"), stmt.Exec per row, tx.Commit; every message of
//     the batch is acked after the commit, one ack each;
//   - the table: one flat MergeTree table in the bench's database, a column per field,
//     PARTITION BY month, ORDER BY (device, ts), as a user would write it (plainDDL).
//
// Nothing is tuned beyond what such a connector's configuration offers (batch size, in-flight
// window). The idle flush favours the reference: Telegraf's flush_interval (10 s by default)
// would flush a last short batch later. The rate is from the first message handled to the last
// commit.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/services/auth"
)

const (
	plainStream    = "PLAIN"
	plainSubjects  = "plain.>"
	plainConsumer  = "plain-connector"
	plainTable     = "plain_readings"
	plainBatch     = 10_000                 // outputs.sql metric_batch_size
	plainWindow    = 2 * plainBatch         // nats_consumer max_undelivered_messages: the next batch fills while one commits
	plainFlushIdle = 200 * time.Millisecond // a short last batch is written once nothing has arrived for this long
	plainColumns   = "device, seq, ts, temp, hum, sig"
)

// plainMessage is a reading as a device that signs nothing would publish it: unsigned JSON
// with the same device, sequence number and metrics, and a field the size of a signature that
// nobody checks.
type plainMessage struct {
	Device string  `json:"device"`
	Seq    uint64  `json:"seq"`
	TS     string  `json:"ts"` // RFC 3339 with milliseconds
	Temp   float64 `json:"temp"`
	Hum    float64 `json:"hum"`
	Sig    string  `json:"sig"` // 128 hex characters
}

// plainDDL is the connector's table, as its user would create it.
func plainDDL(database string) string {
	return "CREATE TABLE IF NOT EXISTS " + database + "." + plainTable + ` (
	device String,
	seq    UInt64,
	ts     DateTime,
	temp   Float64,
	hum    Float64,
	sig    String
) ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (device, ts)`
}

// plainFigures is what the reference measured.
type plainFigures struct {
	perSec     float64
	self       float64 // CPU-s of this process (embedded NATS, ledger and the connector)
	clickhouse float64 // CPU-s of the ClickHouse server; 0 when it is not a child of this process
}

// plainReference publishes the readings of set as plain messages to a stream of their own,
// drains them through the connector into a table of the bench database, checks that every row
// is there, and deletes the stream. The table is left for the caller (dropPlain).
func (r *runner) plainReference(ctx context.Context, set []signed) (plainFigures, error) {
	if _, err := r.js.CreateStream(ctx, jetstream.StreamConfig{Name: plainStream, Subjects: []string{plainSubjects},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy}); err != nil {
		return plainFigures{}, fmt.Errorf("bench: plain stream: %w", err)
	}
	defer func() { _ = r.js.DeleteStream(context.Background(), plainStream) }()
	if err := publishPlain(ctx, r.js, set); err != nil {
		return plainFigures{}, err
	}
	if err := r.ch.Exec(ctx, plainDDL(r.db)); err != nil {
		return plainFigures{}, fmt.Errorf("bench: plain table: %w", err)
	}
	before, err := snapshotCPU(r.chPid)
	if err != nil {
		return plainFigures{}, err
	}
	elapsed, err := drainPlain(ctx, r.natsURL, r.natsOptions(auth.RoleAdmin), clickhouse.Options{Addr: []string{r.cfg.ClickHouse.Addr},
		Auth: clickhouse.Auth{Database: r.db, Username: r.cfg.ClickHouse.Username, Password: r.cfg.ClickHouse.Password}},
		r.db+"."+plainTable, len(set))
	if err != nil {
		return plainFigures{}, err
	}
	after, err := snapshotCPU(r.chPid)
	if err != nil {
		return plainFigures{}, err
	}
	var rows uint64
	if err := r.ch.QueryRow(ctx, "SELECT count() FROM "+r.db+"."+plainTable).Scan(&rows); err != nil {
		return plainFigures{}, fmt.Errorf("bench: plain check: %w", err)
	}
	if rows != uint64(len(set)) {
		return plainFigures{}, fmt.Errorf("%w: the plain connector stored %d rows of %d", ErrCheck, rows, len(set))
	}
	used := after.since(before)
	return plainFigures{perSec: float64(len(set)) / elapsed.Seconds(), self: used.self, clickhouse: used.clickhouse}, nil
}

// dropPlain drops the connector's table, so that its merges do not run into the next drain.
func (r *runner) dropPlain(ctx context.Context) error {
	return r.ch.Exec(ctx, "DROP TABLE IF EXISTS "+r.db+"."+plainTable)
}

// publishPlain publishes one plain message per reading of set, on plain.<device>.
func publishPlain(ctx context.Context, js jetstream.JetStream, set []signed) error {
	return publishJSON(ctx, js, "plain.", set)
}

// plainRow is one decoded message on its way to the output.
type plainRow struct {
	msg  jetstream.Msg
	vals []any // device, seq, ts, temp, hum, sig
}

// errPlainMessage is a message the connector's parser cannot turn into a row.
var errPlainMessage = errors.New("bench: plain message")

// decodePlain is the parser: a generic map, the fields picked by name.
func decodePlain(data []byte) ([]any, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", errPlainMessage, err)
	}
	dev, ok1 := m["device"].(string)
	seq, ok2 := m["seq"].(float64)
	tsText, ok3 := m["ts"].(string)
	temp, ok4 := m["temp"].(float64)
	hum, ok5 := m["hum"].(float64)
	sig, ok6 := m["sig"].(string)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
		return nil, fmt.Errorf("%w: a field is missing or of the wrong type: %s", errPlainMessage, data)
	}
	ts, err := time.Parse(time.RFC3339Nano, tsText)
	if err != nil {
		return nil, fmt.Errorf("%w: ts: %w", errPlainMessage, err)
	}
	return []any{dev, uint64(seq), ts, temp, hum, sig}, nil
}

// drainPlain runs the connector until n rows are committed and acked, and returns the time from
// the first message handled to the last commit.
func drainPlain(ctx context.Context, natsURL string, natsOpts []nats.Option, opts clickhouse.Options, table string, n int) (time.Duration, error) {
	nc, err := nats.Connect(natsURL, append(natsOpts, nats.Name("plain connector"))...)
	if err != nil {
		return 0, fmt.Errorf("bench: plain connector: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	db := clickhouse.OpenDB(&opts)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return 0, fmt.Errorf("bench: plain connector: %w", err)
	}
	cons, err := js.CreateOrUpdatePushConsumer(ctx, plainStream, jetstream.ConsumerConfig{Durable: plainConsumer,
		DeliverSubject: nats.NewInbox(), AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: plainWindow})
	if err != nil {
		return 0, fmt.Errorf("bench: plain consumer: %w", err)
	}
	// A message the parser rejects ends the run with its error.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	rows := make(chan plainRow, plainBatch)
	var first time.Time
	var firstOnce sync.Once
	cc, err := cons.Consume(func(m jetstream.Msg) {
		firstOnce.Do(func() { first = time.Now() })
		vals, err := decodePlain(m.Data())
		if err != nil {
			fail(err)
			return
		}
		select {
		case rows <- plainRow{msg: m, vals: vals}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return 0, fmt.Errorf("bench: plain consume: %w", err)
	}
	defer cc.Stop()
	last, err := writePlain(ctx, db, table, rows, n)
	if err != nil {
		return 0, cause(ctx, err)
	}
	// first was set before the first row was sent, and writePlain received it: no race.
	return last.Sub(first), nil
}

// writePlain is the output: it commits a batch when it is full, or when it is not empty and
// nothing arrived for a tick, acks the batch's messages after its commit, and returns when the
// commit that stored the n-th row ended.
func writePlain(ctx context.Context, db *sql.DB, table string, rows <-chan plainRow, n int) (time.Time, error) {
	buf := make([]plainRow, 0, plainBatch)
	tick := time.NewTicker(plainFlushIdle)
	defer tick.Stop()
	arrived := false
	var last time.Time
	for stored := 0; stored < n; {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case row := <-rows:
			buf = append(buf, row)
			arrived = true
			if len(buf) < plainBatch {
				continue
			}
		case <-tick.C:
			quiet := !arrived
			arrived = false
			if !quiet || len(buf) == 0 {
				continue
			}
		}
		if err := commitPlain(ctx, db, table, buf); err != nil {
			return time.Time{}, err
		}
		last = time.Now()
		for _, row := range buf {
			_ = row.msg.Ack() // a lost ack redelivers the message: a duplicate row the final count reports
		}
		stored += len(buf)
		buf = buf[:0]
	}
	return last, nil
}

// commitPlain writes rows in one transaction, the database/sql way.
func commitPlain(ctx context.Context, db *sql.DB, table string, rows []plainRow) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("bench: plain insert: %w", err)
	}
	// Columns named, as outputs.sql does (and as clickhouse-go needs with ClickHouse 18.16,
	// which answers an INSERT without them with an empty structure).
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO "+table+" ("+plainColumns+")")
	if err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("bench: plain insert: %w", err)
	}
	for _, row := range rows {
		if _, err := stmt.ExecContext(ctx, row.vals...); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("bench: plain insert: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("bench: plain insert: %w", err)
	}
	return nil
}
