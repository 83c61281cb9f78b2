package merkle

import (
	"fmt"
	"math/bits"
	"sort"
)

// A multiproof proves several leaves of one RFC 6962 tree at once: it is the list of the
// hashes of the maximal subtrees that hold none of the proven leaves, in the order RFC 6962's
// recursive definition of the tree hash (section 2.1: a tree of n > 1 leaves splits into the
// first k leaves, k the largest power of two below n, and the rest) meets them, left to
// right (the order of the leaves they cover). It is the smallest set of hashes that rebuilds
// the root from the proven leaves, and each leaf set has exactly one: for a single leaf it
// holds the hashes of the leaf's inclusion path. Like an inclusion path, it does not pin the
// tree's size (leaf 0 of 3 and of 4 can share one): the size must be committed elsewhere.

// split is the size of the left subtree of a tree of n > 1 leaves: the largest power of two
// below n.
func split(n uint64) uint64 { return 1 << (bits.Len64(n-1) - 1) }

// checkIndices checks that indices are strictly increasing, each below size, and not empty.
func checkIndices(size uint64, indices []uint64) error {
	if len(indices) == 0 {
		return fmt.Errorf("%w: a multiproof proves at least one leaf", ErrProof)
	}
	for i, x := range indices {
		if x >= size {
			return fmt.Errorf("%w: leaf index %d of a tree of %d leaves", ErrProof, x, size)
		}
		if i > 0 && x <= indices[i-1] {
			return fmt.Errorf("%w: leaf indices must be strictly increasing (%d after %d)", ErrProof, x, indices[i-1])
		}
	}
	return nil
}

// MultiProof returns the root of the tree over leaves and the multiproof of the leaves at
// indices (strictly increasing, each below len(leaves)). It hashes each node of the tree
// once: O(len(leaves)).
func MultiProof(leaves []Hash, indices []uint64) (proof []Hash, root Hash, err error) {
	var t Tree
	for _, l := range leaves {
		t.Append(l)
	}
	return MultiProofOf(&t, indices)
}

// MultiProofOf is MultiProof over a Tree, which keeps its complete subtrees: it reads the
// hashes of the subtrees without a proven leaf instead of hashing them, O(len(indices)·log
// size).
func MultiProofOf(t *Tree, indices []uint64) (proof []Hash, root Hash, err error) {
	return MultiProofAt(t, t.Size(), indices)
}

// MultiProofAt is the multiproof of the leaves at indices in the tree of the first size leaves
// of r, and that tree's root: O(len(indices)·log size) reads (the ledger proves several log
// entries at one size this way).
func MultiProofAt(r NodeReader, size uint64, indices []uint64) (proof []Hash, root Hash, err error) {
	if size == 0 {
		return nil, Hash{}, ErrEmptyTree
	}
	if err := checkIndices(size, indices); err != nil {
		return nil, Hash{}, err
	}
	root, err = buildMultiOf(r, 0, size, indices, &proof)
	return proof, root, err
}

// buildMultiOf returns the hash of the subtree over leaves [lo, lo+n) of r and appends to proof
// the hashes of its maximal subtrees without any of indices (those in this subtree).
func buildMultiOf(r NodeReader, lo, n uint64, indices []uint64, proof *[]Hash) (Hash, error) {
	if len(indices) == 0 {
		h, err := subtreeOf(r, lo, n)
		*proof = append(*proof, h)
		return h, err
	}
	if n == 1 {
		return r.Node(0, lo)
	}
	k := split(n)
	j := sort.Search(len(indices), func(i int) bool { return indices[i] >= lo+k })
	left, err := buildMultiOf(r, lo, k, indices[:j], proof)
	if err != nil {
		return Hash{}, err
	}
	right, err := buildMultiOf(r, lo+k, n-k, indices[j:], proof)
	if err != nil {
		return Hash{}, err
	}
	return NodeHash(left, right), nil
}

// subtreeOf is the RFC 6962 hash of leaves [lo, lo+n) of r: a complete subtree r keeps when n is
// a power of two (the recursive split aligns them), else split again.
func subtreeOf(r NodeReader, lo, n uint64) (Hash, error) {
	if n&(n-1) == 0 {
		level := uint(bits.TrailingZeros64(n))
		return r.Node(level, lo>>level)
	}
	k := split(n)
	left, err := subtreeOf(r, lo, k)
	if err != nil {
		return Hash{}, err
	}
	right, err := subtreeOf(r, lo+k, n-k)
	if err != nil {
		return Hash{}, err
	}
	return NodeHash(left, right), nil
}

