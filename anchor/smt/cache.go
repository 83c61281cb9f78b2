package smt

import "sync"

// nodeCache keeps recently read and written nodes in two generations of at most size
// entries each: when the current one fills, it becomes the previous one and the old previous
// one is dropped. Hits in the previous generation move to the current one, so the nodes near
// the root, touched by every commit and proof, stay. Memory is bounded by 2*size nodes.
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
