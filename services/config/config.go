package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/anchorline/anchorline/schemas/clickhouse"
)

// Config is everything a service or client command reads. Each field is set by one key (listed
// in keys), dotted as in the YAML file (`clickhouse.addr`); the environment variable is
// ANCHORLINE_ + the key upper-cased with dots as underscores (ANCHORLINE_CLICKHOUSE_ADDR).
type Config struct {
	DataDir    string
	ClickHouse ClickHouse
	NATS       NATS
	HTTP       HTTP
	Anchor     Anchor
	Ledger     Ledger
	Ingest     Ingest
	Rules      Rules
	TLS        TLS
	Log        Log
}

// TLS is how connections are secured.
type TLS struct {
	// Dev makes `dev` generate a private CA and certificates under data_dir/tls (once; later
	// starts reuse them) and serve NATS with TLS required.
	Dev bool
	// CA is the CA certificate file every client trusts for Anchorline's servers. Empty:
	// data_dir/tls/ca.pem if it exists (dev's), else the system's roots and no TLS to NATS
	// unless its URL asks for it.
	CA string
}

// ClickHouse is the analysts' store.
type ClickHouse struct {
	// Addr is the native protocol host:port, or several separated by commas (the replicas of
	// a cluster): a client uses the first that answers and moves on when it stops answering.
	Addr string
	// Cluster is the cluster (a remote_servers entry of the servers' configuration) whose every
	// node holds the database: migrate creates replicated tables ON CLUSTER and Distributed
	// *_all tables; services check that the database was made that way. Empty: one server.
	Cluster string
	// Secure connects with TLS (ClickHouse's secure native port), trusting tls.ca. With
	// embedded and tls.dev, dev's private server listens with TLS on Addr.
	Secure   bool
	Database string // created by migrate
	Username string
	Password string
	// Embedded makes `dev` start a private clickhouse-server (from Debian's package) under
	// data_dir/clickhouse on Addr's port instead of connecting to a running one.
	Embedded bool
	// StartupTimeout is how long a command retries an unreachable ClickHouse before it exits
	// with an error saying so.
	StartupTimeout time.Duration
	// ConsentCluster is the cluster (a remote_servers entry) that the audiences' tables read
	// the consented rows through (services/access): its replicas' user must be able to read
	// the database. Empty: Cluster, or without one the embedded server's own
	// (clickhouse.LocalCluster, which an external server must define to enforce consent).
	ConsentCluster string
	// Retention is how long each table keeps its rows (0: forever): the anchoring role drops
	// a table's monthly partition once all of it is older (services/retention).
	Retention Retention
}

// Retention is how long the analysts' tables keep rows, by the time of their partition key
// (device time for readings and metrics, the period for the rollups, reception for rejects,
// the decision for events); 0 keeps them forever. Batch records, anchors and the batches'
// leaves (batch_leaves) are kept: every proof and audit of what remains needs them.
type Retention struct {
	Readings time.Duration // readings and reading_lookup (the raw bytes and the proofs' copy)
	Metrics  time.Duration
	Rollups  time.Duration // metrics_1m and metrics_1h
	Rejected time.Duration
	Events   time.Duration
	Every    time.Duration // how often the partitions are looked at
}

// ConsentThrough is the cluster the audiences' tables read through (ConsentCluster's rule).
func (c ClickHouse) ConsentThrough() string {
	switch {
	case c.ConsentCluster != "":
		return c.ConsentCluster
	case c.Cluster != "":
		return c.Cluster
	}
	return clickhouse.LocalCluster
}

// NATS is the message bus.
type NATS struct {
	URL string // clients; `dev` serves its embedded server here
	// Credentials is the nkey seed file this process connects with (its role's: ingest,
	// anchoring, simulator, admin). Empty: the role's file under AuthDir if it exists, else no
	// credentials (a server without authentication).
	Credentials string
	// AuthDir holds the broker's identity setup that `anchorline auth init` and `dev` write:
	// the callout issuer's seed, one seed per role and auth.conf. Default: data_dir/nats-auth.
	AuthDir string
	// Replicas is how many copies JetStream keeps of each stream and bucket Anchorline makes
	// (1 on one server, 3 on a cluster); an existing stream with another number is an error.
	Replicas int
	// ReadingsMaxAge is an operator's safety limit on the READINGS stream's disk (0: none):
	// readings leave it once stored and anchored (anchor.purge_readings), but a message older
	// than this is removed even if ingest has not stored it.
	ReadingsMaxAge time.Duration
}

