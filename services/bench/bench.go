package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sync/errgroup"

	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
)

// ErrCheck is returned with the result when the stored data is not what was published.
var ErrCheck = errors.New("bench: check of the stored data failed")

// Options describe a run.
type Options struct {
	Readings     int           // drained in the drain mode
	Devices      int           // simulated devices, all Ed25519
	Workers      int           // ingest processes sharing the consumer
	LiveRate     float64       // readings per second in the live mode (0: no live mode)
	LiveDuration time.Duration // how long the live mode publishes
	Binary       string        // the anchorline executable the workers run
	Progress     io.Writer     // one line per phase; nil for none
	ProfileDir   string        // if set, each worker writes a CPU profile here (ingest-N.pprof)
	Telegraf     string        // if set, the telegraf executable of the real-Telegraf reference (telegraf.go)
}

// Result is what a run measured; the JSON names are the contract of --out.
type Result struct {
	Readings           int     `json:"readings"`
	Devices            int     `json:"devices"`
	Workers            int     `json:"workers"`
	Cores              int     `json:"cores"`
	ReadingsPerSec     float64 `json:"readings_per_sec"`
	RawJetStreamPerSec float64 `json:"raw_jetstream_per_sec"`
	VerifyPerSec       float64 `json:"verify_per_sec"`           // one core, batches of 1024, cached expanded keys
	VerifyPerSecAll    float64 `json:"verify_per_sec_all_cores"` // every core
	PrefillPerSec      float64 `json:"prefill_publish_per_sec"`
	CPUSecondsPer1k    float64 `json:"cpu_seconds_per_1k"` // drain, summed over the ingest processes
	PeakRSSBytes       uint64  `json:"peak_rss_bytes"`     // the largest ingest process
	LiveRate           float64 `json:"live_rate"`
	LiveAchievedRate   float64 `json:"live_achieved_rate"`
	LiveReadings       int     `json:"live_readings"`
	LiveCPUPer1k       float64 `json:"live_cpu_seconds_per_1k"`
	P50QueryableMs     float64 `json:"p50_queryable_ms"`
	P99QueryableMs     float64 `json:"p99_queryable_ms"`
	P50AnchoredMs      float64 `json:"p50_anchored_ms"`
	P99AnchoredMs      float64 `json:"p99_anchored_ms"`
	AnchorIntervalMs   float64 `json:"anchor_interval_ms"`
	RatioToRaw         float64 `json:"ratio_to_raw_jetstream"`
	RatioToVerify      float64 `json:"ratio_to_verify_all_cores"`

	// The other processes of the drain, per 1,000 readings: the ClickHouse server (only when
	// the bench started it, clickhouse_embedded; 0 otherwise, unknown) and the bench process,
	// which embeds NATS and the ledger.
	ClickHouseEmbedded      bool    `json:"clickhouse_embedded"`
	ClickHouseCPUPer1k      float64 `json:"clickhouse_cpu_seconds_per_1k"`
	NATSAndBenchCPUPer1k    float64 `json:"nats_and_bench_cpu_seconds_per_1k"`
	PlainConnectorPerSec    float64 `json:"plain_connector_per_sec"` // the plain-connector reference (plain.go)
	PlainClickHouseCPUPer1k float64 `json:"plain_clickhouse_cpu_seconds_per_1k"`
	PlainCPUPer1k           float64 `json:"plain_cpu_seconds_per_1k"` // the bench process: the connector with NATS and the ledger
	RatioToPlain            float64 `json:"ratio_to_plain"`
	// The real-Telegraf reference (telegraf.go), only with Options.Telegraf (absent otherwise):
	// rows/s, CPU-s per 1,000 rows of the Telegraf process and of the ClickHouse server (absent
	// too when that is unknown, as above).
	TelegrafPerSec             float64 `json:"telegraf_per_sec,omitempty"`
	TelegrafCPUPer1k           float64 `json:"telegraf_cpu_seconds_per_1k,omitempty"`
	TelegrafClickHouseCPUPer1k float64 `json:"telegraf_clickhouse_cpu_seconds_per_1k,omitempty"`
	RatioToTelegraf            float64 `json:"ratio_to_telegraf,omitempty"`
	// RevocationMs is how long after a revoking block was committed the last reading ingest
	// still accepted from that device was published.
	RevocationMs float64 `json:"revocation_ms"`
	// DisconnectMs is how long after that block the broker closed the revoked device's own
	// connection (the auth service follows the registry and kicks it).
	DisconnectMs float64 `json:"revocation_disconnect_ms"`
	// Checks of the stored data at the end: every reading is valid and every chain intact,
	// so both must be 0.
	Rejected  uint64 `json:"rejected"`
	Anomalies uint64 `json:"anomalies"`
	// How the workers settled the chain links they could not check alone (several workers):
	// by another worker's answer, or by a lookup in ClickHouse (from their /metrics).
	ChainRemote  uint64 `json:"chain_remote"`
	ChainLookups uint64 `json:"chain_lookups"`
}

