package smt

import (
	"encoding/binary"
	"fmt"
)

// Terminal says where a proof's path ends.
type Terminal byte

const (
	// TerminalEmpty: the path ends at an empty subtree (the key is absent).
	TerminalEmpty Terminal = 0
	// TerminalLeaf: the path ends at the key's own leaf (the key is present).
	TerminalLeaf Terminal = 1
	// TerminalOther: the path ends at another key's leaf (the key is absent).
	TerminalOther Terminal = 2
)

// MaxDepth is the greatest number of siblings a proof can carry.
const MaxDepth = 256

// Proof shows the presence or absence of one key under a root.
type Proof struct {
	Terminal Terminal
	// OtherKey and OtherValue are the leaf the path ends at, for TerminalOther only.
	OtherKey, OtherValue Hash
	// Siblings from the root down; Empty for an empty sibling subtree.
	Siblings []Hash
}

// Encode returns the proof's canonical encoding (see the package doc).
func (p Proof) Encode() []byte {
	n := len(p.Siblings)
	size := 1 + 2 + (n+7)/8
	if p.Terminal == TerminalOther {
		size += 64
	}
	out := make([]byte, 0, size+32*n)
	out = append(out, byte(p.Terminal))
	if p.Terminal == TerminalOther {
		out = append(out, p.OtherKey[:]...)
		out = append(out, p.OtherValue[:]...)
	}
	out = binary.BigEndian.AppendUint16(out, uint16(n))
	bitmap := make([]byte, (n+7)/8)
	for i, s := range p.Siblings {
		if s != Empty {
			bitmap[i/8] |= 1 << (7 - uint(i%8))
		}
	}
	out = append(out, bitmap...)
	for _, s := range p.Siblings {
		if s != Empty {
			out = append(out, s[:]...)
		}
	}
	return out
}

// DecodeProof parses an encoded proof. It rejects every encoding Encode would not produce.
func DecodeProof(b []byte) (Proof, error) {
	var p Proof
	if len(b) < 1 {
		return p, fmt.Errorf("%w: empty", ErrMalformedProof)
	}
	p.Terminal = Terminal(b[0])
	b = b[1:]
	switch p.Terminal {
	case TerminalEmpty, TerminalLeaf:
	case TerminalOther:
		if len(b) < 64 {
			return p, fmt.Errorf("%w: other leaf truncated", ErrMalformedProof)
		}
		copy(p.OtherKey[:], b[:32])
		copy(p.OtherValue[:], b[32:64])
		b = b[64:]
	default:
		return p, fmt.Errorf("%w: unknown terminal %d", ErrMalformedProof, p.Terminal)
	}
	if len(b) < 2 {
		return p, fmt.Errorf("%w: depth truncated", ErrMalformedProof)
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n > MaxDepth {
		return p, fmt.Errorf("%w: depth %d above %d", ErrMalformedProof, n, MaxDepth)
	}
	bm := (n + 7) / 8
	if len(b) < bm {
		return p, fmt.Errorf("%w: bitmap truncated", ErrMalformedProof)
	}
	bitmap := b[:bm]
	b = b[bm:]
	if r := n % 8; r != 0 && bitmap[bm-1]&(0xff>>uint(r)) != 0 {
		return p, fmt.Errorf("%w: bitmap bits beyond depth set", ErrMalformedProof)
	}
	p.Siblings = make([]Hash, n)
	for i := range n {
		if bitmap[i/8]&(1<<(7-uint(i%8))) == 0 {
			continue
		}
		if len(b) < 32 {
			return p, fmt.Errorf("%w: sibling %d truncated", ErrMalformedProof, i)
		}
		copy(p.Siblings[i][:], b[:32])
		if p.Siblings[i] == Empty {
			return p, fmt.Errorf("%w: sibling %d marked non-empty but zero", ErrMalformedProof, i)
		}
		b = b[32:]
	}
	if len(b) != 0 {
		return p, fmt.Errorf("%w: %d trailing bytes", ErrMalformedProof, len(b))
	}
	return p, nil
}

// Verify checks an encoded proof against root. With value non-nil it checks that key is
// present with that 32-byte value; with value nil, that key is absent. It does no I/O and
// returns nil only when the proof shows the claim; every error wraps ErrBadProof.
func Verify(root, key Hash, value []byte, proof []byte) error {
	p, err := DecodeProof(proof)
	if err != nil {
		return err
	}
	return p.Verify(root, key, value)
}

// Verify is the decoded form of the package-level Verify.
func (p Proof) Verify(root, key Hash, value []byte) error {
	n := len(p.Siblings)
	if n > MaxDepth {
		return fmt.Errorf("%w: depth %d above %d", ErrMalformedProof, n, MaxDepth)
	}
	var h Hash
	switch {
	case value != nil:
		if len(value) != 32 {
			return fmt.Errorf("%w: value is %d bytes, want 32", ErrBadProof, len(value))
		}
		if p.Terminal != TerminalLeaf {
			return fmt.Errorf("%w: proof shows key %x absent", ErrBadProof, key)
		}
		h = LeafHash(key, Hash(value))
	case p.Terminal == TerminalEmpty:
		h = Empty
	case p.Terminal == TerminalOther:
		if p.OtherKey == key {
			return fmt.Errorf("%w: other leaf is key %x itself", ErrBadProof, key)
		}
		if !samePrefix(p.OtherKey, key, n) {
			return fmt.Errorf("%w: other leaf %x is not on the path of key %x", ErrBadProof, p.OtherKey, key)
		}
		h = LeafHash(p.OtherKey, p.OtherValue)
	default:
		return fmt.Errorf("%w: proof shows key %x present", ErrBadProof, key)
	}
	for i := n - 1; i >= 0; i-- {
		if bit(key, i) == 0 {
			h = InteriorHash(h, p.Siblings[i])
		} else {
			h = InteriorHash(p.Siblings[i], h)
		}
	}
	if h != root {
		return &RootMismatchError{Key: key, Want: root, Computed: h}
	}
	return nil
}