// HTTP is the API.
type HTTP struct {
	Addr string // served by `api` and `dev`; used by client commands
	// TLSCert and TLSKey are the PEM certificate and key the API serves HTTPS with (both or
	// neither); `dev` with tls.dev uses its own when they are not set.
	TLSCert, TLSKey string
	// Tokens is the file of the API's client tokens, one per line: an audience name and the
	// SHA-256 of the token in hex (`anchorline api token` adds one). When set, the endpoints
	// that return raw readings and proofs need `Authorization: Bearer <token>`.
	Tokens string
	// Token is the file holding the token a client command sends.
	Token string
}

// Anchor is the anchoring service.
type Anchor struct {
	Interval time.Duration // one anchor over all pending batches per interval
	// Key is the hex Ed25519 seed file of the anchoring key that signs anchor entries; the
	// ledger accepts anchors only from keys its genesis or an admin entry authorised.
	// Default: data_dir/anchor.key (created by `dev` on first start, and authorised by it).
	Key string
	// PurgeReadings: the anchoring service removes from the Readings stream, every few
	// seconds, the messages that are stored and, if readings, anchored (consume.PurgeAnchored);
	// false keeps every message until the stream's own limits remove it.
	PurgeReadings bool
	// ErasureSweep is how often the anchoring role applies the erase entries it carried out
	// again, to what was stored in their ranges since (services/erasure Sweep): a reading
	// stored after its erasure keeps its bytes about this long.
	ErasureSweep time.Duration
}

// Ledger is the CometBFT ledger.
type Ledger struct {
	ChainID string
	// RPC is the CometBFT RPC address: `dev` and `ledger` listen there (empty: no listener);
	// separate services connect to it, or to the first that answers of several addresses
	// separated by commas (one per validator).
	RPC string
	// AdminKey is the hex Ed25519 seed file that authorises device registration and revocation.
	// Default: data_dir/admin.key (created by `dev` on first start).
	AdminKey      string
	TimeoutCommit time.Duration
}

// Ingest tunes the ingest workers.
// Rules is the automation stage (schemas/rule.md).
type Rules struct {
	// Enabled makes ingest publish verified readings for the rules stage and `dev` run it.
	Enabled bool
	// Embedded makes `dev` run the rules stage in its own process (with Enabled); false
	// leaves it to `anchorline rules` processes.
	Embedded bool
	// Shards splits the devices among rules processes (by a hash of the device id): each shard
	// is served by one process at a time, any process may serve any shard.
	Shards int
	// Key is the hex Ed25519 seed file that signs commands to devices. Default:
	// data_dir/rules.key.
	Key string
}

type Ingest struct {
	BatchSize     int           // readings per ClickHouse batch
	FlushAge      time.Duration // flush a partial batch after this long
	PullBatch     int           // messages per JetStream fetch
	MaxAckPending int           // in flight per consumer
	MaxSize       int           // largest reading accepted, bytes
	Worker        string        // name recorded with each batch
	Verifiers     int           // goroutines verifying signatures; 0: one per core
	Flushers      int           // batches written to ClickHouse at once
	AckWait       time.Duration // unacknowledged readings are redelivered after this
	ChainWait     time.Duration // a reading whose predecessor is not stored waits this long before the break is recorded; 0: ack_wait + 5s
	MaxFuture     time.Duration // device time this far ahead of ours is clock_skew
	MaxAge        time.Duration // device time older than this is clock_skew; 0: no limit
	MaxMetrics    int           // metrics per reading
	MaxTags       int           // tags per reading
	MaxTagLen     int           // bytes of a tag key or value
}

// Log chooses the slog handler.
type Log struct {
	Level  string // debug, info, warn, error
	Format string // text or json
}

