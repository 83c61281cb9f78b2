package smt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
)

// Change sets key to Value, or removes key when Delete is set. Removing an absent key is
// not an error.
type Change struct {
	Key    Hash
	Value  Hash
	Delete bool
}

// Tree is a versioned sparse Merkle tree in a Store. Its methods are safe for concurrent
// use; Commits are serialised, and Root and Prove read only immutable nodes.
type Tree struct {
	store  Store
	prefix []byte
	cache  *nodeCache

	mu     sync.Mutex // serialises Commit and guards latest
	latest uint64
}

// DefaultCacheNodes is the default Config.CacheNodes: with two generations, at most about
// 2 * 65536 * 170 bytes (about 22 MB) of nodes in memory.
const DefaultCacheNodes = 1 << 16

// Config configures a Tree.
type Config struct {
	// Prefix is prepended to every storage key, so the tree can share a database with other
	// data; no other writer may use keys that start with it.
	Prefix []byte
	// CacheNodes bounds the in-memory node cache (two generations of at most CacheNodes
	// nodes each); 0 disables it. The store remains the only place the tree is kept.
	CacheNodes int
}

// DefaultConfig returns a Config with DefaultCacheNodes and the given prefix.
func DefaultConfig(prefix []byte) Config {
	return Config{Prefix: prefix, CacheNodes: DefaultCacheNodes}
}

// Open opens the tree kept in store under cfg.Prefix (an empty tree if nothing is there yet).
func Open(store Store, cfg Config) (*Tree, error) {
	if cfg.CacheNodes < 0 {
		return nil, fmt.Errorf("smt: Config.CacheNodes is %d, must be 0 or more", cfg.CacheNodes)
	}
	t := &Tree{store: store, prefix: slices.Clone(cfg.Prefix), cache: newNodeCache(cfg.CacheNodes)}
	v, err := store.Get(t.latestKey())
	if err != nil {
		return nil, fmt.Errorf("smt: read latest version: %w", err)
	}
	switch len(v) {
	case 0:
	case 8:
		t.latest = binary.BigEndian.Uint64(v)
	default:
		return nil, fmt.Errorf("%w: latest version record is %d bytes", ErrCorrupt, len(v))
	}
	return t, nil
}

// Latest returns the latest committed version, 0 if none.
func (t *Tree) Latest() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.latest
}

// Root returns the root at version. Version 0 is the empty tree; any other version must
// have been committed (ErrUnknownVersion otherwise).
func (t *Tree) Root(version uint64) (Hash, error) {
	if version == 0 {
		return Empty, nil
	}
	v, err := t.store.Get(t.rootKey(version))
	if err != nil {
		return Empty, fmt.Errorf("smt: read root of version %d: %w", version, err)
	}
	switch len(v) {
	case 0:
		return Empty, fmt.Errorf("%w: %d", ErrUnknownVersion, version)
	case 32:
		return Hash(v), nil
	default:
		return Empty, fmt.Errorf("%w: root record of version %d is %d bytes", ErrCorrupt, version, len(v))
	}
}

// Commit applies changes to the latest version and records the result as version, which
// must be above Latest (ErrVersionOrder otherwise); versions may be skipped, and Root and
// Prove then answer ErrUnknownVersion for the skipped ones. When a key appears several times
// in changes the last entry wins. It writes only new nodes and the root record, in one batch,
// and returns the new root. On error nothing is recorded.
func (t *Tree) Commit(ctx context.Context, version uint64, changes []Change) (Hash, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if version <= t.latest {
		return Empty, fmt.Errorf("%w: %d, latest %d", ErrVersionOrder, version, t.latest)
	}
	base, err := t.Root(t.latest)
	if err != nil {
		return Empty, err
	}
	u := &update{t: t, ctx: ctx, batch: t.store.NewBatch()}
	defer u.batch.Close()
	root, _, err := u.apply(base, kindUnknown, 0, normalise(changes))
	if err != nil {
		return Empty, err
	}
	if err := u.batch.Set(t.rootKey(version), root[:]); err != nil {
		return Empty, fmt.Errorf("smt: write root of version %d: %w", version, err)
	}
	if err := u.batch.Set(t.latestKey(), binary.BigEndian.AppendUint64(nil, version)); err != nil {
		return Empty, fmt.Errorf("smt: write latest version: %w", err)
	}
	if err := u.batch.Write(); err != nil {
		return Empty, fmt.Errorf("smt: write version %d: %w", version, err)
	}
	for _, w := range u.written {
		t.cache.add(w.h, w.n)
	}
	t.latest = version
	return root, nil
}

