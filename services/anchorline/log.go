package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/schemas/bundle"
)

func logCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "log",
		Short: "The ledger's append-only log, for auditors: keep a checkpoint, later prove the log only grew",
	}
	c.AddCommand(logCheckpointCmd(), logVerifyCmd())
	return c
}

func logCheckpointCmd() *cobra.Command {
	var out, trust string
	c := &cobra.Command{
		Use:   "checkpoint --out FILE [--trust TRUSTFILE]",
		Short: "Save the ledger log's size and root with the signed header that commits them",
		Long: `checkpoint asks the ledger node at ledger.rpc for its latest signed header and the log state
it commits (the state after the block before it), and writes them as a checkpoint
(anchorline.checkpoint/v1, schemas/proof.md): what an auditor keeps, to check later with
` + "`anchorline log verify --since FILE`" + ` that the log only grew. With --trust the checkpoint is
verified against the trust file before it is written. Exit status: 0 written, 1 it does not
verify, 2 bad input, 3 the ledger could not be read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			if out == "" {
				return badInput(errors.New("--out: name the file to write the checkpoint to"))
			}
			trustJSON, err := readOptionalTrust(trust)
			if err != nil {
				return err
			}
			led, err := remoteLedger(cfg, log)
			if err != nil {
				return badInput(err)
			}
			b, err := ledgerCheckpoint(cmd.Context(), led)
			if err != nil {
				return err
			}
			if trustJSON != nil {
				_, report, err := proof.VerifyCheckpoint(b, trustJSON)
				report.Print(cmd.OutOrStdout())
				if err != nil {
					return fmt.Errorf("the ledger's checkpoint does not verify against %s: %w", trust, err) // exitFailed
				}
			}
			return writeCheckpoint(cmd.OutOrStdout(), out, b)
		},
	}
	c.Flags().StringVar(&out, "out", "", "file to write the checkpoint to")
	c.Flags().StringVar(&trust, "trust", "", "trust file (from `anchorline trust export`): verify the checkpoint before writing it")
	return c
}

func logVerifyCmd() *cobra.Command {
	var since, trust, out string
	c := &cobra.Command{
		Use:   "verify --since FILE --trust TRUSTFILE [--out FILE]",
		Short: "Prove that today's ledger log extends a kept checkpoint; exit 1 with the evidence if it does not",
		Long: `verify checks the kept checkpoint (--since) against the trust file, reads the latest signed header
from the ledger node at ledger.rpc and verifies it the same way, then asks the node for the
consistency proof from the checkpoint's log size to today's and checks it (RFC 9162): the log
of today holds the kept log unchanged as its beginning. A log that shrank, or whose proof does
not join the two signed roots, is a finding: verify prints the evidence (both signed heads,
the proof, the root it rebuilds) and exits 1. With --out it then writes today's checkpoint,
to verify the next time. Exit status: 0 the log extends the checkpoint, 1 a step failed,
2 bad input, 3 the ledger could not be read (nothing is concluded).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			switch {
			case since == "":
				return badInput(errors.New("--since: name the checkpoint you kept (from `anchorline log checkpoint`)"))
			case trust == "":
				return badInput(errors.New("--trust: name the trust file (from `anchorline trust export`)"))
			}
			kept, err := readCheckpointFile(since)
			if err != nil {
				return err
			}
			trustJSON, err := readTrustFile(trust)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "kept checkpoint %s:\n", since)
			old, report, err := proof.VerifyCheckpoint(kept, trustJSON)
			report.Print(w)
			if err != nil {
				return fmt.Errorf("the kept checkpoint does not verify: %w", err) // exitFailed
			}
			led, err := remoteLedger(cfg, log)
			if err != nil {
				return badInput(err)
			}
			today, err := ledgerCheckpoint(cmd.Context(), led)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "the ledger today (%s):\n", cfg.Ledger.RPC)
			head, report, err := proof.VerifyCheckpoint(today, trustJSON)
			report.Print(w)
			if err != nil {
				return fmt.Errorf("the ledger's latest header does not verify: %w", err) // exitFailed
			}
			var path []merkle.Hash
			if head.LogSize >= old.LogSize {
				if path, err = led.Consistency(cmd.Context(), old.LogSize, head.LogSize); err != nil {
					return exitError{exitIncomplete, fmt.Errorf("log verify could not get the consistency proof %d→%d: %w", old.LogSize, head.LogSize, err)}
				}
			}
			step, err := proof.VerifyExtends(old, head, path)
			proof.Report{Steps: []proof.Step{step}}.Print(w)
			if err != nil {
				var ext *proof.ExtensionError
				if errors.As(err, &ext) {
					for _, l := range ext.Evidence() {
						fmt.Fprintln(w, l)
					}
				}
				return fmt.Errorf("the ledger's log does not extend %s: %w", since, err) // exitFailed
			}
			fmt.Fprintf(w, "the log extends the kept checkpoint: append-only from log size %d (header %d) to %d (header %d)\n", old.LogSize, old.Height, head.LogSize, head.Height)
			if out != "" {
				return writeCheckpoint(w, out, today)
			}
			return nil
		},
	}
	c.Flags().StringVar(&since, "since", "", "the checkpoint kept before (from `anchorline log checkpoint` or a previous verify --out)")
	c.Flags().StringVar(&trust, "trust", "", "trust file: chain id and validator set")
	c.Flags().StringVar(&out, "out", "", "once the log is proven to extend it, write today's checkpoint to this file (it may be the --since file)")
	return c
}

