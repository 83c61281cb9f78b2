package proof

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

var update = flag.Bool("update", false, "rewrite testdata/bundle.json and trust.json from a fresh ledger")

func seeded(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// chain is a real in-process ledger with an admin, for building bundles.
type chain struct {
	lc    *ledger.Client
	admin ed25519.PrivateKey
}

func newChain(t *testing.T) *chain {
	t.Helper()
	admin := ed25519.NewKeyFromSeed(seeded(1))
	n, err := node.Start(context.Background(), node.Config{Home: t.TempDir(), ChainID: "proof-test", TimeoutCommit: 50 * time.Millisecond,
		Admins: []ed25519.PublicKey{admin.Public().(ed25519.PublicKey)}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop() })
	return &chain{lc: n.Client(), admin: admin}
}

func (c *chain) submit(t *testing.T, e []byte) int64 {
	t.Helper()
	rc, err := c.lc.Submit(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	return rc.Height
}

func (c *chain) register(t *testing.T, dev string, k reading.PrivateKey) {
	t.Helper()
	e, err := entry.NewRegister(c.admin, dev, k.Public(), time.UnixMilli(1_764_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	c.submit(t, e)
}

// bundleFor stores nothing: it plays ingest and anchoring for readings (one batch of them,
// anchored as batch 1 of 2 of one anchor) and returns the bundle of reading idx.
func (c *chain) bundleFor(t *testing.T, readings [][]byte, idx int) *bundle.Bundle {
	t.Helper()
	ctx := context.Background()
	leaves := make([]merkle.Hash, len(readings))
	for i, r := range readings {
		leaves[i] = merkle.ReadingLeaf(r)
	}
	root, err := merkle.Root(leaves)
	if err != nil {
		t.Fatal(err)
	}
	var batchID, otherID, anchorID [16]byte
	batchID[0], otherID[0], anchorID[0] = 0xb1, 0xb2, 0xa1
	_, _ = rand.Read(anchorID[1:])
	batches := []AnchorBatch{{ID: otherID, Size: 7, Root: merkle.LeafHash([]byte("other"))}, {ID: batchID, Size: uint64(len(readings)), Root: root}}
	aleaves := []merkle.Hash{merkle.AnchorLeaf(otherID, 7, batches[0].Root), merkle.AnchorLeaf(batchID, uint64(len(readings)), root)}
	aroot, _ := merkle.Root(aleaves)
	e, err := entry.NewAnchor(anchorID, aroot, 2, 7+uint64(len(readings)), time.UnixMilli(1_764_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.lc.Submit(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	lc := c.lc
	ep, err := lc.EntryProof(ctx, rc.LogIndex, rc.Height)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := reading.Decode(readings[idx])
	if err != nil {
		t.Fatal(err)
	}
	dp, err := lc.Device(ctx, msg.Reading.Device, rc.Height)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := lc.LightBlock(ctx, rc.Height+1)
	if err != nil {
		t.Fatal(err)
	}
	lchain, err := lc.LightChain(ctx, rc.Height+1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(Parts{Raw: readings[idx], Device: msg.Reading.Device, Seq: msg.Reading.Seq, BatchID: batchID, BatchLeaves: leaves,
		LeafIndex: uint64(idx), AnchorID: anchorID, AnchorBatches: batches, BatchIndex: 1, ChainID: "proof-test",
		Entry: ep.Entry, LogIndex: ep.LogIndex, LogSize: ep.LogSize, LogPath: ep.Path, LogRoot: ep.LogRoot, RegistryRoot: ep.RegistryRoot,
		Version: ep.Version, StateRoot: ep.StateRoot, StateProof: ep.StateProof,
		Record: dp.RecordBytes, RegistryIndex: dp.Index, RegistrySize: dp.Size, RegistryPath: dp.Path, SMTProof: dp.SMTProof, LightBlock: lb, LightChain: lchain})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c *chain) trust(t *testing.T) []byte {
	t.Helper()
	chainID, vals, err := node.Trust(context.Background(), c.lc)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := TrustFile(chainID, vals)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func sign(t *testing.T, k reading.PrivateKey, dev string, seq uint64) []byte {
	t.Helper()
	raw, err := reading.Sign(reading.Reading{Device: dev, Seq: seq, TS: 1_764_000_000_000 + seq, Metrics: []reading.Metric{{Name: "temp", Value: float64(seq)}}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func marshal(t *testing.T, b *bundle.Bundle) []byte {
	t.Helper()
	out, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustVerify(t *testing.T, b, trust []byte) Report {
	t.Helper()
	r, err := Verify(b, trust)
	if err != nil {
		var buf bytes.Buffer
		r.Print(&buf)
		t.Fatalf("does not verify: %v\n%s", err, buf.String())
	}
	return r
}

func es256Key(t *testing.T, seed byte) reading.PrivateKey {
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), seeded(seed))
	if err != nil {
		t.Fatal(err)
	}
	return reading.NewES256Key(priv)
}

func TestBuildAndVerify(t *testing.T) {
	c := newChain(t)
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
	es := es256Key(t, 7)
	c.register(t, "dev-ed", ed)
	c.register(t, "dev-es", es)
	trust := c.trust(t)
	readings := [][]byte{sign(t, ed, "dev-ed", 1), sign(t, es, "dev-es", 1), sign(t, ed, "dev-ed", 2)}
	for idx := range readings {
		b := c.bundleFor(t, readings, idx)
		r := mustVerify(t, marshal(t, b), trust)
		if len(r.Steps) != 10 {
			t.Fatalf("%d steps", len(r.Steps))
		}
		var buf bytes.Buffer
		r.Print(&buf)
		if strings.Count(buf.String(), "✓") != 10 {
			t.Fatalf("report:\n%s", buf.String())
		}
	}

	// Each field changed on its own, re-encoded canonically, fails at its own step.
	b := c.bundleFor(t, readings, 1)
	flip := func(h bundle.Hex) bundle.Hex { h = bytes.Clone(h); h[len(h)/2] ^= 1; return h }
	type mutation struct {
		mutate func(*bundle.Bundle)
		step   string
	}
	// The registry proof of the ledger's app hash version (a new chain has v2).
	registry := map[string]mutation{
		"registry index": {func(b *bundle.Bundle) { b.Device.RegistryIndex ^= 1 }, "device record"},
		"registry size":  {func(b *bundle.Bundle) { b.Device.RegistrySize++ }, "device record"},
		"registry path":  {func(b *bundle.Bundle) { b.Device.RegistryPath[0] = flip(b.Device.RegistryPath[0]) }, "device record"},
	}
	if b.V2() {
		registry = map[string]mutation{
			"registry proof": {func(b *bundle.Bundle) { b.Device.RegistryProof = flip(b.Device.RegistryProof) }, "device record"},
			"state root":     {func(b *bundle.Bundle) { b.Ledger.StateRoot = flip(b.Ledger.StateRoot) }, "app hash"},
			"state proof":    {func(b *bundle.Bundle) { b.Ledger.StateProof.Size++ }, "app hash"},
		}
	}
	mutations := map[string]mutation{
		"raw":            {func(b *bundle.Bundle) { b.Reading.Raw = flip(b.Reading.Raw) }, "reading signature"},
		"seq":            {func(b *bundle.Bundle) { b.Reading.Seq++ }, "reading signature"},
		"public key":     {func(b *bundle.Bundle) { b.Device.PublicKey = readings2Key(t) }, "reading signature"},
		"device status":  {func(b *bundle.Bundle) { b.Device.Status = "revoked" }, "device record"},
		"device height":  {func(b *bundle.Bundle) { b.Device.Height++ }, "device record"},
		"registry root":  {func(b *bundle.Bundle) { b.Ledger.RegistryRoot = flip(b.Ledger.RegistryRoot) }, "device record"},
		"batch path":     {func(b *bundle.Bundle) { b.Batch.Path[0] = flip(b.Batch.Path[0]) }, "batch"},
		"batch root":     {func(b *bundle.Bundle) { b.Batch.Root = flip(b.Batch.Root) }, "batch"},
		"leaf index":     {func(b *bundle.Bundle) { b.Batch.LeafIndex = 0 }, "batch"},
		"batch size":     {func(b *bundle.Bundle) { b.Batch.Size++ }, "anchor"},
		"batch id":       {func(b *bundle.Bundle) { b.Batch.ID = flip(b.Batch.ID) }, "anchor"},
		"anchor path":    {func(b *bundle.Bundle) { b.Anchor.Path[0] = flip(b.Anchor.Path[0]) }, "anchor"},
		"anchor root":    {func(b *bundle.Bundle) { b.Anchor.Root = flip(b.Anchor.Root) }, "anchor"},
		"batch index":    {func(b *bundle.Bundle) { b.Anchor.BatchIndex = 0 }, "anchor"},
		"anchor batches": {func(b *bundle.Bundle) { b.Anchor.Batches = 3 }, "anchor"},
		"anchor id":      {func(b *bundle.Bundle) { b.Anchor.ID = flip(b.Anchor.ID) }, "anchor entry"},
		"entry":          {func(b *bundle.Bundle) { b.Ledger.Entry = flip(b.Ledger.Entry) }, "anchor entry"},
		"log path":       {func(b *bundle.Bundle) { b.Ledger.LogPath[0] = flip(b.Ledger.LogPath[0]) }, "ledger log"},
		"log root":       {func(b *bundle.Bundle) { b.Ledger.LogRoot = flip(b.Ledger.LogRoot) }, "ledger log"},
		"log index":      {func(b *bundle.Bundle) { b.Ledger.LogIndex ^= 1 }, "ledger log"},
		"log size":       {func(b *bundle.Bundle) { b.Ledger.LogSize++ }, "ledger log"},
		"chain id":       {func(b *bundle.Bundle) { b.Ledger.ChainID = "other" }, "signed header"},
		"height":         {func(b *bundle.Bundle) { b.Ledger.Height++ }, "signed header"},
		"light block hash": {func(b *bundle.Bundle) {
			b.Ledger.LightBlock = changeAfter(t, b.Ledger.LightBlock, `"app_hash":"`)
		}, "app hash"},
		"light block sig": {func(b *bundle.Bundle) { b.Ledger.LightBlock = flipSignature(t, b.Ledger.LightBlock) }, "signed header"},
	}
	maps.Copy(mutations, registry)
	for name, tc := range mutations {
		t.Run(name, func(t *testing.T) {
			cp := clone(t, b)
			tc.mutate(cp)
			r, err := Verify(marshal(t, cp), trust)
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("verified: %v", err)
			}
			last := r.Steps[len(r.Steps)-1]
			if last.OK || last.Name != tc.step {
				t.Fatalf("failed at %q (%s), want %q", last.Name, last.Detail, tc.step)
			}
		})
	}

	// A trust file for another validator set, or another chain, refuses a genuine bundle.
	other := types.NewValidatorSet([]*types.Validator{types.NewValidator(cmted25519.GenPrivKey().PubKey(), 10)})
	otherTrust, err := TrustFile("proof-test", other)
	if err != nil {
		t.Fatal(err)
	}
	good := marshal(t, b)
	if _, err := Verify(good, otherTrust); !errors.Is(err, ErrVerify) {
		t.Fatalf("other validators: %v", err)
	}
	wrongChain := bytes.Replace(trust, []byte(`"proof-test"`), []byte(`"proof-tess"`), 1)
	if _, err := Verify(good, wrongChain); !errors.Is(err, ErrVerify) {
		t.Fatalf("other chain: %v", err)
	}

	// A reading anchored after its device was revoked does not verify.
	rev, err := entry.NewRevoke(c.admin, "dev-es", time.UnixMilli(1_764_000_001_000))
	if err != nil {
		t.Fatal(err)
	}
	c.submit(t, rev)
	late := c.bundleFor(t, readings, 1)
	r, err := Verify(marshal(t, late), trust)
	if !errors.Is(err, ErrVerify) || r.Steps[len(r.Steps)-1].Name != "device record" {
		t.Fatalf("revoked device: %v", err)
	}
	// Build refuses parts that do not fit together.
	if _, err := Build(Parts{Raw: []byte("x"), BatchLeaves: []merkle.Hash{{1}}}); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("inconsistent parts: %v", err)
	}
}

func readings2Key(t *testing.T) bundle.Hex {
	k := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(9)))
	return bundle.Hex(k.Public().Key)
}

func clone(t *testing.T, b *bundle.Bundle) *bundle.Bundle {
	c, err := bundle.Parse(marshal(t, b))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func compacted(t *testing.T, raw []byte) []byte {
	var buf bytes.Buffer
	if err := compactJSON(&buf, raw); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// changeAfter changes the first character after marker (a hex digit) to another hex digit.
func changeAfter(t *testing.T, raw []byte, marker string) []byte {
	raw = compacted(t, raw)
	i := bytes.Index(raw, []byte(marker))
	if i < 0 {
		t.Fatalf("light block has no %s", marker)
	}
	out := bytes.Clone(raw)
	j := i + len(marker)
	if out[j] == '0' {
		out[j] = '1'
	} else {
		out[j] = '0'
	}
	return out
}

func flipSignature(t *testing.T, raw []byte) []byte {
	raw = compacted(t, raw)
	key := []byte(`"signature":"`)
	i := bytes.Index(raw, key)
	if i < 0 {
		t.Fatal("light block has no signature")
	}
	out := bytes.Clone(raw)
	j := i + len(key) + 5
	if out[j] == 'A' {
		out[j] = 'B'
	} else {
		out[j] = 'A'
	}
	return out
}

func golden(t testing.TB) (b, trust []byte) {
	return readGolden(t, "bundle.json", "trust.json", "TestGolden")
}

// readGolden reads a golden bundle and its trust file from testdata; writer names the test
// whose -update writes them.
func readGolden(t testing.TB, bundleFile, trustFile, writer string) (b, trust []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", bundleFile))
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, writer)
	}
	trust, err = os.ReadFile(filepath.Join("testdata", trustFile))
	if err != nil {
		t.Fatal(err)
	}
	return b, trust
}

// The golden bundle (a real CometBFT light block) verifies, forever: it pins the format.
func TestGolden(t *testing.T) {
	if *update {
		c := newChain(t)
		ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
		c.register(t, "golden-device", ed)
		readings := [][]byte{sign(t, ed, "golden-device", 1), sign(t, ed, "golden-device", 2), sign(t, ed, "golden-device", 3)}
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		b := c.bundleFor(t, readings, 2)
		if b.V2() {
			t.Fatal("the ledger makes v2 bundles: bundle.json is the v1 golden bundle and must keep its bytes (TestGoldenV2 writes bundle-v2.json)")
		}
		if err := os.WriteFile(filepath.Join("testdata", "bundle.json"), marshal(t, b), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "trust.json"), c.trust(t), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, trust := golden(t)
	mustVerify(t, b, trust)
}

// Every single-byte change of the golden bundle is refused.
func TestEveryByteMatters(t *testing.T) {
	b, trust := golden(t)
	for i := range b {
		for _, d := range []byte{1, 0x20} {
			c := bytes.Clone(b)
			c[i] ^= d
			if _, err := Verify(c, trust); err == nil {
				t.Fatalf("byte %d changed (%q -> %q) still verifies", i, b[i], c[i])
			}
		}
	}
}

// FuzzVerify: nothing but the golden bundles verifies, v1 (bundle.json) against its trust
// file and v2 (bundle-v2.json) against its own.
func FuzzVerify(f *testing.F) {
	b, trust := golden(f)
	b2, trust2 := goldenV2(f)
	f.Add(b)
	f.Add(bytes.Replace(b, []byte(`"seq": 3`), []byte(`"seq": 4`), 1))
	f.Add([]byte(`{"format":"anchorline.proof/v1"}`))
	f.Add(b2)
	f.Add(bytes.Replace(b2, []byte(`"app_hash_version": 2`), []byte(`"app_hash_version": 1`), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := Verify(data, trust); err == nil && !bytes.Equal(data, b) {
			t.Fatalf("a bundle other than the golden one verified:\n%s", data)
		}
		if _, err := Verify(data, trust2); err == nil && !bytes.Equal(data, b2) {
			t.Fatalf("a bundle other than the golden v2 one verified:\n%s", data)
		}
	})
}

func ExampleReport_Print() {
	Report{Steps: []Step{{Name: "bundle", OK: true, Detail: "canonical"}, {Name: "batch", Detail: "root mismatch"}}}.Print(os.Stdout)
	fmt.Println("done")
	// Output:
	// ✓ bundle             canonical
	// ✗ batch              root mismatch
	// done
}
