package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Config is everything a service or client command reads. Keys are dotted as in the YAML file
// (`clickhouse.addr`); the environment variable is ANCHORLINE_ + the key upper-cased with dots
// as underscores (ANCHORLINE_CLICKHOUSE_ADDR).
type Config struct {
	DataDir    string     `mapstructure:"data_dir"`
	ClickHouse ClickHouse `mapstructure:"clickhouse"`
	NATS       NATS       `mapstructure:"nats"`
	HTTP       HTTP       `mapstructure:"http"`
	Anchor     Anchor     `mapstructure:"anchor"`
	Ledger     Ledger     `mapstructure:"ledger"`
	Ingest     Ingest     `mapstructure:"ingest"`
	Log        Log        `mapstructure:"log"`
}

// ClickHouse is the analysts' store.
type ClickHouse struct {
	Addr     string `mapstructure:"addr"`     // native protocol host:port
	Database string `mapstructure:"database"` // created by migrate
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	// Embedded makes `dev` start a private clickhouse-server (from Debian's package) under
	// data_dir/clickhouse on Addr's port instead of connecting to a running one.
	Embedded bool `mapstructure:"embedded"`
}

// NATS is the message bus.
type NATS struct {
	URL string `mapstructure:"url"` // clients; `dev` serves its embedded server here
}

// HTTP is the API.
type HTTP struct {
	Addr string `mapstructure:"addr"` // served by `api` and `dev`; used by client commands
}

// Anchor is the anchoring service.
type Anchor struct {
	Interval time.Duration `mapstructure:"interval"` // one anchor over all pending batches per interval
}

// Ledger is the CometBFT ledger.
type Ledger struct {
	ChainID string `mapstructure:"chain_id"`
	// RPC is the CometBFT RPC address: `dev` listens there (empty: no listener), separate
	// services connect to it.
	RPC string `mapstructure:"rpc"`
	// AdminKey is the hex Ed25519 seed file that authorises device registration and revocation.
	// Default: data_dir/admin.key (created by `dev` on first start).
	AdminKey      string        `mapstructure:"admin_key"`
	TimeoutCommit time.Duration `mapstructure:"timeout_commit"`
}

// Ingest tunes the ingest workers.
type Ingest struct {
	BatchSize     int           `mapstructure:"batch_size"`      // readings per ClickHouse batch
	FlushAge      time.Duration `mapstructure:"flush_age"`       // flush a partial batch after this long
	PullBatch     int           `mapstructure:"pull_batch"`      // messages per JetStream fetch
	MaxAckPending int           `mapstructure:"max_ack_pending"` // in flight per consumer
	MaxSize       int           `mapstructure:"max_size"`        // largest reading accepted, bytes
	Worker        string        `mapstructure:"worker"`          // name recorded with each batch
	Verifiers     int           `mapstructure:"verifiers"`       // goroutines verifying signatures; 0: one per core
	Flushers      int           `mapstructure:"flushers"`        // batches written to ClickHouse at once
	AckWait       time.Duration `mapstructure:"ack_wait"`        // unacknowledged readings are redelivered after this
	ChainWait     time.Duration `mapstructure:"chain_wait"`      // a reading whose predecessor is not stored waits this long before the break is recorded; 0: ack_wait + 5s
	MaxFuture     time.Duration `mapstructure:"max_future"`      // device time this far ahead of ours is clock_skew
	MaxAge        time.Duration `mapstructure:"max_age"`         // device time older than this is clock_skew; 0: no limit
	MaxMetrics    int           `mapstructure:"max_metrics"`     // metrics per reading
	MaxTags       int           `mapstructure:"max_tags"`        // tags per reading
	MaxTagLen     int           `mapstructure:"max_tag_len"`     // bytes of a tag key or value
}

// Log chooses the slog handler.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
}

