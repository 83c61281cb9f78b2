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
	"github.com/anchorline/anchorline/schemas/reading/connect"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/simulate"
	"github.com/anchorline/anchorline/services/stack"
)

func deviceCmd() *cobra.Command {
	c := &cobra.Command{Use: "device", Short: "Device keys, registration and publishing"}
	c.AddCommand(keygenCmd("device"), registerCmd(), revokeCmd(), publishCmd(), simulateCmd())
	return c
}

// keygenCmd makes a device's or an owner's key (what): both are key files of reading.KeyFile.
func keygenCmd(what string) *cobra.Command {
	var id, alg, out string
	c := &cobra.Command{
		Use:   "keygen --id ID [--alg ed25519|es256] --out KEYFILE",
		Short: "Make " + map[string]string{"device": "a device", "owner": "an owner's"}[what] + " key and write it to a key file (mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := reading.ParseAlg(alg)
			if err != nil {
				return badInput(fmt.Errorf("--alg %q: want ed25519 or es256", alg))
			}
			if !reading.ValidDeviceID(id) {
				return badInput(fmt.Errorf("--id %q: must match %s", id, deviceIDRule))
			}
			if out == "" {
				return badInput(errors.New("--out: name the key file to write"))
			}
			k, err := reading.GenerateKey(a)
			if err != nil {
				return err
			}
			f, err := reading.NewKeyFile(id, k)
			if err != nil {
				return err
			}
			if err := reading.WriteKeyFile(out, f); errors.Is(err, fs.ErrExist) {
				return badInput(fmt.Errorf("--out %s: the file exists; keygen does not overwrite a key", out))
			} else if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s) public key %s written to %s\n", what, f.ID, f.Alg, f.PublicKey, out)
			return nil
		},
	}
	c.Flags().StringVar(&id, "id", "", what+" id ("+deviceIDRule+")")
	c.Flags().StringVar(&alg, "alg", "ed25519", "ed25519 or es256")
	c.Flags().StringVar(&out, "out", "", "key file to write")
	return c
}

func registerCmd() *cobra.Command {
	var id, alg, pubHex string
	var optIn bool
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
				return badInput(errors.New("give either a KEYFILE or --id/--alg/--pubkey, not both"))
			case len(args) == 1:
				f, k, err := readKeyFile(args[0])
				if err != nil {
					return err
				}
				id, pub = f.ID, k.Public()
			default:
				if pub, err = externalKey(id, alg, pubHex); err != nil {
					return err
				}
			}
			admin, err := stack.LoadAdminKey(cfg.Ledger.AdminKey)
			if err != nil {
				return badInput(err)
			}
			client, err := apiClient(cfg)
			if err != nil {
				return err
			}
			register := entry.NewRegister
			if optIn {
				register = entry.NewRegisterOptIn
			}
			ev, err := register(admin, id, pub, time.Now())
			if err != nil {
				return badInput(err)
			}
			inc, err := client.SubmitDeviceEvent(cmd.Context(), ev)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registered %s (%s) at ledger height %d, log index %d\n", id, pub.Alg, inc.Height, inc.LogIndex)
			if optIn {
				fmt.Fprintf(cmd.OutOrStdout(), "nothing of %s is stored until its owner consents to collection: anchorline owner bind %s --key OWNER.key, then anchorline consent grant %s %s --key OWNER.key\n", id, id, id, entry.AudienceCollect)
			}
			return nil
		},
	}
	c.Flags().StringVar(&id, "id", "", "device id, for a key made elsewhere")
	c.Flags().StringVar(&alg, "alg", "ed25519", "ed25519 or es256, with --pubkey")
	c.Flags().StringVar(&pubHex, "pubkey", "", "public key in hex (ed25519: 32 bytes; es256: SEC1 65 or 33 bytes)")
	c.Flags().BoolVar(&optIn, "require-consent", false, "store nothing of the device until its owner consents to collection (readings before are rejected as no_consent, keeping only their leaf)")
	return c
}

