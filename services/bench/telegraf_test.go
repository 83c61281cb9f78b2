package bench

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/services/auth"
)

// The configuration points Telegraf at the bench's broker, stream, seed and database, with the
// settings the reference is documented with, and quotes what it is given as TOML strings.
func TestRenderTelegrafConfig(t *testing.T) {
	conf := renderTelegrafConfig(telegrafSettings{NATSURL: "nats://127.0.0.1:4222", NKeySeed: `/tmp/a "b"\c/admin.nk`,
		DSN: "clickhouse://127.0.0.1:9000/bench_1"})
	for _, want := range []string{
		"metric_batch_size = 10000\n",
		"metric_buffer_limit = 1000000\n",
		`flush_interval = "1s"` + "\n",
		"omit_hostname = true\n",
		`servers = ["nats://127.0.0.1:4222"]` + "\n",
		`nkey_seed = "/tmp/a \"b\"\\c/admin.nk"` + "\n",
		`jetstream_subjects = ["telegraf.>"]` + "\n",
		"max_undelivered_messages = 20000\n",
		`tagexclude = ["subject"]` + "\n",
		`data_format = "json_v2"` + "\n",
		`measurement_name = "telegraf_readings"` + "\n",
		`timestamp_path = "ts"` + "\n",
		`timestamp_format = "2006-01-02T15:04:05.000Z07:00"` + "\n",
		"[[inputs.nats_consumer.json_v2.tag]]\n      path = \"device\"\n",
		"path = \"seq\"\n      type = \"uint\"\n",
		"path = \"temp\"\n      type = \"float\"\n",
		"path = \"hum\"\n      type = \"float\"\n",
		"path = \"sig\"\n      type = \"string\"\n",
		`driver = "clickhouse"` + "\n",
		`data_source_name = "clickhouse://127.0.0.1:9000/bench_1"` + "\n",
		"ENGINE = MergeTree() PARTITION BY toYYYYMM({TIMESTAMP_COLUMN_NAME}) ORDER BY ({TAG_COLUMN_NAMES}, {TIMESTAMP_COLUMN_NAME})",
		"batch_transactions = true\n",
		`conversion_style = "literal"` + "\n",
		`unsigned = "UInt64"` + "\n",
		`timestamp = "DateTime"` + "\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("the configuration lacks %q:\n%s", want, conf)
		}
	}
	// The convert table is the last of outputs.sql: a key after it would belong to it.
	if i := strings.Index(conf, "[outputs.sql.convert]"); i < strings.Index(conf, "batch_transactions") {
		t.Errorf("[outputs.sql.convert] before outputs.sql's own keys:\n%s", conf)
	}
	if conf := renderTelegrafConfig(telegrafSettings{NATSURL: "nats://x", DSN: "clickhouse://x/db"}); strings.Contains(conf, "nkey_seed") {
		t.Errorf("no seed, yet the configuration names one:\n%s", conf)
	}
	if got := tomlString("a\tb\u0001\"\\é"); got != `"a\u0009b\u0001\"\\é"` {
		t.Errorf("tomlString = %s", got)
	}
}

// The DSN is one clickhouse-go v2 (Telegraf's driver) reads as the server, database and user.
func TestTelegrafDSN(t *testing.T) {
	for _, c := range []struct{ user, pass string }{{"", ""}, {"bench", "p@ss/w:rd?&"}} {
		dsn := telegrafDSN("127.0.0.1:19000", "bench_17", c.user, c.pass)
		opts, err := clickhouse.ParseDSN(dsn)
		if err != nil {
			t.Fatalf("%s: %v", dsn, err)
		}
		if len(opts.Addr) != 1 || opts.Addr[0] != "127.0.0.1:19000" || opts.Auth.Database != "bench_17" ||
			opts.Auth.Username != c.user || opts.Auth.Password != c.pass || opts.TLS != nil {
			t.Fatalf("%s: addr %v, database %q, user %q, password %q, TLS %v", dsn, opts.Addr, opts.Auth.Database, opts.Auth.Username, opts.Auth.Password, opts.TLS)
		}
	}
}

// json_v2's timestamp_format reads the messages' ts back to the millisecond, and the messages
// are the plain reference's.
func TestTelegrafMessages(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 23, 59, 59, 999e6, time.UTC)
	s := signed{dev: "bench-00007", seq: 42, sig: []byte{0xab, 0xcd}}
	m := plainMessageOf(s, 1234, t0)
	ts, err := time.Parse(telegrafTSFormat, m.TS)
	if err != nil {
		t.Fatal(err)
	}
	if !ts.Equal(t0.Add(1234*time.Millisecond)) || m.TS != "2026-12-04T00:00:01.233Z" {
		t.Fatalf("ts %s read back as %s", m.TS, ts)
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := decodePlain(data)
	if err != nil {
		t.Fatal(err)
	}
	if vals[0] != "bench-00007" || vals[1] != uint64(42) || !vals[2].(time.Time).Equal(ts) || vals[3] != 20+float64(34)/10 || vals[4] != 40.0 || vals[5] != "abcd" {
		t.Fatalf("message %s decoded as %v", data, vals)
	}
}

