package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
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

	"golang.org/x/sync/errgroup"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
	"github.com/anchorline/anchorline/services/store"
)

// Defaults of `bench proofs`: the figures (a million readings stored, a hundred
// thousand devices registered, eight clients).
const (
	DefaultProofReadings   = 1_000_000
	DefaultProofDevices    = 100_000
	DefaultProofPublishers = 1_000
	DefaultProofClients    = 8
	DefaultProofDuration   = 10 * time.Second
	DefaultProofCold       = 200
)

// ProofOptions describe a run of `bench proofs`.
type ProofOptions struct {
	Readings   int           // readings stored (and anchored) before the clients start
	Devices    int           // devices registered on the ledger
	Publishers int           // of those, the devices whose readings are stored
	Clients    int           // concurrent HTTP clients
	Duration   time.Duration // of each measured phase (/healthz, proofs)
	Cold       int           // proofs asked one after another of a fresh API process
	Binary     string        // the anchorline executable the ingest worker and the API run
	ProfileDir string        // if set, the API process writes a CPU profile there
	Progress   io.Writer
}

// ProofResult is what `bench proofs` measured; the JSON names are the contract of --out.
type ProofResult struct {
	Readings   int `json:"readings"`
	Devices    int `json:"devices"`
	Publishers int `json:"publishers"`
	Batches    int `json:"batches"`
	Anchors    int `json:"anchors"`
	Clients    int `json:"clients"`
	Cores      int `json:"cores"`
	DurationS  int `json:"duration_s"`

	HealthzPerSec float64 `json:"healthz_per_sec"`
	HealthzP50Ms  float64 `json:"healthz_p50_ms"`
	HealthzP99Ms  float64 `json:"healthz_p99_ms"`
	ProofsPerSec  float64 `json:"proofs_per_sec"`
	ProofsP50Ms   float64 `json:"proofs_p50_ms"`
	ProofsP99Ms   float64 `json:"proofs_p99_ms"`
	// RatioToHealthz is proofs/s over /healthz answers/s of the same clients in the same run:
	// the HTTP floor.
	RatioToHealthz float64 `json:"ratio_to_healthz"`
	// Cold: proofs asked one after another of an API process that had answered none, each of a
	// reading asked for the first time; ColdFirstMaxMs is the slowest of those whose batch and
	// anchor no proof had touched before.
	ColdProofs     int     `json:"cold_proofs"`
	ColdP50Ms      float64 `json:"cold_p50_ms"`
	ColdP99Ms      float64 `json:"cold_p99_ms"`
	ColdMaxMs      float64 `json:"cold_max_ms"`
	ColdFirstMaxMs float64 `json:"cold_first_of_batch_max_ms"`
	Verified       int     `json:"verified"` // answers checked with proof.Verify against the trust file
	Errors         int     `json:"errors"`   // answers other than 200 during the measured phases

	// Ranges: range bundles of whole devices (every stored reading of one device), fetched and
	// verified one after another; readings/s end to end (the API building the bundle, the
	// transfer, VerifyRange here), and the parts.
	Ranges             int     `json:"ranges"`
	RangeReadings      int     `json:"range_readings"`
	RangeBytesPerRead  float64 `json:"range_bytes_per_reading"`
	RangePerSec        float64 `json:"range_readings_per_sec"`
	RangeServePerSec   float64 `json:"range_serve_readings_per_sec"`
	RangeVerifyPerSec  float64 `json:"range_verify_readings_per_sec"`
	RangeAllComplete   bool    `json:"range_all_complete"`
	APICPUSecondsPer1k float64 `json:"api_cpu_seconds_per_1k_proofs"`
	// ClickHouseCPUSecondsPer1k is 0 unless the bench started ClickHouse; BenchCPUSecondsPer1k
	// is this process's: the clients, NATS and the ledger node.
	ClickHouseCPUSecondsPer1k float64 `json:"clickhouse_cpu_seconds_per_1k_proofs"`
	BenchCPUSecondsPer1k      float64 `json:"bench_cpu_seconds_per_1k_proofs"`
	APIPeakRSSBytes           uint64  `json:"api_peak_rss_bytes"`
	RegisterPerSec            float64 `json:"register_per_sec"`
}

