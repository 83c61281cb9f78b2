package proof

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

const v2Chain = "proof-v2-test"

// v2Fixture is what a ledger under app hash v2 would serve for one reading, made from
// synthetic parts: a registry in a sparse Merkle tree on an in-memory database, a state root
// over it and a second sub-root, a log, and a header signed by four validators of our own
// keys. Everything is fixed (keys, times, ids), so Build gives the same bytes every run.
type v2Fixture struct {
	parts Parts
	trust []byte
	other Parts // the parts of another device's reading in the same state
}

func newV2Fixture(t *testing.T) v2Fixture {
	t.Helper()
	at := time.UnixMilli(1_764_000_000_000)
	admin := ed25519.NewKeyFromSeed(seeded(1))
	ed := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(2)))
	// Ed25519 for both: ES256 signatures are randomised, and the golden bytes must not be.
	od := reading.NewEd25519Key(ed25519.NewKeyFromSeed(seeded(8)))
	devices := []struct {
		id  string
		key reading.PrivateKey
	}{{"v2-device", ed}, {"v2-other", od}}

	// The log: the two registrations, then the anchor.
	var log [][]byte
	var changes []smt.Change
	records := map[string][]byte{}
	for _, d := range devices {
		e, err := entry.NewRegister(admin, d.id, d.key.Public(), at)
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, e)
		rec, err := entry.Record{Dev: d.id, Alg: d.key.Public().Alg, Key: d.key.Public().Key, Status: entry.StatusActive, Height: 1}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		records[d.id] = rec
		changes = append(changes, smt.Change{Key: smt.KeyOf(d.id), Value: smt.Hash(merkle.LeafHash(rec))})
	}
	// More devices, so that paths in the tree have siblings.
	for i := range 14 {
		changes = append(changes, smt.Change{Key: smt.KeyOf("filler-" + string(rune('a'+i))), Value: smt.Hash(merkle.LeafHash([]byte{byte(i)}))})
	}
	tree, err := smt.Open(smt.DBStore{DB: dbm.NewMemDB()}, smt.DefaultConfig([]byte("registry/")))
	if err != nil {
		t.Fatal(err)
	}
	regRoot, err := tree.Commit(t.Context(), 2, changes)
	if err != nil {
		t.Fatal(err)
	}
	// A state root over the registry and a second (made-up) sub-root, so that the registry's
	// state proof has a path.
	subs := []merkle.SubRoot{{Name: merkle.SubRootRegistry, Root: merkle.Hash(regRoot)}, {Name: "rules", Root: merkle.LeafHash([]byte("rules"))}}
	stateRoot, err := merkle.StateRoot(subs)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := merkle.ProveSubRoot(subs, merkle.SubRootRegistry)
	if err != nil {
		t.Fatal(err)
	}

	readings := [][]byte{sign(t, ed, "v2-device", 1), sign(t, od, "v2-other", 1), sign(t, ed, "v2-device", 2)}
	leaves := make([]merkle.Hash, len(readings))
	for i, r := range readings {
		leaves[i] = merkle.ReadingLeaf(r)
	}
	batchRoot, err := merkle.Root(leaves)
	if err != nil {
		t.Fatal(err)
	}
	var batchID, otherID, anchorID [16]byte
	batchID[0], otherID[0], anchorID[0], anchorID[15] = 0xb1, 0xb2, 0xa2, 0x02
	batches := []AnchorBatch{{ID: otherID, Size: 7, Root: merkle.LeafHash([]byte("other"))}, {ID: batchID, Size: uint64(len(readings)), Root: batchRoot}}
	anchorRoot, err := merkle.Root([]merkle.Hash{merkle.AnchorLeaf(otherID, 7, batches[0].Root), merkle.AnchorLeaf(batchID, uint64(len(readings)), batchRoot)})
	if err != nil {
		t.Fatal(err)
	}
	anchor, err := entry.NewSignedAnchor(ed25519.NewKeyFromSeed(seeded(3)), anchorID, anchorRoot, 2, 7+uint64(len(readings)), at)
	if err != nil {
		t.Fatal(err)
	}
	log = append(log, anchor)
	logLeaves := make([]merkle.Hash, len(log))
	for i, e := range log {
		logLeaves[i] = merkle.EntryLeaf(e)
	}
	logRoot, err := merkle.Root(logLeaves)
	if err != nil {
		t.Fatal(err)
	}
	logPath, err := merkle.InclusionPath(logLeaves, 2)
	if err != nil {
		t.Fatal(err)
	}

	keys := make([]ed25519.PrivateKey, 4)
	for i := range keys {
		keys[i] = ed25519.NewKeyFromSeed(seeded(byte(40 + i)))
	}
	set, pvs := testSet(t, keys)
	app := merkle.AppHashV2Of(uint64(len(log)), logRoot, stateRoot)
	lb := testBlockApp(t, v2Chain, 3, at.Add(2*time.Second), app[:], set, set, pvs)
	trust, err := TrustFileAt(v2Chain, 1, set)
	if err != nil {
		t.Fatal(err)
	}

	partsOf := func(idx int, dev string) Parts {
		msg, err := reading.Decode(readings[idx])
		if err != nil {
			t.Fatal(err)
		}
		proof, value, err := tree.Prove(2, smt.KeyOf(dev))
		if err != nil || value == nil {
			t.Fatalf("prove %s: %v (value %x)", dev, err, value)
		}
		return Parts{Raw: readings[idx], Device: msg.Reading.Device, Seq: msg.Reading.Seq, BatchID: batchID, BatchLeaves: leaves,
			LeafIndex: uint64(idx), AnchorID: anchorID, AnchorBatches: batches, BatchIndex: 1, ChainID: v2Chain,
			Entry: anchor, LogIndex: 2, LogSize: uint64(len(log)), LogPath: logPath, LogRoot: logRoot, RegistryRoot: merkle.Hash(regRoot),
			Version: merkle.AppHashV2, StateRoot: &stateRoot, StateProof: &sp,
			Record: records[dev], SMTProof: proof.Encode(), LightBlock: lb}
	}
	return v2Fixture{parts: partsOf(2, "v2-device"), other: partsOf(1, "v2-other"), trust: trust}
}

