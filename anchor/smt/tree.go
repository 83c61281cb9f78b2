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
	top    *topCache
	cache  *nodeCache

	mu     sync.Mutex // serialises Commit and guards latest
	latest uint64
}

const (
	// DefaultCacheNodes is the default Config.CacheNodes: with two generations, at most
	// about 2 * 32768 * 170 bytes (about 11 MB) of recently used nodes in memory.
	DefaultCacheNodes = 1 << 15
	// DefaultTopLevels is the default Config.TopLevels: the top 19 levels of the latest
	// version, at most 2^19 slots of 120 bytes (63 MB), whatever the tree's size. With a
	// million keys (paths about 21 long) a commit then reads about 3 nodes per key from the
	// store instead of about 21.
	DefaultTopLevels = 19
	// MaxTopLevels is the greatest Config.TopLevels.
	MaxTopLevels = 24
)

// Config configures a Tree.
type Config struct {
	// Prefix is prepended to every storage key, so the tree can share a database with other
	// data; no other writer may use keys that start with it.
	Prefix []byte
	// CacheNodes bounds the cache of recently used nodes (two generations of at most
	// CacheNodes nodes each); 0 disables it.
	CacheNodes int
	// TopLevels is how many levels of the latest version (depths 0 to TopLevels-1) are kept
	// in memory, one slot per position: at most 2^TopLevels nodes, filled as commits read and
	// write them. Every commit reads the top of the tree, so this is what spares the store
	// most reads. 0 disables it; at most MaxTopLevels.
	//
	// The store remains the only place the tree is kept: both caches hold copies.
	TopLevels int
}

// DefaultConfig returns a Config with DefaultCacheNodes, DefaultTopLevels and the given
// prefix.
func DefaultConfig(prefix []byte) Config {
	return Config{Prefix: prefix, CacheNodes: DefaultCacheNodes, TopLevels: DefaultTopLevels}
}

// Open opens the tree kept in store under cfg.Prefix (an empty tree if nothing is there yet).
func Open(store Store, cfg Config) (*Tree, error) {
	if cfg.CacheNodes < 0 {
		return nil, fmt.Errorf("smt: Config.CacheNodes is %d, must be 0 or more", cfg.CacheNodes)
	}
	if cfg.TopLevels < 0 || cfg.TopLevels > MaxTopLevels {
		return nil, fmt.Errorf("smt: Config.TopLevels is %d, must be 0 to %d", cfg.TopLevels, MaxTopLevels)
	}
	t := &Tree{
		store:  store,
		prefix: slices.Clone(cfg.Prefix),
		top:    newTopCache(cfg.TopLevels),
		cache:  newNodeCache(cfg.CacheNodes),
	}
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
	r, err := t.rootRef(version)
	return r.hash, err
}

// ref locates a stored subtree: its hash and the version that stored its top node (0 for
// Empty). With the node's depth and path it gives the node's storage key.
type ref struct {
	hash    Hash
	version uint64
}

