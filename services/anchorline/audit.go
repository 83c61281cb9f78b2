package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/anchor/audit"
	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
	"github.com/anchorline/anchorline/services/store"
)

func proofCmd() *cobra.Command {
	var device, out, event string
	var seq, from, to uint64
	var wait time.Duration
	c := &cobra.Command{
		Use:   "proof (--device ID (--seq N | --from SEQ --to SEQ) | --event ID) [--out FILE] [--wait D]",
		Short: "Fetch the proof bundle of one reading, the range bundle of a device's readings from SEQ to SEQ, or the bundle of a rule event, from the API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			if event != "" {
				if device != "" || cmd.Flags().Changed("seq") || cmd.Flags().Changed("from") || cmd.Flags().Changed("to") {
					return badInput(errors.New("--event names an event alone: no --device, --seq, --from or --to"))
				}
				if id, err := hex.DecodeString(event); err != nil || len(id) != 16 {
					return badInput(fmt.Errorf("--event %q: an event id is 32 hex characters", event))
				}
				return fetchProof(cmd, cfg, out, wait, "bundle of event "+event, func(ctx context.Context, c *api.Client) ([]byte, error) { return c.EventProof(ctx, event) })
			}
			if !reading.ValidDeviceID(device) {
				return badInput(fmt.Errorf("--device %q: name the device (%s), or give --event ID", device, deviceIDRule))
			}
			ranged := cmd.Flags().Changed("from") || cmd.Flags().Changed("to")
			switch {
			case ranged && cmd.Flags().Changed("seq"):
				return badInput(errors.New("--seq and --from/--to: give one reading (--seq) or a range (--from and --to), not both"))
			case ranged && !(cmd.Flags().Changed("from") && cmd.Flags().Changed("to")):
				return badInput(errors.New("--from and --to: a range needs both (seqs, both included)"))
			case ranged && from > to:
				return badInput(fmt.Errorf("--from %d is after --to %d: the range is from..to, both included", from, to))
			}
			what := fmt.Sprintf("proof bundle of %s seq %d", device, seq)
			if ranged {
				what = fmt.Sprintf("range bundle of %s seqs %d..%d", device, from, to)
			}
			return fetchProof(cmd, cfg, out, wait, what, func(ctx context.Context, c *api.Client) ([]byte, error) {
				if ranged {
					return c.RangeProof(ctx, device, from, to)
				}
				return c.Proof(ctx, device, seq)
			})
		},
	}
	c.Flags().StringVar(&device, "device", "", "device id")
	c.Flags().Uint64Var(&seq, "seq", 0, "reading sequence number")
	c.Flags().Uint64Var(&from, "from", 0, "range: first seq (with --to)")
	c.Flags().Uint64Var(&to, "to", 0, "range: last seq, included (with --from)")
	c.Flags().StringVar(&event, "event", "", "rule event id: fetch the event's bundle (the rule version in force, the readings used)")
	c.Flags().StringVar(&out, "out", "", "file to write (default standard output)")
	c.Flags().DurationVar(&wait, "wait", 0, "keep asking this long while the reading is not stored or not anchored yet")
	return c
}

