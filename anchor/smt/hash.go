package smt

import (
	"crypto/sha256"
)

// Hash is a SHA-256 digest: a key, a value, a node hash or a root.
type Hash [32]byte

// Empty is the hash of an empty subtree and the root of the empty tree.
var Empty Hash

const (
	tagLeaf     = 0x00
	tagInterior = 0x01
)

// KeyOf returns the tree key of a device: SHA-256(device id).
func KeyOf(deviceID string) Hash {
	return sha256.Sum256([]byte(deviceID))
}

// LeafHash returns SHA-256(0x00 || key || value).
func LeafHash(key, value Hash) Hash {
	var b [65]byte
	b[0] = tagLeaf
	copy(b[1:33], key[:])
	copy(b[33:], value[:])
	return sha256.Sum256(b[:])
}

// InteriorHash returns SHA-256(0x01 || left || right).
func InteriorHash(left, right Hash) Hash {
	var b [65]byte
	b[0] = tagInterior
	copy(b[1:33], left[:])
	copy(b[33:], right[:])
	return sha256.Sum256(b[:])
}

// bit returns bit i of k, MSB first: 0 means left, 1 right.
func bit(k Hash, i int) byte {
	return (k[i/8] >> (7 - uint(i%8))) & 1
}

// samePrefix reports whether a and b agree on their first n bits.
func samePrefix(a, b Hash, n int) bool {
	full := n / 8
	for i := 0; i < full; i++ {
		if a[i] != b[i] {
			return false
		}
	}
	if r := n % 8; r != 0 {
		mask := byte(0xff) << (8 - uint(r))
		return a[full]&mask == b[full]&mask
	}
	return true
}