// Default is the configuration when nothing is set: a single machine on loopback.
func Default() Config {
	return Config{
		DataDir: ".anchorline",
		ClickHouse: ClickHouse{Addr: "127.0.0.1:9000", Database: "anchorline", Username: "default", StartupTimeout: time.Minute,
			Retention: Retention{Every: time.Hour}},
		NATS:   NATS{URL: "nats://127.0.0.1:4222", Replicas: 1},
		HTTP:   HTTP{Addr: "127.0.0.1:8080"},
		Anchor: Anchor{Interval: 2 * time.Second, PurgeReadings: true, ErasureSweep: time.Minute},
		Ledger: Ledger{ChainID: "anchorline-dev", RPC: "127.0.0.1:26657", TimeoutCommit: 100 * time.Millisecond},
		Ingest: Ingest{BatchSize: 10_000, FlushAge: 200 * time.Millisecond, PullBatch: 1000,
			MaxAckPending: 60_000, MaxSize: 8 << 10, Worker: "ingest", Flushers: 2, AckWait: 30 * time.Second,
			MaxFuture: 5 * time.Minute, MaxAge: 30 * 24 * time.Hour, MaxMetrics: 64, MaxTags: 32, MaxTagLen: 128},
		Rules: Rules{Enabled: true, Embedded: true, Shards: 1},
		TLS:   TLS{Dev: true},
		Log:   Log{Level: "info", Format: "text"},
	}
}

// key is one configuration key and the field of a Config it sets: a *string, *int, *bool or
// *time.Duration.
type key struct {
	name  string
	field any
}

// keys lists every configuration key. Load takes the defaults, the keys a file may hold and
// how each value is decoded from it.
func keys(c *Config) []key {
	return []key{
		{"data_dir", &c.DataDir},
		{"clickhouse.addr", &c.ClickHouse.Addr},
		{"clickhouse.database", &c.ClickHouse.Database},
		{"clickhouse.cluster", &c.ClickHouse.Cluster},
		{"clickhouse.username", &c.ClickHouse.Username},
		{"clickhouse.password", &c.ClickHouse.Password},
		{"clickhouse.embedded", &c.ClickHouse.Embedded},
		{"clickhouse.secure", &c.ClickHouse.Secure},
		{"clickhouse.startup_timeout", &c.ClickHouse.StartupTimeout},
		{"clickhouse.consent_cluster", &c.ClickHouse.ConsentCluster},
		{"clickhouse.retention.readings", &c.ClickHouse.Retention.Readings},
		{"clickhouse.retention.metrics", &c.ClickHouse.Retention.Metrics},
		{"clickhouse.retention.rollups", &c.ClickHouse.Retention.Rollups},
		{"clickhouse.retention.rejected", &c.ClickHouse.Retention.Rejected},
		{"clickhouse.retention.events", &c.ClickHouse.Retention.Events},
		{"clickhouse.retention.every", &c.ClickHouse.Retention.Every},
		{"nats.url", &c.NATS.URL},
		{"nats.credentials", &c.NATS.Credentials},
		{"nats.auth_dir", &c.NATS.AuthDir},
		{"nats.replicas", &c.NATS.Replicas},
		{"nats.readings_max_age", &c.NATS.ReadingsMaxAge},
		{"http.addr", &c.HTTP.Addr},
		{"http.tls_cert", &c.HTTP.TLSCert},
		{"http.tls_key", &c.HTTP.TLSKey},
		{"http.tokens", &c.HTTP.Tokens},
		{"http.token", &c.HTTP.Token},
		{"anchor.interval", &c.Anchor.Interval},
		{"anchor.key", &c.Anchor.Key},
		{"anchor.purge_readings", &c.Anchor.PurgeReadings},
		{"anchor.erasure_sweep", &c.Anchor.ErasureSweep},
		{"ledger.chain_id", &c.Ledger.ChainID},
		{"ledger.rpc", &c.Ledger.RPC},
		{"ledger.admin_key", &c.Ledger.AdminKey},
		{"ledger.timeout_commit", &c.Ledger.TimeoutCommit},
		{"ingest.batch_size", &c.Ingest.BatchSize},
		{"ingest.flush_age", &c.Ingest.FlushAge},
		{"ingest.pull_batch", &c.Ingest.PullBatch},
		{"ingest.max_ack_pending", &c.Ingest.MaxAckPending},
		{"ingest.max_size", &c.Ingest.MaxSize},
		{"ingest.worker", &c.Ingest.Worker},
		{"ingest.verifiers", &c.Ingest.Verifiers},
		{"ingest.flushers", &c.Ingest.Flushers},
		{"ingest.ack_wait", &c.Ingest.AckWait},
		{"ingest.chain_wait", &c.Ingest.ChainWait},
		{"ingest.max_future", &c.Ingest.MaxFuture},
		{"ingest.max_age", &c.Ingest.MaxAge},
		{"ingest.max_metrics", &c.Ingest.MaxMetrics},
		{"ingest.max_tags", &c.Ingest.MaxTags},
		{"ingest.max_tag_len", &c.Ingest.MaxTagLen},
		{"rules.enabled", &c.Rules.Enabled},
		{"rules.embedded", &c.Rules.Embedded},
		{"rules.shards", &c.Rules.Shards},
		{"rules.key", &c.Rules.Key},
		{"tls.dev", &c.TLS.Dev},
		{"tls.ca", &c.TLS.CA},
		{"log.level", &c.Log.Level},
		{"log.format", &c.Log.Format},
	}
}

