package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	dbm "github.com/cometbft/cometbft-db"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
)

// kind is one kind of keyed ledger state under the v2 state root besides the registry: a
// record per key, versioned by height, in a sparse Merkle tree whose root is the state root's
// sub-root of the kind's name from the first block that changes such a record (schemas/ledger.md
// "rule records", "owner records", "consent records").
type kind int

const (
	kindRules kind = iota
	kindOwners
	kindConsent
	numKinds
)

// keyedLayout is where a kind keeps its state in the database.
type keyedLayout struct {
	name    string // the sub-root's name (merkle.SubRoot*)
	pref    []byte // <pref><key> 0x00 <height BE> = the record from that height on
	latest  []byte // <latest><key> = height BE || the latest record
	tree    []byte // the sparse Merkle tree (anchor/smt)
	fromKey []byte // height BE of the first block with a change of this kind
}

// layoutOf is a kind's layout; a kind's key is a text without 0x00 (a rule id, a device id,
// or a device id and an audience joined by 0x00, of which the audience has none).
func layoutOf(k kind) keyedLayout {
	switch k {
	case kindRules:
		return keyedLayout{merkle.SubRootRules, []byte("u/"), []byte("U/"), []byte("S/"), []byte("meta/rules_from")}
	case kindOwners:
		return keyedLayout{merkle.SubRootOwners, []byte("o/"), []byte("O/"), []byte("P/"), []byte("meta/owners_from")}
	default:
		return keyedLayout{merkle.SubRootConsent, []byte("k/"), []byte("K/"), []byte("Q/"), []byte("meta/consent_from")}
	}
}

// keyed is a kind's committed state.
type keyed struct {
	keyedLayout
	db   dbm.DB
	tree *smt.Tree
	// from is the first block with a change of this kind, from which the state root commits
	// the kind's sub-root (0: none yet).
	from uint64
}

// kept is a record of a keyed kind as of a height, with its leaf in the kind's tree.
type kept struct {
	height uint64
	record []byte
	leaf   merkle.Hash
}

func newKept(height uint64, record []byte) kept {
	return kept{height: height, record: record, leaf: merkle.LeafHash(record)}
}

func openKeyed(db dbm.DB, k kind) (*keyed, error) {
	l := layoutOf(k)
	t, err := smt.Open(smt.DBStore{DB: db}, smt.DefaultConfig(l.tree))
	if err != nil {
		return nil, fmt.Errorf("ledger db: %s: %w", l.name, err)
	}
	out := &keyed{keyedLayout: l, db: db, tree: t}
	b, err := db.Get(l.fromKey)
	if err != nil {
		return nil, err
	}
	switch len(b) {
	case 0:
	case 8:
		out.from = binary.BigEndian.Uint64(b)
	default:
		return nil, fmt.Errorf("ledger db: %s is %d bytes", l.fromKey, len(b))
	}
	return out, nil
}

func (k *keyed) key(key string, height uint64) []byte {
	return dbKey(k.pref, []byte(key), []byte{0}, u64(height))
}

// latestOf returns key's committed record.
func (k *keyed) latestOf(key string) (kept, bool, error) {
	v, err := k.db.Get(dbKey(k.latest, []byte(key)))
	if err != nil || v == nil {
		return kept{}, false, err
	}
	if len(v) < 8 {
		return kept{}, false, fmt.Errorf("ledger db: latest %s record of %q is truncated", k.name, key)
	}
	return newKept(binary.BigEndian.Uint64(v), v[8:]), true, nil
}

// at returns key's record as of height (committed is the state's height).
func (k *keyed) at(key string, height, committed uint64) (kept, bool, error) {
	if height >= committed {
		return k.latestOf(key)
	}
	it, err := k.db.ReverseIterator(k.key(key, 0), k.key(key, height+1))
	if err != nil {
		return kept{}, false, err
	}
	defer it.Close()
	if !it.Valid() {
		return kept{}, false, it.Error()
	}
	h := it.Key()[len(it.Key())-8:]
	return newKept(binary.BigEndian.Uint64(h), bytes.Clone(it.Value())), true, nil
}

// keys returns every key ever given a record that starts with prefix, sorted.
func (k *keyed) keys(prefix string) ([]string, error) {
	start := dbKey(k.latest, []byte(prefix))
	it, err := k.db.Iterator(start, prefixEnd(start))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []string
	for ; it.Valid(); it.Next() {
		out = append(out, string(it.Key()[len(k.latest):]))
	}
	return out, it.Error()
}

// has reports whether the state root at height commits this kind's sub-root.
func (k *keyed) has(height uint64) bool { return k.from > 0 && height >= k.from }

// root is the kind's sub-root at height (only for heights where has).
func (k *keyed) root(height uint64) (merkle.Hash, error) {
	r, err := k.tree.Root(height)
	return merkle.Hash(r), err
}

// commit gives the tree its version for height with the block's changes, from the first
// block with a change on (so that every height from then on has a root), and returns the
// sub-root (nil while the kind has none) and the from height after the block. A block replayed
// after a crash between FinalizeBlock and Commit finds its version.
func (k *keyed) commit(ctx context.Context, changes map[string]kept, height uint64) (*merkle.Hash, uint64, error) {
	from := k.from
	if from == 0 && len(changes) > 0 {
		from = height
	}
	if from == 0 {
		return nil, 0, nil
	}
	var root smt.Hash
	var err error
	if k.tree.Latest() >= height {
		root, err = k.tree.Root(height)
	} else {
		cs := make([]smt.Change, 0, len(changes))
		for key, v := range changes {
			cs = append(cs, smt.Change{Key: smt.KeyOf(key), Value: smt.Hash(v.leaf)})
		}
		root, err = k.tree.Commit(ctx, height, cs)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("ledger: %s at %d: %w", k.name, height, err)
	}
	h := merkle.Hash(root)
	return &h, from, nil
}

// persist writes the block's changes and the from height after it.
func (k *keyed) persist(set func(key, value []byte), changes map[string]kept, height, from uint64) {
	for key, v := range changes {
		set(k.key(key, height), v.record)
		set(dbKey(k.latest, []byte(key)), append(u64(height), v.record...))
	}
	if from != k.from {
		set(k.fromKey, u64(from))
	}
}

// prove is key's record's membership proof (anchor/smt encoding) in the tree at height, and
// the tree's root.
func (k *keyed) prove(key string, v kept, height uint64) ([]byte, merkle.Hash, error) {
	root, err := k.tree.Root(height)
	if err != nil {
		return nil, merkle.Hash{}, err
	}
	p, val, err := k.tree.Prove(height, smt.KeyOf(key))
	if err != nil {
		return nil, merkle.Hash{}, err
	}
	if !bytes.Equal(val, v.leaf[:]) {
		return nil, merkle.Hash{}, fmt.Errorf("ledger db: %s %q at %d: the tree holds leaf %x, the record hashes to %s", k.name, key, height, val, v.leaf)
	}
	return p.Encode(), merkle.Hash(root), nil
}
