package entry

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Errors of Decode and DecodeRecord.
var (
	// ErrMalformed: not a well-formed entry (bad CBOR, not deterministic, unknown or missing
	// field, wrong size, unknown type).
	ErrMalformed = errors.New("entry: malformed")
	// ErrBadSignature: a signature in the entry (an admin's, or an anchoring key's) does not
	// verify.
	ErrBadSignature = errors.New("entry: bad signature")
)

// Type is the value of an entry's "type" key.
type Type string

// Entry types.
const (
	TypeAnchor   Type = "anchor"
	TypeRegister Type = "register"
	TypeRevoke   Type = "revoke"
	// Authority entries (authority.go).
	TypeAnchorKey Type = "anchor_key"
	TypeValidator Type = "validator"
	TypeAdmins    Type = "admins"
)

// Anchor commits an anchor root (DESIGN 2.2) over Batches batch roots holding Readings readings.
// A signed anchor (DESIGN 2.3, authorised writers) also carries the anchoring service's Ed25519
// public key and its signature over the encoding without "sig"; an anchor of the first release
// carries neither, and stays valid.
type Anchor struct {
	Type     Type   `cbor:"type"`
	ID       []byte `cbor:"id"`
	Root     []byte `cbor:"root"`
	Batches  uint64 `cbor:"batches"`
	Readings uint64 `cbor:"readings"`
	Time     uint64 `cbor:"time"` // Unix milliseconds
	Key      []byte `cbor:"key,omitempty"`
	Sig      []byte `cbor:"sig,omitempty"`
}

// Signed reports whether the anchor carries an anchoring key (and so, once decoded, a valid
// signature by it).
func (a Anchor) Signed() bool { return len(a.Key) > 0 }

// Register puts a device's public key on the ledger. Admin is the authorising admin's Ed25519
// public key; Sig its signature over the entry's encoding without "sig".
type Register struct {
	Type  Type   `cbor:"type"`
	Dev   string `cbor:"dev"`
	Alg   string `cbor:"alg"`
	Key   []byte `cbor:"key"`
	Time  uint64 `cbor:"time"`
	Admin []byte `cbor:"admin"`
	Sig   []byte `cbor:"sig,omitempty"`
	// OptIn, if true, means nothing of the device is stored without its owner's consent to
	// collection (entry.AudienceCollect); absent (false) in every entry of earlier releases.
	OptIn bool `cbor:"opt_in,omitempty"`
}

// Revoke marks a device's key revoked from the block that includes it on.
type Revoke struct {
	Type  Type   `cbor:"type"`
	Dev   string `cbor:"dev"`
	Time  uint64 `cbor:"time"`
	Admin []byte `cbor:"admin"`
	Sig   []byte `cbor:"sig,omitempty"`
}

// Entry is a decoded entry: exactly one of the pointers is set, as Type says.
type Entry struct {
	Type      Type
	Anchor    *Anchor
	Register  *Register
	Revoke    *Revoke
	AnchorKey *AnchorKey
	Validator *Validator
	Admins    *Admins
	Rule      *Rule
	Owner     *Owner
	Consent   *Consent
	Erase     *Erase
}

// Device returns the device id of a device event, an owner, consent or erase entry, "" for
// the others.
func (e Entry) Device() string {
	switch {
	case e.Register != nil:
		return e.Register.Dev
	case e.Revoke != nil:
		return e.Revoke.Dev
	case e.Owner != nil:
		return e.Owner.Dev
	case e.Consent != nil:
		return e.Consent.Dev
	case e.Erase != nil:
		return e.Erase.Dev
	}
	return ""
}

// Admin returns the admin key of an entry signed by one admin (device events, anchor_key, rule,
// owner), nil for the others.
func (e Entry) Admin() ed25519.PublicKey {
	switch {
	case e.Register != nil:
		return e.Register.Admin
	case e.Revoke != nil:
		return e.Revoke.Admin
	case e.AnchorKey != nil:
		return e.AnchorKey.Admin
	case e.Rule != nil:
		return e.Rule.Admin
	case e.Owner != nil:
		return e.Owner.Admin
	}
	return nil
}

// codec holds the CBOR modes; built from constant options.
type codec struct {
	enc  cbor.EncMode
	dec  cbor.DecMode // strict: unknown fields are errors
	head cbor.DecMode // reads only "type"
}

func newCodec() (codec, error) {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		return codec{}, err
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   6, // a rule entry: entry, rule, actions, action, args
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	}.DecMode()
	if err != nil {
		return codec{}, err
	}
	head, err := cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF, IndefLength: cbor.IndefLengthForbidden}.DecMode()
	if err != nil {
		return codec{}, err
	}
	return codec{enc: enc, dec: dec, head: head}, nil
}

func mustCodec() codec {
	c, err := newCodec()
	if err != nil {
		panic(err) // constant options
	}
	return c
}

// codecs is immutable after package initialisation.
var codecs = mustCodec()