// Print writes the human summary.
func (r Result) Print(w io.Writer) {
	fmt.Fprintf(w, "\n== anchorline bench: %d readings from %d devices, %d ingest worker(s), %d cores\n", r.Readings, r.Devices, r.Workers, r.Cores)
	fmt.Fprintf(w, "drain:      %8.0f readings/s  (first pull to last row queryable with its batch record in BATCHES)\n", r.ReadingsPerSec)
	fmt.Fprintf(w, "            %8.3f CPU-s per 1,000 readings in ingest, peak RSS %.1f MiB\n", r.CPUSecondsPer1k, float64(r.PeakRSSBytes)/(1<<20))
	fmt.Fprintf(w, "            %8.3f CPU-s per 1,000 in the bench process (embedded NATS, ledger, bench)\n", r.NATSAndBenchCPUPer1k)
	chCPU := func(v float64) string {
		if !r.ClickHouseEmbedded {
			return "   unknown CPU-s per 1,000 in ClickHouse (external server: run with --clickhouse.embedded to measure it)"
		}
		return fmt.Sprintf("%8.3f CPU-s per 1,000 in ClickHouse", v)
	}
	fmt.Fprintf(w, "            %s\n", chCPU(r.ClickHouseCPUPer1k))
	if r.ClickHouseEmbedded {
		fmt.Fprintf(w, "            %8.3f CPU-s per 1,000 in all\n", r.CPUSecondsPer1k+r.NATSAndBenchCPUPer1k+r.ClickHouseCPUPer1k)
	}
	fmt.Fprintf(w, "references: %8.0f rows/s plain connector (unsigned JSON, push consumer, generic map, database/sql, 10,000 rows per commit)\n", r.PlainConnectorPerSec)
	fmt.Fprintf(w, "            %8.3f CPU-s per 1,000 in the bench process (the connector, embedded NATS, ledger)\n", r.PlainCPUPer1k)
	fmt.Fprintf(w, "            %s\n", chCPU(r.PlainClickHouseCPUPer1k))
	if r.ClickHouseEmbedded {
		fmt.Fprintf(w, "            %8.3f CPU-s per 1,000 in all\n", r.PlainCPUPer1k+r.PlainClickHouseCPUPer1k)
	}
	if r.TelegrafPerSec > 0 {
		fmt.Fprintf(w, "            %8.0f rows/s Telegraf (the real connector: nats_consumer, json_v2, outputs.sql, 10,000 rows per commit)\n", r.TelegrafPerSec)
		fmt.Fprintf(w, "            %8.3f CPU-s per 1,000 in the Telegraf process\n", r.TelegrafCPUPer1k)
		fmt.Fprintf(w, "            %s\n", chCPU(r.TelegrafClickHouseCPUPer1k))
	}
	fmt.Fprintf(w, "            %8.0f msg/s raw JetStream drain of the same messages (no processing)\n", r.RawJetStreamPerSec)
	fmt.Fprintf(w, "            %8.0f Ed25519 verifications/s on one core (%0.f on all cores; curve25519-voi batches, ZIP-215)\n", r.VerifyPerSec, r.VerifyPerSecAll)
	fmt.Fprintf(w, "ratios:     %8.2f of the plain connector, %.2f of raw JetStream, %.2f of all-core verification\n", r.RatioToPlain, r.RatioToRaw, r.RatioToVerify)
	if r.TelegrafPerSec > 0 {
		fmt.Fprintf(w, "            %8.2f of Telegraf\n", r.RatioToTelegraf)
	}
	if r.LiveRate > 0 {
		fmt.Fprintf(w, "live:       %8.0f readings/s asked, %.0f published (%d readings), %.3f CPU-s per 1,000\n", r.LiveRate, r.LiveAchievedRate, r.LiveReadings, r.LiveCPUPer1k)
		fmt.Fprintf(w, "            publish→queryable p50 %.0f ms, p99 %.0f ms; publish→anchored p50 %.0f ms, p99 %.0f ms (anchor.interval %.0f ms)\n",
			r.P50QueryableMs, r.P99QueryableMs, r.P50AnchoredMs, r.P99AnchoredMs, r.AnchorIntervalMs)
	}
	fmt.Fprintf(w, "checks:     %8d rejected, %d chain anomalies (every reading valid and every chain intact: both must be 0)\n", r.Rejected, r.Anomalies)
	fmt.Fprintf(w, "revocation: %8.0f ms after its block, the last reading of a revoked device that was still accepted had been published (target: under 2,000)\n", r.RevocationMs)
	fmt.Fprintf(w, "revocation: %8.0f ms after its block, the broker closed the revoked device's connection (target: under 2,000)\n", r.DisconnectMs)
	if r.Workers > 1 {
		fmt.Fprintf(w, "chains:     %8d links settled by another worker's answer, %d looked up in ClickHouse\n", r.ChainRemote, r.ChainLookups)
	}
}

// PrintScaling compares runs with different worker counts, measured one after another in one
// command: readings/s, its ratio to the first run, ingest's CPU per reading, and what one worker
// would drain on its own machine of this many cores if ClickHouse and NATS kept up (cores /
// ingest CPU-s per reading: verification and batching use every core).
func PrintScaling(w io.Writer, rs []Result) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n== scaling with ingest workers (same command, one run after another, %d cores)\n", rs[0].Cores)
	fmt.Fprintf(w, "%8s %14s %10s %22s %30s\n", "workers", "readings/s", "vs first", "ingest CPU-s per 1,000", "one worker on its own machine")
	for _, r := range rs {
		ratio := 0.0
		if rs[0].ReadingsPerSec > 0 {
			ratio = r.ReadingsPerSec / rs[0].ReadingsPerSec
		}
		fmt.Fprintf(w, "%8d %14.0f %10.2f %22.3f %24.0f /s\n", r.Workers, r.ReadingsPerSec, ratio, r.CPUSecondsPer1k, r.WorkerCeilingPerSec())
	}
}

