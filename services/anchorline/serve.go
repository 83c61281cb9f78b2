package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
	"github.com/anchorline/anchorline/services/store"
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
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			ch, err := stack.OpenClickHouse(ctx, cfg.ClickHouse, log)
			if err != nil {
				return err
			}
			defer ch.Close()
			applied, err := clickhouse.Migrate(ctx, ch, cfg.ClickHouse.Database)
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

// remoteLedger is a ledger client over a node's RPC address (ledger.rpc).
func remoteLedger(cfg config.Config) (*ledger.Client, error) {
	rpc, err := rpchttp.New("tcp://"+cfg.Ledger.RPC, "/websocket")
	if err != nil {
		return nil, fmt.Errorf("ledger.rpc %s: %w", cfg.Ledger.RPC, err)
	}
	return ledger.NewClient(rpc), nil
}

// deps are the connections a standalone service needs.
type deps struct {
	ledger *ledger.Client
	ch     driver.Conn
	nc     *nats.Conn // nil unless asked for
	js     jetstream.JetStream
}

func (d deps) close() {
	if d.nc != nil {
		d.nc.Close()
	}
	if d.ch != nil {
		d.ch.Close()
	}
}

// connect opens the ledger client, ClickHouse and (if natsName is not empty) NATS, retrying
// unreachable servers with backoff until ctx ends.
func connect(ctx context.Context, cfg config.Config, log *slog.Logger, natsName string) (deps, error) {
	var d deps
	var err error
	if d.ledger, err = remoteLedger(cfg); err != nil {
		return d, err
	}
	if d.ch, err = stack.OpenClickHouse(ctx, cfg.ClickHouse, log); err != nil {
		return d, err
	}
	if natsName != "" {
		if d.nc, d.js, err = stack.ConnectNATS(ctx, cfg.NATS.URL, natsName, log); err != nil {
			d.close()
			return deps{}, err
		}
	}
	return d, nil
}

func ingestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ingest",
		Short: "Run one ingest worker (any number share the durable consumer)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			d, err := connect(ctx, cfg, log, "anchorline ingest "+cfg.Ingest.Worker)
			if err != nil {
				return err
			}
			defer d.close()
			g, err := stack.NewIngest(ctx, cfg, d.js, d.ch, d.ledger, log)
			if err != nil {
				return err
			}
			m, err := stack.NewMetrics(g, nil, d.js, store.New(d.ch, cfg.ClickHouse.Database))
			if err != nil {
				return err
			}
			return serveWhile(ctx, cfg, log, stack.Backend{Store: store.New(d.ch, cfg.ClickHouse.Database), Ledger: d.ledger, Metrics: m,
				IngestStats: func() any { return g.Stats() }, Checks: []func(context.Context) error{func(context.Context) error { return g.Ready() }},
				AfterDeviceEvent: g.RefreshKeys, Lag: stack.JetStreamLag(d.js)},
				g.Run)
		},
	}
}

func anchorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "anchor",
		Short: "Run the anchor service: one ledger anchor per interval over all pending batches",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			d, err := connect(ctx, cfg, log, "anchorline anchor")
			if err != nil {
				return err
			}
			defer d.close()
			st := store.New(d.ch, cfg.ClickHouse.Database)
			a, err := stack.NewAnchoring(ctx, cfg, d.js, st, d.ledger, log)
			if err != nil {
				return err
			}
			m, err := stack.NewMetrics(nil, a, nil, nil)
			if err != nil {
				return err
			}
			return serveWhile(ctx, cfg, log, stack.Backend{Store: st, Ledger: d.ledger, Metrics: m,
				AnchoringStats: func() any { return a.Stats() }, Checks: []func(context.Context) error{func(context.Context) error { return a.Ready() }}},
				a.Run)
		},
	}
}

func apiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "api",
		Short: "Serve the HTTP API (readings, proofs, devices, trust, status)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			d, err := connect(cmd.Context(), cfg, log, "")
			if err != nil {
				return err
			}
			defer d.close()
			return serveWhile(cmd.Context(), cfg, log, stack.Backend{Store: store.New(d.ch, cfg.ClickHouse.Database), Ledger: d.ledger}, nil)
		},
	}
}

func ledgerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ledger",
		Short: "Run a ledger node (the Anchorline ABCI app in CometBFT) with its RPC on ledger.rpc",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := load(cmd)
			if err != nil {
				return err
			}
			admin, err := stack.LoadOrCreateAdminKey(cfg.Ledger.AdminKey)
			if err != nil {
				return err
			}
			n, err := node.Start(cmd.Context(), node.Config{
				Home:          filepath.Join(cfg.DataDir, "ledger"),
				ChainID:       cfg.Ledger.ChainID,
				RPCAddr:       cfg.Ledger.RPC,
				TimeoutCommit: cfg.Ledger.TimeoutCommit,
				Admins:        []ed25519.PublicKey{admin.Public().(ed25519.PublicKey)},
				Logger:        log,
			})
			if err != nil {
				return err
			}
			log.Info("ledger node running", "rpc", cfg.Ledger.RPC, "chain_id", cfg.Ledger.ChainID)
			<-cmd.Context().Done()
			return n.Stop()
		},
	}
}

// serveWhile serves the HTTP API on http.addr while run runs (or until ctx ends if run is nil).
func serveWhile(ctx context.Context, cfg config.Config, log *slog.Logger, b stack.Backend, run func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hs := &http.Server{Addr: cfg.HTTP.Addr, Handler: api.Handler(b.Deps(), log), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() {
		if err := hs.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http.addr %s: %w", cfg.HTTP.Addr, err)
			cancel()
		}
	}()
	var err error
	if run != nil {
		err = run(ctx)
	} else {
		<-ctx.Done()
	}
	sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	_ = hs.Shutdown(sctx)
	select {
	case e := <-errc:
		err = errors.Join(err, e)
	default:
	}
	return err
}
