package main

// The operator's commands for the ledger's authority entries (schemas/ledger.md, "Authorised
// writers"). `ledger authority` prints the state; `ledger anchor-key add|remove` commits an
// anchor_key entry signed by ledger.admin_key. Validator and admin-set changes need M of N admin
// signatures, so they travel as a proposal file (schemas/ledger.md, "proposal files"): one
// command writes it, each admin signs it in place with `ledger sign` (no ledger needed, so a
// key can stay on an offline machine), and `ledger submit` commits it once it carries M.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/fxamacker/cbor/v2"
	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
)

// proposalFormat is the format field of a proposal file.
const proposalFormat = "anchorline.ledger-proposal/v1"

const kindProposal fileKind = "proposal file"

// defaultSubmitWait bounds how long a command waits for the block that includes its entry.
const defaultSubmitWait = 2 * time.Minute

// authorityCmds are the subcommands of `ledger` that read and change who may write.
func authorityCmds() []*cobra.Command {
	return []*cobra.Command{
		authorityCmd(), anchorKeyCmd(), ledgerKeygenCmd(),
		validatorProposalCmd(), adminsProposalCmd(), signProposalCmd(), submitProposalCmd(),
	}
}

func authorityCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "authority [--json]",
		Short: "Print the ledger's admins and threshold, anchoring keys and validators (query /authority)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, l, err := ledgerClient(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			auth, err := l.Authority(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(auth)
			}
			chainID, err := l.ChainID(ctx)
			if err != nil {
				return err
			}
			mine := ""
			if k, err := stack.LoadAdminKey(cfg.Ledger.AdminKey); err == nil {
				mine = hex.EncodeToString(reading.Ed25519Public(k))
			}
			return printAuthority(cmd.OutOrStdout(), chainID, auth, mine)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the /authority answer as JSON")
	return c
}

// printAuthority prints auth as a table; mine is ledger.admin_key's public key (hex), marked.
func printAuthority(out io.Writer, chainID string, auth ledger.Authority, mine string) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "chain\t%s at height %d\n", chainID, auth.Height)
	fmt.Fprintf(w, "admins\t%d; validator and admin-set changes need %d of their signatures (from the first block)\n", len(auth.Admins), auth.Threshold)
	for _, a := range auth.Admins {
		note := ""
		if a == mine {
			note = "\t(ledger.admin_key)"
		}
		fmt.Fprintf(w, "  admin\t%s%s\n", a, note)
	}
	if auth.AnchorRuleFrom == 0 {
		fmt.Fprintf(w, "anchoring keys\t%d; not enforced yet: unsigned anchors are accepted until the block after the first anchor_key add\n", len(auth.AnchorKeys))
	} else {
		fmt.Fprintf(w, "anchoring keys\t%d; from block %d only anchors signed by one of them are accepted\n", len(auth.AnchorKeys), auth.AnchorRuleFrom)
	}
	for _, k := range auth.AnchorKeys {
		fmt.Fprintf(w, "  anchor key\t%s\n", k)
	}
	var total int64
	for _, v := range auth.Validators {
		total += v.Power
	}
	fmt.Fprintf(w, "validators\t%d, total power %d\n", len(auth.Validators), total)
	for _, v := range auth.Validators {
		pub := v.PubKey
		if pub == "" {
			pub = "(not known yet)"
		}
		fmt.Fprintf(w, "  validator\t%s\tpower %d\tpub_key %s\n", v.Address, v.Power, pub)
	}
	return w.Flush()
}

func anchorKeyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "anchor-key",
		Short: "Authorise or withdraw an anchoring key (an anchor_key entry signed by ledger.admin_key)",
	}
	for _, op := range []struct{ op, short string }{
		{entry.OpAdd, "Authorise an anchoring key: the ledger accepts anchors it signs"},
		{entry.OpRemove, "Withdraw an anchoring key: the ledger refuses anchors it signs from this entry on"},
	} {
		var wait time.Duration
		sub := &cobra.Command{
			Use:   op.op + " PUBKEY",
			Short: op.short + " (PUBKEY: hex Ed25519 public key)",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return changeAnchorKey(cmd, op.op, args[0], wait)
			},
		}
		sub.Flags().DurationVar(&wait, "wait", defaultSubmitWait, "how long to wait for the block that includes the entry")
		c.AddCommand(sub)
	}
	return c
}

