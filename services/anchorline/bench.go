package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/services/bench"
)

func benchCmd() *cobra.Command {
	var opts bench.Options
	var out, workers string
	c := &cobra.Command{
		Use:   "bench [--readings N] [--workers N[,N...]] [--out FILE]",
		Short: "Measure ingest: drain a pre-filled stream and sustain a live rate, next to a plain-connector, raw JetStream and Ed25519 references",
		Long: `bench starts an in-process stack (embedded NATS and ledger; the ClickHouse at clickhouse.addr,
in a fresh database that is dropped afterwards) and runs the ingest workers as separate
processes, so that their CPU time and peak memory are measured on their own.

drain: a stream pre-filled with signed readings from many devices is drained; readings/s from the
first pull to the last row queryable in ClickHouse with its batch record in BATCHES.
live: readings are published at --rate for --duration while ingest and anchoring run;
publish→queryable and publish→anchored latencies (p50, p99) of a sample.
The ingest settings (ingest.batch_size, flush_age, pull_batch, max_ack_pending) and
anchor.interval come from the configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			counts, err := workerCounts(workers)
			if err != nil {
				return err
			}
			if opts.Binary, err = os.Executable(); err != nil {
				return err
			}
			opts.Progress = cmd.ErrOrStderr()
			var results []bench.Result
			var checkErr error
			for _, n := range counts {
				opts.Workers = n
				res, err := bench.Run(cmd.Context(), cfg, opts, log)
				if err != nil && !errors.Is(err, bench.ErrCheck) {
					return err
				}
				checkErr = errors.Join(checkErr, err)
				res.Print(cmd.OutOrStdout())
				results = append(results, res)
			}
			if len(results) > 1 {
				bench.PrintScaling(cmd.OutOrStdout(), results)
			}
			if out != "" {
				var err error
				if len(results) == 1 {
					err = results[0].WriteJSON(out)
				} else {
					err = bench.WriteSeriesJSON(out, results)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "result written to %s\n", out)
			}
			return checkErr // a failed check of the stored data, after its measurements
		},
	}
	c.Flags().IntVar(&opts.Readings, "readings", 1_000_000, "readings pre-filled and drained")
	c.Flags().IntVar(&opts.Devices, "devices", 500, "simulated devices (Ed25519)")
	c.Flags().StringVar(&workers, "workers", "1", "ingest processes sharing the durable consumer; several counts (1,2,4) run one bench each and compare them")
	c.Flags().Float64Var(&opts.LiveRate, "rate", 10_000, "live mode: readings per second (0 skips the live mode)")
	c.Flags().DurationVar(&opts.LiveDuration, "duration", 10*time.Second, "live mode: how long to publish")
	c.Flags().StringVar(&out, "out", "", "write the result as JSON to this file")
	c.Flags().StringVar(&opts.ProfileDir, "profile", "", "folder where each ingest worker writes a CPU profile (go tool pprof)")
	c.Flags().StringVar(&opts.Telegraf, "telegraf", "", "also measure this telegraf executable (with inputs.nats_consumer, parsers.json_v2, outputs.sql) on the plain reference's messages")
	c.AddCommand(benchLedgerCmd(), benchProofsCmd(), benchRulesCmd(), benchOwnersCmd())
	return c
}

// benchProofsCmd is `bench proofs`: what auditors wait for, next to the HTTP floor.
func benchProofsCmd() *cobra.Command {
	opts := bench.ProofOptions{}
	var out string
	c := &cobra.Command{
		Use:   "proofs [--readings N] [--devices N] [--clients N] [--out FILE]",
		Short: "Measure proofs: proofs/s and latency of one API process for random anchored readings, next to /healthz",
		Long: `bench proofs starts an in-process stack (embedded NATS and ledger; the ClickHouse at
clickhouse.addr, or an embedded one, in a fresh database dropped afterwards), registers --devices
devices, stores --readings chained readings of --publishers of them through one ingest process,
anchors them all, and starts one ` + "`anchorline api`" + ` process. Then:
cold: --cold proofs of distinct random readings asked one after another of the fresh process
(its caches empty), each verified; the slowest of those that were the first of their batch.
/healthz: --clients clients ask /healthz as fast as they can for --duration: the HTTP floor.
proofs: the same clients ask proofs of random stored readings for --duration; one answer in a
thousand is verified against the trust file. The ratio of the two rates is printed; compare
ratios between runs, since machine speed drifts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			if opts.Binary, err = os.Executable(); err != nil {
				return err
			}
			opts.Progress = cmd.ErrOrStderr()
			res, err := bench.RunProofs(cmd.Context(), cfg, opts, log)
			if err != nil && !errors.Is(err, bench.ErrCheck) {
				return err
			}
			if err := report(cmd, res, out); err != nil {
				return err
			}
			return err // a failed check, after its measurements
		},
	}
	c.Flags().IntVar(&opts.Readings, "readings", bench.DefaultProofReadings, "readings stored and anchored before the clients start")
	c.Flags().IntVar(&opts.Devices, "devices", bench.DefaultProofDevices, "devices registered on the ledger")
	c.Flags().IntVar(&opts.Publishers, "publishers", bench.DefaultProofPublishers, "registered devices whose readings are stored")
	c.Flags().IntVar(&opts.Clients, "clients", bench.DefaultProofClients, "concurrent HTTP clients")
	c.Flags().DurationVar(&opts.Duration, "duration", bench.DefaultProofDuration, "how long each measured phase runs")
	c.Flags().IntVar(&opts.Cold, "cold", bench.DefaultProofCold, "proofs asked one after another of the fresh API process")
	c.Flags().StringVar(&opts.ProfileDir, "profile", "", "folder where the API process writes a CPU profile (api.pprof; go tool pprof)")
	c.Flags().StringVar(&out, "out", "", "write the result as JSON to this file")
	return c
}

