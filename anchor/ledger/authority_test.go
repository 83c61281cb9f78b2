package ledger

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"

	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

func key(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return reading.Ed25519Public(k) }

func hexKeys(ks ...ed25519.PrivateKey) []string {
	out := []string{}
	for _, k := range ks {
		out = append(out, hex.EncodeToString(pub(k)))
	}
	return out
}

var t0 = time.UnixMilli(1_700_000_000_000)

// chain drives an App through its ABCI methods as CometBFT does: InitChain once, then
// FinalizeBlock and Commit per block.
type chain struct {
	t      *testing.T
	dir    string
	app    *App
	height int64
	vals   []abci.ValidatorUpdate // the genesis validators, voting in every block's last commit
	hashes [][]byte               // app hash after each block
	codes  [][]uint32             // result codes of each block's transactions
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newChain(t *testing.T, appState string, vals ...ed25519.PrivateKey) *chain {
	t.Helper()
	c := &chain{t: t, dir: t.TempDir()}
	for _, v := range vals {
		c.vals = append(c.vals, abci.Ed25519ValidatorUpdate(pub(v), 10))
	}
	c.open()
	if _, err := c.app.InitChain(t.Context(), &abci.RequestInitChain{ChainId: "test", AppStateBytes: []byte(appState), Validators: c.vals, InitialHeight: 1}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *chain) open() {
	c.t.Helper()
	app, err := OpenApp(c.dir, quietLog())
	if err != nil {
		c.t.Fatal(err)
	}
	c.app = app
	c.t.Cleanup(func() { app.Close() })
}

// reopen closes the app and opens its database again, as a restart does.
func (c *chain) reopen() {
	c.t.Helper()
	if err := c.app.Close(); err != nil {
		c.t.Fatal(err)
	}
	c.open()
}

func (c *chain) checkTx(tx []byte) *abci.ResponseCheckTx {
	c.t.Helper()
	r, err := c.app.CheckTx(c.t.Context(), &abci.RequestCheckTx{Tx: tx, Type: abci.CheckTxType_New})
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// block finalizes and commits a block of txs and returns FinalizeBlock's response.
func (c *chain) block(txs ...[]byte) *abci.ResponseFinalizeBlock {
	c.t.Helper()
	c.height++
	var votes []abci.VoteInfo
	if c.height > 1 {
		for _, v := range c.vals {
			votes = append(votes, abci.VoteInfo{Validator: abci.Validator{Address: cmted25519.PubKey(v.PubKey.GetEd25519()).Address(), Power: v.Power}})
		}
	}
	r, err := c.app.FinalizeBlock(c.t.Context(), &abci.RequestFinalizeBlock{Height: c.height, Txs: txs, DecidedLastCommit: abci.CommitInfo{Votes: votes}})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.app.Commit(c.t.Context(), &abci.RequestCommit{}); err != nil {
		c.t.Fatal(err)
	}
	codes := make([]uint32, len(r.TxResults))
	for i, res := range r.TxResults {
		codes[i] = res.Code
	}
	c.hashes = append(c.hashes, r.AppHash)
	c.codes = append(c.codes, codes)
	return r
}

// wantCodes fails unless the block's results have the codes want.
func wantCodes(t *testing.T, r *abci.ResponseFinalizeBlock, want ...uint32) {
	t.Helper()
	if len(r.TxResults) != len(want) {
		t.Fatalf("%d results, want %d", len(r.TxResults), len(want))
	}
	for i, res := range r.TxResults {
		if res.Code != want[i] {
			t.Errorf("tx %d: code %d (%s), want %d", i, res.Code, res.Log, want[i])
		}
	}
}

func (c *chain) authority() Authority {
	c.t.Helper()
	r, err := c.app.Query(context.Background(), &abci.RequestQuery{Path: PathAuthority})
	if err != nil || r.Code != CodeOK {
		c.t.Fatalf("authority query: %v %s", err, r.GetLog())
	}
	var a Authority
	if err := jsonUnmarshal(r.Value, &a); err != nil {
		c.t.Fatal(err)
	}
	return a
}

var anchorSeq byte

func unsignedAnchor(t *testing.T) []byte {
	t.Helper()
	anchorSeq++
	var id [16]byte
	var root [32]byte
	id[0], root[0] = anchorSeq, anchorSeq
	b, err := entry.NewAnchor(id, root, 1, 10, t0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signedAnchor(t *testing.T, k ed25519.PrivateKey) []byte {
	t.Helper()
	anchorSeq++
	var id [16]byte
	var root [32]byte
	id[0], root[0] = anchorSeq, anchorSeq
	b, err := entry.NewSignedAnchor(k, id, root, 1, 10, t0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// must(t)(b, err) is b, failing the test on err.
func must(t *testing.T) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// TestAnchorsNeedAnAuthorisedKey: a genesis that lists anchor_keys accepts, from its first
// block, only anchors signed by one of them.
func TestAnchorsNeedAnAuthorisedKey(t *testing.T) {
	admin, anchorKey, stranger := key(1), key(2), key(3)
	c := newChain(t, `{"admins":["`+hex.EncodeToString(pub(admin))+`"],"anchor_keys":["`+hex.EncodeToString(pub(anchorKey))+`"]}`, key(100))

	unsigned, foreign, good := unsignedAnchor(t), signedAnchor(t, stranger), signedAnchor(t, anchorKey)
	e, err := entry.Decode(signedAnchor(t, anchorKey))
	if err != nil {
		t.Fatal(err)
	}
	tampered := *e.Anchor
	tampered.Readings++ // no longer what the key signed
	forged := must(t)(tampered.Encode())
	cases := []struct {
		name string
		tx   []byte
		code uint32
	}{
		{"unsigned", unsigned, CodeUnauthorised},
		{"signed by an unknown key", foreign, CodeUnauthorised},
		{"signature does not verify", forged, CodeBadSignature},
		{"signed by the authorised key", good, CodeOK},
	}
	for _, tc := range cases {
		if r := c.checkTx(tc.tx); r.Code != tc.code {
			t.Errorf("CheckTx %s: code %d (%s), want %d", tc.name, r.Code, r.Log, tc.code)
		}
	}
	// A proposer that ignores CheckTx: FinalizeBlock refuses the same entries.
	r := c.block(unsigned, foreign, forged, good)
	wantCodes(t, r, CodeUnauthorised, CodeUnauthorised, CodeBadSignature, CodeOK)
	if log := r.TxResults[1].Log; log == "" {
		t.Error("a refused anchor has no log")
	}
	if got := c.app.s.logSize(); got != 1 {
		t.Fatalf("log holds %d entries, want 1", got)
	}
}

// TestAnchorKeyEntries: on a chain whose genesis lists no anchor keys (as every chain before
// authorised writers), unsigned anchors are accepted until the block after the first
// anchor_key entry; admins add and remove anchoring keys.
func TestAnchorKeyEntries(t *testing.T) {
	admin, anchorKey, stranger := key(1), key(2), key(3)
	c := newChain(t, `{"admins":["`+hex.EncodeToString(pub(admin))+`"]}`, key(100))

	wantCodes(t, c.block(unsignedAnchor(t), signedAnchor(t, stranger)), CodeOK, CodeOK)

	byStranger := must(t)(entry.NewAnchorKey(stranger, entry.OpAdd, pub(stranger), t0))
	if r := c.checkTx(byStranger); r.Code != CodeUnauthorised {
		t.Fatalf("anchor_key by a non-admin: code %d (%s)", r.Code, r.Log)
	}
	add := must(t)(entry.NewAnchorKey(admin, entry.OpAdd, pub(anchorKey), t0))
	if r := c.checkTx(add); r.Code != CodeOK {
		t.Fatalf("anchor_key add: code %d (%s)", r.Code, r.Log)
	}
	// The rule holds from the block after the entry: the unsigned anchor in its block passes.
	wantCodes(t, c.block(byStranger, add, unsignedAnchor(t)), CodeUnauthorised, CodeOK, CodeOK)
	a := c.authority()
	if a.AnchorRuleFrom != 3 || len(a.AnchorKeys) != 1 || a.AnchorKeys[0] != hex.EncodeToString(pub(anchorKey)) {
		t.Fatalf("authority after add: %+v", a)
	}
	wantCodes(t, c.block(unsignedAnchor(t), signedAnchor(t, stranger), signedAnchor(t, anchorKey), add),
		CodeUnauthorised, CodeUnauthorised, CodeOK, CodeConflict)

	remove := must(t)(entry.NewAnchorKey(admin, entry.OpRemove, pub(anchorKey), t0.Add(time.Second)))
	removeUnknown := must(t)(entry.NewAnchorKey(admin, entry.OpRemove, pub(stranger), t0))
	wantCodes(t, c.block(remove, removeUnknown), CodeOK, CodeConflict)
	if r := c.checkTx(signedAnchor(t, anchorKey)); r.Code != CodeUnauthorised {
		t.Fatalf("anchor by a removed key: code %d (%s)", r.Code, r.Log)
	}
	// Authority is ledger state: it survives a restart.
	c.reopen()
	if r := c.checkTx(signedAnchor(t, anchorKey)); r.Code != CodeUnauthorised {
		t.Fatalf("after restart, anchor by a removed key: code %d (%s)", r.Code, r.Log)
	}
	if a := c.authority(); a.AnchorRuleFrom != 3 || len(a.AnchorKeys) != 0 {
		t.Fatalf("authority after restart: %+v", a)
	}
}

// TestValidatorChangesNeedThreshold: 3 admins, M = 2 in genesis.
func TestValidatorChangesNeedThreshold(t *testing.T) {
	a1, a2, a3, stranger := key(1), key(2), key(3), key(9)
	v0, v1 := key(100), key(101)
	c := newChain(t, `{"admins":["`+hexKeys(a1)[0]+`","`+hexKeys(a2)[0]+`","`+hexKeys(a3)[0]+`"],"admin_threshold":2}`, v0)
	c.block()

	one := must(t)(entry.NewValidator(pub(v1), 5, t0, a1))
	withStranger := must(t)(entry.NewValidator(pub(v1), 5, t0, a1, stranger))
	if r := c.checkTx(one); r.Code != CodeUnauthorised {
		t.Fatalf("validator change by 1 of 2 admins: code %d (%s)", r.Code, r.Log)
	}
	if r := c.checkTx(withStranger); r.Code != CodeUnauthorised {
		t.Fatalf("validator change with a non-admin's signature: code %d (%s)", r.Code, r.Log)
	}
	r := c.block(one, withStranger)
	wantCodes(t, r, CodeUnauthorised, CodeUnauthorised)
	if len(r.ValidatorUpdates) != 0 {
		t.Fatalf("refused changes returned updates %v", r.ValidatorUpdates)
	}

	two := must(t)(entry.Cosign(one, a3))
	if r := c.checkTx(two); r.Code != CodeOK {
		t.Fatalf("validator change by 2 of 3: code %d (%s)", r.Code, r.Log)
	}
	r = c.block(two)
	wantCodes(t, r, CodeOK)
	if len(r.ValidatorUpdates) != 1 || string(r.ValidatorUpdates[0].PubKey.GetEd25519()) != string(pub(v1)) || r.ValidatorUpdates[0].Power != 5 {
		t.Fatalf("validator updates %v", r.ValidatorUpdates)
	}
	if a := c.authority(); len(a.Validators) != 2 {
		t.Fatalf("validators after add: %+v", a.Validators)
	}

	// An older entry (its time not after the last change) is refused: no replays with another
	// subset of signatures.
	replay := must(t)(entry.NewValidator(pub(v1), 0, t0, a1, a2))
	reweight := must(t)(entry.NewValidator(pub(v0), 20, t0.Add(time.Second), a1, a2))
	removeV1 := must(t)(entry.NewValidator(pub(v1), 0, t0.Add(2*time.Second), a2, a3))
	removeV0 := must(t)(entry.NewValidator(pub(v0), 0, t0.Add(3*time.Second), a2, a3)) // the last one
	removeUnknown := must(t)(entry.NewValidator(pub(stranger), 0, t0.Add(4*time.Second), a2, a3))
	r = c.block(replay, reweight, removeV1, removeV0, removeUnknown)
	wantCodes(t, r, CodeConflict, CodeOK, CodeOK, CodeConflict, CodeConflict)
	if len(r.ValidatorUpdates) != 2 {
		t.Fatalf("validator updates %v, want v0 re-weighted and v1 removed", r.ValidatorUpdates)
	}
	for _, u := range r.ValidatorUpdates {
		switch string(u.PubKey.GetEd25519()) {
		case string(pub(v0)):
			if u.Power != 20 {
				t.Errorf("v0 power %d, want 20", u.Power)
			}
		case string(pub(v1)):
			if u.Power != 0 {
				t.Errorf("v1 power %d, want 0 (removed)", u.Power)
			}
		default:
			t.Errorf("update of an unknown key %v", u)
		}
	}
	c.reopen()
	if a := c.authority(); len(a.Validators) != 1 || a.Validators[0].Power != 20 || a.Threshold != 2 {
		t.Fatalf("authority after restart: %+v", a)
	}
}

// TestAdminRotation: admins change (add one, remove one) only with M signatures; the removed
// admin can sign nothing afterwards, the new one can.
func TestAdminRotation(t *testing.T) {
	a1, a2, a3 := key(1), key(2), key(3)
	c := newChain(t, `{"admins":["`+hexKeys(a1)[0]+`","`+hexKeys(a2)[0]+`"]}`, key(100))
	if a := c.authority(); a.Threshold != 2 {
		t.Fatalf("default threshold of two admins: %d, want 2 (a majority)", a.Threshold)
	}
	alone := must(t)(entry.NewAdmins([]ed25519.PublicKey{pub(a3)}, []ed25519.PublicKey{pub(a2)}, 1, t0, a1))
	if r := c.checkTx(alone); r.Code != CodeUnauthorised {
		t.Fatalf("one admin replacing the other: code %d (%s)", r.Code, r.Log)
	}
	tooHigh := must(t)(entry.NewAdmins(nil, []ed25519.PublicKey{pub(a2)}, 2, t0, a1, a2))
	rotate := must(t)(entry.NewAdmins([]ed25519.PublicKey{pub(a3)}, []ed25519.PublicKey{pub(a1)}, 2, t0.Add(time.Second), a1, a2))
	wantCodes(t, c.block(alone, tooHigh, rotate), CodeUnauthorised, CodeConflict, CodeOK)
	a := c.authority()
	if len(a.Admins) != 2 || a.Admins[0] != hexKeys(a2)[0] || a.Admins[1] != hexKeys(a3)[0] || a.Threshold != 2 {
		t.Fatalf("admins after rotation: %+v", a)
	}

	oldAdmin := must(t)(entry.NewValidator(pub(key(101)), 1, t0.Add(2*time.Second), a1, a2))
	newAdmins := must(t)(entry.NewValidator(pub(key(101)), 1, t0.Add(3*time.Second), a2, a3))
	dev := reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(50))}
	regOld := must(t)(entry.NewRegister(a1, "dev-1", dev, t0))
	regNew := must(t)(entry.NewRegister(a3, "dev-1", dev, t0))
	r := c.block(oldAdmin, newAdmins, regOld, regNew)
	wantCodes(t, r, CodeUnauthorised, CodeOK, CodeUnauthorised, CodeOK)
	if len(r.ValidatorUpdates) != 1 {
		t.Fatalf("validator updates %v", r.ValidatorUpdates)
	}
}

// TestGenesisChecks: a genesis whose threshold cannot be met is refused at InitChain.
func TestGenesisChecks(t *testing.T) {
	for _, g := range []string{
		`{"admins":["` + hexKeys(key(1))[0] + `"],"admin_threshold":2}`,
		`{"admins":["` + hexKeys(key(1))[0] + `"],"admin_threshold":0}`,
		`{"admins":["` + hexKeys(key(1))[0] + `"],"anchor_keys":["00"]}`,
	} {
		app, err := OpenApp(t.TempDir(), quietLog())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := app.InitChain(t.Context(), &abci.RequestInitChain{AppStateBytes: []byte(g)}); err == nil {
			t.Errorf("genesis %s accepted", g)
		}
		app.Close()
	}
}

// TestReplayOfAnOlderChain: a chain made before authorised writers (genesis without
// anchor_keys, a database without authority state) with unsigned anchors in its log. Going on
// from its old database and replaying all its blocks from genesis on a new database give the
// same results and the same app hash after every block, also across its first anchor_key
// entry.
func TestReplayOfAnOlderChain(t *testing.T) {
	admin, anchorKey := key(1), key(2)
	genesis := `{"admins":["` + hexKeys(admin)[0] + `"]}`
	old := newChain(t, genesis, key(100))
	dev := reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(50))}
	blocks := [][][]byte{
		{unsignedAnchor(t), must(t)(entry.NewRegister(admin, "dev-1", dev, t0))},
		{unsignedAnchor(t), unsignedAnchor(t)},
		{},
	}
	for _, b := range blocks {
		old.block(b...)
	}
	// Make its database look as the first release left it: no authority state.
	if err := old.app.db.DeleteSync(keyAuthority); err != nil {
		t.Fatal(err)
	}
	old.reopen()
	if a := old.authority(); a.AnchorRuleFrom != 0 || a.Threshold != 1 || len(a.Admins) != 1 {
		t.Fatalf("authority of an older database: %+v", a)
	}
	later := [][][]byte{
		{unsignedAnchor(t), must(t)(entry.NewAnchorKey(admin, entry.OpAdd, pub(anchorKey), t0))},
		{unsignedAnchor(t), signedAnchor(t, anchorKey), must(t)(entry.NewValidator(pub(key(101)), 1, t0, admin))},
	}
	for _, b := range later {
		old.block(b...)
	}
	blocks = append(blocks, later...)

	replay := newChain(t, genesis, key(100))
	for _, b := range blocks {
		replay.block(b...)
	}
	for i := range blocks {
		if string(old.hashes[i]) != string(replay.hashes[i]) {
			t.Errorf("block %d: app hash %x going on, %x replayed", i+1, old.hashes[i], replay.hashes[i])
		}
		if len(old.codes[i]) != len(replay.codes[i]) {
			t.Fatalf("block %d: %d results going on, %d replayed", i+1, len(old.codes[i]), len(replay.codes[i]))
		}
		for j := range old.codes[i] {
			if old.codes[i][j] != replay.codes[i][j] {
				t.Errorf("block %d tx %d: code %d going on, %d replayed", i+1, j, old.codes[i][j], replay.codes[i][j])
			}
		}
	}
	want := [][]uint32{{0, 0}, {0, 0}, {}, {0, 0}, {CodeUnauthorised, 0, 0}}
	for i, w := range want {
		for j := range w {
			if old.codes[i][j] != w[j] {
				t.Errorf("block %d tx %d: code %d, want %d", i+1, j, old.codes[i][j], w[j])
			}
		}
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
