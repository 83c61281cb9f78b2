package bench

// The real-Telegraf reference (--telegraf PATH): the connector the plain reference stands in
// for, run as its own process on the same readings. Telegraf is configured as a user tuning it
// for throughput would (renderTelegrafConfig):
//   - inputs.nats_consumer on a stream of its own (TELEGRAF, subjects telegraf.>) in the bench's
//     broker, as the admin role (nkey_seed), with max_undelivered_messages telegrafWindow. The
//     plugin subscribes through a queue group, so the JetStream consumer is one it creates
//     itself, without a max_ack_pending; the stream's consumer limit gives it telegrafWindow (as
//     an operator would set it on the stream), else the server's default of 1,000 would hold
//     the window below one batch and Telegraf would write a short batch per flush_interval;
//   - json_v2 picking device (a tag), seq, temp, hum and sig (fields), and ts as the metric's
//     timestamp; the subject tag the plugin adds is dropped (tagexclude), so that the table has
//     the plain reference's columns;
//   - outputs.sql with the clickhouse driver (clickhouse-go v2 through database/sql) and
//     batch_transactions, one transaction per Write, that is per metric_batch_size rows; its
//     table is created by Telegraf from table_template, a MergeTree PARTITION BY month ORDER BY
//     (device, timestamp), with the type conversions ClickHouse 18.16 knows;
//   - flush_interval telegrafFlush: one second, so that most writes are the full batches the
//     agent flushes as soon as metric_batch_size metrics are buffered (with a window of two
//     batches, about one batch arrives per write), while a short last batch waits at most a
//     second. A shorter interval would cut the batches at about rate × interval rows (3,000
//     at 30,000 rows/s and 100 ms), more transactions and more parts to merge.
//
// The rate is read from ClickHouse: the bench polls the row count of Telegraf's table every
// telegrafPoll (telegrafRate says how it is computed).

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/services/auth"
)

const (
	telegrafStream   = "TELEGRAF"
	telegrafSubjects = "telegraf.>"
	telegrafTable    = "telegraf_readings" // json_v2 measurement_name: outputs.sql names the table after it
	telegrafBatch    = plainBatch          // agent metric_batch_size
	telegrafWindow   = plainWindow         // max_undelivered_messages, and the consumer's max_ack_pending
	telegrafBuffer   = 1_000_000           // agent metric_buffer_limit: never the limit here
	telegrafFlush    = time.Second         // agent flush_interval
	telegrafPoll     = 200 * time.Millisecond
	telegrafTimeout  = 10 * time.Minute // from Telegraf's start to the last row
	// telegrafTSFormat is the json_v2 timestamp_format of ts: a Go reference layout, the one the
	// readings' ts is written with (RFC 3339 with milliseconds).
	telegrafTSFormat = "2006-01-02T15:04:05.000Z07:00"
)

// telegrafFigures is what the reference measured.
type telegrafFigures struct {
	perSec     float64
	telegraf   float64 // CPU-s of the Telegraf process, from its start to the last row stored
	clickhouse float64 // CPU-s of the ClickHouse server; 0 when it is not a child of this process
}

// telegrafSettings are what the rendered configuration points Telegraf at.
type telegrafSettings struct {
	NATSURL  string
	NKeySeed string // the seed file Telegraf connects with; "" for none
	DSN      string // clickhouse-go v2 data source name, database included
}

// telegrafDSN is the clickhouse-go v2 data source name of a server and database.
func telegrafDSN(addr, database, username, password string) string {
	u := url.URL{Scheme: "clickhouse", Host: addr, Path: "/" + database}
	if username != "" || password != "" {
		u.User = url.UserPassword(username, password)
	}
	return u.String()
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, c)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// renderTelegrafConfig is the Telegraf configuration of the reference.
func renderTelegrafConfig(s telegrafSettings) string {
	seed := ""
	if s.NKeySeed != "" {
		seed = "  nkey_seed = " + tomlString(s.NKeySeed) + "\n"
	}
	return fmt.Sprintf(`[agent]
  metric_batch_size = %d
  metric_buffer_limit = %d
  flush_interval = %s
  flush_jitter = "0s"
  omit_hostname = true

[[inputs.nats_consumer]]
  servers = [%s]
%s  subjects = []
  jetstream_subjects = [%s]
  max_undelivered_messages = %d
  tagexclude = ["subject"]
  data_format = "json_v2"
  [[inputs.nats_consumer.json_v2]]
    measurement_name = %s
    timestamp_path = "ts"
    timestamp_format = %s
    timestamp_timezone = "UTC"
    [[inputs.nats_consumer.json_v2.tag]]
      path = "device"
    [[inputs.nats_consumer.json_v2.field]]
      path = "seq"
      type = "uint"
    [[inputs.nats_consumer.json_v2.field]]
      path = "temp"
      type = "float"
    [[inputs.nats_consumer.json_v2.field]]
      path = "hum"
      type = "float"
    [[inputs.nats_consumer.json_v2.field]]
      path = "sig"
      type = "string"

[[outputs.sql]]
  driver = "clickhouse"
  data_source_name = %s
  table_template = "CREATE TABLE {TABLE}({COLUMNS}) ENGINE = MergeTree() PARTITION BY toYYYYMM({TIMESTAMP_COLUMN_NAME}) ORDER BY ({TAG_COLUMN_NAMES}, {TIMESTAMP_COLUMN_NAME})"
  batch_transactions = true
  [outputs.sql.convert]
    conversion_style = "literal"
    integer = "Int64"
    unsigned = "UInt64"
    real = "Float64"
    text = "String"
    timestamp = "DateTime"
    defaultvalue = "String"
    bool = "UInt8"
`, telegrafBatch, telegrafBuffer, tomlString(telegrafFlush.String()),
		tomlString(s.NATSURL), seed, tomlString(telegrafSubjects), telegrafWindow,
		tomlString(telegrafTable), tomlString(telegrafTSFormat), tomlString(s.DSN))
}

