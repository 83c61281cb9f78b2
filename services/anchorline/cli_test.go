package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/internal/testlog"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/config"
	"github.com/anchorline/anchorline/services/stack"
)

func TestMain(m *testing.M) { os.Exit(chserver.RunTests(m)) }

// closedAddr is an address where nothing listens (a listener taken and closed again).
func closedAddr(t *testing.T) string {
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
	cfg.NATS.URL, cfg.HTTP.Addr, cfg.Ledger.RPC = "nats://127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0" // any free port
	cfg.Ledger.AdminKey = filepath.Join(cfg.DataDir, "admin.key")
	cfg.Anchor.Interval = 300 * time.Millisecond
	d, err := stack.StartDev(ctx, cfg, testlog.New(t)) // its log shows with a failure
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	cfg = d.Config() // the addresses dev took
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

// must runs the CLI and fails the test unless the command succeeds and its output holds want.
func (s *cliStack) must(t *testing.T, want string, args ...string) string {
	t.Helper()
	out, err := s.run(args...)
	if err != nil || !strings.Contains(out, want) {
		t.Fatalf("anchorline %s: %v\n%s\nwant %q", strings.Join(args, " "), err, out, want)
	}
	return out
}

// fails runs the CLI and fails the test unless the command exits with code and its error
// holds want.
func (s *cliStack) fails(t *testing.T, code int, want string, args ...string) {
	t.Helper()
	out, err := s.run(args...)
	if exitCode(err) != code || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("anchorline %s: exit %d, %v\n%s\nwant exit %d and %q", strings.Join(args, " "), exitCode(err), err, out, code, want)
	}
}

