package bench

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
)

// Defaults of `bench rules`.
const (
	DefaultRulesReadings = 200_000
	DefaultRulesDevices  = 1000
	DefaultRulesCount    = 100
	DefaultRulesLiveRate = 5000
)

// RuleOptions describe a `bench rules` run.
type RuleOptions struct {
	Readings int // per drain
	Devices  int
	Rules    int // rules in force in the drains with rules, each selecting a tenth of the devices
	Workers  int
	// Rounds is the drains with rules; each comes between two drains without (2*Rounds+1
	// drains in all, alternating).
	Rounds int
	// LiveRate readings/s are published for LiveDuration with the rules stage running, below
	// what the pipeline drains: the events' latency after storage at a steady load.
	LiveRate     float64
	LiveDuration time.Duration
	Binary       string
	Progress     io.Writer
	// ProfileDir, if set, is where the rules process writes a CPU profile (rules.pprof).
	ProfileDir string
}

// RuleDrain is one drain of `bench rules`: its rate and the CPU each process spent on it.
type RuleDrain struct {
	Rules  bool    `json:"rules"` // ingest fed the rules stage, which evaluated the rules in force
	PerSec float64 `json:"per_sec"`
	// CPU-s per 1,000 readings of the drain: the ingest workers, the ClickHouse server (when
	// the bench started it), the bench process (embedded NATS and ledger, publishing nothing
	// while the drain runs) and the rules process (until it had evaluated the drain's readings).
	IngestCPUPer1k     float64 `json:"ingest_cpu_seconds_per_1k"`
	ClickHouseCPUPer1k float64 `json:"clickhouse_cpu_seconds_per_1k"`
	BenchCPUPer1k      float64 `json:"nats_and_ledger_cpu_seconds_per_1k"`
	RulesCPUPer1k      float64 `json:"rules_cpu_seconds_per_1k"`
	// ClickHouse's work during the drain: the server's counters (system.events) of queries,
	// inserts, rows inserted, read and merged.
	ClickHouse map[string]uint64 `json:"clickhouse_events"`
}

// chCounters are the system.events counters a drain reports.
var chCounters = []string{"SelectQuery", "InsertQuery", "InsertedRows", "SelectedRows", "MergedRows"}