// value is what k's field holds, and kind says in words what it must hold.
func (k key) value() any {
	switch f := k.field.(type) {
	case *string:
		return *f
	case *int:
		return *f
	case *bool:
		return *f
	case *time.Duration:
		return *f
	}
	return nil
}

func (k key) kind() string {
	switch k.field.(type) {
	case *int:
		return "a whole number"
	case *bool:
		return "true or false"
	case *time.Duration:
		return "a duration like 30s, 200ms or 1h"
	}
	return "a string"
}

// Flags declares the flags every command accepts for the common keys.
func Flags(fs *pflag.FlagSet) {
	d := Default()
	fs.String("config", "", "YAML configuration file")
	fs.String("data_dir", d.DataDir, "state of the embedded NATS server and ledger (dev)")
	fs.String("clickhouse.addr", d.ClickHouse.Addr, "ClickHouse native protocol address (several, comma-separated, for the replicas of a cluster)")
	fs.String("clickhouse.cluster", d.ClickHouse.Cluster, "ClickHouse cluster (remote_servers entry) whose nodes hold the database: replicated tables ON CLUSTER")
	fs.String("clickhouse.database", d.ClickHouse.Database, "ClickHouse database")
	fs.Bool("clickhouse.embedded", d.ClickHouse.Embedded, "dev: start a private clickhouse-server under data_dir")
	fs.Bool("clickhouse.secure", d.ClickHouse.Secure, "connect to ClickHouse with TLS (its secure native port), trusting tls.ca")
	fs.Duration("clickhouse.startup_timeout", d.ClickHouse.StartupTimeout, "how long to retry an unreachable ClickHouse before giving up")
	fs.String("clickhouse.consent_cluster", d.ClickHouse.ConsentCluster, "cluster (remote_servers entry) the audiences' consented tables read through (default: clickhouse.cluster, else anchorline_local)")
	fs.Duration("clickhouse.retention.readings", 0, "how long readings (and reading_lookup) keep rows, by device time; whole months are dropped (0: forever)")
	fs.Duration("clickhouse.retention.metrics", 0, "how long metrics keep rows, by device time (0: forever)")
	fs.Duration("clickhouse.retention.rollups", 0, "how long metrics_1m and metrics_1h keep rows, by period (0: forever)")
	fs.Duration("clickhouse.retention.rejected", 0, "how long rejected keeps rows, by reception (0: forever)")
	fs.Duration("clickhouse.retention.events", 0, "how long events keep rows (0: forever)")
	fs.Duration("clickhouse.retention.every", d.ClickHouse.Retention.Every, "how often the anchoring role drops the partitions past their retention")
	fs.String("nats.url", d.NATS.URL, "NATS server URL")
	fs.String("nats.credentials", "", "nkey seed file this command connects to NATS with (default: its role's under nats.auth_dir, if there)")
	fs.Int("nats.replicas", d.NATS.Replicas, "copies of each stream JetStream keeps (1 on one server, 3 on a cluster)")
	fs.Duration("nats.readings_max_age", d.NATS.ReadingsMaxAge, "safety limit: READINGS drops messages older than this even if not stored (0: none; readings leave it once stored and anchored)")
	fs.String("nats.auth_dir", "", "broker identity setup: service seeds, callout issuer, auth.conf (default data_dir/nats-auth)")
	fs.String("http.addr", d.HTTP.Addr, "HTTP API address")
	fs.String("http.tls_cert", "", "PEM certificate the API serves HTTPS with (with http.tls_key)")
	fs.String("http.tls_key", "", "PEM private key of http.tls_cert")
	fs.String("http.tokens", "", "API: file of client tokens (audience and SHA-256 per line); readings and proofs then need one")
	fs.String("http.token", "", "client commands: file holding the API token to send")
	fs.Duration("anchor.interval", d.Anchor.Interval, "time between anchors")
	fs.Bool("anchor.purge_readings", d.Anchor.PurgeReadings, "remove from the READINGS stream the messages stored and anchored (false: keep them)")
	fs.String("anchor.key", "", "anchoring key file that signs anchor entries (default data_dir/anchor.key)")
	fs.Duration("anchor.erasure_sweep", d.Anchor.ErasureSweep, "how often the erase entries carried out are applied again to readings stored in their ranges since")
	fs.String("ledger.rpc", d.Ledger.RPC, "CometBFT RPC address (clients: several, comma-separated, one per validator)")
	fs.String("ledger.admin_key", "", "admin key file (default data_dir/admin.key)")
	fs.Bool("rules.enabled", d.Rules.Enabled, "run the rules stage: ingest publishes verified readings for it, dev runs it")
	fs.Bool("rules.embedded", d.Rules.Embedded, "dev: run the rules stage in this process (false: anchorline rules processes do)")
	fs.Int("rules.shards", d.Rules.Shards, "shards of devices among rules processes (the same on every ingest and rules process)")
	fs.String("rules.key", "", "key file that signs commands to devices (default data_dir/rules.key)")
	fs.Bool("tls.dev", d.TLS.Dev, "dev: generate a private CA and certificates under data_dir/tls and serve NATS with TLS")
	fs.String("tls.ca", "", "CA certificate file clients trust (default data_dir/tls/ca.pem if it exists)")
	fs.String("log.level", d.Log.Level, "log level: debug, info, warn or error")
	fs.String("log.format", d.Log.Format, "log format: text or json")
}