// changeAnchorKey commits an anchor_key entry (op) for the key in hex h, signed by
// ledger.admin_key, and prints where it went.
func changeAnchorKey(cmd *cobra.Command, op, h string, wait time.Duration) error {
	key, err := parsePublicKey("anchoring key", h)
	if err != nil {
		return err
	}
	_, l, admin, err := adminLedger(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	e, err := entry.NewAnchorKey(admin, op, key, time.Now())
	if err != nil {
		return err
	}
	rc, err := submitEntry(ctx, l, e, wait)
	if err != nil {
		return fmt.Errorf("anchor-key %s %x: %w", op, []byte(key), err)
	}
	switch op {
	case entry.OpAdd:
		fmt.Fprintf(cmd.OutOrStdout(), "authorised anchoring key %x at ledger height %d, log index %d\n", []byte(key), rc.Height, rc.LogIndex)
	default:
		fmt.Fprintf(cmd.OutOrStdout(), "withdrew anchoring key %x at ledger height %d, log index %d\n", []byte(key), rc.Height, rc.LogIndex)
	}
	return nil
}

// adminLedger is the configuration, a client of the ledger at ledger.rpc and the key of
// ledger.admin_key, which must be one of the ledger's admins: what a command that commits an
// admin-signed entry opens.
func adminLedger(cmd *cobra.Command) (config.Config, *ledger.Client, ed25519.PrivateKey, error) {
	cfg, l, err := ledgerClient(cmd)
	if err != nil {
		return cfg, nil, nil, err
	}
	admin, err := stack.LoadAdminKey(cfg.Ledger.AdminKey)
	if err != nil {
		return cfg, nil, nil, badInput(err)
	}
	auth, err := l.Authority(cmd.Context())
	if err != nil {
		return cfg, nil, nil, err
	}
	if err := checkAdmin(cfg, auth.Admins, reading.Ed25519Public(admin)); err != nil {
		return cfg, nil, nil, err
	}
	return cfg, l, admin, nil
}

// checkAdmin is the bad-input error for a ledger.admin_key that is not one of admins (hex).
func checkAdmin(cfg config.Config, admins []string, pub ed25519.PublicKey) error {
	if slices.Contains(admins, hex.EncodeToString(pub)) {
		return nil
	}
	return badInput(fmt.Errorf("ledger.admin_key %s: key %x is not one of the %d admins of this ledger (see anchorline ledger authority)", cfg.Ledger.AdminKey, []byte(pub), len(admins)))
}

func ledgerKeygenCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Make an Ed25519 key file (mode 0600) for a new admin or anchoring key and print its public key",
		Long: `keygen writes a new key in the format of admin.key and anchor.key (a hex Ed25519 seed) and
prints its public key, the PUBKEY that ` + "`ledger admins --add`" + ` and ` + "`ledger anchor-key add`" + ` take.
It never overwrites a file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return badInput(errors.New("--out: name the key file to write"))
			}
			if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
				return badInput(fmt.Errorf("--out %s: the file exists; keygen does not overwrite a key", out))
			}
			k, err := stack.LoadOrCreateAdminKey(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "public key %x written to %s\n", []byte(reading.Ed25519Public(k)), out)
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "key file to write")
	return c
}

func validatorProposalCmd() *cobra.Command {
	var pubKey, out string
	var power uint64
	c := &cobra.Command{
		Use:   "validator --pubkey PUBKEY --power N --out FILE",
		Short: "Write a proposal to add, re-weight or (--power 0) remove a validator, for the admins to sign",
		Long: `validator writes a proposal file holding an unsigned validator entry: the validator's
consensus public key (PUBKEY, hex or base64 as in priv_validator_key.json) gets voting power N,
which adds it, re-weights it, or with 0 removes it. Each admin then runs ` + "`ledger sign FILE`" + `;
` + "`ledger submit FILE`" + ` commits it once it carries the ledger's threshold of signatures.
Keep every validator's power such that those that run hold more than 2/3 of the total: an
added validator that is not running yet counts against it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := validatorKey(pubKey)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("power") {
				return badInput(errors.New("--power: give the validator's new voting power (0 removes it)"))
			}
			e, err := entry.NewValidator(pub, power, time.Now())
			if err != nil {
				return badInput(fmt.Errorf("--power %d: %s", power, entryReason(err)))
			}
			return writeProposal(cmd, e, out)
		},
	}
	c.Flags().StringVar(&pubKey, "pubkey", "", "the validator's Ed25519 consensus public key, hex or base64 (priv_validator_key.json pub_key.value)")
	c.Flags().Uint64Var(&power, "power", 0, "its new voting power; 0 removes it")
	c.Flags().StringVar(&out, "out", "", "proposal file to write")
	return c
}