// externalKey is the public key of a device whose key was made elsewhere, from register's
// --id, --alg and --pubkey.
func externalKey(id, alg, pubHex string) (reading.PublicKey, error) {
	if id == "" || pubHex == "" {
		return reading.PublicKey{}, badInput(errors.New("give a KEYFILE, or --id, --alg and --pubkey (hex) for a key made elsewhere"))
	}
	if !reading.ValidDeviceID(id) {
		return reading.PublicKey{}, badInput(fmt.Errorf("--id %q: must match %s", id, deviceIDRule))
	}
	a, err := reading.ParseAlg(alg)
	if err != nil {
		return reading.PublicKey{}, badInput(fmt.Errorf("--alg %q: want ed25519 or es256", alg))
	}
	raw, err := hex.DecodeString(pubHex)
	if err != nil {
		return reading.PublicKey{}, badInput(fmt.Errorf("--pubkey: not hex: %w", err))
	}
	pub, err := reading.ParsePublicKey(a, raw)
	if err != nil {
		return reading.PublicKey{}, badInput(fmt.Errorf("--pubkey: %w", err))
	}
	return pub, nil
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
			if !reading.ValidDeviceID(args[0]) {
				return badInput(fmt.Errorf("device id %q: must match %s", args[0], deviceIDRule))
			}
			admin, err := stack.LoadAdminKey(cfg.Ledger.AdminKey)
			if err != nil {
				return badInput(err)
			}
			ev, err := entry.NewRevoke(admin, args[0], time.Now())
			if err != nil {
				return err
			}
			client, err := apiClient(cfg)
			if err != nil {
				return err
			}
			inc, err := client.SubmitDeviceEvent(cmd.Context(), ev)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s at ledger height %d, log index %d\n", args[0], inc.Height, inc.LogIndex)
			return nil
		},
	}
}

// deviceOptions are the options a device connects to NATS with: TLS trusting tls.ca, and its
// identity (its id and a connect proof by its key).
func deviceOptions(cfg config.Config, id string, key reading.PrivateKey) ([]nats.Option, error) {
	opts, err := stack.NATSTLS(cfg)
	if err != nil {
		return nil, badInput(err)
	}
	ident, err := connect.Options(id, key)
	if err != nil {
		return nil, err
	}
	return append(opts, ident...), nil
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
			f, key, err := readKeyFile(args[0])
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
			if d.Seq, d.Prev, err = readState(statePath); err != nil {
				return err
			}
			raw, err := d.Next(ms, tg)
			if errors.Is(err, reading.ErrBadPayload) {
				return badInput(fmt.Errorf("--metric/--tag: %w", err))
			} else if err != nil {
				return err
			}
			// The device connects as itself: the broker lets it in on its registered key and
			// lets it publish on its own subject only.
			opts, err := deviceOptions(cfg, d.ID, key)
			if err != nil {
				return err
			}
			nc, err := nats.Connect(cfg.NATS.URL, append(opts, nats.Name("anchorline device publish"))...)
			if errors.Is(err, nats.ErrAuthorization) {
				return fmt.Errorf("nats %s: the broker refused device %s: %w (is it registered with this key, and not revoked? GET /v1/devices/%s shows its record)", cfg.NATS.URL, d.ID, err, d.ID)
			} else if err != nil {
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

// readState reads the state file beside a key file; a missing one is a device's first run.
func readState(path string) (seq uint64, prev [32]byte, err error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return 0, prev, nil
	}
	b, err := readInput(kindState, path)
	if err != nil {
		return 0, prev, err
	}
	var st deviceState
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, prev, badFile(kindState, path, describeJSON(b, err)+" (delete it only if no reading of this device was ever published)")
	}
	p, err := hex.DecodeString(st.Prev)
	if err != nil || (len(p) != 0 && len(p) != len(prev)) {
		return 0, prev, badFile(kindState, path, "prev must be 32 bytes of hex")
	}
	copy(prev[:], p)
	return st.Seq, prev, nil
}