// rowPoll is one poll of the row count of Telegraf's table.
type rowPoll struct {
	at   time.Time // when the query was sent
	rows uint64
}

// telegrafRate is the rate at which Telegraf stored n rows, from the polls of its table:
// first is the first poll that saw any row, last the first that saw all n.
//
// The rows first saw were written before first.at, at a time the polls do not tell, so they
// are not counted over the span from first.at to last.at: the rate is
// (n − first.rows) / (last.at − first.at). Counting all n over that span would credit
// Telegraf with its first batches for free (with 10,000-row batches, 11% on 100,000 rows).
// Said the other way, the first.rows rows are added back with the time they take at the
// measured rate: n / (last.at − first.at + first.rows/rate) is the same number.
//
// If the first poll that saw a row saw them all, there is no span; the rate is then n over the
// time from Telegraf's start (started), which understates it by Telegraf's start-up.
func telegrafRate(n uint64, started time.Time, first, last rowPoll) float64 {
	if first.rows >= n || !last.at.After(first.at) {
		return float64(n) / last.at.Sub(started).Seconds()
	}
	return float64(n-first.rows) / last.at.Sub(first.at).Seconds()
}

// telegrafReference publishes the readings of set as plain messages (the plain reference's) to
// a stream of their own, runs Telegraf until it has stored them all in a table of the bench
// database, checks that every row is there once, stops Telegraf and deletes the stream. The
// table is left for the caller (dropTelegraf).
func (r *runner) telegrafReference(ctx context.Context, bin string, set []signed) (telegrafFigures, error) {
	if out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput(); err != nil {
		return telegrafFigures{}, fmt.Errorf("bench: --telegraf %s --version: %w: %s", bin, err, bytesTail(out, 2000))
	}
	if _, err := r.js.CreateStream(ctx, jetstream.StreamConfig{Name: telegrafStream, Subjects: []string{telegrafSubjects},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy,
		ConsumerLimits: jetstream.StreamConsumerLimits{MaxAckPending: telegrafWindow}}); err != nil {
		return telegrafFigures{}, fmt.Errorf("bench: telegraf stream: %w", err)
	}
	defer func() { _ = r.js.DeleteStream(context.Background(), telegrafStream) }()
	if err := publishJSON(ctx, r.js, "telegraf.", set); err != nil {
		return telegrafFigures{}, err
	}
	conf := filepath.Join(r.dir, "telegraf.conf")
	dsn := telegrafDSN(r.cfg.ClickHouse.Addr, r.db, r.cfg.ClickHouse.Username, r.cfg.ClickHouse.Password)
	if err := os.WriteFile(conf, []byte(renderTelegrafConfig(telegrafSettings{NATSURL: r.natsURL,
		NKeySeed: r.setup.File(auth.RoleAdmin), DSN: dsn})), 0o600); err != nil {
		return telegrafFigures{}, err
	}
	logPath := filepath.Join(r.dir, "telegraf.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return telegrafFigures{}, err
	}
	defer logFile.Close()
	// failed is err with the end of Telegraf's output; the log is copied out of the bench's
	// folder, which is removed when the run ends.
	failed := func(err error) error {
		b, _ := os.ReadFile(logPath)
		kept := "(not kept)"
		if f, cerr := os.CreateTemp("", "anchorline-bench-telegraf-*.log"); cerr == nil {
			_, _ = f.Write(b)
			_ = f.Close()
			kept = f.Name()
		}
		return fmt.Errorf("%w; Telegraf's log is %s, it ends:\n%s", err, kept, bytesTail(b, 4000))
	}

	before, err := snapshotCPU(r.chPid)
	if err != nil {
		return telegrafFigures{}, err
	}
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	cmd := exec.CommandContext(tctx, bin, "--config", conf)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 15 * time.Second
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return telegrafFigures{}, fmt.Errorf("bench: start telegraf: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() { stop(); <-exited }() // SIGINT, then a kill after WaitDelay

	n := uint64(len(set))
	first, last, err := r.pollTelegraf(ctx, exited, func() error { return waitErr }, n)
	if err != nil {
		return telegrafFigures{}, failed(err)
	}
	used, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return telegrafFigures{}, fmt.Errorf("bench: Telegraf's CPU: %w", err)
	}
	after, err := snapshotCPU(r.chPid)
	if err != nil {
		return telegrafFigures{}, err
	}
	var rows, keys uint64
	if err := r.ch.QueryRow(ctx, "SELECT count(), uniqExact(device, seq) FROM "+r.db+"."+telegrafTable).Scan(&rows, &keys); err != nil {
		return telegrafFigures{}, fmt.Errorf("bench: telegraf check: %w", err)
	}
	if rows != n || keys != n {
		return telegrafFigures{}, failed(fmt.Errorf("%w: Telegraf stored %d rows, %d distinct (device, seq), of %d", ErrCheck, rows, keys, n))
	}
	r.sayTelegrafConsumers(ctx)
	return telegrafFigures{perSec: telegrafRate(n, started, first, last), telegraf: used,
		clickhouse: after.since(before).clickhouse}, nil
}