// WorkerCeilingPerSec is what one worker would drain on a machine of its own with Cores cores,
// if nothing else bounded it: Cores / (ingest CPU-s per reading).
func (r Result) WorkerCeilingPerSec() float64 {
	if r.CPUSecondsPer1k <= 0 {
		return 0
	}
	return float64(r.Cores) * 1000 / r.CPUSecondsPer1k
}

// WriteSeriesJSON writes the results of several worker counts as {"series": [...]}.
func WriteSeriesJSON(file string, rs []Result) error {
	b, err := json.MarshalIndent(struct {
		Series []Result `json:"series"`
	}{rs}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

type signed struct {
	dev  string
	seq  uint64
	raw  []byte
	key  voi.PublicKey
	sigm []byte // the bytes the signature covers
	sig  []byte
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

type runner struct {
	cfg  config.Config
	opts Options
	log  *slog.Logger
	out  io.Writer

	dir     string
	natsURL string
	rpcAddr string
	db      string
	ch      driver.Conn
	chPid   int // the ClickHouse server's process when the bench started it, else 0
	js      jetstream.JetStream
	node    *node.Node
	setup   auth.Setup // the broker's accounts and service seeds
	// rulesFeed makes the workers publish verified readings for a rules stage (bench rules);
	// otherwise they run with rules.enabled false, as the reference drains always did.
	rulesFeed bool
}

// natsOptions are a role's connect options on the bench's broker.
func (r *runner) natsOptions(role auth.Role) []nats.Option {
	opts, _ := auth.ConnectOptions(role, r.setup.File(role)) // setUp made the seed files
	return opts
}

func (r *runner) say(format string, args ...any) {
	fmt.Fprintf(r.out, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Run runs the benchmark. cfg supplies ClickHouse (a fresh database is made and dropped), the
// ingest settings the workers use, and anchor.interval.
func Run(ctx context.Context, cfg config.Config, opts Options, log *slog.Logger) (Result, error) {
	if opts.Readings <= 0 || opts.Devices <= 0 || opts.Workers <= 0 {
		return Result{}, errors.New("bench: --readings, --devices and --workers must be positive")
	}
	if opts.Telegraf != "" {
		if _, err := exec.LookPath(opts.Telegraf); err != nil {
			return Result{}, fmt.Errorf("bench: --telegraf: %w", err)
		}
	}
	r := &runner{cfg: cfg, opts: opts, log: log, out: opts.Progress}
	if r.out == nil {
		r.out = io.Discard
	}
	res := Result{Readings: opts.Readings, Devices: opts.Devices, Workers: opts.Workers, Cores: runtime.NumCPU(),
		LiveRate: opts.LiveRate, AnchorIntervalMs: float64(cfg.Anchor.Interval.Milliseconds())}
	var err error
	if r.dir, err = os.MkdirTemp("", "anchorline-bench-"); err != nil {
		return res, err
	}
	defer os.RemoveAll(r.dir)
	cleanup, err := r.setUp(ctx)
	defer cleanup()
	if err != nil {
		return res, err
	}

	keys, err := r.register(ctx)
	if err != nil {
		return res, err
	}
	liveN := int(opts.LiveRate * opts.LiveDuration.Seconds())
	r.say("signing %d readings (%d for the drain, %d for the live mode)", opts.Readings+liveN, opts.Readings, liveN)
	all, err := sign(keys, opts.Readings+liveN, nil)
	if err != nil {
		return res, fmt.Errorf("bench: sign: %w", err)
	}
	drainSet, liveSet := all[:opts.Readings], all[opts.Readings:]

	r.say("publishing %d readings to %s", len(drainSet), stream.Readings)
	t := time.Now()
	if err := publishAll(ctx, r.js, drainSet); err != nil {
		return res, err
	}
	res.PrefillPerSec = float64(len(drainSet)) / time.Since(t).Seconds()

	r.say("reference: raw JetStream drain of the same messages")
	if res.RawJetStreamPerSec, err = r.rawDrain(ctx, len(drainSet)); err != nil {
		return res, err
	}
	r.say("reference: Ed25519 verification rate")
	if res.VerifyPerSec, res.VerifyPerSecAll, err = verifyRate(drainSet); err != nil {
		return res, err
	}

	r.say("reference: plain connector draining %d unsigned JSON messages into one flat table", len(drainSet))
	if err := r.settle(ctx); err != nil {
		return res, err
	}
	plain, err := r.plainReference(ctx, drainSet)
	if err != nil {
		return res, err
	}
	if err := r.dropPlain(ctx); err != nil {
		return res, fmt.Errorf("bench: drop the plain table: %w", err)
	}
	res.PlainConnectorPerSec = plain.perSec
	res.PlainCPUPer1k = plain.self / float64(len(drainSet)) * 1000
	res.PlainClickHouseCPUPer1k = plain.clickhouse / float64(len(drainSet)) * 1000
	res.ClickHouseEmbedded = r.chPid != 0
	r.say("plain connector: %.0f rows/s", plain.perSec)

	if opts.Telegraf != "" {
		r.say("reference: Telegraf (%s) draining %d unsigned JSON messages into one flat table", opts.Telegraf, len(drainSet))
		if err := r.settle(ctx); err != nil {
			return res, err
		}
		tg, err := r.telegrafReference(ctx, opts.Telegraf, drainSet)
		if err != nil {
			return res, err
		}
		if err := r.dropTelegraf(ctx); err != nil {
			return res, fmt.Errorf("bench: drop the Telegraf table: %w", err)
		}
		res.TelegrafPerSec = tg.perSec
		res.TelegrafCPUPer1k = tg.telegraf / float64(len(drainSet)) * 1000
		res.TelegrafClickHouseCPUPer1k = tg.clickhouse / float64(len(drainSet)) * 1000
		r.say("Telegraf: %.0f rows/s", tg.perSec)
	}

	r.say("drain: %d ingest worker(s) draining %d readings", opts.Workers, len(drainSet))
	if err := r.settle(ctx); err != nil {
		return res, err
	}
	// Watching BATCHES costs ClickHouse nothing during the drain; it starts before the
	// workers so that it sees every record from the first.
	stored, err := r.watchStored(ctx, len(drainSet))
	if err != nil {
		return res, err
	}
	defer stored.stop()
	cpuBefore, err := snapshotCPU(r.chPid)
	if err != nil {
		return res, err
	}
	// A worker that exits before it is stopped ends the run with its error instead of leaving
	// the bench waiting for readings that will never come.
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	workers, err := r.startWorkers(ctx, abort)
	defer stopWorkers(workers)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := stored.wait(ctx); err != nil {
		return res, cause(ctx, err)
	}
	elapsed := time.Since(t0)
	cpuAfter, err := snapshotCPU(r.chPid)
	if err != nil {
		return res, err
	}
	stored.stop()
	res.ReadingsPerSec = float64(len(drainSet)) / elapsed.Seconds()
	used := cpuAfter.since(cpuBefore)
	res.NATSAndBenchCPUPer1k = used.self / float64(len(drainSet)) * 1000
	res.ClickHouseCPUPer1k = used.clickhouse / float64(len(drainSet)) * 1000
	cpuDrain := 0.0
	for _, w := range workers {
		c, err := cpuSeconds(w.cmd.Process.Pid)
		if err != nil {
			return res, err
		}
		cpuDrain += c
		rss, err := peakRSS(w.cmd.Process.Pid)
		if err != nil {
			return res, err
		}
		res.PeakRSSBytes = max(res.PeakRSSBytes, rss)
	}
	res.CPUSecondsPer1k = cpuDrain / float64(len(drainSet)) * 1000
	res.RatioToRaw = res.ReadingsPerSec / res.RawJetStreamPerSec
	res.RatioToVerify = res.ReadingsPerSec / res.VerifyPerSecAll
	res.RatioToPlain = res.ReadingsPerSec / res.PlainConnectorPerSec
	if res.TelegrafPerSec > 0 {
		res.RatioToTelegraf = res.ReadingsPerSec / res.TelegrafPerSec
	}
	r.say("drained in %s: %.0f readings/s", elapsed.Round(time.Millisecond), res.ReadingsPerSec)
	if err := r.checkStored(ctx, len(drainSet)); err != nil {
		return res, cause(ctx, err)
	}

	if liveN > 0 {
		if err := r.live(ctx, workers, liveSet, cpuDrain, &res); err != nil {
			return res, cause(ctx, err)
		}
	}
	for _, w := range workers {
		m, err := scrape(ctx, w.metrics, "anchorline_ingest_chain_remote_total", "anchorline_ingest_chain_lookups_total")
		if err != nil {
			return res, cause(ctx, err)
		}
		res.ChainRemote += uint64(m["anchorline_ingest_chain_remote_total"])
		res.ChainLookups += uint64(m["anchorline_ingest_chain_lookups_total"])
	}
	if err := r.ch.QueryRow(ctx, "SELECT (SELECT count() FROM "+r.db+".rejected), (SELECT count() FROM "+r.db+".anomalies)").Scan(&res.Rejected, &res.Anomalies); err != nil {
		return res, fmt.Errorf("bench: checks: %w", cause(ctx, err))
	}
	if res.Rejected != 0 || res.Anomalies != 0 {
		return res, fmt.Errorf("%w: %d readings rejected and %d chain anomalies recorded; all were valid and chained", ErrCheck, res.Rejected, res.Anomalies)
	}
	effect, disconnect, err := r.revocation(ctx)
	if err != nil {
		return res, cause(ctx, err)
	}
	res.RevocationMs = float64(effect.Milliseconds())
	res.DisconnectMs = float64(disconnect.Milliseconds())
	return res, nil
}

// settleMax bounds how long settle waits for the server's merges.
const settleMax = 2 * time.Minute

// settle waits, before a measured drain, until the ClickHouse server runs no merge in any
// database. Merges are what an insert leaves behind: those of an earlier drain, of another
// workload's tables (a connector's table that grows from round to round merges ever larger
// parts), or of this run's previous phase would otherwise be counted in the drain's ClickHouse
// CPU and slow it. It says how long it waited and gives up, saying so, after settleMax.
func (r *runner) settle(ctx context.Context) error {
	start := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for first := true; ; first = false {
		var merges uint64
		if err := r.ch.QueryRow(ctx, "SELECT count() FROM system.merges").Scan(&merges); err != nil {
			return fmt.Errorf("bench: merges running on the server: %w", err)
		}
		if merges == 0 {
			if !first {
				r.say("waited %s for the server's merges to finish", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if time.Since(start) > settleMax {
			r.say("the server still runs %d merges after %s; measuring anyway (its CPU counts them)", merges, settleMax)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (r *runner) setUp(ctx context.Context) (func(), error) {
	var stops []func()
	cleanup := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	var err error
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The broker runs as dev's does: devices through the auth callout, services with their
	// own nkeys (the bench itself as admin, the ingest workers as ingest).
	if r.setup, err = auth.Init(filepath.Join(r.dir, "nats-auth")); err != nil {
		return cleanup, err
	}
	ns, err := stack.StartNATS("nats://127.0.0.1:0", filepath.Join(r.dir, "nats"), stack.NATSServer{Auth: &r.setup}, quiet)
	if err != nil {
		return cleanup, err
	}
	r.natsURL = ns.ClientURL()
	stops = append(stops, func() { ns.Shutdown(); ns.WaitForShutdown() })
	rpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return cleanup, err
	}
	r.rpcAddr = rpcLn.Addr().String()
	if r.cfg.ClickHouse.Embedded {
		srv, err := chserver.Start(ctx, filepath.Join(r.dir, "clickhouse"), "", quiet)
		if err != nil {
			return cleanup, err
		}
		stops = append(stops, func() { _ = srv.Stop() })
		r.cfg.ClickHouse.Addr = srv.Addr
		r.chPid = srv.Pid()
	}
	admin := ed25519.NewKeyFromSeed(make([]byte, 32))
	r.node, err = node.Start(ctx, node.Config{Home: filepath.Join(r.dir, "ledger"), ChainID: "anchorline-bench", RPC: rpcLn,
		TimeoutCommit: r.cfg.Ledger.TimeoutCommit, Admins: []ed25519.PublicKey{reading.Ed25519Public(admin)}, Logger: quiet})
	if err != nil {
		return cleanup, err
	}
	stops = append(stops, func() { _ = r.node.Stop() })
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if r.ch, err = stack.OpenClickHouse(cctx, r.cfg, quiet); err != nil {
		return cleanup, err
	}
	stops = append(stops, func() { r.ch.Close() })
	r.db = fmt.Sprintf("bench_%d", time.Now().Unix())
	if _, err := clickhouse.Migrate(ctx, r.ch, r.db); err != nil {
		return cleanup, err
	}
	stops = append(stops, func() { _ = r.ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+r.db) })
	au, err := stack.StartAuth(ctx, r.setup, r.natsURL, r.node.Client(), quiet)
	if err != nil {
		return cleanup, err
	}
	authCtx, stopAuth := context.WithCancel(context.WithoutCancel(ctx))
	authDone := make(chan struct{})
	go func() { defer close(authDone); _ = au.Run(authCtx) }()
	stops = append(stops, func() { stopAuth(); <-authDone; au.Close() })
	nc, js, err := stack.ConnectNATS(ctx, r.natsURL, "anchorline bench", quiet, r.natsOptions(auth.RoleAdmin)...)
	if err != nil {
		return cleanup, err
	}
	stops = append(stops, nc.Close)
	r.js = js
	if err := consume.EnsureStreams(ctx, js, r.cfg.Ingest.MaxAckPending, r.cfg.Ingest.AckWait); err != nil {
		return cleanup, err
	}
	r.say("stack up: NATS %s, ledger RPC %s, ClickHouse %s database %s", r.natsURL, r.rpcAddr, r.cfg.ClickHouse.Addr, r.db)
	return cleanup, nil
}

// register makes the devices' keys and registers them on the ledger, many at a time.
func (r *runner) register(ctx context.Context) ([]ed25519.PrivateKey, error) {
	r.say("registering %d devices on the ledger", r.opts.Devices)
	admin := ed25519.NewKeyFromSeed(make([]byte, 32))
	keys := make([]ed25519.PrivateKey, r.opts.Devices)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i := range keys {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		keys[i] = k
		g.Go(func() error {
			e, err := entry.NewRegister(admin, devID(i), reading.PublicKey{Alg: reading.Ed25519, Key: reading.Ed25519Public(k)}, time.Now())
			if err != nil {
				return err
			}
			_, err = r.node.Client().Submit(gctx, e)
			return err
		})
	}
	return keys, g.Wait()
}

func devID(i int) string { return fmt.Sprintf("bench-%05d", i) }

// sign makes n chained readings, round-robin over the devices, on every core; temp is the
// temperature of the reading of device d with index i (nil: 20 + (i % 100) / 10).
func sign(keys []ed25519.PrivateKey, n int, temp func(d, i int, seq uint64) float64) ([]signed, error) {
	return signFrom(keys, 0, n, temp)
}

// signFrom is sign for the devices first, first+1, ... whose keys are keys.
func signFrom(keys []ed25519.PrivateKey, first, n int, temp func(d, i int, seq uint64) float64) ([]signed, error) {
	if temp == nil {
		temp = func(_, i int, _ uint64) float64 { return 20 + float64(i%100)/10 }
	}
	out := make([]signed, n)
	var errOnce sync.Once
	var firstErr error
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := w; d < len(keys); d += workers {
				dev := reading.Device{ID: devID(first + d), Key: reading.NewEd25519Key(keys[d])}
				for i := d; i < n; i += len(keys) {
					raw, err := dev.Next([]reading.Metric{{Name: "temp", Value: temp(d, i, dev.Seq)}, {Name: "hum", Value: 40}}, nil)
					if err != nil {
						fail(err)
						return
					}
					m, err := reading.Decode(raw)
					if err != nil {
						fail(err)
						return
					}
					out[i] = signed{dev: dev.ID, seq: dev.Seq, raw: raw, key: voi.PublicKey(reading.Ed25519Public(keys[d])), sigm: m.SigStructure(), sig: m.Signature()}
				}
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

func publishAll(ctx context.Context, js jetstream.JetStream, set []signed) error {
	for i := 0; i < len(set); i += 10_000 {
		var futs []jetstream.PubAckFuture
		for _, s := range set[i:min(i+10_000, len(set))] {
			msg := nats.NewMsg(reading.Subject(s.dev))
			msg.Data = s.raw
			msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(s.dev, s.seq))
			// The window is larger than the client's pending limit: a full window waits for
			// acknowledgements (backpressure) instead of failing after the default 200 ms.
			f, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute))
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("publish: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// rawDrain drains the stream through a consumer of its own, acking every message, doing nothing
// else: what a connector that checks nothing pays for JetStream alone.
func (r *runner) rawDrain(ctx context.Context, n int) (float64, error) {
	cons, err := r.js.CreateOrUpdateConsumer(ctx, stream.Readings, jetstream.ConsumerConfig{Durable: "bench-raw",
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20_000})
	if err != nil {
		return 0, err
	}
	defer r.js.DeleteConsumer(context.Background(), stream.Readings, "bench-raw")
	var got atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if got.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// verifyRate measures batch verification with cached expanded keys: on one core, then on all.
func verifyRate(set []signed) (one, all float64, err error) {
	sample := set[:min(len(set), 1024)]
	expanded := map[string]*voi.ExpandedPublicKey{}
	for _, s := range sample {
		if expanded[s.dev] == nil {
			expanded[s.dev], _ = voi.NewExpandedPublicKey(s.key)
		}
	}
	opts := reading.Ed25519Rules()
	var bad atomic.Bool
	round := func() {
		bv := voi.NewBatchVerifierWithCapacity(len(sample))
		for _, s := range sample {
			bv.AddExpandedWithOptions(expanded[s.dev], s.sigm, s.sig, opts)
		}
		if ok, _ := bv.Verify(rand.Reader); !ok {
			bad.Store(true)
		}
	}
	measure := func(workers int) float64 {
		var n atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < 2*time.Second {
					round()
					n.Add(int64(len(sample)))
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / time.Since(start).Seconds()
	}
	one, all = measure(1), measure(runtime.GOMAXPROCS(0))
	if bad.Load() {
		return 0, 0, errors.New("bench: a pre-signed reading does not verify")
	}
	return one, all, nil
}

// worker is an ingest process of the bench; exited is closed once it has been waited for.
type worker struct {
	cmd      *exec.Cmd
	metrics  string // its /metrics URL
	stopping atomic.Bool
	exited   chan struct{}
}

// startWorkers starts the ingest processes. One that exits on its own (a bad flag, a crash)
// calls abort with its exit status.
func (r *runner) startWorkers(ctx context.Context, abort context.CancelCauseFunc) ([]*worker, error) {
	if r.opts.ProfileDir != "" {
		if err := os.MkdirAll(r.opts.ProfileDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: --profile: %w", err)
		}
	}
	var ws []*worker
	for i := range r.opts.Workers {
		httpAddr, err := freeAddr()
		if err != nil {
			return ws, err
		}
		cmd := exec.CommandContext(ctx, r.opts.Binary, "ingest", "--nats.url", r.natsURL, "--nats.credentials", r.setup.File(auth.RoleIngest),
			"--clickhouse.addr", r.cfg.ClickHouse.Addr,
			"--clickhouse.database", r.db, "--ledger.rpc", r.rpcAddr, "--http.addr", httpAddr, "--log.level", "warn")
		if r.opts.ProfileDir != "" {
			cmd.Args = append(cmd.Args, "--cpuprofile", filepath.Join(r.opts.ProfileDir, fmt.Sprintf("ingest-%d.pprof", i)))
		}
		ic := r.cfg.Ingest
		cmd.Env = append(os.Environ(),
			fmt.Sprintf("ANCHORLINE_INGEST_WORKER=bench-%d", i),
			fmt.Sprintf("ANCHORLINE_INGEST_BATCH_SIZE=%d", ic.BatchSize),
			fmt.Sprintf("ANCHORLINE_INGEST_FLUSH_AGE=%s", ic.FlushAge),
			fmt.Sprintf("ANCHORLINE_INGEST_PULL_BATCH=%d", ic.PullBatch),
			fmt.Sprintf("ANCHORLINE_INGEST_MAX_ACK_PENDING=%d", ic.MaxAckPending),
			fmt.Sprintf("ANCHORLINE_CLICKHOUSE_USERNAME=%s", r.cfg.ClickHouse.Username),
			fmt.Sprintf("ANCHORLINE_CLICKHOUSE_PASSWORD=%s", r.cfg.ClickHouse.Password),
			fmt.Sprintf("ANCHORLINE_RULES_ENABLED=%t", r.rulesFeed))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
		cmd.WaitDelay = 15 * time.Second
		if err := cmd.Start(); err != nil {
			return ws, fmt.Errorf("start ingest worker: %w", err)
		}
		w := &worker{cmd: cmd, metrics: "http://" + httpAddr + "/metrics", exited: make(chan struct{})}
		go func() {
			err := cmd.Wait()
			close(w.exited)
			if !w.stopping.Load() && ctx.Err() == nil {
				abort(fmt.Errorf("bench: ingest worker %d exited before the bench ended (%v); its output is above", i, err))
			}
		}()
		ws = append(ws, w)
	}
	return ws, nil
}

// scrape reads the named counters (summed over their labels) from a Prometheus text endpoint;
// a counter not exported yet is 0.
func scrape(ctx context.Context, url string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: worker metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: worker metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("bench: worker metrics: %w", err)
	}
	out := make(map[string]float64, len(names))
	for _, n := range names {
		for _, m := range families[n].GetMetric() {
			out[n] += m.GetCounter().GetValue()
		}
	}
	return out, nil
}

// stopWorkers asks the workers to stop and waits until they have.
func stopWorkers(ws []*worker) {
	for _, w := range ws {
		w.stopping.Store(true)
		_ = w.cmd.Process.Signal(syscall.SIGINT)
	}
	for _, w := range ws {
		<-w.exited
	}
}

// cause is err, or the reason ctx was cancelled if that is why err happened.
func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && errors.Is(err, context.Canceled) {
		return c
	}
	return err
}

// storedWatch follows the batch records in BATCHES through an ordered consumer. Ingest
// publishes a batch's record after its rows are inserted, so the records' sizes count the
// readings stored, at the cost of one small NATS message per batch and no ClickHouse query.
type storedWatch struct {
	cc    jetstream.ConsumeContext
	done  chan struct{} // closed once the records count n readings
	err   chan error    // a record that does not decode
	n     int
	sum   atomic.Uint64
	count atomic.Uint64
	say   func(format string, args ...any)
}

// watchStored starts following BATCHES from its first record until they count n readings.
func (r *runner) watchStored(ctx context.Context, n int) (*storedWatch, error) {
	return r.watchStoredFrom(ctx, n, jetstream.DeliverAllPolicy)
}

// watchStoredFrom is watchStored counting the batch records BATCHES gets from policy on
// (DeliverNewPolicy: from now, for a drain after others).
func (r *runner) watchStoredFrom(ctx context.Context, n int, policy jetstream.DeliverPolicy) (*storedWatch, error) {
	cons, err := r.js.OrderedConsumer(ctx, stream.Batches, jetstream.OrderedConsumerConfig{DeliverPolicy: policy})
	if err != nil {
		return nil, fmt.Errorf("bench: watch %s: %w", stream.Batches, err)
	}
	w := &storedWatch{done: make(chan struct{}), err: make(chan error, 1), n: n, say: r.say}
	var doneOnce sync.Once
	w.cc, err = cons.Consume(func(m jetstream.Msg) {
		var rec stream.BatchRecord
		if err := json.Unmarshal(m.Data(), &rec); err != nil {
			select {
			case w.err <- fmt.Errorf("bench: batch record: %w", err):
			default:
			}
			return
		}
		w.count.Add(1)
		if w.sum.Add(rec.Size) >= uint64(n) {
			doneOnce.Do(func() { close(w.done) })
		}
	})
	if err != nil {
		return nil, fmt.Errorf("bench: watch %s: %w", stream.Batches, err)
	}
	return w, nil
}

// wait returns once the batch records count n readings, saying how far they are every 2 s.
func (w *storedWatch) wait(ctx context.Context) error {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-w.done:
			return nil
		case err := <-w.err:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			w.say("  %d of %d readings stored, %d batches", w.sum.Load(), w.n, w.count.Load())
		}
	}
}

// stop ends the watch; calling it again does nothing.
func (w *storedWatch) stop() { w.cc.Stop() }

// checkStored is the one ClickHouse check after the drain: n readings queryable, batch rows
// counting them, and every batch row's record in BATCHES.
func (r *runner) checkStored(ctx context.Context, n int) error {
	var rows, sized, batches uint64
	if err := r.ch.QueryRow(ctx, "SELECT (SELECT count() FROM "+r.db+".readings), (SELECT toUInt64(sum(size)) FROM "+r.db+".batches), (SELECT count() FROM "+r.db+".batches)").
		Scan(&rows, &sized, &batches); err != nil {
		return fmt.Errorf("bench: check of the drain: %w", err)
	}
	st, err := r.js.Stream(ctx, stream.Batches)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if rows < uint64(n) || sized < uint64(n) || info.State.Msgs < batches {
		return fmt.Errorf("%w: after the drain, %d of %d readings in ClickHouse, batch rows of %d readings, %d batch rows and %d records in %s",
			ErrCheck, rows, n, sized, batches, info.State.Msgs, stream.Batches)
	}
	return nil
}

// live publishes at a fixed rate with ingest and anchoring running and samples latencies.
func (r *runner) live(ctx context.Context, workers []*worker, set []signed, cpuBefore float64, res *Result) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	acfg := r.cfg
	acfg.ClickHouse.Database = r.db                      // the bench's own database
	acfg.Anchor.Key = filepath.Join(r.dir, "anchor.key") // made now; the bench's genesis names no anchoring keys
	anch, err := stack.NewAnchoring(ctx, acfg, r.js, r.ch, r.node.Client(), quiet)
	if err != nil {
		return err
	}
	actx, stopAnchoring := context.WithCancel(ctx)
	anchDone := make(chan struct{})
	go func() { defer close(anchDone); _ = anch.Run(actx) }()
	defer func() { stopAnchoring(); <-anchDone }()

	r.say("live: %.0f readings/s for %s, with anchoring every %s", r.opts.LiveRate, r.opts.LiveDuration, r.cfg.Anchor.Interval)
	every := max(1, len(set)/2000)
	sm := &samples{sent: map[string]time.Time{}, waitQ: map[string]time.Time{}, waitA: map[string]time.Time{}}
	type lat struct {
		q, a []float64
		err  error
	}
	latc := make(chan lat, 1)
	go func() {
		q, a, err := r.latencies(ctx, sm)
		latc <- lat{q, a, err}
	}()
	const tick = 2 * time.Millisecond
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	start := time.Now()
	due := 0.0
	i := 0
	var futs []jetstream.PubAckFuture
	for i < len(set) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		due = r.opts.LiveRate*time.Since(start).Seconds() - float64(i)
		for ; due >= 1 && i < len(set); due-- {
			s := set[i]
			msg := nats.NewMsg(reading.Subject(s.dev))
			msg.Data = s.raw
			msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(s.dev, s.seq))
			if i%every == 0 {
				sm.add(reading.MsgID(s.dev, s.seq), time.Now())
			}
			f, err := r.js.PublishMsgAsync(msg, jetstream.WithStallWait(10*time.Second))
			if err != nil {
				return fmt.Errorf("live publish: %w", err)
			}
			futs = append(futs, f)
			i++
		}
	}
	res.LiveAchievedRate = float64(len(set)) / time.Since(start).Seconds()
	res.LiveReadings = len(set)
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		}
	}
	sm.finish()
	l := <-latc
	if l.err != nil {
		return l.err
	}
	queryable, anchored := l.q, l.a
	cpu := 0.0
	for _, w := range workers {
		c, err := cpuSeconds(w.cmd.Process.Pid)
		if err != nil {
			return err
		}
		cpu += c
	}
	res.LiveCPUPer1k = (cpu - cpuBefore) / float64(len(set)) * 1000
	res.P50QueryableMs, res.P99QueryableMs = percentile(queryable, 50), percentile(queryable, 99)
	res.P50AnchoredMs, res.P99AnchoredMs = percentile(anchored, 50), percentile(anchored, 99)
	return nil
}

// samples are the sampled readings of the live mode: when each was published, and which are
// not yet queryable or anchored.
type samples struct {
	mu           sync.Mutex
	sent         map[string]time.Time
	waitQ, waitA map[string]time.Time
	done         bool
}

func (s *samples) add(k string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent[k], s.waitQ[k], s.waitA[k] = t, t, t
}

func (s *samples) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
}

// pending returns up to 1000 keys still waiting in w, and whether anything is left at all.
func (s *samples) pending(w map[string]time.Time) ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range w {
		keys = append(keys, k)
		if len(keys) == 1000 {
			break
		}
	}
	return keys, len(w) > 0 || !s.done
}

// seen records that k showed up in w at now and returns its latency in milliseconds.
func (s *samples) seen(w map[string]time.Time, k string, now time.Time) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := w[k]
	if !ok {
		return 0, false
	}
	delete(w, k)
	return float64(now.Sub(t).Microseconds()) / 1000, true
}

// latencies polls ClickHouse for the sampled readings while they are published, until each is
// queryable and anchored.
func (r *runner) latencies(ctx context.Context, s *samples) (queryable, anchored []float64, err error) {
	var deadline time.Time
	for {
		_, leftA := s.pending(s.waitA)
		if !leftA {
			return queryable, anchored, nil
		}
		s.mu.Lock()
		if s.done && deadline.IsZero() {
			deadline = time.Now().Add(time.Minute + 10*r.cfg.Anchor.Interval)
		}
		s.mu.Unlock()
		if !deadline.IsZero() && time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("bench: %d sampled readings not anchored in time", len(s.waitA))
		}
		for _, q := range []struct {
			wait map[string]time.Time
			out  *[]float64
			cond string
		}{{s.waitQ, &queryable, ""}, {s.waitA, &anchored, " AND batch_id IN (SELECT batch_id FROM " + r.db + ".batch_anchors)"}} {
			keys, _ := s.pending(q.wait)
			if len(keys) == 0 {
				continue
			}
			tuples := make([]string, len(keys))
			for i, k := range keys {
				dev, seq, _ := strings.Cut(k, ":")
				tuples[i] = fmt.Sprintf("('%s', %s)", dev, seq)
			}
			rows, err := r.ch.Query(ctx, "SELECT device_id, seq FROM "+r.db+".readings WHERE (device_id, seq) IN ("+strings.Join(tuples, ",")+")"+q.cond)
			if err != nil {
				return nil, nil, err
			}
			now := time.Now() // the rows were visible by now: a conservative latency
			for rows.Next() {
				var dev string
				var seq uint64
				if err := rows.Scan(&dev, &seq); err != nil {
					rows.Close()
					return nil, nil, err
				}
				if ms, ok := s.seen(q.wait, reading.MsgID(dev, seq), now); ok {
					*q.out = append(*q.out, ms)
				}
			}
			rows.Close()
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// WriteJSON writes the result file.
func (r Result) WriteJSON(path string) error { return writeJSON(path, r) }

// writeJSON writes v as indented JSON to path.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