// Load reads the configuration: defaults, then the file named by --config, then ANCHORLINE_*
// variables, then flags that were set. Every error wraps ErrInvalid and names the key (or
// --config) it is about: a key the file holds that is not a configuration key, a value that is
// not of its key's type, or a value Validate rejects.
func Load(fs *pflag.FlagSet) (Config, error) {
	c := Default()
	ks := keys(&c)
	v := viper.New()
	for _, k := range ks {
		v.SetDefault(k.name, k.value())
	}
	v.SetEnvPrefix("ANCHORLINE")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if fs != nil {
		for _, k := range ks {
			if f := fs.Lookup(k.name); f != nil {
				if err := v.BindPFlag(k.name, f); err != nil {
					return Config{}, fmt.Errorf("config: flag --%s: %w", k.name, err)
				}
			}
		}
		if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
			if err := readFile(v, f.Value.String(), ks); err != nil {
				return Config{}, err
			}
		}
	}
	for _, k := range ks {
		if err := v.UnmarshalKey(k.name, k.field); err != nil {
			return Config{}, invalid(k.name, "%q is not %s", fmt.Sprint(v.Get(k.name)), k.kind())
		}
	}
	if c.Ledger.AdminKey == "" {
		c.Ledger.AdminKey = filepath.Join(c.DataDir, "admin.key")
	}
	c.Anchor.Key = c.AnchorKey()
	c.NATS.AuthDir = c.AuthDir()
	return c, c.Validate()
}

