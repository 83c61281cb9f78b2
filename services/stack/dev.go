package stack

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/store"
)

// Dev is a running `anchorline dev`: everything in one process.
type Dev struct {
	cfg    config.Config
	log    *slog.Logger
	runCtx context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	errMu sync.Mutex
	err   error

	stops []func() error // in reverse start order
	nats  *server.Server

	// Parts, for tests and status.
	Node       *node.Node
	Backend    *Backend
	Ingest     *Ingest
	HTTPAddr   string // where the API listens (resolved, if http.addr had port 0)
	AdminKey   ed25519.PrivateKey
	ClickHouse *chserver.Server // nil unless clickhouse.embedded
}

// StartDev starts the embedded NATS server, the ledger node, ingest, anchoring and the API
// (and a private ClickHouse if cfg.ClickHouse.Embedded), migrating the schema first. State
// lives under cfg.DataDir, so a restart continues where the last run stopped.
func StartDev(ctx context.Context, cfg config.Config, log *slog.Logger) (d *Dev, err error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d = &Dev{cfg: cfg, log: log, runCtx: runCtx, cancel: cancel}
	defer func() {
		if err != nil {
			d.Stop()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if d.AdminKey, err = LoadOrCreateAdminKey(cfg.Ledger.AdminKey); err != nil {
		return nil, err
	}

	if cfg.ClickHouse.Embedded {
		srv, err := chserver.Start(ctx, filepath.Join(cfg.DataDir, "clickhouse"), cfg.ClickHouse.Addr, log)
		if err != nil {
			return nil, fmt.Errorf("embedded clickhouse: %w", err)
		}
		d.ClickHouse = srv
		d.stops = append(d.stops, srv.Stop)
	}

	ns, err := StartNATS(cfg.NATS.URL, filepath.Join(cfg.DataDir, "nats"), log)
	if err != nil {
		return nil, err
	}
	d.nats = ns
	d.stops = append(d.stops, func() error { d.nats.Shutdown(); d.nats.WaitForShutdown(); return nil })

	d.Node, err = node.Start(ctx, node.Config{
		Home:          filepath.Join(cfg.DataDir, "ledger"),
		ChainID:       cfg.Ledger.ChainID,
		RPCAddr:       cfg.Ledger.RPC,
		TimeoutCommit: cfg.Ledger.TimeoutCommit,
		Admins:        []ed25519.PublicKey{d.AdminKey.Public().(ed25519.PublicKey)},
		Logger:        log,
	})
	if err != nil {
		return nil, fmt.Errorf("ledger node: %w", err)
	}
	d.stops = append(d.stops, d.Node.Stop)
	lc := d.Node.Client()

	ch, err := OpenClickHouse(ctx, cfg.ClickHouse, log)
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, ch.Close)
	applied, err := clickhouse.Migrate(ctx, ch, cfg.ClickHouse.Database)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if len(applied) > 0 {
		log.Info("clickhouse schema migrated", "database", cfg.ClickHouse.Database, "applied", applied)
	}

	nc, js, err := ConnectNATS(ctx, ns.ClientURL(), "anchorline-dev", log)
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, func() error { return nc.Drain() })

	st := store.New(ch, cfg.ClickHouse.Database)
	if d.Ingest, err = NewIngest(ctx, cfg, js, ch, lc, log); err != nil {
		return nil, err
	}
	anch, err := NewAnchoring(ctx, cfg, js, st, lc, log)
	if err != nil {
		return nil, err
	}
	d.Backend = &Backend{Store: st, Ledger: lc,
		IngestStats:      func() any { return d.Ingest.Stats() },
		AnchoringStats:   func() any { return anch.Stats() },
		Checks:           []func(context.Context) error{func(context.Context) error { return d.Ingest.Ready() }, func(context.Context) error { return anch.Ready() }},
		AfterDeviceEvent: d.Ingest.RefreshKeys,
		Lag:              JetStreamLag(js),
	}
	d.Backend.Metrics, err = NewMetrics(d.Ingest, anch, js, st)
	if err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return nil, fmt.Errorf("http.addr %s: %w", cfg.HTTP.Addr, err)
	}
	d.HTTPAddr = ln.Addr().String()
	hs := &http.Server{Handler: api.Handler(d.Backend.Deps(), log), ReadHeaderTimeout: 10 * time.Second}

	d.goRun("ingest", func() error { return d.Ingest.Run(runCtx) })
	d.goRun("anchoring", func() error { return anch.Run(runCtx) })
	d.goRun("http", func() error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	// Stopping: first the HTTP server, then ingest and anchoring (cancel + wait), then the rest.
	d.stops = append(d.stops, func() error {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		err := hs.Shutdown(sctx)
		cancel()
		d.wg.Wait()
		return err
	})
	log.Info("anchorline dev is running", "api", "http://"+d.HTTPAddr, "nats", ns.ClientURL(),
		"ledger_rpc", cfg.Ledger.RPC, "clickhouse", cfg.ClickHouse.Addr, "database", cfg.ClickHouse.Database, "data_dir", cfg.DataDir)
	return d, nil
}

func (d *Dev) goRun(name string, f func() error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := f(); err != nil {
			d.log.Error("service stopped with an error", "service", name, "err", err)
			d.errMu.Lock()
			d.err = errors.Join(d.err, fmt.Errorf("%s: %w", name, err))
			d.errMu.Unlock()
			d.cancel()
		}
	}()
}

// RestartNATS shuts the embedded NATS server down and starts it again on the same address and
// file store after pause (a fault drill: clients reconnect and resume).
func (d *Dev) RestartNATS(pause time.Duration) error {
	d.nats.Shutdown()
	d.nats.WaitForShutdown()
	time.Sleep(pause)
	ns, err := StartNATS(d.cfg.NATS.URL, filepath.Join(d.cfg.DataDir, "nats"), d.log)
	if err != nil {
		return err
	}
	d.nats = ns
	return nil
}

// Done is closed when a service stopped on its own (see Err) or Stop was called.
func (d *Dev) Done() <-chan struct{} { return d.runCtx.Done() }

// Err returns the first errors of services that stopped on their own.
func (d *Dev) Err() error {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	return d.err
}

// Stop shuts everything down in reverse order and returns what failed.
func (d *Dev) Stop() error {
	d.cancel()
	var errs []error
	for i := len(d.stops) - 1; i >= 0; i-- {
		if err := d.stops[i](); err != nil {
			errs = append(errs, err)
		}
	}
	d.stops = nil
	return errors.Join(errs...)
}

// RunDev runs `anchorline dev` until ctx ends (Ctrl-C), then shuts down cleanly.
func RunDev(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	d, err := StartDev(ctx, cfg, log)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-d.Done():
	}
	log.Info("shutting down")
	err = errors.Join(d.Err(), d.Stop())
	if err == nil {
		log.Info("stopped cleanly")
	}
	return err
}