// fetchProof fetches a bundle with get, asking again for up to wait while what it proves is
// not stored or not anchored yet, and writes it to out (standard output if empty).
func fetchProof(cmd *cobra.Command, cfg config.Config, out string, wait time.Duration, what string, get func(context.Context, *api.Client) ([]byte, error)) error {
	client, err := apiClient(cfg)
	if err != nil {
		return err
	}
	b, err := retry(cmd.Context(), wait, func(ctx context.Context) ([]byte, error) { return get(ctx, client) }, lookup.ErrNotAnchored, lookup.ErrNotFound)
	if err != nil {
		return err
	}
	if out == "" {
		_, err := cmd.OutOrStdout().Write(b)
		return err
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s written to %s (%d bytes)\n", what, out, len(b))
	return nil
}

// retry calls f until it succeeds, fails with an error that is none of again, or wait passes.
func retry[T any](ctx context.Context, wait time.Duration, f func(context.Context) (T, error), again ...error) (T, error) {
	deadline := time.Now().Add(wait)
	for {
		v, err := f(ctx)
		if err == nil {
			return v, nil
		}
		retryable := false
		for _, a := range again {
			retryable = retryable || errors.Is(err, a)
		}
		if !retryable || time.Now().After(deadline) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func verifyCmd() *cobra.Command {
	var trustPath string
	c := &cobra.Command{
		Use:   "verify FILE --trust TRUSTFILE",
		Short: "Verify a proof bundle, a range bundle or an event bundle offline; exit 0 only if every step holds, 1 if one fails, 2 if a file is malformed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if trustPath == "" {
				return badInput(errors.New("--trust: name the trust file (from `anchorline trust export`)"))
			}
			b, err := readBundleFile(args[0])
			if err != nil {
				return err
			}
			trust, err := readTrustFile(trustPath)
			if err != nil {
				return err
			}
			if proof.IsEvent(b) {
				report, err := proof.VerifyEvent(b, trust)
				report.Print(cmd.OutOrStdout())
				if err != nil {
					return fmt.Errorf("verification failed: %w", err) // exitFailed
				}
				fmt.Fprintln(cmd.OutOrStdout(), "event verified: the rule version was in force and fires on these readings exactly as recorded")
				return nil
			}
			if proof.IsRange(b) {
				report, err := proof.VerifyRange(b, trust)
				report.Print(cmd.OutOrStdout())
				if err != nil {
					return fmt.Errorf("verification failed: %w", err) // exitFailed
				}
				fmt.Fprintf(cmd.OutOrStdout(), "range verified: every step holds for %d readings of %s\n", report.Readings, report.Device)
				return nil
			}
			report, err := proof.Verify(b, trust)
			report.Print(cmd.OutOrStdout())
			if err != nil {
				return fmt.Errorf("verification failed: %w", err) // exitFailed
			}
			fmt.Fprintln(cmd.OutOrStdout(), "bundle verified: every step holds")
			return nil
		},
	}
	c.Flags().StringVar(&trustPath, "trust", "", "trust file: chain id and validator set")
	return c
}

func trustCmd() *cobra.Command {
	c := &cobra.Command{Use: "trust", Short: "The auditor's trust anchor"}
	var out string
	export := &cobra.Command{
		Use:   "export --out TRUSTFILE",
		Short: "Write the ledger's chain id and validator set for auditors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			client, err := apiClient(cfg)
			if err != nil {
				return err
			}
			b, err := client.Trust(cmd.Context())
			if err != nil {
				return err
			}
			t, err := bundle.ParseTrust(b)
			if err != nil {
				return fmt.Errorf("the API served a bad trust file: %w", err)
			}
			pins := fmt.Sprintf("chain %s, the validator set that signs from height %d on", t.ChainID, t.Height)
			if out == "" { // the file names its height itself
				_, err := cmd.OutOrStdout().Write(b)
				return err
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "trust file written to %s: %s\n", out, pins)
			return nil
		},
	}
	export.Flags().StringVar(&out, "out", "", "file to write (default standard output)")
	c.AddCommand(export)
	return c
}

