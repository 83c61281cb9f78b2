package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestLoadOrder(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("clickhouse:\n  database: fromfile\nanchor:\n  interval: 5s\nhttp:\n  addr: 127.0.0.1:9999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ANCHORLINE_ANCHOR_INTERVAL", "7s")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	Flags(fs)
	if err := fs.Parse([]string{"--config", file, "--http.addr", "127.0.0.1:7777"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(fs)
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
	if c.ClickHouse.Addr != "127.0.0.1:9000" || c.Ledger.AdminKey != filepath.Join(".anchorline", "admin.key") {
		t.Errorf("defaults: %+v", c)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for field, mutate := range map[string]func(*Config){
		"clickhouse.addr":        func(c *Config) { c.ClickHouse.Addr = "nohost" },
		"clickhouse.database":    func(c *Config) { c.ClickHouse.Database = "a-b" },
		"nats.url":               func(c *Config) { c.NATS.URL = "::" },
		"anchor.interval":        func(c *Config) { c.Anchor.Interval = 0 },
		"ingest.batch_size":      func(c *Config) { c.Ingest.BatchSize = 0 },
		"ingest.max_ack_pending": func(c *Config) { c.Ingest.MaxAckPending = 1 },
		"log.level":              func(c *Config) { c.Log.Level = "loud" },
	} {
		c := Default()
		mutate(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

// The shipped deployment configurations must load and validate.
func TestDeploymentConfigs(t *testing.T) {
	files, err := filepath.Glob("../../deployments/config/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("deployment configs: %v %v", files, err)
	}
	for _, f := range files {
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		Flags(fs)
		if err := fs.Parse([]string{"--config", f}); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(fs); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
