package stack

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/services/config"
)

// TestStartDevFails drives every environment failure that `anchorline dev` must report as one
// line naming the cause and the key to change, without a panic, and shows that whatever it
// had started is stopped again: the same data_dir starts cleanly right after.
func TestStartDevFails(t *testing.T) {
	chAddr, database, _ := chserver.NewDatabase(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := closed.Addr().String() // nothing listens there once closed
	closed.Close()
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	otherChain := t.TempDir()
	n, err := node.Start(t.Context(), node.Config{Home: filepath.Join(otherChain, "ledger"), ChainID: "another-chain",
		Admins: []ed25519.PublicKey{make([]byte, ed25519.PublicKeySize)}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}

	oldStreams := t.TempDir() // a data_dir of before broker accounts: streams in the global account
	if err := os.MkdirAll(filepath.Join(oldStreams, "nats", "jetstream", "$G", "streams", "READINGS"), 0o700); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		change func(*config.Config)
		is     error
		says   []string
	}{
		{"data_dir of before broker accounts", func(c *config.Config) {
			c.DataDir = oldStreams
			c.Ledger.AdminKey = filepath.Join(c.DataDir, "admin.key")
		}, ErrOldStreams, []string{"readings still pending in it would not be ingested", "move " + filepath.Join(oldStreams, "nats") + " aside"}},
		{"http.addr in use", func(c *config.Config) { c.HTTP.Addr = taken.Addr().String() },
			ErrAddrInUse, []string{"http.addr " + taken.Addr().String(), "choose another http.addr"}},
		{"nats.url in use", func(c *config.Config) { c.NATS.URL = "nats://" + taken.Addr().String() },
			ErrAddrInUse, []string{"nats.url " + taken.Addr().String(), "choose another nats.url"}},
		{"ledger.rpc in use", func(c *config.Config) { c.Ledger.RPC = taken.Addr().String() },
			ErrAddrInUse, []string{"ledger.rpc " + taken.Addr().String(), "choose another ledger.rpc"}},
		{"private clickhouse port in use", func(c *config.Config) {
			c.ClickHouse.Embedded, c.ClickHouse.Addr = true, taken.Addr().String()
		}, ErrAddrInUse, []string{"clickhouse.addr " + taken.Addr().String(), "choose another clickhouse.addr"}},
		{"clickhouse unreachable", func(c *config.Config) {
			c.ClickHouse.Addr, c.ClickHouse.StartupTimeout = unreachable, 500*time.Millisecond
		}, ErrClickHouseUnreachable, []string{"clickhouse.addr " + unreachable, "raise clickhouse.startup_timeout"}},
		{"data_dir not writable", func(c *config.Config) {
			c.DataDir = filepath.Join(notADir, "sub")
			c.Ledger.AdminKey = filepath.Join(c.DataDir, "admin.key")
		}, nil, []string{"data_dir " + filepath.Join(notADir, "sub"), "choose another data_dir"}},
		{"data_dir of another chain", func(c *config.Config) {
			c.DataDir = otherChain
			c.Ledger.AdminKey = filepath.Join(c.DataDir, "admin.key")
		}, node.ErrOtherChain, []string{`holds chain "another-chain"`, "ledger.chain_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			cfg := devConfig(t, chAddr, database, t.TempDir())
			tc.change(&cfg)
			d, err := StartDev(ctx, cfg, testLogger(t))
			if err == nil {
				_ = d.Stop()
				t.Fatal("dev started")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, want := range tc.says {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if cfg.DataDir == otherChain || cfg.DataDir == oldStreams || strings.HasPrefix(cfg.DataDir, notADir) {
				return
			}
			// What it started was stopped: the same data_dir (NATS store, ledger state) starts
			// now that the fault is gone.
			good := devConfig(t, chAddr, database, cfg.DataDir)
			d, err = StartDev(ctx, good, testLogger(t))
			if err != nil {
				t.Fatalf("dev on the same data_dir after the failure: %v", err)
			}
			if err := d.Stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
		})
	}
}