// benchOwnersCmd is `bench owners`: how soon consent and erasure take effect in ClickHouse.
func benchOwnersCmd() *cobra.Command {
	opts := bench.OwnerOptions{}
	var out string
	c := &cobra.Command{
		Use:   "owners [--devices N] [--readings N] [--rounds N] [--out FILE]",
		Short: "Measure how soon consent and erasure entries take effect in ClickHouse after their block",
		Long: `bench owners starts the bench stack (embedded NATS and ledger; the ClickHouse at clickhouse.addr,
or an embedded one, in a fresh database dropped afterwards), registers --devices devices, stores
--readings readings through one ingest process, binds 2 x --rounds devices to owners and runs the
consent syncer and the eraser as the anchoring role does. Each round grants one device's consent
to an audience and waits until the audience's readings table holds exactly its rows, withdraws it
and waits until they are gone, and erases the first half of another device's readings and waits
until the erasure is recorded: each timed from the entry's commit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			if opts.Binary, err = os.Executable(); err != nil {
				return err
			}
			opts.Progress = cmd.ErrOrStderr()
			res, err := bench.RunOwners(cmd.Context(), cfg, opts, log)
			if err != nil {
				return err
			}
			return report(cmd, res, out)
		},
	}
	c.Flags().IntVar(&opts.Devices, "devices", bench.DefaultOwnersDevices, "devices registered")
	c.Flags().IntVar(&opts.Readings, "readings", bench.DefaultOwnersReadings, "readings stored before the rounds")
	c.Flags().IntVar(&opts.Rounds, "rounds", bench.DefaultOwnersRounds, "grants, withdrawals and erasures measured")
	c.Flags().StringVar(&out, "out", "", "write the result as JSON to this file")
	return c
}

// benchRulesCmd is `bench rules`: what the rules stage costs ingest, and how soon its events come.
func benchRulesCmd() *cobra.Command {
	opts := bench.RuleOptions{}
	var out string
	c := &cobra.Command{
		Use:   "rules [--readings N] [--devices N] [--rules N] [--workers N] [--out FILE]",
		Short: "Measure the rules stage: ingest readings/s with and without --rules rules in the same run, and event latency",
		Long: `bench rules starts the bench stack (embedded NATS and ledger; the ClickHouse at clickhouse.addr,
or an embedded one, in a fresh database dropped afterwards), registers --devices devices and
runs 2 x --rounds + 1 drains of --readings chained readings through --workers ingest processes,
alternating: without the rules stage, with it (--rules rules in force, each selecting a tenth
of the devices: a third thresholds, a third averages over the last 10 readings, a third
thresholds with hysteresis; ingest publishes the verified readings and one ` + "`anchorline rules`" + `
process evaluates them), without it, ... After the first drain, a live phase publishes --rate
readings/s for --live-duration with the rules stage running: the events' latency after their
readings were stored (p50, p99, from the rules process) is measured there, at a load the
pipeline keeps up with. It prints each drain's readings/s and the CPU each process spent on it
per 1,000 readings, the drop of the median drain with rules against the median without, how
long after a drain the rules stage had evaluated everything, and the latencies. Compare
within a run: machine speed drifts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			if opts.Binary, err = os.Executable(); err != nil {
				return err
			}
			opts.Progress = cmd.ErrOrStderr()
			res, err := bench.RunRules(cmd.Context(), cfg, opts, log)
			if err != nil && !errors.Is(err, bench.ErrCheck) {
				return err
			}
			if err := report(cmd, res, out); err != nil {
				return err
			}
			return err
		},
	}
	c.Flags().IntVar(&opts.Readings, "readings", bench.DefaultRulesReadings, "readings per drain")
	c.Flags().IntVar(&opts.Devices, "devices", bench.DefaultRulesDevices, "devices (at least 10)")
	c.Flags().IntVar(&opts.Rules, "rules", bench.DefaultRulesCount, "rules in force in the drains with rules")
	c.Flags().IntVar(&opts.Workers, "workers", 1, "ingest processes")
	c.Flags().IntVar(&opts.Rounds, "rounds", 2, "drains with rules, each between two without")
	c.Flags().Float64Var(&opts.LiveRate, "rate", bench.DefaultRulesLiveRate, "readings/s of the live phase, where event latency is measured (0: none)")
	c.Flags().DurationVar(&opts.LiveDuration, "live-duration", 10*time.Second, "how long the live phase publishes")
	c.Flags().StringVar(&opts.ProfileDir, "profile", "", "folder where the rules process writes a CPU profile (rules.pprof; go tool pprof)")
	c.Flags().StringVar(&out, "out", "", "write the result as JSON to this file")
	return c
}

