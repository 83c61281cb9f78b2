package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cometbft/cometbft/types"
	"golang.org/x/sync/errgroup"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// LedgerOptions describe a run of the ledger mode (`anchorline bench ledger`): no NATS, no
// ClickHouse, only validators in this process.
type LedgerOptions struct {
	Validators    int           // of the network measured; a network of one is run after it as the reference
	Rate          float64       // latency phases: anchors submitted per second, open loop
	Duration      time.Duration // latency phases: how long each one submits
	Anchors       int           // throughput phase: anchors submitted
	InFlight      int           // throughput phase: Submits in flight at once
	TimeoutCommit time.Duration // consensus.timeout_commit of every validator (0: node.DefaultTimeoutCommit)
	Progress      io.Writer     // one line per phase; nil for none
}

// Defaults of LedgerOptions (the flags of `anchorline bench ledger`). Blocks in the throughput
// phase are bounded by the window (a block holds at most InFlight anchors, and Submits refill
// it only after their block): on two cores 128 in flight measured a third, and 512 two thirds,
// of what 2048 did; each Submit in flight holds a connection to a validator.
const (
	DefaultLedgerValidators = 4
	DefaultLedgerRate       = 10
	DefaultLedgerDuration   = 10 * time.Second
	DefaultLedgerAnchors    = 20_000
	DefaultLedgerInFlight   = 2048
)

// LedgerResult is what the ledger mode measured; the JSON names are the contract of --out.
type LedgerResult struct {
	Cores           int     `json:"cores"`
	TimeoutCommitMs float64 `json:"timeout_commit_ms"`
	Network         Ledger  `json:"network"`
	// Reference is the same measurement of one validator (the dev default), in the same run:
	// machine speed drifts between runs, so compare the ratios below rather than the figures
	// of two runs. Nil when the network measured is one validator.
	Reference *Ledger `json:"reference,omitempty"`
	// Network over reference (0 without a reference).
	P50Ratio        float64 `json:"p50_latency_ratio"`
	P99Ratio        float64 `json:"p99_latency_ratio"`
	ThroughputRatio float64 `json:"throughput_ratio"`
}

// Ledger is the measurement of one network.
type Ledger struct {
	Validators int     `json:"validators"`
	AllUp      Latency `json:"all_up"`
	// OneDown is the latency with one validator stopped: the one the client was using. Nil
	// for networks of fewer than four, which cannot commit without one of theirs.
	OneDown    *Latency   `json:"one_down,omitempty"`
	Throughput Throughput `json:"throughput"`
}

