package entry

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Operations of an anchor_key entry.
const (
	OpAdd    = "add"
	OpRemove = "remove"
)

// AnchorKey authorises (Op "add") or withdraws (Op "remove") an anchoring key: the Ed25519
// public key whose signed anchors the ledger accepts. One admin signs it, like a device event.
type AnchorKey struct {
	Type  Type   `cbor:"type"`
	Op    string `cbor:"op"`
	Key   []byte `cbor:"key"`
	Time  uint64 `cbor:"time"`
	Admin []byte `cbor:"admin"`
	Sig   []byte `cbor:"sig,omitempty"`
}

// Signature is one admin's signature of a threshold-signed entry.
type Signature struct {
	Key []byte `cbor:"key"` // the admin's Ed25519 public key
	Sig []byte `cbor:"sig"` // over the entry's encoding without "sigs"
}

// Validator adds a validator (a key not in the set), re-weights one (a key in the set) or
// removes one (Power 0). It needs the ledger's threshold of admin signatures.
type Validator struct {
	Type   Type        `cbor:"type"`
	PubKey []byte      `cbor:"pub_key"` // the validator's Ed25519 consensus public key
	Power  uint64      `cbor:"power"`
	Time   uint64      `cbor:"time"`
	Sigs   []Signature `cbor:"sigs,omitempty"`
}

// Admins changes the admin set: Add and Remove (either may be empty) and the threshold M of
// the set that results. It needs the threshold of the current admin set's signatures. A
// rotation adds the new key and removes the old one in one entry.
type Admins struct {
	Type      Type        `cbor:"type"`
	Add       [][]byte    `cbor:"add"`
	Remove    [][]byte    `cbor:"remove"`
	Threshold uint64      `cbor:"threshold"`
	Time      uint64      `cbor:"time"`
	Sigs      []Signature `cbor:"sigs,omitempty"`
}

// Signers returns the public keys that signed a threshold-signed entry (distinct, each
// signature verified by Decode), nil for other entries.
func (e Entry) Signers() []ed25519.PublicKey {
	var sigs []Signature
	switch {
	case e.Validator != nil:
		sigs = e.Validator.Sigs
	case e.Admins != nil:
		sigs = e.Admins.Sigs
	}
	out := make([]ed25519.PublicKey, 0, len(sigs))
	for _, s := range sigs {
		out = append(out, s.Key)
	}
	return out
}

// NewAnchorKey encodes an anchor_key entry (op OpAdd or OpRemove) for key, signed by admin.
func NewAnchorKey(admin ed25519.PrivateKey, op string, key ed25519.PublicKey, t time.Time) ([]byte, error) {
	k := AnchorKey{Type: TypeAnchorKey, Op: op, Key: key, Time: uint64(t.UnixMilli()), Admin: reading.Ed25519Public(admin)}
	if err := k.check(); err != nil {
		return nil, err
	}
	msg, err := codecs.enc.Marshal(k)
	if err != nil {
		return nil, err
	}
	k.Sig = ed25519.Sign(admin, msg)
	return codecs.enc.Marshal(k)
}

// NewValidator encodes a validator entry setting pub's voting power (0 removes it), signed by
// each of admins (more can be added with Cosign).
func NewValidator(pub ed25519.PublicKey, power uint64, t time.Time, admins ...ed25519.PrivateKey) ([]byte, error) {
	v := Validator{Type: TypeValidator, PubKey: pub, Power: power, Time: uint64(t.UnixMilli())}
	if err := v.check(); err != nil {
		return nil, err
	}
	return signAll(&v, &v.Sigs, admins)
}

// NewAdmins encodes an admins entry adding and removing admin keys and setting the threshold
// of the resulting set, signed by each of admins (more can be added with Cosign).
func NewAdmins(add, remove []ed25519.PublicKey, threshold uint64, t time.Time, admins ...ed25519.PrivateKey) ([]byte, error) {
	a := Admins{Type: TypeAdmins, Add: [][]byte{}, Remove: [][]byte{}, Threshold: threshold, Time: uint64(t.UnixMilli())}
	for _, k := range add {
		a.Add = append(a.Add, k)
	}
	for _, k := range remove {
		a.Remove = append(a.Remove, k)
	}
	if err := a.check(); err != nil {
		return nil, err
	}
	return signAll(&a, &a.Sigs, admins)
}

// Cosign adds admin's signature to a threshold-signed entry (validator, admins) and returns the
// new encoding; signatures already there are kept. Signing twice with one key is refused.
func Cosign(b []byte, admin ed25519.PrivateKey) ([]byte, error) {
	e, err := Decode(b)
	if err != nil {
		return nil, err
	}
	switch {
	case e.Validator != nil:
		v := *e.Validator
		return addSig(&v, &v.Sigs, admin)
	case e.Admins != nil:
		a := *e.Admins
		return addSig(&a, &a.Sigs, admin)
	}
	return nil, fmt.Errorf("%w: a %s entry is not threshold-signed", ErrMalformed, e.Type)
}