// Print writes the human summary.
func (r ProofResult) Print(w io.Writer) {
	fmt.Fprintf(w, "\n== anchorline bench proofs: %d readings stored in %d batches, %d anchors; %d devices registered (%d publishing); %d clients, %d cores\n",
		r.Readings, r.Batches, r.Anchors, r.Devices, r.Publishers, r.Clients, r.Cores)
	fmt.Fprintf(w, "/healthz   %8.0f answers/s  p50 %6.2f ms  p99 %6.2f ms   (the HTTP floor, same clients, same run)\n", r.HealthzPerSec, r.HealthzP50Ms, r.HealthzP99Ms)
	fmt.Fprintf(w, "proofs     %8.0f proofs/s   p50 %6.2f ms  p99 %6.2f ms   ratio to /healthz %.3f\n", r.ProofsPerSec, r.ProofsP50Ms, r.ProofsP99Ms, r.RatioToHealthz)
	fmt.Fprintf(w, "cold       %d proofs one at a time of a fresh API: p50 %.2f ms, p99 %.2f ms, max %.2f ms (first of its batch: max %.2f ms)\n",
		r.ColdProofs, r.ColdP50Ms, r.ColdP99Ms, r.ColdMaxMs, r.ColdFirstMaxMs)
	fmt.Fprintf(w, "ranges     %d devices' whole ranges, %d readings (%.0f bytes each): %.0f readings/s end to end (serve %.0f/s, verify %.0f/s), all complete: %v\n",
		r.Ranges, r.RangeReadings, r.RangeBytesPerRead, r.RangePerSec, r.RangeServePerSec, r.RangeVerifyPerSec, r.RangeAllComplete)
	fmt.Fprintf(w, "api        %.3f CPU-s per 1,000 proofs (ClickHouse %.3f, this process: clients and ledger %.3f), peak RSS %d MiB; %d answers verified, %d errors\n",
		r.APICPUSecondsPer1k, r.ClickHouseCPUSecondsPer1k, r.BenchCPUSecondsPer1k, r.APIPeakRSSBytes>>20, r.Verified, r.Errors)
}

// WriteJSON writes the result file.
func (r ProofResult) WriteJSON(path string) error { return writeJSON(path, r) }