// Default is the configuration when nothing is set: a single machine on loopback.
func Default() Config {
	return Config{
		DataDir:    ".anchorline",
		ClickHouse: ClickHouse{Addr: "127.0.0.1:9000", Database: "anchorline", Username: "default"},
		NATS:       NATS{URL: "nats://127.0.0.1:4222"},
		HTTP:       HTTP{Addr: "127.0.0.1:8080"},
		Anchor:     Anchor{Interval: 2 * time.Second},
		Ledger:     Ledger{ChainID: "anchorline-dev", RPC: "127.0.0.1:26657", TimeoutCommit: 100 * time.Millisecond},
		Ingest: Ingest{BatchSize: 10_000, FlushAge: 200 * time.Millisecond, PullBatch: 1000,
			MaxAckPending: 60_000, MaxSize: 8 << 10, Worker: "ingest", Flushers: 2, AckWait: 30 * time.Second,
			MaxFuture: 5 * time.Minute, MaxAge: 30 * 24 * time.Hour, MaxMetrics: 64, MaxTags: 32, MaxTagLen: 128},
		Log: Log{Level: "info", Format: "text"},
	}
}

// Flags declares the flags every command accepts for the common keys.
func Flags(fs *pflag.FlagSet) {
	d := Default()
	fs.String("config", "", "YAML configuration file")
	fs.String("data_dir", d.DataDir, "state of the embedded NATS server and ledger (dev)")
	fs.String("clickhouse.addr", d.ClickHouse.Addr, "ClickHouse native protocol address")
	fs.String("clickhouse.database", d.ClickHouse.Database, "ClickHouse database")
	fs.Bool("clickhouse.embedded", d.ClickHouse.Embedded, "dev: start a private clickhouse-server under data_dir")
	fs.String("nats.url", d.NATS.URL, "NATS server URL")
	fs.String("http.addr", d.HTTP.Addr, "HTTP API address")
	fs.Duration("anchor.interval", d.Anchor.Interval, "time between anchors")
	fs.String("ledger.rpc", d.Ledger.RPC, "CometBFT RPC address")
	fs.String("ledger.admin_key", "", "admin key file (default data_dir/admin.key)")
	fs.String("log.level", d.Log.Level, "log level: debug, info, warn or error")
}

// Load reads the configuration: defaults, then the file named by --config, then ANCHORLINE_*
// variables, then flags that were set.
func Load(fs *pflag.FlagSet) (Config, error) {
	v := viper.New()
	d := Default()
	for key, val := range map[string]any{
		"data_dir": d.DataDir, "clickhouse.addr": d.ClickHouse.Addr, "clickhouse.database": d.ClickHouse.Database,
		"clickhouse.username": d.ClickHouse.Username, "clickhouse.password": d.ClickHouse.Password,
		"clickhouse.embedded": d.ClickHouse.Embedded, "nats.url": d.NATS.URL, "http.addr": d.HTTP.Addr,
		"anchor.interval": d.Anchor.Interval, "ledger.chain_id": d.Ledger.ChainID, "ledger.rpc": d.Ledger.RPC,
		"ledger.admin_key": d.Ledger.AdminKey, "ledger.timeout_commit": d.Ledger.TimeoutCommit,
		"ingest.batch_size": d.Ingest.BatchSize, "ingest.flush_age": d.Ingest.FlushAge,
		"ingest.pull_batch": d.Ingest.PullBatch, "ingest.max_ack_pending": d.Ingest.MaxAckPending,
		"ingest.max_size": d.Ingest.MaxSize, "ingest.worker": d.Ingest.Worker,
		"ingest.verifiers": d.Ingest.Verifiers, "ingest.flushers": d.Ingest.Flushers, "ingest.ack_wait": d.Ingest.AckWait,
		"ingest.chain_wait": d.Ingest.ChainWait,
		"ingest.max_future": d.Ingest.MaxFuture, "ingest.max_age": d.Ingest.MaxAge,
		"ingest.max_metrics": d.Ingest.MaxMetrics, "ingest.max_tags": d.Ingest.MaxTags, "ingest.max_tag_len": d.Ingest.MaxTagLen,
		"log.level": d.Log.Level, "log.format": d.Log.Format,
	} {
		v.SetDefault(key, val)
	}
	v.SetEnvPrefix("ANCHORLINE")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if fs != nil {
		if err := v.BindPFlags(fs); err != nil {
			return Config{}, fmt.Errorf("config: flags: %w", err)
		}
		if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
			v.SetConfigFile(f.Value.String())
			if err := v.ReadInConfig(); err != nil {
				return Config{}, fmt.Errorf("config: file %s: %w", f.Value.String(), err)
			}
		}
	}
	var c Config
	if err := v.Unmarshal(&c); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if c.Ledger.AdminKey == "" {
		c.Ledger.AdminKey = filepath.Join(c.DataDir, "admin.key")
	}
	return c, c.Validate()
}