// MultiProofFromInclusion rewrites the inclusion path of leaf index in a tree of size leaves
// (bottom-up, as InclusionProofOf returns it) as the multiproof of that one leaf: the same
// hashes, in the multiproof's left-to-right order.
func MultiProofFromInclusion(index, size uint64, path []Hash) ([]Hash, error) {
	if err := checkIndices(size, []uint64{index}); err != nil {
		return nil, err
	}
	// Top-down, the side of each sibling on the way from the root to the leaf.
	var left []bool
	for lo, n := uint64(0), size; n > 1; {
		k := split(n)
		if index < lo+k {
			left = append(left, false) // the sibling is the right part
			n = k
		} else {
			left = append(left, true)
			lo, n = lo+k, n-k
		}
	}
	if len(left) != len(path) {
		return nil, fmt.Errorf("%w: inclusion path of leaf %d of %d has %d hashes, want %d", ErrProof, index, size, len(path), len(left))
	}
	out := make([]Hash, 0, len(path))
	for d, l := range left { // left siblings top-down: they cover the lowest leaves first
		if l {
			out = append(out, path[len(path)-1-d])
		}
	}
	for d := len(left) - 1; d >= 0; d-- { // right siblings bottom-up
		if !left[d] {
			out = append(out, path[len(path)-1-d])
		}
	}
	return out, nil
}

// RootFromMultiProof computes the root that leaves, at indices (strictly increasing, each
// below size) of a tree of size leaves, lead to with proof. It fails if the proof has too
// few or too many hashes for these indices and size. Its work is O(len(indices)·log size),
// whatever size says.
func RootFromMultiProof(size uint64, indices []uint64, leaves, proof []Hash) (Hash, error) {
	if len(leaves) != len(indices) {
		return Hash{}, fmt.Errorf("%w: %d leaves for %d indices", ErrProof, len(leaves), len(indices))
	}
	if err := checkIndices(size, indices); err != nil {
		return Hash{}, err
	}
	m := multiVerifier{proof: proof}
	root, err := m.root(size, 0, indices, leaves)
	if err != nil {
		return Hash{}, err
	}
	if m.next != len(proof) {
		return Hash{}, fmt.Errorf("%w: multiproof has %d hashes, %d leaves of %d need %d", ErrProof, len(proof), len(indices), size, m.next)
	}
	return root, nil
}

type multiVerifier struct {
	proof []Hash
	next  int // the next proof hash to use
}

func (m *multiVerifier) root(size, lo uint64, indices []uint64, leaves []Hash) (Hash, error) {
	if len(indices) == 0 {
		if m.next == len(m.proof) {
			return Hash{}, fmt.Errorf("%w: multiproof has %d hashes, too few for its leaves", ErrProof, len(m.proof))
		}
		m.next++
		return m.proof[m.next-1], nil
	}
	if size == 1 {
		return leaves[0], nil // indices is [lo]: they are increasing and inside [lo, lo+size)
	}
	k := split(size)
	j := sort.Search(len(indices), func(i int) bool { return indices[i] >= lo+k })
	left, err := m.root(k, lo, indices[:j], leaves[:j])
	if err != nil {
		return Hash{}, err
	}
	right, err := m.root(size-k, lo+k, indices[j:], leaves[j:])
	if err != nil {
		return Hash{}, err
	}
	return NodeHash(left, right), nil
}

// MultiRootMismatchError is the evidence of a multiproof that was well formed but led to
// another root.
type MultiRootMismatchError struct {
	Leaves, Size uint64
	Expected     Hash // the root the proof should reach
	Computed     Hash // the root it reached
}

func (e *MultiRootMismatchError) Error() string {
	return fmt.Sprintf("merkle: %d leaves of %d lead to root %s, want %s", e.Leaves, e.Size, e.Computed, e.Expected)
}

// Unwrap makes errors.Is(err, ErrProof) hold.
func (e *MultiRootMismatchError) Unwrap() error { return ErrProof }

// VerifyMultiProof checks that leaves are at indices in the tree of size leaves with root.
func VerifyMultiProof(size uint64, indices []uint64, leaves, proof []Hash, root Hash) error {
	got, err := RootFromMultiProof(size, indices, leaves, proof)
	if err != nil {
		return err
	}
	if got != root {
		return &MultiRootMismatchError{Leaves: uint64(len(leaves)), Size: size, Expected: root, Computed: got}
	}
	return nil
}
