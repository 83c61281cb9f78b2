package merkle

import (
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
)

// ErrProof marks a Merkle proof that does not hold; errors.Is(err, ErrProof) is true for every
// failed inclusion or consistency check, and errors.As gives a *RootMismatchError when the
// proof was well-formed but led to another root.
var ErrProof = errors.New("merkle: proof does not verify")

// RootMismatchError carries the evidence of a failed inclusion check.
type RootMismatchError struct {
	Index, Size uint64
	Expected    Hash // the root the proof should reach
	Computed    Hash // the root it reached
}

func (e *RootMismatchError) Error() string {
	return fmt.Sprintf("merkle: leaf %d of %d leads to root %s, want %s", e.Index, e.Size, e.Computed, e.Expected)
}

// Unwrap makes errors.Is(err, ErrProof) hold.
func (e *RootMismatchError) Unwrap() error { return ErrProof }

// RootFromInclusion computes the root that leaf at index in a tree of size leads to through
// path. It fails if the path has the wrong length for index and size.
func RootFromInclusion(index, size uint64, leaf Hash, path []Hash) (Hash, error) {
	raw, err := proof.RootFromInclusionProof(hasher, index, size, leaf[:], toBytes(path))
	if err != nil {
		return Hash{}, fmt.Errorf("%w: %w", ErrProof, err)
	}
	return HashFromBytes(raw)
}

// VerifyInclusion checks that leaf is at index in the tree of size with root.
func VerifyInclusion(index, size uint64, leaf Hash, path []Hash, root Hash) error {
	got, err := RootFromInclusion(index, size, leaf, path)
	if err != nil {
		return err
	}
	if got != root {
		return &RootMismatchError{Index: index, Size: size, Expected: root, Computed: got}
	}
	return nil
}

// VerifyConsistency checks that the tree of size2 with root2 extends the tree of size1 with
// root1 (the log only grew).
func VerifyConsistency(size1, size2 uint64, path []Hash, root1, root2 Hash) error {
	if err := proof.VerifyConsistency(hasher, size1, size2, toBytes(path), root1[:], root2[:]); err != nil {
		return fmt.Errorf("%w: consistency %d→%d: %w", ErrProof, size1, size2, err)
	}
	return nil
}

func toBytes(hs []Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

// VerifyRegistry checks that leaf is record index of a registry of size records whose root
// (RegistryRoot) is root.
func VerifyRegistry(index, size uint64, leaf Hash, path []Hash, root Hash) error {
	tree, err := RootFromInclusion(index, size, leaf, path)
	if err != nil {
		return err
	}
	if got := RegistryRoot(size, tree); got != root {
		return &RootMismatchError{Index: index, Size: size, Expected: root, Computed: got}
	}
	return nil
}