// ledgerCheckpoint is the canonical checkpoint of the ledger's latest signed header: the log
// state after block h-1 that the header at h commits, with the light chain to it. A ledger
// that cannot be read is exitIncomplete; one whose state is not what its header commits is a
// failure.
func ledgerCheckpoint(ctx context.Context, led *ledger.Client) ([]byte, error) {
	incomplete := func(err error) error {
		return exitError{exitIncomplete, fmt.Errorf("could not read the ledger: %w", err)}
	}
	h, err := led.Height(ctx)
	if err != nil {
		return nil, incomplete(err)
	}
	if h < 2 {
		return nil, incomplete(fmt.Errorf("the ledger is at height %d: no header commits a state yet", h))
	}
	st, err := led.State(ctx, h-1)
	if err != nil {
		return nil, incomplete(err)
	}
	lb, err := led.LightBlock(ctx, h)
	if err != nil {
		return nil, incomplete(err)
	}
	chain, err := led.LightChain(ctx, h)
	if err != nil {
		return nil, incomplete(err)
	}
	c, err := proof.BuildCheckpoint(lb.ChainID, st.AppState(), lb, chain)
	if err != nil {
		return nil, fmt.Errorf("the ledger's state after block %d: %w", h-1, err) // exitFailed
	}
	return c.Marshal()
}

// writeCheckpoint writes a checkpoint's bytes to path (replacing it whole) and says so.
func writeCheckpoint(w io.Writer, path string, b []byte) error {
	c, err := bundle.ParseCheckpoint(b)
	if err != nil {
		return err
	}
	if err := replaceFile(path, b); err != nil {
		return badInput(fmt.Errorf("--out: %w", err))
	}
	fmt.Fprintf(w, "checkpoint of log size %d (root %x) at header %d of %s written to %s\n", c.LogSize, []byte(c.LogRoot), c.Height, c.ChainID, path)
	return nil
}

// readCheckpointFile reads a checkpoint and checks that it is one. A checkpoint that is well
// formed but not in canonical encoding is left to proof.VerifyCheckpoint: that is a
// verification step.
func readCheckpointFile(path string) ([]byte, error) {
	b, err := readInput(kindCheckpoint, path)
	if err != nil {
		return nil, err
	}
	if reason := notA(b, kindCheckpoint); reason != "" {
		return nil, badFile(kindCheckpoint, path, reason)
	}
	if _, err := bundle.ParseCheckpoint(b); err != nil && !errors.Is(err, bundle.ErrNotCanonical) {
		return nil, badFile(kindCheckpoint, path, describeJSON(b, err))
	}
	return b, nil
}