// Encode returns the deterministic encoding of a.
func (a Anchor) Encode() ([]byte, error) {
	a.Type = TypeAnchor
	if err := a.check(); err != nil {
		return nil, err
	}
	return codecs.enc.Marshal(a)
}

func (a Anchor) check() error {
	if len(a.ID) != 16 {
		return fmt.Errorf("%w: anchor id is %d bytes, want 16", ErrMalformed, len(a.ID))
	}
	if len(a.Root) != 32 {
		return fmt.Errorf("%w: anchor root is %d bytes, want 32", ErrMalformed, len(a.Root))
	}
	if a.Batches == 0 {
		return fmt.Errorf("%w: an anchor commits at least one batch", ErrMalformed)
	}
	if len(a.Key) == 0 && len(a.Sig) == 0 {
		return nil
	}
	if len(a.Key) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: anchoring key is %d bytes, want %d (a signed anchor carries both key and sig)", ErrMalformed, len(a.Key), ed25519.PublicKeySize)
	}
	if len(a.Sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: anchor signature is %d bytes, want %d (a signed anchor carries both key and sig)", ErrMalformed, len(a.Sig), ed25519.SignatureSize)
	}
	return nil
}

// NewAnchor encodes an unsigned anchor entry, as the first release wrote them. A ledger that
// enforces authorised writers refuses it: the anchoring service uses NewSignedAnchor.
func NewAnchor(id [16]byte, root [32]byte, batches, readings uint64, t time.Time) ([]byte, error) {
	return Anchor{ID: id[:], Root: root[:], Batches: batches, Readings: readings, Time: uint64(t.UnixMilli())}.Encode()
}

// NewSignedAnchor encodes an anchor entry signed by the anchoring key: "key" is key's public
// key, "sig" its signature over the deterministic encoding of the map without "sig".
func NewSignedAnchor(key ed25519.PrivateKey, id [16]byte, root [32]byte, batches, readings uint64, t time.Time) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: anchoring key is %d bytes, want an Ed25519 private key", ErrMalformed, len(key))
	}
	a := Anchor{Type: TypeAnchor, ID: id[:], Root: root[:], Batches: batches, Readings: readings, Time: uint64(t.UnixMilli()),
		Key: reading.Ed25519Public(key)}
	if err := (Anchor{ID: a.ID, Root: a.Root, Batches: a.Batches}).check(); err != nil {
		return nil, err
	}
	msg, err := codecs.enc.Marshal(a)
	if err != nil {
		return nil, err
	}
	a.Sig = ed25519.Sign(key, msg)
	return codecs.enc.Marshal(a)
}

// NewRegister encodes a register event for dev's public key, signed by admin.
func NewRegister(admin ed25519.PrivateKey, dev string, pub reading.PublicKey, t time.Time) ([]byte, error) {
	return newRegister(admin, dev, pub, t, false)
}

// NewRegisterOptIn is NewRegister for a device whose readings are stored only while its
// owner's consent to collection (AudienceCollect) is in force.
func NewRegisterOptIn(admin ed25519.PrivateKey, dev string, pub reading.PublicKey, t time.Time) ([]byte, error) {
	return newRegister(admin, dev, pub, t, true)
}

func newRegister(admin ed25519.PrivateKey, dev string, pub reading.PublicKey, t time.Time, optIn bool) ([]byte, error) {
	if _, err := reading.ParsePublicKey(pub.Alg, pub.Key); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	r := Register{Type: TypeRegister, Dev: dev, Alg: string(pub.Alg), Key: pub.Key, Time: uint64(t.UnixMilli()),
		Admin: reading.Ed25519Public(admin), OptIn: optIn}
	if err := r.check(); err != nil {
		return nil, err
	}
	msg, err := codecs.enc.Marshal(r)
	if err != nil {
		return nil, err
	}
	r.Sig = ed25519.Sign(admin, msg)
	return codecs.enc.Marshal(r)
}

// NewRevoke encodes a revoke event for dev, signed by admin.
func NewRevoke(admin ed25519.PrivateKey, dev string, t time.Time) ([]byte, error) {
	r := Revoke{Type: TypeRevoke, Dev: dev, Time: uint64(t.UnixMilli()), Admin: reading.Ed25519Public(admin)}
	if err := r.check(); err != nil {
		return nil, err
	}
	msg, err := codecs.enc.Marshal(r)
	if err != nil {
		return nil, err
	}
	r.Sig = ed25519.Sign(admin, msg)
	return codecs.enc.Marshal(r)
}

func (r Register) check() error {
	if !reading.ValidDeviceID(r.Dev) {
		return fmt.Errorf("%w: device id %q is not valid", ErrMalformed, r.Dev)
	}
	alg, err := reading.ParseAlg(r.Alg)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := reading.ParsePublicKey(alg, r.Key); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(r.Admin) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: admin key is %d bytes, want %d", ErrMalformed, len(r.Admin), ed25519.PublicKeySize)
	}
	return nil
}