// RunProofs runs `bench proofs`: an in-process stack (embedded NATS and ledger; ClickHouse at
// clickhouse.addr or embedded, in a fresh database dropped afterwards) holding opts.Readings
// anchored readings of opts.Publishers devices among opts.Devices registered, stored by one
// ingest process and anchored in this one; then one `anchorline api` process serves the
// clients: cold proofs one at a time, then opts.Clients clients on /healthz for
// opts.Duration, then the same clients on proofs of random readings for opts.Duration.
func RunProofs(ctx context.Context, cfg config.Config, opts ProofOptions, log *slog.Logger) (ProofResult, error) {
	res := ProofResult{Readings: opts.Readings, Devices: opts.Devices, Publishers: opts.Publishers, Clients: opts.Clients,
		Cores: runtime.NumCPU(), DurationS: int(opts.Duration.Seconds())}
	switch {
	case opts.Readings <= 0 || opts.Devices <= 0 || opts.Publishers <= 0 || opts.Clients <= 0 || opts.Duration <= 0:
		return res, errors.New("bench proofs: --readings, --devices, --publishers, --clients and --duration must be positive")
	case opts.Publishers > opts.Devices:
		return res, fmt.Errorf("bench proofs: --publishers %d is more than --devices %d: publishers are registered devices", opts.Publishers, opts.Devices)
	}
	r := &runner{cfg: cfg, opts: Options{Workers: 1, Binary: opts.Binary}, log: log, out: opts.Progress}
	profile := ""
	if opts.ProfileDir != "" {
		if err := os.MkdirAll(opts.ProfileDir, 0o755); err != nil {
			return res, fmt.Errorf("bench proofs: --profile: %w", err)
		}
		profile = filepath.Join(opts.ProfileDir, "api.pprof")
	}
	if r.out == nil {
		r.out = io.Discard
	}
	var err error
	if r.dir, err = os.MkdirTemp("", "anchorline-bench-proofs-"); err != nil {
		return res, err
	}
	defer os.RemoveAll(r.dir)
	cleanup, err := r.setUp(ctx)
	defer cleanup()
	if err != nil {
		return res, err
	}
	t := time.Now()
	keys, err := r.registerMany(ctx, opts.Devices)
	if err != nil {
		return res, err
	}
	res.RegisterPerSec = float64(opts.Devices) / time.Since(t).Seconds()
	r.say("registered %d devices: %.0f/s", opts.Devices, res.RegisterPerSec)

	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	workers, err := r.startWorkers(ctx, abort)
	defer stopWorkers(workers)
	if err != nil {
		return res, err
	}
	stopAnchoring, err := r.startAnchoring(ctx)
	if err != nil {
		return res, err
	}
	perDevice, err := r.fill(ctx, keys[:opts.Publishers], opts.Readings)
	if err != nil {
		stopAnchoring()
		return res, cause(ctx, err)
	}
	st := store.New(r.ch, r.db)
	r.say("waiting until every stored batch is anchored")
	err = poll(ctx, 200*time.Millisecond, func() (bool, error) {
		c, err := st.Counts(ctx)
		return err == nil && c.Batches > 0 && c.UnanchoredBatches == 0, err
	})
	stopAnchoring()
	if err != nil {
		return res, cause(ctx, err)
	}
	c, err := st.Counts(ctx)
	if err != nil {
		return res, err
	}
	res.Readings, res.Batches, res.Anchors = int(c.Readings), int(c.Batches), int(c.Anchors)
	stopWorkers(workers)

	// The drain's merges (readings, metrics, rollups) would otherwise run during the phases.
	if err := r.settle(ctx); err != nil {
		return res, err
	}
	// A proof of the newest anchor (included at height h) waits for the canonical commit of
	// h+1, made with block h+2: that is the ledger's pace, not the API's, and not measured.
	if c.LastAnchor != nil {
		if err := r.node.Client().WaitHeight(ctx, int64(c.LastAnchor.Height)+2); err != nil {
			return res, err
		}
	}
	a, err := r.startAPI(ctx, abort, profile)
	if err != nil {
		return res, cause(ctx, err)
	}
	defer a.stop()
	trust, err := a.client.Trust(ctx)
	if err != nil {
		return res, fmt.Errorf("bench proofs: trust file: %w", err)
	}
	pick := func(rng *mrand.Rand) (string, uint64) {
		return devID(rng.IntN(opts.Publishers)), 1 + rng.Uint64N(perDevice)
	}

	r.say("cold: %d proofs one after another of a fresh API process", opts.Cold)
	cold, firstMax, err := a.cold(ctx, opts.Cold, pick, trust, &res.Verified)
	if err != nil {
		return res, cause(ctx, err)
	}
	res.ColdProofs = len(cold)
	res.ColdP50Ms, res.ColdP99Ms, res.ColdMaxMs, res.ColdFirstMaxMs = percentile(cold, 50), percentile(cold, 99), percentile(cold, 100), firstMax

	r.say("/healthz: %d clients for %s", opts.Clients, opts.Duration)
	hz, err := a.load(ctx, opts.Clients, opts.Duration, func(*mrand.Rand) string { return "/healthz" }, nil)
	if err != nil {
		return res, cause(ctx, err)
	}
	res.HealthzPerSec, res.HealthzP50Ms, res.HealthzP99Ms = hz.perSec, percentile(hz.ms, 50), percentile(hz.ms, 99)
	res.Errors += hz.errors

	cpu0, err := cpuSeconds(a.cmd.Process.Pid)
	if err != nil {
		return res, err
	}
	others0, err := snapshotCPU(r.chPid)
	if err != nil {
		return res, err
	}
	r.say("proofs: %d clients for %s, random readings of %d", opts.Clients, opts.Duration, res.Readings)
	var mu sync.Mutex
	sample := 0
	check := func(body []byte) error { // verify one answer in a thousand
		mu.Lock()
		sample++
		do := sample%1000 == 1
		mu.Unlock()
		if !do {
			return nil
		}
		if _, err := proof.Verify(body, trust); err != nil {
			return err
		}
		mu.Lock()
		res.Verified++
		mu.Unlock()
		return nil
	}
	pr, err := a.load(ctx, opts.Clients, opts.Duration, func(rng *mrand.Rand) string {
		d, s := pick(rng)
		return fmt.Sprintf("/v1/readings/%s/%d/proof", d, s)
	}, check)
	if err != nil {
		return res, cause(ctx, err)
	}
	cpu1, err := cpuSeconds(a.cmd.Process.Pid)
	if err != nil {
		return res, err
	}
	others1, err := snapshotCPU(r.chPid)
	if err != nil {
		return res, err
	}
	used := others1.since(others0)
	res.ProofsPerSec, res.ProofsP50Ms, res.ProofsP99Ms = pr.perSec, percentile(pr.ms, 50), percentile(pr.ms, 99)
	res.Errors += pr.errors
	res.RatioToHealthz = res.ProofsPerSec / res.HealthzPerSec
	res.APICPUSecondsPer1k = (cpu1 - cpu0) / float64(len(pr.ms)) * 1000
	res.ClickHouseCPUSecondsPer1k = used.clickhouse / float64(len(pr.ms)) * 1000
	res.BenchCPUSecondsPer1k = used.self / float64(len(pr.ms)) * 1000
	if res.APIPeakRSSBytes, err = peakRSS(a.cmd.Process.Pid); err != nil {
		return res, err
	}
	if res.Errors > 0 {
		return res, fmt.Errorf("%w: %d answers were not 200 (the first: %s)", ErrCheck, res.Errors, firstNonNil(hz.first, pr.first))
	}
	r.say("ranges: whole ranges of %d devices, fetched and verified one after another", rangeDevices)
	if err := a.ranges(ctx, min(rangeDevices, opts.Publishers), perDevice, trust, &res); err != nil {
		return res, cause(ctx, err)
	}
	return res, nil
}

