package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"

	"github.com/anchorline/anchorline/schemas/bundle"
)

// TestTrustAcrossValidatorChanges: on a dev stack, the auditor exports the trust file once
// (it names height 1); an admin then adds a validator (power 1 beside the dev validator's 10).
// A bundle of a reading anchored before and one anchored after the change both verify from
// that first trust file, the second hop by hop; audit --trust follows the same chain; and
// trust export then names the height of the new set.
func TestTrustAcrossValidatorChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	st := startCLIStack(ctx, t)
	dir := t.TempDir()
	must := func(want string, args ...string) string { t.Helper(); return st.must(t, want, args...) }
	l, err := remoteLedger(st.dev.Config(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}

	key := filepath.Join(dir, "dev.key")
	must("written to", "device", "keygen", "--id", "tc-dev", "--out", key)
	must("registered tc-dev", "device", "register", key)
	must("published tc-dev seq 1", "device", "publish", key, "--metric", "temp=1")
	before := filepath.Join(dir, "before.json")
	must("written to", "proof", "--device", "tc-dev", "--seq", "1", "--wait", "60s", "--out", before)
	trust := filepath.Join(dir, "trust.json")
	must("the validator set that signs from height 1 on", "trust", "export", "--out", trust)

	valPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	add := filepath.Join(dir, "add.json")
	must("proposal written to", "ledger", "validator", "--pubkey", base64.StdEncoding.EncodeToString(valPub), "--power", "1", "--out", add)
	must("1 of the 1 signatures", "ledger", "sign", add)
	must("CometBFT applies the validator change from height", "ledger", "submit", add)
	addr := cmted25519.PubKey(valPub).Address()
	pollLedger(ctx, t, "the new validator in CometBFT's set", func() (bool, error) {
		h, err := l.Height(ctx)
		if err != nil {
			return false, err
		}
		vals, err := l.Validators(ctx, h)
		if err != nil {
			return false, err
		}
		_, v := vals.GetByAddress(addr)
		return v != nil, nil
	})

	must("published tc-dev seq 2", "device", "publish", key, "--metric", "temp=2")
	after := filepath.Join(dir, "after.json")
	must("written to", "proof", "--device", "tc-dev", "--seq", "2", "--wait", "60s", "--out", after)
	b, err := os.ReadFile(after)
	if err != nil {
		t.Fatal(err)
	}
	if bd, err := bundle.Parse(b); err != nil || len(bd.Ledger.LightChain) != 2 {
		t.Fatalf("the bundle after the change carries no light chain of 2 blocks (%v)", err)
	}
	must("bundle verified", "verify", before, "--trust", trust)
	out := must("bundle verified", "verify", after, "--trust", trust)
	for _, want := range []string{"✓ light chain        hop 1 of 3", "hop 2 of 3", "✓ signed header      hop 3 of 3"} {
		if !strings.Contains(out, want) {
			t.Fatalf("verify does not print %q:\n%s", want, out)
		}
	}
	must("reached from the trusted validators through 2 light blocks across validator-set changes", "audit", "--trust", trust)

	out = must("trust file written to", "trust", "export", "--out", filepath.Join(dir, "trust2.json"))
	if strings.Contains(out, "from height 1 on") {
		t.Fatalf("trust export after the change still pins height 1: %s", out)
	}
	b2, err := os.ReadFile(filepath.Join(dir, "trust2.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b2), strings.ToUpper(hex.EncodeToString(addr))) {
		t.Fatalf("the new trust file lacks the new validator:\n%s", b2)
	}
	must("bundle verified", "verify", after, "--trust", filepath.Join(dir, "trust2.json"))
}
