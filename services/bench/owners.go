package bench

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/access"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/erasure"
)

// Defaults of `bench owners`.
const (
	DefaultOwnersDevices  = 100
	DefaultOwnersReadings = 100_000
	DefaultOwnersRounds   = 10
)

// OwnerOptions are `bench owners`' knobs.
type OwnerOptions struct {
	Devices  int    // devices registered and bound to owners
	Readings int    // readings stored before the rounds
	Rounds   int    // grants, withdrawals and erasures measured
	Binary   string // the anchorline executable the ingest worker runs
	Progress io.Writer
}

// OwnerResult is what `bench owners` measured; the JSON names are the contract of --out.
type OwnerResult struct {
	Devices  int `json:"devices"`
	Readings int `json:"readings"`
	Rounds   int `json:"rounds"`
	Cores    int `json:"cores"`
	// From the commit of a consent entry (Submit returned) until the audience's readings
	// table holds exactly the device's rows (a grant) or none of them (a withdrawal).
	GrantP50Ms    float64 `json:"grant_p50_ms"`
	GrantMaxMs    float64 `json:"grant_max_ms"`
	WithdrawP50Ms float64 `json:"withdraw_p50_ms"`
	WithdrawMaxMs float64 `json:"withdraw_max_ms"`
	// From the commit of an erase entry until the erasures table records it carried out.
	EraseP50Ms     float64 `json:"erase_p50_ms"`
	EraseMaxMs     float64 `json:"erase_max_ms"`
	ErasedReadings int     `json:"erased_readings"`
}

// Print writes the result for people.
func (r OwnerResult) Print(w io.Writer) {
	fmt.Fprintf(w, "== anchorline bench owners: %d readings of %d devices, %d rounds, %d cores\n", r.Readings, r.Devices, r.Rounds, r.Cores)
	fmt.Fprintf(w, "consent    grant in force in ClickHouse p50 %.0f ms, max %.0f ms after its block; withdrawal p50 %.0f ms, max %.0f ms\n", r.GrantP50Ms, r.GrantMaxMs, r.WithdrawP50Ms, r.WithdrawMaxMs)
	fmt.Fprintf(w, "erasure    carried out p50 %.0f ms, max %.0f ms after its block (%d readings erased in all)\n", r.EraseP50Ms, r.EraseMaxMs, r.ErasedReadings)
}

// WriteJSON writes the result file.
func (r OwnerResult) WriteJSON(path string) error { return writeJSON(path, r) }

