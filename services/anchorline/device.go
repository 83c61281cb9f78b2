package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/simulate"
	"github.com/anchorline/anchorline/services/stack"
)

func deviceCmd() *cobra.Command {
	c := &cobra.Command{Use: "device", Short: "Device keys, registration and publishing"}
	c.AddCommand(keygenCmd(), registerCmd(), revokeCmd(), publishCmd(), simulateCmd())
	return c
}

func keygenCmd() *cobra.Command {
	var id, alg, out string
	c := &cobra.Command{
		Use:   "keygen --id ID [--alg ed25519|es256] --out KEYFILE",
		Short: "Make a device key and write it to a key file (mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := reading.ParseAlg(alg)
			if err != nil {
				return fmt.Errorf("--alg: %w", err)
			}
			if out == "" {
				return fmt.Errorf("--out: name the key file to write")
			}
			k, err := reading.GenerateKey(a)
			if err != nil {
				return err
			}
			f, err := reading.NewKeyFile(id, k)
			if err != nil {
				return fmt.Errorf("--id: %w", err)
			}
			if err := reading.WriteKeyFile(out, f); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "device %s (%s) public key %s written to %s\n", f.ID, f.Alg, f.PublicKey, out)
			return nil
		},
	}
	c.Flags().StringVar(&id, "id", "", "device id (^[A-Za-z0-9_-]{1,64}$)")
	c.Flags().StringVar(&alg, "alg", "ed25519", "ed25519 or es256")
	c.Flags().StringVar(&out, "out", "", "key file to write")
	return c
}

func registerCmd() *cobra.Command {
	var id, alg, pubHex string
	c := &cobra.Command{
		Use:   "register (KEYFILE | --id ID --alg ed25519|es256 --pubkey HEX)",
		Short: "Put a device's public key on the ledger (signed with the admin key)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			var pub reading.PublicKey
			switch {
			case len(args) == 1 && (id != "" || pubHex != ""):
				return errors.New("give either a KEYFILE or --id/--alg/--pubkey, not both")
			case len(args) == 1:
				f, k, err := reading.ReadKeyFile(args[0])
				if err != nil {
					return err
				}
				id, pub = f.ID, k.Public()
			default:
				if id == "" || pubHex == "" {
					return errors.New("give a KEYFILE, or --id, --alg and --pubkey (hex) for a key made elsewhere")
				}
				a, err := reading.ParseAlg(alg)
				if err != nil {
					return fmt.Errorf("--alg: %w", err)
				}
				raw, err := hex.DecodeString(pubHex)
				if err != nil {
					return fmt.Errorf("--pubkey: not hex: %w", err)
				}
				if pub, err = reading.ParsePublicKey(a, raw); err != nil {
					return fmt.Errorf("--pubkey: %w", err)
				}
				if !reading.ValidDeviceID(id) {
					return fmt.Errorf("--id %q: must match ^[A-Za-z0-9_-]{1,64}$", id)
				}
			}
			admin, err := stack.LoadAdminKey(cfg.Ledger.AdminKey)
			if err != nil {
				return err
			}
			inc, err := registerDevice(cmd.Context(), api.NewClient(apiURL(cfg)), admin, id, pub)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registered %s (%s) at ledger height %d, log index %d\n", id, pub.Alg, inc.Height, inc.LogIndex)
			return nil
		},
	}
	c.Flags().StringVar(&id, "id", "", "device id, for a key made elsewhere")
	c.Flags().StringVar(&alg, "alg", "ed25519", "ed25519 or es256, with --pubkey")
	c.Flags().StringVar(&pubHex, "pubkey", "", "public key in hex (ed25519: 32 bytes; es256: SEC1 65 or 33 bytes)")
	return c
}

func registerDevice(ctx context.Context, c *api.Client, admin ed25519.PrivateKey, id string, pub reading.PublicKey) (api.Inclusion, error) {
	ev, err := entry.NewRegister(admin, id, pub, time.Now())
	if err != nil {
		return api.Inclusion{}, err
	}
	return c.SubmitDeviceEvent(ctx, ev)
}

func revokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a device's key on the ledger (signed with the admin key)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			admin, err := stack.LoadAdminKey(cfg.Ledger.AdminKey)
			if err != nil {
				return err
			}
			ev, err := entry.NewRevoke(admin, args[0], time.Now())
			if err != nil {
				return err
			}
			inc, err := api.NewClient(apiURL(cfg)).SubmitDeviceEvent(cmd.Context(), ev)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s at ledger height %d, log index %d\n", args[0], inc.Height, inc.LogIndex)
			return nil
		},
	}
}

// deviceState is what `device publish` remembers between runs, beside the key file, so that
// seq keeps increasing and prev chains the readings.
type deviceState struct {
	Seq  uint64 `json:"seq"`
	Prev string `json:"prev"`
}