// The rate does not count the rows the first poll saw over the span that starts with it.
func TestTelegrafRate(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	for _, c := range []struct {
		name        string
		first, last rowPoll
		want        float64
	}{
		// 10,000 rows seen at 1 s, all 100,000 at 4 s: 90,000 rows in 3 s.
		{"span", rowPoll{at(1000), 10_000}, rowPoll{at(4000), 100_000}, 30_000},
		// The first batch's rows added back at the measured rate give the same rate.
		{"added back", rowPoll{at(1000), 10_000}, rowPoll{at(4000), 100_000}, 100_000 / (3 + 10_000/30_000.0)},
		// Everything at the first poll: from Telegraf's start.
		{"one poll", rowPoll{at(2500), 100_000}, rowPoll{at(2500), 100_000}, 40_000},
	} {
		if got := telegrafRate(100_000, start, c.first, c.last); math.Abs(got-c.want) > 1e-6 {
			t.Errorf("%s: rate %f, want %f", c.name, got, c.want)
		}
	}
}

// The polls wait for the table Telegraf creates, and end when it holds every row.
func TestPollTelegraf(t *testing.T) {
	ctx := t.Context()
	r := plainStack(t, ctx)
	polled := make(chan error, 1)
	var first, last rowPoll
	go func() {
		var err error
		first, last, err = r.pollTelegraf(ctx, make(chan struct{}), func() error { return nil }, 3000)
		polled <- err
	}()
	if err := r.ch.Exec(ctx, "CREATE TABLE "+r.db+"."+telegrafTable+" (device String, timestamp DateTime) ENGINE = MergeTree() ORDER BY (device, timestamp)"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := r.ch.Exec(ctx, "INSERT INTO "+r.db+"."+telegrafTable+" SELECT toString(number), now() FROM system.numbers LIMIT 1000"); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-polled; err != nil {
		t.Fatal(err)
	}
	if first.rows == 0 || first.rows%1000 != 0 || last.rows != 3000 || last.at.Before(first.at) {
		t.Fatalf("first poll %+v, last %+v", first, last)
	}
}

// A Telegraf that exits before storing the rows ends the reference with an error that shows
// its output and names a kept copy of its log; the stream is deleted.
func TestTelegrafExitEndsReference(t *testing.T) {
	ctx := t.Context()
	r := plainStack(t, ctx)
	r.dir = t.TempDir()
	r.setup = auth.Setup{Dir: r.dir}
	bin := filepath.Join(t.TempDir(), "telegraf")
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'Telegraf test'; exit 0; fi\necho 'E! [telegraf] Error running agent: no outputs' >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	set := []signed{{dev: devID(0), seq: 1, sig: make([]byte, 64)}, {dev: devID(1), seq: 1, sig: make([]byte, 64)}}
	_, err := r.telegrafReference(ctx, bin, set)
	if err == nil || !strings.Contains(err.Error(), "telegraf exited (exit status 1) after storing 0 of 2 rows") ||
		!strings.Contains(err.Error(), "E! [telegraf] Error running agent: no outputs") {
		t.Fatalf("err = %v, want Telegraf's exit with its output", err)
	}
	_, kept, ok := strings.Cut(err.Error(), "Telegraf's log is ")
	kept, _, _ = strings.Cut(kept, ",")
	if !ok {
		t.Fatalf("err = %v names no log", err)
	}
	defer os.Remove(kept)
	if b, rerr := os.ReadFile(kept); rerr != nil || !strings.Contains(string(b), "no outputs") {
		t.Fatalf("kept log %s: %q, %v", kept, b, rerr)
	}
	conf, rerr := os.ReadFile(filepath.Join(r.dir, "telegraf.conf"))
	if rerr != nil || !strings.Contains(string(conf), `servers = ["`+r.natsURL+`"]`) || !strings.Contains(string(conf), "/"+r.db+`"`) {
		t.Fatalf("telegraf.conf %v:\n%s", rerr, conf)
	}
	if _, err := r.js.Stream(ctx, telegrafStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream %s after the run: %v, want it deleted", telegrafStream, err)
	}
}

// The Telegraf lines and fields appear only when the reference ran.
func TestTelegrafPrinted(t *testing.T) {
	for _, ran := range []bool{false, true} {
		res := Result{ReadingsPerSec: 20_000, PlainConnectorPerSec: 40_000, RatioToPlain: 0.5}
		if ran {
			res.TelegrafPerSec, res.TelegrafCPUPer1k, res.RatioToTelegraf = 25_000, 0.05, 0.8
		}
		var out strings.Builder
		res.Print(&out)
		b, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		printed := strings.Contains(out.String(), "rows/s Telegraf") && strings.Contains(out.String(), "0.80 of Telegraf") &&
			strings.Contains(out.String(), "CPU-s per 1,000 in the Telegraf process")
		inJSON := strings.Contains(string(b), `"telegraf_per_sec":25000`) && strings.Contains(string(b), `"ratio_to_telegraf":0.8`) &&
			strings.Contains(string(b), `"telegraf_cpu_seconds_per_1k":0.05`)
		if printed != ran || inJSON != ran || (!ran && strings.Contains(out.String()+string(b), "elegraf")) {
			t.Errorf("ran %v: printed %v, in the JSON %v:\n%s\n%s", ran, printed, inJSON, out.String(), b)
		}
	}
}
