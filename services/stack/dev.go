package stack

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/internal/pki"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
)

// Dev is a running `anchorline dev`: the embedded servers (NATS, a single-validator ledger,
// optionally a private ClickHouse) and all of Anchorline's services, in one process.
type Dev struct {
	*Services // ingest, anchoring and the HTTP API, built as the standalone commands build them

	cfg     config.Config
	log     *slog.Logger
	nodeCfg node.Config
	rpc     *nodeRPC
	stops   []func() error // of the embedded servers, in start order

	natsMu sync.Mutex
	nats   *server.Server
	setup  auth.Setup           // the broker's identity: accounts, service seeds, callout issuer
	authp  atomic.Pointer[Auth] // Auth, for the NATS server's goroutines
	tls    *tls.Config          // the embedded NATS server's, with tls.dev; nil without

	// Parts, for tests and status.
	Node       *node.Node // the embedded ledger node (replaced by StartLedger)
	LedgerRPC  string     // where its RPC listens (resolved, if ledger.rpc had port 0); "" for none
	Ledger     *ledger.Client
	AdminKey   ed25519.PrivateKey
	ClickHouse *chserver.Server // nil unless clickhouse.embedded
	Auth       *Auth            // the auth callout service for the embedded NATS server
}

// StartDev starts the embedded NATS server, the ledger node, ingest, anchoring and the API
// (and a private ClickHouse if cfg.ClickHouse.Embedded), migrating the schema first. State
// lives under cfg.DataDir, so a restart continues where the last run stopped. Before starting
// anything it checks that data_dir is writable and that every address it must listen on is
// free; whatever it started is stopped again when it returns an error.
func StartDev(ctx context.Context, cfg config.Config, log *slog.Logger) (*Dev, error) {
	d := &Dev{cfg: cfg, log: log, rpc: &nodeRPC{}}
	if err := d.start(ctx); err != nil {
		return nil, errors.Join(err, d.Stop())
	}
	log.Info("anchorline dev is running", "api", "http://"+d.HTTPAddr, "nats", d.natsServer().ClientURL(),
		"ledger_rpc", d.LedgerRPC, "clickhouse", cfg.ClickHouse.Addr, "database", cfg.ClickHouse.Database, "data_dir", cfg.DataDir)
	return d, nil
}