func (t *Tree) rootRef(version uint64) (ref, error) {
	if version == 0 {
		return ref{}, nil
	}
	v, err := t.store.Get(t.rootKey(version))
	if err != nil {
		return ref{}, fmt.Errorf("smt: read root of version %d: %w", version, err)
	}
	switch len(v) {
	case 0:
		return ref{}, fmt.Errorf("%w: %d", ErrUnknownVersion, version)
	case 40:
		r := ref{hash: Hash(v[:32]), version: binary.BigEndian.Uint64(v[32:])}
		if (r.hash == Empty) != (r.version == 0) {
			return ref{}, fmt.Errorf("%w: root record of version %d names node version %d", ErrCorrupt, version, r.version)
		}
		return r, nil
	default:
		return ref{}, fmt.Errorf("%w: root record of version %d is %d bytes", ErrCorrupt, version, len(v))
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
	base, err := t.rootRef(t.latest)
	if err != nil {
		return Empty, err
	}
	u := &update{t: t, ctx: ctx, version: version, batch: t.store.NewBatch()}
	defer u.batch.Close()
	root, err := u.apply(sub{hash: base.hash, version: base.version}, 0, Empty, normalise(changes))
	if err != nil {
		return Empty, err
	}
	if err := u.place(&root, 0, Empty); err != nil {
		return Empty, err
	}
	record := binary.BigEndian.AppendUint64(slices.Clone(root.hash[:]), root.version)
	if err := u.batch.Set(t.rootKey(version), record); err != nil {
		return Empty, fmt.Errorf("smt: write root of version %d: %w", version, err)
	}
	if err := u.batch.Set(t.latestKey(), binary.BigEndian.AppendUint64(nil, version)); err != nil {
		return Empty, fmt.Errorf("smt: write latest version: %w", err)
	}
	if err := u.batch.Write(); err != nil {
		return Empty, fmt.Errorf("smt: write version %d: %w", version, err)
	}
	for _, w := range u.written {
		if !t.top.put(w.depth, w.path, w.h, w.n) {
			t.cache.add(w.h, w.n)
		}
	}
	t.latest = version
	return root.hash, nil
}

// Prove returns a proof of key's presence or absence at version, and the key's value
// (nil when absent). Check it with Verify against Root(version).
func (t *Tree) Prove(version uint64, key Hash) (Proof, []byte, error) {
	at, err := t.rootRef(version)
	if err != nil {
		return Proof{}, nil, err
	}
	var p Proof
	for depth := 0; ; depth++ {
		if at.hash == Empty {
			p.Terminal = TerminalEmpty
			return p, nil, nil
		}
		n, err := t.node(at, depth, key, false)
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
			return Proof{}, nil, fmt.Errorf("%w: interior node %x below depth %d", ErrCorrupt, at.hash, MaxDepth)
		}
		if bit(key, depth) == 0 {
			p.Siblings = append(p.Siblings, n.b)
			at = ref{hash: n.a, version: n.av}
		} else {
			p.Siblings = append(p.Siblings, n.a)
			at = ref{hash: n.b, version: n.bv}
		}
	}
}

// Get returns key's value at version, or nil when absent.
func (t *Tree) Get(version uint64, key Hash) ([]byte, error) {
	_, v, err := t.Prove(version, key)
	return v, err
}

// node is a stored node: a leaf (a = key, b = value) or an interior node (a = left,
// b = right, av and bv the versions that stored them, 0 for Empty).
type node struct {
	leaf   bool
	a, b   Hash
	av, bv uint64
}

// node returns the node at, stored at depth under path (the first depth bits of path; the
// rest are ignored). latest says the node belongs to the latest version, so it may go into
// the top-levels cache.
func (t *Tree) node(at ref, depth int, path Hash, latest bool) (node, error) {
	if n, ok := t.top.get(at.hash, depth, path); ok {
		return n, nil
	}
	n, ok := t.cache.get(at.hash)
	if !ok {
		v, err := t.store.Get(t.nodeKey(at.version, depth, path))
		if err != nil {
			return node{}, fmt.Errorf("smt: read node %x: %w", at.hash, err)
		}
		if n, err = decodeNode(at.hash, v); err != nil {
			return node{}, err
		}
	}
	if !latest || !t.top.put(depth, path, at.hash, n) {
		if !ok {
			t.cache.add(at.hash, n)
		}
	}
	return n, nil
}

// decodeNode decodes the stored node v and checks that its hash is h.
func decodeNode(h Hash, v []byte) (node, error) {
	var n node
	var got Hash
	switch {
	case len(v) == 0:
		return node{}, fmt.Errorf("%w: node %x missing", ErrCorrupt, h)
	case len(v) == leafSize && v[0] == tagLeaf:
		n = node{leaf: true, a: Hash(v[1:33]), b: Hash(v[33:65])}
		got = LeafHash(n.a, n.b)
	case len(v) == interiorSize && v[0] == tagInterior:
		n = node{a: Hash(v[1:33]), b: Hash(v[33:65]),
			av: binary.BigEndian.Uint64(v[65:73]), bv: binary.BigEndian.Uint64(v[73:81])}
		if (n.a == Empty) != (n.av == 0) || (n.b == Empty) != (n.bv == 0) {
			return node{}, fmt.Errorf("%w: node %x has a child without a version", ErrCorrupt, h)
		}
		got = InteriorHash(n.a, n.b)
	default:
		return node{}, fmt.Errorf("%w: node %x does not decode", ErrCorrupt, h)
	}
	if got != h {
		return node{}, fmt.Errorf("%w: node stored for %x hashes to %x", ErrCorrupt, h, got)
	}
	return n, nil
}