// readFile merges the YAML file at path into v, refusing keys that are not in ks: viper would
// ignore them, and a misspelt key would silently do nothing.
func readFile(v *viper.Viper, path string, ks []key) error {
	file := viper.New()
	file.SetConfigFile(path)
	file.SetConfigType("yaml")
	if err := file.ReadInConfig(); err != nil {
		var parse viper.ConfigParseError
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return invalid("--config", "%s: no such file", path)
		case errors.As(err, &parse):
			return invalid("--config", "%s is not YAML: %v", path, errors.Unwrap(parse))
		}
		return invalid("--config", "%s: %v", path, err)
	}
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = k.name
	}
	for _, name := range file.AllKeys() {
		if slices.Contains(names, name) {
			continue
		}
		if section(name, names) {
			if val := file.Get(name); val == nil || isMap(val) {
				continue // an empty section
			}
			return invalid(name, "in %s is a section (keys like %s.%s), not a value", path, name, firstKeyIn(name, names))
		}
		for _, k := range ks {
			if strings.HasPrefix(name, k.name+".") {
				return invalid(k.name, "in %s must be %s, not a section", path, k.kind())
			}
		}
		return invalid(name, "in %s is not a configuration key; %s", path, suggest(name, names))
	}
	return v.MergeConfigMap(file.AllSettings())
}

func isMap(v any) bool {
	_, ok := v.(map[string]any)
	return ok
}

// section reports whether name is the section of some key (clickhouse for clickhouse.addr).
func section(name string, names []string) bool { return firstKeyIn(name, names) != "" }

func firstKeyIn(section string, names []string) string {
	for _, n := range names {
		if rest, ok := strings.CutPrefix(n, section+"."); ok {
			return rest
		}
	}
	return ""
}