func (d *Dev) start(ctx context.Context) error {
	cfg := d.cfg
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := checkDataDir(cfg.DataDir); err != nil {
		return err
	}
	if err := checkOldStreams(filepath.Join(cfg.DataDir, "nats")); err != nil {
		return err
	}
	natsAddr, err := natsListenAddr(cfg.NATS.URL)
	if err != nil {
		return err
	}
	free := [][2]string{{"http.addr", cfg.HTTP.Addr}, {"nats.url", natsAddr}}
	if cfg.Ledger.RPC != "" {
		free = append(free, [2]string{"ledger.rpc", cfg.Ledger.RPC})
	}
	if cfg.ClickHouse.Embedded {
		free = append(free, [2]string{"clickhouse.addr", cfg.ClickHouse.Addr})
	}
	for _, f := range free {
		if err := checkFree(f[0], f[1]); err != nil {
			return err
		}
	}
	if d.AdminKey, err = LoadOrCreateAdminKey(cfg.Ledger.AdminKey); err != nil {
		return err
	}

	if cfg.TLS.Dev {
		if d.tls, err = devTLS(cfg, natsAddr); err != nil {
			return err
		}
		if cfg.HTTP.TLSCert == "" {
			// The API serves HTTPS with dev's certificate too.
			dir := pki.Dir(cfg.TLSDir())
			cfg.HTTP.TLSCert, cfg.HTTP.TLSKey = dir.CertFile("server"), dir.KeyFile("server")
			d.cfg = cfg
		}
	}

	if cfg.ClickHouse.Embedded {
		start := func() (*chserver.Server, error) {
			return chserver.Start(ctx, filepath.Join(cfg.DataDir, "clickhouse"), cfg.ClickHouse.Addr, d.log)
		}
		if cfg.ClickHouse.Secure {
			// The private server speaks TLS only, with dev's certificate.
			if !cfg.TLS.Dev {
				return fmt.Errorf("%w: clickhouse.secure with clickhouse.embedded: the private server needs dev's certificate; set tls.dev true", config.ErrInvalid)
			}
			ctls, err := ClickHouseTLS(cfg)
			if err != nil {
				return err
			}
			dir := pki.Dir(cfg.TLSDir())
			start = func() (*chserver.Server, error) {
				return chserver.StartTLS(ctx, filepath.Join(cfg.DataDir, "clickhouse"), cfg.ClickHouse.Addr, dir.CertFile("server"), dir.KeyFile("server"), ctls, d.log)
			}
		}
		srv, err := start()
		if err != nil {
			return fmt.Errorf("clickhouse.embedded: %w", err)
		}
		d.ClickHouse = srv
		d.stops = append(d.stops, srv.Stop)
	}

	if d.setup, err = auth.Init(cfg.AuthDir()); err != nil {
		return err
	}
	ns, err := StartNATS(cfg.NATS.URL, filepath.Join(cfg.DataDir, "nats"), d.natsServerOptions(), d.log)
	if err != nil {
		return err
	}
	d.setNATS(ns)
	d.stops = append(d.stops, func() error {
		ns := d.natsServer()
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil
	})

	d.nodeCfg = node.Config{
		Home:          filepath.Join(cfg.DataDir, "ledger"),
		ChainID:       cfg.Ledger.ChainID,
		TimeoutCommit: cfg.Ledger.TimeoutCommit,
		Admins:        []ed25519.PublicKey{reading.Ed25519Public(d.AdminKey)},
		Logger:        d.log,
	}
	// The genesis of a new chain authorises dev's anchoring key; an older data_dir's chain
	// gets it authorised by an admin entry below.
	anchorKey, err := LoadOrCreateAnchorKey(cfg.AnchorKey())
	if err != nil {
		return err
	}
	d.nodeCfg.AnchorKeys = []ed25519.PublicKey{reading.Ed25519Public(anchorKey)}
	if err := d.StartLedger(ctx); err != nil {
		return err
	}
	d.stops = append(d.stops, d.StopLedger)
	d.Ledger = ledger.NewClient(d.rpc, d.log)
	if err := AuthoriseAnchorKey(ctx, d.Ledger, d.AdminKey, reading.Ed25519Public(anchorKey), d.log); err != nil {
		return err
	}
	if cfg.Rules.Enabled {
		rulesKey, err := LoadOrCreateRulesKey(cfg.RulesKey())
		if err != nil {
			return err
		}
		if err := RegisterCommander(ctx, d.Ledger, d.AdminKey, reading.Ed25519Public(rulesKey), d.log); err != nil {
			return err
		}
	}

	// Devices connect through the callout, answered from the ledger's registry.
	clientTLS, err := NATSTLS(cfg)
	if err != nil {
		return err
	}
	if d.Auth, err = StartAuth(ctx, d.setup, ns.ClientURL(), d.Ledger, d.log, clientTLS...); err != nil {
		return err
	}
	d.authp.Store(d.Auth)
	authCtx, stopAuth := context.WithCancel(context.WithoutCancel(ctx))
	authDone := make(chan struct{})
	go func() { defer close(authDone); _ = d.Auth.Run(authCtx) }()
	d.stops = append(d.stops, func() error { stopAuth(); <-authDone; d.Auth.Close(); return nil })

	d.Services, err = StartServices(ctx, cfg, d.log, Roles{Ingest: true, Anchoring: true, Rules: cfg.Rules.Enabled && cfg.Rules.Embedded},
		Env{NATSURL: ns.ClientURL(), Ledger: d.Ledger, Migrate: true, Name: "anchorline-dev",
			AfterDeviceEvent: []func(context.Context) error{d.Auth.Refresh}, AuthStats: d.Auth.Stats})
	return err
}

// APIClient is a client of dev's HTTP API (https with dev's CA under tls.dev).
func (d *Dev) APIClient() *api.Client {
	c, _ := APIClient(d.Config()) // StartDev checked the CA file; no token file is set
	return c
}

// natsServerOptions secure the embedded NATS server: the auth setup, TLS with tls.dev, and
// permissions violations counted by the auth service.
func (d *Dev) natsServerOptions() NATSServer {
	return NATSServer{Auth: &d.setup, TLS: d.tls, Violation: func(detail string) {
		if a := d.authp.Load(); a != nil {
			a.Violation(detail)
		}
	}}
}

// AuthSetup is the broker identity setup dev runs with (its seed files are the services'
// credentials: give a separate process of a role its File).
func (d *Dev) AuthSetup() auth.Setup { return d.setup }

// NATSOptions are the connect options of a role on dev's NATS server (tests and tools in the
// same process: the seed files are those under nats.auth_dir).
func (d *Dev) NATSOptions(role auth.Role) []nats.Option {
	opts, _ := auth.ConnectOptions(role, d.setup.File(role)) // the seed files exist: StartDev made them
	return append(d.NATSTLS(), opts...)
}

// NATSTLS is the TLS option of a client of dev's NATS server: trust dev's CA (none without
// tls.dev).
func (d *Dev) NATSTLS() []nats.Option {
	opts, _ := NATSTLS(d.cfg) // StartDev checked the CA file
	return opts
}