// rangeDevices is how many devices' whole ranges the ranges phase fetches and verifies.
const rangeDevices = 20

// ranges fetches the range bundle of every stored reading of n devices and verifies each.
func (a *apiProcess) ranges(ctx context.Context, n int, perDevice uint64, trust []byte, res *ProofResult) error {
	var serve, verify time.Duration
	var size int
	res.RangeAllComplete = true
	for i := range n {
		dev := devID(i)
		t := time.Now()
		body, err := a.get(ctx, fmt.Sprintf("/v1/devices/%s/proofs?from=1&to=%d", dev, perDevice))
		if err != nil {
			return err
		}
		serve += time.Since(t)
		t = time.Now()
		rep, err := proof.VerifyRange(body, trust)
		verify += time.Since(t)
		if err != nil {
			rep.Print(os.Stderr)
			return fmt.Errorf("%w: the range bundle of %s does not verify: %w", ErrCheck, dev, err)
		}
		if uint64(rep.Readings) != perDevice {
			return fmt.Errorf("%w: the range bundle of %s holds %d readings, %d are stored", ErrCheck, dev, rep.Readings, perDevice)
		}
		res.RangeAllComplete = res.RangeAllComplete && rep.Complete
		res.Ranges++
		res.RangeReadings += rep.Readings
		size += len(body)
	}
	res.RangeBytesPerRead = float64(size) / float64(res.RangeReadings)
	res.RangePerSec = float64(res.RangeReadings) / (serve + verify).Seconds()
	res.RangeServePerSec = float64(res.RangeReadings) / serve.Seconds()
	res.RangeVerifyPerSec = float64(res.RangeReadings) / verify.Seconds()
	return nil
}

