package ledger_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/stream"
)

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func anchor(t *testing.T, k ed25519.PrivateKey) []byte {
	t.Helper()
	var root [32]byte
	_, _ = rand.Read(root[:])
	id := stream.NewID(time.Now())
	var b []byte
	var err error
	if k == nil {
		b, err = entry.NewAnchor(id, root, 1, 10, time.Now())
	} else {
		b, err = entry.NewSignedAnchor(k, id, root, 1, 10, time.Now())
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAuthorisedWritersOnANode runs the app under a real CometBFT node: anchors need an
// authorised key, and a validator added and removed by an admin entry reaches CometBFT's
// validator set.
func TestAuthorisedWritersOnANode(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	admin, anchorKey := newKey(t), newKey(t)
	n, err := node.Start(ctx, node.Config{Home: t.TempDir(), ChainID: "authority-test", TimeoutCommit: 50 * time.Millisecond,
		Admins: []ed25519.PublicKey{reading.Ed25519Public(admin)}, AnchorKeys: []ed25519.PublicKey{reading.Ed25519Public(anchorKey)},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	c := n.Client()

	for name, k := range map[string]ed25519.PrivateKey{"unsigned": nil, "signed by an unknown key": newKey(t)} {
		if _, err := c.Submit(ctx, anchor(t, k)); !errors.Is(err, ledger.ErrRejected) {
			t.Errorf("%s anchor: %v, want ErrRejected", name, err)
		}
	}
	if _, err := c.Submit(ctx, anchor(t, anchorKey)); err != nil {
		t.Fatalf("signed anchor: %v", err)
	}

	// A validator of power 1 beside the node's 10: the node alone still has more than 2/3.
	extra := reading.Ed25519Public(newKey(t))
	validators := func() (map[string]int64, error) {
		res, err := n.RPC().Validators(ctx, nil, nil, nil)
		if err != nil {
			return nil, err
		}
		out := map[string]int64{}
		for _, v := range res.Validators {
			out[string(v.PubKey.Bytes())] = v.VotingPower
		}
		return out, nil
	}
	add, err := entry.NewValidator(extra, 1, time.Now(), admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, add); err != nil {
		t.Fatalf("add validator: %v", err)
	}
	await.Until(t, ctx, "CometBFT's validator set holds the added validator", func() (bool, string) {
		vs, err := validators()
		return err == nil && len(vs) == 2 && vs[string(extra)] == 1, fmt.Sprint(vs, err)
	})
	if _, err := c.Submit(ctx, anchor(t, anchorKey)); err != nil {
		t.Fatalf("anchor after the change: %v", err)
	}
	remove, err := entry.NewValidator(extra, 0, time.Now().Add(time.Millisecond), admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, remove); err != nil {
		t.Fatalf("remove validator: %v", err)
	}
	await.Until(t, ctx, "CometBFT's validator set is the node alone again", func() (bool, string) {
		vs, err := validators()
		return err == nil && len(vs) == 1 && vs[string(extra)] == 0, fmt.Sprint(vs, err)
	})
	a, err := c.Authority(ctx)
	if err != nil || len(a.Validators) != 1 || len(a.AnchorKeys) != 1 || a.AnchorRuleFrom != 1 {
		t.Fatalf("authority %+v, %v", a, err)
	}
}
