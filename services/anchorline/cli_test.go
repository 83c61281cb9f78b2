package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
)

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// cliStack is a dev stack on a fresh database, and run, which runs the CLI against it.
type cliStack struct {
	dev      *stack.Dev
	database string
	ch       driver.Conn
	run      func(args ...string) (string, error)
}

func startCLIStack(ctx context.Context, t *testing.T) *cliStack {
	t.Helper()
	chAddr, database, ch := chserver.NewDatabase(t)
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = chAddr, database
	cfg.NATS.URL = "nats://" + freeAddr(t)
	cfg.HTTP.Addr = freeAddr(t)
	cfg.Ledger.RPC = freeAddr(t)
	cfg.Ledger.AdminKey = filepath.Join(cfg.DataDir, "admin.key")
	cfg.Anchor.Interval = 300 * time.Millisecond
	d, err := stack.StartDev(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	global := []string{"--data_dir", cfg.DataDir, "--nats.url", cfg.NATS.URL, "--http.addr", cfg.HTTP.Addr, "--ledger.rpc", cfg.Ledger.RPC,
		"--clickhouse.addr", chAddr, "--clickhouse.database", database, "--log.level", "error"}
	run := func(args ...string) (string, error) {
		t.Helper()
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(append([]string(nil), global...), args...)) // later flags win
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	return &cliStack{dev: d, database: database, ch: ch, run: run}
}

// TestCommands drives the CLI as a device maker and an auditor would, against a running dev
// stack: keys, both forms of registration, publish, proof, trust export, verify, revoke, status.
func TestCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := startCLIStack(ctx, t)
	dir, database, ch, run := t.TempDir(), st.database, st.ch, st.run
	must := func(want string, args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("anchorline %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	edKey, esKey := filepath.Join(dir, "ed.key"), filepath.Join(dir, "es.key")
	must("written to", "device", "keygen", "--id", "cli-ed", "--out", edKey)
	must("written to", "device", "keygen", "--id", "cli-es", "--alg", "es256", "--out", esKey)
	if st, err := os.Stat(edKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	if _, err := run("device", "keygen", "--id", "cli-ed", "--out", edKey); err == nil {
		t.Fatal("keygen overwrote a key file")
	}
	must("registered cli-ed", "device", "register", edKey)
	must("registered cli-es", "device", "register", esKey)
	ext, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	must("registered cli-ext", "device", "register", "--id", "cli-ext", "--alg", "ed25519", "--pubkey", hex.EncodeToString(ext.Public().Key))
	if out, err := run("device", "register", "--id", "cli-bad", "--alg", "ed25519", "--pubkey", "abcd"); err == nil || !strings.Contains(err.Error(), "--pubkey") {
		t.Fatalf("bad pubkey: %v %s", err, out)
	}
	if _, err := run("device", "register", esKey); err == nil {
		t.Fatal("registering an active device twice succeeded")
	}

	for i := 1; i <= 3; i++ {
		must(fmt.Sprintf("published cli-ed seq %d", i), "device", "publish", edKey, "--metric", fmt.Sprintf("temp=%d.5", 20+i), "--tag", "site=lab")
	}
	must("published cli-es seq 1", "device", "publish", esKey, "--metric", "hum=40")
	if _, err := run("device", "publish", edKey, "--metric", "Temp=1"); err == nil {
		t.Fatal("published an invalid metric name")
	}

	proofFile, trustFile := filepath.Join(dir, "proof.json"), filepath.Join(dir, "trust.json")
	must("written to", "proof", "--device", "cli-ed", "--seq", "3", "--wait", "60s", "--out", proofFile)
	must("written to", "trust", "export", "--out", trustFile)
	out := must("bundle verified", "verify", proofFile, "--trust", trustFile)
	if strings.Count(out, "✓") != 10 {
		t.Fatalf("verify printed:\n%s", out)
	}
	b, _ := os.ReadFile(proofFile)
	bad := bytes.Replace(b, []byte(`"seq": 3`), []byte(`"seq": 2`), 1)
	if err := os.WriteFile(proofFile, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run("verify", proofFile, "--trust", trustFile)
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 1 || !strings.Contains(out, "✗") {
		t.Fatalf("tampered bundle: %v\n%s", err, out)
	}
	if _, err := run("verify", proofFile); !errors.As(err, &exit) || exit.code != 2 {
		t.Fatalf("verify without --trust: %v", err)
	}

	// The seq chain continues across publish runs (state beside the key file).
	var prev []byte
	rows, err := ch.Query(ctx, "SELECT seq, raw, prev FROM "+database+".readings WHERE device_id = 'cli-ed' ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var seq uint64
		var raw, p string
		if err := rows.Scan(&seq, &raw, &p); err != nil {
			t.Fatal(err)
		}
		n++
		if seq != uint64(n) || (n > 1 && p != string(prev)) {
			t.Fatalf("seq %d: chain broken", seq)
		}
		l := reading.Leaf([]byte(raw))
		prev = l[:]
	}
	rows.Close()
	if n != 3 {
		t.Fatalf("%d readings of cli-ed stored", n)
	}

	must("revoked cli-es", "device", "revoke", "cli-es")
	must("published cli-es seq 2", "device", "publish", esKey, "--metric", "hum=41")
	for {
		var c uint64
		if err := ch.QueryRow(ctx, "SELECT count() FROM "+database+".rejected WHERE device_id = 'cli-es' AND reason = 'revoked_device'").Scan(&c); err != nil {
			t.Fatal(err)
		}
		if c == 1 {
			break
		}
		select {
		case <-ctx.Done():
			var r, j uint64
			_ = ch.QueryRow(context.Background(), "SELECT count() FROM "+database+".readings WHERE device_id = 'cli-es'").Scan(&r)
			_ = ch.QueryRow(context.Background(), "SELECT count() FROM "+database+".rejected").Scan(&j)
			st, _ := run("status")
			t.Fatalf("reading of a revoked device not rejected: %d readings of cli-es, %d rejected\n%s", r, j, st)
		case <-time.After(100 * time.Millisecond):
		}
	}
	must("ready:        ok", "status")
	if _, err := run("status", "--http.addr", "127.0.0.1:1"); err == nil {
		t.Fatal("status against nothing succeeded")
	}
	if _, err := run("migrate", "--clickhouse.database", "bad-name!"); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("migrate with a bad database name: %v", err)
	}
	must("up to date", "migrate")
}