func statusCmd() *cobra.Command {
	var wait time.Duration
	var rates bool
	c := &cobra.Command{
		Use:   "status [--wait D]",
		Short: "Ledger height, last anchor, ingest and anchoring state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			client, err := apiClient(cfg)
			if err != nil {
				return err
			}
			if wait > 0 {
				deadline := time.Now().Add(wait)
				for {
					err := client.Ready(cmd.Context())
					if err == nil {
						break
					}
					// A dev starting on a new data_dir makes its CA only now: look again, so
					// that the client trusts it and speaks https.
					if c, cerr := apiClient(cfg); cerr == nil {
						client = c
					}
					if time.Now().After(deadline) {
						return fmt.Errorf("not ready after %s: %w", wait, err)
					}
					select {
					case <-cmd.Context().Done():
						return cmd.Context().Err()
					case <-time.After(500 * time.Millisecond):
					}
				}
			}
			st, err := client.Status(cmd.Context())
			if err != nil {
				return err
			}
			// A second look a second later gives the rates.
			var later *api.Status
			if rates {
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(time.Second):
				}
				if l, err := client.Status(cmd.Context()); err == nil {
					later = &l
				}
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "ready:        %s\n", st.Ready)
			fmt.Fprintf(w, "ledger:       chain %s, height %d, log size %d\n", st.Ledger.ChainID, st.Ledger.Height, st.Ledger.LogSize)
			if a := st.LastAnchor; a != nil {
				fmt.Fprintf(w, "last anchor:  %s at height %d (log index %d): %d batches, %d readings, %s ago\n",
					a.ID, a.Height, a.LogIndex, a.Batches, a.Readings, time.Since(time.UnixMilli(int64(a.TimeMs))).Round(time.Millisecond))
			} else {
				fmt.Fprintln(w, "last anchor:  none yet")
			}
			if t := st.Tables; t != nil {
				fmt.Fprintf(w, "clickhouse:   %d readings, %d rejected, %d batches (%d not anchored yet), %d anchors\n",
					t.Readings, t.Rejected, t.Batches, t.UnanchoredBatches, t.Anchors)
				fmt.Fprintf(w, "integrity:    %d duplicate readings (at-least-once; see readings_unique), %d chain breaks (table anomalies)\n", t.Duplicates, t.Anomalies)
			}
			if e := st.Erasures; e != nil {
				fmt.Fprintf(w, "erasures:     %d carried out (%d readings), %d pending\n", e.Done, e.Readings, e.Pending)
			}
			if l := st.Lag; l != nil {
				fmt.Fprintf(w, "lag:          %d readings waiting in READINGS, %d in flight (not yet acknowledged)\n", l.Pending, l.AckPending)
			}
			if later != nil {
				fmt.Fprintf(w, "rates:        %s\n", rateLine(st.Ingest, later.Ingest, st.Anchoring, later.Anchoring))
			}
			if st.Ingest != nil {
				fmt.Fprintf(w, "ingest:       %s\n", flat(st.Ingest))
			}
			if st.Anchoring != nil {
				fmt.Fprintf(w, "anchoring:    %s\n", flat(st.Anchoring))
			}
			return nil
		},
	}
	c.Flags().DurationVar(&wait, "wait", 0, "first wait this long for the system to be ready")
	c.Flags().BoolVar(&rates, "rates", true, "look twice, a second apart, to show rates")
	return c
}

// flat prints a JSON object as sorted key=value pairs on one line.
func flat(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Sprint(v)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		switch x := m[k].(type) {
		case map[string]any:
			if len(x) > 0 {
				parts = append(parts, k+"={"+flat(x)+"}")
			}
		default:
			parts = append(parts, fmt.Sprintf("%s=%v", k, x))
		}
	}
	return strings.Join(parts, " ")
}

// rateLine is the per-second difference of the counters of two status snapshots a second apart.
func rateLine(ing0, ing1, anc0, anc1 any) string {
	num := func(v any, k string) float64 {
		m, _ := v.(map[string]any)
		f, _ := m[k].(float64)
		return f
	}
	var parts []string
	for _, k := range []string{"received", "inserted", "rejected"} {
		parts = append(parts, fmt.Sprintf("%.0f %s/s", num(ing1, k)-num(ing0, k), k))
	}
	parts = append(parts, fmt.Sprintf("%.0f anchored readings/s", num(anc1, "readings")-num(anc0, "readings")))
	return strings.Join(parts, ", ")
}

