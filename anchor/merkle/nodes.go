package merkle

import (
	"fmt"
	"math/bits"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
)

// NodeReader reads the complete subtrees of an append-only RFC 6962 tree: the node at level k
// and index i is the root of leaves [i*2^k, (i+1)*2^k), level 0 the leaves themselves. Tree
// keeps them in memory; the ledger keeps them in its database. Whatever the reader, roots and
// proofs at any size cost O(log n) reads.
type NodeReader interface {
	Node(level uint, index uint64) (Hash, error)
}

// perfect calls f with the perfect subtrees of [0, size), left to right.
func perfect(size uint64, f func(level uint, index uint64) error) error {
	for begin := uint64(0); begin < size; {
		level := uint(bits.Len64(size-begin) - 1)
		if err := f(level, begin>>level); err != nil {
			return err
		}
		begin += 1 << level
	}
	return nil
}

// RootOf is the root of the first size leaves of the tree r reads; EmptyRoot for size 0.
func RootOf(r NodeReader, size uint64) (Hash, error) {
	f, err := FrontierOf(r, size)
	if err != nil {
		return Hash{}, err
	}
	return f.Root(), nil
}

// InclusionProofOf returns the bottom-up path of leaf index in the tree of the first size
// leaves of r.
func InclusionProofOf(r NodeReader, index, size uint64) ([]Hash, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("merkle: inclusion %d of %d: %w", index, size, err)
	}
	return fetch(r, nodes)
}

// ConsistencyProofOf returns the proof that the tree of size2 leaves of r extends its tree of
// size1 leaves.
func ConsistencyProofOf(r NodeReader, size1, size2 uint64) ([]Hash, error) {
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("merkle: consistency %d→%d: %w", size1, size2, err)
	}
	return fetch(r, nodes)
}

func fetch(r NodeReader, nodes proof.Nodes) ([]Hash, error) {
	raw := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := r.Node(id.Level, id.Index)
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

// Frontier is the right edge of an append-only tree: the perfect subtrees of its leaves, left
// to right (at most 64). It is all that appending and the root need, so a tree whose nodes
// live in a database keeps only its Frontier in memory. The zero value is an empty tree.
type Frontier struct {
	size   uint64
	hashes []Hash
}

// FrontierOf reads the frontier of the first size leaves of r.
func FrontierOf(r NodeReader, size uint64) (Frontier, error) {
	f := Frontier{size: size}
	err := perfect(size, func(level uint, index uint64) error {
		h, err := r.Node(level, index)
		f.hashes = append(f.hashes, h)
		return err
	})
	if err != nil {
		return Frontier{}, err
	}
	return f, nil
}

// Size is the number of leaves.
func (f Frontier) Size() uint64 { return f.size }

// Clone returns a copy that appends independently of f.
func (f Frontier) Clone() Frontier {
	return Frontier{size: f.size, hashes: slices.Clone(f.hashes)}
}

// Root is the tree's root; EmptyRoot for no leaves.
func (f Frontier) Root() Hash {
	if f.size == 0 {
		return EmptyRoot()
	}
	root := f.hashes[len(f.hashes)-1]
	for i := len(f.hashes) - 2; i >= 0; i-- {
		root = NodeHash(f.hashes[i], root)
	}
	return root
}

// Append adds a leaf and calls visit (if not nil) with every node it completes, the leaf at
// level 0 first: exactly the nodes a NodeReader must then return.
func (f *Frontier) Append(leaf Hash, visit func(level uint, index uint64, h Hash)) {
	if visit != nil {
		visit(0, f.size, leaf)
	}
	h := leaf
	index := f.size
	// Each trailing 1 bit of the old size is a perfect subtree the new leaf completes a pair
	// with.
	for level := uint(0); index&1 == 1; level++ {
		h = NodeHash(f.hashes[len(f.hashes)-1], h)
		f.hashes = f.hashes[:len(f.hashes)-1]
		index >>= 1
		if visit != nil {
			visit(level+1, index, h)
		}
	}
	f.hashes = append(f.hashes, h)
	f.size++
}

// compact is f as a transparency-dev compact range.
func (f Frontier) compact() (*compact.Range, error) {
	hashes := make([][]byte, len(f.hashes))
	for i := range f.hashes {
		hashes[i] = f.hashes[i][:]
	}
	rf := compact.RangeFactory{Hash: hasher.HashChildren}
	r, err := rf.NewRange(0, f.size, hashes)
	if err != nil {
		return nil, fmt.Errorf("merkle: range of %d: %w", f.size, err)
	}
	return r, nil
}