// TestCommands drives the CLI as a device maker and an auditor would, against a running dev
// stack: keys, both forms of registration, publish, proof, trust export, verify, revoke, status.
func TestCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := startCLIStack(ctx, t)
	dir, database, ch, run := t.TempDir(), st.database, st.ch, st.run
	must := func(want string, args ...string) string { t.Helper(); return st.must(t, want, args...) }

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

	// API tokens: the token into its file, its hash into the tokens file the API reads.
	tokenFile, tokensFile := filepath.Join(dir, "auditor.token"), filepath.Join(dir, "tokens")
	if _, err := run("api", "token", "--audience", "auditors", "--out", tokenFile); !errors.Is(err, config.ErrInvalid) && exitCode(err) != exitBadInput {
		t.Fatalf("api token without http.tokens: %v", err)
	}
	must("token for audience auditors written to", "api", "token", "--audience", "auditors", "--out", tokenFile, "--http.tokens", tokensFile)
	if _, err := run("api", "token", "--audience", "auditors", "--out", tokenFile, "--http.tokens", tokensFile); exitCode(err) != exitBadInput {
		t.Fatalf("api token over an existing token file: %v", err)
	}
	tokenBytes, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if tk, err := api.LoadTokens(tokensFile); err != nil {
		t.Fatal(err)
	} else if aud, ok, _ := tk.Audience(strings.TrimSpace(string(tokenBytes))); !ok || aud != "auditors" {
		t.Fatalf("the token written is not the one the tokens file admits: %q %v", aud, ok)
	}

	// Simulated devices: each as itself (the default), or all on the simulator's credentials.
	must("2 devices", "device", "simulate", "--devices", "2", "--rate", "100/s", "--duration", "500ms", "--prefix", "clisim")
	must("2 devices", "device", "simulate", "--devices", "2", "--rate", "100/s", "--duration", "500ms", "--prefix", "clisimx", "--as", "simulator")
	if _, err := run("device", "simulate", "--devices", "1", "--as", "nobody"); err == nil || !strings.Contains(err.Error(), "--as") {
		t.Fatalf("--as nobody: %v", err)
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
	if exitCode(err) != exitFailed || !strings.Contains(out, "✗") {
		t.Fatalf("tampered bundle: %v\n%s", err, out)
	}
	if _, err := run("verify", proofFile); exitCode(err) != exitBadInput {
		t.Fatalf("verify without --trust: %v", err)
	}

	// A range: the three chained readings of cli-ed in one bundle, complete.
	rangeFile := filepath.Join(dir, "range.json")
	must("range bundle of cli-ed seqs 1..3 written to", "proof", "--device", "cli-ed", "--from", "1", "--to", "3", "--wait", "60s", "--out", rangeFile)
	out = must("range verified: every step holds for 3 readings of cli-ed", "verify", rangeFile, "--trust", trustFile)
	if !strings.Contains(out, "✓ complete") || strings.Contains(out, "✗") {
		t.Fatalf("verify of the range printed:\n%s", out)
	}
	rb, _ := os.ReadFile(rangeFile)
	// One hex digit of the first reading's raw bytes, inside its signature (the end of raw).
	i := bytes.Index(rb, []byte(`"raw": "`)) + len(`"raw": "`)
	j := i + bytes.IndexByte(rb[i:], '"') - 3
	if rb[j] == '0' {
		rb[j] = '1'
	} else {
		rb[j] = '0'
	}
	if err := os.WriteFile(rangeFile, rb, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run("verify", rangeFile, "--trust", trustFile); exitCode(err) != exitFailed || !strings.Contains(out, "✗") {
		t.Fatalf("tampered range: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"proof", "--device", "cli-ed", "--from", "3", "--to", "1"},
		{"proof", "--device", "cli-ed", "--from", "1"},
		{"proof", "--device", "cli-ed", "--seq", "1", "--from", "1", "--to", "2"},
	} {
		if _, err := run(args...); exitCode(err) != exitBadInput {
			t.Fatalf("%v: %v, want exit %d", args, err, exitBadInput)
		}
	}
	if _, err := run("proof", "--device", "cli-ed", "--from", "100", "--to", "200"); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("range with no readings: %v, want ErrNotFound", err)
	}

	// The seq chain continues across publish runs (state beside the key file).
	var prev []byte
	rows, err := ch.Query(ctx, "SELECT seq, raw FROM "+database+".readings WHERE device_id = 'cli-ed' ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var seq uint64
		var raw string
		if err := rows.Scan(&seq, &raw); err != nil {
			t.Fatal(err)
		}
		m, err := reading.Decode([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		n++
		if seq != uint64(n) || (n > 1 && string(m.Reading.Prev) != string(prev)) {
			t.Fatalf("seq %d: chain broken", seq)
		}
		l := reading.Leaf([]byte(raw))
		prev = l[:]
	}
	rows.Close()
	if n != 3 {
		t.Fatalf("%d readings of cli-ed stored", n)
	}

	// A revoked device is refused by the broker itself: nothing it sends reaches the stream.
	must("revoked cli-es", "device", "revoke", "cli-es")
	if out, err := run("device", "publish", esKey, "--metric", "hum=41"); err == nil || !strings.Contains(err.Error()+out, "the broker refused device cli-es") {
		t.Fatalf("a revoked device published: err %v\n%s", err, out)
	}
	must("ready:        ok", "status")
	if _, err := run("status", "--http.addr", "127.0.0.1:1"); err == nil {
		t.Fatal("status against nothing succeeded")
	}
	if _, err := run("migrate", "--clickhouse.database", "bad-name!"); !errors.Is(err, config.ErrInvalid) || exitCode(err) != exitBadInput {
		t.Fatalf("migrate with a bad database name: %v", err)
	}
	must("up to date", "migrate")
}

// runOffline runs the CLI with every server address pointing at nothing (port 1, which no
// test serves): a command that gets past its input checks fails on the network instead, with
// another status.
func runOffline(ctx context.Context, t *testing.T, args ...string) (string, error) {
	t.Helper()
	const nothing = "127.0.0.1:1"
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	global := []string{"--data_dir", t.TempDir(), "--nats.url", "nats://" + nothing, "--http.addr", nothing, "--ledger.rpc", nothing,
		"--clickhouse.addr", nothing, "--clickhouse.startup_timeout", "1s", "--log.level", "error"}
	root.SetArgs(append(global, args...))
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// badInputFiles writes the malformed files the bad-input tests give the commands, in dir.
func badInputFiles(t *testing.T, dir string) {
	t.Helper()
	golden := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("..", "..", "anchor", "proof", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bundle, trust := golden("bundle.json"), golden("trust.json")
	key, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	kf, err := reading.NewKeyFile("bad-input", key)
	if err != nil {
		t.Fatal(err)
	}
	other, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	keyJSON := func(edit func(*reading.KeyFile)) []byte {
		f := kf
		edit(&f)
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, body := range map[string][]byte{
		"bundle.json":          bundle,
		"trust.json":           trust,
		"empty.json":           nil,
		"notjson.json":         []byte("hello\n"),
		"truncated.json":       bundle[:300],
		"array.json":           []byte("[1, 2]\n"),
		"extra-field.json":     bytes.Replace(bundle, []byte(`"format": "anchorline.proof/v1",`), []byte(`"format": "anchorline.proof/v1", "extra": 1,`), 1),
		"seq-string.json":      bytes.Replace(bundle, []byte(`"seq": 3,`), []byte(`"seq": "3",`), 1),
		"upper-hex.json":       bytes.Replace(bundle, []byte(`"raw": "d2`), []byte(`"raw": "D2`), 1),
		"v2.json":              bytes.Replace(bundle, []byte(`anchorline.proof/v1`), []byte(`anchorline.proof/v2`), 1),
		"trust-short-key.json": bytes.Replace(trust, []byte(`bUwQVXzO9hh/toXaRv4HlNkKPG9V5UiLxW6CqM+fzp0=`), []byte(`AAAAAAAAAAAAAAAAAAAAAA==`), 1),
		"trust-no-chain.json":  bytes.Replace(trust, []byte(`"chain_id": "proof-test",`), nil, 1),
		"trust-no-vals.json":   []byte(`{"format": "anchorline.trust/v1", "chain_id": "c", "validators": []}`),
		"trust-vals-typo.json": bytes.Replace(trust, []byte(`"voting_power"`), []byte(`"votingpower"`), 1),
		"good.key":             keyJSON(func(*reading.KeyFile) {}),
		"short.key":            keyJSON(func(f *reading.KeyFile) { f.PrivateKey, f.PublicKey = "abcd", "" }),
		"nothex.key":           keyJSON(func(f *reading.KeyFile) { f.PrivateKey = "zz" }),
		"badid.key":            keyJSON(func(f *reading.KeyFile) { f.ID = "bad id" }),
		"noid.key":             keyJSON(func(f *reading.KeyFile) { f.ID = "" }),
		"rsa.key":              keyJSON(func(f *reading.KeyFile) { f.Alg = "rsa" }),
		"mismatch.key":         keyJSON(func(f *reading.KeyFile) { f.PublicKey = other.Public().String() }),
		"nopriv.key":           keyJSON(func(f *reading.KeyFile) { f.PrivateKey = "" }),
		"truncated.key":        keyJSON(func(*reading.KeyFile) {})[:40],
		"seqstring.key":        []byte(`{"id": 7}`),
		"statebad.key":         keyJSON(func(*reading.KeyFile) {}),
		"statebad.key.state":   []byte(`{"seq": 3, "prev": "`),
		"stateprev.key":        keyJSON(func(*reading.KeyFile) {}),
		"stateprev.key.state":  []byte(`{"seq": 3, "prev": "abcd"}`),
		"typo.yaml":            []byte("ingest:\n  batchsize: 5000\n"),
		"many.yaml":            []byte("ingest:\n  batch_size: many\n"),
		"chain-wait.yaml":      []byte("ingest:\n  ack_wait: 10s\n  chain_wait: 5s\n"),
		"log-format.yaml":      []byte("log:\n  format: xml\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "folder"), 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestBadInput gives each command malformed files and flag values and expects exit status 2
// with one line that names the file or flag and what is wrong with it, before any server is
// asked anything (there are none: runOffline).
func TestBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	badInputFiles(t, dir)
	f := func(name string) string { return filepath.Join(dir, name) }
	trust, bundle, key := f("trust.json"), f("bundle.json"), f("good.key")
	for _, tc := range []struct {
		args []string
		want string
	}{
		// verify FILE --trust TRUSTFILE: the bundle
		{[]string{"verify", f("missing.json"), "--trust", trust}, "proof bundle " + f("missing.json") + ": no such file"},
		{[]string{"verify", f("folder"), "--trust", trust}, "proof bundle " + f("folder") + ": is a directory, not a file"},
		{[]string{"verify", f("empty.json"), "--trust", trust}, "proof bundle " + f("empty.json") + ": is empty"},
		{[]string{"verify", f("notjson.json"), "--trust", trust}, "proof bundle " + f("notjson.json") + ": not JSON (invalid character 'h' looking for beginning of value, at byte 1)"},
		{[]string{"verify", f("truncated.json"), "--trust", trust}, "proof bundle " + f("truncated.json") + ": truncated: the JSON ends after 300 bytes"},
		{[]string{"verify", f("array.json"), "--trust", trust}, "proof bundle " + f("array.json") + ": is a JSON array, want an object"},
		{[]string{"verify", f("extra-field.json"), "--trust", trust}, "proof bundle " + f("extra-field.json") + `: unknown field "extra"`},
		{[]string{"verify", f("seq-string.json"), "--trust", trust}, "proof bundle " + f("seq-string.json") + ": field reading.seq is a JSON string, want uint64"},
		{[]string{"verify", f("upper-hex.json"), "--trust", trust}, "proof bundle " + f("upper-hex.json") + ": hex \"D2"},
		{[]string{"verify", f("v2.json"), "--trust", trust}, "proof bundle " + f("v2.json") + `: format "anchorline.proof/v2", want "anchorline.proof/v1"`},
		{[]string{"verify", trust, "--trust", bundle}, "proof bundle " + trust + ": is a trust file, not a proof bundle"},
		{[]string{"verify", key, "--trust", trust}, "proof bundle " + key + ": is a key file, not a proof bundle"},
		// the trust file
		{[]string{"verify", bundle}, "--trust: name the trust file"},
		{[]string{"verify", bundle, "--trust", f("missing.json")}, "trust file " + f("missing.json") + ": no such file"},
		{[]string{"verify", bundle, "--trust", f("folder")}, "trust file " + f("folder") + ": is a directory, not a file"},
		{[]string{"verify", bundle, "--trust", f("notjson.json")}, "trust file " + f("notjson.json") + ": not JSON"},
		{[]string{"verify", bundle, "--trust", f("truncated.json")}, "trust file " + f("truncated.json") + ": truncated"},
		{[]string{"verify", bundle, "--trust", key}, "trust file " + key + ": is a key file, not a trust file"},
		{[]string{"verify", bundle, "--trust", f("trust-short-key.json")}, "trust file " + f("trust-short-key.json") + ": validators: "},
		{[]string{"verify", bundle, "--trust", f("trust-no-chain.json")}, "trust file " + f("trust-no-chain.json") + ": needs chain_id and validators"},
		{[]string{"verify", bundle, "--trust", f("trust-no-vals.json")}, "trust file " + f("trust-no-vals.json") + ": has no validators"},
		{[]string{"verify", bundle, "--trust", f("trust-vals-typo.json")}, "trust file " + f("trust-vals-typo.json") + ": validators: validator 0: voting_power 0, want a positive number"},
		// audit --trust TRUSTFILE, and audit's flags
		{[]string{"audit", "--trust", f("missing.json")}, "trust file " + f("missing.json") + ": no such file"},
		{[]string{"audit", "--trust", f("notjson.json")}, "trust file " + f("notjson.json") + ": not JSON"},
		{[]string{"audit", "--trust", f("trust-short-key.json")}, "trust file " + f("trust-short-key.json") + ": validators: "},
		{[]string{"audit", "--trust", bundle}, "trust file " + bundle + ": is a proof bundle, not a trust file"},
		{[]string{"audit", "--from", "yesterday"}, `--from "yesterday": give RFC 3339`},
		{[]string{"audit", "--to", "2026-13-01"}, `--to "2026-13-01": give RFC 3339`},
		{[]string{"audit", "--from", "2026-12-02", "--to", "2026-12-01"}, "--from 2026-12-02 is after --to 2026-12-01"},
		{[]string{"audit", "--grace", "-1s"}, "--grace -1s: must not be negative"},
		{[]string{"audit", "--grace", "soon"}, `--grace "soon": want a duration like 30s, 200ms or 1h (see anchorline audit --help)`},
		{[]string{"audit", "--device", "no such device"}, `--device "no such device": must match`},
		// device publish KEYFILE
		{[]string{"device", "publish", f("missing.key"), "--metric", "t=1"}, "key file " + f("missing.key") + ": no such file"},
		{[]string{"device", "publish", f("folder"), "--metric", "t=1"}, "key file " + f("folder") + ": is a directory, not a file"},
		{[]string{"device", "publish", f("notjson.json"), "--metric", "t=1"}, "key file " + f("notjson.json") + ": not JSON"},
		{[]string{"device", "publish", f("truncated.key"), "--metric", "t=1"}, "key file " + f("truncated.key") + ": truncated: the JSON ends after 40 bytes"},
		{[]string{"device", "publish", f("short.key"), "--metric", "t=1"}, "key file " + f("short.key") + ": ed25519 seed is 2 bytes, want 32"},
		{[]string{"device", "publish", f("nothex.key"), "--metric", "t=1"}, "key file " + f("nothex.key") + ": private_key is not hex"},
		{[]string{"device", "publish", f("badid.key"), "--metric", "t=1"}, "key file " + f("badid.key") + `: id "bad id" must match`},
		{[]string{"device", "publish", f("noid.key"), "--metric", "t=1"}, "key file " + f("noid.key") + ": no id"},
		{[]string{"device", "publish", f("rsa.key"), "--metric", "t=1"}, "key file " + f("rsa.key") + `: alg "rsa": want ed25519 or es256`},
		{[]string{"device", "publish", f("mismatch.key"), "--metric", "t=1"}, "key file " + f("mismatch.key") + ": public_key does not belong to private_key"},
		{[]string{"device", "publish", f("nopriv.key"), "--metric", "t=1"}, "key file " + f("nopriv.key") + ": no private_key"},
		{[]string{"device", "publish", f("seqstring.key"), "--metric", "t=1"}, "key file " + f("seqstring.key") + ": field id is a JSON number, want string"},
		{[]string{"device", "publish", trust, "--metric", "t=1"}, "key file " + trust + ": is a trust file, not a key file"},
		{[]string{"device", "publish", f("statebad.key"), "--metric", "t=1"}, "state file " + f("statebad.key.state") + ": truncated"},
		{[]string{"device", "publish", f("stateprev.key"), "--metric", "t=1"}, "state file " + f("stateprev.key.state") + ": prev must be 32 bytes of hex"},
		// device publish's flags
		{[]string{"device", "publish", key}, "--metric: give at least one"},
		{[]string{"device", "publish", key, "--metric", "temp"}, `--metric "temp": want name=number`},
		{[]string{"device", "publish", key, "--metric", "temp=warm"}, `--metric "temp=warm": want name=number`},
		{[]string{"device", "publish", key, "--metric", "=1"}, `--metric "=1": want name=number`},
		{[]string{"device", "publish", key, "--metric", "Temp=1"}, "--metric/--tag: "},
		{[]string{"device", "publish", key, "--metric", "t=1", "--tag", "site"}, `--tag "site": want key=value`},
		{[]string{"device", "publish", key, "--metric", "t=1", "--tag", "=lab"}, `--tag "=lab": want key=value`},
		{[]string{"device", "publish"}, "anchorline device publish: accepts 1 arg(s), received 0; usage: anchorline device publish KEYFILE"},
		// device register KEYFILE, and its other form
		{[]string{"device", "register", f("missing.key")}, "key file " + f("missing.key") + ": no such file"},
		{[]string{"device", "register", f("folder")}, "key file " + f("folder") + ": is a directory, not a file"},
		{[]string{"device", "register", f("notjson.json")}, "key file " + f("notjson.json") + ": not JSON"},
		{[]string{"device", "register", f("truncated.key")}, "key file " + f("truncated.key") + ": truncated"},
		{[]string{"device", "register", f("short.key")}, "key file " + f("short.key") + ": ed25519 seed is 2 bytes, want 32"},
		{[]string{"device", "register", bundle}, "key file " + bundle + ": is a proof bundle, not a key file"},
		{[]string{"device", "register", key}, "admin key"}, // none under data_dir
		{[]string{"device", "register", key, "--id", "x"}, "give either a KEYFILE or --id/--alg/--pubkey, not both"},
		{[]string{"device", "register", "--id", "x", "--pubkey", "abcd"}, "--pubkey: "},
		{[]string{"device", "register", "--id", "x", "--pubkey", "zz"}, "--pubkey: not hex"},
		{[]string{"device", "register", "--id", "x", "--alg", "rsa", "--pubkey", "abcd"}, `--alg "rsa": want ed25519 or es256`},
		{[]string{"device", "register", "--id", "bad id", "--pubkey", "abcd"}, `--id "bad id": must match`},
		{[]string{"device", "register", "--id", "x"}, "give a KEYFILE, or --id, --alg and --pubkey"},
		// other commands' flags
		{[]string{"device", "keygen", "--id", "x", "--alg", "rsa", "--out", f("new.key")}, `--alg "rsa": want ed25519 or es256`},
		{[]string{"device", "keygen", "--id", "bad id", "--out", f("new.key")}, `--id "bad id": must match`},
		{[]string{"device", "keygen", "--id", "x"}, "--out: name the key file to write"},
		{[]string{"device", "keygen", "--id", "x", "--out", key}, "--out " + key + ": the file exists"},
		{[]string{"device", "revoke", "bad id"}, `device id "bad id": must match`},
		{[]string{"device", "simulate", "--rate", "fast"}, `--rate "fast": want readings per second`},
		{[]string{"device", "simulate", "--devices", "0"}, "--devices 0: need at least 1"},
		{[]string{"device", "simulate", "--devices", "many"}, `--devices "many": want a whole number (see anchorline device simulate --help)`},
		{[]string{"device", "simulate", "--alg", "rsa"}, `--alg "rsa": want ed25519, es256 or mixed`},
		{[]string{"proof", "--device", "d", "--seq", "-1"}, `--seq "-1": want a whole number, 0 or more (see anchorline proof --help)`},
		{[]string{"proof", "--device", "d", "--seq", "x"}, `--seq "x": want a whole number, 0 or more`},
		{[]string{"proof", "--seq", "1"}, `--device "": name the device`},
		{[]string{"proof", "--device", "d", "--sq", "1"}, "unknown flag: --sq (see anchorline proof --help)"},
		{[]string{"proof", "--device"}, "flag needs an argument: --device (see anchorline proof --help)"},
		{[]string{"status", "--wait", "soon"}, `--wait "soon": want a duration`},
		{[]string{"verify"}, "anchorline verify: accepts 1 arg(s), received 0; usage: anchorline verify FILE --trust TRUSTFILE"},
		// configuration
		{[]string{"device", "publish", key, "--metric", "t=1", "--config", f("typo.yaml")}, "invalid configuration: ingest.batchsize: in " + f("typo.yaml") + " is not a configuration key; did you mean ingest.batch_size?"},
		{[]string{"device", "publish", key, "--metric", "t=1", "--config", f("many.yaml")}, `invalid configuration: ingest.batch_size: "many" is not a whole number`},
		{[]string{"device", "publish", key, "--metric", "t=1", "--config", f("chain-wait.yaml")}, "invalid configuration: ingest.chain_wait: 5s must be longer than ingest.ack_wait (10s)"},
		{[]string{"device", "publish", key, "--metric", "t=1", "--config", f("log-format.yaml")}, `invalid configuration: log.format: "xml" must be text or json`},
		{[]string{"device", "publish", key, "--metric", "t=1", "--config", f("missing.yaml")}, "invalid configuration: --config: " + f("missing.yaml") + ": no such file"},
		{[]string{"audit", "--log.level", "loud"}, `invalid configuration: log.level: "loud" must be debug, info, warn or error`},
		{[]string{"audit", "--clickhouse.startup_timeout", "0s"}, "invalid configuration: clickhouse.startup_timeout: 0s must be positive"},
		{[]string{"status", "--cpuprofile", f("folder")}, "--cpuprofile: "},
	} {
		name := strings.Join(tc.args, " ")
		out, err := runOffline(ctx, t, tc.args...)
		if code := exitCode(err); code != exitBadInput || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("anchorline %s\n  exit %d: %v\n  want exit 2: %s\n%s", name, code, err, tc.want, out)
			continue
		}
		if strings.Contains(err.Error(), "\n") || out != "" {
			t.Errorf("anchorline %s: not one line on its own: %q, printed %q", name, err, out)
		}
	}
}

// verify's three outcomes on files alone: 0 the bundle verifies, 1 a step fails (a changed
// byte, or the encoding is not canonical), 2 a file is not a bundle or trust file.
func TestVerifyExitStatus(t *testing.T) {
	dir := t.TempDir()
	badInputFiles(t, dir)
	trust := filepath.Join(dir, "trust.json")
	b, err := os.ReadFile(filepath.Join(dir, "bundle.json"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, body []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		bundle string
		code   int
		out    string
	}{
		{write("ok.json", b), 0, "bundle verified: every step holds"},
		{write("seq.json", bytes.Replace(b, []byte(`"seq": 3,`), []byte(`"seq": 2,`), 1)), exitFailed, "✗ reading signature"},
		{write("spaces.json", bytes.Replace(b, []byte(`"seq": 3,`), []byte(`"seq":  3,`), 1)), exitFailed, "✗ bundle"},
		{filepath.Join(dir, "notjson.json"), exitBadInput, ""},
	} {
		out, err := runOffline(t.Context(), t, "verify", tc.bundle, "--trust", trust)
		if code := exitCode(err); code != tc.code || !strings.Contains(out, tc.out) {
			t.Errorf("verify %s: exit %d (%v), want %d\n%s", tc.bundle, code, err, tc.code, out)
		}
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{nil, 0},
		{errors.New("publish: nats: timeout"), exitFailed},
		{badInput(errors.New("--seq")), exitBadInput},
		{fmt.Errorf("migrate: %w", config.ErrInvalid), exitBadInput},
		{fmt.Errorf("audit: %w", exitError{exitIncomplete, errors.New("ledger down")}), exitIncomplete},
	} {
		if got := exitCode(tc.err); got != tc.code {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}