// Latency is a latency phase: signed anchors submitted one per Submit at a steady rate, each
// timed from Submit to its return (the entry is in a committed block).
type Latency struct {
	Anchors int     `json:"anchors"`
	Rate    float64 `json:"rate"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	Blocks  int     `json:"blocks"` // distinct blocks that included the anchors
	// The fewest and most validator signatures on the commits of those blocks.
	MinSigners int `json:"min_signers"`
	MaxSigners int `json:"max_signers"`
	// Retried counts the tries Submit repeated (a failed RPC, or an entry not in a block
	// within ResubmitAfter).
	Retried int64  `json:"retried"`
	Client  string `json:"client"` // the RPC address the client used at the end
}

// Throughput is the throughput phase: signed anchors submitted with InFlight Submits at once,
// from the first Submit to the return of the last.
type Throughput struct {
	Anchors       int     `json:"anchors"`
	InFlight      int     `json:"in_flight"`
	AnchorsPerSec float64 `json:"anchors_per_sec"`
	BlocksPerSec  float64 `json:"blocks_per_sec"`
	PerBlock      float64 `json:"anchors_per_block"` // mean over the blocks that included some
	MaxPerBlock   int     `json:"max_anchors_per_block"`
	Retried       int64   `json:"retried"` // as in Latency: resubmits of entries a full mempool dropped count here
}

// Print writes the human summary.
func (r LedgerResult) Print(w io.Writer) {
	fmt.Fprintf(w, "\n== anchorline bench ledger: %d validator(s) in one process on loopback, consensus.timeout_commit %.0f ms, %d cores\n",
		r.Network.Validators, r.TimeoutCommitMs, r.Cores)
	r.Network.print(w)
	if r.Reference == nil {
		return
	}
	fmt.Fprintf(w, "reference: one validator (the dev default), same run:\n")
	r.Reference.print(w)
	fmt.Fprintf(w, "ratios:     %d validators over one: latency p50 ×%.2f, p99 ×%.2f; throughput ×%.2f\n",
		r.Network.Validators, r.P50Ratio, r.P99Ratio, r.ThroughputRatio)
}

func (l Ledger) print(w io.Writer) {
	l.AllUp.print(w, fmt.Sprintf("latency, all %d up:", l.Validators))
	if l.OneDown != nil {
		l.OneDown.print(w, "latency, one down:")
	}
	t := l.Throughput
	fmt.Fprintf(w, "  throughput:        %6.0f anchors/s (%d anchors, %d Submits in flight), %.1f blocks/s, %.0f anchors per block (max %d), %d retried\n",
		t.AnchorsPerSec, t.Anchors, t.InFlight, t.BlocksPerSec, t.PerBlock, t.MaxPerBlock, t.Retried)
}

func (l Latency) print(w io.Writer, label string) {
	fmt.Fprintf(w, "  %-18s p50 %4.0f ms, p99 %4.0f ms, max %4.0f ms  (submit→committed, %d anchors at %.0f/s; %d blocks, %d-%d signatures each; %d retried; client on %s)\n",
		label, l.P50Ms, l.P99Ms, l.MaxMs, l.Anchors, l.Rate, l.Blocks, l.MinSigners, l.MaxSigners, l.Retried, l.Client)
}

// WriteJSON writes the result file.
func (r LedgerResult) WriteJSON(path string) error { return writeJSON(path, r) }

// RunLedger runs the ledger mode: a network of o.Validators validators, then (if that is more
// than one) a network of one as the reference, each measured by runNetwork.
func RunLedger(ctx context.Context, o LedgerOptions, log *slog.Logger) (LedgerResult, error) {
	res := LedgerResult{Cores: runtime.NumCPU()}
	if err := o.validate(); err != nil {
		return res, err
	}
	if o.TimeoutCommit <= 0 {
		o.TimeoutCommit = node.DefaultTimeoutCommit
	}
	res.TimeoutCommitMs = float64(o.TimeoutCommit.Milliseconds())
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	dir, err := os.MkdirTemp("", "anchorline-bench-ledger-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	lr := &ledgerRunner{opts: o, log: log, dir: dir}
	if res.Network, err = lr.runNetwork(ctx, o.Validators); err != nil {
		return res, err
	}
	if o.Validators == 1 {
		return res, nil
	}
	ref, err := lr.runNetwork(ctx, 1)
	if err != nil {
		return res, err
	}
	res.Reference = &ref
	res.P50Ratio = res.Network.AllUp.P50Ms / ref.AllUp.P50Ms
	res.P99Ratio = res.Network.AllUp.P99Ms / ref.AllUp.P99Ms
	res.ThroughputRatio = res.Network.Throughput.AnchorsPerSec / ref.Throughput.AnchorsPerSec
	return res, nil
}

func (o LedgerOptions) validate() error {
	switch {
	case o.Validators < 1:
		return fmt.Errorf("bench ledger: --validators %d: want 1 or more", o.Validators)
	case o.Rate <= 0 || o.Duration <= 0 || o.samples() < 1:
		return fmt.Errorf("bench ledger: --rate %g for --duration %s submits no anchor: both must be positive", o.Rate, o.Duration)
	case o.Anchors < 1:
		return fmt.Errorf("bench ledger: --anchors %d: want 1 or more", o.Anchors)
	case o.InFlight < 1:
		return fmt.Errorf("bench ledger: --in-flight %d: want 1 or more", o.InFlight)
	}
	return nil
}

// samples is the number of anchors of a latency phase.
func (o LedgerOptions) samples() int { return int(o.Rate * o.Duration.Seconds()) }

type ledgerRunner struct {
	opts LedgerOptions
	log  *slog.Logger
	dir  string
	runs int
}

func (lr *ledgerRunner) say(format string, args ...any) {
	fmt.Fprintf(lr.opts.Progress, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// runNetwork starts n validators and measures, in this order: latency and throughput with
// all up, then latency with the validator the client uses stopped (n ≥ 4).
func (lr *ledgerRunner) runNetwork(ctx context.Context, n int) (Ledger, error) {
	res := Ledger{Validators: n}
	_, anchorKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return res, err
	}
	lr.runs++
	lr.say("starting %d validator(s) from `ledger init` homes", n)
	admin, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return res, err
	}
	tn, err := node.StartTestnet(ctx, node.Network{Dir: filepath.Join(lr.dir, "net"+strconv.Itoa(lr.runs)), ChainID: "anchorline-bench-ledger",
		Validators: n, Admins: []ed25519.PublicKey{admin}, AnchorKeys: []ed25519.PublicKey{reading.Ed25519Public(anchorKey)},
		TimeoutCommit: lr.opts.TimeoutCommit}, slog.New(slog.DiscardHandler))
	if err != nil {
		return res, fmt.Errorf("bench ledger: %w", err)
	}
	defer func() { _ = tn.Close() }()
	// One client over every validator's RPC, as ledger.rpc lists them for the anchoring
	// service: it uses node0 until node0 stops, then the next that answers.
	rpc, err := ledger.NewFailover(tn.RPCAddrs(), nil, lr.log) // logs its switches
	if err != nil {
		return res, err
	}
	samples := lr.opts.samples()
	set, err := anchors(anchorKey, 2*samples+lr.opts.Anchors)
	if err != nil {
		return res, err
	}
	up, down, burst := set[:samples], set[samples:2*samples], set[2*samples:]
	lr.say("latency, all %d up: %d anchors at %.0f/s", n, samples, lr.opts.Rate)
	if res.AllUp, err = latencyPhase(ctx, rpc, up, lr.opts.Rate); err != nil {
		return res, err
	}
	lr.say("throughput, all %d up: %d anchors, %d Submits in flight", n, len(burst), lr.opts.InFlight)
	if res.Throughput, err = throughputPhase(ctx, rpc, burst, lr.opts.InFlight); err != nil {
		return res, err
	}
	lr.say("  %.0f anchors/s, %.1f blocks/s", res.Throughput.AnchorsPerSec, res.Throughput.BlocksPerSec)
	if n >= 4 {
		lr.say("latency, one down: stopping node0 (the validator the client uses); %d anchors at %.0f/s", samples, lr.opts.Rate)
		if err := tn.Stop(0); err != nil {
			return res, fmt.Errorf("bench ledger: %w", err)
		}
		d, err := latencyPhase(ctx, rpc, down, lr.opts.Rate)
		if err != nil {
			return res, err
		}
		res.OneDown = &d
	}
	return res, nil
}

// anchors signs n anchor entries, each of its own random id and root, before a phase times
// them.
func anchors(key ed25519.PrivateKey, n int) ([][]byte, error) {
	out := make([][]byte, n)
	now := time.Now()
	for i := range out {
		var id [16]byte
		var root [32]byte
		_, _ = rand.Read(id[:]) // crypto/rand.Read never returns an error
		_, _ = rand.Read(root[:])
		var err error
		if out[i], err = entry.NewSignedAnchor(key, id, root, 1, 1024, now); err != nil {
			return nil, fmt.Errorf("bench ledger: %w", err)
		}
	}
	return out, nil
}

// countingClient is a ledger client over rpc whose retries (Submit logs each at warn level)
// are counted.
func countingClient(rpc ledger.RPC) (*ledger.Client, *atomic.Int64) {
	var n atomic.Int64
	return ledger.NewClient(rpc, slog.New(warnCounter{&n})), &n
}

// warnCounter is a slog handler that counts the records at warn level and above and drops
// every record.
type warnCounter struct{ n *atomic.Int64 }

func (h warnCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h warnCounter) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h warnCounter) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h warnCounter) WithGroup(string) slog.Handler                { return h }

// latencyPhase submits the entries open loop, one every 1/rate s whether or not the earlier
// ones have returned (so that a slow block delays no later sample, which would hide it), and
// times each Submit. Afterwards it counts the signatures on the commits of the blocks that
// included them.
func latencyPhase(ctx context.Context, rpc *ledger.Failover, entries [][]byte, rate float64) (Latency, error) {
	c, retried := countingClient(rpc)
	ms := make([]float64, len(entries))
	heights := make([]int64, len(entries))
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for i, e := range entries {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		select {
		case <-gctx.Done():
		case <-time.After(time.Until(due)): // pacing the load, not waiting for an event
		}
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			t := time.Now()
			rc, err := c.Submit(gctx, e)
			if err != nil {
				return err
			}
			ms[i], heights[i] = float64(time.Since(t).Microseconds())/1000, rc.Height
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Latency{}, err
	}
	res := Latency{Anchors: len(entries), Rate: rate, P50Ms: percentile(ms, 50), P99Ms: percentile(ms, 99),
		MaxMs: percentile(ms, 100), Retried: retried.Load(), Client: rpc.Current()}
	var err error
	res.Blocks, res.MinSigners, res.MaxSigners, err = signers(ctx, c, heights)
	return res, err
}

// signers counts the distinct heights and the fewest and most validator signatures on their
// canonical commits.
func signers(ctx context.Context, c *ledger.Client, heights []int64) (blocks, fewest, most int, err error) {
	seen := map[int64]bool{}
	fewest = -1
	for _, h := range heights {
		if seen[h] {
			continue
		}
		seen[h] = true
		lb, err := c.LightBlock(ctx, h)
		if err != nil {
			return 0, 0, 0, err
		}
		n := 0
		for _, s := range lb.Commit.Signatures {
			if s.BlockIDFlag == types.BlockIDFlagCommit {
				n++
			}
		}
		if fewest < 0 || n < fewest {
			fewest = n
		}
		most = max(most, n)
	}
	return len(seen), max(fewest, 0), most, nil
}

// throughputPhase submits the entries with inFlight Submits at once and measures committed
// anchors per second from the first Submit to the return of the last, and the block rate
// meanwhile. Submit resubmits an entry that is not in a block within ResubmitAfter: CometBFT
// v0.38 drops a transaction silently when its mempool is full.
func throughputPhase(ctx context.Context, rpc *ledger.Failover, entries [][]byte, inFlight int) (Throughput, error) {
	c, retried := countingClient(rpc)
	h0, err := c.Height(ctx)
	if err != nil {
		return Throughput{}, err
	}
	var mu sync.Mutex
	perBlock := map[int64]int{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(inFlight)
	start := time.Now()
	for _, e := range entries {
		g.Go(func() error {
			rc, err := c.Submit(gctx, e)
			if err != nil {
				return err
			}
			mu.Lock()
			perBlock[rc.Height]++
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Throughput{}, err
	}
	elapsed := time.Since(start).Seconds()
	res := Throughput{Anchors: len(entries), InFlight: inFlight, AnchorsPerSec: float64(len(entries)) / elapsed,
		PerBlock: float64(len(entries)) / float64(len(perBlock)), Retried: retried.Load()}
	last := h0
	for h, n := range perBlock {
		last, res.MaxPerBlock = max(last, h), max(res.MaxPerBlock, n)
	}
	res.BlocksPerSec = float64(last-h0) / elapsed
	return res, nil
}
