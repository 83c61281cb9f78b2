package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/anchoring"
	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/pipeline/rules"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/services/access"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/erasure"
	"github.com/anchorline/anchorline/services/retention"
	"github.com/anchorline/anchorline/services/store"
)

// Roles are the parts of Anchorline one process runs besides the HTTP API, which every
// process serves (readings, proofs, status, /readyz, /metrics of what runs there).
type Roles struct {
	Ingest    bool // an ingest worker
	Anchoring bool // the anchor service
	Rules     bool // a rules stage process (rules.enabled)
}

// Env is what the services connect to.
type Env struct {
	NATSURL string         // "" when no role needs NATS
	Ledger  *ledger.Client // the ledger node's RPC
	// Migrate applies the ClickHouse schema first (dev); otherwise a database that lacks a
	// migration of this build is an error that says to run `anchorline migrate`.
	Migrate bool
	Name    string // the NATS connection's name
	// AfterDeviceEvent run after the API committed a device event (besides an ingest worker's
	// refresh): the auth service in the same process, so that a revocation disconnects now.
	AfterDeviceEvent []func(context.Context) error
	// AuthStats, if set, reports the auth callout service's counts (the metrics and /stats).
	AuthStats func() auth.Stats
}

// Services is a running set of Anchorline's own services in one process. `anchorline dev`
// runs all of them over embedded servers; `ingest`, `anchor` and `api` run one each over
// external servers. Both are built by StartServices.
type Services struct {
	Ingest    *Ingest            // nil unless Roles.Ingest
	Anchoring *anchoring.Service // nil unless Roles.Anchoring
	Rules     *rules.Stage       // nil unless Roles.Rules
	Actions   *rules.Actions     // the rules stage's commands and webhooks; nil unless Roles.Rules
	Backend   *Backend
	HTTPAddr  string // where the API listens (resolved, if http.addr had port 0)

	log    *slog.Logger
	cancel context.CancelFunc
	runCtx context.Context
	wg     sync.WaitGroup
	stops  []func() error // in start order; Stop runs them in reverse

	errMu sync.Mutex
	err   error
}

// StartServices takes the HTTP address, connects to ClickHouse (retrying up to
// clickhouse.startup_timeout) and NATS, builds the roles' services and runs them until Stop
// or until one of them fails (Done, Err). Whatever it started is stopped again when it
// returns an error.
func StartServices(ctx context.Context, cfg config.Config, log *slog.Logger, roles Roles, env Env) (*Services, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Services{log: log, cancel: cancel, runCtx: runCtx}
	if err := s.start(ctx, cfg, roles, env); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	return s, nil
}

func (s *Services) onStop(f func() error) { s.stops = append(s.stops, f) }

