package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
)

// logHomes initialises a one-validator network and copies its home, before it ever starts, to
// each of copies: every copy is the same chain (chain id, genesis, validator key) that has not
// yet made a block, from which another history can be written.
func logHomes(t *testing.T, copies ...string) string {
	t.Helper()
	dir := t.TempDir()
	admin, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const p2p = 26600 // replaced by port 0 below, so that tests running at once do not collide
	vs, err := node.InitNetwork(node.Network{Dir: filepath.Join(dir, "net"), ChainID: "log-test", Validators: 1, RPCPort: -1, P2PPort: p2p,
		Admins: []ed25519.PublicKey{admin}, TimeoutCommit: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	home := vs[0].Home
	conf := filepath.Join(home, "config", "config.toml")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	laddr := []byte(`"tcp://127.0.0.1:26600"`)
	if !bytes.Contains(b, laddr) {
		t.Fatalf("config.toml has no P2P address %s", laddr)
	}
	if err := os.WriteFile(conf, bytes.Replace(b, laddr, []byte(`"tcp://127.0.0.1:0"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range copies {
		if err := os.CopyFS(c, os.DirFS(home)); err != nil {
			t.Fatal(err)
		}
	}
	return home
}

// logNode is a running validator of a home from logHomes.
type logNode struct {
	n    *node.Node
	last int64 // height of the last block with an entry submitted here
}

func startLogNode(ctx context.Context, t *testing.T, home string) *logNode {
	t.Helper()
	n, err := node.StartHome(ctx, home, node.HomeOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop() })
	return &logNode{n: n}
}

// submit appends count anchor entries marked tag and waits for the header that commits them.
func (l *logNode) submit(ctx context.Context, t *testing.T, tag string, count int) {
	t.Helper()
	for i := range count {
		var id, root [16]byte
		copy(id[:], tag)
		id[15] = byte(i)
		_, _ = rand.Read(root[:])
		e, err := entry.NewAnchor(id, [32]byte(append(root[:], root[:]...)), 1, 1, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.n.Client().Submit(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		l.last = rc.Height
	}
	if err := l.n.Client().WaitHeight(ctx, l.last+1); err != nil {
		t.Fatal(err)
	}
}

// cli runs anchorline against the node's RPC.
func (l *logNode) cli(ctx context.Context, t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runOffline(ctx, t, append([]string{"--ledger.rpc", l.n.RPCAddr()}, args...)...)
}

func checkpointSize(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := bundle.ParseCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	return c.LogSize
}

// TestLogCheckpointAndRewrite: an auditor keeps a checkpoint of a real ledger's log; after more
// entries `log verify --since` proves the log only grew and --out rolls the checkpoint
// forward. Then the ledger's history is rewritten: a new chain from the same genesis (same
// chain id and validator key, so every header verifies against the same trust file) holding
// other entries, once to beyond the kept size and once to fewer entries. Both are detected:
// exit 1, with the evidence printed.
func TestLogCheckpointAndRewrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	rewritten, shorter := filepath.Join(dir, "rewritten"), filepath.Join(dir, "shorter")
	home := logHomes(t, rewritten, shorter)
	file := func(name string) string { return filepath.Join(dir, name) }

	a := startLogNode(ctx, t, home)
	chainID, vals, err := node.Trust(ctx, a.n.Client())
	if err != nil {
		t.Fatal(err)
	}
	tr, err := proof.TrustFileAt(chainID, 1, vals)
	if err != nil {
		t.Fatal(err)
	}
	trust := file("trust.json")
	if err := os.WriteFile(trust, tr, 0o644); err != nil {
		t.Fatal(err)
	}
	must := func(l *logNode, want string, args ...string) string {
		t.Helper()
		out, err := l.cli(ctx, t, args...)
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("anchorline %s: %v\n%s\nwant %q", strings.Join(args, " "), err, out, want)
		}
		return out
	}
	fails := func(l *logNode, code int, args ...string) string {
		t.Helper()
		out, err := l.cli(ctx, t, args...)
		if exitCode(err) != code {
			t.Fatalf("anchorline %s: exit %d (%v), want %d\n%s", strings.Join(args, " "), exitCode(err), err, code, out)
		}
		return out + "anchorline: " + err.Error() // as main prints it
	}

	a.submit(ctx, t, "kept", 3)
	kept := file("kept.json")
	must(a, "✓ signed header", "log", "checkpoint", "--out", kept, "--trust", trust)
	if n := checkpointSize(t, kept); n != 3 {
		t.Fatalf("the checkpoint holds log size %d, want 3", n)
	}
	a.submit(ctx, t, "more", 2)
	next := file("next.json")
	out := must(a, "the log extends the kept checkpoint: append-only from log size 3", "log", "verify", "--since", kept, "--trust", trust, "--out", next)
	for _, want := range []string{"kept checkpoint " + kept + ":", "the ledger today (", "✓ consistency        log size 3", "written to " + next} {
		if !strings.Contains(out, want) {
			t.Fatalf("log verify does not print %q:\n%s", want, out)
		}
	}
	if n := checkpointSize(t, next); n != 5 {
		t.Fatalf("the rolled-forward checkpoint holds log size %d, want 5", n)
	}
	must(a, "append-only from log size 5 (header", "log", "verify", "--since", next, "--trust", trust)
	must(a, "append-only from log size 3", "log", "verify", "--since", kept, "--trust", trust)

	// Bad input: exit 2, before anything is asked of the ledger.
	fails(a, exitBadInput, "log", "verify", "--trust", trust)
	fails(a, exitBadInput, "log", "verify", "--since", kept)
	fails(a, exitBadInput, "log", "verify", "--since", file("none.json"), "--trust", trust)
	if out := fails(a, exitBadInput, "log", "verify", "--since", trust, "--trust", trust); !strings.Contains(out, "is a trust file, not a checkpoint") {
		t.Fatal(out)
	}
	fails(a, exitBadInput, "log", "verify", "--since", kept, "--trust", kept)
	fails(a, exitBadInput, "log", "checkpoint")
	// A kept checkpoint changed in one byte does not verify: exit 1.
	b, err := os.ReadFile(kept)
	if err != nil {
		t.Fatal(err)
	}
	tampered := file("tampered.json")
	if err := os.WriteFile(tampered, bytes.Replace(b, []byte(`"log_size": 3`), []byte(`"log_size": 4`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := fails(a, exitFailed, "log", "verify", "--since", tampered, "--trust", trust); !strings.Contains(out, "✗ app hash") {
		t.Fatalf("a tampered checkpoint:\n%s", out)
	}
	if err := a.n.Stop(); err != nil {
		t.Fatal(err)
	}

	// History rewritten beyond the kept size: the first entries differ.
	b2 := startLogNode(ctx, t, rewritten)
	b2.submit(ctx, t, "rewritten", 7)
	for _, since := range []string{kept, next} {
		out := fails(b2, exitFailed, "log", "verify", "--since", since, "--trust", trust)
		for _, want := range []string{"✓ signed header", "✗ consistency", "does not verify", "evidence: ", "  kept:  header ", "  today: header ",
			"consistency proof ", "the proof rebuilds root"} {
			if !strings.Contains(out, want) {
				t.Fatalf("log verify --since %s of a rewritten ledger does not print %q:\n%s", since, want, out)
			}
		}
		if strings.Contains(out, "the log extends") {
			t.Fatalf("a rewritten ledger passes:\n%s", out)
		}
	}
	t.Logf("rewritten history:\n%s", fails(b2, exitFailed, "log", "verify", "--since", kept, "--trust", trust))
	if err := b2.n.Stop(); err != nil {
		t.Fatal(err)
	}

	// History rewritten shorter: the log shrank.
	c := startLogNode(ctx, t, shorter)
	c.submit(ctx, t, "shorter", 1)
	out = fails(c, exitFailed, "log", "verify", "--since", kept, "--trust", trust)
	for _, want := range []string{"✗ consistency", "the log shrank: 3 entries at header", "evidence: "} {
		if !strings.Contains(out, want) {
			t.Fatalf("log verify of a shorter ledger does not print %q:\n%s", want, out)
		}
	}
	if err := c.n.Stop(); err != nil {
		t.Fatal(err)
	}

	// No ledger to ask: nothing is concluded (exit 3).
	if _, err := runOffline(ctx, t, "log", "verify", "--since", kept, "--trust", trust); exitCode(err) != exitIncomplete {
		t.Fatalf("no ledger: exit %d (%v), want %d", exitCode(err), err, exitIncomplete)
	}
}
