package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

func start(t *testing.T, home string, admin ed25519.PublicKey) *Node {
	t.Helper()
	n, err := Start(context.Background(), Config{Home: home, ChainID: "node-test", TimeoutCommit: 50 * time.Millisecond,
		Admins: []ed25519.PublicKey{admin}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func anchorEntry(t *testing.T, i byte) []byte {
	var id [16]byte
	var root [32]byte
	id[0], root[0] = i, i
	_, _ = rand.Read(id[1:])
	e, err := entry.NewAnchor(id, root, 1, 10, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// checkState verifies, against the light block of height+1, what the app says about the state
// after block height: the app hash in that signed header commits the log and registry roots.
func checkState(t *testing.T, ctx context.Context, c *ledger.Client, height int64) ledger.State {
	t.Helper()
	st, err := c.State(ctx, height)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := c.LightBlock(ctx, height+1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.AppState().AppHash()
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != merkle.AppHashV2 || got != st.AppHash || string(lb.Header.AppHash) != string(got[:]) {
		t.Fatalf("app hash at %d: state of version %d %x, header %x", height, st.Version, got, lb.Header.AppHash)
	}
	if err := lb.ValidatorSet.VerifyCommitLight(lb.ChainID, lb.Commit.BlockID, lb.Height, lb.Commit); err != nil {
		t.Fatalf("light block commit: %v", err)
	}
	return st
}

func TestLedger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	adminPub, admin, _ := ed25519.GenerateKey(rand.Reader)
	home := t.TempDir()
	n := start(t, home, adminPub)
	c := n.Client()

	devKey, err := reading.GenerateKey(reading.ES256)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := entry.NewRegister(admin, "dev-a", devKey.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rcReg, err := c.Submit(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	// Submitting the same entry again returns the same receipt; registering again is refused.
	if again, err := c.Submit(ctx, reg); err != nil || again.LogIndex != rcReg.LogIndex || again.Height != rcReg.Height {
		t.Fatalf("resubmit: %+v %v", again, err)
	}
	reg2, _ := entry.NewRegister(admin, "dev-a", devKey.Public(), time.Now().Add(time.Second))
	if _, err := c.Submit(ctx, reg2); !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("second registration: %v", err)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	bogus, _ := entry.NewRegister(stranger, "dev-b", devKey.Public(), time.Now())
	if _, err := c.Submit(ctx, bogus); !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("registration by a non-admin: %v", err)
	}
	if _, err := c.Submit(ctx, []byte("junk")); !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("junk: %v", err)
	}

	dp, err := c.Device(ctx, "dev-a", rcReg.Height)
	if err != nil {
		t.Fatal(err)
	}
	if dp.Record.Status != entry.StatusActive || dp.Record.Height != uint64(rcReg.Height) || string(dp.Record.Key) != string(devKey.Public().Key) {
		t.Fatalf("record %+v", dp.Record)
	}
	st := checkState(t, ctx, c, rcReg.Height)
	leaf := merkle.LeafHash(dp.RecordBytes)
	if err := smt.Verify(smt.Hash(st.RegistryRoot), smt.KeyOf("dev-a"), leaf[:], dp.SMTProof); err != nil {
		t.Fatalf("registry proof: %v", err)
	}
	if _, err := c.Device(ctx, "nobody", 0); !errors.Is(err, ledger.ErrUnknownDevice) {
		t.Fatalf("unknown device: %v", err)
	}

	var receipts []ledger.Receipt
	var entries [][]byte
	for i := range 5 {
		e := anchorEntry(t, byte(i))
		rc, err := c.Submit(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		receipts, entries = append(receipts, rc), append(entries, e)
	}
	for i, rc := range receipts {
		p, err := c.EntryProof(ctx, rc.LogIndex, rc.Height)
		if err != nil {
			t.Fatal(err)
		}
		if string(p.Entry) != string(entries[i]) {
			t.Fatal("entry bytes differ")
		}
		st := checkState(t, ctx, c, rc.Height)
		if p.LogRoot != st.LogRoot || p.LogSize != st.LogSize || p.RegistryRoot != st.RegistryRoot {
			t.Fatalf("entry proof roots differ from the state at %d", rc.Height)
		}
		if err := merkle.VerifyInclusion(p.LogIndex, p.LogSize, merkle.EntryLeaf(p.Entry), p.Path, p.LogRoot); err != nil {
			t.Fatalf("log proof: %v", err)
		}
	}

	rev, _ := entry.NewRevoke(admin, "dev-a", time.Now())
	rcRev, err := c.Submit(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, rev); err != nil { // the same entry: already committed
		t.Fatal(err)
	}
	rev2, _ := entry.NewRevoke(admin, "dev-a", time.Now().Add(time.Second))
	if _, err := c.Submit(ctx, rev2); !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("second revocation: %v", err)
	}
	now, err := c.Device(ctx, "dev-a", 0)
	if err != nil || now.Record.Status != entry.StatusRevoked || now.Record.Height != uint64(rcRev.Height) {
		t.Fatalf("after revoke: %+v %v", now.Record, err)
	}
	old, err := c.Device(ctx, "dev-a", rcReg.Height)
	if err != nil || old.Record.Status != entry.StatusActive {
		t.Fatalf("history: %+v %v", old.Record, err)
	}
	recs, h, err := c.DevicesChanged(ctx, rcRev.Height-1)
	if err != nil || len(recs) != 1 || recs[0].Status != entry.StatusRevoked || h < rcRev.Height {
		t.Fatalf("changes: %+v %d %v", recs, h, err)
	}
	if recs, _, err := c.DevicesChanged(ctx, h); err != nil || len(recs) != 0 {
		t.Fatalf("no changes expected: %+v %v", recs, err)
	}

	// The log only grows: consistency between an early and the latest size.
	stNow := checkState(t, ctx, c, rcRev.Height)
	stEarly, err := c.State(ctx, rcReg.Height)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := c.Consistency(ctx, stEarly.LogSize, stNow.LogSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := merkle.VerifyConsistency(stEarly.LogSize, stNow.LogSize, cp, stEarly.LogRoot, stNow.LogRoot); err != nil {
		t.Fatalf("consistency: %v", err)
	}

	// Restart on the same home: height continues, history and proofs are the same.
	h1, _ := c.Height(ctx)
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	n = start(t, home, adminPub)
	defer n.Stop()
	c = n.Client()
	if err := c.WaitHeight(ctx, h1+1); err != nil {
		t.Fatal(err)
	}
	p, err := c.EntryProof(ctx, receipts[2].LogIndex, receipts[2].Height)
	if err != nil || string(p.Entry) != string(entries[2]) {
		t.Fatalf("entry after restart: %v", err)
	}
	if st2 := checkState(t, ctx, c, rcRev.Height); !reflect.DeepEqual(st2, stNow) {
		t.Fatalf("state at %d changed across restart: %+v vs %+v", rcRev.Height, st2, stNow)
	}
	if got, err := c.Device(ctx, "dev-a", 0); err != nil || got.Record.Status != entry.StatusRevoked {
		t.Fatalf("device after restart: %+v %v", got, err)
	}
	if _, err := c.Submit(ctx, anchorEntry(t, 9)); err != nil {
		t.Fatalf("submit after restart: %v", err)
	}
	if _, err := c.Submit(ctx, entries[0]); err != nil { // already committed before the restart
		t.Fatal(err)
	}
	chainID, vals, err := Trust(ctx, c)
	if err != nil || chainID != "node-test" || vals.Size() != 1 {
		t.Fatalf("trust: %s %v %v", chainID, vals, err)
	}
}
