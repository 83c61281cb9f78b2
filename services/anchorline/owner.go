package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/access"
)

func ownerCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "owner",
		Short: "Bind devices to their owners' keys on the ledger (the owner and ledger.admin_key sign; schemas/ledger.md \"owner\")",
	}
	c.AddCommand(keygenCmd("owner"), ownerOpCmd(entry.OpBind), ownerOpCmd(entry.OpRelease), ownerShowCmd())
	return c
}

func consentCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "consent",
		Short: "Grant or withdraw an audience's access to a device's data, signed by the device's owner (schemas/ledger.md \"consent\")",
	}
	c.AddCommand(consentOpCmd(entry.OpGrant), consentOpCmd(entry.OpWithdraw), consentListCmd(), consentUserCmd())
	return c
}

// ownerKeyFlag reads the owner's key file named by --key.
func ownerKeyFlag(path string) (reading.PrivateKey, error) {
	if path == "" {
		return reading.PrivateKey{}, badInput(errors.New("--key: name the owner's key file (anchorline owner keygen writes one)"))
	}
	_, k, err := reading.ReadKeyFile(path)
	if err != nil {
		return reading.PrivateKey{}, badInput(fmt.Errorf("--key %s: %w", path, err))
	}
	return k, nil
}

func ownerOpCmd(op string) *cobra.Command {
	var keyFile string
	var wait time.Duration
	short := "Bind a registered device to the owner whose key file --key names, from the block that includes the entry"
	if op == entry.OpRelease {
		short = "Release a device from its owner (--key: the owner's key file); consent given under the binding stops counting"
	}
	c := &cobra.Command{
		Use:   op + " DEVICE --key OWNER_KEYFILE",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev := args[0]
			if !reading.ValidDeviceID(dev) {
				return badInput(fmt.Errorf("device id %q: must match %s", dev, deviceIDRule))
			}
			owner, err := ownerKeyFlag(keyFile)
			if err != nil {
				return err
			}
			_, l, admin, err := adminLedger(cmd)
			if err != nil {
				return err
			}
			e, err := entry.NewOwner(admin, owner, op, dev, time.Now())
			if err != nil {
				return badInput(err)
			}
			rc, err := submitEntry(cmd.Context(), l, e, wait)
			if err != nil {
				return fmt.Errorf("owner %s of %s: %w", op, dev, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "owner %s: device %s, owner key %s (%s), at ledger height %d, log index %d\n", op, dev, owner.Public(), owner.Alg(), rc.Height, rc.LogIndex)
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "the owner's key file")
	c.Flags().DurationVar(&wait, "wait", defaultSubmitWait, "how long to wait for the block that includes the entry")
	return c
}

// ownerView is how owner show prints a device's owner record.
type ownerView struct {
	Device   string `json:"device"`
	Status   string `json:"status"`
	Alg      string `json:"alg"`
	Key      string `json:"key"`
	Since    uint64 `json:"since"`     // the block of the last owner entry
	LogIndex uint64 `json:"log_index"` // its log index
	Height   uint64 `json:"height"`    // the height the record and its proof are of
	Proof    string `json:"smt_proof"` // its membership proof in the owners tree at Height
	Root     string `json:"owners_root"`
	State    string `json:"state_root"`
}

func ownerShowCmd() *cobra.Command {
	var height int64
	c := &cobra.Command{
		Use:   "show DEVICE [--height H]",
		Short: "Print a device's owner record at the latest height or at --height, with its proof, as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, l, err := ledgerClient(cmd)
			if err != nil {
				return err
			}
			r, p, err := l.Owner(cmd.Context(), args[0], height)
			if errors.Is(err, lookup.ErrNotFound) {
				return fmt.Errorf("device %s has had no owner on the ledger by height %d (0: the latest): %w", args[0], height, err)
			}
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(ownerView{Device: r.Dev, Status: r.Status, Alg: r.Alg, Key: hex.EncodeToString(r.Key), Since: r.Height, LogIndex: r.Index,
				Height: p.Height, Proof: hex.EncodeToString(p.SMTProof), Root: p.Root.String(), State: p.StateRoot.String()})
		},
	}
	c.Flags().Int64Var(&height, "height", 0, "the ledger height (0: the latest)")
	return c
}