// benchLedgerCmd is `bench ledger`: a subcommand rather than a --ledger flag of bench, because
// it shares none of bench's flags (readings, devices, workers, rate of readings, profile) and
// needs neither ClickHouse nor NATS; its own flags and help say what it measures.
func benchLedgerCmd() *cobra.Command {
	var opts bench.LedgerOptions
	var out string
	c := &cobra.Command{
		Use:   "ledger [--validators N] [--out FILE]",
		Short: "Measure the ledger: anchor latency with all validators up and with one down, and the anchor throughput ceiling",
		Long: `bench ledger writes a network of --validators homes (as ledger init does, on loopback,
with ledger.timeout_commit) in a temporary folder and runs each validator in this process, as
ledger --home runs one; no ClickHouse, no NATS. The client is a failover client over every
validator's RPC, as ledger.rpc lists them for the anchoring service.

latency: signed anchor entries are submitted open loop at --rate for --duration, and each is
timed from Submit to its return (the entry is in a committed block): p50, p99, max; the
signatures on the commits of the blocks that included them are counted.
throughput: --anchors signed anchors are submitted with --in-flight Submits at once:
committed anchors/s and blocks/s. The window must be large enough that blocks are not
bounded by it (a block holds at most --in-flight anchors).
one down: then the validator the client uses (node0) is stopped and the latency phase runs
again (four or more validators; fewer cannot commit with one down).
The same is measured for one validator (the dev default) in the same run: compare the ratios,
since machine speed drifts between runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			opts.TimeoutCommit = cfg.Ledger.TimeoutCommit
			opts.Progress = cmd.ErrOrStderr()
			res, err := bench.RunLedger(cmd.Context(), opts, log)
			if err != nil {
				return err
			}
			return report(cmd, res, out)
		},
	}
	c.Flags().IntVar(&opts.Validators, "validators", bench.DefaultLedgerValidators, "validators of the network measured (one more run of one validator is the reference)")
	c.Flags().Float64Var(&opts.Rate, "rate", bench.DefaultLedgerRate, "latency phases: anchors submitted per second")
	c.Flags().DurationVar(&opts.Duration, "duration", bench.DefaultLedgerDuration, "latency phases: how long each submits")
	c.Flags().IntVar(&opts.Anchors, "anchors", bench.DefaultLedgerAnchors, "throughput phase: anchors submitted")
	c.Flags().IntVar(&opts.InFlight, "in-flight", bench.DefaultLedgerInFlight, "throughput phase: Submits in flight at once (each holds a connection to a validator)")
	c.Flags().StringVar(&out, "out", "", "write the result as JSON to this file")
	return c
}

// benchResult is what a bench subcommand prints and writes.
type benchResult interface {
	Print(io.Writer)
	WriteJSON(path string) error
}

// report prints a result and writes it as JSON to out, if set.
func report(cmd *cobra.Command, res benchResult, out string) error {
	res.Print(cmd.OutOrStdout())
	if out == "" {
		return nil
	}
	if err := res.WriteJSON(out); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "result written to %s\n", out)
	return nil
}

// workerCounts parses --workers: one count or several, comma-separated.
func workerCounts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 64 {
			return nil, badInput(fmt.Errorf("--workers %q: want a count from 1 to 64, or several separated by commas (1,2,4)", s))
		}
		out = append(out, n)
	}
	return out, nil
}