// Prove returns a proof of key's presence or absence at version, and the key's value
// (nil when absent). Check it with Verify against Root(version).
func (t *Tree) Prove(version uint64, key Hash) (Proof, []byte, error) {
	h, err := t.Root(version)
	if err != nil {
		return Proof{}, nil, err
	}
	var p Proof
	for depth := 0; ; depth++ {
		if h == Empty {
			p.Terminal = TerminalEmpty
			return p, nil, nil
		}
		n, err := t.node(h)
		if err != nil {
			return Proof{}, nil, err
		}
		if n.leaf {
			if n.a == key {
				p.Terminal = TerminalLeaf
				return p, slices.Clone(n.b[:]), nil
			}
			p.Terminal, p.OtherKey, p.OtherValue = TerminalOther, n.a, n.b
			return p, nil, nil
		}
		if depth >= MaxDepth {
			return Proof{}, nil, fmt.Errorf("%w: interior node %x below depth %d", ErrCorrupt, h, MaxDepth)
		}
		if bit(key, depth) == 0 {
			p.Siblings = append(p.Siblings, n.b)
			h = n.a
		} else {
			p.Siblings = append(p.Siblings, n.a)
			h = n.b
		}
	}
}

// Get returns key's value at version, or nil when absent.
func (t *Tree) Get(version uint64, key Hash) ([]byte, error) {
	_, v, err := t.Prove(version, key)
	return v, err
}

// node is a stored node: a leaf (a = key, b = value) or an interior node (a = left, b = right).
type node struct {
	leaf bool
	a, b Hash
}

func (t *Tree) node(h Hash) (node, error) {
	if n, ok := t.cache.get(h); ok {
		return n, nil
	}
	v, err := t.store.Get(t.nodeKey(h))
	if err != nil {
		return node{}, fmt.Errorf("smt: read node %x: %w", h, err)
	}
	if len(v) != 65 || (v[0] != tagLeaf && v[0] != tagInterior) {
		if len(v) == 0 {
			return node{}, fmt.Errorf("%w: node %x missing", ErrCorrupt, h)
		}
		return node{}, fmt.Errorf("%w: node %x does not decode", ErrCorrupt, h)
	}
	n := node{leaf: v[0] == tagLeaf, a: Hash(v[1:33]), b: Hash(v[33:])}
	t.cache.add(h, n)
	return n, nil
}

func (t *Tree) key(kind byte, rest []byte) []byte {
	k := make([]byte, 0, len(t.prefix)+1+len(rest))
	k = append(k, t.prefix...)
	k = append(k, kind)
	return append(k, rest...)
}

func (t *Tree) nodeKey(h Hash) []byte { return t.key('n', h[:]) }
func (t *Tree) rootKey(v uint64) []byte {
	return t.key('r', binary.BigEndian.AppendUint64(nil, v))
}
func (t *Tree) latestKey() []byte { return t.key('l', nil) }