func (r Revoke) check() error {
	if !reading.ValidDeviceID(r.Dev) {
		return fmt.Errorf("%w: device id %q is not valid", ErrMalformed, r.Dev)
	}
	if len(r.Admin) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: admin key is %d bytes, want %d", ErrMalformed, len(r.Admin), ed25519.PublicKeySize)
	}
	return nil
}

// Decode parses an entry strictly: deterministic encoding only, known fields only, sizes
// checked, and a device event's signature checked against the admin key it names (whether that
// admin is authorised is the ledger's decision).
func Decode(b []byte) (Entry, error) {
	var head struct {
		Type Type `cbor:"type"`
	}
	if err := codecs.head.Unmarshal(b, &head); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	switch head.Type {
	case TypeAnchor:
		var a Anchor
		if err := strict(b, &a); err != nil {
			return Entry{}, err
		}
		if err := a.check(); err != nil {
			return Entry{}, err
		}
		if a.Signed() {
			sig := a.Sig
			a.Sig = nil
			if err := checkSig(a.Key, a, sig); err != nil {
				return Entry{}, fmt.Errorf("anchor: %w", err)
			}
			a.Sig = sig
		}
		return Entry{Type: TypeAnchor, Anchor: &a}, nil
	case TypeRegister:
		var r Register
		if err := strict(b, &r); err != nil {
			return Entry{}, err
		}
		if err := r.check(); err != nil {
			return Entry{}, err
		}
		sig := r.Sig
		r.Sig = nil
		if err := checkSig(r.Admin, r, sig); err != nil {
			return Entry{}, err
		}
		r.Sig = sig
		return Entry{Type: TypeRegister, Register: &r}, nil
	case TypeRevoke:
		var r Revoke
		if err := strict(b, &r); err != nil {
			return Entry{}, err
		}
		if err := r.check(); err != nil {
			return Entry{}, err
		}
		sig := r.Sig
		r.Sig = nil
		if err := checkSig(r.Admin, r, sig); err != nil {
			return Entry{}, err
		}
		r.Sig = sig
		return Entry{Type: TypeRevoke, Revoke: &r}, nil
	case TypeAnchorKey, TypeValidator, TypeAdmins:
		return decodeAuthority(head.Type, b)
	case TypeRule:
		return decodeRule(b)
	case TypeOwner:
		return decodeOwner(b)
	case TypeConsent:
		return decodeConsent(b)
	case TypeErase:
		return decodeErase(b)
	default:
		return Entry{}, fmt.Errorf("%w: unknown type %q", ErrMalformed, head.Type)
	}
}

// strict decodes b into v and requires b to be v's deterministic encoding with every field present.
func strict(b []byte, v any) error {
	if err := codecs.dec.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	again, err := codecs.enc.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !bytes.Equal(again, b) {
		return fmt.Errorf("%w: not the deterministic encoding, or a field is missing", ErrMalformed)
	}
	return nil
}

func checkSig(admin []byte, unsigned any, sig []byte) error {
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is %d bytes, want %d", ErrMalformed, len(sig), ed25519.SignatureSize)
	}
	msg, err := codecs.enc.Marshal(unsigned)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !ed25519.Verify(ed25519.PublicKey(admin), msg, sig) {
		return ErrBadSignature
	}
	return nil
}

// Status of a device record.
type Status string

// Device statuses.
const (
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
)

// Record is a device record of the ledger registry. Its registry leaf is
// SHA-256(0x00 || Encode()); the registry orders leaves by device id.
type Record struct {
	Dev    string      `cbor:"dev"`
	Alg    reading.Alg `cbor:"alg"`
	Key    []byte      `cbor:"key"`
	Status Status      `cbor:"status"`
	Height uint64      `cbor:"height"` // block of the last change
	// OptIn: the device was registered to need its owner's consent to collection (absent in
	// the records of devices registered without it, so their leaves stay as they were).
	OptIn bool `cbor:"opt_in,omitempty"`
}

// PublicKey returns the record's key in the reading package's form.
func (r Record) PublicKey() (reading.PublicKey, error) {
	return reading.ParsePublicKey(r.Alg, r.Key)
}

// Encode returns the deterministic encoding of r.
func (r Record) Encode() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return codecs.enc.Marshal(r)
}

func (r Record) check() error {
	if !reading.ValidDeviceID(r.Dev) {
		return fmt.Errorf("%w: device id %q is not valid", ErrMalformed, r.Dev)
	}
	if _, err := reading.ParsePublicKey(r.Alg, r.Key); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if r.Status != StatusActive && r.Status != StatusRevoked {
		return fmt.Errorf("%w: status %q", ErrMalformed, r.Status)
	}
	return nil
}

// DecodeRecord parses a record strictly (deterministic encoding, known fields).
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	if err := strict(b, &r); err != nil {
		return Record{}, err
	}
	if err := r.check(); err != nil {
		return Record{}, err
	}
	return r, nil
}