func adminsProposalCmd() *cobra.Command {
	var add, remove []string
	var threshold uint64
	var out string
	c := &cobra.Command{
		Use:   "admins [--add PUBKEY]... [--remove PUBKEY]... --threshold M --out FILE",
		Short: "Write a proposal to change the admin set (add, remove, rotate keys) and its threshold, for the admins to sign",
		Long: `admins writes a proposal file holding an unsigned admins entry: the admin keys to add and
remove (hex Ed25519 public keys; ` + "`ledger keygen`" + ` makes a new one) and M, the signatures that
validator and admin-set changes need from the admin set that results. A rotation adds the new key
and removes the old one. The current admins sign it (` + "`ledger sign FILE`" + `), as many as the
current threshold; ` + "`ledger submit FILE`" + ` commits it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			adds, err := publicKeys("--add", add)
			if err != nil {
				return err
			}
			removes, err := publicKeys("--remove", remove)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("threshold") {
				return badInput(errors.New("--threshold: give M, the admin signatures changes need after this one (1 up to the resulting number of admins)"))
			}
			e, err := entry.NewAdmins(adds, removes, threshold, time.Now())
			if err != nil {
				return badInput(fmt.Errorf("--add/--remove/--threshold: %s", entryReason(err)))
			}
			return writeProposal(cmd, e, out)
		},
	}
	c.Flags().StringSliceVar(&add, "add", nil, "admin public key to add, hex (repeatable, or comma-separated)")
	c.Flags().StringSliceVar(&remove, "remove", nil, "admin public key to remove, hex (repeatable, or comma-separated)")
	c.Flags().Uint64Var(&threshold, "threshold", 0, "M of the admin set that results")
	c.Flags().StringVar(&out, "out", "", "proposal file to write")
	return c
}

// writeProposal writes the unsigned entry e as a new proposal file at out, with the ledger's
// chain id, admins and threshold, and says who must sign it.
func writeProposal(cmd *cobra.Command, e []byte, out string) error {
	if out == "" {
		return badInput(errors.New("--out: name the proposal file to write"))
	}
	if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
		return badInput(fmt.Errorf("--out %s: the file exists; make a new proposal in a new file", out))
	}
	_, l, err := ledgerClient(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	chainID, err := l.ChainID(ctx)
	if err != nil {
		return err
	}
	auth, err := l.Authority(ctx)
	if err != nil {
		return err
	}
	p, err := newProposal(e, chainID, auth)
	if err != nil {
		return err
	}
	b, err := p.encode()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return badInput(fmt.Errorf("--out %s: the file exists; make a new proposal in a new file", out))
	} else if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		return errors.Join(fmt.Errorf("--out: %w", err), f.Close())
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "proposal written to %s: %s\n", out, p.Description)
	fmt.Fprintf(cmd.OutOrStdout(), "it needs %d of the %d admins' signatures: each runs `anchorline ledger sign %s`, then `anchorline ledger submit %s`\n", p.Threshold, len(p.Admins), out, out)
	return nil
}

func signProposalCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "sign FILE",
		Short: "Add ledger.admin_key's signature to a proposal file, in place (no ledger needed)",
		Long: `sign checks the proposal (its entry, the signatures it has, that its description says what
the entry does), adds the signature of ledger.admin_key and rewrites the file. It reads nothing
from the ledger: the admins and threshold it checks against are those the proposal recorded when
it was written; ` + "`ledger submit`" + ` checks again against the ledger.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := readProposal(args[0])
			if err != nil {
				return err
			}
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			admin, err := stack.LoadAdminKey(cfg.Ledger.AdminKey)
			if err != nil {
				return badInput(err)
			}
			pub := reading.Ed25519Public(admin)
			if !slices.Contains(p.Admins, hex.EncodeToString(pub)) {
				return badInput(fmt.Errorf("ledger.admin_key %s: key %x is not one of the %d admins of proposal %s (chain %s at height %d)", cfg.Ledger.AdminKey, []byte(pub), len(p.Admins), args[0], p.ChainID, p.Height))
			}
			if slices.ContainsFunc(p.signers(), func(k ed25519.PublicKey) bool { return k.Equal(pub) }) {
				return badFile(kindProposal, args[0], fmt.Sprintf("admin %x signed it already", []byte(pub)))
			}
			if err := p.sign(admin); err != nil {
				return badFile(kindProposal, args[0], entryReason(err))
			}
			b, err := p.encode()
			if err != nil {
				return err
			}
			if err := replaceFile(args[0], b); err != nil {
				return err
			}
			n := len(p.signers())
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s by %x: %d of the %d signatures it needs\n", args[0], []byte(pub), n, p.Threshold)
			if uint64(n) >= p.Threshold {
				fmt.Fprintf(cmd.OutOrStdout(), "submit it: anchorline ledger submit %s\n", args[0])
			}
			return nil
		},
	}
}