// normalise sorts changes by key and keeps the last entry for each key.
func normalise(changes []Change) []Change {
	cs := slices.Clone(changes)
	slices.SortStableFunc(cs, func(a, b Change) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	out := cs[:0]
	for i, c := range cs {
		if i+1 < len(cs) && cs[i+1].Key == c.Key {
			continue
		}
		out = append(out, c)
	}
	return out
}

type kind byte

const (
	kindUnknown kind = iota
	kindEmpty
	kindLeaf
	kindInterior
)

// update is one Commit's state: the batch new nodes go to, and those nodes, cached once
// the batch is written.
type update struct {
	t       *Tree
	ctx     context.Context
	batch   Batch
	written []written
}

type written struct {
	h Hash
	n node
}

// apply applies changes (sorted, one per key, all under the subtree at depth whose hash is
// h) and returns the new subtree's hash and kind.
func (u *update) apply(h Hash, k kind, depth int, changes []Change) (Hash, kind, error) {
	if len(changes) == 0 {
		return h, k, nil
	}
	if depth < 8 {
		if err := u.ctx.Err(); err != nil {
			return Empty, kindUnknown, fmt.Errorf("smt: commit: %w", err)
		}
	}
	if h == Empty {
		return u.build(depth, changes)
	}
	n, err := u.t.node(h)
	if err != nil {
		return Empty, kindUnknown, err
	}
	if n.leaf {
		// A leaf is the subtree holding one key: rebuild from that key plus the changes.
		i, found := slices.BinarySearchFunc(changes, n.a, func(c Change, key Hash) int {
			return bytes.Compare(c.Key[:], key[:])
		})
		if !found {
			changes = slices.Insert(slices.Clone(changes), i, Change{Key: n.a, Value: n.b})
		}
		return u.build(depth, changes)
	}
	split := splitAt(changes, depth)
	l, lk, err := u.apply(n.a, kindUnknown, depth+1, changes[:split])
	if err != nil {
		return Empty, kindUnknown, err
	}
	r, rk, err := u.apply(n.b, kindUnknown, depth+1, changes[split:])
	if err != nil {
		return Empty, kindUnknown, err
	}
	return u.join(l, lk, r, rk)
}

// build returns the subtree at depth holding exactly the non-deleted changes.
func (u *update) build(depth int, changes []Change) (Hash, kind, error) {
	live := 0
	var only Change
	for _, c := range changes {
		if !c.Delete {
			live++
			only = c
		}
	}
	switch {
	case live == 0:
		return Empty, kindEmpty, nil
	case live == 1:
		return u.leaf(only.Key, only.Value)
	case depth >= MaxDepth:
		return Empty, kindUnknown, fmt.Errorf("smt: %d distinct keys at depth %d", live, depth)
	}
	split := splitAt(changes, depth)
	l, lk, err := u.build(depth+1, changes[:split])
	if err != nil {
		return Empty, kindUnknown, err
	}
	r, rk, err := u.build(depth+1, changes[split:])
	if err != nil {
		return Empty, kindUnknown, err
	}
	return u.join(l, lk, r, rk)
}

// join returns the subtree whose children are l and r: Empty when both are, the leaf
// itself when one is a leaf and the other empty, an interior node otherwise.
func (u *update) join(l Hash, lk kind, r Hash, rk kind) (Hash, kind, error) {
	switch {
	case l == Empty && r == Empty:
		return Empty, kindEmpty, nil
	case l == Empty || r == Empty:
		c, ck := r, rk
		if r == Empty {
			c, ck = l, lk
		}
		if ck == kindUnknown {
			n, err := u.t.node(c)
			if err != nil {
				return Empty, kindUnknown, err
			}
			ck = kindInterior
			if n.leaf {
				ck = kindLeaf
			}
		}
		if ck == kindLeaf {
			return c, kindLeaf, nil
		}
	}
	h := InteriorHash(l, r)
	if err := u.put(h, tagInterior, l, r); err != nil {
		return Empty, kindUnknown, err
	}
	return h, kindInterior, nil
}

func (u *update) leaf(key, value Hash) (Hash, kind, error) {
	h := LeafHash(key, value)
	if err := u.put(h, tagLeaf, key, value); err != nil {
		return Empty, kindUnknown, err
	}
	return h, kindLeaf, nil
}

func (u *update) put(h Hash, tag byte, a, b Hash) error {
	v := make([]byte, 65)
	v[0] = tag
	copy(v[1:33], a[:])
	copy(v[33:], b[:])
	if err := u.batch.Set(u.t.nodeKey(h), v); err != nil {
		return fmt.Errorf("smt: write node %x: %w", h, err)
	}
	u.written = append(u.written, written{h, node{leaf: tag == tagLeaf, a: a, b: b}})
	return nil
}

// splitAt returns the index of the first change whose key has bit depth set; changes are
// sorted, so those before it go left.
func splitAt(changes []Change, depth int) int {
	i, _ := slices.BinarySearchFunc(changes, depth, func(c Change, d int) int {
		if bit(c.Key, d) == 0 {
			return -1
		}
		return 0
	})
	return i
}
