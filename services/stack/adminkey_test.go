package stack

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
)

func TestLoadOrCreateAnchorKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "anchor.key")
	k, err := LoadOrCreateAnchorKey(path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateAnchorKey(path)
	if err != nil || !k.Equal(again) {
		t.Fatalf("second load: %v (same key: %v)", err, k.Equal(again))
	}
	if _, err := LoadAdminKey(filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrNoAdminKey) {
		t.Fatalf("missing admin key: %v", err)
	}
}

// TestAuthoriseAnchorKeyOnAnOlderChain: a chain whose genesis lists no anchoring keys (a dev
// data_dir made before authorised writers) accepts unsigned anchors until dev authorises its
// key at start; from then on only anchors signed by that key. A second start changes nothing.
func TestAuthoriseAnchorKeyOnAnOlderChain(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	_, admin, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	anchorKey, err := LoadOrCreateAnchorKey(filepath.Join(t.TempDir(), "anchor.key"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(ctx, node.Config{Home: t.TempDir(), ChainID: "older-chain", TimeoutCommit: 50 * time.Millisecond,
		Admins: []ed25519.PublicKey{reading.Ed25519Public(admin)}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	c := n.Client()
	anchor := func(k ed25519.PrivateKey) []byte {
		var root [32]byte
		_, _ = rand.Read(root[:])
		id := stream.NewID(time.Now())
		var b []byte
		var err error
		if k == nil {
			b, err = entry.NewAnchor(id, root, 1, 1, time.Now())
		} else {
			b, err = entry.NewSignedAnchor(k, id, root, 1, 1, time.Now())
		}
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := c.Submit(ctx, anchor(nil)); err != nil {
		t.Fatalf("unsigned anchor before the rule: %v", err)
	}
	for range 2 {
		if err := AuthoriseAnchorKey(ctx, c, admin, reading.Ed25519Public(anchorKey), testLogger(t)); err != nil {
			t.Fatal(err)
		}
	}
	a, err := c.Authority(ctx)
	if err != nil || len(a.AnchorKeys) != 1 || a.AnchorRuleFrom == 0 {
		t.Fatalf("authority %+v, %v", a, err)
	}
	if _, err := c.Submit(ctx, anchor(anchorKey)); err != nil {
		t.Fatalf("signed anchor: %v", err)
	}
	if _, err := c.Submit(ctx, anchor(nil)); !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("unsigned anchor after the rule: %v, want ErrRejected", err)
	}
}