// suggest names the key that name is most likely a misspelling of, or the keys of its section.
func suggest(name string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if d := distance(name, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	if best != "" {
		return "did you mean " + best + "?"
	}
	sec, _, _ := strings.Cut(name, ".")
	var in []string
	for _, n := range names {
		if rest, ok := strings.CutPrefix(n, sec+"."); ok {
			in = append(in, rest)
		}
	}
	if len(in) > 0 {
		return fmt.Sprintf("the %s keys are %s", sec, strings.Join(in, ", "))
	}
	return "deployments/config/anchorline.yaml lists every key"
}

// distance is the Levenshtein distance between a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ErrInvalid marks a configuration error; the message names the field and the fix.
var ErrInvalid = errors.New("invalid configuration")

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// Validate checks every field and names the first one that is wrong, with the values it
// accepts.
func (c Config) Validate() error {
	for _, check := range []func() error{
		c.checkDataDir, c.ClickHouse.check, c.NATS.check, c.HTTP.check, c.Anchor.check, c.Ledger.check, c.Ingest.check, c.Rules.check, c.Log.check,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (c Config) checkDataDir() error {
	if c.DataDir == "" {
		return invalid("data_dir", "must not be empty (a folder for the embedded NATS and ledger state)")
	}
	return nil
}

func (c ClickHouse) check() error {
	switch {
	case slices.ContainsFunc(c.Addrs(), func(a string) bool { return checkAddr(a, false) != nil }) || len(c.Addrs()) == 0:
		return invalid("clickhouse.addr", "%q is not host:port with a port from 1 to 65535 (for example 127.0.0.1:9000; several separated by commas)", c.Addr)
	case c.Embedded && len(c.Addrs()) > 1:
		return invalid("clickhouse.addr", "%q: clickhouse.embedded starts one server, on one address", c.Addr)
	case c.Cluster != "" && !validIdent(c.Cluster):
		return invalid("clickhouse.cluster", "%q must be letters, digits and underscores (the name of a remote_servers entry)", c.Cluster)
	case c.Cluster != "" && c.Embedded:
		return invalid("clickhouse.cluster", "%q: clickhouse.embedded starts one server without a cluster; unset one of them", c.Cluster)
	case !validIdent(c.Database):
		return invalid("clickhouse.database", "%q must be letters, digits and underscores (default anchorline)", c.Database)
	case c.Username == "":
		return invalid("clickhouse.username", "must not be empty (ClickHouse's own user is default)")
	case c.StartupTimeout <= 0:
		return invalid("clickhouse.startup_timeout", "%s must be positive (default 1m)", c.StartupTimeout)
	case c.ConsentCluster != "" && !validIdent(c.ConsentCluster):
		return invalid("clickhouse.consent_cluster", "%q must be letters, digits and underscores (the name of a remote_servers entry)", c.ConsentCluster)
	case c.Retention.Every <= 0:
		return invalid("clickhouse.retention.every", "%s must be positive (default 1h)", c.Retention.Every)
	}
	for _, r := range []struct {
		key string
		d   time.Duration
	}{{"readings", c.Retention.Readings}, {"metrics", c.Retention.Metrics}, {"rollups", c.Retention.Rollups}, {"rejected", c.Retention.Rejected}, {"events", c.Retention.Events}} {
		if r.d != 0 && r.d < 24*time.Hour {
			return invalid("clickhouse.retention."+r.key, "%s: give 0 (keep forever) or at least 24h; rows leave by whole months", r.d)
		}
	}
	return nil
}

func (n NATS) check() error {
	for u := range strings.SplitSeq(n.URL, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, p.Scheme) {
			return invalid("nats.url", "%q is not a URL like nats://127.0.0.1:4222 (nats, tls, ws or wss; several separated by commas)", n.URL)
		}
	}
	if n.ReadingsMaxAge < 0 || n.ReadingsMaxAge > 0 && n.ReadingsMaxAge < time.Hour {
		return invalid("nats.readings_max_age", "%s: want 0 (no limit) or at least 1h: the stream drops what is older even if ingest has not stored it, so a short limit loses readings after an outage", n.ReadingsMaxAge)
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		return invalid("nats.replicas", "%d: want 1 (one server) to 5; JetStream clusters keep 3 copies as a rule", n.Replicas)
	}
	return nil
}

func (h HTTP) check() error {
	if checkAddr(h.Addr, true) != nil {
		return invalid("http.addr", "%q is not host:port (for example 127.0.0.1:8080; port 0 listens on any free port)", h.Addr)
	}
	if (h.TLSCert == "") != (h.TLSKey == "") {
		return invalid("http.tls_cert", "http.tls_cert and http.tls_key go together: give both files or neither")
	}
	return nil
}

func (a Anchor) check() error {
	if a.Interval < 10*time.Millisecond {
		return invalid("anchor.interval", "%s is too short; use at least 10ms (default 2s)", a.Interval)
	}
	if a.ErasureSweep < 10*time.Millisecond {
		return invalid("anchor.erasure_sweep", "%s is too short; use at least 10ms (default 1m)", a.ErasureSweep)
	}
	return nil
}

func (r Rules) check() error {
	if r.Shards < 1 || r.Shards > 256 {
		return invalid("rules.shards", "%d: want 1 to 256, the same on every ingest and rules process", r.Shards)
	}
	return nil
}

// RulesKey is the rules stage's command key file: rules.key, or data_dir/rules.key.
func (c Config) RulesKey() string {
	if c.Rules.Key != "" {
		return c.Rules.Key
	}
	return filepath.Join(c.DataDir, "rules.key")
}

// AnchorKey is the anchoring key file: anchor.key, or data_dir/anchor.key when it is not set.
func (c Config) AnchorKey() string {
	if c.Anchor.Key != "" {
		return c.Anchor.Key
	}
	return filepath.Join(c.DataDir, "anchor.key")
}

// TLSDir is where dev keeps its private CA and certificates.
func (c Config) TLSDir() string { return filepath.Join(c.DataDir, "tls") }

// CAFile is the CA clients trust: tls.ca, or dev's under data_dir/tls if it exists, or "".
func (c Config) CAFile() string {
	if c.TLS.CA != "" {
		return c.TLS.CA
	}
	if f := filepath.Join(c.TLSDir(), "ca.pem"); fileExists(f) {
		return f
	}
	return ""
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// AuthDir is the broker identity setup's directory: nats.auth_dir, or data_dir/nats-auth.
func (c Config) AuthDir() string {
	if c.NATS.AuthDir != "" {
		return c.NATS.AuthDir
	}
	return filepath.Join(c.DataDir, "nats-auth")
}

// maxChainID is CometBFT's limit on the length of a chain id.
const maxChainID = 50

func (l Ledger) check() error {
	switch {
	case l.ChainID == "":
		return invalid("ledger.chain_id", "must not be empty (default anchorline-dev)")
	case len(l.ChainID) > maxChainID:
		return invalid("ledger.chain_id", "%q is %d bytes; CometBFT allows at most %d", l.ChainID, len(l.ChainID), maxChainID)
	case l.RPC != "" && !rpcAddrs(l.RPC):
		return invalid("ledger.rpc", "%q is not host:port (for example 127.0.0.1:26657), several separated by commas, or empty for none", l.RPC)
	case l.AdminKey == "":
		return invalid("ledger.admin_key", "must name the admin key file (default data_dir/admin.key)")
	case l.TimeoutCommit <= 0:
		return invalid("ledger.timeout_commit", "%s must be positive (default 100ms)", l.TimeoutCommit)
	}
	return nil
}

// rpcAddrs reports whether s is one or more host:port addresses separated by commas.
func rpcAddrs(s string) bool {
	for a := range strings.SplitSeq(s, ",") {
		if checkAddr(strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(a), "tcp://"), "http://"), true) != nil {
			return false
		}
	}
	return true
}

// Addrs are the addresses clickhouse.addr lists, in order.
func (c ClickHouse) Addrs() []string { return splitList(c.Addr) }

// RPCAddrs are the addresses ledger.rpc lists, in order.
func (l Ledger) RPCAddrs() []string { return splitList(l.RPC) }

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for a := range strings.SplitSeq(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func (i Ingest) check() error {
	switch {
	case i.BatchSize < 1:
		return invalid("ingest.batch_size", "%d must be at least 1 (default 10000)", i.BatchSize)
	case i.FlushAge <= 0:
		return invalid("ingest.flush_age", "%s must be positive (default 200ms)", i.FlushAge)
	case i.PullBatch < 1:
		return invalid("ingest.pull_batch", "%d must be at least 1 (default 1000)", i.PullBatch)
	case i.MaxAckPending < i.PullBatch:
		return invalid("ingest.max_ack_pending", "%d must be at least ingest.pull_batch (%d)", i.MaxAckPending, i.PullBatch)
	case i.MaxSize < 256:
		return invalid("ingest.max_size", "%d bytes is too small; use at least 256 (default 8192)", i.MaxSize)
	case i.Worker == "":
		return invalid("ingest.worker", "must not be empty: it names this worker in the batches it records (default ingest)")
	case i.Verifiers < 0:
		return invalid("ingest.verifiers", "%d must not be negative (0: one per core)", i.Verifiers)
	case i.Flushers < 1:
		return invalid("ingest.flushers", "%d must be at least 1 (default 2)", i.Flushers)
	case i.AckWait < time.Second:
		return invalid("ingest.ack_wait", "%s must be at least 1s (default 30s)", i.AckWait)
	case i.ChainWait < 0:
		return invalid("ingest.chain_wait", "%s must not be negative (0: ingest.ack_wait + 5s)", i.ChainWait)
	case i.ChainWait != 0 && i.ChainWait <= i.AckWait:
		return invalid("ingest.chain_wait", "%s must be longer than ingest.ack_wait (%s): a reading whose predecessor is held by a worker that died "+
			"would be recorded as a chain break before the predecessor is redelivered; set it above %s, or 0 for ingest.ack_wait + 5s",
			i.ChainWait, i.AckWait, i.AckWait)
	case i.MaxFuture <= 0:
		return invalid("ingest.max_future", "%s must be positive (default 5m)", i.MaxFuture)
	case i.MaxAge < 0:
		return invalid("ingest.max_age", "%s must not be negative (0: no limit; default 720h)", i.MaxAge)
	case i.MaxMetrics < 1:
		return invalid("ingest.max_metrics", "%d must be at least 1 (default 64)", i.MaxMetrics)
	case i.MaxTags < 0:
		return invalid("ingest.max_tags", "%d must not be negative (default 32)", i.MaxTags)
	case i.MaxTagLen < 1:
		return invalid("ingest.max_tag_len", "%d must be at least 1 (default 128)", i.MaxTagLen)
	}
	return nil
}

func (l Log) check() error {
	switch strings.ToLower(l.Level) {
	case "debug", "info", "warn", "error":
	default:
		return invalid("log.level", "%q must be debug, info, warn or error", l.Level)
	}
	switch strings.ToLower(l.Format) {
	case "text", "json":
	default:
		return invalid("log.format", "%q must be text or json", l.Format)
	}
	return nil
}

// checkAddr checks that addr is host:port with a numeric port; port 0 (any free port) only
// where listen is set.
func checkAddr(addr string, listen bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return err
	}
	if p == 0 && !listen {
		return errors.New("port 0")
	}
	return nil
}

func validIdent(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
