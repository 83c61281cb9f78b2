package merkle

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// subsets returns some index sets of a tree of n leaves: each single leaf, all, the ends,
// every other one, and random ones.
func subsets(n int, rng *rand.Rand) [][]uint64 {
	var out [][]uint64
	all := make([]uint64, n)
	for i := range all {
		all[i] = uint64(i)
		out = append(out, []uint64{uint64(i)})
	}
	out = append(out, all)
	if n > 1 {
		out = append(out, []uint64{0, uint64(n - 1)})
	}
	var even []uint64
	for i := 0; i < n; i += 2 {
		even = append(even, uint64(i))
	}
	out = append(out, even)
	for range 8 {
		var s []uint64
		for i := range n {
			if rng.IntN(3) == 0 {
				s = append(s, uint64(i))
			}
		}
		if len(s) > 0 {
			out = append(out, s)
		}
	}
	return out
}

func pick(leaves []Hash, idx []uint64) []Hash {
	out := make([]Hash, len(idx))
	for i, x := range idx {
		out[i] = leaves[x]
	}
	return out
}

func TestMultiProof(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 1; n <= 70; n++ {
		leaves := leavesN(n)
		want := naiveRoot(leaves)
		for _, idx := range subsets(n, rng) {
			proof, root, err := MultiProof(leaves, idx)
			if err != nil {
				t.Fatal(err)
			}
			if root != want {
				t.Fatalf("n %d %v: root %s, want %s", n, idx, root, want)
			}
			// The same proof from a tree that keeps its subtrees.
			var tree Tree
			for _, l := range leaves {
				tree.Append(l)
			}
			proofOf, rootOf, err := MultiProofOf(&tree, idx)
			if err != nil || rootOf != want || !slices.Equal(proofOf, proof) {
				t.Fatalf("n %d %v: MultiProofOf gives root %s and %d hashes (%v), MultiProof %s and %d", n, idx, rootOf, len(proofOf), err, root, len(proof))
			}
			if err := VerifyMultiProof(uint64(n), idx, pick(leaves, idx), proof, want); err != nil {
				t.Fatalf("n %d %v: %v", n, idx, err)
			}
			// And from a larger tree, at this size (the ledger's log proves entries so).
			var larger Tree
			for _, l := range leavesN(n + 5) {
				larger.Append(l)
			}
			proofAt, rootAt, err := MultiProofAt(&larger, uint64(n), idx)
			if err != nil || rootAt != want || !slices.Equal(proofAt, proof) {
				t.Fatalf("n %d %v: MultiProofAt of a tree of %d gives root %s and %d hashes (%v), MultiProof %s and %d", n, idx, n+5, rootAt, len(proofAt), err, root, len(proof))
			}
			if len(idx) == 1 {
				// One leaf: the hashes of its inclusion path, in the tree's left-to-right order.
				path, err := InclusionPath(leaves, idx[0])
				if err != nil {
					t.Fatal(err)
				}
				fromPath, err := MultiProofFromInclusion(idx[0], uint64(n), path)
				if err != nil || !slices.Equal(fromPath, proof) {
					t.Fatalf("n %d leaf %d: multiproof %v, from the inclusion path %v (%v)", n, idx[0], proof, fromPath, err)
				}
				if len(path) > 0 {
					if _, err := MultiProofFromInclusion(idx[0], uint64(n), path[1:]); !errors.Is(err, ErrProof) {
						t.Fatalf("n %d leaf %d: short inclusion path: %v", n, idx[0], err)
					}
				}
			}
			if len(idx) == n && len(proof) != 0 {
				t.Fatalf("n %d all leaves: %d proof hashes", n, len(proof))
			}
			// Every proof hash matters, and so does every leaf.
			for i := range proof {
				bad := slices.Clone(proof)
				bad[i][3] ^= 1
				if VerifyMultiProof(uint64(n), idx, pick(leaves, idx), bad, want) == nil {
					t.Fatalf("n %d %v: proof hash %d changed still verifies", n, idx, i)
				}
			}
			got := pick(leaves, idx)
			got[len(got)-1][0] ^= 1
			var mm *MultiRootMismatchError
			if err := VerifyMultiProof(uint64(n), idx, got, proof, want); !errors.As(err, &mm) || !errors.Is(err, ErrProof) {
				t.Fatalf("n %d %v: changed leaf: %v", n, idx, err)
			}
			// One hash more or fewer is refused for its count.
			if len(proof) > 0 {
				if _, err := RootFromMultiProof(uint64(n), idx, pick(leaves, idx), proof[:len(proof)-1]); !errors.Is(err, ErrProof) {
					t.Fatalf("n %d %v: short proof: %v", n, idx, err)
				}
			}
			if _, err := RootFromMultiProof(uint64(n), idx, pick(leaves, idx), append(slices.Clone(proof), Hash{})); !errors.Is(err, ErrProof) {
				t.Fatalf("n %d %v: long proof: %v", n, idx, err)
			}
		}
	}
}

func TestMultiProofRefuses(t *testing.T) {
	leaves := leavesN(5)
	for name, idx := range map[string][]uint64{"none": nil, "beyond": {5}, "repeated": {1, 1}, "decreasing": {3, 2}} {
		if _, _, err := MultiProof(leaves, idx); !errors.Is(err, ErrProof) {
			t.Fatalf("%s: build: %v", name, err)
		}
		if _, err := RootFromMultiProof(5, idx, make([]Hash, len(idx)), make([]Hash, 3)); !errors.Is(err, ErrProof) {
			t.Fatalf("%s: verify: %v", name, err)
		}
	}
	if _, _, err := MultiProof(nil, []uint64{0}); !errors.Is(err, ErrEmptyTree) {
		t.Fatalf("empty tree: %v", err)
	}
	// A huge size costs only the depth of the tree.
	if _, err := RootFromMultiProof(1<<63, []uint64{7}, leavesN(1), make([]Hash, 63)); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkMultiProof(b *testing.B) {
	leaves := leavesN(1000)
	idx := []uint64{3, 250, 251, 777}
	proof, root, err := MultiProof(leaves, idx)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := VerifyMultiProof(1000, idx, pick(leaves, idx), proof, root); err != nil {
			b.Fatal(err)
		}
	}
}