func (s *Services) start(ctx context.Context, cfg config.Config, roles Roles, env Env) error {
	ln, err := Listen("http.addr", cfg.HTTP.Addr)
	if err != nil {
		return err
	}
	s.onStop(func() error { ln.Close(); return nil }) // replaced by the server's shutdown below
	s.HTTPAddr = ln.Addr().String()

	ch, err := OpenClickHouse(ctx, cfg, s.log)
	if err != nil {
		return err
	}
	s.onStop(ch.Close)
	if err := schema(ctx, ch, clickhouse.Schema{Database: cfg.ClickHouse.Database, Cluster: cfg.ClickHouse.Cluster}, env.Migrate, s.log); err != nil {
		return err
	}
	st := store.New(ch, cfg.ClickHouse.Database)

	// Each role connects with its own credentials (NATSOptions), so that a process running
	// several roles holds no more rights than the roles' own.
	connect := func(role auth.Role) (jetstream.JetStream, error) {
		opts, err := NATSOptions(cfg, role)
		if err != nil {
			return nil, err
		}
		nc, js, err := ConnectNATS(ctx, env.NATSURL, env.Name+" "+string(role), s.log, opts...)
		if err != nil {
			return nil, err
		}
		s.onStop(func() error { return nc.Drain() })
		return js, nil
	}
	var ingestJS, anchoringJS jetstream.JetStream
	b := &Backend{Store: st, Ledger: env.Ledger, AfterDeviceEvent: env.AfterDeviceEvent}
	if env.Ledger != nil {
		b.Grants = access.NewGrants(env.Ledger, time.Second)
	}
	if env.AuthStats != nil {
		b.AuthStats = func() any { return env.AuthStats() }
	}
	if roles.Ingest {
		if ingestJS, err = connect(auth.RoleIngest); err != nil {
			return err
		}
		if s.Ingest, err = NewIngest(ctx, cfg, ingestJS, ch, env.Ledger, s.log); err != nil {
			return err
		}
		g := s.Ingest
		b.IngestStats = func() any { return g.Stats() }
		b.Checks = append(b.Checks, Check{"ingest", func(context.Context) error { return g.Ready() }})
		b.AfterDeviceEvent = append(b.AfterDeviceEvent, g.RefreshKeys)
		b.Lag = JetStreamLag(ingestJS)
	}
	if roles.Anchoring {
		js, err := connect(auth.RoleAnchoring)
		if err != nil {
			return err
		}
		anchoringJS = js
		if s.Anchoring, err = NewAnchoring(ctx, cfg, js, ch, env.Ledger, s.log); err != nil {
			return err
		}
		a := s.Anchoring
		b.AnchoringStats = func() any { return a.Stats() }
		b.Checks = append(b.Checks, Check{"anchoring", func(context.Context) error { return a.Ready() }})
	}
	if roles.Rules {
		js, err := connect(auth.RoleRules)
		if err != nil {
			return err
		}
		if s.Rules, s.Actions, err = NewRules(ctx, cfg, js, ch, env.Ledger, s.log); err != nil {
			return err
		}
		r, a := s.Rules, s.Actions
		b.RulesStats = func() any {
			return struct {
				rules.Stats
				Actions rules.ActionStats `json:"actions"`
			}{r.Stats(), a.Stats()}
		}
	}
	var dupStore *store.Store
	if roles.Ingest {
		dupStore = st
	}
	if b.Metrics, err = NewMetrics(s.Ingest, s.Anchoring, ingestJS, dupStore, env.AuthStats, env.Ledger); err != nil {
		return err
	}
	s.Backend = b

	deps := b.Deps()
	if cfg.HTTP.Tokens != "" {
		if deps.Tokens, err = api.LoadTokens(cfg.HTTP.Tokens); err != nil {
			return fmt.Errorf("%w: %w (`anchorline api token --audience NAME --out FILE` writes one)", config.ErrInvalid, err)
		}
	}
	hs := &http.Server{Handler: api.Handler(deps, s.log), ReadHeaderTimeout: 10 * time.Second,
		// Requests run under the services' context: Stop cancels it first, so a request
		// waiting (for the next block, say) returns at once instead of holding the shutdown.
		BaseContext: func(net.Listener) context.Context { return s.runCtx },
		// The server's own complaints (a client speaking plain HTTP to https, a failed
		// handshake) are the client's problem: logged at debug level, with the rest.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	if cfg.HTTP.TLSCert != "" {
		pair, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey)
		if err != nil {
			return fmt.Errorf("%w: http.tls_cert %s, http.tls_key %s: %w", config.ErrInvalid, cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	if s.Ingest != nil {
		s.goRun("ingest", s.Ingest.Run)
	}
	if s.Anchoring != nil {
		s.goRun("anchoring", s.Anchoring.Run)
		if cfg.Anchor.PurgeReadings {
			js := anchoringJS
			s.goRun("retention", func(ctx context.Context) error { return purgeReadings(ctx, js, s.log) })
		}
		if env.Ledger != nil {
			sy := access.New(ch, env.Ledger, access.Config{Schema: clickhouse.Schema{Database: cfg.ClickHouse.Database, Cluster: cfg.ClickHouse.Cluster},
				Through: cfg.ClickHouse.ConsentThrough()}, s.log)
			s.goRun("consent", sy.Run)
			er := erasure.New(ch, anchoringJS, env.Ledger, erasure.Config{Schema: clickhouse.Schema{Database: cfg.ClickHouse.Database, Cluster: cfg.ClickHouse.Cluster},
				Sweep: cfg.Anchor.ErasureSweep}, s.log)
			s.goRun("erasure", er.Run)
		}
		if rt := cfg.ClickHouse.Retention; rt.Readings > 0 || rt.Metrics > 0 || rt.Rollups > 0 || rt.Rejected > 0 || rt.Events > 0 {
			rr := retention.New(ch, retention.Config{Schema: clickhouse.Schema{Database: cfg.ClickHouse.Database, Cluster: cfg.ClickHouse.Cluster}, Retention: rt}, s.log)
			s.goRun("retention of tables", rr.Run)
		}
	}
	if s.Rules != nil {
		s.goRun("rules", s.Rules.Run)
		s.goRun("rule actions", s.Actions.Run)
	}
	s.goRun("http", func(context.Context) error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http.addr %s: %w", s.HTTPAddr, err)
		}
		return nil
	})
	// Stopping: first the HTTP server, then the services (cancel and wait), then the
	// connections (earlier stops).
	s.onStop(func() error {
		// Shutdown waits for idle connections too, and counts a connection a client opened
		// but never sent a request on (net/http's pools do that) as busy for 5 s: after a
		// short grace, close whatever is left.
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		if err := hs.Shutdown(sctx); err != nil {
			s.log.Debug("http: closing connections still open at shutdown", "err", err)
			_ = hs.Close()
		}
		s.cancel()
		s.wg.Wait()
		return nil
	})
	return nil
}

// schema migrates the database, or checks that it is migrated.
func schema(ctx context.Context, ch driver.Conn, s clickhouse.Schema, migrate bool, log *slog.Logger) error {
	if !migrate {
		if err := s.Check(ctx, ch); err != nil {
			return fmt.Errorf("clickhouse.database: %w", err)
		}
		return nil
	}
	applied, err := s.Migrate(ctx, ch)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if len(applied) > 0 {
		log.Info("clickhouse schema migrated", "database", s.Database, "cluster", s.Cluster, "applied", applied)
	}
	return nil
}

func (s *Services) goRun(name string, f func(context.Context) error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := f(s.runCtx); err != nil {
			s.log.Error("service stopped with an error", "service", name, "err", err)
			s.errMu.Lock()
			s.err = errors.Join(s.err, fmt.Errorf("%s: %w", name, err))
			s.errMu.Unlock()
			s.cancel()
		}
	}()
}

// Done is closed when a service stopped on its own (see Err) or Stop was called.
func (s *Services) Done() <-chan struct{} { return s.runCtx.Done() }

// Err returns the errors of services that stopped on their own.
func (s *Services) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// Stop shuts everything down in reverse start order and returns what failed. It may be
// called more than once.
func (s *Services) Stop() error {
	s.cancel()
	var errs []error
	for i := len(s.stops) - 1; i >= 0; i-- {
		if err := s.stops[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.stops = nil
	return errors.Join(errs...)
}

// Run runs the services until ctx ends (Ctrl-C) or one of them fails, then stops them.
func (s *Services) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-s.Done():
	}
	s.log.Info("shutting down")
	err := errors.Join(s.Err(), s.Stop())
	if err == nil {
		s.log.Info("stopped cleanly")
	}
	return err
}