func parseMetrics(in []string) ([]reading.Metric, error) {
	if len(in) == 0 {
		return nil, badInput(errors.New("--metric: give at least one, like --metric temp=21.5"))
	}
	out := make([]reading.Metric, 0, len(in))
	for _, s := range in {
		name, val, ok := strings.Cut(s, "=")
		f, err := strconv.ParseFloat(val, 64)
		if !ok || name == "" || err != nil {
			return nil, badInput(fmt.Errorf("--metric %q: want name=number, like temp=21.5", s))
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
			return nil, badInput(fmt.Errorf("--tag %q: want key=value, like site=lab", s))
		}
		out[k] = v
	}
	return out, nil
}

func simulateCmd() *cobra.Command {
	var sc simulate.Config
	var rate, alg, as string
	c := &cobra.Command{
		Use:   "simulate --devices N --rate R/s --duration D [--as devices|simulator]",
		Short: "Register N simulated devices and publish signed readings at a fixed rate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			r, err := strconv.ParseFloat(strings.TrimSuffix(rate, "/s"), 64)
			if err != nil {
				return badInput(fmt.Errorf("--rate %q: want readings per second, like 200/s", rate))
			}
			sc.Rate = r
			switch alg {
			case "mixed":
			default:
				a, err := reading.ParseAlg(alg)
				if err != nil {
					return badInput(fmt.Errorf("--alg %q: want ed25519, es256 or mixed", alg))
				}
				sc.Algs = []reading.Alg{a}
			}
			if err := sc.Validate(); err != nil {
				return badInput(err)
			}
			admin, err := stack.LoadAdminKey(cfg.Ledger.AdminKey)
			if err != nil {
				return badInput(err)
			}
			client, err := apiClient(cfg)
			if err != nil {
				return err
			}
			sc.Register = func(ctx context.Context, id string, pub reading.PublicKey) error {
				_, err := registerDevice(ctx, client, admin, id, pub)
				return err
			}
			sc.Progress = cmd.ErrOrStderr()
			var js jetstream.JetStream
			switch as {
			case "devices":
				// Each device connects as itself, as a real one does: the broker checks its key
				// against the registry and lets it publish on its own subject only.
				var conns []*nats.Conn
				defer func() {
					for _, nc := range conns {
						nc.Close()
					}
				}()
				sc.Connect = func(ctx context.Context, id string, key reading.PrivateKey) (jetstream.JetStream, error) {
					opts, err := deviceOptions(cfg, id, key)
					if err != nil {
						return nil, err
					}
					nc, err := nats.Connect(cfg.NATS.URL, append(opts, nats.Name("anchorline device simulate "+id))...)
					if err != nil {
						return nil, fmt.Errorf("nats %s: %w", cfg.NATS.URL, err)
					}
					conns = append(conns, nc)
					return jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
				}
			case "simulator":
				// A load generator publishes for every device on one connection: the simulator
				// role's credentials.
				creds, err := stack.NATSOptions(cfg, auth.RoleSimulator)
				if err != nil {
					return badInput(err)
				}
				nc, err := nats.Connect(cfg.NATS.URL, append(creds, nats.Name("anchorline device simulate"))...)
				if err != nil {
					return fmt.Errorf("nats %s: %w (--as simulator connects with nats.credentials, default the simulator seed under nats.auth_dir)", cfg.NATS.URL, err)
				}
				defer nc.Close()
				if js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
					return err
				}
			default:
				return badInput(fmt.Errorf("--as %q: want devices (each connects with its own key) or simulator (one connection with the simulator credentials)", as))
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
	c.Flags().StringVar(&as, "as", "devices", "devices: each connects as itself with its own key; simulator: one connection with the simulator role's credentials")
	return c
}
