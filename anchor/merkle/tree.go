package merkle

import (
	"fmt"

	"github.com/transparency-dev/merkle/compact"
)

// Tree is an append-only RFC 6962 tree kept in memory with every complete subtree hash, so
// roots, inclusion and consistency proofs at any earlier size cost O(log n). The zero value is
// an empty tree. It is not safe for concurrent use.
type Tree struct {
	levels [][]Hash // levels[0] are the leaves; levels[k][i] is the complete subtree of 2^k leaves
}

// Size is the number of leaves.
func (t *Tree) Size() uint64 {
	if len(t.levels) == 0 {
		return 0
	}
	return uint64(len(t.levels[0]))
}

// Leaf returns the leaf hash at index.
func (t *Tree) Leaf(index uint64) (Hash, error) {
	if index >= t.Size() {
		return Hash{}, fmt.Errorf("merkle: leaf %d of %d", index, t.Size())
	}
	return t.levels[0][index], nil
}

// Leaves returns the leaf hashes in order: the tree's own slice, to be read and not changed.
func (t *Tree) Leaves() []Hash {
	if len(t.levels) == 0 {
		return nil
	}
	return t.levels[0]
}

// Append adds a leaf hash and completes the subtrees it closes.
func (t *Tree) Append(leaf Hash) {
	if len(t.levels) == 0 {
		t.levels = append(t.levels, nil)
	}
	t.levels[0] = append(t.levels[0], leaf)
	for k := 0; ; k++ {
		n := len(t.levels[k])
		if n%2 != 0 {
			return
		}
		if len(t.levels) == k+1 {
			t.levels = append(t.levels, nil)
		}
		t.levels[k+1] = append(t.levels[k+1], NodeHash(t.levels[k][n-2], t.levels[k][n-1]))
	}
}

// Node returns the hash of the complete subtree at level covering leaves
// [index<<level, (index+1)<<level) (level 0: the leaves); Tree is a NodeReader.
func (t *Tree) Node(level uint, index uint64) (Hash, error) {
	if int(level) >= len(t.levels) || index >= uint64(len(t.levels[level])) {
		return Hash{}, fmt.Errorf("merkle: node %d/%d not complete at size %d", level, index, t.Size())
	}
	return t.levels[level][index], nil
}

// RootAt is the root of the first size leaves. The root of size 0 is EmptyRoot.
func (t *Tree) RootAt(size uint64) (Hash, error) {
	if size > t.Size() {
		return Hash{}, fmt.Errorf("merkle: root at %d beyond size %d", size, t.Size())
	}
	return RootOf(t, size)
}

// Root is the root at the current size.
func (t *Tree) Root() Hash {
	r, _ := t.RootAt(t.Size()) // cannot fail at the current size
	return r
}

// InclusionProof returns the bottom-up path of leaf index in the tree of the first size leaves.
func (t *Tree) InclusionProof(index, size uint64) ([]Hash, error) {
	if size > t.Size() {
		return nil, fmt.Errorf("merkle: proof at size %d beyond size %d", size, t.Size())
	}
	return InclusionProofOf(t, index, size)
}

// ConsistencyProof returns the proof that the tree of size2 extends the tree of size1.
func (t *Tree) ConsistencyProof(size1, size2 uint64) ([]Hash, error) {
	if size2 > t.Size() {
		return nil, fmt.Errorf("merkle: proof at size %d beyond size %d", size2, t.Size())
	}
	return ConsistencyProofOf(t, size1, size2)
}

// prefixRange is the compact range of the first size leaves: their perfect subtrees, left to
// right.
func (t *Tree) prefixRange(size uint64) (*compact.Range, error) {
	f, err := FrontierOf(t, size)
	if err != nil {
		return nil, err
	}
	return f.compact()
}

// RootWith is the root of the tree whose first prefix leaves are t's and whose next leaves are
// suffix, without changing t. It costs O(len(suffix) + log prefix) hashes; the root of no
// leaves is EmptyRoot.
func (t *Tree) RootWith(prefix uint64, suffix []Hash) (Hash, error) {
	if prefix > t.Size() {
		return Hash{}, fmt.Errorf("merkle: prefix %d beyond size %d", prefix, t.Size())
	}
	if prefix+uint64(len(suffix)) == 0 {
		return EmptyRoot(), nil
	}
	r, err := t.prefixRange(prefix)
	if err != nil {
		return Hash{}, err
	}
	for i := range suffix {
		if err := r.Append(suffix[i][:], nil); err != nil {
			return Hash{}, fmt.Errorf("merkle: append leaf %d: %w", prefix+uint64(i), err)
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return Hash{}, fmt.Errorf("merkle: root: %w", err)
	}
	return HashFromBytes(root)
}

// Replace keeps the first prefix leaves and replaces the rest with suffix, rehashing only what
// covers the new leaves: O(len(suffix) + log prefix) hashes. A sorted tree (the v1 device
// registry) that changes from index i on is updated with Replace(i, the leaves from i).
func (t *Tree) Replace(prefix uint64, suffix []Hash) error {
	if prefix > t.Size() {
		return fmt.Errorf("merkle: prefix %d beyond size %d", prefix, t.Size())
	}
	for k := range t.levels {
		t.levels[k] = t.levels[k][:prefix>>k]
	}
	for _, l := range suffix {
		t.Append(l)
	}
	return nil
}