// chEvents reads chCounters.
func (r *runner) chEvents(ctx context.Context) (map[string]uint64, error) {
	rows, err := r.ch.Query(ctx, "SELECT event, value FROM system.events WHERE event IN ('"+strings.Join(chCounters, "','")+"')")
	if err != nil {
		return nil, fmt.Errorf("bench: system.events: %w", err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var name string
		var v uint64
		if err := rows.Scan(&name, &v); err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, rows.Err()
}

// RuleResult is what `bench rules` measured; the JSON names are the contract of --out.
type RuleResult struct {
	Readings int `json:"readings"`
	Devices  int `json:"devices"`
	Rules    int `json:"rules"`
	Workers  int `json:"workers"`
	Cores    int `json:"cores"`
	// Ingest drains of the same size in the same run, alternating: without the rules stage,
	// with it (ingest publishing verified readings, one rules process evaluating the rules),
	// without, ... The medians are compared.
	Drains            []RuleDrain `json:"drains"`
	WithoutMedian     float64     `json:"without_rules_per_sec"`
	WithMedian        float64     `json:"with_rules_per_sec"`
	Drop              float64     `json:"drop"`               // 1 - median with / median without
	RulesCaughtUpMs   float64     `json:"rules_caught_up_ms"` // the longest, after a drain with rules
	Events            uint64      `json:"events"`
	Evaluations       uint64      `json:"evaluations"`
	Late              uint64      `json:"late"`
	LiveRate          float64     `json:"live_rate"`
	LiveEvents        uint64      `json:"live_events"`
	EventLatencyP50Ms float64     `json:"event_latency_p50_ms"` // at the live rate
	EventLatencyP99Ms float64     `json:"event_latency_p99_ms"`
	DrainLatencyP99Ms float64     `json:"drain_event_latency_p99_ms"` // in the drains with rules (saturated)
}

// Print writes the human summary.
func (r RuleResult) Print(w io.Writer) {
	fmt.Fprintf(w, "\n== anchorline bench rules: %d readings per drain from %d devices (another %d for the drains without rules), %d ingest worker(s), %d cores\n", r.Readings, r.Devices, r.Devices, r.Workers, r.Cores)
	fmt.Fprintf(w, "drain              readings/s   CPU-s per 1,000 readings: ingest  ClickHouse  NATS+ledger  rules\n")
	for i, d := range r.Drains {
		name := "without rules"
		if d.Rules {
			name = fmt.Sprintf("with %d rules", r.Rules)
		}
		fmt.Fprintf(w, "%d %-16s %8.0f   %32.3f  %10.3f  %11.3f  %5.3f\n", i+1, name, d.PerSec, d.IngestCPUPer1k, d.ClickHouseCPUPer1k, d.BenchCPUPer1k, d.RulesCPUPer1k)
	}
	for i, d := range r.Drains {
		c := d.ClickHouse
		fmt.Fprintf(w, "ClickHouse in drain %d: %d selects, %d inserts, %d rows inserted, %d read, %d merged\n", i+1,
			c["SelectQuery"], c["InsertQuery"], c["InsertedRows"], c["SelectedRows"], c["MergedRows"])
	}
	fmt.Fprintf(w, "median without %8.0f readings/s, with %8.0f: drop %.1f%% (target: at most 10%%)\n", r.WithoutMedian, r.WithMedian, 100*r.Drop)
	fmt.Fprintf(w, "rules stage      %d events from %d rule evaluations, caught up at most %.0f ms after a drain, %d readings out of order\n",
		r.Events, r.Evaluations, r.RulesCaughtUpMs, r.Late)
	fmt.Fprintf(w, "event latency    p50 %.1f ms, p99 %.1f ms after the reading was stored, %d events at %.0f readings/s (target: p99 under 500 ms)\n",
		r.EventLatencyP50Ms, r.EventLatencyP99Ms, r.LiveEvents, r.LiveRate)
	fmt.Fprintf(w, "                 p99 %.0f ms in the drains with rules, where ingest outruns the stage on these cores\n", r.DrainLatencyP99Ms)
}

// benchRules are the rules of the drain with rules: rule i selects the devices d with
// d % 10 == i % 10 (a tenth of the fleet), by device list; a third are thresholds, a third
// windows of the last 10 readings, a third thresholds with hysteresis, at thresholds spread
// over the readings' values (temp cycles 20.0 to 29.9 per device), so events fire all along.
func benchRules(n, devices int) []rule.Rule {
	out := make([]rule.Rule, n)
	for i := range out {
		var devs []string
		for d := i % 10; d < devices; d += 10 {
			devs = append(devs, devID(d))
		}
		slices.Sort(devs)
		at := 20.5 + float64(i%9)
		r := rule.Rule{ID: fmt.Sprintf("bench-%03d", i), Version: 1, Devices: devs, Actions: []rule.Action{{Kind: rule.ActionEvent}}}
		switch i % 3 {
		case 0:
			r.When = fmt.Sprintf("metrics.temp > %.1f", at)
		case 1:
			r.When, r.Last = fmt.Sprintf("size == 10 && window.avg.temp > %.1f", at), 10
		default:
			r.When, r.Clear = fmt.Sprintf("metrics.temp > %.1f", at), fmt.Sprintf("metrics.temp < %.1f", at-1)
		}
		out[i] = r
	}
	return out
}

// RunRules runs `bench rules`: 2*Rounds+1 ingest drains of --readings each, alternating
// without the rules stage and with --rules rules in force and one `anchorline rules` process
// (after a live phase at --rate); the drop of the median with against the median without, the
// CPU of every process per drain, the events' latency after storage.
func RunRules(ctx context.Context, cfg config.Config, opts RuleOptions, log *slog.Logger) (RuleResult, error) {
	res := RuleResult{Readings: opts.Readings, Devices: opts.Devices, Rules: opts.Rules, Workers: opts.Workers, Cores: runtime.NumCPU()}
	if opts.Readings <= 0 || opts.Devices < 10 || opts.Workers <= 0 || opts.Rules <= 0 || opts.Rounds <= 0 {
		return res, fmt.Errorf("bench rules: --readings, --workers, --rules and --rounds must be positive, --devices at least 10")
	}
	// Twice the devices: the drains with rules (and the live phase) publish for the first
	// half, those without for the second. A drain with rules then continues each device's
	// readings where the previous one left them, as a rules stage always fed sees them: were
	// the halves the same, the stage would first evaluate the drain without's readings of each
	// device, read back from ClickHouse to keep its seq order.
	r := &runner{cfg: cfg, opts: Options{Workers: opts.Workers, Binary: opts.Binary, Devices: 2 * opts.Devices, ProfileDir: opts.ProfileDir}, log: log, out: opts.Progress}
	if r.out == nil {
		r.out = io.Discard
	}
	var err error
	if r.dir, err = os.MkdirTemp("", "anchorline-bench-rules-"); err != nil {
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
	drains := 2*opts.Rounds + 1
	n := opts.Readings / opts.Devices * opts.Devices
	live := int(opts.LiveRate*opts.LiveDuration.Seconds()) / opts.Devices * opts.Devices
	r.say("signing %d x %d readings and %d for the live phase", drains, n, live)
	// temp cycles over 20.0..29.9 along each device's seqs, so the rules fire all along.
	temp := func(d, _ int, seq uint64) float64 { return 20 + float64((seq+uint64(d))%100)/10 }
	withSet, err := sign(keys[:opts.Devices], live+opts.Rounds*n, temp)
	if err != nil {
		return res, err
	}
	withoutSet, err := signFrom(keys[opts.Devices:], opts.Devices, (opts.Rounds+1)*n, temp)
	if err != nil {
		return res, err
	}
	res.LiveRate = opts.LiveRate
	// Sets in seq order per device (whole rounds of the devices): each drain's readings follow
	// the previous one's of the same half.
	liveSet, withSet := withSet[:live], withSet[live:]
	sets := make([][]signed, drains)
	for i := range sets {
		if i%2 == 1 {
			sets[i], withSet = withSet[:n], withSet[n:]
		} else {
			sets[i], withoutSet = withoutSet[:n], withoutSet[n:]
		}
	}

	var rp *rulesProcess
	defer func() {
		if rp != nil {
			rp.stop()
		}
	}()
	for i, set := range sets {
		with := i%2 == 1
		if with && rp == nil {
			if rp, err = r.startRules(ctx, opts.Rules); err != nil {
				return res, err
			}
			r.rulesFeed = true
			if live > 0 {
				if err := r.livePhase(ctx, liveSet, opts.LiveRate); err != nil {
					return res, err
				}
				st, err := rp.status(ctx)
				if err != nil {
					return res, err
				}
				res.LiveEvents, res.EventLatencyP50Ms, res.EventLatencyP99Ms = st.Events, st.LatencyP50Ms, st.LatencyP99Ms
			}
		}
		r.rulesFeed = with
		name := "without rules"
		if with {
			name = fmt.Sprintf("with %d rules", opts.Rules)
		}
		d, caughtUp, err := r.rulesDrain(ctx, name, set, rp, with)
		if err != nil {
			return res, err
		}
		res.Drains = append(res.Drains, d)
		res.RulesCaughtUpMs = max(res.RulesCaughtUpMs, caughtUp)
	}
	st, err := rp.status(ctx)
	if err != nil {
		return res, err
	}
	res.Events, res.Evaluations, res.Late = st.Events-res.LiveEvents, st.Evaluated, st.Late
	res.DrainLatencyP99Ms = st.LatencyP99Ms
	if res.Events == 0 {
		return res, fmt.Errorf("%w: the rules fired no event", ErrCheck)
	}
	var without, with []float64
	for _, d := range res.Drains {
		if d.Rules {
			with = append(with, d.PerSec)
		} else {
			without = append(without, d.PerSec)
		}
	}
	res.WithoutMedian, res.WithMedian = median(without), median(with)
	res.Drop = 1 - res.WithMedian/res.WithoutMedian
	return res, nil
}

// rulesDrain drains set through fresh ingest workers (feeding the rules stage if with) and
// measures its rate and every process's CPU; with rules, it waits until the rules stage has
// evaluated the set too and says how long after the drain that was (ms).
func (r *runner) rulesDrain(ctx context.Context, name string, set []signed, rp *rulesProcess, with bool) (RuleDrain, float64, error) {
	d := RuleDrain{Rules: with}
	r.say("drain %s: %d readings", name, len(set))
	if err := publishAll(ctx, r.js, set); err != nil {
		return d, 0, err
	}
	if err := r.compact(ctx); err != nil {
		return d, 0, err
	}
	if err := r.settle(ctx); err != nil {
		return d, 0, err
	}
	stored, err := r.watchStoredFrom(ctx, len(set), jetstream.DeliverNewPolicy)
	if err != nil {
		return d, 0, err
	}
	defer stored.stop()
	rulesCPU := func() float64 {
		if rp == nil {
			return 0
		}
		c, _ := cpuSeconds(rp.cmd.Process.Pid)
		return c
	}
	cpu0, err := snapshotCPU(r.chPid)
	if err != nil {
		return d, 0, err
	}
	rules0 := rulesCPU()
	ev0, err := r.chEvents(ctx)
	if err != nil {
		return d, 0, err
	}
	wctx, abort := context.WithCancelCause(ctx)
	ws, err := r.startWorkers(wctx, abort)
	defer stopWorkers(ws)
	if err != nil {
		return d, 0, err
	}
	t := time.Now()
	if err := stored.wait(wctx); err != nil {
		return d, 0, cause(wctx, err)
	}
	d.PerSec = float64(len(set)) / time.Since(t).Seconds()
	cpu1, err := snapshotCPU(r.chPid)
	if err != nil {
		return d, 0, err
	}
	ingest := 0.0
	for _, w := range ws {
		if c, err := cpuSeconds(w.cmd.Process.Pid); err == nil {
			ingest += c
		}
	}
	per1k := func(cpu float64) float64 { return cpu / float64(len(set)) * 1000 }
	used := cpu1.since(cpu0)
	d.IngestCPUPer1k, d.ClickHouseCPUPer1k, d.BenchCPUPer1k = per1k(ingest), per1k(used.clickhouse), per1k(used.self)
	r.say("drain %s: %.0f readings/s", name, d.PerSec)
	var caughtUp float64
	if with {
		t := time.Now()
		if err := r.verifiedDrained(ctx); err != nil {
			return d, 0, err
		}
		caughtUp = float64(time.Since(t).Microseconds()) / 1000
	}
	d.RulesCPUPer1k = per1k(rulesCPU() - rules0)
	ev1, err := r.chEvents(ctx)
	if err != nil {
		return d, 0, err
	}
	d.ClickHouse = map[string]uint64{}
	for _, k := range chCounters {
		d.ClickHouse[k] = ev1[k] - ev0[k]
	}
	return d, caughtUp, nil
}

// compact merges every table of the bench's database into one part per partition (OPTIMIZE
// ... FINAL), before a drain: each drain then starts from the same state of the tables.
// Without it, the merges a drain triggers grow with what earlier drains left unmerged (rows
// merged per drain rose from 1.5 to 11 million over five drains), and the later drains are
// slower whatever they run.
func (r *runner) compact(ctx context.Context) error {
	rows, err := r.ch.Query(ctx, "SELECT name FROM system.tables WHERE database = ? AND engine LIKE '%MergeTree'", r.db)
	if err != nil {
		return fmt.Errorf("bench: tables: %w", err)
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range tables {
		if err := r.ch.Exec(ctx, "OPTIMIZE TABLE "+r.db+".`"+t+"` FINAL"); err != nil {
			return fmt.Errorf("bench: optimize %s: %w", t, err)
		}
	}
	return nil
}

// median is the median of xs (the mean of the middle two of an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// livePhase publishes set at rate readings/s (in steps of 10 ms) with a worker running and
// waits until it is stored and the rules stage has evaluated it.
func (r *runner) livePhase(ctx context.Context, set []signed, rate float64) error {
	r.say("live: %d readings at %.0f/s with the rules stage", len(set), rate)
	stored, err := r.watchStoredFrom(ctx, len(set), jetstream.DeliverNewPolicy)
	if err != nil {
		return err
	}
	defer stored.stop()
	wctx, abort := context.WithCancelCause(ctx)
	ws, err := r.startWorkers(wctx, abort)
	defer stopWorkers(ws)
	if err != nil {
		return err
	}
	step := max(int(rate/100), 1)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < len(set); i += step {
		select {
		case <-tick.C:
		case <-wctx.Done():
			return cause(wctx, wctx.Err())
		}
		if err := publishAll(wctx, r.js, set[i:min(i+step, len(set))]); err != nil {
			return err
		}
	}
	if err := stored.wait(wctx); err != nil {
		return cause(wctx, err)
	}
	return r.verifiedDrained(ctx)
}

// verifiedDrained waits until the rules stage has taken every verified reading (VERIFIED, a
// work queue, is empty).
func (r *runner) verifiedDrained(ctx context.Context) error {
	return poll(ctx, 20*time.Millisecond, func() (bool, error) {
		s, err := r.js.Stream(ctx, stream.Verified)
		if err != nil {
			return false, err
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0, err
	})
}

// rulesProcess is the `anchorline rules` process of the drain with rules.
type rulesProcess struct {
	cmd  *exec.Cmd
	base string
	once sync.Once
}

// startRules commits n rules, registers the commander and starts `anchorline rules`.
func (r *runner) startRules(ctx context.Context, n int) (*rulesProcess, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	admin := ed25519.NewKeyFromSeed(make([]byte, 32))
	keyFile := filepath.Join(r.dir, "rules.key")
	key, err := stack.LoadOrCreateRulesKey(keyFile)
	if err != nil {
		return nil, err
	}
	if err := stack.RegisterCommander(ctx, r.node.Client(), admin, reading.Ed25519Public(key), quiet); err != nil {
		return nil, err
	}
	devices := r.opts.Devices / 2 // those of the drains with rules (RunRules)
	r.say("committing %d rules, each selecting a tenth of the %d devices", n, devices)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, rl := range benchRules(n, devices) {
		g.Go(func() error {
			e, err := entry.NewRule(admin, entry.OpPut, rl, time.Now())
			if err != nil {
				return err
			}
			_, err = r.node.Client().Submit(gctx, e)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("bench rules: commit the rules: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, r.opts.Binary, "rules", "--nats.url", r.natsURL, "--nats.credentials", r.setup.File(auth.RoleRules),
		"--clickhouse.addr", r.cfg.ClickHouse.Addr, "--clickhouse.database", r.db, "--ledger.rpc", r.rpcAddr,
		"--http.addr", addr, "--rules.key", keyFile, "--log.level", "warn")
	if r.opts.ProfileDir != "" {
		cmd.Args = append(cmd.Args, "--cpuprofile", filepath.Join(r.opts.ProfileDir, "rules.pprof"))
	}
	cmd.Env = append(os.Environ(), fmt.Sprintf("ANCHORLINE_CLICKHOUSE_USERNAME=%s", r.cfg.ClickHouse.Username),
		fmt.Sprintf("ANCHORLINE_CLICKHOUSE_PASSWORD=%s", r.cfg.ClickHouse.Password))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 15 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the rules process: %w", err)
	}
	p := &rulesProcess{cmd: cmd, base: "http://" + addr}
	if err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		st, err := p.status(ctx)
		return err == nil && st.Rules == n, nil
	}); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// rulesStatus is the part of /v1/status the bench reads.
type rulesStatus struct {
	Rules        int     `json:"rules"`
	Events       uint64  `json:"events"`
	Evaluated    uint64  `json:"evaluated"`
	Late         uint64  `json:"late"`
	LatencyP50Ms float64 `json:"event_latency_p50_ms"`
	LatencyP99Ms float64 `json:"event_latency_p99_ms"`
}

func (p *rulesProcess) status(ctx context.Context) (rulesStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/v1/status", nil)
	if err != nil {
		return rulesStatus{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rulesStatus{}, err
	}
	defer resp.Body.Close()
	var st struct {
		Rules rulesStatus `json:"rules"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return rulesStatus{}, err
	}
	return st.Rules, nil
}

func (p *rulesProcess) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		_ = p.cmd.Wait()
	})
}

// WriteJSON writes r to path.
func (r RuleResult) WriteJSON(path string) error { return writeJSON(path, r) }