func goldenV2(t testing.TB) (b, trust []byte) {
	return readGolden(t, "bundle-v2.json", "trust-v2.json", "TestGoldenV2")
}

// The golden v2 bundle verifies, forever, and Build still makes exactly its bytes from the
// synthetic parts: it pins the v2 format and the builder.
func TestGoldenV2(t *testing.T) {
	f := newV2Fixture(t)
	bb, err := Build(f.parts)
	if err != nil {
		t.Fatal(err)
	}
	built := marshal(t, bb)
	if *update {
		if err := os.WriteFile(filepath.Join("testdata", "bundle-v2.json"), built, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", "trust-v2.json"), f.trust, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, trust := goldenV2(t)
	if !bytes.Equal(built, b) {
		t.Fatalf("Build no longer makes the golden v2 bundle (differs at byte %d)", firstDiff(built, b))
	}
	if !bytes.Equal(f.trust, trust) {
		t.Fatal("the v2 trust file is not the golden one")
	}
	r := mustVerify(t, b, trust)
	var buf bytes.Buffer
	r.Print(&buf)
	out := buf.String()
	if len(r.Steps) != 10 || strings.Count(out, "✓") != 10 {
		t.Fatalf("report:\n%s", out)
	}
	for _, want := range []string{"record in registry ", "(sparse Merkle tree, ", "commits log size, log root and state root ", "(app hash v2; registry root is sub-root 1 of 2)"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, member := range []string{`"registry_proof"`, `"app_hash_version": 2`, `"state_root"`, `"state_proof"`} {
		if !bytes.Contains(b, []byte(member)) {
			t.Errorf("the golden v2 bundle lacks %s", member)
		}
	}
	// The v1 golden bundle is unchanged by v2 and verifies as before.
	v1, v1Trust := golden(t)
	for _, member := range []string{"registry_proof", "app_hash_version", "state_root", "state_proof"} {
		if bytes.Contains(v1, []byte(member)) {
			t.Errorf("the v1 golden bundle has %s", member)
		}
	}
	mustVerify(t, v1, v1Trust)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Each v2 field changed on its own, re-encoded canonically, fails at its own step; another
// device's reading in the same state verifies.
func TestVerifyV2(t *testing.T) {
	f := newV2Fixture(t)
	b, err := Build(f.parts)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := Build(f.other)
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, marshal(t, ob), f.trust)
	otherProof := ob.Device.RegistryProof

	flip := func(h bundle.Hex) bundle.Hex { h = bytes.Clone(h); h[len(h)-1] ^= 1; return h }
	for name, tc := range map[string]struct {
		mutate func(*bundle.Bundle)
		step   string
	}{
		"registry proof": {func(b *bundle.Bundle) { b.Device.RegistryProof = flip(b.Device.RegistryProof) }, "device record"},
		"registry proof truncated": {func(b *bundle.Bundle) {
			b.Device.RegistryProof = b.Device.RegistryProof[:len(b.Device.RegistryProof)-1]
		}, "device record"},
		"other device's proof": {func(b *bundle.Bundle) { b.Device.RegistryProof = otherProof }, "device record"},
		"registry root":        {func(b *bundle.Bundle) { b.Ledger.RegistryRoot = flip(b.Ledger.RegistryRoot) }, "device record"},
		"record": {func(b *bundle.Bundle) {
			b.Device.Height++
			b.Device.Record = recordAt(t, b.Device.Record, b.Device.Height)
		}, "device record"},
		"state root":               {func(b *bundle.Bundle) { b.Ledger.StateRoot = flip(b.Ledger.StateRoot) }, "app hash"},
		"state root short":         {func(b *bundle.Bundle) { b.Ledger.StateRoot = b.Ledger.StateRoot[:31] }, "app hash"},
		"state proof name":         {func(b *bundle.Bundle) { b.Ledger.StateProof.Name = "rules" }, "app hash"},
		"state proof index":        {func(b *bundle.Bundle) { b.Ledger.StateProof.Index ^= 1 }, "app hash"},
		"state proof size":         {func(b *bundle.Bundle) { b.Ledger.StateProof.Size++ }, "app hash"},
		"state proof path":         {func(b *bundle.Bundle) { b.Ledger.StateProof.Path[0] = flip(b.Ledger.StateProof.Path[0]) }, "app hash"},
		"state proof path dropped": {func(b *bundle.Bundle) { b.Ledger.StateProof.Path = nil }, "app hash"},
		"log size":                 {func(b *bundle.Bundle) { b.Ledger.LogSize++ }, "ledger log"},
		"light block app hash": {func(b *bundle.Bundle) {
			b.Ledger.LightBlock = changeAfter(t, b.Ledger.LightBlock, `"app_hash":"`)
		}, "app hash"},
		"light block sig": {func(b *bundle.Bundle) { b.Ledger.LightBlock = flipSignature(t, b.Ledger.LightBlock) }, "signed header"},
	} {
		t.Run(name, func(t *testing.T) {
			cp := clone(t, b)
			tc.mutate(cp)
			r, err := Verify(marshal(t, cp), f.trust)
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("verified: %v", err)
			}
			last := r.Steps[len(r.Steps)-1]
			if last.OK || last.Name != tc.step {
				t.Fatalf("failed at %q (%s), want %q", last.Name, last.Detail, tc.step)
			}
		})
	}
	// The same reading as a v1 bundle (the v2 members dropped, a v1 registry proof in their
	// place) is refused: the header commits the v2 hash.
	v1 := clone(t, b)
	v1.Device.RegistryProof, v1.Ledger.AppHashVersion, v1.Ledger.StateRoot, v1.Ledger.StateProof = nil, 0, nil, nil
	v1.Device.RegistrySize = 1
	if r, err := Verify(marshal(t, v1), f.trust); !errors.Is(err, ErrVerify) || r.Steps[len(r.Steps)-1].Name != "device record" {
		t.Fatalf("v2 state as a v1 bundle: %v", err)
	}
}

// recordAt re-encodes a record with another height.
func recordAt(t *testing.T, raw []byte, height uint64) []byte {
	t.Helper()
	r, err := entry.DecodeRecord(raw)
	if err != nil {
		t.Fatal(err)
	}
	r.Height = height
	out, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Build refuses v2 parts that do not fit together.
func TestBuildV2Inconsistent(t *testing.T) {
	f := newV2Fixture(t)
	otherRoot := merkle.LeafHash([]byte("x"))
	for name, mutate := range map[string]func(*Parts){
		"as v1":               func(p *Parts) { p.Version = merkle.AppHashV1 },
		"unknown version":     func(p *Parts) { p.Version = 3 },
		"no state root":       func(p *Parts) { p.StateRoot = nil },
		"no state proof":      func(p *Parts) { p.StateProof = nil },
		"no smt proof":        func(p *Parts) { p.SMTProof = nil },
		"other smt proof":     func(p *Parts) { p.SMTProof = f.other.SMTProof },
		"other record":        func(p *Parts) { p.Record = f.other.Record },
		"other state root":    func(p *Parts) { p.StateRoot = &otherRoot },
		"other registry root": func(p *Parts) { p.RegistryRoot = otherRoot },
		"state proof of rules": func(p *Parts) {
			sp := *p.StateProof
			sp.Name = "rules"
			p.StateProof = &sp
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := f.parts
			mutate(&p)
			if _, err := Build(p); !errors.Is(err, ErrInconsistent) {
				t.Fatalf("Build: %v, want ErrInconsistent", err)
			}
		})
	}
}

// VerifyHead checks a v2 head through its state root (what audit --trust does on a v2 ledger).
func TestVerifyHeadV2(t *testing.T) {
	f := newV2Fixture(t)
	p := f.parts
	st := merkle.AppState{Version: merkle.AppHashV2, LogSize: p.LogSize, LogRoot: p.LogRoot, RegistryRoot: p.RegistryRoot, StateRoot: *p.StateRoot, StateProof: p.StateProof}
	if err := VerifyHead(f.trust, nil, p.LightBlock, st); err != nil {
		t.Fatalf("VerifyHead: %v", err)
	}
	for name, mutate := range map[string]func(*merkle.AppState){
		"as v1":          func(s *merkle.AppState) { s.Version = merkle.AppHashV1 },
		"no state proof": func(s *merkle.AppState) { s.StateProof = nil },
		"other registry": func(s *merkle.AppState) { s.RegistryRoot[0] ^= 1 },
		"other log size": func(s *merkle.AppState) { s.LogSize++ },
	} {
		t.Run(name, func(t *testing.T) {
			s := st
			mutate(&s)
			if err := VerifyHead(f.trust, nil, p.LightBlock, s); err == nil {
				t.Fatal("VerifyHead accepted a state the header does not commit")
			}
		})
	}
	if err := VerifyHead(f.trust, nil, p.LightBlock, merkle.AppState{Version: merkle.AppHashV2, RegistryRoot: p.RegistryRoot}); !errors.Is(err, merkle.ErrAppState) {
		t.Fatalf("v2 state without its proof: %v", err)
	}
}

// Every single-byte change of the golden v2 bundle is refused.
func TestEveryByteMattersV2(t *testing.T) {
	b, trust := goldenV2(t)
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