func submitProposalCmd() *cobra.Command {
	var force bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "submit FILE [--wait D]",
		Short: "Commit a proposal file once it carries the ledger's threshold of admin signatures",
		Long: `submit checks the proposal against the ledger at ledger.rpc (its chain id, every signer a
current admin, at least the current threshold of them), commits its entry and waits for the
block that includes it. It refuses a proposal with too few signatures before sending anything,
saying how many it has and how many are needed; --force sends it anyway, to see the ledger's
own refusal.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := readProposal(args[0])
			if err != nil {
				return err
			}
			_, l, err := ledgerClient(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !force {
				if err := p.checkLedger(ctx, l, args[0]); err != nil {
					return err
				}
			}
			rc, err := submitEntry(ctx, l, p.entry, wait)
			if err != nil {
				return fmt.Errorf("proposal %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "committed %s at ledger height %d, log index %d: %s\n", args[0], rc.Height, rc.LogIndex, p.Description)
			if p.decoded.Validator != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "CometBFT applies the validator change from height %d\n", rc.Height+2)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "send it without checking the signatures against the ledger first (the ledger decides)")
	c.Flags().DurationVar(&wait, "wait", defaultSubmitWait, "how long to wait for the block that includes the entry")
	return c
}

// ledgerClient loads cmd's configuration and a client of the ledger at ledger.rpc.
func ledgerClient(cmd *cobra.Command) (config.Config, *ledger.Client, error) {
	cfg, log, err := load(cmd)
	if err != nil {
		return cfg, nil, err
	}
	l, err := remoteLedger(cfg, log)
	return cfg, l, err
}

// submitEntry commits e and waits for its block, at most wait. A refusal wraps
// ledger.ErrRejected with the ledger's reason (exit status 1); running out of time is
// exitIncomplete, since the entry may still be committed.
func submitEntry(ctx context.Context, l *ledger.Client, e []byte, wait time.Duration) (ledger.Receipt, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	rc, err := l.Submit(ctx, e)
	if errors.Is(err, context.DeadlineExceeded) {
		return rc, exitError{exitIncomplete, fmt.Errorf("not committed within --wait %s (%w); it may still be: see anchorline ledger authority", wait, err)}
	}
	return rc, err
}

// proposalFile is a proposal file (schemas/ledger.md, "proposal files").
type proposalFile struct {
	Format string `json:"format"`
	// Description says what the entry does; readProposal requires it to be the one the entry
	// gives, so that what a signer reads in the file is what the signature approves.
	Description string `json:"description"`
	ChainID     string `json:"chain_id"`
	// Height, Admins and Threshold are the ledger's when the proposal was written: sign checks
	// its key against them, submit checks again against the ledger.
	Height    uint64   `json:"height"`
	Admins    []string `json:"admins"`
	Threshold uint64   `json:"threshold"`
	// Entry is the validator or admins entry in hex, with the signatures it has so far.
	Entry string `json:"entry"`
}

// proposal is a checked proposal file with its entry decoded.
type proposal struct {
	proposalFile
	entry   []byte
	decoded entry.Entry
}

func newProposal(e []byte, chainID string, auth ledger.Authority) (*proposal, error) {
	dec, err := decodeProposalEntry(e)
	if err != nil {
		return nil, err
	}
	return &proposal{
		proposalFile: proposalFile{
			Format: proposalFormat, Description: describeChange(dec), ChainID: chainID,
			Height: auth.Height, Admins: auth.Admins, Threshold: auth.Threshold, Entry: hex.EncodeToString(e),
		},
		entry: e, decoded: dec,
	}, nil
}

// readProposal reads and checks the proposal file at path.
func readProposal(path string) (*proposal, error) {
	b, err := readInput(kindProposal, path)
	if err != nil {
		return nil, err
	}
	if reason := notA(b, kindProposal); reason != "" {
		return nil, badFile(kindProposal, path, reason)
	}
	var f proposalFile
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return nil, badFile(kindProposal, path, describeJSON(b, err))
	}
	p, reason := checkProposal(f)
	if reason != "" {
		return nil, badFile(kindProposal, path, reason)
	}
	return p, nil
}

// checkProposal checks a decoded proposal file, returning the reason it is not a valid one.
func checkProposal(f proposalFile) (*proposal, string) {
	switch {
	case f.Format != proposalFormat:
		return nil, fmt.Sprintf("format %q, want %q", f.Format, proposalFormat)
	case f.ChainID == "":
		return nil, "no chain_id"
	case len(f.Admins) == 0:
		return nil, "no admins"
	case f.Threshold < 1 || f.Threshold > uint64(len(f.Admins)):
		return nil, fmt.Sprintf("threshold %d, want 1 up to the %d admins", f.Threshold, len(f.Admins))
	}
	for _, a := range f.Admins {
		if k, err := hex.DecodeString(a); err != nil || len(k) != ed25519.PublicKeySize || hex.EncodeToString(k) != a {
			return nil, fmt.Sprintf("admin %q: want %d bytes of lower-case hex (an Ed25519 public key)", a, ed25519.PublicKeySize)
		}
	}
	e, err := hex.DecodeString(f.Entry)
	if err != nil || len(e) == 0 {
		return nil, "entry: want the entry's CBOR in hex"
	}
	dec, err := decodeProposalEntry(e)
	if err != nil {
		return nil, "entry: " + entryReason(err)
	}
	if want := describeChange(dec); f.Description != want {
		return nil, fmt.Sprintf("description %q does not say what its entry does (%q): was it edited?", f.Description, want)
	}
	return &proposal{proposalFile: f, entry: e, decoded: dec}, ""
}

// decodeProposalEntry decodes a validator or admins entry, with or without signatures. One
// with signatures is decoded by entry.Decode, which checks every signature; an unsigned one
// must be exactly what entry.NewValidator or entry.NewAdmins encodes from its fields.
func decodeProposalEntry(b []byte) (entry.Entry, error) {
	var head struct {
		Type entry.Type      `cbor:"type"`
		Sigs cbor.RawMessage `cbor:"sigs"`
	}
	if err := cbor.Unmarshal(b, &head); err != nil {
		return entry.Entry{}, fmt.Errorf("%w: not a CBOR map: %w", entry.ErrMalformed, err)
	}
	if head.Type != entry.TypeValidator && head.Type != entry.TypeAdmins {
		return entry.Entry{}, fmt.Errorf("%w: a %q entry, not a validator or admins change", entry.ErrMalformed, head.Type)
	}
	if head.Sigs != nil {
		return entry.Decode(b)
	}
	var again []byte
	var dec entry.Entry
	switch head.Type {
	case entry.TypeValidator:
		var v entry.Validator
		if err := cbor.Unmarshal(b, &v); err != nil {
			return entry.Entry{}, fmt.Errorf("%w: %w", entry.ErrMalformed, err)
		}
		e, err := entry.NewValidator(v.PubKey, v.Power, time.UnixMilli(int64(v.Time)))
		if err != nil {
			return entry.Entry{}, err
		}
		again, dec = e, entry.Entry{Type: head.Type, Validator: &v}
	default:
		var a entry.Admins
		if err := cbor.Unmarshal(b, &a); err != nil {
			return entry.Entry{}, fmt.Errorf("%w: %w", entry.ErrMalformed, err)
		}
		e, err := entry.NewAdmins(keys(a.Add), keys(a.Remove), a.Threshold, time.UnixMilli(int64(a.Time)))
		if err != nil {
			return entry.Entry{}, err
		}
		again, dec = e, entry.Entry{Type: head.Type, Admins: &a}
	}
	if !bytes.Equal(again, b) {
		return entry.Entry{}, fmt.Errorf("%w: not the deterministic encoding of a %s entry, or a field is missing or unknown", entry.ErrMalformed, head.Type)
	}
	return dec, nil
}

func keys(bs [][]byte) []ed25519.PublicKey {
	out := make([]ed25519.PublicKey, 0, len(bs))
	for _, b := range bs {
		out = append(out, b)
	}
	return out
}

// describeChange says in one line what a validator or admins entry does.
func describeChange(e entry.Entry) string {
	switch {
	case e.Validator != nil:
		v := e.Validator
		addr := cmted25519.PubKey(v.PubKey).Address()
		if v.Power == 0 {
			return fmt.Sprintf("remove validator %X (pub_key %x); proposed %s", []byte(addr), v.PubKey, proposedAt(v.Time))
		}
		return fmt.Sprintf("set the voting power of validator %X (pub_key %x) to %d, adding it if it is not one; proposed %s", []byte(addr), v.PubKey, v.Power, proposedAt(v.Time))
	case e.Admins != nil:
		a := e.Admins
		hexes := func(ks [][]byte) string {
			if len(ks) == 0 {
				return "none"
			}
			s := make([]string, len(ks))
			for i, k := range ks {
				s[i] = hex.EncodeToString(k)
			}
			return strings.Join(s, ", ")
		}
		return fmt.Sprintf("change the admins: add %s; remove %s; then %d admin signatures are needed; proposed %s", hexes(a.Add), hexes(a.Remove), a.Threshold, proposedAt(a.Time))
	}
	return string(e.Type)
}

func proposedAt(ms uint64) string {
	return time.UnixMilli(int64(ms)).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// signers are the admins who signed the proposal's entry.
func (p *proposal) signers() []ed25519.PublicKey { return p.decoded.Signers() }

// sign adds admin's signature to the entry.
func (p *proposal) sign(admin ed25519.PrivateKey) error {
	var e []byte
	var err error
	switch v, a := p.decoded.Validator, p.decoded.Admins; {
	case len(p.signers()) > 0:
		e, err = entry.Cosign(p.entry, admin)
	case v != nil:
		e, err = entry.NewValidator(v.PubKey, v.Power, time.UnixMilli(int64(v.Time)), admin)
	case a != nil:
		e, err = entry.NewAdmins(keys(a.Add), keys(a.Remove), a.Threshold, time.UnixMilli(int64(a.Time)), admin)
	}
	if err != nil {
		return err
	}
	dec, err := entry.Decode(e)
	if err != nil {
		return err
	}
	p.entry, p.decoded, p.Entry = e, dec, hex.EncodeToString(e)
	return nil
}

func (p *proposal) encode() ([]byte, error) {
	b, err := json.MarshalIndent(p.proposalFile, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// checkLedger checks the proposal against the ledger before it is sent: the chain, every
// signer a current admin, and at least the current threshold of them.
func (p *proposal) checkLedger(ctx context.Context, l *ledger.Client, path string) error {
	chainID, err := l.ChainID(ctx)
	if err != nil {
		return err
	}
	if chainID != p.ChainID {
		return badFile(kindProposal, path, fmt.Sprintf("is for chain %q, but the ledger at ledger.rpc is chain %q", p.ChainID, chainID))
	}
	auth, err := l.Authority(ctx)
	if err != nil {
		return err
	}
	signers := p.signers()
	for _, k := range signers {
		if !slices.Contains(auth.Admins, hex.EncodeToString(k)) {
			return badFile(kindProposal, path, fmt.Sprintf("signer %x is not an admin of the ledger now (height %d): the ledger would refuse it; make a new proposal", []byte(k), auth.Height))
		}
	}
	if uint64(len(signers)) < auth.Threshold {
		return badFile(kindProposal, path, fmt.Sprintf("has %d admin signature(s), the ledger needs %d (of its %d admins, at height %d): more admins must run anchorline ledger sign %s", len(signers), auth.Threshold, len(auth.Admins), auth.Height, path))
	}
	return nil
}

// replaceFile writes b to path through a temporary file beside it, so that a failure leaves
// the old file whole.
func replaceFile(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(b)
	if err := errors.Join(werr, tmp.Chmod(0o644), tmp.Close()); err != nil {
		return errors.Join(fmt.Errorf("write %s: %w", path, err), os.Remove(tmp.Name()))
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return errors.Join(fmt.Errorf("write %s: %w", path, err), os.Remove(tmp.Name()))
	}
	return nil
}

// parsePublicKey parses a hex Ed25519 public key named what.
func parsePublicKey(what, h string) (ed25519.PublicKey, error) {
	k, err := hex.DecodeString(h)
	switch {
	case err != nil:
		return nil, badInput(fmt.Errorf("%s %q: not hex", what, h))
	case len(k) != ed25519.PublicKeySize:
		return nil, badInput(fmt.Errorf("%s %q: %d bytes, want %d (an Ed25519 public key)", what, h, len(k), ed25519.PublicKeySize))
	}
	return k, nil
}

// publicKeys parses the hex Ed25519 public keys given to flag.
func publicKeys(flag string, hs []string) ([]ed25519.PublicKey, error) {
	out := make([]ed25519.PublicKey, 0, len(hs))
	for _, h := range hs {
		k, err := parsePublicKey(flag, strings.TrimSpace(h))
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// validatorKey parses --pubkey: a validator's Ed25519 consensus key in hex, or in base64 as
// CometBFT's priv_validator_key.json and /validators show it.
func validatorKey(s string) (ed25519.PublicKey, error) {
	if s == "" {
		return nil, badInput(errors.New("--pubkey: give the validator's Ed25519 consensus public key (hex, or base64 as in priv_validator_key.json)"))
	}
	if k, err := hex.DecodeString(s); err == nil && len(k) == ed25519.PublicKeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == ed25519.PublicKeySize {
		return k, nil
	}
	return nil, badInput(fmt.Errorf("--pubkey %q: want %d bytes in hex or base64 (an Ed25519 public key)", s, ed25519.PublicKeySize))
}

// entryReason is err's message without the sentinel's prefix, for one-line messages.
func entryReason(err error) string {
	msg := strings.TrimPrefix(err.Error(), entry.ErrMalformed.Error()+": ")
	return strings.TrimPrefix(msg, "entry: ") // entry.ErrBadSignature's, keeping "bad signature"
}
