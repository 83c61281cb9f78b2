// Package smt is a persistent, versioned sparse Merkle tree over 256-bit keys, kept in a
// key-value store (Store; DBStore adapts a cometbft-db DB). The ledger's device registry is
// meant to live in it: key = SHA-256(device id) (KeyOf), value = the 32-byte leaf hash of the
// device's record. A proof at any committed version costs O(log n) node reads and an update
// O(log n) node writes per changed key (expected, for uniformly distributed keys), fewer
// reads for the levels held in memory.
//
// # Hashes
//
// All hashes are SHA-256, domain-separated by a first byte:
//
//	leaf     = SHA-256(0x00 || key || value)     key and value 32 bytes each
//	interior = SHA-256(0x01 || left || right)
//	empty    = 32 zero bytes (Empty), the hash of every empty subtree at every depth
//
// The root of the empty tree is Empty.
//
// # Shape: one empty marker and shortcut leaves
//
// A subtree that holds exactly one key is not expanded down to depth 256: it is represented
// by that key's leaf hash, placed at the highest position where the key is alone (the
// "shortcut" of Diem's Jellyfish Merkle tree and of Libra-style compact SMTs). A subtree that
// holds nothing is Empty. An interior node therefore always has at least two keys below it,
// and the path to a key is as long as the prefix it shares with its nearest neighbour:
// about log2(n) + 1 for uniformly random keys, not 256. Because the leaf hash commits to the
// whole key, a leaf needs no depth of its own, moves up unchanged when its sibling subtree is
// deleted, and a proof carries only the siblings on that short path. A single empty marker
// (rather than a precomputed "empty subtree of height h" per depth) is what makes shortcut
// leaves cheap: an empty sibling costs one bit in a proof, and no node is ever stored for it.
//
// The tree is canonical: the same set of (key, value) pairs gives the same root whatever the
// order of insertions and deletions.
//
// # Versions and storage
//
// Commit(ctx, version, changes) applies a set of changes to the latest version and records
// the result as version; versions strictly increase. Nodes are immutable: a commit writes
// each node it creates once, under the version it commits and the node's position (depth,
// and the path from the root: the first depth bits of every key below it), and nothing is
// ever overwritten or deleted, so Root and Prove answer for every committed version. An
// interior node records, beside its children's hashes, the versions that stored them, so a
// subtree that a commit leaves unchanged is shared with the versions before, and reading a
// node takes one store lookup. A leaf that moves up (its sibling subtree emptied) is stored
// again at its new position. Because storage keys start with the version, the nodes of one
// commit are adjacent, with those of one key's path close together, and the keys a commit
// writes all sort after the ones written before: an LSM store such as goleveldb then flushes
// tables that barely overlap and compacts little (see LevelDBOptions). Every node read is
// checked against the hash its parent (or the root record) names; a mismatch is ErrCorrupt.
//
// Two fixed-size caches keep reads out of the store: the top Config.TopLevels levels of the
// latest version, one slot per position (every commit reads the top of the tree, and a
// commit of k keys reads most of the top log2(k) levels), and the recently used nodes
// (Config.CacheNodes). Neither grows with the tree; the store stays the only copy.
// Storage keys, under the prefix given to Open:
//
//	prefix || 'n' || uint64be(version) || path || uint16be(depth)
//	                               node stored by version at depth; path is the first depth
//	                               bits, in ceil(depth/8) bytes, unused low bits 0. Value:
//	                               leaf     0x00 || key || value
//	                               interior 0x01 || left || right ||
//	                                        uint64be(left's version) || uint64be(right's version)
//	                               (version 0 for an Empty child)
//	prefix || 'r' || uint64be(v)   root of version v: root hash || uint64be(version that
//	                               stored the root node), 0 for the empty tree
//	prefix || 'v'                  latest committed version, uint64be
//
// # Proofs
//
// Verify(root, key, value, proof) is a pure function. A proof (Proof, encoded by
// Proof.Encode) lists the siblings from the root down to where the key's path ends, and what
// it ends at: the key's own leaf (membership), Empty, or another key's leaf whose key shares
// the path (both non-membership). Encoding:
//
//	byte     terminal: 0 = empty, 1 = the key's leaf, 2 = another key's leaf
//	[64]byte other key || other value, only for terminal 2
//	uint16be n, the number of siblings (depth of the terminal), at most 256
//	[ceil(n/8)]byte bitmap, bit i (MSB first) set when sibling i is not Empty; unused bits 0
//	[32]byte per set bit, the non-empty siblings, from the root down
//
// Key bit i (0 = left, 1 = right) is bit 7-(i mod 8) of byte i/8 (MSB first).
package smt
