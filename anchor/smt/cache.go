package smt

import (
	"encoding/binary"
	"sync"
)

// nodeCache keeps recently read and written nodes in two generations of at most size
// entries each: when the current one fills, it becomes the previous one and the old previous
// one is dropped. Hits in the previous generation move to the current one, so the nodes near
// the root, touched by every commit and proof, stay. Memory is bounded by 2*size nodes.
// A hash names a node's content: copies stored by different versions differ only in the
// versions they name for their children, all of which are stored, so any copy serves.
type nodeCache struct {
	mu        sync.Mutex
	size      int
	cur, prev map[Hash]node
}

func newNodeCache(size int) *nodeCache {
	return &nodeCache{size: size, cur: make(map[Hash]node)}
}

func (c *nodeCache) get(h Hash) (node, bool) {
	if c.size == 0 {
		return node{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.cur[h]; ok {
		return n, true
	}
	n, ok := c.prev[h]
	if ok {
		c.addLocked(h, n)
	}
	return n, ok
}

func (c *nodeCache) add(h Hash, n node) {
	if c.size == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addLocked(h, n)
}

func (c *nodeCache) addLocked(h Hash, n node) {
	if len(c.cur) >= c.size {
		c.prev, c.cur = c.cur, make(map[Hash]node, c.size)
	}
	c.cur[h] = n
}

// topCache keeps the nodes of the latest version at depths below a fixed number of levels,
// one slot per position (depth and path), so its memory is bounded by 2^levels slots
// whatever the tree's size. A slot answers only for the hash it holds: a node a commit
// replaces is simply overwritten, and a proof at an old version misses there and reads the
// store. Each level's slots are allocated when first used.
type topCache struct {
	mu     sync.RWMutex
	levels [][]topSlot // levels[d] has 2^d slots, indexed by the first d bits of the path
}

type topSlot struct {
	h Hash
	n node
}

func newTopCache(levels int) *topCache {
	return &topCache{levels: make([][]topSlot, levels)}
}

// index returns the slot of the position at depth (below MaxTopLevels) under path.
func index(depth int, path Hash) uint32 {
	return binary.BigEndian.Uint32(path[:4]) >> (32 - uint(depth))
}

func (c *topCache) get(h Hash, depth int, path Hash) (node, bool) {
	if depth >= len(c.levels) || h == Empty {
		return node{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	l := c.levels[depth]
	if l == nil {
		return node{}, false
	}
	s := &l[index(depth, path)]
	if s.h != h {
		return node{}, false
	}
	return s.n, true
}

// put records n, whose hash is h, as the latest version's node at depth under path, and
// reports whether depth is one the cache keeps.
func (c *topCache) put(depth int, path, h Hash, n node) bool {
	if depth >= len(c.levels) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.levels[depth] == nil {
		c.levels[depth] = make([]topSlot, 1<<uint(depth))
	}
	c.levels[depth][index(depth, path)] = topSlot{h: h, n: n}
	return true
}
