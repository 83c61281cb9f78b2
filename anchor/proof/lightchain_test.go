package proof

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/crypto/tmhash"
	"github.com/cometbft/cometbft/light"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	cmtversion "github.com/cometbft/cometbft/proto/tendermint/version"
	"github.com/cometbft/cometbft/types"
	"github.com/cometbft/cometbft/version"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// trustAt is the trust file `trust export` writes now: the set at the latest height, and that
// height.
func (c *chain) trustAt(t *testing.T) []byte {
	t.Helper()
	ctx := context.Background()
	chainID, err := c.lc.ChainID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.lc.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := c.lc.Validators(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := TrustFileAt(chainID, h, vals)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// changeValidator submits an admin entry setting pub's power and waits until the header two
// blocks on, the first signed by the new set, is committed.
func (c *chain) changeValidator(t *testing.T, ctx context.Context, pub ed25519.PublicKey, power uint64) int64 {
	t.Helper()
	e, err := entry.NewValidator(pub, power, time.Now(), c.admin)
	if err != nil {
		t.Fatal(err)
	}
	h := c.submit(t, e)
	if err := c.lc.WaitHeight(ctx, h+3); err != nil {
		t.Fatal(err)
	}
	return h + 2
}

// TestLightChainAcrossValidatorChanges runs four real validators; admin entries add a fifth
// (whose node never runs: the four keep more than 2/3 of the power) and then remove one of the
// four. A bundle of a reading anchored before the changes and one anchored after both verify
// from the trust file exported at the start; the second carries the light chain, and verify
// prints a hop for each of its blocks. It also writes the golden light-chain bundle
// (testdata/lightchain.json) with -update.
func TestLightChainAcrossValidatorChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	admin := ed25519.NewKeyFromSeed(seeded(1))
	tn, err := node.StartTestnet(ctx, node.Network{Dir: filepath.Join(t.TempDir(), "net"), ChainID: "proof-test", Validators: 4,
		Admins: []ed25519.PublicKey{admin.Public().(ed25519.PublicKey)}, TimeoutCommit: 100 * time.Millisecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tn.Close(); err != nil {
			t.Error(err)
		}
	}()
	f, err := ledger.NewFailover(tn.RPCAddrs(), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	c := &chain{lc: ledger.NewClient(f, log), admin: admin}
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
	c.register(t, "lc-device", ed)
	trustOld := c.trust(t)   // as trust files were made before they named a height
	trustAtH := c.trustAt(t) // as `trust export` writes them now
	if tr, err := bundle.ParseTrust(trustAtH); err != nil || tr.Height < 1 {
		t.Fatalf("trust file without its height: %v\n%s", err, trustAtH)
	}
	readings := [][]byte{sign(t, ed, "lc-device", 1), sign(t, ed, "lc-device", 2)}
	before := c.bundleFor(t, readings, 0)
	if len(before.Ledger.LightChain) != 0 {
		t.Fatalf("a bundle from before any change has a light chain of %d blocks", len(before.Ledger.LightChain))
	}

	vals, err := c.lc.Validators(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	power := uint64(vals.Validators[0].VotingPower)
	fifth := ed25519.NewKeyFromSeed(seeded(5)).Public().(ed25519.PublicKey)
	added := c.changeValidator(t, ctx, fifth, power)
	removed := c.changeValidator(t, ctx, ed25519.PublicKey(vals.Validators[0].PubKey.Bytes()), 0)

	changes, err := c.lc.ValidatorChanges(ctx, removed+1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(changes, []int64{added, removed}) {
		t.Fatalf("validator changes at %v, want %v", changes, []int64{added, removed})
	}
	after := c.bundleFor(t, readings, 1)
	var heights []int64
	for _, raw := range after.Ledger.LightChain {
		lb, err := parseLightBlock(raw)
		if err != nil {
			t.Fatal(err)
		}
		heights = append(heights, lb.Height)
	}
	if want := []int64{added - 1, added, removed - 1, removed}; !slices.Equal(heights, want) {
		t.Fatalf("light chain at heights %v, want %v", heights, want)
	}

	for name, trust := range map[string][]byte{"trust file without height": trustOld, "trust file with height": trustAtH, "trust file after the changes": c.trustAt(t)} {
		t.Run(name, func(t *testing.T) {
			mustVerify(t, marshal(t, before), trust)
			r := mustVerify(t, marshal(t, after), trust)
			var buf bytes.Buffer
			r.Print(&buf)
			if n := strings.Count(buf.String(), "✓ light chain"); n != 5 || !strings.Contains(buf.String(), "hop 5 of 5") {
				t.Fatalf("want a parse line and 4 hop lines, then the signed header as hop 5:\n%s", buf.String())
			}
		})
	}

	// The chain skips the changes: the set that signs the target still holds 3/4 of the
	// trusted power, so CometBFT's skipping rule (1/3) lets it through.
	skip := clone(t, after)
	skip.Ledger.LightChain = skip.Ledger.LightChain[:1]
	mustVerify(t, marshal(t, skip), trustOld)
	// Out of order, or a block dropped from the front so that a hop has no trusted root of
	// its own set: still verifies only where the rules allow.
	swapped := clone(t, after)
	swapped.Ledger.LightChain[0], swapped.Ledger.LightChain[1] = swapped.Ledger.LightChain[1], swapped.Ledger.LightChain[0]
	if _, err := Verify(marshal(t, swapped), trustOld); !errors.Is(err, ErrVerify) || !errors.Is(err, ErrLightChain) {
		t.Fatalf("light blocks out of order: %v", err)
	}
	// A trust file of an unrelated set refuses it.
	other := ed25519.NewKeyFromSeed(seeded(6))
	if _, err := Verify(marshal(t, after), otherTrust(t, other)); !errors.Is(err, ErrVerify) {
		t.Fatalf("unrelated trust file: %v", err)
	}
	// VerifyHead follows the same chain (what audit --trust does).
	h, err := c.lc.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.lc.State(ctx, h-1)
	if err != nil {
		t.Fatal(err)
	}
	head, err := c.lc.LightBlock(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	lchain, err := c.lc.LightChain(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	as := st.AppState()
	if err := VerifyHead(trustOld, lchain, head, as); err != nil {
		t.Fatalf("VerifyHead over the light chain: %v", err)
	}
	if err := VerifyHead(otherTrust(t, other), lchain, head, as); !errors.Is(err, ErrLightChain) {
		t.Fatalf("VerifyHead from an unrelated set: %v", err)
	}
	as.LogSize++
	if err := VerifyHead(trustOld, lchain, head, as); err == nil {
		t.Fatal("VerifyHead accepted a state the header does not commit")
	}

	if *update {
		if after.V2() {
			t.Fatal("the ledger makes v2 bundles: lightchain.json is a v1 golden bundle and must keep its bytes")
		}
		if err := os.WriteFile(filepath.Join("testdata", "lightchain.json"), marshal(t, after), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "lightchain-trust.json"), trustAtH, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func otherTrust(t *testing.T, k ed25519.PrivateKey) []byte {
	t.Helper()
	vals, _ := testSet(t, []ed25519.PrivateKey{k})
	tr, err := TrustFileAt("proof-test", 1, vals)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func goldenLightChain(t testing.TB) (b, trust []byte) {
	b, err := os.ReadFile(filepath.Join("testdata", "lightchain.json"))
	if err != nil {
		t.Fatalf("%v (go test -run TestLightChainAcrossValidatorChanges -update writes it)", err)
	}
	trust, err = os.ReadFile(filepath.Join("testdata", "lightchain-trust.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b, trust
}

// The golden light-chain bundle verifies, forever: it pins the format, and that hops are
// checked against the headers' own times, not the clock.
func TestGoldenLightChain(t *testing.T) {
	b, trust := goldenLightChain(t)
	r := mustVerify(t, b, trust)
	var buf bytes.Buffer
	r.Print(&buf)
	if !strings.Contains(buf.String(), "hop 5 of 5") {
		t.Fatalf("report:\n%s", buf.String())
	}
}

var allBytes = flag.Bool("allbytes", false, "TestEveryByteMattersLightChain: change every byte, not one in 16 (about a minute)")

// Single-byte changes of the golden light-chain bundle are refused. Changing each of its
// 27,000 bytes two ways takes about a minute (more under -race), so by default it changes one
// byte of every 16, a different offset in each run of 16 so that every column of the file is
// hit; -allbytes changes them all.
func TestEveryByteMattersLightChain(t *testing.T) {
	b, trust := goldenLightChain(t)
	if !bytes.Contains(b, []byte(`"light_chain"`)) {
		t.Fatal("the golden light-chain bundle has no light_chain")
	}
	for i := range b {
		if !*allBytes && (i+i/16)%16 != 0 {
			continue
		}
		for _, d := range []byte{1, 0x20} {
			c := bytes.Clone(b)
			c[i] ^= d
			if _, err := Verify(c, trust); err == nil {
				t.Fatalf("byte %d changed (%q -> %q) still verifies", i, b[i], c[i])
			}
		}
	}
}

// testSet is a validator set of keys (power 10 each) and their signers in the set's order.
func testSet(t testing.TB, keys []ed25519.PrivateKey) (*types.ValidatorSet, []types.PrivValidator) {
	t.Helper()
	var vals []*types.Validator
	pvs := map[string]types.PrivValidator{}
	for _, k := range keys {
		pv := types.NewMockPVWithParams(cmted25519.PrivKey(k), false, false)
		pub, err := pv.GetPubKey()
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, types.NewValidator(pub, 10))
		pvs[string(pub.Address())] = pv
	}
	set := types.NewValidatorSet(vals)
	ordered := make([]types.PrivValidator, set.Size())
	for i, v := range set.Validators {
		ordered[i] = pvs[string(v.Address)]
	}
	return set, ordered
}

// testBlock is a light block at height signed by all of set.
func testBlock(t *testing.T, chainID string, height int64, at time.Time, set, next *types.ValidatorSet, pvs []types.PrivValidator) *types.LightBlock {
	t.Helper()
	return testBlockApp(t, chainID, height, at, tmhash.Sum([]byte("app")), set, next, pvs)
}

// testBlockApp is testBlock whose header carries appHash.
func testBlockApp(t *testing.T, chainID string, height int64, at time.Time, appHash []byte, set, next *types.ValidatorSet, pvs []types.PrivValidator) *types.LightBlock {
	t.Helper()
	h := &types.Header{
		Version: cmtversion.Consensus{Block: version.BlockProtocol}, ChainID: chainID, Height: height, Time: at,
		ValidatorsHash: set.Hash(), NextValidatorsHash: next.Hash(), DataHash: tmhash.Sum(nil),
		AppHash: appHash, ConsensusHash: tmhash.Sum([]byte("cons")), LastResultsHash: tmhash.Sum(nil),
		ProposerAddress: set.Validators[0].Address,
	}
	id := types.BlockID{Hash: h.Hash(), PartSetHeader: types.PartSetHeader{Total: 1, Hash: tmhash.Sum([]byte("parts"))}}
	vs := types.NewVoteSet(chainID, height, 0, cmtproto.PrecommitType, set)
	ext, err := types.MakeExtCommit(id, height, 0, vs, pvs, at, false)
	if err != nil {
		t.Fatal(err)
	}
	return &types.LightBlock{SignedHeader: &types.SignedHeader{Header: h, Commit: ext.ToCommit()}, ValidatorSet: set}
}

// A chain whose set was replaced entirely between two headers: the adjacent hop across the
// change verifies (next_validators_hash names the new set), and a chain that skips it, where
// none of the trusted power signed the later header, is refused with CometBFT's
// ErrNewValSetCantBeTrusted. (Real nodes would need four more running validators to replace
// the set; CometBFT's own types sign these headers.)
func TestLightChainSkipNeedsTrustedPower(t *testing.T) {
	const id = "skip-test"
	keys := make([]ed25519.PrivateKey, 8)
	for i := range keys {
		keys[i] = ed25519.NewKeyFromSeed(seeded(byte(20 + i)))
	}
	oldSet, oldPVs := testSet(t, keys[:4])
	newSet, newPVs := testSet(t, keys[4:])
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	last := testBlock(t, id, 10, t0, oldSet, newSet, oldPVs)                   // last of the old set
	first := testBlock(t, id, 11, t0.Add(time.Second), newSet, newSet, newPVs) // first of the new
	target := testBlock(t, id, 40, t0.Add(30*time.Second), newSet, newSet, newPVs)
	// Years later than the first: the trusting period is the headers' own span.
	late := testBlock(t, id, 50, t0.AddDate(20, 0, 0), newSet, newSet, newPVs)

	follow := func(trustHeight int64, blocks ...*types.LightBlock) error {
		lc := &lightChain{chainID: id, trusted: oldSet, trustHeight: trustHeight, blocks: blocks}
		for i := range blocks {
			if _, err := lc.hop(i); err != nil {
				return err
			}
		}
		return nil
	}
	if err := follow(0, last, first, target); err != nil {
		t.Fatalf("adjacent hop across the change: %v", err)
	}
	if err := follow(0, last, first, target, late); err != nil {
		t.Fatalf("a hop twenty years long: %v", err)
	}
	err := follow(0, last, target)
	var cant light.ErrNewValSetCantBeTrusted
	if !errors.Is(err, ErrLightChain) || !errors.As(err, &cant) {
		t.Fatalf("a skip that none of the trusted power signed: %v", err)
	}
	if err := follow(0, target); !errors.Is(err, ErrLightChain) {
		t.Fatalf("a header of the new set without the chain: %v", err)
	}
	// Trusting the new set from a later height: the old blocks are checked against each other
	// and the trusted set vouches for the first block at its height.
	lc := &lightChain{chainID: id, trusted: newSet, trustHeight: 11, blocks: []*types.LightBlock{last, first, target}}
	for i := range lc.blocks {
		if _, err := lc.hop(i); err != nil {
			t.Fatalf("hop %d from the new set: %v", i, err)
		}
	}
}
