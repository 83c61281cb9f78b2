package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// load runs Load as a command would, with args on the command line.
func load(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	Flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(fs)
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestLoadOrder(t *testing.T) {
	file := writeFile(t, "c.yaml", "clickhouse:\n  database: fromfile\nanchor:\n  interval: 5s\nhttp:\n  addr: 127.0.0.1:9999\n")
	t.Setenv("ANCHORLINE_ANCHOR_INTERVAL", "7s")
	c, err := load(t, "--config", file, "--http.addr", "127.0.0.1:7777")
	if err != nil {
		t.Fatal(err)
	}
	if c.ClickHouse.Database != "fromfile" {
		t.Errorf("file value lost: %q", c.ClickHouse.Database)
	}
	if c.Anchor.Interval != 7*time.Second {
		t.Errorf("env should beat file: %s", c.Anchor.Interval)
	}
	if c.HTTP.Addr != "127.0.0.1:7777" {
		t.Errorf("flag should beat file: %s", c.HTTP.Addr)
	}
	if c.ClickHouse.Addr != "127.0.0.1:9000" || c.Ledger.AdminKey != filepath.Join(".anchorline", "admin.key") ||
		c.ClickHouse.StartupTimeout != time.Minute {
		t.Errorf("defaults: %+v", c)
	}
}

// Without a file, flag or variable, Load gives Default (with the admin key under data_dir).
func TestLoadDefaults(t *testing.T) {
	c, err := load(t)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Ledger.AdminKey = filepath.Join(want.DataDir, "admin.key")
	want.Anchor.Key = filepath.Join(want.DataDir, "anchor.key")
	want.NATS.AuthDir = filepath.Join(want.DataDir, "nats-auth")
	if c != want {
		t.Errorf("Load() = %+v\nwant      %+v", c, want)
	}
}

func TestStartupTimeout(t *testing.T) {
	c, err := load(t, "--clickhouse.startup_timeout", "5s")
	if err != nil || c.ClickHouse.StartupTimeout != 5*time.Second {
		t.Fatalf("--clickhouse.startup_timeout 5s: %v %s", err, c.ClickHouse.StartupTimeout)
	}
	t.Setenv("ANCHORLINE_CLICKHOUSE_STARTUP_TIMEOUT", "2m")
	if c, err := load(t); err != nil || c.ClickHouse.StartupTimeout != 2*time.Minute {
		t.Fatalf("ANCHORLINE_CLICKHOUSE_STARTUP_TIMEOUT=2m: %v %s", err, c.ClickHouse.StartupTimeout)
	}
}

// Each value Validate rejects, and the message it gives: the key, the value and what to use.
func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.DataDir = "" }, "data_dir: must not be empty"},
		{func(c *Config) { c.ClickHouse.Addr = "nohost" }, `clickhouse.addr: "nohost" is not host:port`},
		{func(c *Config) { c.ClickHouse.Addr = "127.0.0.1:http" }, `clickhouse.addr: "127.0.0.1:http" is not host:port with a port from 1 to 65535`},
		{func(c *Config) { c.ClickHouse.Addr = "127.0.0.1:0" }, `clickhouse.addr: "127.0.0.1:0" is not host:port with a port from 1 to 65535`},
		{func(c *Config) { c.ClickHouse.Addr = "127.0.0.1:70000" }, `clickhouse.addr: "127.0.0.1:70000"`},
		{func(c *Config) { c.ClickHouse.Addr = "127.0.0.1:9000,nohost" }, `clickhouse.addr: "127.0.0.1:9000,nohost" is not host:port`},
		{func(c *Config) { c.ClickHouse.Addr = " , " }, `clickhouse.addr: " , " is not host:port`},
		{func(c *Config) { c.ClickHouse.Addr, c.ClickHouse.Embedded = "127.0.0.1:9000,127.0.0.1:9001", true }, `clickhouse.addr: "127.0.0.1:9000,127.0.0.1:9001": clickhouse.embedded starts one server`},
		{func(c *Config) { c.ClickHouse.Cluster = "a-b" }, `clickhouse.cluster: "a-b" must be letters`},
		{func(c *Config) { c.ClickHouse.Cluster, c.ClickHouse.Embedded = "c", true }, `clickhouse.cluster: "c": clickhouse.embedded starts one server`},
		{func(c *Config) { c.ClickHouse.Database = "a-b" }, `clickhouse.database: "a-b" must be letters, digits and underscores`},
		{func(c *Config) { c.ClickHouse.Username = "" }, "clickhouse.username: must not be empty"},
		{func(c *Config) { c.ClickHouse.StartupTimeout = 0 }, "clickhouse.startup_timeout: 0s must be positive (default 1m)"},
		{func(c *Config) { c.NATS.URL = "::" }, `nats.url: "::" is not a URL like nats://127.0.0.1:4222`},
		{func(c *Config) { c.NATS.URL = "127.0.0.1:4222" }, `nats.url: "127.0.0.1:4222" is not a URL`},
		{func(c *Config) { c.NATS.URL = "http://127.0.0.1:4222" }, `nats.url: "http://127.0.0.1:4222" is not a URL like nats://127.0.0.1:4222 (nats, tls, ws or wss`},
		{func(c *Config) { c.NATS.URL = "nats://a:4222,b:4222" }, `nats.url: "nats://a:4222,b:4222" is not a URL`},
		{func(c *Config) { c.NATS.Replicas = 0 }, "nats.replicas: 0: want 1 (one server) to 5"},
		{func(c *Config) { c.NATS.ReadingsMaxAge = 10 * time.Minute }, "nats.readings_max_age: 10m0s: want 0 (no limit) or at least 1h"},
		{func(c *Config) { c.HTTP.TLSCert = "cert.pem" }, "http.tls_cert: http.tls_cert and http.tls_key go together"},
		{func(c *Config) { c.HTTP.Addr = "localhost" }, `http.addr: "localhost" is not host:port`},
		{func(c *Config) { c.Anchor.Interval = 0 }, "anchor.interval: 0s is too short; use at least 10ms"},
		{func(c *Config) { c.Ledger.ChainID = "" }, "ledger.chain_id: must not be empty"},
		{func(c *Config) { c.Ledger.ChainID = strings.Repeat("x", 51) }, "ledger.chain_id: \"xxxx"},
		{func(c *Config) { c.Ledger.RPC = "26657" }, `ledger.rpc: "26657" is not host:port (for example 127.0.0.1:26657), several separated by commas, or empty for none`},
		{func(c *Config) { c.Ledger.AdminKey = "" }, "ledger.admin_key: must name the admin key file"},
		{func(c *Config) { c.Ledger.TimeoutCommit = -time.Second }, "ledger.timeout_commit: -1s must be positive"},
		{func(c *Config) { c.Ingest.BatchSize = 0 }, "ingest.batch_size: 0 must be at least 1"},
		{func(c *Config) { c.Ingest.FlushAge = 0 }, "ingest.flush_age: 0s must be positive"},
		{func(c *Config) { c.Ingest.PullBatch = 0 }, "ingest.pull_batch: 0 must be at least 1"},
		{func(c *Config) { c.Ingest.MaxAckPending = 1 }, "ingest.max_ack_pending: 1 must be at least ingest.pull_batch (1000)"},
		{func(c *Config) { c.Ingest.MaxSize = 100 }, "ingest.max_size: 100 bytes is too small"},
		{func(c *Config) { c.Ingest.Worker = "" }, "ingest.worker: must not be empty"},
		{func(c *Config) { c.Ingest.Verifiers = -1 }, "ingest.verifiers: -1 must not be negative"},
		{func(c *Config) { c.Ingest.Flushers = 0 }, "ingest.flushers: 0 must be at least 1"},
		{func(c *Config) { c.Ingest.AckWait = 500 * time.Millisecond }, "ingest.ack_wait: 500ms must be at least 1s"},
		{func(c *Config) { c.Ingest.ChainWait = -time.Second }, "ingest.chain_wait: -1s must not be negative"},
		{func(c *Config) { c.Ingest.ChainWait = 10 * time.Second },
			"ingest.chain_wait: 10s must be longer than ingest.ack_wait (30s)"},
		{func(c *Config) { c.Ingest.ChainWait = 30 * time.Second }, "set it above 30s, or 0 for ingest.ack_wait + 5s"},
		{func(c *Config) { c.Ingest.MaxFuture = 0 }, "ingest.max_future: 0s must be positive"},
		{func(c *Config) { c.Ingest.MaxAge = -time.Hour }, "ingest.max_age: -1h0m0s must not be negative"},
		{func(c *Config) { c.Ingest.MaxMetrics = 0 }, "ingest.max_metrics: 0 must be at least 1"},
		{func(c *Config) { c.Ingest.MaxTags = -1 }, "ingest.max_tags: -1 must not be negative"},
		{func(c *Config) { c.Ingest.MaxTagLen = 0 }, "ingest.max_tag_len: 0 must be at least 1"},
		{func(c *Config) { c.Log.Level = "loud" }, `log.level: "loud" must be debug, info, warn or error`},
		{func(c *Config) { c.Log.Format = "yaml" }, `log.format: "yaml" must be text or json`},
	} {
		c := Default()
		c.Ledger.AdminKey = "admin.key"
		tc.mutate(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got  %v\nwant %s", err, tc.want)
		}
	}
}