// ErrInvalid marks a configuration error; the message names the field and the fix.
var ErrInvalid = errors.New("invalid configuration")

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// Validate checks every field and names the first one that is wrong.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return invalid("data_dir", "must not be empty (a folder for the embedded NATS and ledger state)")
	}
	if _, _, err := net.SplitHostPort(c.ClickHouse.Addr); err != nil {
		return invalid("clickhouse.addr", "%q is not host:port (for example 127.0.0.1:9000)", c.ClickHouse.Addr)
	}
	if !validIdent(c.ClickHouse.Database) {
		return invalid("clickhouse.database", "%q must be letters, digits and underscores", c.ClickHouse.Database)
	}
	if u, err := url.Parse(c.NATS.URL); err != nil || u.Host == "" {
		return invalid("nats.url", "%q is not a URL like nats://127.0.0.1:4222", c.NATS.URL)
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
		return invalid("http.addr", "%q is not host:port (for example 127.0.0.1:8080)", c.HTTP.Addr)
	}
	if c.Anchor.Interval < 10*time.Millisecond {
		return invalid("anchor.interval", "%s is too short; use at least 10ms (dev default 2s)", c.Anchor.Interval)
	}
	if c.Ledger.ChainID == "" {
		return invalid("ledger.chain_id", "must not be empty")
	}
	if c.Ledger.RPC != "" {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(c.Ledger.RPC, "tcp://"), "http://")); err != nil {
			return invalid("ledger.rpc", "%q is not host:port (for example 127.0.0.1:26657), or empty for none", c.Ledger.RPC)
		}
	}
	switch {
	case c.Ingest.BatchSize < 1:
		return invalid("ingest.batch_size", "%d must be at least 1 (default 10000)", c.Ingest.BatchSize)
	case c.Ingest.FlushAge <= 0:
		return invalid("ingest.flush_age", "%s must be positive (default 200ms)", c.Ingest.FlushAge)
	case c.Ingest.PullBatch < 1:
		return invalid("ingest.pull_batch", "%d must be at least 1 (default 1000)", c.Ingest.PullBatch)
	case c.Ingest.MaxAckPending < c.Ingest.PullBatch:
		return invalid("ingest.max_ack_pending", "%d must be at least ingest.pull_batch (%d)", c.Ingest.MaxAckPending, c.Ingest.PullBatch)
	case c.Ingest.Verifiers < 0:
		return invalid("ingest.verifiers", "%d must not be negative (0: one per core)", c.Ingest.Verifiers)
	case c.Ingest.Flushers < 1:
		return invalid("ingest.flushers", "%d must be at least 1 (default 2)", c.Ingest.Flushers)
	case c.Ingest.AckWait < time.Second:
		return invalid("ingest.ack_wait", "%s must be at least 1s (default 30s)", c.Ingest.AckWait)
	case c.Ingest.ChainWait < 0:
		return invalid("ingest.chain_wait", "%s must not be negative (0: ingest.ack_wait + 5s)", c.Ingest.ChainWait)
	case c.Ingest.MaxFuture <= 0:
		return invalid("ingest.max_future", "%s must be positive (default 5m)", c.Ingest.MaxFuture)
	case c.Ingest.MaxAge < 0:
		return invalid("ingest.max_age", "%s must not be negative (0: no limit; default 720h)", c.Ingest.MaxAge)
	case c.Ingest.MaxMetrics < 1:
		return invalid("ingest.max_metrics", "%d must be at least 1 (default 64)", c.Ingest.MaxMetrics)
	case c.Ingest.MaxTags < 0 || c.Ingest.MaxTagLen < 1:
		return invalid("ingest.max_tags", "max_tags %d must not be negative and max_tag_len %d positive (defaults 32, 128)", c.Ingest.MaxTags, c.Ingest.MaxTagLen)
	case c.Ingest.MaxSize < 256:
		return invalid("ingest.max_size", "%d bytes is too small (default 8192)", c.Ingest.MaxSize)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		return invalid("log.level", "%q must be debug, info, warn or error", c.Log.Level)
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
