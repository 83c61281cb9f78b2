package cluster

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/deployments"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/internal/pki"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
)

// Options describe a cluster on one host (Up). Zero counts take the defaults of the issue's
// topology: 3 NATS nodes, 4 validators, 2 ClickHouse replicas, 2 ingest workers, 2 anchoring
// services (one active, one standby), 2 rules processes (one serving, one standing by), 1 API.
type Options struct {
	Dir        string // everything the cluster keeps: stores, homes, keys, logs, cluster.json
	Binary     string // the anchorline executable the services and validators run from
	NATSServer string // the nats-server executable
	Database   string // ClickHouse database (default anchorline)
	Log        *slog.Logger

	// How many of each part.
	NATSNodes, Validators, Replicas, Ingest, Anchor, Rules int
}

func (o *Options) defaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.NATSNodes, 3)
	def(&o.Validators, 4)
	def(&o.Replicas, 2)
	def(&o.Ingest, 2)
	def(&o.Anchor, 2)
	def(&o.Rules, 2)
	if o.Database == "" {
		o.Database = "anchorline"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// ClickHouseCluster is the name of the cluster's ClickHouse cluster (remote_servers entry).
const ClickHouseCluster = "anchorline"

// The certificates the cluster's CA issues (pki.Dir names), one per kind of server; NATS's
// is "nats" (StartNATSCluster).
const (
	certLedger     = "ledger"     // the validators' RPC
	certClickHouse = "clickhouse" // the replicas' native TLS port
	certHTTP       = "http"       // every service's HTTP (the API, /readyz, /metrics)
)

// ChainID is the chain id of the cluster's ledger.
const ChainID = "anchorline-cluster"

// InfoFile is the file under Options.Dir that describes a running cluster.
const InfoFile = "cluster.json"

// Info is cluster.json: every process the supervisor started and what a client needs.
type Info struct {
	Dir                string   `json:"dir"`
	Ready              bool     `json:"ready"`
	Supervisor         Process  `json:"supervisor"`
	Control            string   `json:"control_addr"` // the supervisor's HTTP control (GET /v1/cluster, POST /v1/processes/{name}/stop?for=20s)
	NATSURLs           []string `json:"nats_urls"`
	HTTPAddr           string   `json:"http_addr"`       // the API
	ClickHouseAddr     string   `json:"clickhouse_addr"` // the replicas, comma-separated, as clickhouse.addr takes them
	ClickHouseDatabase string   `json:"clickhouse_database"`
	ClickHouseCluster  string   `json:"clickhouse_cluster"`
	LedgerRPC          []string `json:"ledger_rpc"`
	ChainID            string   `json:"chain_id"`
	TrustFile          string   `json:"trust_file"`
	CAFile             string   `json:"ca_file"`   // tls.ca: the CA every server's certificate is issued by (NATS, the ledger's RPC, ClickHouse, HTTP)
	AuthDir            string   `json:"auth_dir"`  // nats.auth_dir: the roles' seeds and auth.conf
	AdminKey           string   `json:"admin_key"` // ledger.admin_key: registers devices
	AnchorKey          string   `json:"anchor_key"`
	RulesKey           string   `json:"rules_key"`     // rules.key: signs commands as the commander, registered on the ledger
	ClientConfig       string   `json:"client_config"` // a configuration file for client commands (--config)
	// ClickHouseClient is a clickhouse-client configuration that trusts the cluster's CA:
	// clickhouse-client --config-file FILE --secure --host 127.0.0.1 --port PORT.
	ClickHouseClient string    `json:"clickhouse_client_config"`
	Processes        []Process `json:"processes"`
}

// Process is one process of the cluster.
type Process struct {
	Name      string            `json:"name"`
	Role      string            `json:"role"` // nats, validator, zookeeper, clickhouse, auth, ingest, anchor, rules, api, supervisor
	PID       int               `json:"pid"`
	StartTime uint64            `json:"start_time"` // /proc/PID/stat starttime: tells the process from a later one with its pid
	Listen    map[string]string `json:"listen,omitempty"`
	Log       string            `json:"log,omitempty"`
	Restarts  int               `json:"restarts"`
	// RestartedAt is when the supervisor last started it again (ready, for ClickHouse).
	RestartedAt time.Time `json:"restarted_at,omitzero"`
}

// member is a supervised process: how to find it, restart it and stop it.
type member struct {
	Process
	current func() (int, <-chan struct{})
	restart func(ctx context.Context) error
	stop    func()
	hold    time.Time // not restarted before this (a stop asked for with a duration)
	stopped bool      // asked to stop for good
}

// Cluster is a running cluster on one host, supervised by this process: a member that exits
// is started again after a second (or after the hold a stop asked for), as a container
// orchestrator would.
type Cluster struct {
	opts    Options
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	info    Info
	members []*member
	nats    *NATSCluster
	shard   *chserver.Shard
	control *http.Server
	certs   pki.Dir     // the cluster's CA and its servers' certificates
	tls     *tls.Config // clients' TLS: trust certs' CA
	https   *http.Client
}

// ErrExists means Options.Dir holds a cluster already (running, or stopped and left there).
var ErrExists = errors.New("cluster directory in use")

// Up starts the whole cluster and returns once every part is ready, with cluster.json written.
// On an error it stops what it started.
func Up(ctx context.Context, o Options) (*Cluster, error) {
	o.defaults()
	if o.Dir == "" || o.Binary == "" || o.NATSServer == "" {
		return nil, errors.New("cluster: Dir, Binary and NATSServer are required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("cluster --dir: %w", err)
	}
	o.Dir = dir
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("cluster --dir: %w", err)
	}
	if entries, err := os.ReadDir(dir); err != nil {
		return nil, fmt.Errorf("cluster --dir: %w", err)
	} else if len(entries) > 1 || len(entries) == 1 && entries[0].Name() != "logs" { // logs: the supervisor's own
		return nil, fmt.Errorf("%w: %s is not empty (a cluster is started in a new or empty directory; `anchorline cluster down --dir %s` stops one, then remove it)", ErrExists, dir, dir)
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{opts: o, log: o.Log, ctx: cctx, cancel: cancel}
	if err := c.up(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) up(ctx context.Context) error {
	o := c.opts
	logs := filepath.Join(o.Dir, "logs")
	if err := os.MkdirAll(logs, 0o750); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	self, err := selfProcess()
	if err != nil {
		return err
	}
	c.info = Info{Dir: o.Dir, Supervisor: self, ClickHouseDatabase: o.Database, ClickHouseCluster: ClickHouseCluster, ChainID: ChainID,
		AuthDir: filepath.Join(o.Dir, "auth"), AdminKey: filepath.Join(o.Dir, "admin.key"), AnchorKey: filepath.Join(o.Dir, "anchor.key"),
		RulesKey: filepath.Join(o.Dir, "rules.key"), TrustFile: filepath.Join(o.Dir, "trust.json"), ClientConfig: filepath.Join(o.Dir, "client.yaml"),
		ClickHouseClient: filepath.Join(o.Dir, "clickhouse-client.xml")}
	if err := c.startControl(); err != nil {
		return err
	}

	// TLS everywhere: a private CA and a certificate per kind of server, for loopback.
	c.certs = pki.Dir(filepath.Join(o.Dir, "tls"))
	for _, name := range []string{certLedger, certClickHouse, certHTTP} {
		if err := c.certs.Ensure(name, []string{"127.0.0.1", "localhost"}); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	c.info.CAFile = c.certs.CAFile()
	if c.tls, err = pki.ClientConfig(c.info.CAFile); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	c.https = &http.Client{Transport: &http.Transport{TLSClientConfig: c.tls.Clone()}}

	// Identity at the broker: every role's seed and auth.conf, included by every NATS node.
	setup, err := auth.Init(c.info.AuthDir)
	if err != nil {
		return err
	}
	c.log.Info("starting NATS", "nodes", o.NATSNodes)
	// Once more on other ports if it does not come up: a free port found for a node can be taken
	// by another process before the node binds it.
	if c.nats, err = StartNATSCluster(ctx, o.NATSServer, filepath.Join(o.Dir, "nats"), o.NATSNodes, setup, c.certs, c.log); err != nil {
		c.log.Warn("NATS cluster did not come up; trying again on other ports", "err", err)
		if c.nats, err = StartNATSCluster(ctx, o.NATSServer, filepath.Join(o.Dir, "nats-2nd"), o.NATSNodes, setup, c.certs, c.log); err != nil {
			return err
		}
	}
	for i, n := range c.nats.Nodes {
		c.info.NATSURLs = append(c.info.NATSURLs, "nats://"+n.ClientAddr)
		c.add(&member{Process: Process{Name: n.Name, Role: "nats", Listen: map[string]string{"client": n.ClientAddr, "route": n.RouteAddr}, Log: filepath.Join(n.Dir, "server.log")},
			current: func() (int, <-chan struct{}) { return c.nats.Process(i) },
			restart: func(context.Context) error { return c.nats.Start(i) },
			stop:    func() { c.nats.stopNode(i) }})
	}

	// The ledger: a validator network whose genesis authorises the admin and anchoring keys.
	admin, err := stack.LoadOrCreateAdminKey(c.info.AdminKey)
	if err != nil {
		return err
	}
	anchorKey, err := stack.LoadOrCreateAnchorKey(c.info.AnchorKey)
	if err != nil {
		return err
	}
	if err := c.startValidators(ctx, reading.Ed25519Public(admin), reading.Ed25519Public(anchorKey), logs); err != nil {
		return err
	}
	// The rules stage's key, registered as the commander (as `anchorline rules commander` does).
	rulesKey, err := stack.LoadOrCreateRulesKey(c.info.RulesKey)
	if err != nil {
		return err
	}
	f, err := ledger.NewFailover(c.info.LedgerRPC, c.tls, c.log)
	if err != nil {
		return err
	}
	if err := stack.RegisterCommander(ctx, ledger.NewClient(f, c.log), admin, reading.Ed25519Public(rulesKey), c.log); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}

	// ClickHouse: a shard of replicas sharing a ZooKeeper; the schema replicated ON CLUSTER.
	c.log.Info("starting ZooKeeper and ClickHouse", "replicas", o.Replicas)
	chTLS := chserver.ShardTLS{CertFile: c.certs.CertFile(certClickHouse), KeyFile: c.certs.KeyFile(certClickHouse), Client: c.tls}
	if c.shard, err = chserver.StartShardTLS(ctx, filepath.Join(o.Dir, "clickhouse"), ClickHouseCluster, o.Replicas, chTLS, c.log); err != nil {
		return err
	}
	zk := c.shard.ZooKeeper
	c.add(&member{Process: Process{Name: "zookeeper", Role: "zookeeper", Listen: map[string]string{"client": zk.Addr}},
		current: func() (int, <-chan struct{}) { return zk.Pid(), zk.Done() }})
	for i, addr := range c.shard.Addrs() {
		c.add(&member{Process: Process{Name: "clickhouse-" + strconv.Itoa(i+1), Role: "clickhouse", Listen: map[string]string{"native": addr}},
			current: func() (int, <-chan struct{}) { r := c.shard.Replicas[i]; return r.Pid(), r.Done() },
			restart: func(ctx context.Context) error { return c.shard.Restart(ctx, i) },
			stop:    func() { _ = c.shard.Replicas[i].Stop() }})
	}
	c.info.ClickHouseAddr = strings.Join(c.shard.Addrs(), ",")
	if err := c.migrate(ctx); err != nil {
		return err
	}

	// Anchorline's own services, each a process with its configuration file.
	if err := c.startServices(ctx, logs); err != nil {
		return err
	}
	if err := c.writeTrust(ctx); err != nil {
		return err
	}
	if err := c.writeClientConfig(); err != nil {
		return err
	}
	if err := c.writeClickHouseClient(); err != nil {
		return err
	}
	c.mu.Lock()
	c.info.Ready = true
	c.mu.Unlock()
	if err := c.writeInfo(); err != nil {
		return err
	}
	for _, m := range c.members {
		if m.restart != nil {
			c.wg.Add(1)
			go c.watch(m)
		}
	}
	return nil
}

func (c *Cluster) add(m *member) {
	pid, _ := m.current()
	m.PID = pid
	m.StartTime, _ = startTime(pid)
	c.mu.Lock()
	c.members = append(c.members, m)
	c.info.Processes = append(c.info.Processes, m.Process)
	c.mu.Unlock()
}

// startValidators writes the validator homes (as `ledger init` does) on free loopback ports and
// runs each as `anchorline ledger --home`, then waits for the chain to make blocks.
func (c *Cluster) startValidators(ctx context.Context, admin, anchorKey ed25519.PublicKey, logs string) error {
	o := c.opts
	p2p, err := freePortRun(2 * o.Validators)
	if err != nil {
		return err
	}
	vals, err := node.InitNetwork(node.Network{Dir: filepath.Join(o.Dir, "ledger"), ChainID: ChainID, Validators: o.Validators,
		P2PPort: p2p, RPCPort: p2p + 1, Admins: []ed25519.PublicKey{admin}, AnchorKeys: []ed25519.PublicKey{anchorKey},
		TimeoutCommit: 200 * time.Millisecond, RPCTLSCert: c.certs.CertFile(certLedger), RPCTLSKey: c.certs.KeyFile(certLedger)})
	if err != nil {
		return err
	}
	c.log.Info("starting validators", "n", len(vals))
	for i, v := range vals {
		name := "validator-" + strconv.Itoa(i)
		ch := newChild(name, o.Binary, logs, "ledger", "--home", v.Home, "--log.format", "json")
		if err := ch.start(); err != nil {
			return err
		}
		c.add(&member{Process: Process{Name: name, Role: "validator", Listen: map[string]string{"rpc": v.RPCAddr, "p2p": v.P2PAddr}, Log: ch.log},
			current: ch.process, restart: func(context.Context) error { return ch.start() }, stop: func() { ch.stop(20 * time.Second) }})
		c.info.LedgerRPC = append(c.info.LedgerRPC, v.RPCAddr)
	}
	f, err := ledger.NewFailover(c.info.LedgerRPC, c.tls, c.log)
	if err != nil {
		return err
	}
	l := ledger.NewClient(f, c.log)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := l.WaitHeight(wctx, 2); err != nil {
		return fmt.Errorf("cluster: the validators made no block (their logs are in %s): %w", logs, err)
	}
	return nil
}

func (c *Cluster) migrate(ctx context.Context) error {
	cfg := c.baseConfig()
	conn, err := stack.OpenClickHouse(ctx, cfg, c.log)
	if err != nil {
		return err
	}
	defer conn.Close()
	applied, err := clickhouse.Schema{Database: c.opts.Database, Cluster: ClickHouseCluster}.Migrate(ctx, conn)
	if err != nil {
		return fmt.Errorf("cluster: migrate: %w", err)
	}
	c.log.Info("clickhouse schema migrated on the cluster", "applied", len(applied))
	return nil
}

// service is one Anchorline service process of the cluster.
type service struct {
	name, command string
	role          auth.Role
	conf          map[string]map[string]any
}

func (c *Cluster) startServices(ctx context.Context, logs string) error {
	o := c.opts
	var svcs []service
	svcs = append(svcs, service{name: "auth-1", command: "auth", role: auth.RoleAuth})
	for i := range o.Ingest {
		svcs = append(svcs, service{name: "ingest-" + strconv.Itoa(i+1), command: "ingest", role: auth.RoleIngest,
			conf: map[string]map[string]any{"ingest": {"worker": "ingest-" + strconv.Itoa(i+1)}}})
	}
	for i := range o.Anchor {
		svcs = append(svcs, service{name: "anchor-" + strconv.Itoa(i+1), command: "anchor", role: auth.RoleAnchoring})
	}
	for i := range o.Rules {
		svcs = append(svcs, service{name: "rules-" + strconv.Itoa(i+1), command: "rules", role: auth.RoleRules,
			conf: map[string]map[string]any{"rules": {"key": c.info.RulesKey}}})
	}
	svcs = append(svcs, service{name: "api-1", command: "api"})
	for i, s := range svcs {
		conf, httpAddr, err := c.serviceConfig(s, i)
		if err != nil {
			return err
		}
		file := filepath.Join(o.Dir, "config", s.name+".yaml")
		header := "# Written by `anchorline cluster up` from deployments/config/" + s.command + ".yaml, with this\n" +
			"# cluster's addresses, keys and certificates in place of the deployment's.\n"
		if err := writeYAML(file, header, conf, filepath.Join(o.Dir, "data", s.name)); err != nil {
			return err
		}
		ch := newChild(s.name, o.Binary, logs, s.command, "--config", file)
		if err := ch.start(); err != nil {
			return err
		}
		m := &member{Process: Process{Name: s.name, Role: s.command, Log: ch.log},
			current: ch.process, restart: func(context.Context) error { return ch.start() }, stop: func() { ch.stop(30 * time.Second) }}
		if httpAddr != "" {
			m.Listen = map[string]string{"http": httpAddr}
		}
		c.add(m)
		if s.command == "api" {
			c.info.HTTPAddr = httpAddr
		}
		c.log.Info("starting service", "name", s.name)
		if err := c.waitService(ctx, s, httpAddr, ch); err != nil {
			return err
		}
	}
	return nil
}

// serviceConfig is the configuration of service s (the i-th): deployments/config/<command>.yaml,
// the file operators deploy, with the keys that name this host's layout replaced: the cluster's
// addresses (in an order rotated by i, so that the services spread over the nodes), its
// role's seed, the keys, certificates and the HTTP address it listens on. Every other key
// (batch sizes, windows, intervals) is the deployment file's.
func (c *Cluster) serviceConfig(s service, i int) (map[string]map[string]any, string, error) {
	base, err := deployments.ConfigFile(s.command)
	if err != nil {
		return nil, "", fmt.Errorf("cluster: %w", err)
	}
	conf, err := sections(base)
	if err != nil {
		return nil, "", fmt.Errorf("cluster: deployments/config/%s.yaml: %w", s.command, err)
	}
	rot := func(xs []string) string {
		out := append(append([]string(nil), xs[i%len(xs):]...), xs[:i%len(xs)]...)
		return strings.Join(out, ",")
	}
	layout := map[string]map[string]any{
		"nats":       {"url": rot(c.info.NATSURLs), "replicas": 3, "auth_dir": c.info.AuthDir},
		"clickhouse": {"addr": rot(strings.Split(c.info.ClickHouseAddr, ",")), "database": c.opts.Database, "cluster": ClickHouseCluster, "secure": true},
		"ledger":     {"rpc": rot(c.info.LedgerRPC), "chain_id": ChainID, "admin_key": c.info.AdminKey},
		"anchor":     {"key": c.info.AnchorKey},
		"tls":        {"ca": c.info.CAFile},
		"log":        {"format": "json"},
	}
	if s.role != "" {
		layout["nats"]["credentials"] = filepath.Join(c.info.AuthDir, string(s.role)+".nk")
	}
	var httpAddr string
	if s.command != "auth" {
		if httpAddr, err = freeAddr(); err != nil {
			return nil, "", err
		}
		layout["http"] = map[string]any{"addr": httpAddr, "tls_cert": c.certs.CertFile(certHTTP), "tls_key": c.certs.KeyFile(certHTTP)}
	}
	for _, over := range []map[string]map[string]any{layout, s.conf} {
		for k, v := range over {
			if conf[k] == nil {
				conf[k] = map[string]any{}
			}
			for kk, vv := range v {
				conf[k][kk] = vv
			}
		}
	}
	return conf, httpAddr, nil
}

// sections decodes a configuration file into its sections (nats, clickhouse, ...), each a map
// of keys; data_dir, the one top-level key, is set by writeYAML.
func sections(file []byte) (map[string]map[string]any, error) {
	var top map[string]any
	if err := yaml.Unmarshal(file, &top); err != nil {
		return nil, err
	}
	out := map[string]map[string]any{}
	for k, v := range top {
		if k == "data_dir" {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s is not a section of keys", k)
		}
		out[k] = m
	}
	return out, nil
}

// waitService waits until a service answers /readyz (the auth service, which serves no HTTP,
// until it logs that it runs), or fails with the end of its log if it exits first.
func (c *Cluster) waitService(ctx context.Context, s service, httpAddr string, ch *child) error {
	_, done := ch.process()
	_, err := retry.Do(ctx, retry.Within(2*time.Minute), func(ctx context.Context) (struct{}, error) {
		select {
		case <-done:
			return struct{}{}, retry.Permanent(fmt.Errorf("%s exited: %s", s.name, logTail(ch.log)))
		default:
		}
		if httpAddr == "" {
			b, _ := os.ReadFile(ch.log)
			if strings.Contains(string(b), "anchorline auth is running") {
				return struct{}{}, nil
			}
			return struct{}{}, errors.New("not running yet")
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "https://"+httpAddr+"/readyz", nil)
		resp, err := c.https.Do(req)
		if err != nil {
			return struct{}{}, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return struct{}{}, fmt.Errorf("/readyz %d: %s", resp.StatusCode, body)
		}
		return struct{}{}, nil
	}, func(error, time.Duration) {})
	if err != nil {
		return fmt.Errorf("cluster: %s not ready: %w (log: %s)", s.name, err, ch.log)
	}
	return nil
}

// baseConfig is a configuration for reaching the cluster's ClickHouse.
func (c *Cluster) baseConfig() config.Config {
	cfg := config.Default()
	cfg.DataDir = c.opts.Dir
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database, cfg.ClickHouse.Cluster = c.info.ClickHouseAddr, c.opts.Database, ClickHouseCluster
	cfg.ClickHouse.Secure, cfg.TLS.CA = true, c.info.CAFile
	return cfg
}

func (c *Cluster) writeTrust(ctx context.Context) error {
	_, err := retry.Do(ctx, retry.Within(time.Minute), func(ctx context.Context) (struct{}, error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "https://"+c.info.HTTPAddr+"/v1/trust", nil)
		resp, err := c.https.Do(req)
		if err != nil {
			return struct{}{}, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return struct{}{}, fmt.Errorf("GET /v1/trust: %d %s %v", resp.StatusCode, b, err)
		}
		return struct{}{}, os.WriteFile(c.info.TrustFile, b, 0o644)
	}, func(error, time.Duration) {})
	if err != nil {
		return fmt.Errorf("cluster: trust file: %w", err)
	}
	return nil
}

// writeClientConfig writes client.yaml: what `device simulate`, `proof`, `audit` and `status`
// need to reach the cluster (`--config DIR/client.yaml`).
func (c *Cluster) writeClientConfig() error {
	return writeYAML(c.info.ClientConfig, "# Written by `anchorline cluster up`: the cluster, for client commands (--config).\n", map[string]map[string]any{
		"nats":       {"url": strings.Join(c.info.NATSURLs, ","), "auth_dir": c.info.AuthDir, "credentials": filepath.Join(c.info.AuthDir, string(auth.RoleAdmin)+".nk")},
		"clickhouse": {"addr": c.info.ClickHouseAddr, "database": c.opts.Database, "cluster": ClickHouseCluster, "secure": true},
		"ledger":     {"rpc": strings.Join(c.info.LedgerRPC, ","), "chain_id": ChainID, "admin_key": c.info.AdminKey},
		"http":       {"addr": c.info.HTTPAddr},
		"tls":        {"ca": c.info.CAFile},
	}, filepath.Join(c.opts.Dir, "data", "client"))
}

// writeClickHouseClient writes the clickhouse-client configuration of Info.ClickHouseClient:
// analysts connect to the replicas' TLS port trusting the cluster's CA.
func (c *Cluster) writeClickHouseClient() error {
	var b strings.Builder
	// (No "--" inside an XML comment.)
	b.WriteString("<!-- Written by anchorline cluster up: the client configuration that trusts the cluster's CA (clickhouse-client's config-file, with secure). -->\n")
	b.WriteString("<config>\n    <openSSL>\n        <client>\n            <loadDefaultCAFile>false</loadDefaultCAFile>\n")
	b.WriteString("            <caConfig>")
	if err := xml.EscapeText(&b, []byte(c.info.CAFile)); err != nil {
		return err
	}
	b.WriteString("</caConfig>\n            <verificationMode>strict</verificationMode>\n")
	b.WriteString("            <invalidCertificateHandler><name>RejectCertificateHandler</name></invalidCertificateHandler>\n")
	b.WriteString("        </client>\n    </openSSL>\n</config>\n")
	if err := os.WriteFile(c.info.ClickHouseClient, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// writeYAML writes a configuration file of sections v and data_dir dataDir (each process its
// own: nothing falls back to a .anchorline folder in the supervisor's working directory).
func writeYAML(file, header string, v map[string]map[string]any, dataDir string) error {
	out := map[string]any{"data_dir": dataDir}
	for k, x := range v {
		out[k] = x
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		return fmt.Errorf("cluster: %s: %w", file, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o750); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return os.WriteFile(file, append([]byte(header), b...), 0o600)
}

// HTTPClient is an HTTP client that trusts the cluster's CA (every service serves https).
func (c *Cluster) HTTPClient() *http.Client { return c.https }

// ClientTLS is a TLS configuration that trusts the cluster's CA, for its NATS, ClickHouse and
// ledger clients.
func (c *Cluster) ClientTLS() *tls.Config { return c.tls.Clone() }

// Info returns what cluster.json says.
func (c *Cluster) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	info := c.info
	info.Processes = nil
	for _, m := range c.members {
		info.Processes = append(info.Processes, m.Process)
	}
	return info
}

func (c *Cluster) writeInfo() error {
	b, err := json.MarshalIndent(c.Info(), "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.opts.Dir, InfoFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return os.Rename(tmp, filepath.Join(c.opts.Dir, InfoFile))
}

// watch restarts m whenever its process exits, until the cluster stops.
func (c *Cluster) watch(m *member) {
	defer c.wg.Done()
	for {
		_, done := m.current()
		select {
		case <-done:
		case <-c.ctx.Done():
			return
		}
		c.mu.Lock()
		wait := max(time.Second, time.Until(m.hold))
		stopped := m.stopped
		c.mu.Unlock()
		if stopped || c.ctx.Err() != nil {
			return
		}
		c.log.Warn("cluster process exited; restarting", "name", m.Name, "in", wait.Round(time.Millisecond))
		select {
		case <-time.After(wait):
		case <-c.ctx.Done():
			return
		}
		_, err := retry.Do(c.ctx, retry.Default(), func(ctx context.Context) (struct{}, error) { return struct{}{}, m.restart(ctx) },
			func(err error, next time.Duration) {
				c.log.Warn("cluster process did not restart; retrying", "name", m.Name, "err", err, "retry_in", next)
			})
		if err != nil {
			return
		}
		pid, _ := m.current()
		st, _ := startTime(pid)
		c.mu.Lock()
		m.PID, m.StartTime, m.Restarts, m.RestartedAt = pid, st, m.Restarts+1, time.Now()
		c.mu.Unlock()
		c.log.Info("cluster process restarted", "name", m.Name, "pid", pid)
		if err := c.writeInfo(); err != nil {
			c.log.Warn("cluster.json not updated", "err", err)
		}
	}
}

// stopFor stops member name and starts it again after d.
func (c *Cluster) stopFor(name string, d time.Duration) error {
	c.mu.Lock()
	var m *member
	for _, x := range c.members {
		if x.Name == name {
			m = x
		}
	}
	if m == nil || m.stop == nil {
		c.mu.Unlock()
		return fmt.Errorf("no process %q that can be stopped", name)
	}
	m.hold = time.Now().Add(d)
	c.mu.Unlock()
	c.log.Info("stopping a cluster process on request", "name", name, "for", d)
	m.stop()
	return nil
}

// startControl serves the supervisor's control API on a loopback port.
func (c *Cluster) startControl() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("cluster control: %w", err)
	}
	c.info.Control = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(c.Info())
	})
	mux.HandleFunc("POST /v1/processes/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("for"))
		if err != nil || d < 0 {
			http.Error(w, "for: want a duration such as 20s", http.StatusBadRequest)
			return
		}
		if err := c.stopFor(r.PathValue("name"), d); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	c.control = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = c.control.Serve(ln) }()
	return nil
}

// Stop stops every process the cluster started, services first, NATS last, and marks
// cluster.json as not ready.
func (c *Cluster) Stop() {
	c.cancel()
	c.mu.Lock()
	for _, m := range c.members {
		m.stopped = true
	}
	members := append([]*member(nil), c.members...)
	c.mu.Unlock()
	c.wg.Wait()
	for i := len(members) - 1; i >= 0; i-- {
		m := members[i]
		if m.Role == "nats" || m.Role == "zookeeper" || m.Role == "clickhouse" {
			continue
		}
		if m.stop != nil {
			m.stop()
		}
	}
	if c.shard != nil {
		_ = c.shard.Stop()
	}
	if c.nats != nil {
		c.nats.Stop()
	}
	if c.control != nil {
		_ = c.control.Close()
	}
	c.mu.Lock()
	c.info.Ready = false
	c.mu.Unlock()
	if c.info.Dir != "" {
		_ = c.writeInfo()
	}
}

// freePortRun finds a port p such that p, p+1, p+10, p+11, ... (n ports in pairs 10 apart, the
// validators' P2P and RPC ports) are free on loopback.
func freePortRun(n int) (int, error) {
	for range 50 {
		a, err := freeAddr()
		if err != nil {
			return 0, err
		}
		_, ps, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(ps)
		if p+node.PortStride*n > 65000 {
			continue
		}
		ok := true
		for k := 0; k < n/2 && ok; k++ {
			for _, q := range []int{p + node.PortStride*k, p + 1 + node.PortStride*k} {
				l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(q)))
				if err != nil {
					ok = false
					break
				}
				l.Close()
			}
		}
		if ok {
			return p, nil
		}
	}
	return 0, errors.New("cluster: no free run of loopback ports for the validators")
}

func logTail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(b)
}