// Values at the edge of what Validate accepts.
func TestValidateAccepts(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"defaults":                      func(*Config) {},
		"chain_wait 0 (ack_wait+5s)":    func(c *Config) { c.Ingest.ChainWait = 0 },
		"chain_wait above ack_wait":     func(c *Config) { c.Ingest.AckWait, c.Ingest.ChainWait = 2*time.Second, 3*time.Second },
		"http.addr on any free port":    func(c *Config) { c.HTTP.Addr = "127.0.0.1:0" },
		"http.addr on every address":    func(c *Config) { c.HTTP.Addr = ":8080" },
		"no ledger rpc listener":        func(c *Config) { c.Ledger.RPC = "" },
		"ledger.rpc with a scheme":      func(c *Config) { c.Ledger.RPC = "tcp://ledger-1:26657" },
		"ledger.rpc of four validators": func(c *Config) { c.Ledger.RPC = "ledger-1:26657, ledger-2:26657,ledger-3:26657,ledger-4:26657" },
		"a NATS cluster":                func(c *Config) { c.NATS.URL = "nats://nats-1:4222, tls://nats-2:4222" },
		"log settings in upper case":    func(c *Config) { c.Log.Level, c.Log.Format = "DEBUG", "JSON" },
		"no age limit, no tags":         func(c *Config) { c.Ingest.MaxAge, c.Ingest.MaxTags = 0, 0 },
		"one verifier per core":         func(c *Config) { c.Ingest.Verifiers = 0 },
		"an empty ClickHouse password":  func(c *Config) { c.ClickHouse.Password = "" },
	} {
		c := Default()
		c.Ledger.AdminKey = "admin.key"
		mutate(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// What Load rejects before Validate sees a value: keys the file holds that are not
// configuration keys, and values that are not of their key's type, from the file, the
// environment or a flag.
func TestLoadRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string            // YAML; empty: no --config
		env  map[string]string // ANCHORLINE_* variables
		args []string
		want string // in the error, after "invalid configuration: "
	}{
		{name: "misspelt key", file: "ingest:\n  batchsize: 5000\n",
			want: "ingest.batchsize: in FILE is not a configuration key; did you mean ingest.batch_size?"},
		{name: "unknown key in a known section", file: "ingest:\n  speed: fast\n",
			want: "ingest.speed: in FILE is not a configuration key; the ingest keys are batch_size, flush_age,"},
		{name: "unknown section", file: "storage:\n  path: /tmp\n",
			want: "storage.path: in FILE is not a configuration key; deployments/config/anchorline.yaml lists every key"},
		{name: "misspelt top-level key", file: "datadir: /tmp\n",
			want: "datadir: in FILE is not a configuration key; did you mean data_dir?"},
		{name: "a section given a value", file: "ingest: 5\n",
			want: "ingest: in FILE is a section (keys like ingest.batch_size), not a value"},
		{name: "word for a number", file: "ingest:\n  batch_size: many\n",
			want: `ingest.batch_size: "many" is not a whole number`},
		{name: "list for a number", file: "ingest:\n  max_tags: [1, 2]\n",
			want: `ingest.max_tags: "[1 2]" is not a whole number`},
		{name: "word for a duration", file: "ingest:\n  flush_age: soon\n",
			want: `ingest.flush_age: "soon" is not a duration like 30s, 200ms or 1h`},
		{name: "word for a bool", file: "clickhouse:\n  embedded: maybe\n",
			want: `clickhouse.embedded: "maybe" is not true or false`},
		{name: "map for a string", file: "log:\n  format:\n    kind: json\n",
			want: "log.format: in FILE must be a string, not a section"},
		{name: "not YAML", file: "ingest: [\n",
			want: "--config: FILE is not YAML: "},
		{name: "chain_wait not above ack_wait", file: "ingest:\n  ack_wait: 10s\n  chain_wait: 5s\n",
			want: "ingest.chain_wait: 5s must be longer than ingest.ack_wait (10s)"},
		{name: "log.format from the file", file: "log:\n  format: xml\n",
			want: `log.format: "xml" must be text or json`},
		{name: "number for a duration in a variable", env: map[string]string{"ANCHORLINE_INGEST_ACK_WAIT": "30"},
			want: `ingest.ack_wait: "30" is not a duration like 30s, 200ms or 1h`},
		{name: "short duration in a variable", env: map[string]string{"ANCHORLINE_INGEST_ACK_WAIT": "30ms"},
			want: `ingest.ack_wait: 30ms must be at least 1s`},
		{name: "word in a variable", env: map[string]string{"ANCHORLINE_INGEST_FLUSHERS": "two"},
			want: `ingest.flushers: "two" is not a whole number`},
		{name: "bad flag value", args: []string{"--log.level", "loud"},
			want: `log.level: "loud" must be debug, info, warn or error`},
		{name: "bad log format", args: []string{"--log.format", "xml"},
			want: `log.format: "xml" must be text or json`},
		{name: "missing file", args: []string{"--config", "/nonexistent/anchorline.yaml"},
			want: "--config: /nonexistent/anchorline.yaml: no such file"},
		{name: "a folder for a file", args: []string{"--config", os.TempDir()},
			want: "--config: " + os.TempDir() + ": "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			want := tc.want
			if tc.file != "" {
				file := writeFile(t, "anchorline.yaml", tc.file)
				args = append([]string{"--config", file}, args...)
				want = strings.ReplaceAll(want, "FILE", file)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := load(t, args...)
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "invalid configuration: "+want) {
				t.Fatalf("got  %v\nwant invalid configuration: %s", err, want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("message is not one line: %q", err)
			}
		})
	}
}

