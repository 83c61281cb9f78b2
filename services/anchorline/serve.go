package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
)

func devCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "Everything in one process: embedded NATS, embedded ledger, ingest, anchoring, HTTP API",
		Long: `dev runs the whole pipeline in one process. State (NATS streams, ledger, admin key, and
the private ClickHouse with --clickhouse.embedded) lives under data_dir; Ctrl-C stops cleanly and
a restart on the same data_dir continues where it stopped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			return stack.RunDev(cmd.Context(), cfg, log)
		},
	}
}

func migrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ClickHouse schema (idempotent; versions in schema_migrations)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ch, err := stack.OpenClickHouse(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer ch.Close()
			applied, err := clickhouse.Schema{Database: cfg.ClickHouse.Database, Cluster: cfg.ClickHouse.Cluster}.Migrate(ctx, ch)
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "database %s is up to date\n", cfg.ClickHouse.Database)
			}
			for _, v := range applied {
				fmt.Fprintf(cmd.OutOrStdout(), "applied %s to database %s\n", v, cfg.ClickHouse.Database)
			}
			return nil
		},
	}
}

// remoteLedger is a ledger client over the RPC addresses of ledger.rpc: one node's directly,
// several validators' through a ledger.Failover that uses whichever answers.
func remoteLedger(cfg config.Config, log *slog.Logger) (*ledger.Client, error) {
	addrs := cfg.Ledger.RPCAddrs()
	tlsCfg, err := stack.ClientTLS(cfg) // https to the ledger's RPC when there is a CA
	if err != nil {
		return nil, badInput(err)
	}
	switch len(addrs) {
	case 0:
		return nil, fmt.Errorf("ledger.rpc is empty: give the RPC address of a ledger node (host:port), or of several validators separated by commas")
	case 1:
		rpc, err := ledger.NewRPC(addrs[0], tlsCfg)
		if err != nil {
			return nil, fmt.Errorf("ledger.rpc %s: %w", addrs[0], err)
		}
		return ledger.NewClient(rpc, log), nil
	}
	rpc, err := ledger.NewFailover(addrs, tlsCfg, log)
	if err != nil {
		return nil, fmt.Errorf("ledger.rpc %s: %w", cfg.Ledger.RPC, err)
	}
	return ledger.NewClient(rpc, log), nil
}

// runServices runs the given roles (and the HTTP API) against the NATS, ClickHouse and ledger
// of the configuration until ctx ends, as `dev` runs them against its embedded servers.
func runServices(cmd *cobra.Command, roles stack.Roles) error {
	cfg, log, err := load(cmd)
	if err != nil {
		return err
	}
	name := "anchorline " + cmd.Name()
	if roles.Ingest {
		name += " " + cfg.Ingest.Worker
	}
	l, err := remoteLedger(cfg, log)
	if err != nil {
		return err
	}
	s, err := stack.StartServices(cmd.Context(), cfg, log, roles, stack.Env{NATSURL: cfg.NATS.URL, Ledger: l, Name: name})
	if err != nil {
		return err
	}
	log.Info("anchorline "+cmd.Name()+" is running", "api", "http://"+s.HTTPAddr)
	return s.Run(cmd.Context())
}

func ingestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ingest",
		Short: "Run one ingest worker (any number share the durable consumer)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServices(cmd, stack.Roles{Ingest: true})
		},
	}
}

func anchorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "anchor",
		Short: "Run the anchor service: one ledger anchor per interval over all pending batches",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServices(cmd, stack.Roles{Anchoring: true})
		},
	}
}

func rulesCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "rules",
		Short: "Run the rules stage: evaluate the ledger's rules on verified readings, publish and store events (any number share the shards)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The stage's live heap is small (rule states and a window of readings per device)
			// and every reading allocates: the collector runs at four times the heap, not two,
			// which halves its share of the CPU. GOGC, when set, decides instead.
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(400)
			}
			return runServices(cmd, stack.Roles{Rules: true})
		},
	}
	c.AddCommand(rulesCommanderCmd())
	return c
}

// rulesCommanderCmd is `rules commander`: the one-time setup of a deployment's rules stage.
func rulesCommanderCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "commander",
		Short: "Create the rules stage's key (rules.key) if missing and register it on the ledger as the commander, device rules",
		Long: `commander reads the rules stage's key at rules.key, creating it (mode 0600) if it does not
exist, and makes sure the ledger's registry holds the commander (device "rules") with that key,
active: it registers it, signed by ledger.admin_key, revoking another key first. Devices verify
commands against that record. Nothing changes if the commander holds the key already, so a
deployment may run it on every start; give every rules process the same key file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, l, admin, err := adminLedger(cmd)
			if err != nil {
				return err
			}
			key, err := stack.LoadOrCreateRulesKey(cfg.RulesKey())
			if err != nil {
				return badInput(fmt.Errorf("rules.key: %w", err))
			}
			pub := reading.Ed25519Public(key)
			quiet := slog.New(slog.DiscardHandler)
			if err := stack.RegisterCommander(cmd.Context(), l, admin, pub, quiet); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "commander %s holds key %x (%s)\n", rule.Commander, []byte(pub), cfg.RulesKey())
			return nil
		},
	}
}

func apiCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "api",
		Short: "Serve the HTTP API (readings, proofs, devices, trust, status)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServices(cmd, stack.Roles{})
		},
	}
	c.AddCommand(apiTokenCmd())
	return c
}

func apiTokenCmd() *cobra.Command {
	var audience, out string
	c := &cobra.Command{
		Use:   "token --audience NAME --out FILE",
		Short: "Make an API token for an audience: the token into FILE, its hash into the tokens file (http.tokens)",
		Long: `token makes a random token for an audience (an analyst group, an auditor, a purpose), writes it
to --out (mode 0600: give that file to the client, which names it in http.token), and appends its
SHA-256 to the API's tokens file (http.tokens), which the API reads again within a second. Remove
the line to revoke the token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := load(cmd)
			if err != nil {
				return err
			}
			if cfg.HTTP.Tokens == "" {
				return badInput(errors.New("http.tokens: set it to the tokens file the API reads (it is created if missing)"))
			}
			if out == "" {
				return badInput(errors.New("--out: give the file to write the token to"))
			}
			token, line, err := api.NewToken(audience)
			if err != nil {
				return badInput(fmt.Errorf("--audience: %w", err))
			}
			if err := writeNew(out, []byte(token+"\n")); err != nil {
				return err
			}
			f, err := os.OpenFile(cfg.HTTP.Tokens, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("http.tokens %s: %w", cfg.HTTP.Tokens, err)
			}
			if _, err := fmt.Fprintln(f, line); err != nil {
				f.Close()
				return fmt.Errorf("http.tokens %s: %w", cfg.HTTP.Tokens, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("http.tokens %s: %w", cfg.HTTP.Tokens, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token for audience %s written to %s; its hash added to %s\n", audience, out, cfg.HTTP.Tokens)
			return nil
		},
	}
	c.Flags().StringVar(&audience, "audience", "", "who the token is for (A-Z, a-z, 0-9, '.', '_', '-')")
	c.Flags().StringVar(&out, "out", "", "file to write the token to (must not exist)")
	return c
}

// writeNew writes a new file of mode 0600, refusing to overwrite one.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return badInput(fmt.Errorf("--out %s: the file exists; choose another (a token file is never overwritten)", path))
	} else if err != nil {
		return fmt.Errorf("--out %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("--out %s: %w", path, err)
	}
	return f.Close()
}

func ledgerCmd() *cobra.Command {
	var home string
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Run a ledger node (the Anchorline ABCI app in CometBFT) with its RPC on ledger.rpc",
		Long: `ledger runs a single-validator ledger under data_dir/ledger with its RPC on ledger.rpc, or,
with --home, one validator of a network from a home written by ` + "`ledger init`" + `: its keys, genesis
and config.toml (P2P and RPC addresses, persistent_peers, timeouts).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			if home != "" {
				return runValidator(cmd.Context(), home, log)
			}
			admin, err := stack.LoadOrCreateAdminKey(cfg.Ledger.AdminKey)
			if err != nil {
				return err
			}
			// A new chain authorises the anchoring key at anchor.key (created here if missing):
			// give that file to the anchor service.
			anchorKey, err := stack.LoadOrCreateAnchorKey(cfg.AnchorKey())
			if err != nil {
				return err
			}
			rpcLn, err := stack.Listen("ledger.rpc", cfg.Ledger.RPC)
			if err != nil {
				return err
			}
			n, err := node.Start(cmd.Context(), node.Config{
				Home:          filepath.Join(cfg.DataDir, "ledger"),
				ChainID:       cfg.Ledger.ChainID,
				RPC:           rpcLn,
				TimeoutCommit: cfg.Ledger.TimeoutCommit,
				Admins:        []ed25519.PublicKey{reading.Ed25519Public(admin)},
				AnchorKeys:    []ed25519.PublicKey{reading.Ed25519Public(anchorKey)},
				Logger:        log,
			})
			if err != nil {
				return err
			}
			log.Info("ledger node running", "rpc", n.RPCAddr(), "chain_id", cfg.Ledger.ChainID)
			<-cmd.Context().Done()
			return n.Stop()
		},
	}
	cmd.Flags().StringVar(&home, "home", "", "run one validator from this home (written by anchorline ledger init) and its config.toml")
	cmd.AddCommand(append([]*cobra.Command{ledgerInitCmd()}, authorityCmds()...)...)
	return cmd
}
