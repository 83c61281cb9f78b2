package merkle

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Size is the length of every hash in Anchorline: SHA-256.
const Size = sha256.Size

// Hash is a SHA-256 digest: a leaf, an interior node or a root.
type Hash [Size]byte

// ErrEmptyTree is returned where a tree over zero leaves is asked for; DESIGN 2.2 forbids
// empty batches and anchors.
var ErrEmptyTree = errors.New("merkle: empty tree")

// hasher is the RFC 6962 SHA-256 hasher of transparency-dev/merkle; it holds no state.
var hasher = rfc6962.DefaultHasher

// String returns the lower-case hex form used in proof bundles.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes h as lower-case hex (so JSON carries hashes as hex strings).
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes a hex hash.
func (h *Hash) UnmarshalText(b []byte) error {
	v, err := ParseHash(string(b))
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// HashFromBytes copies a 32-byte slice into a Hash.
func HashFromBytes(b []byte) (Hash, error) {
	var h Hash
	if len(b) != Size {
		return h, fmt.Errorf("merkle: hash is %d bytes, want %d", len(b), Size)
	}
	copy(h[:], b)
	return h, nil
}

// ParseHash decodes a hex hash.
func ParseHash(s string) (Hash, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return Hash{}, fmt.Errorf("merkle: hash %q: %w", s, err)
	}
	return HashFromBytes(b)
}

// LeafHash is SHA-256(0x00 || data), the RFC 6962 leaf hash.
func LeafHash(data []byte) Hash {
	h := sha256.New()
	h.Write([]byte{rfc6962.RFC6962LeafHashPrefix})
	h.Write(data)
	var out Hash
	h.Sum(out[:0])
	return out
}

// NodeHash is SHA-256(0x01 || left || right), the RFC 6962 interior node hash.
func NodeHash(left, right Hash) Hash {
	var buf [1 + 2*Size]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	copy(buf[1:], left[:])
	copy(buf[1+Size:], right[:])
	return sha256.Sum256(buf[:])
}

// ReadingLeaf is the leaf of a reading: SHA-256(0x00 || raw), raw being the exact
// COSE_Sign1 bytes received.
func ReadingLeaf(raw []byte) Hash { return LeafHash(raw) }

// EntryLeaf is the leaf of a ledger log entry: SHA-256(0x00 || entry bytes).
func EntryLeaf(entry []byte) Hash { return LeafHash(entry) }

// AnchorLeaf is the leaf of one batch inside an anchor:
// SHA-256(0x00 || batch_id(16) || size(uint64 big-endian) || batch_root(32)).
func AnchorLeaf(batchID [16]byte, size uint64, batchRoot Hash) Hash {
	var buf [16 + 8 + Size]byte
	copy(buf[:16], batchID[:])
	binary.BigEndian.PutUint64(buf[16:24], size)
	copy(buf[24:], batchRoot[:])
	return LeafHash(buf[:])
}

// EmptyRoot is the RFC 6962 hash of an empty tree, SHA-256(""): the ledger log and the
// device registry start from it. Batches and anchors are never empty.
func EmptyRoot() Hash { return sha256.Sum256(nil) }

// registryDomain prefixes the registry root.
const registryDomain = "anchorline/registry/v1"

// RegistryRoot is the device registry's root: SHA-256("anchorline/registry/v1" || size (uint64
// big-endian) || tree), where tree is the RFC 6962 hash of the records sorted by device id
// (EmptyRoot for none). The size is inside the root because an inclusion proof alone does not
// pin the tree size (leaf 0 of 6 and of 7 can share a path), and a proof bundle must not carry
// a number that nothing commits.
func RegistryRoot(size uint64, tree Hash) Hash {
	h := sha256.New()
	h.Write([]byte(registryDomain))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], size)
	h.Write(n[:])
	h.Write(tree[:])
	var out Hash
	h.Sum(out[:0])
	return out
}

// RegistryFromLeaves is RegistryRoot over sorted record leaves.
func RegistryFromLeaves(leaves []Hash) (Hash, error) {
	if len(leaves) == 0 {
		return RegistryRoot(0, EmptyRoot()), nil
	}
	tree, err := Root(leaves)
	if err != nil {
		return Hash{}, err
	}
	return RegistryRoot(uint64(len(leaves)), tree), nil
}

// appHashDomain prefixes the ledger app hash.
const appHashDomain = "anchorline/ledger/v1"

// AppHash is the hash CometBFT commits after each block:
// SHA-256("anchorline/ledger/v1" || log_size(uint64 big-endian) || log_root || registry_root).
func AppHash(logSize uint64, logRoot, registryRoot Hash) Hash {
	var buf [len(appHashDomain) + 8 + 2*Size]byte
	n := copy(buf[:], appHashDomain)
	binary.BigEndian.PutUint64(buf[n:], logSize)
	copy(buf[n+8:], logRoot[:])
	copy(buf[n+8+Size:], registryRoot[:])
	return sha256.Sum256(buf[:])
}

// Root is the RFC 6962 tree hash over leaves in order. It returns ErrEmptyTree for none.
func Root(leaves []Hash) (Hash, error) {
	if len(leaves) == 0 {
		return Hash{}, ErrEmptyTree
	}
	rf := compact.RangeFactory{Hash: hasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for i := range leaves {
		if err := r.Append(leaves[i][:], nil); err != nil {
			return Hash{}, fmt.Errorf("merkle: append leaf %d: %w", i, err)
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return Hash{}, fmt.Errorf("merkle: root: %w", err)
	}
	return HashFromBytes(root)
}

// InclusionPath returns the bottom-up audit path of leaves[index] in the tree over all of
// leaves, as RFC 9162 section 2.1.3 verifies it.
func InclusionPath(leaves []Hash, index uint64) ([]Hash, error) {
	var t Tree
	for _, l := range leaves {
		t.Append(l)
	}
	return t.InclusionProof(index, t.Size())
}
