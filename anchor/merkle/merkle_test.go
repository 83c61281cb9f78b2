package merkle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// naiveRoot is RFC 6962 section 2.1 written out: split at the largest power of two below n.
func naiveRoot(leaves []Hash) Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return NodeHash(naiveRoot(leaves[:k]), naiveRoot(leaves[k:]))
}

func leavesN(n int) []Hash {
	out := make([]Hash, n)
	for i := range out {
		out[i] = LeafHash([]byte(fmt.Sprintf("leaf %d", i)))
	}
	return out
}

func TestRootTreeAndProofs(t *testing.T) {
	all := leavesN(70)
	var tree Tree
	for n := 1; n <= len(all); n++ {
		tree.Append(all[n-1])
		want := naiveRoot(all[:n])
		got, err := Root(all[:n])
		if err != nil || got != want {
			t.Fatalf("Root(%d) = %s, %v; want %s", n, got, err, want)
		}
		if r := tree.Root(); r != want {
			t.Fatalf("Tree.Root at %d = %s, want %s", n, r, want)
		}
	}
	for size := uint64(1); size <= tree.Size(); size++ {
		root, err := tree.RootAt(size)
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(0); i < size; i++ {
			path, err := tree.InclusionProof(i, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyInclusion(i, size, all[i], path, root); err != nil {
				t.Fatalf("inclusion %d/%d: %v", i, size, err)
			}
			if size > 1 { // a wrong leaf must fail with evidence
				err := VerifyInclusion(i, size, all[(i+1)%size], path, root)
				var rm *RootMismatchError
				if !errors.As(err, &rm) || !errors.Is(err, ErrProof) || rm.Expected != root {
					t.Fatalf("wrong leaf %d/%d: %v", i, size, err)
				}
			}
		}
		for s1 := uint64(1); s1 <= size; s1++ {
			r1, _ := tree.RootAt(s1)
			p, err := tree.ConsistencyProof(s1, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyConsistency(s1, size, p, r1, root); err != nil {
				t.Fatalf("consistency %d→%d: %v", s1, size, err)
			}
		}
	}
	if _, err := Root(nil); !errors.Is(err, ErrEmptyTree) {
		t.Fatalf("empty Root: %v", err)
	}
	if r, _ := (&Tree{}).RootAt(0); r != sha256.Sum256(nil) {
		t.Fatalf("empty tree root %s", r)
	}
	if _, err := RootFromInclusion(0, 4, all[0], all[:1]); !errors.Is(err, ErrProof) {
		t.Fatalf("short path: %v", err)
	}
}

// vectors is testdata/hashes.json: fixed inputs and the hashes of DESIGN 2.2 over them.
type vectors struct {
	Leaves []struct {
		Data string `json:"data"`
		Leaf string `json:"leaf"`
	} `json:"leaves"`
	Roots []struct {
		Size int    `json:"size"`
		Root string `json:"root"`
	} `json:"roots"`
	AnchorLeaf struct {
		BatchID   string `json:"batch_id"`
		Size      uint64 `json:"size"`
		BatchRoot string `json:"batch_root"`
		Leaf      string `json:"leaf"`
	} `json:"anchor_leaf"`
	AppHash struct {
		LogSize      uint64 `json:"log_size"`
		LogRoot      string `json:"log_root"`
		RegistryRoot string `json:"registry_root"`
		AppHash      string `json:"app_hash"`
	} `json:"app_hash"`
	Registry struct {
		Size uint64 `json:"size"`
		Tree string `json:"tree"`
		Root string `json:"root"`
	} `json:"registry_root"`
	// StateRoot and AppHashV2 are the second app hash version (added later; the vectors above
	// are unchanged by it).
	StateRoot struct {
		SubRoots []SubRoot  `json:"sub_roots"`
		Root     string     `json:"root"`
		Registry StateProof `json:"registry_proof"`
	} `json:"state_root"`
	AppHashV2 struct {
		LogSize   uint64 `json:"log_size"`
		LogRoot   string `json:"log_root"`
		StateRoot string `json:"state_root"`
		AppHash   string `json:"app_hash"`
	} `json:"app_hash_v2"`
}

// goldenSubRoots are the state root vector's sub-roots: the registry vector's root and a
// second name, in reverse order so that StateRoot must sort them.
func goldenSubRoots(registry Hash, leaves []Hash) []SubRoot {
	return []SubRoot{{Name: "rules", Root: leaves[3]}, {Name: SubRootRegistry, Root: registry}}
}

func TestGoldenHashes(t *testing.T) {
	path := filepath.Join("testdata", "hashes.json")
	data := [][]byte{{}, {0}, []byte("anchorline"), {0xd2, 0x84}}
	var leaves []Hash
	for _, d := range data {
		leaves = append(leaves, LeafHash(d))
	}
	if *update {
		var v vectors
		for i, d := range data {
			v.Leaves = append(v.Leaves, struct {
				Data string `json:"data"`
				Leaf string `json:"leaf"`
			}{hex.EncodeToString(d), leaves[i].String()})
		}
		for n := 1; n <= len(leaves); n++ {
			r, _ := Root(leaves[:n])
			v.Roots = append(v.Roots, struct {
				Size int    `json:"size"`
				Root string `json:"root"`
			}{n, r.String()})
		}
		id := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
		v.AnchorLeaf.BatchID = hex.EncodeToString(id[:])
		v.AnchorLeaf.Size = 1000
		v.AnchorLeaf.BatchRoot = leaves[2].String()
		v.AnchorLeaf.Leaf = AnchorLeaf(id, 1000, leaves[2]).String()
		v.AppHash.LogSize = 15
		v.AppHash.LogRoot = leaves[1].String()
		v.AppHash.RegistryRoot = EmptyRoot().String()
		v.AppHash.AppHash = AppHash(15, leaves[1], EmptyRoot()).String()
		tree, _ := Root(leaves[:3])
		v.Registry.Size, v.Registry.Tree = 3, tree.String()
		v.Registry.Root = RegistryRoot(3, tree).String()
		subs := goldenSubRoots(RegistryRoot(3, tree), leaves)
		sr, _ := StateRoot(subs)
		v.StateRoot.SubRoots, v.StateRoot.Root = subs, sr.String()
		v.StateRoot.Registry, _ = ProveSubRoot(subs, SubRootRegistry)
		v.AppHashV2.LogSize, v.AppHashV2.LogRoot, v.AppHashV2.StateRoot = 15, leaves[1].String(), sr.String()
		v.AppHashV2.AppHash = AppHashV2Of(15, leaves[1], sr).String()
		b, _ := json.MarshalIndent(v, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Leaves) != len(data) || len(v.Roots) != len(data) {
		t.Fatalf("golden file has %d leaves, %d roots", len(v.Leaves), len(v.Roots))
	}
	for i, l := range v.Leaves {
		d, _ := hex.DecodeString(l.Data)
		if got := ReadingLeaf(d).String(); got != l.Leaf {
			t.Errorf("leaf %d = %s, want %s", i, got, l.Leaf)
		}
		if EntryLeaf(d).String() != l.Leaf {
			t.Errorf("entry leaf %d differs from reading leaf", i)
		}
	}
	for _, r := range v.Roots {
		got, err := Root(leaves[:r.Size])
		if err != nil || got.String() != r.Root {
			t.Errorf("root of %d = %s, %v; want %s", r.Size, got, err, r.Root)
		}
	}
	id, _ := hex.DecodeString(v.AnchorLeaf.BatchID)
	br, _ := ParseHash(v.AnchorLeaf.BatchRoot)
	// Written out by hand from DESIGN 2.2 to catch a change of byte order in AnchorLeaf.
	manual := sha256.Sum256(append(append(append([]byte{0}, id...), 0, 0, 0, 0, 0, 0, 0x03, 0xe8), br[:]...))
	if got := AnchorLeaf([16]byte(id), v.AnchorLeaf.Size, br); got.String() != v.AnchorLeaf.Leaf || got != manual {
		t.Errorf("anchor leaf = %s, want %s (manual %x)", got, v.AnchorLeaf.Leaf, manual)
	}
	lr, _ := ParseHash(v.AppHash.LogRoot)
	rr, _ := ParseHash(v.AppHash.RegistryRoot)
	manualApp := sha256.Sum256(append(append(append([]byte("anchorline/ledger/v1"), 0, 0, 0, 0, 0, 0, 0, 15), lr[:]...), rr[:]...))
	if got := AppHash(v.AppHash.LogSize, lr, rr); got.String() != v.AppHash.AppHash || got != manualApp {
		t.Errorf("app hash = %s, want %s", got, v.AppHash.AppHash)
	}
	tree, _ := ParseHash(v.Registry.Tree)
	manualReg := sha256.Sum256(append(append([]byte("anchorline/registry/v1"), 0, 0, 0, 0, 0, 0, 0, 3), tree[:]...))
	if got := RegistryRoot(v.Registry.Size, tree); got.String() != v.Registry.Root || got != manualReg {
		t.Errorf("registry root = %s, want %s", got, v.Registry.Root)
	}
	if got, _ := RegistryFromLeaves(leaves[:3]); got.String() != v.Registry.Root {
		t.Errorf("registry from leaves = %s, want %s", got, v.Registry.Root)
	}
	// A registry proof pins the size: leaf 0 of 3 does not verify as leaf 0 of 4.
	regPath, _ := InclusionPath(leaves[:3], 0)
	root, _ := ParseHash(v.Registry.Root)
	if err := VerifyRegistry(0, 3, leaves[0], regPath, root); err != nil {
		t.Errorf("registry proof: %v", err)
	}
	if err := VerifyRegistry(0, 4, leaves[0], regPath, root); !errors.Is(err, ErrProof) {
		t.Errorf("registry proof with the wrong size: %v", err)
	}
	checkGoldenV2(t, v, root, leaves)
}

// checkGoldenV2 checks the second app hash version's vectors, each also written out by hand
// from DESIGN 2.2 and schemas/ledger.md.
func checkGoldenV2(t *testing.T, v vectors, registry Hash, leaves []Hash) {
	t.Helper()
	subs := goldenSubRoots(registry, leaves)
	sr, err := StateRoot(subs)
	if err != nil {
		t.Fatal(err)
	}
	// Sorted by name: "registry" < "rules".
	l0 := sha256.Sum256(append(append([]byte{0}, "registry"...), registry[:]...))
	l1 := sha256.Sum256(append(append([]byte{0}, "rules"...), leaves[3][:]...))
	if manual := sha256.Sum256(append(append([]byte{1}, l0[:]...), l1[:]...)); sr.String() != v.StateRoot.Root || sr != manual {
		t.Errorf("state root = %s, want %s (manual %x)", sr, v.StateRoot.Root, manual)
	}
	if got, _ := StateRoot(v.StateRoot.SubRoots); got != sr {
		t.Errorf("state root of the golden sub-roots = %s, want %s", got, sr)
	}
	p, err := ProveSubRoot(subs, SubRootRegistry)
	if err != nil {
		t.Fatal(err)
	}
	if p.Index != v.StateRoot.Registry.Index || p.Size != v.StateRoot.Registry.Size || p.Root != v.StateRoot.Registry.Root || !slices.Equal(p.Path, v.StateRoot.Registry.Path) {
		t.Errorf("registry sub-root proof = %+v, want %+v", p, v.StateRoot.Registry)
	}
	if err := VerifySubRoot(v.StateRoot.Registry, sr); err != nil {
		t.Errorf("registry sub-root proof: %v", err)
	}
	lr, _ := ParseHash(v.AppHashV2.LogRoot)
	manualApp := sha256.Sum256(append(append(append([]byte("anchorline/ledger/v2"), 0, 0, 0, 0, 0, 0, 0, 15), lr[:]...), sr[:]...))
	if got := AppHashV2Of(v.AppHashV2.LogSize, lr, sr); got.String() != v.AppHashV2.AppHash || got != manualApp {
		t.Errorf("app hash v2 = %s, want %s", got, v.AppHashV2.AppHash)
	}
	if AppHashV2Of(15, lr, sr) == AppHash(15, lr, sr) {
		t.Error("v1 and v2 app hashes agree over the same inputs")
	}
}

func TestStateRoot(t *testing.T) {
	r := leavesN(5)
	subs := []SubRoot{{"registry", r[0]}, {"rules", r[1]}, {"owners", r[2]}, {"consent", r[3]}, {"erase", r[4]}}
	sr, err := StateRoot(subs)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		p, err := ProveSubRoot(subs, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifySubRoot(p, sr); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		// The name is in the leaf: the same path does not prove the root under another name.
		q := p
		q.Name = "x" + p.Name
		if err := VerifySubRoot(q, sr); !errors.Is(err, ErrProof) {
			t.Errorf("%s proven under another name: %v", s.Name, err)
		}
		q = p
		q.Root = r[(p.Index+1)%5]
		if err := VerifySubRoot(q, sr); !errors.Is(err, ErrProof) {
			t.Errorf("%s with another root: %v", s.Name, err)
		}
	}
	for name, bad := range map[string][]SubRoot{
		"none":       nil,
		"empty name": {{"", r[0]}},
		"twice":      {{"registry", r[0]}, {"registry", r[1]}},
	} {
		if _, err := StateRoot(bad); !errors.Is(err, ErrStateRoot) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ProveSubRoot(subs, "missing"); !errors.Is(err, ErrStateRoot) {
		t.Errorf("missing sub-root: %v", err)
	}
}

func TestTreeReplaceAndRootWith(t *testing.T) {
	all := leavesN(40)
	for _, n := range []int{0, 1, 2, 7, 16, 33} {
		for prefix := 0; prefix <= n; prefix++ {
			var tree Tree
			for _, l := range all[:n] {
				tree.Append(l)
			}
			// New leaves from prefix on: a different set, one longer.
			suffix := leavesN(n - prefix + 1 + 40)[40:]
			want := EmptyRoot()
			if full := append(slices.Clone(all[:prefix]), suffix...); len(full) > 0 {
				want = naiveRoot(full)
			}
			got, err := tree.RootWith(uint64(prefix), suffix)
			if err != nil || got != want {
				t.Fatalf("RootWith(%d of %d) = %s, %v; want %s", prefix, n, got, err, want)
			}
			if tree.Size() != uint64(n) {
				t.Fatalf("RootWith changed the tree")
			}
			if err := tree.Replace(uint64(prefix), suffix); err != nil {
				t.Fatal(err)
			}
			if r := tree.Root(); r != want {
				t.Fatalf("Replace(%d of %d) root = %s, want %s", prefix, n, r, want)
			}
			for i := range tree.Size() {
				p, err := tree.InclusionProof(i, tree.Size())
				if err != nil {
					t.Fatal(err)
				}
				l, _ := tree.Leaf(i)
				if err := VerifyInclusion(i, tree.Size(), l, p, want); err != nil {
					t.Fatalf("after Replace(%d of %d), leaf %d: %v", prefix, n, i, err)
				}
			}
		}
	}
	var tree Tree
	if _, err := tree.RootWith(1, nil); err == nil {
		t.Error("RootWith beyond the size succeeded")
	}
	if err := tree.Replace(1, nil); err == nil {
		t.Error("Replace beyond the size succeeded")
	}
}