// Sizes of stored node values (see the package doc).
const (
	leafSize     = 1 + 32 + 32
	interiorSize = 1 + 32 + 32 + 8 + 8
)

func (t *Tree) key(kind byte, rest []byte) []byte {
	k := make([]byte, 0, len(t.prefix)+1+len(rest))
	k = append(k, t.prefix...)
	k = append(k, kind)
	return append(k, rest...)
}

func (t *Tree) nodeKey(version uint64, depth int, path Hash) []byte {
	return appendNodeKey(make([]byte, 0, t.nodeKeySize(depth)), t.prefix, version, depth, path)
}
func (t *Tree) rootKey(v uint64) []byte {
	return t.key('r', binary.BigEndian.AppendUint64(nil, v))
}
func (t *Tree) latestKey() []byte { return t.key('v', nil) }

func (t *Tree) nodeKeySize(depth int) int { return len(t.prefix) + 1 + 8 + (depth+7)/8 + 2 }

// appendNodeKey appends prefix || 'n' || uint64be(version) || the first depth bits of path
// (ceil(depth/8) bytes, unused low bits 0) || uint16be(depth).
func appendNodeKey(dst, prefix []byte, version uint64, depth int, path Hash) []byte {
	dst = append(dst, prefix...)
	dst = append(dst, 'n')
	dst = binary.BigEndian.AppendUint64(dst, version)
	dst = append(dst, path[:(depth+7)/8]...)
	if r := depth % 8; r != 0 {
		dst[len(dst)-1] &= 0xff << (8 - uint(r))
	}
	return binary.BigEndian.AppendUint16(dst, uint16(depth))
}

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

// sub is a subtree as a commit builds it: either stored (version set; kind possibly
// unknown) or a leaf not stored yet (version 0, key and value set), which is stored once
// its depth is final: a leaf moves up when its sibling subtree empties.
type sub struct {
	hash       Hash
	kind       kind
	version    uint64
	key, value Hash
}

// update is one Commit's state: the version it writes, the batch new nodes go to, and those
// nodes, cached once the batch is written.
type update struct {
	t       *Tree
	ctx     context.Context
	version uint64
	batch   Batch
	slab    []byte // storage for the keys and values handed to batch
	written []written
}

type written struct {
	depth int
	path  Hash
	h     Hash
	n     node
}

// apply applies changes (sorted, one per key, all under the subtree s at depth, whose
// path is the first depth bits of path, the rest 0) and returns the new subtree.
func (u *update) apply(s sub, depth int, path Hash, changes []Change) (sub, error) {
	if len(changes) == 0 {
		return s, nil
	}
	if depth < 8 {
		if err := u.ctx.Err(); err != nil {
			return sub{}, fmt.Errorf("smt: commit: %w", err)
		}
	}
	if s.hash == Empty {
		return u.build(depth, path, changes)
	}
	n, err := u.t.node(ref{hash: s.hash, version: s.version}, depth, path, true)
	if err != nil {
		return sub{}, err
	}
	var out sub
	if n.leaf {
		// A leaf is the subtree holding one key: rebuild from that key plus the changes.
		i, found := slices.BinarySearchFunc(changes, n.a, func(c Change, key Hash) int {
			return bytes.Compare(c.Key[:], key[:])
		})
		if !found {
			changes = slices.Insert(slices.Clone(changes), i, Change{Key: n.a, Value: n.b})
		}
		out, err = u.build(depth, path, changes)
	} else {
		if depth >= MaxDepth {
			return sub{}, fmt.Errorf("%w: interior node %x below depth %d", ErrCorrupt, s.hash, MaxDepth)
		}
		split := splitAt(changes, depth)
		var l, r sub
		if l, err = u.apply(sub{hash: n.a, version: n.av}, depth+1, path, changes[:split]); err != nil {
			return sub{}, err
		}
		if r, err = u.apply(sub{hash: n.b, version: n.bv}, depth+1, withBit(path, depth), changes[split:]); err != nil {
			return sub{}, err
		}
		out, err = u.join(depth, path, l, r)
	}
	if err == nil && out.hash == s.hash {
		return s, nil // unchanged: keep the stored copy
	}
	return out, err
}