// RunOwners measures how soon the ledger's consent and erase entries take effect in
// ClickHouse: it stores readings of devices bound to owners, then for each round grants one
// device's consent to an audience, withdraws it, and erases half of another device's readings,
// timing each from its commit to its effect, with the consent syncer and the eraser running as
// in the anchoring role (every second).
func RunOwners(ctx context.Context, cfg config.Config, opts OwnerOptions, log *slog.Logger) (OwnerResult, error) {
	res := OwnerResult{Devices: opts.Devices, Rounds: opts.Rounds, Cores: runtime.NumCPU()}
	if opts.Devices < 2*opts.Rounds || opts.Readings < opts.Devices || opts.Rounds <= 0 {
		return res, fmt.Errorf("bench owners: want --rounds > 0, --devices >= 2 x --rounds (%d) and --readings >= --devices", 2*opts.Rounds)
	}
	r := &runner{cfg: cfg, opts: Options{Workers: 1, Binary: opts.Binary}, log: log, out: opts.Progress}
	if r.out == nil {
		r.out = io.Discard
	}
	var err error
	if r.dir, err = os.MkdirTemp("", "anchorline-bench-owners-"); err != nil {
		return res, err
	}
	defer os.RemoveAll(r.dir)
	cleanup, err := r.setUp(ctx)
	defer cleanup()
	if err != nil {
		return res, err
	}
	keys, err := r.registerMany(ctx, opts.Devices)
	if err != nil {
		return res, err
	}
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	workers, err := r.startWorkers(ctx, abort)
	defer stopWorkers(workers)
	if err != nil {
		return res, err
	}
	perDevice, err := r.fill(ctx, keys, opts.Readings)
	if err != nil {
		return res, cause(ctx, err)
	}
	res.Readings = int(perDevice) * opts.Devices

	// The consent syncer and the eraser, as the anchoring role runs them.
	schema := clickhouse.Schema{Database: r.db}
	defer func() {
		for _, db := range []string{access.AudienceDatabase(r.db, "bench"), access.ViewsDatabase(r.db)} {
			_ = r.ch.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+db)
		}
	}()
	quiet := slog.New(slog.DiscardHandler)
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	l := r.node.Client()
	wg.Go(func() {
		_ = access.New(r.ch, l, access.Config{Schema: schema, Through: clickhouse.LocalCluster}, quiet).Run(sctx)
	})
	wg.Go(func() { _ = erasure.New(r.ch, r.js, l, erasure.Config{Schema: schema}, quiet).Run(sctx) })

	admin := ed25519.NewKeyFromSeed(make([]byte, 32)) // registerMany's
	owners := make([]reading.PrivateKey, 2*opts.Rounds)
	r.say("binding %d devices to owners", len(owners))
	for i := range owners {
		if owners[i], err = reading.GenerateKey(reading.Ed25519); err != nil {
			return res, err
		}
		e, err := entry.NewOwner(admin, owners[i], entry.OpBind, devID(i), time.Now())
		if err != nil {
			return res, err
		}
		if _, err := l.Submit(ctx, e); err != nil {
			return res, fmt.Errorf("bench owners: bind: %w", err)
		}
	}
	in := func(dev string) (uint64, error) {
		var n uint64
		err := r.ch.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.readings WHERE device_id = ?", access.AudienceDatabase(r.db, "bench")), dev).Scan(&n)
		return n, err
	}
	// A first grant makes the audience's database: not measured.
	first, err := entry.NewConsent(owners[len(owners)-1], entry.OpGrant, devID(len(owners)-1), "bench", time.Now())
	if err != nil {
		return res, err
	}
	if _, err := l.Submit(ctx, first); err != nil {
		return res, err
	}
	if err := poll(ctx, 20*time.Millisecond, func() (bool, error) { n, err := in(devID(len(owners) - 1)); return n == perDevice, nilIfMissing(err) }); err != nil {
		return res, cause(ctx, err)
	}
	var grants, withdrawals, erasures []float64
	r.say("%d rounds: a grant, its withdrawal and an erasure each", opts.Rounds)
	for i := range opts.Rounds {
		dev, at := devID(i), time.Now()
		for _, op := range []string{entry.OpGrant, entry.OpWithdraw} {
			e, err := entry.NewConsent(owners[i], op, dev, "bench", at)
			if err != nil {
				return res, err
			}
			at = at.Add(time.Millisecond)
			if _, err := l.Submit(ctx, e); err != nil {
				return res, fmt.Errorf("bench owners: consent: %w", err)
			}
			committed, want := time.Now(), perDevice
			if op == entry.OpWithdraw {
				want = 0
			}
			if err := poll(ctx, 20*time.Millisecond, func() (bool, error) { n, err := in(dev); return n == want, err }); err != nil {
				return res, cause(ctx, err)
			}
			ms := float64(time.Since(committed).Microseconds()) / 1000
			if op == entry.OpGrant {
				grants = append(grants, ms)
			} else {
				withdrawals = append(withdrawals, ms)
			}
		}
		j := opts.Rounds + i
		e, err := entry.NewEraseByOwner(owners[j], devID(j), entry.EraseBySeq, 1, perDevice/2, "", time.Now())
		if err != nil {
			return res, err
		}
		rc, err := l.Submit(ctx, e)
		if err != nil {
			return res, fmt.Errorf("bench owners: erase: %w", err)
		}
		committed := time.Now()
		if err := poll(ctx, 20*time.Millisecond, func() (bool, error) {
			var n uint64
			err := r.ch.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.erasures WHERE entry_index = ?", r.db), rc.LogIndex).Scan(&n)
			return n > 0, err
		}); err != nil {
			return res, cause(ctx, err)
		}
		erasures = append(erasures, float64(time.Since(committed).Microseconds())/1000)
		res.ErasedReadings += int(perDevice / 2)
	}
	res.GrantP50Ms, res.GrantMaxMs = percentile(grants, 50), percentile(grants, 100)
	res.WithdrawP50Ms, res.WithdrawMaxMs = percentile(withdrawals, 50), percentile(withdrawals, 100)
	res.EraseP50Ms, res.EraseMaxMs = percentile(erasures, 50), percentile(erasures, 100)
	return res, nil
}

// nilIfMissing treats "the audience's database or table is not there yet" (ClickHouse codes 81
// and 60) as not yet, rather than a failure.
func nilIfMissing(err error) error {
	if ex, ok := errors.AsType[*chgo.Exception](err); ok && (ex.Code == 81 || ex.Code == 60) {
		return nil
	}
	return err
}
