package smt

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	dbm "github.com/cometbft/cometbft-db"
)

func newTree(t *testing.T) *Tree {
	t.Helper()
	// Small caches, to exercise eviction, and nodes both above and below the top levels.
	tr, err := Open(DBStore{DB: dbm.NewMemDB()}, Config{Prefix: []byte("smt/"), CacheNodes: 16, TopLevels: 4})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func key(i int) Hash { return KeyOf(fmt.Sprintf("device-%d", i)) }

func val(i int) Hash { return sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i))) }

// refRoot computes the root of set from the definition, independently of Tree.
func refRoot(set map[Hash]Hash) Hash {
	keys := make([]Hash, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	var rec func(ks []Hash, depth int) Hash
	rec = func(ks []Hash, depth int) Hash {
		switch len(ks) {
		case 0:
			return Empty
		case 1:
			return LeafHash(ks[0], set[ks[0]])
		}
		var l, r []Hash
		for _, k := range ks {
			if bit(k, depth) == 0 {
				l = append(l, k)
			} else {
				r = append(r, k)
			}
		}
		lh, rh := rec(l, depth+1), rec(r, depth+1)
		if (lh == Empty && len(r) == 1) || (rh == Empty && len(l) == 1) {
			if lh == Empty {
				return rh
			}
			return lh
		}
		return InteriorHash(lh, rh)
	}
	return rec(keys, 0)
}

// checkVersion checks the root against the reference and every key's proof at version.
func checkVersion(t *testing.T, tr *Tree, version uint64, set map[Hash]Hash, absent []Hash) {
	t.Helper()
	root, err := tr.Root(version)
	if err != nil {
		t.Fatalf("Root(%d): %v", version, err)
	}
	if want := refRoot(set); root != want {
		t.Fatalf("Root(%d) = %x, reference %x", version, root, want)
	}
	for k, v := range set {
		p, got, err := tr.Prove(version, k)
		if err != nil {
			t.Fatalf("Prove(%d, %x): %v", version, k, err)
		}
		if Hash(got) != v {
			t.Fatalf("Prove(%d, %x) value %x, want %x", version, k, got, v)
		}
		if err := Verify(root, k, v[:], p.Encode()); err != nil {
			t.Fatalf("membership of %x at %d: %v", k, version, err)
		}
		if err := Verify(root, k, nil, p.Encode()); !errors.Is(err, ErrBadProof) {
			t.Fatalf("membership proof of %x verified as absence: %v", k, err)
		}
	}
	for _, k := range absent {
		p, got, err := tr.Prove(version, k)
		if err != nil {
			t.Fatalf("Prove(%d, %x): %v", version, k, err)
		}
		if got != nil {
			t.Fatalf("Prove(%d, %x) of absent key returned value %x", version, k, got)
		}
		if err := Verify(root, k, nil, p.Encode()); err != nil {
			t.Fatalf("non-membership of %x at %d: %v", k, version, err)
		}
		v := val(0)
		if err := Verify(root, k, v[:], p.Encode()); !errors.Is(err, ErrBadProof) {
			t.Fatalf("non-membership proof of %x verified as membership: %v", k, err)
		}
	}
}

func TestCommitTable(t *testing.T) {
	set := func(c ...Change) []Change { return c }
	put := func(i, v int) Change { return Change{Key: key(i), Value: val(v)} }
	del := func(i int) Change { return Change{Key: key(i), Delete: true} }
	tests := []struct {
		name  string
		steps [][]Change
	}{
		{"one insert", [][]Change{set(put(1, 1))}},
		{"two inserts", [][]Change{set(put(1, 1), put(2, 2))}},
		{"inserts one per version", [][]Change{set(put(1, 1)), set(put(2, 2)), set(put(3, 3)), set(put(4, 4))}},
		{"update", [][]Change{set(put(1, 1), put(2, 2)), set(put(1, 10))}},
		{"update the only key", [][]Change{set(put(1, 1)), set(put(1, 2))}},
		{"delete to empty", [][]Change{set(put(1, 1)), set(del(1))}},
		{"delete one of two lifts the other", [][]Change{set(put(1, 1), put(2, 2)), set(del(2))}},
		{"delete absent key", [][]Change{set(put(1, 1)), set(del(7))}},
		{"delete from empty", [][]Change{set(del(7))}},
		{"insert and delete same block", [][]Change{set(put(1, 1), del(1), put(2, 2))}},
		{"last change for a key wins", [][]Change{set(put(1, 1), put(1, 5), del(2), put(2, 3))}},
		{"empty change set", [][]Change{set(put(1, 1)), set()}},
		{"many then delete half", [][]Change{
			func() (cs []Change) {
				for i := range 200 {
					cs = append(cs, put(i, i))
				}
				return
			}(),
			func() (cs []Change) {
				for i := 0; i < 200; i += 2 {
					cs = append(cs, del(i))
				}
				for i := 1; i < 200; i += 4 {
					cs = append(cs, put(i, i+1000))
				}
				return
			}(),
		}},
	}
	uncached := func(t *testing.T) *Tree {
		tr, err := Open(DBStore{DB: dbm.NewMemDB()}, Config{Prefix: []byte("smt/")})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	for _, tc := range tests {
		for _, open := range []struct {
			name string
			tree func(*testing.T) *Tree
		}{{"cached", newTree}, {"uncached", uncached}} {
			t.Run(tc.name+"/"+open.name, func(t *testing.T) { runSteps(t, open.tree(t), tc.steps) })
		}
	}
}

// runSteps commits steps as versions 1, 2, ..., checks each root against the reference, and
// then every version's proofs.
// applyModel applies changes to the reference model, in order, and returns a copy of it.
func applyModel(model map[Hash]Hash, changes []Change) map[Hash]Hash {
	for _, c := range changes {
		if c.Delete {
			delete(model, c.Key)
		} else {
			model[c.Key] = c.Value
		}
	}
	return maps.Clone(model)
}

func runSteps(t *testing.T, tr *Tree, steps [][]Change) {
	t.Helper()
	model := map[Hash]Hash{}
	var sets []map[Hash]Hash
	for i, step := range steps {
		snap := applyModel(model, step)
		sets = append(sets, snap)
		root, err := tr.Commit(t.Context(), uint64(i+1), step)
		if err != nil {
			t.Fatalf("Commit(%d): %v", i+1, err)
		}
		if want := refRoot(snap); root != want {
			t.Fatalf("Commit(%d) root %x, reference %x", i+1, root, want)
		}
	}
	var absent []Hash
	for i := 1000; i < 1010; i++ {
		absent = append(absent, key(i))
	}
	// Every version, old and new, still answers.
	for i, snap := range sets {
		var gone []Hash
		for k := range sets[len(sets)-1] {
			if _, ok := snap[k]; !ok {
				gone = append(gone, k)
			}
		}
		checkVersion(t, tr, uint64(i+1), snap, append(absent, gone...))
	}
}

func TestDeterminism(t *testing.T) {
	const n = 500
	var cs []Change
	for i := range n {
		cs = append(cs, Change{Key: key(i), Value: val(i)})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var want Hash
	for trial := range 5 {
		tr := newTree(t)
		perm := rng.Perm(n)
		// Insert in a random order, in blocks of random size, with a detour through a
		// key inserted and deleted again.
		version := uint64(0)
		detour := Change{Key: key(9999), Value: val(1)}
		for i := 0; i < n; {
			size := 1 + rng.IntN(60)
			var block []Change
			for j := i; j < i+size && j < n; j++ {
				block = append(block, cs[perm[j]])
			}
			if i == 0 {
				block = append(block, detour)
			}
			i += size
			version++
			if _, err := tr.Commit(t.Context(), version, block); err != nil {
				t.Fatal(err)
			}
		}
		version++
		root, err := tr.Commit(t.Context(), version, []Change{{Key: detour.Key, Delete: true}})
		if err != nil {
			t.Fatal(err)
		}
		if trial == 0 {
			want = root
			continue
		}
		if root != want {
			t.Fatalf("trial %d: root %x, first trial %x", trial, root, want)
		}
	}
}

func TestProofNotForOtherKeyOrValue(t *testing.T) {
	tr := newTree(t)
	var cs []Change
	for i := range 50 {
		cs = append(cs, Change{Key: key(i), Value: val(i)})
	}
	if _, err := tr.Commit(t.Context(), 1, cs); err != nil {
		t.Fatal(err)
	}
	root, err := tr.Root(1)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := tr.Prove(1, key(3))
	if err != nil {
		t.Fatal(err)
	}
	enc := p.Encode()
	v3, v4 := val(3), val(4)
	if err := Verify(root, key(3), v3[:], enc); err != nil {
		t.Fatalf("own proof: %v", err)
	}
	for name, check := range map[string]error{
		"other key":        Verify(root, key(4), v4[:], enc),
		"other key, value": Verify(root, key(4), v3[:], enc),
		"other value":      Verify(root, key(3), v4[:], enc),
		"other root":       Verify(InteriorHash(root, root), key(3), v3[:], enc),
		"absence of key":   Verify(root, key(3), nil, enc),
		"short value":      Verify(root, key(3), v3[:31], enc),
	} {
		if !errors.Is(check, ErrBadProof) {
			t.Errorf("%s: got %v, want ErrBadProof", name, check)
		}
	}
	var mismatch *RootMismatchError
	if err := Verify(root, key(3), v4[:], enc); !errors.As(err, &mismatch) || mismatch.Want != root {
		t.Errorf("wrong value: got %v, want RootMismatchError with the root", err)
	}

	// A non-membership proof for an absent key does not serve for another absent key.
	pa, _, err := tr.Prove(1, key(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(root, key(100), nil, pa.Encode()); err != nil {
		t.Fatalf("absence of key(100): %v", err)
	}
	for i := 101; i < 120; i++ {
		pi, _, err := tr.Prove(1, key(i))
		if err != nil {
			t.Fatal(err)
		}
		if pi.Terminal == pa.Terminal && pi.OtherKey == pa.OtherKey && len(pi.Siblings) == len(pa.Siblings) {
			continue // same path: the proof is legitimately the same
		}
		if err := Verify(root, key(i), nil, pa.Encode()); !errors.Is(err, ErrBadProof) {
			t.Errorf("absence proof of key(100) verified absence of key(%d): %v", i, err)
		}
	}
	// An absence proof ending at another leaf must not be turned into one for that leaf.
	for i := 100; i < 200; i++ {
		pi, _, err := tr.Prove(1, key(i))
		if err != nil {
			t.Fatal(err)
		}
		if pi.Terminal != TerminalOther {
			continue
		}
		if err := Verify(root, pi.OtherKey, nil, pi.Encode()); !errors.Is(err, ErrBadProof) {
			t.Errorf("absence proof named its own other leaf absent: %v", err)
		}
		return
	}
	t.Log("no absence proof ending at another leaf among keys 100..199")
}

func TestCommitErrors(t *testing.T) {
	tr := newTree(t)
	if _, err := tr.Commit(t.Context(), 0, nil); !errors.Is(err, ErrVersionOrder) {
		t.Errorf("Commit(0): %v, want ErrVersionOrder", err)
	}
	if _, err := tr.Commit(t.Context(), 3, []Change{{Key: key(1), Value: val(1)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Commit(t.Context(), 3, nil); !errors.Is(err, ErrVersionOrder) {
		t.Errorf("Commit(3) twice: %v, want ErrVersionOrder", err)
	}
	if _, err := tr.Root(2); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("Root(2) skipped: %v, want ErrUnknownVersion", err)
	}
	if _, _, err := tr.Prove(4, key(1)); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("Prove(4) future: %v, want ErrUnknownVersion", err)
	}
	if r, err := tr.Root(0); err != nil || r != Empty {
		t.Errorf("Root(0) = %x, %v; want Empty", r, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := tr.Commit(ctx, 4, []Change{{Key: key(2), Value: val(2)}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with cancelled context: %v, want context.Canceled", err)
	}
	if got := tr.Latest(); got != 3 {
		t.Errorf("Latest after failed commit = %d, want 3", got)
	}
}

func TestCorruptStore(t *testing.T) {
	db := dbm.NewMemDB()
	tr, err := Open(DBStore{DB: db}, Config{}) // no cache: the deleted node must be missed
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Commit(t.Context(), 1, []Change{{Key: key(1), Value: val(1)}, {Key: key(2), Value: val(2)}}); err != nil {
		t.Fatal(err)
	}
	// The root is the interior node at version 1, depth 0.
	rootKey := tr.nodeKey(1, 0, Empty)
	stored, err := db.Get(rootKey)
	if err != nil || len(stored) != interiorSize {
		t.Fatalf("root node record: %x, %v", stored, err)
	}
	tampered := slices.Clone(stored)
	tampered[1] ^= 1
	if err := db.Set(rootKey, tampered); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.Prove(1, key(1)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Prove with root node altered: %v, want ErrCorrupt", err)
	}
	if err := db.Delete(rootKey); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.Prove(1, key(1)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Prove with root node missing: %v, want ErrCorrupt", err)
	}
	if _, err := tr.Commit(t.Context(), 2, []Change{{Key: key(3), Value: val(3)}}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Commit with root node missing: %v, want ErrCorrupt", err)
	}
	if err := db.Set(tr.latestKey(), []byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(DBStore{DB: db}, Config{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open with bad latest record: %v, want ErrCorrupt", err)
	}
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() (*Tree, dbm.DB) {
		db, err := dbm.NewGoLevelDB("smt", dir)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := Open(DBStore{DB: db, Sync: true}, DefaultConfig([]byte("registry/")))
		if err != nil {
			t.Fatal(err)
		}
		return tr, db
	}
	tr, db := open()
	model := map[Hash]Hash{}
	var sets []map[Hash]Hash
	for v := 1; v <= 5; v++ {
		var cs []Change
		for i := range 40 {
			k := (v*37 + i*11) % 120
			c := Change{Key: key(k), Value: val(v*1000 + i), Delete: i%7 == 0}
			cs = append(cs, c)
		}
		sets = append(sets, applyModel(model, normalise(cs)))
		if _, err := tr.Commit(t.Context(), uint64(v), cs); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	tr, db = open()
	defer db.Close()
	if got := tr.Latest(); got != 5 {
		t.Fatalf("Latest after reopen = %d, want 5", got)
	}
	absent := []Hash{key(500), key(501), key(502)}
	for i, snap := range sets {
		checkVersion(t, tr, uint64(i+1), snap, absent)
	}
	if _, err := tr.Commit(t.Context(), 6, []Change{{Key: key(500), Value: val(1)}}); err != nil {
		t.Fatal(err)
	}
	sets[4][key(500)] = val(1)
	checkVersion(t, tr, 6, sets[4], absent[1:])
}

func TestDecodeProofRejects(t *testing.T) {
	good := Proof{Terminal: TerminalOther, OtherKey: key(1), OtherValue: val(1),
		Siblings: []Hash{val(2), Empty, val(3)}}
	enc := good.Encode()
	back, err := DecodeProof(enc)
	if err != nil {
		t.Fatal(err)
	}
	if string(back.Encode()) != string(enc) {
		t.Fatal("encode/decode round trip differs")
	}
	bad := map[string][]byte{
		"empty":            {},
		"unknown terminal": {9, 0, 0},
		"truncated other":  {2, 1, 2},
		"no depth":         {0},
		"too deep":         {0, 0x01, 0x01},
		"bitmap missing":   {0, 0, 3},
		"stray bitmap bit": {0, 0, 3, 0x10},
		"sibling missing":  {0, 0, 1, 0x80},
		"zero sibling":     append([]byte{0, 0, 1, 0x80}, make([]byte, 32)...),
		"trailing":         append(enc[:len(enc):len(enc)], 0),
	}
	for name, b := range bad {
		if _, err := DecodeProof(b); !errors.Is(err, ErrMalformedProof) {
			t.Errorf("%s: %v, want ErrMalformedProof", name, err)
		}
	}
}

func TestOpenConfig(t *testing.T) {
	for _, cfg := range []Config{{CacheNodes: -1}, {TopLevels: -1}, {TopLevels: MaxTopLevels + 1}} {
		if _, err := Open(DBStore{DB: dbm.NewMemDB()}, cfg); err == nil {
			t.Errorf("Open with %+v succeeded", cfg)
		}
	}
}

// TestRandomHistory commits random inserts, updates and deletes over many versions, with
// caches small enough to be both hit and missed, and checks every root against the
// reference and every version's proofs at the end, then again after reopening the store.
func TestRandomHistory(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	db := dbm.NewMemDB()
	cfg := Config{Prefix: []byte("smt/"), CacheNodes: 32, TopLevels: 5}
	tr, err := Open(DBStore{DB: db}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	model := map[Hash]Hash{}
	var sets []map[Hash]Hash
	for v := 1; v <= 40; v++ {
		var cs []Change
		for range 1 + rng.IntN(40) {
			i := rng.IntN(300)
			cs = append(cs, Change{Key: key(i), Value: val(rng.IntN(1000)), Delete: rng.IntN(3) == 0})
		}
		for _, c := range normalise(cs) {
			if c.Delete {
				delete(model, c.Key)
			} else {
				model[c.Key] = c.Value
			}
		}
		sets = append(sets, maps.Clone(model))
		root, err := tr.Commit(t.Context(), uint64(v), cs)
		if err != nil {
			t.Fatalf("Commit(%d): %v", v, err)
		}
		if want := refRoot(model); root != want {
			t.Fatalf("Commit(%d) root %x, reference %x", v, root, want)
		}
	}
	for _, tree := range []*Tree{tr, func() *Tree {
		reopened, err := Open(DBStore{DB: db}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return reopened
	}()} {
		for i, snap := range sets {
			var absent []Hash
			for k := range 300 {
				if _, ok := snap[key(k)]; !ok {
					absent = append(absent, key(k))
				}
			}
			checkVersion(t, tree, uint64(i+1), snap, absent)
		}
	}
}