func consentOpCmd(op string) *cobra.Command {
	var keyFile string
	var wait time.Duration
	short := "Let AUDIENCE read DEVICE's data from the block that includes the entry (--key: the device owner's key file)"
	if op == entry.OpWithdraw {
		short = "Stop AUDIENCE reading DEVICE's data from the block that includes the entry (--key: the device owner's key file)"
	}
	c := &cobra.Command{
		Use:   op + " DEVICE AUDIENCE --key OWNER_KEYFILE",
		Short: short,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev, aud := args[0], args[1]
			if !reading.ValidDeviceID(dev) {
				return badInput(fmt.Errorf("device id %q: must match %s", dev, deviceIDRule))
			}
			if !entry.ValidAudience(aud) {
				return badInput(fmt.Errorf("audience %q: want 1 to 32 of a-z 0-9 _, starting with a letter", aud))
			}
			owner, err := ownerKeyFlag(keyFile)
			if err != nil {
				return err
			}
			_, l, err := ledgerClient(cmd)
			if err != nil {
				return err
			}
			e, err := entry.NewConsent(owner, op, dev, aud, time.Now())
			if err != nil {
				return badInput(err)
			}
			rc, err := submitEntry(cmd.Context(), l, e, wait)
			if err != nil {
				return fmt.Errorf("consent %s of %s for %s: %w", op, dev, aud, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "consent %s: device %s, audience %s, at ledger height %d, log index %d\n", op, dev, aud, rc.Height, rc.LogIndex)
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "the device owner's key file")
	c.Flags().DurationVar(&wait, "wait", defaultSubmitWait, "how long to wait for the block that includes the entry")
	return c
}

func consentListCmd() *cobra.Command {
	var dev string
	var height int64
	var asJSON bool
	c := &cobra.Command{
		Use:   "list [--device D] [--height H] [--json]",
		Short: "List the consents in force (granted by the device's current owner) at the latest height or at --height",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, l, err := ledgerClient(cmd)
			if err != nil {
				return err
			}
			cs, err := l.Consents(cmd.Context(), dev, height)
			if err != nil {
				return err
			}
			grants, err := cs.EffectiveGrants()
			if err != nil {
				return err
			}
			if asJSON {
				type grant struct {
					Device   string `json:"device"`
					Audience string `json:"audience"`
					Since    uint64 `json:"since"`
				}
				out := make([]grant, 0, len(grants))
				for _, g := range grants {
					out = append(out, grant{g.Dev, g.Audience, g.Height})
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"height": cs.Height, "grants": out})
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "DEVICE\tAUDIENCE\tSINCE\n")
			for _, g := range grants {
				fmt.Fprintf(w, "%s\t%s\t%d\n", g.Dev, g.Audience, g.Height)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d consents in force at ledger height %d\n", len(grants), cs.Height)
			return nil
		},
	}
	c.Flags().StringVar(&dev, "device", "", "only this device's consents")
	c.Flags().Int64Var(&height, "height", 0, "the ledger height (0: the latest)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// parseRange parses "FROM..TO" of unsigned integers.
func parseRange(flag, s string) (uint64, uint64, error) {
	a, b, ok := strings.Cut(s, "..")
	from, err1 := strconv.ParseUint(a, 10, 64)
	to, err2 := strconv.ParseUint(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || from > to {
		return 0, 0, badInput(fmt.Errorf("%s %q: want FROM..TO, two unsigned integers with FROM <= TO (both included)", flag, s))
	}
	return from, to, nil
}

func eraseCmd() *cobra.Command {
	var keyFile, seqs, ts, reason string
	var wait time.Duration
	c := &cobra.Command{
		Use:   "erase DEVICE (--seq FROM..TO | --ts FROM_MS..TO_MS) (--key OWNER_KEYFILE | --reason TEXT)",
		Short: "Ask for the raw bytes and metric values of a device's readings in a range to be erased, keeping their leaves (schemas/ledger.md \"erase\")",
		Long: `erase commits an erase entry signed by the device's owner (--key), or by ledger.admin_key with a
reason (--reason, without --key). Every Anchorline database following the ledger then removes
the readings' bytes and metric values, rebuilds the rollups of the hours concerned, deletes the
rule events quoting them and the messages left in the READINGS stream; their leaves, batches and
anchors stay, so the rest stays provable. anchorline status shows the erasures pending.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev := args[0]
			if !reading.ValidDeviceID(dev) {
				return badInput(fmt.Errorf("device id %q: must match %s", dev, deviceIDRule))
			}
			by, span := entry.EraseBySeq, seqs
			switch {
			case (seqs == "") == (ts == ""):
				return badInput(errors.New("give the range with one of --seq FROM..TO (device seqs) and --ts FROM..TO (device time, Unix ms)"))
			case ts != "":
				by, span = entry.EraseByTS, ts
			}
			from, to, err := parseRange("--"+by, span)
			if err != nil {
				return err
			}
			var e []byte
			var l *ledger.Client
			switch {
			case keyFile != "":
				owner, err := ownerKeyFlag(keyFile)
				if err != nil {
					return err
				}
				if _, l, err = ledgerClient(cmd); err != nil {
					return err
				}
				if e, err = entry.NewEraseByOwner(owner, dev, by, from, to, reason, time.Now()); err != nil {
					return badInput(err)
				}
			case reason != "":
				_, cl, admin, err := adminLedger(cmd)
				if err != nil {
					return err
				}
				l = cl
				if e, err = entry.NewEraseByAdmin(admin, dev, by, from, to, reason, time.Now()); err != nil {
					return badInput(err)
				}
			default:
				return badInput(errors.New("sign with the owner's key file (--key), or with ledger.admin_key and a reason (--reason TEXT)"))
			}
			rc, err := submitEntry(cmd.Context(), l, e, wait)
			if err != nil {
				return fmt.Errorf("erase of %s: %w", dev, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "erase of %s, %s %d..%d, at ledger height %d, log index %d: carried out within seconds (anchorline status shows it pending until then)\n", dev, by, from, to, rc.Height, rc.LogIndex)
			return nil
		},
	}
	c.Flags().StringVar(&seqs, "seq", "", "the device seqs to erase, FROM..TO (both included)")
	c.Flags().StringVar(&ts, "ts", "", "the device time to erase, FROM..TO in Unix ms (both included)")
	c.Flags().StringVar(&keyFile, "key", "", "the device owner's key file")
	c.Flags().StringVar(&reason, "reason", "", "why (required when ledger.admin_key signs, without --key)")
	c.Flags().DurationVar(&wait, "wait", defaultSubmitWait, "how long to wait for the block that includes the entry")
	return c
}

func consentUserCmd() *cobra.Command {
	var user, passHash, out string
	c := &cobra.Command{
		Use:   "user AUDIENCE --user NAME --password-sha256 HEX [--out FILE]",
		Short: "Print (or write) the ClickHouse users.d file of an analyst who reads AUDIENCE's consented rows, and nothing else",
		Long: `The file gives the user the audience's database (clickhouse.database + "_aud_" + AUDIENCE) and
no other, read only, with prefer_localhost_replica 0 (the audience's tables read the consented
views through clickhouse.consent_cluster). Put it in the servers' users.d directory: ClickHouse
loads it within seconds.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			aud := args[0]
			if !entry.ValidAudience(aud) || aud == entry.AudienceOperator || aud == entry.AudienceCollect {
				return badInput(fmt.Errorf("audience %q: want 1 to 32 of a-z 0-9 _, starting with a letter, and not %s or %s", aud, entry.AudienceOperator, entry.AudienceCollect))
			}
			if user == "" || strings.ContainsAny(user, "<>&\"' ") {
				return badInput(errors.New("--user: name the ClickHouse user (no spaces or XML characters)"))
			}
			if h, err := hex.DecodeString(passHash); err != nil || len(h) != 32 {
				return badInput(errors.New("--password-sha256: the SHA-256 of the password, 64 hex characters (printf %s PASSWORD | sha256sum)"))
			}
			xml := access.UserXML(cfg.ClickHouse.Database, aud, user, passHash)
			if out == "" {
				_, err := fmt.Fprint(cmd.OutOrStdout(), xml)
				return err
			}
			if err := os.WriteFile(out, []byte(xml), 0o640); err != nil {
				return badInput(fmt.Errorf("--out: %w", err))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ClickHouse user %s of audience %s written to %s\n", user, aud, out)
			return nil
		},
	}
	c.Flags().StringVar(&user, "user", "", "the ClickHouse user name")
	c.Flags().StringVar(&passHash, "password-sha256", "", "the SHA-256 of the user's password, hex")
	c.Flags().StringVar(&out, "out", "", "file to write (default: print)")
	return c
}