func firstNonNil(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// registerMany registers n devices: their entries broadcast many at a time without waiting
// for each block (a mempool that is full is retried with backoff), then each looked up until
// committed.
func (r *runner) registerMany(ctx context.Context, n int) ([]ed25519.PrivateKey, error) {
	r.say("registering %d devices on the ledger", n)
	admin := ed25519.NewKeyFromSeed(make([]byte, 32))
	rpc, err := ledger.NewRPC(r.rpcAddr, nil)
	if err != nil {
		return nil, err
	}
	keys := make([]ed25519.PrivateKey, n)
	entries := make([][]byte, n)
	for i := range keys {
		if _, keys[i], err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, err
		}
		if entries[i], err = entry.NewRegister(admin, devID(i), reading.PublicKey{Alg: reading.Ed25519, Key: reading.Ed25519Public(keys[i])}, time.Now()); err != nil {
			return nil, err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, e := range entries {
		g.Go(func() error {
			_, err := retry.Do(gctx, retry.Policy{Initial: 50 * time.Millisecond, Max: 2 * time.Second, Timeout: time.Minute}, func(ctx context.Context) (struct{}, error) {
				res, err := rpc.BroadcastTxSync(ctx, e)
				switch {
				case err != nil && strings.Contains(err.Error(), "already exists in cache"):
					return struct{}{}, nil
				case err != nil:
					return struct{}{}, err // a full mempool, or the node busy: again, later
				case res.Code != ledger.CodeOK:
					return struct{}{}, retry.Permanent(fmt.Errorf("bench: register: %s", res.Log))
				}
				return struct{}{}, nil
			}, nil)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("bench: register devices: %w", err)
	}
	l := r.node.Client()
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, e := range entries {
		g.Go(func() error {
			_, err := l.Submit(gctx, e) // committed: a lookup; else broadcast again and wait
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("bench: register devices: %w", err)
	}
	return keys, nil
}

// fill signs n chained readings round-robin over the devices' keys, publishes them in chunks
// and waits until ingest has stored them all. It returns the readings per device (seqs
// 1..perDevice of every device are stored).
func (r *runner) fill(ctx context.Context, keys []ed25519.PrivateKey, n int) (uint64, error) {
	perDevice := uint64(n / len(keys))
	n = int(perDevice) * len(keys)
	stored, err := r.watchStored(ctx, n)
	if err != nil {
		return 0, err
	}
	defer stored.stop()
	devs := make([]reading.Device, len(keys))
	for i, k := range keys {
		devs[i] = reading.Device{ID: devID(i), Key: reading.NewEd25519Key(k)}
	}
	r.say("signing and publishing %d readings of %d devices", n, len(keys))
	const rounds = 20 // readings per device per chunk
	for done := uint64(0); done < perDevice; done += rounds {
		k := min(rounds, perDevice-done)
		chunk := make([]signed, len(devs)*int(k))
		var wg sync.WaitGroup
		var firstErr atomic.Pointer[error]
		workers := runtime.GOMAXPROCS(0)
		for w := range workers {
			wg.Go(func() {
				for d := w; d < len(devs); d += workers {
					for j := range int(k) {
						raw, err := devs[d].Next([]reading.Metric{{Name: "temp", Value: 20 + float64(j)/10}, {Name: "hum", Value: 40}}, nil)
						if err != nil {
							firstErr.CompareAndSwap(nil, &err)
							return
						}
						chunk[j*len(devs)+d] = signed{dev: devs[d].ID, seq: devs[d].Seq, raw: raw}
					}
				}
			})
		}
		wg.Wait()
		if e := firstErr.Load(); e != nil {
			return 0, *e
		}
		if err := publishAll(ctx, r.js, chunk); err != nil {
			return 0, err
		}
	}
	if err := stored.wait(ctx); err != nil {
		return 0, err
	}
	r.say("stored %d readings", n)
	return perDevice, nil
}

// startAnchoring runs the anchoring service (every anchor.interval, as in a deployment) until
// the function it returns is called.
func (r *runner) startAnchoring(ctx context.Context) (func(), error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	acfg := r.cfg
	acfg.ClickHouse.Database = r.db
	acfg.Anchor.Key = filepath.Join(r.dir, "anchor.key")
	anch, err := stack.NewAnchoring(ctx, acfg, r.js, r.ch, r.node.Client(), quiet)
	if err != nil {
		return nil, err
	}
	actx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = anch.Run(actx) }()
	return func() { stop(); <-done }, nil
}

// apiProcess is the `anchorline api` process the clients ask.
type apiProcess struct {
	cmd    *exec.Cmd
	base   string
	client *api.Client
	http   *http.Client
	exited chan struct{}
	stopIt atomic.Bool
}

func (r *runner) startAPI(ctx context.Context, abort context.CancelCauseFunc, profile string) (*apiProcess, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, r.opts.Binary, "api", "--clickhouse.addr", r.cfg.ClickHouse.Addr, "--clickhouse.database", r.db,
		"--ledger.rpc", r.rpcAddr, "--http.addr", addr, "--log.level", "warn")
	if profile != "" {
		cmd.Args = append(cmd.Args, "--cpuprofile", profile)
	}
	cmd.Env = append(os.Environ(),
		"ANCHORLINE_CLICKHOUSE_USERNAME="+r.cfg.ClickHouse.Username,
		"ANCHORLINE_CLICKHOUSE_PASSWORD="+r.cfg.ClickHouse.Password)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 15 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start api: %w", err)
	}
	a := &apiProcess{cmd: cmd, base: "http://" + addr, exited: make(chan struct{}),
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}}
	a.client = api.NewClient(a.base)
	go func() {
		err := cmd.Wait()
		close(a.exited)
		if !a.stopIt.Load() && ctx.Err() == nil {
			abort(fmt.Errorf("bench: the api process exited before the bench ended (%v); its output is above", err))
		}
	}()
	if err := poll(ctx, 50*time.Millisecond, func() (bool, error) {
		return a.client.Ready(ctx) == nil, nil
	}); err != nil {
		a.stop()
		return nil, err
	}
	return a, nil
}

func (a *apiProcess) stop() {
	a.stopIt.Store(true)
	_ = a.cmd.Process.Signal(syscall.SIGINT)
	<-a.exited
}

// get asks for path and returns the body of a 200, or an error naming the status and body.
func (a *apiProcess) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// cold asks n proofs of distinct random readings one after another and verifies each. It
// returns their latencies and the slowest of those that were the first of their batch.
func (a *apiProcess) cold(ctx context.Context, n int, pick func(*mrand.Rand) (string, uint64), trust []byte, verified *int) ([]float64, float64, error) {
	rng := newRand()
	seen := map[string]bool{}
	batches := map[string]bool{}
	var ms []float64
	firstMax := 0.0
	for len(ms) < n {
		d, s := pick(rng)
		k := fmt.Sprintf("%s/%d", d, s)
		if seen[k] {
			continue
		}
		seen[k] = true
		t := time.Now()
		body, err := a.get(ctx, "/v1/readings/"+k+"/proof")
		if err != nil {
			return nil, 0, err
		}
		took := float64(time.Since(t).Microseconds()) / 1000
		ms = append(ms, took)
		rep, err := proof.Verify(body, trust)
		if err != nil {
			rep.Print(os.Stderr)
			return nil, 0, fmt.Errorf("%w: the proof of %s does not verify: %w", ErrCheck, k, err)
		}
		*verified++
		batch := batchOf(rep)
		if !batches[batch] {
			batches[batch] = true
			firstMax = max(firstMax, took)
		}
	}
	return ms, firstMax, nil
}

// batchOf is the batch id a verified bundle's report names.
func batchOf(rep proof.Report) string {
	for _, s := range rep.Steps {
		if s.Name == "batch" {
			if i := strings.LastIndex(s.Detail, " in batch "); i >= 0 {
				return strings.Fields(s.Detail[i+len(" in batch "):])[0]
			}
		}
	}
	return ""
}

// loadResult is one phase of clients asking as fast as they can.
type loadResult struct {
	perSec float64
	ms     []float64
	errors int
	first  error
}

// load runs clients that each ask path(rng) one after another for d, and check(body) on each
// 200 answer if check is set.
func (a *apiProcess) load(ctx context.Context, clients int, d time.Duration, path func(*mrand.Rand) string, check func([]byte) error) (loadResult, error) {
	var res loadResult
	var mu sync.Mutex
	var checkErr error
	lctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			rng := newRand()
			var ms []float64
			errs := 0
			var first error
			for lctx.Err() == nil {
				t := time.Now()
				body, err := a.get(ctx, path(rng))
				if lctx.Err() != nil {
					break // the answer came after the phase ended: not counted
				}
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				ms = append(ms, float64(time.Since(t).Microseconds())/1000)
				if check != nil {
					if err := check(body); err != nil {
						mu.Lock()
						checkErr = errors.Join(checkErr, err)
						mu.Unlock()
						cancel()
					}
				}
			}
			mu.Lock()
			res.ms = append(res.ms, ms...)
			res.errors += errs
			if res.first == nil {
				res.first = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if checkErr != nil {
		return res, fmt.Errorf("%w: an answer does not verify: %w", ErrCheck, checkErr)
	}
	res.perSec = float64(len(res.ms)) / time.Since(start).Seconds()
	slices.Sort(res.ms)
	return res, nil
}

// poll calls cond every interval until it is true, fails, or ctx ends.
func poll(ctx context.Context, every time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

func newRand() *mrand.Rand {
	seed, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	return mrand.New(mrand.NewPCG(seed.Uint64(), 1))
}