func auditCmd() *cobra.Command {
	var from, to, device, trust string
	var grace time.Duration
	c := &cobra.Command{
		Use:   "audit [--from TIME] [--to TIME] [--device ID] [--trust TRUSTFILE]",
		Short: "Recompute stored readings, batch roots and anchor roots against the ledger; exit 1 if any reading does not match",
		Long: `audit re-reads the stored readings (clickhouse.*) in windows of batches, rehashes every reading's raw
bytes, rebuilds each batch root and each anchor root, and compares them with the anchor entries
it reads from the ledger node at ledger.rpc. With --trust, the log the node serves must rebuild
the log root that the latest header, signed by the trust file's validators, commits; without
it the audit trusts the node (run your own).
It reports modified, missing, inserted and unanchored readings by device and seq. Exit status:
0 all match, 1 findings, 2 bad input, 3 the audit could not finish (ClickHouse or the ledger
failed; nothing is concluded). TIME is RFC 3339, a date (2006-01-02) or Unix milliseconds,
and bounds the readings' device time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			q, err := auditQuery(from, to, device, grace)
			if err != nil {
				return err
			}
			trustJSON, err := readOptionalTrust(trust)
			if err != nil {
				return err
			}
			led, err := remoteLedger(cfg, log)
			if err != nil {
				return badInput(err)
			}
			if trustJSON != nil {
				if q.Head, err = signedHead(cmd.Context(), led, trustJSON); err != nil {
					return exitError{exitIncomplete, fmt.Errorf("audit could not check the ledger against %s: %w", trust, err)}
				}
			}
			ch, err := stack.OpenClickHouse(cmd.Context(), cfg, log)
			if err != nil {
				return exitError{exitIncomplete, fmt.Errorf("audit could not run: %w", err)}
			}
			defer ch.Close()
			// On a cluster, the replica asked first catches up with the others: otherwise a batch
			// whose record has not arrived yet would look like inserted readings.
			if err := (clickhouse.Schema{Database: cfg.ClickHouse.Database, Cluster: cfg.ClickHouse.Cluster}).Sync(cmd.Context(), ch); err != nil {
				return exitError{exitIncomplete, fmt.Errorf("audit could not run: %w", err)}
			}
			rep, err := audit.Run(cmd.Context(), store.New(ch, cfg.ClickHouse.Database).Audit(), ledger.AuditLog{Client: led}, q)
			if err != nil {
				return exitError{exitIncomplete, fmt.Errorf("audit could not finish: %w", err)}
			}
			rep.Print(cmd.OutOrStdout())
			if !rep.OK() {
				return errors.New("audit found readings that do not match the ledger") // exitFailed
			}
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "first device time to audit (default: the beginning)")
	c.Flags().StringVar(&to, "to", "", "last device time to audit (default: the end)")
	c.Flags().StringVar(&device, "device", "", "audit only the batches holding this device's readings, report only its readings")
	c.Flags().DurationVar(&grace, "grace", time.Minute, "a batch younger than this may be unanchored yet without a finding")
	c.Flags().StringVar(&trust, "trust", "", "trust file (from `anchorline trust export`): check the ledger node's log against a header its validators signed")
	return c
}

// auditQuery is what audit's flags ask for.
func auditQuery(from, to, device string, grace time.Duration) (audit.Query, error) {
	q := audit.Query{To: math.MaxUint64, Device: device, Grace: grace, Now: time.Now()}
	var err error
	if q.From, err = parseAuditTime(from, "--from"); err != nil {
		return q, err
	}
	if to != "" {
		if q.To, err = parseAuditTime(to, "--to"); err != nil {
			return q, err
		}
	}
	switch {
	case q.From > q.To:
		return q, badInput(fmt.Errorf("--from %s is after --to %s", from, to))
	case device != "" && !reading.ValidDeviceID(device):
		return q, badInput(fmt.Errorf("--device %q: must match %s", device, deviceIDRule))
	case grace < 0:
		return q, badInput(fmt.Errorf("--grace %s: must not be negative", grace))
	}
	return q, nil
}

// parseAuditTime reads RFC 3339, a date or Unix milliseconds as Unix milliseconds.
func parseAuditTime(s, flag string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	if ms, err := strconv.ParseUint(s, 10, 64); err == nil {
		return ms, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return uint64(max(t.UnixMilli(), 0)), nil
		}
	}
	return 0, badInput(fmt.Errorf("%s %q: give RFC 3339 (2026-12-01T10:00:00Z), a date (2026-12-01) or Unix milliseconds", flag, s))
}

// signedHead returns the ledger's latest state that a header signed by the trust file's
// validators commits: the state after block h-1, committed by the header at h.
func signedHead(ctx context.Context, led *ledger.Client, trustJSON []byte) (*audit.Head, error) {
	h, err := led.Height(ctx)
	if err != nil {
		return nil, err
	}
	if h < 2 {
		return nil, fmt.Errorf("the ledger is at height %d: no header commits a state yet", h)
	}
	st, err := led.State(ctx, h-1)
	if err != nil {
		return nil, err
	}
	lb, err := led.LightBlock(ctx, h)
	if err != nil {
		return nil, err
	}
	// From the trust file's validator set to this header, across the set's changes.
	chain, err := led.LightChain(ctx, h)
	if err != nil {
		return nil, err
	}
	if err := proof.VerifyHead(trustJSON, chain, lb, st.AppState()); err != nil {
		return nil, err
	}
	return &audit.Head{Height: h - 1, LogSize: st.LogSize, LogRoot: st.LogRoot, LightBlocks: len(chain)}, nil
}