// devTLS makes (once) dev's private CA and the certificate its servers present, for loopback
// and the hosts of nats.url, http.addr, clickhouse.addr and ledger.rpc, under data_dir/tls.
func devTLS(cfg config.Config, natsAddr string) (*tls.Config, error) {
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	for _, addr := range []string{natsAddr, cfg.HTTP.Addr, cfg.ClickHouse.Addr, cfg.Ledger.RPC} {
		if h, _, err := net.SplitHostPort(addr); err == nil && h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	dir := pki.Dir(cfg.TLSDir())
	if err := dir.Ensure("server", hosts); err != nil {
		return nil, fmt.Errorf("tls.dev: %w", err)
	}
	return dir.ServerConfig("server")
}

// Config is the configuration dev runs with, with the addresses it resolved: nats.url,
// http.addr, ledger.rpc and clickhouse.addr name where its servers listen even if they were
// given with port 0. Clients (tests, commands) connect with it.
func (d *Dev) Config() config.Config {
	c := d.cfg
	c.NATS.URL = d.natsServer().ClientURL()
	c.HTTP.Addr = d.HTTPAddr
	c.Ledger.RPC = d.LedgerRPC
	if d.ClickHouse != nil {
		c.ClickHouse.Addr = d.ClickHouse.Addr
	}
	return c
}

// ErrOldStreams means data_dir holds JetStream streams from before the broker had accounts.
var ErrOldStreams = errors.New("data_dir holds streams of a version before broker accounts")

// checkOldStreams refuses a NATS store whose streams are in the server's global account (made
// before dev put them in the APP account): readings pending there would never be ingested.
func checkOldStreams(store string) error {
	old := filepath.Join(store, "jetstream", "$G", "streams", "READINGS")
	if _, err := os.Stat(old); err != nil {
		return nil
	}
	return fmt.Errorf("%w: %s: readings still pending in it would not be ingested; drain it with the anchorline that made it (stop publishing, let ingest catch up), then move %s aside; the ledger and ClickHouse data are kept",
		ErrOldStreams, old, store)
}

// checkDataDir makes sure dir exists and is writable.
func checkDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("data_dir %s: %w: choose another data_dir or fix its permissions", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("data_dir %s is not writable: %w: choose another data_dir or fix its permissions", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// natsListenAddr is the host:port the embedded NATS server listens on.
func natsListenAddr(natsURL string) (string, error) {
	u, err := url.Parse(natsURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: nats.url: %q is not a URL like nats://127.0.0.1:4222", config.ErrInvalid, natsURL)
	}
	return u.Host, nil
}

func (d *Dev) natsServer() *server.Server {
	d.natsMu.Lock()
	defer d.natsMu.Unlock()
	return d.nats
}

func (d *Dev) setNATS(ns *server.Server) {
	d.natsMu.Lock()
	defer d.natsMu.Unlock()
	d.nats = ns
}

// RestartNATS shuts the embedded NATS server down and starts it again on the same address and
// file store after pause (a fault drill: clients reconnect and resume).
func (d *Dev) RestartNATS(pause time.Duration) error {
	ns := d.natsServer()
	url := ns.ClientURL() // the port it got, if nats.url had port 0
	ns.Shutdown()
	ns.WaitForShutdown()
	time.Sleep(pause)
	ns, err := StartNATS(url, filepath.Join(d.cfg.DataDir, "nats"), d.natsServerOptions(), d.log)
	if err != nil {
		return err
	}
	d.setNATS(ns)
	return nil
}

// StopLedger stops the embedded ledger node (a fault drill; Stop calls it too). The services
// keep running: their ledger calls fail with ErrLedgerStopped until StartLedger.
func (d *Dev) StopLedger() error {
	n := d.rpc.swap(nil)
	if n == nil {
		return nil
	}
	return n.Stop()
}

// StartLedger starts the embedded ledger node from its home under data_dir, on ledger.rpc;
// the services' ledger client reaches it from then on.
func (d *Dev) StartLedger(ctx context.Context) error {
	nc := d.nodeCfg
	if d.cfg.Ledger.RPC != "" {
		addr := d.cfg.Ledger.RPC
		if d.LedgerRPC != "" {
			addr = d.LedgerRPC // the port the first start resolved, if ledger.rpc had port 0
		}
		ln, err := Listen("ledger.rpc", addr)
		if err != nil {
			return err
		}
		if d.tls != nil {
			ln = tls.NewListener(ln, d.tls) // https, with dev's certificate
		}
		nc.RPC = ln
	}
	n, err := node.Start(ctx, nc)
	if err != nil {
		return err
	}
	if old := d.rpc.swap(n); old != nil {
		return errors.Join(errors.New("ledger node was already running"), n.Stop())
	}
	d.Node, d.LedgerRPC = n, n.RPCAddr()
	return nil
}

// Stop shuts everything down in reverse start order and returns what failed. It may be
// called more than once, and on a Dev that did not start completely.
func (d *Dev) Stop() error {
	var errs []error
	if d.Services != nil {
		errs = append(errs, d.Services.Stop())
	}
	for i := len(d.stops) - 1; i >= 0; i-- {
		errs = append(errs, d.stops[i]())
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