func publishCmd() *cobra.Command {
	var metrics, tags []string
	c := &cobra.Command{
		Use:   "publish KEYFILE --metric name=value [--metric ...] [--tag k=v]",
		Short: "Sign one reading and publish it to JetStream",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			f, key, err := reading.ReadKeyFile(args[0])
			if err != nil {
				return err
			}
			ms, err := parseMetrics(metrics)
			if err != nil {
				return err
			}
			tg, err := parseTags(tags)
			if err != nil {
				return err
			}
			statePath := args[0] + ".state"
			d := reading.Device{ID: f.ID, Key: key}
			if b, err := os.ReadFile(statePath); err == nil {
				var st deviceState
				if err := json.Unmarshal(b, &st); err != nil {
					return fmt.Errorf("state file %s: %w", statePath, err)
				}
				prev, err := hex.DecodeString(st.Prev)
				if err != nil || (len(prev) != 0 && len(prev) != 32) {
					return fmt.Errorf("state file %s: prev must be 32 bytes of hex", statePath)
				}
				d.Seq = st.Seq
				copy(d.Prev[:], prev)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("state file: %w", err)
			}
			raw, err := d.Next(ms, tg)
			if err != nil {
				return err
			}
			nc, err := nats.Connect(cfg.NATS.URL, nats.Name("anchorline device publish"))
			if err != nil {
				return fmt.Errorf("nats %s: %w", cfg.NATS.URL, err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			msg := &nats.Msg{Subject: reading.Subject(d.ID), Data: raw, Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(d.ID, d.Seq))
			ack, err := js.PublishMsg(cmd.Context(), msg)
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			st, _ := json.Marshal(deviceState{Seq: d.Seq, Prev: hex.EncodeToString(d.Prev[:])})
			if err := os.WriteFile(statePath, st, 0o600); err != nil {
				return fmt.Errorf("state file: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s seq %d (%d bytes) as stream sequence %d\n", d.ID, d.Seq, len(raw), ack.Sequence)
			return nil
		},
	}
	c.Flags().StringArrayVar(&metrics, "metric", nil, "metric name=value (repeatable)")
	c.Flags().StringArrayVar(&tags, "tag", nil, "tag key=value (repeatable)")
	return c
}

func parseMetrics(in []string) ([]reading.Metric, error) {
	if len(in) == 0 {
		return nil, errors.New("--metric: give at least one, like --metric temp=21.5")
	}
	out := make([]reading.Metric, 0, len(in))
	for _, s := range in {
		name, val, ok := strings.Cut(s, "=")
		f, err := strconv.ParseFloat(val, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("--metric %q: want name=number, like temp=21.5", s)
		}
		out = append(out, reading.Metric{Name: name, Value: f})
	}
	return out, nil
}

func parseTags(in []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range in {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--tag %q: want key=value", s)
		}
		out[k] = v
	}
	return out, nil
}

func simulateCmd() *cobra.Command {
	var sc simulate.Config
	var rate, alg string
	c := &cobra.Command{
		Use:   "simulate --devices N --rate R/s --duration D",
		Short: "Register N simulated devices and publish signed readings at a fixed rate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			r, err := strconv.ParseFloat(strings.TrimSuffix(rate, "/s"), 64)
			if err != nil {
				return fmt.Errorf("--rate %q: want readings per second, like 200/s", rate)
			}
			sc.Rate = r
			switch alg {
			case "mixed":
			default:
				a, err := reading.ParseAlg(alg)
				if err != nil {
					return fmt.Errorf("--alg: %w (or mixed)", err)
				}
				sc.Algs = []reading.Alg{a}
			}
			admin, err := stack.LoadAdminKey(cfg.Ledger.AdminKey)
			if err != nil {
				return err
			}
			client := api.NewClient(apiURL(cfg))
			sc.Register = func(ctx context.Context, id string, pub reading.PublicKey) error {
				_, err := registerDevice(ctx, client, admin, id, pub)
				return err
			}
			sc.Progress = cmd.ErrOrStderr()
			nc, err := nats.Connect(cfg.NATS.URL, nats.Name("anchorline device simulate"))
			if err != nil {
				return fmt.Errorf("nats %s: %w", cfg.NATS.URL, err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "registering %d devices...\n", sc.Devices)
			res, err := simulate.Run(cmd.Context(), js, sc)
			fmt.Fprintln(cmd.OutOrStdout(), res)
			for _, d := range res.Devices {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s  %-7s  seq 1..%d\n", d.ID, d.Alg, d.LastSeq)
			}
			return err
		},
	}
	c.Flags().IntVar(&sc.Devices, "devices", 5, "number of simulated devices")
	c.Flags().StringVar(&rate, "rate", "100/s", "readings per second over all devices")
	c.Flags().DurationVar(&sc.Duration, "duration", 10*time.Second, "how long to publish")
	c.Flags().StringVar(&sc.Prefix, "prefix", "sim", "device id prefix")
	c.Flags().StringVar(&alg, "alg", "mixed", "ed25519, es256 or mixed")
	return c
}