// signAll signs v (whose signature list is *sigs, empty) with each key.
func signAll(v any, sigs *[]Signature, keys []ed25519.PrivateKey) ([]byte, error) {
	b, err := codecs.enc.Marshal(v)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if b, err = addSig(v, sigs, k); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// addSig adds key's signature over v without its signatures, keeping *sigs sorted by key.
func addSig(v any, sigs *[]Signature, key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: admin key is %d bytes, want an Ed25519 private key", ErrMalformed, len(key))
	}
	pub := reading.Ed25519Public(key)
	have := *sigs
	*sigs = nil
	msg, err := codecs.enc.Marshal(v)
	if err != nil {
		return nil, err
	}
	i, found := slices.BinarySearchFunc(have, []byte(pub), func(s Signature, k []byte) int { return bytes.Compare(s.Key, k) })
	if found {
		*sigs = have
		return nil, fmt.Errorf("%w: admin %x signed this entry already", ErrMalformed, []byte(pub))
	}
	*sigs = slices.Insert(have, i, Signature{Key: pub, Sig: ed25519.Sign(key, msg)})
	return codecs.enc.Marshal(v)
}

func (k AnchorKey) check() error {
	if k.Op != OpAdd && k.Op != OpRemove {
		return fmt.Errorf("%w: anchor_key op %q, want %q or %q", ErrMalformed, k.Op, OpAdd, OpRemove)
	}
	if len(k.Key) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: anchoring key is %d bytes, want %d", ErrMalformed, len(k.Key), ed25519.PublicKeySize)
	}
	if len(k.Admin) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: admin key is %d bytes, want %d", ErrMalformed, len(k.Admin), ed25519.PublicKeySize)
	}
	return nil
}

// MaxPower bounds a validator's power: CometBFT's limit on the total voting power
// (types.MaxTotalVotingPower, MaxInt64/8); the ledger checks the total.
const MaxPower = uint64(1<<63-1) / 8

func (v Validator) check() error {
	if len(v.PubKey) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: validator key is %d bytes, want an Ed25519 public key of %d", ErrMalformed, len(v.PubKey), ed25519.PublicKeySize)
	}
	if v.Power > MaxPower {
		return fmt.Errorf("%w: validator power %d is above %d", ErrMalformed, v.Power, MaxPower)
	}
	return nil
}

func (a Admins) check() error {
	seen := map[string]bool{}
	for _, list := range [][][]byte{a.Add, a.Remove} {
		for _, k := range list {
			if len(k) != ed25519.PublicKeySize {
				return fmt.Errorf("%w: admin key is %d bytes, want %d", ErrMalformed, len(k), ed25519.PublicKeySize)
			}
			if seen[string(k)] {
				return fmt.Errorf("%w: admin key %x is named twice", ErrMalformed, k)
			}
			seen[string(k)] = true
		}
	}
	if a.Add == nil || a.Remove == nil {
		return fmt.Errorf("%w: admins add and remove must be arrays (empty if nothing changes)", ErrMalformed)
	}
	if a.Threshold == 0 {
		return fmt.Errorf("%w: admins threshold must be at least 1", ErrMalformed)
	}
	return nil
}

// checkSigs verifies a threshold-signed entry's signatures: at least one, keys strictly
// ascending (so distinct, and the encoding unique for a set of signers), each over unsigned
// (the entry without "sigs").
func checkSigs(unsigned any, sigs []Signature) error {
	if len(sigs) == 0 {
		return fmt.Errorf("%w: no admin signatures (sigs)", ErrMalformed)
	}
	msg, err := codecs.enc.Marshal(unsigned)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	for i, s := range sigs {
		if len(s.Key) != ed25519.PublicKeySize || len(s.Sig) != ed25519.SignatureSize {
			return fmt.Errorf("%w: signature %d: key of %d bytes, sig of %d, want %d and %d", ErrMalformed, i, len(s.Key), len(s.Sig), ed25519.PublicKeySize, ed25519.SignatureSize)
		}
		if i > 0 && bytes.Compare(sigs[i-1].Key, s.Key) >= 0 {
			return fmt.Errorf("%w: sigs must be sorted by key, each key once", ErrMalformed)
		}
		if !ed25519.Verify(ed25519.PublicKey(s.Key), msg, s.Sig) {
			return fmt.Errorf("%w: by admin %x", ErrBadSignature, s.Key)
		}
	}
	return nil
}

// decodeAuthority decodes the authority entries (anchor_key, validator, admins) strictly and
// verifies their signatures; whether the signers are admins is the ledger's decision.
func decodeAuthority(t Type, b []byte) (Entry, error) {
	switch t {
	case TypeAnchorKey:
		var k AnchorKey
		if err := strict(b, &k); err != nil {
			return Entry{}, err
		}
		if err := k.check(); err != nil {
			return Entry{}, err
		}
		sig := k.Sig
		k.Sig = nil
		if err := checkSig(k.Admin, k, sig); err != nil {
			return Entry{}, err
		}
		k.Sig = sig
		return Entry{Type: t, AnchorKey: &k}, nil
	case TypeValidator:
		var v Validator
		if err := strict(b, &v); err != nil {
			return Entry{}, err
		}
		if err := v.check(); err != nil {
			return Entry{}, err
		}
		u := v
		u.Sigs = nil
		if err := checkSigs(u, v.Sigs); err != nil {
			return Entry{}, err
		}
		return Entry{Type: t, Validator: &v}, nil
	case TypeAdmins:
		var a Admins
		if err := strict(b, &a); err != nil {
			return Entry{}, err
		}
		if err := a.check(); err != nil {
			return Entry{}, err
		}
		u := a
		u.Sigs = nil
		if err := checkSigs(u, a.Sigs); err != nil {
			return Entry{}, err
		}
		return Entry{Type: t, Admins: &a}, nil
	}
	return Entry{}, fmt.Errorf("%w: unknown type %q", ErrMalformed, t)
}
