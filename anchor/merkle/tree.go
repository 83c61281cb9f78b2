package merkle

import (
	"fmt"
	"math/bits"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
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

func (t *Tree) node(id compact.NodeID) (Hash, error) {
	if int(id.Level) >= len(t.levels) || id.Index >= uint64(len(t.levels[id.Level])) {
		return Hash{}, fmt.Errorf("merkle: node %d/%d not complete at size %d", id.Level, id.Index, t.Size())
	}
	return t.levels[id.Level][id.Index], nil
}

// RootAt is the root of the first size leaves. The root of size 0 is EmptyRoot.
func (t *Tree) RootAt(size uint64) (Hash, error) {
	if size > t.Size() {
		return Hash{}, fmt.Errorf("merkle: root at %d beyond size %d", size, t.Size())
	}
	if size == 0 {
		return EmptyRoot(), nil
	}
	// Perfect subtrees of [0, size), left to right, folded right to left.
	var parts []Hash
	var begin uint64
	for begin < size {
		level := uint(bits.Len64(size-begin) - 1)
		h, err := t.node(compact.NewNodeID(level, begin>>level))
		if err != nil {
			return Hash{}, err
		}
		parts = append(parts, h)
		begin += 1 << level
	}
	root := parts[len(parts)-1]
	for i := len(parts) - 2; i >= 0; i-- {
		root = NodeHash(parts[i], root)
	}
	return root, nil
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
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("merkle: inclusion %d of %d: %w", index, size, err)
	}
	return t.fetch(nodes)
}

// ConsistencyProof returns the proof that the tree of size2 extends the tree of size1.
func (t *Tree) ConsistencyProof(size1, size2 uint64) ([]Hash, error) {
	if size2 > t.Size() {
		return nil, fmt.Errorf("merkle: proof at size %d beyond size %d", size2, t.Size())
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("merkle: consistency %d→%d: %w", size1, size2, err)
	}
	return t.fetch(nodes)
}

func (t *Tree) fetch(nodes proof.Nodes) ([]Hash, error) {
	raw := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := t.node(id)
		if err != nil {
			return nil, err
		}
		raw[i] = h[:]
	}
	raw, err := nodes.Rehash(raw, hasher.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("merkle: rehash: %w", err)
	}
	out := make([]Hash, len(raw))
	for i := range raw {
		copy(out[i][:], raw[i])
	}
	return out, nil
}

// prefixRange is the compact range of the first size leaves: their perfect subtrees, left to
// right.
func (t *Tree) prefixRange(size uint64) (*compact.Range, error) {
	var hashes [][]byte
	for begin := uint64(0); begin < size; {
		level := uint(bits.Len64(size-begin) - 1)
		h, err := t.node(compact.NewNodeID(level, begin>>level))
		if err != nil {
			return nil, err
		}
		hashes = append(hashes, h[:])
		begin += 1 << level
	}
	rf := compact.RangeFactory{Hash: hasher.HashChildren}
	r, err := rf.NewRange(0, size, hashes)
	if err != nil {
		return nil, fmt.Errorf("merkle: range of %d: %w", size, err)
	}
	return r, nil
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
