package merkle

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"testing"
)

// mapNodes is a NodeReader over the nodes a Frontier reported, as a database would hold them.
type mapNodes map[[2]uint64]Hash

func (m mapNodes) Node(level uint, index uint64) (Hash, error) {
	h, ok := m[[2]uint64{uint64(level), index}]
	if !ok {
		return Hash{}, fmt.Errorf("node %d/%d missing", level, index)
	}
	return h, nil
}

// TestFrontier appends the same leaves to a Tree and to a Frontier whose reported nodes go
// into a map: the roots agree at every size, the map holds exactly the tree's complete nodes,
// and proofs read from the map verify.
func TestFrontier(t *testing.T) {
	var tree Tree
	var f Frontier
	nodes := mapNodes{}
	for i := range 300 {
		leaf := Hash(sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i))))
		tree.Append(leaf)
		f.Append(leaf, func(level uint, index uint64, h Hash) {
			if want, err := tree.Node(level, index); err != nil || want != h {
				t.Fatalf("size %d: reported node %d/%d = %s, tree has %s (%v)", i+1, level, index, h, want, err)
			}
			nodes[[2]uint64{uint64(level), index}] = h
		})
		size := uint64(i + 1)
		if f.Root() != tree.Root() || f.Size() != size {
			t.Fatalf("size %d: frontier root %s, tree root %s", size, f.Root(), tree.Root())
		}
		again, err := FrontierOf(nodes, size)
		if err != nil || again.Root() != f.Root() {
			t.Fatalf("size %d: frontier read back: %v", size, err)
		}
		for _, idx := range []uint64{0, size / 2, size - 1} {
			p, err := InclusionProofOf(nodes, idx, size)
			if err != nil {
				t.Fatal(err)
			}
			l, _ := tree.Leaf(idx)
			if err := VerifyInclusion(idx, size, l, p, f.Root()); err != nil {
				t.Fatalf("size %d leaf %d: %v", size, idx, err)
			}
		}
		if size > 1 {
			old, _ := tree.RootAt(size / 2)
			p, err := ConsistencyProofOf(nodes, size/2, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyConsistency(size/2, size, p, old, f.Root()); err != nil {
				t.Fatalf("consistency %d→%d: %v", size/2, size, err)
			}
		}
	}
	if len(nodes) != 2*300-bits.OnesCount64(300) {
		t.Fatalf("%d nodes stored", len(nodes))
	}
	c := f.Clone()
	c.Append(Hash{1}, nil)
	if c.Size() == f.Size() || c.Root() == f.Root() {
		t.Fatal("a clone's append changed nothing or changed the original")
	}
	if _, err := FrontierOf(mapNodes{}, 3); err == nil {
		t.Fatal("a frontier over missing nodes was read")
	}
	var empty Frontier
	if empty.Root() != EmptyRoot() {
		t.Fatal("empty frontier root is not EmptyRoot")
	}
}