// An empty section and a key with no value are not errors: the defaults stand.
func TestLoadEmptySections(t *testing.T) {
	c, err := load(t, "--config", writeFile(t, "c.yaml", "ingest: {}\nlog:\nclickhouse:\n  database:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Ingest != Default().Ingest || c.Log != Default().Log || c.ClickHouse.Database != "anchorline" {
		t.Errorf("defaults changed: %+v", c)
	}
}

// The shipped deployment configurations must load and validate, and anchorline.yaml, which
// documents every key, must hold each of them.
func TestDeploymentConfigs(t *testing.T) {
	files, err := filepath.Glob("../../deployments/config/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("deployment configs: %v %v", files, err)
	}
	for _, f := range files {
		if _, err := load(t, "--config", f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	b, err := os.ReadFile("../../deployments/config/anchorline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	lines := strings.Split(string(b), "\n")
	for _, k := range keys(&c) {
		// Each part of the dotted key in turn, after the line of the part before it.
		at, found := 0, true
		for _, part := range strings.Split(k.name, ".") {
			i := slices.IndexFunc(lines[at:], func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), part+":") })
			if i < 0 {
				found = false
				break
			}
			at += i
		}
		if !found {
			t.Errorf("deployments/config/anchorline.yaml does not document %s", k.name)
		}
	}
}