// sayTelegrafConsumers says the in-flight window of the consumers Telegraf created: the
// stream's consumer limit, if the server applied it.
func (r *runner) sayTelegrafConsumers(ctx context.Context) {
	st, err := r.js.Stream(ctx, telegrafStream)
	if err != nil {
		return
	}
	l := st.ListConsumers(ctx)
	for info := range l.Info() {
		r.say("  Telegraf's consumer %s: max_ack_pending %d, %d acks pending, %d redelivered", info.Name, info.Config.MaxAckPending,
			info.NumAckPending, info.NumRedelivered)
	}
}

// pollTelegraf polls the row count of Telegraf's table every telegrafPoll until it is n, and
// returns the first poll that saw a row and the first that saw n. It fails if Telegraf exits
// (exited closed; waitErr then says how), after telegrafTimeout, or when ctx ends.
func (r *runner) pollTelegraf(ctx context.Context, exited <-chan struct{}, waitErr func() error, n uint64) (first, last rowPoll, err error) {
	tick := time.NewTicker(telegrafPoll)
	defer tick.Stop()
	deadline := time.Now().Add(telegrafTimeout)
	lastSaid := time.Now()
	exists := false
	for {
		p := rowPoll{at: time.Now()}
		if !exists {
			// Telegraf creates its table with its first write.
			var tables uint64
			if err := r.ch.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", r.db, telegrafTable).Scan(&tables); err != nil {
				return first, last, fmt.Errorf("bench: telegraf table: %w", err)
			}
			exists = tables > 0
		}
		if exists {
			if err := r.ch.QueryRow(ctx, "SELECT count() FROM "+r.db+"."+telegrafTable).Scan(&p.rows); err != nil {
				return first, last, fmt.Errorf("bench: telegraf rows: %w", err)
			}
		}
		if p.rows > 0 && first.at.IsZero() {
			first = p
		}
		if p.rows >= n {
			return first, p, nil
		}
		if time.Since(lastSaid) >= 2*time.Second {
			r.say("  %d of %d rows stored by Telegraf", p.rows, n)
			lastSaid = time.Now()
		}
		if time.Now().After(deadline) {
			return first, last, fmt.Errorf("bench: Telegraf stored %d of %d rows in %s", p.rows, n, telegrafTimeout)
		}
		select {
		case <-ctx.Done():
			return first, last, ctx.Err()
		case <-exited:
			return first, last, fmt.Errorf("bench: telegraf exited (%v) after storing %d of %d rows", waitErr(), p.rows, n)
		case <-tick.C:
		}
	}
}

// dropTelegraf drops Telegraf's table, so that its merges do not run into the next drain.
func (r *runner) dropTelegraf(ctx context.Context) error {
	return r.ch.Exec(ctx, "DROP TABLE IF EXISTS "+r.db+"."+telegrafTable)
}

// publishJSON publishes, on prefix+device, the plain message of each reading of set: the same
// messages as publishPlain's, with the same fields, values and timestamps.
func publishJSON(ctx context.Context, js jetstream.JetStream, prefix string, set []signed) error {
	t0 := time.Now().UTC()
	for i := 0; i < len(set); i += 10_000 {
		var futs []jetstream.PubAckFuture
		for j, s := range set[i:min(i+10_000, len(set))] {
			data, err := json.Marshal(plainMessageOf(s, i+j, t0))
			if err != nil {
				return err
			}
			f, err := js.PublishAsync(prefix+s.dev, data, jetstream.WithStallWait(time.Minute))
			if err != nil {
				return fmt.Errorf("publish %s: %w", prefix+s.dev, err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// plainMessageOf is the k-th plain message of a run that started publishing at t0, as
// publishPlain makes it.
func plainMessageOf(s signed, k int, t0 time.Time) plainMessage {
	return plainMessage{Device: s.dev, Seq: s.seq, TS: t0.Add(time.Duration(k) * time.Millisecond).Format(telegrafTSFormat),
		Temp: 20 + float64(k%100)/10, Hum: 40, Sig: hex.EncodeToString(s.sig)}
}

// bytesTail is the last limit bytes of b, as text.
func bytesTail(b []byte, limit int) string {
	if len(b) > limit {
		b = b[len(b)-limit:]
	}
	return strings.TrimSpace(string(b))
}
