package ledger

import (
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/anchorline/anchorline/anchor/merkle"
)

// registry is the v1 device registry (schemas/ledger.md): an RFC 6962 tree over the record
// leaves sorted by device id, as of the committed height. Its shape is fixed by DESIGN 2.2 v1,
// so an insertion at index i changes every node right of i; what is kept here makes a block
// cost only what its changes reach:
//   - the tree's nodes are kept (merkle.Tree), and a block rehashes only the leaves from the
//     first index it changed on (Replace): O(n - i + log n); a block of revocations or of
//     devices whose ids sort after every other costs O(k log n);
//   - a proof at the committed height is O(log n) from the kept nodes;
//   - a proof at an older height rebuilds that height's tree from the cached leaf hashes (no
//     record is re-encoded or rehashed) in O(n); the last such tree is kept (a height's
//     registry never changes once committed), so the proofs of a bundle run, all at one
//     height, rebuild it once.
type registry struct {
	order []string    // device ids, sorted; order[i] is leaf i of tree
	tree  merkle.Tree // at the committed height

	mu   sync.Mutex // guards old, which queries under the app's read lock fill
	old  *oldRegistry
	root merkle.Hash // RegistryRoot at the committed height
}

// oldRegistry is the registry at a height before the committed one.
type oldRegistry struct {
	height uint64
	order  []string
	tree   merkle.Tree
}

func newRegistry() *registry {
	return &registry{root: merkle.RegistryRoot(0, merkle.EmptyRoot())}
}

// regChange is a block's effect on the registry: from index from on, the order and leaves are
// replaced by order and leaves.
type regChange struct {
	from   int
	order  []string
	leaves []merkle.Hash
	root   merkle.Hash // RegistryRoot after the change
}

// leafAt is the committed leaf of order[i].
func (r *registry) leafAt(i int) merkle.Hash {
	l, _ := r.tree.Leaf(uint64(i)) // i < len(r.order) == r.tree.Size()
	return l
}

// next computes the registry after a block that sets the leaves of changed (by device id),
// without changing r.
func (r *registry) next(changed map[string]merkle.Hash) (regChange, error) {
	if len(changed) == 0 {
		return regChange{from: len(r.order), root: r.root}, nil
	}
	ids := make([]string, 0, len(changed))
	for d := range changed {
		ids = append(ids, d)
	}
	slices.Sort(ids)
	from := sort.SearchStrings(r.order, ids[0])
	c := regChange{from: from}
	for i, j := from, 0; i < len(r.order) || j < len(ids); {
		switch {
		case j < len(ids) && (i == len(r.order) || ids[j] < r.order[i]): // a new device
			c.order, c.leaves = append(c.order, ids[j]), append(c.leaves, changed[ids[j]])
			j++
		case j < len(ids) && ids[j] == r.order[i]: // a changed record
			c.order, c.leaves = append(c.order, ids[j]), append(c.leaves, changed[ids[j]])
			i, j = i+1, j+1
		default:
			c.order, c.leaves = append(c.order, r.order[i]), append(c.leaves, r.leafAt(i))
			i++
		}
	}
	tree, err := r.tree.RootWith(uint64(from), c.leaves)
	if err != nil {
		return regChange{}, err
	}
	c.root = merkle.RegistryRoot(uint64(from+len(c.order)), tree)
	return c, nil
}

// apply makes c the committed registry.
func (r *registry) apply(c regChange) error {
	if len(c.order) == 0 {
		return nil
	}
	if err := r.tree.Replace(uint64(c.from), c.leaves); err != nil {
		return err
	}
	r.order = append(r.order[:c.from], c.order...)
	r.root = c.root
	return nil
}

// proof is a record's place in the registry at a height.
type regProof struct {
	index, size uint64        // v1
	path        []merkle.Hash // v1
	root        merkle.Hash
	smt         []byte // v2: the encoded sparse Merkle tree proof
}

// prove returns dev's registry proof at height, committed is the committed height and
// leafAt(dev, height) the device's leaf then (false: none).
func (r *registry) prove(dev string, height, committed uint64, leafAt func(dev string, height uint64) (merkle.Hash, bool, error)) (regProof, error) {
	order, tree := r.order, &r.tree
	if height != committed {
		old, err := r.at(height, leafAt)
		if err != nil {
			return regProof{}, err
		}
		order, tree = old.order, &old.tree
	}
	i, ok := slices.BinarySearch(order, dev)
	if !ok {
		return regProof{}, fmt.Errorf("ledger: device %s is not in the registry at height %d", dev, height)
	}
	size := tree.Size()
	path, err := tree.InclusionProof(uint64(i), size)
	if err != nil {
		return regProof{}, err
	}
	root, err := tree.RootAt(size)
	if err != nil {
		return regProof{}, err
	}
	return regProof{index: uint64(i), size: size, path: nonNil(path), root: merkle.RegistryRoot(size, root)}, nil
}

// rootAt is RegistryRoot at height (committed: the committed height).
func (r *registry) rootAt(height, committed uint64, leafAt func(dev string, height uint64) (merkle.Hash, bool, error)) (merkle.Hash, error) {
	if height == committed {
		return r.root, nil
	}
	old, err := r.at(height, leafAt)
	if err != nil {
		return merkle.Hash{}, err
	}
	size := old.tree.Size()
	if size == 0 {
		return merkle.RegistryRoot(0, merkle.EmptyRoot()), nil
	}
	return merkle.RegistryRoot(size, old.tree.Root()), nil
}

// at returns the registry at an older height, from the last one built or built now.
func (r *registry) at(height uint64, leafAt func(dev string, height uint64) (merkle.Hash, bool, error)) (*oldRegistry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.old != nil && r.old.height == height {
		return r.old, nil
	}
	old := &oldRegistry{height: height}
	for _, d := range r.order {
		l, ok, err := leafAt(d, height)
		if err != nil {
			return nil, err
		}
		if ok {
			old.order = append(old.order, d)
			old.tree.Append(l)
		}
	}
	r.old = old
	return old, nil
}