// build returns the subtree at depth under path holding exactly the non-deleted changes.
func (u *update) build(depth int, path Hash, changes []Change) (sub, error) {
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
		return sub{kind: kindEmpty}, nil
	case live == 1:
		return sub{hash: LeafHash(only.Key, only.Value), kind: kindLeaf, key: only.Key, value: only.Value}, nil
	case depth >= MaxDepth:
		return sub{}, fmt.Errorf("smt: %d distinct keys at depth %d", live, depth)
	}
	split := splitAt(changes, depth)
	l, err := u.build(depth+1, path, changes[:split])
	if err != nil {
		return sub{}, err
	}
	r, err := u.build(depth+1, withBit(path, depth), changes[split:])
	if err != nil {
		return sub{}, err
	}
	return u.join(depth, path, l, r)
}

// join returns the subtree at depth under path whose children are l and r: Empty when both
// are, the leaf itself (to be stored at its new depth) when one is a leaf and the other
// empty, an interior node otherwise.
func (u *update) join(depth int, path Hash, l, r sub) (sub, error) {
	switch {
	case l.hash == Empty && r.hash == Empty:
		return sub{kind: kindEmpty}, nil
	case l.hash == Empty || r.hash == Empty:
		c, cpath := r, withBit(path, depth)
		if r.hash == Empty {
			c, cpath = l, path
		}
		if c.kind == kindUnknown {
			n, err := u.t.node(ref{hash: c.hash, version: c.version}, depth+1, cpath, true)
			if err != nil {
				return sub{}, err
			}
			c.kind = kindInterior
			if n.leaf {
				c.kind, c.key, c.value = kindLeaf, n.a, n.b
			}
		}
		if c.kind == kindLeaf {
			return sub{hash: c.hash, kind: kindLeaf, key: c.key, value: c.value}, nil
		}
	}
	if err := u.place(&l, depth+1, path); err != nil {
		return sub{}, err
	}
	if err := u.place(&r, depth+1, withBit(path, depth)); err != nil {
		return sub{}, err
	}
	h := InteriorHash(l.hash, r.hash)
	if err := u.put(depth, path, h, node{a: l.hash, b: r.hash, av: l.version, bv: r.version}); err != nil {
		return sub{}, err
	}
	return sub{hash: h, kind: kindInterior, version: u.version}, nil
}

// place stores s at depth under path if it is a leaf not stored yet.
func (u *update) place(s *sub, depth int, path Hash) error {
	if s.hash == Empty || s.version != 0 {
		return nil
	}
	if err := u.put(depth, path, s.hash, node{leaf: true, a: s.key, b: s.value}); err != nil {
		return err
	}
	s.version = u.version
	return nil
}

// slabSize is the size of the buffers a commit carves storage keys and values from, so
// that a commit allocates a few of them rather than two slices per node.
const slabSize = 64 << 10

func (u *update) alloc(n int) []byte {
	if cap(u.slab)-len(u.slab) < n {
		u.slab = make([]byte, 0, max(slabSize, n))
	}
	i := len(u.slab)
	u.slab = u.slab[:i+n]
	return u.slab[i : i : i+n]
}

func (u *update) put(depth int, path, h Hash, n node) error {
	k := appendNodeKey(u.alloc(u.t.nodeKeySize(depth)), u.t.prefix, u.version, depth, path)
	var v []byte
	if n.leaf {
		v = append(u.alloc(leafSize), tagLeaf)
		v = append(append(v, n.a[:]...), n.b[:]...)
	} else {
		v = append(u.alloc(interiorSize), tagInterior)
		v = append(append(v, n.a[:]...), n.b[:]...)
		v = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(v, n.av), n.bv)
	}
	if err := u.batch.Set(k, v); err != nil {
		return fmt.Errorf("smt: write node %x: %w", h, err)
	}
	u.written = append(u.written, written{depth: depth, path: path, h: h, n: n})
	return nil
}

// withBit returns path with bit i set.
func withBit(path Hash, i int) Hash {
	path[i/8] |= 1 << (7 - uint(i%8))
	return path
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
