package entry

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Entry types of owners and their consent (schemas/ledger.md "owner", "consent").
const (
	TypeOwner   Type = "owner"
	TypeConsent Type = "consent"
)

// Operations of an owner entry.
const (
	OpBind    = "bind"    // the device is bound to the owner key from the block that includes it
	OpRelease = "release" // the device has no owner from the block that includes it
)

// Operations of a consent entry.
const (
	OpGrant    = "grant"    // the audience may read the device's data from the entry's block on
	OpWithdraw = "withdraw" // it may not, from the entry's block on
)

// AudienceCollect is the reserved audience of a device registered to need consent before
// anything is stored (schemas/ledger.md "consent"): a grant to it lets ingest store the
// device's readings.
const AudienceCollect = "collect"

// AudienceOperator is the reserved audience of the operator's own tokens (the HTTP API's
// http.tokens): it reads every device, so no consent entry names it.
const AudienceOperator = "operator"

// audiencePattern is what an audience is: it names a ClickHouse database and user, so lower
// case, digits and '_', starting with a letter.
var audiencePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// ValidAudience reports whether a is an audience name.
func ValidAudience(a string) bool { return audiencePattern.MatchString(a) }

// Owner binds a device to an owner's key, or releases the binding, signed by the owner and
// by one admin, both over the entry without Sig and OwnerSig.
type Owner struct {
	Type     Type   `cbor:"type"`
	Op       string `cbor:"op"`
	Dev      string `cbor:"dev"`
	Alg      string `cbor:"alg"` // the owner key's algorithm
	Key      []byte `cbor:"key"` // the owner's public key (for a release, the current owner's)
	Time     uint64 `cbor:"time"`
	Admin    []byte `cbor:"admin"`
	Sig      []byte `cbor:"sig,omitempty"`       // the admin's Ed25519 signature
	OwnerSig []byte `cbor:"owner_sig,omitempty"` // the owner's signature (reading.PrivateKey.Sign)
}

// Consent grants or withdraws an audience's access to a device's data, signed by the
// device's owner over the entry without Sig.
type Consent struct {
	Type     Type   `cbor:"type"`
	Op       string `cbor:"op"`
	Dev      string `cbor:"dev"`
	Audience string `cbor:"audience"`
	Alg      string `cbor:"alg"` // the owner key's algorithm
	Key      []byte `cbor:"key"` // the owner's public key: the device's owner at the entry's block
	Time     uint64 `cbor:"time"`
	Sig      []byte `cbor:"sig,omitempty"`
}

// OwnerKey returns the owner key an owner or consent entry names.
func (e Entry) OwnerKey() (reading.PublicKey, bool) {
	switch {
	case e.Owner != nil:
		return reading.PublicKey{Alg: reading.Alg(e.Owner.Alg), Key: e.Owner.Key}, true
	case e.Consent != nil:
		return reading.PublicKey{Alg: reading.Alg(e.Consent.Alg), Key: e.Consent.Key}, true
	}
	return reading.PublicKey{}, false
}

// NewOwner encodes an owner entry (op OpBind or OpRelease) for dev and the owner's key,
// signed by the owner and by admin.
func NewOwner(admin ed25519.PrivateKey, owner reading.PrivateKey, op, dev string, t time.Time) ([]byte, error) {
	pub := owner.Public()
	e := Owner{Type: TypeOwner, Op: op, Dev: dev, Alg: string(pub.Alg), Key: pub.Key, Time: uint64(t.UnixMilli()), Admin: reading.Ed25519Public(admin)}
	if err := e.check(); err != nil {
		return nil, err
	}
	msg, err := codecs.enc.Marshal(e)
	if err != nil {
		return nil, err
	}
	e.Sig = ed25519.Sign(admin, msg)
	if e.OwnerSig, err = owner.Sign(msg); err != nil {
		return nil, err
	}
	return codecs.enc.Marshal(e)
}

// NewConsent encodes a consent entry (op OpGrant or OpWithdraw) of dev's owner for audience.
func NewConsent(owner reading.PrivateKey, op, dev, audience string, t time.Time) ([]byte, error) {
	pub := owner.Public()
	e := Consent{Type: TypeConsent, Op: op, Dev: dev, Audience: audience, Alg: string(pub.Alg), Key: pub.Key, Time: uint64(t.UnixMilli())}
	if err := e.check(); err != nil {
		return nil, err
	}
	msg, err := codecs.enc.Marshal(e)
	if err != nil {
		return nil, err
	}
	if e.Sig, err = owner.Sign(msg); err != nil {
		return nil, err
	}
	return codecs.enc.Marshal(e)
}

func checkOwnerKey(alg string, key []byte) error {
	a, err := reading.ParseAlg(alg)
	if err != nil || string(a) != alg {
		return fmt.Errorf("%w: owner key algorithm %q (want %q or %q)", ErrMalformed, alg, reading.Ed25519, reading.ES256)
	}
	pk, err := reading.ParsePublicKey(a, key)
	if err != nil {
		return fmt.Errorf("%w: owner key: %w", ErrMalformed, err)
	}
	if string(pk.Key) != string(key) {
		return fmt.Errorf("%w: owner key is not in its canonical form (an ES256 key: the 65-byte uncompressed point)", ErrMalformed)
	}
	return nil
}

func (e Owner) check() error {
	if e.Op != OpBind && e.Op != OpRelease {
		return fmt.Errorf("%w: owner op %q: want %q or %q", ErrMalformed, e.Op, OpBind, OpRelease)
	}
	if !reading.ValidDeviceID(e.Dev) {
		return fmt.Errorf("%w: device id %q is not valid", ErrMalformed, e.Dev)
	}
	if err := checkOwnerKey(e.Alg, e.Key); err != nil {
		return err
	}
	if len(e.Admin) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: admin key is %d bytes, want %d", ErrMalformed, len(e.Admin), ed25519.PublicKeySize)
	}
	return nil
}

func (e Consent) check() error {
	if e.Op != OpGrant && e.Op != OpWithdraw {
		return fmt.Errorf("%w: consent op %q: want %q or %q", ErrMalformed, e.Op, OpGrant, OpWithdraw)
	}
	if !reading.ValidDeviceID(e.Dev) {
		return fmt.Errorf("%w: device id %q is not valid", ErrMalformed, e.Dev)
	}
	if !ValidAudience(e.Audience) {
		return fmt.Errorf("%w: audience %q must match %s", ErrMalformed, e.Audience, audiencePattern)
	}
	if e.Audience == AudienceOperator {
		return fmt.Errorf("%w: audience %q is the operator's, which reads every device: no consent applies to it", ErrMalformed, e.Audience)
	}
	return checkOwnerKey(e.Alg, e.Key)
}

// checkOwnerSig verifies sig by the owner key (alg, key) over unsigned's encoding.
func checkOwnerSig(alg string, key []byte, unsigned any, sig []byte) error {
	msg, err := codecs.enc.Marshal(unsigned)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := (reading.PublicKey{Alg: reading.Alg(alg), Key: key}).Verify(msg, sig); err != nil {
		return fmt.Errorf("%w: by key %x: %w", ErrBadSignature, key, err)
	}
	return nil
}

func decodeOwner(b []byte) (Entry, error) {
	var e Owner
	if err := strict(b, &e); err != nil {
		return Entry{}, err
	}
	if err := e.check(); err != nil {
		return Entry{}, err
	}
	unsigned := e
	unsigned.Sig, unsigned.OwnerSig = nil, nil
	if err := checkSig(e.Admin, unsigned, e.Sig); err != nil {
		return Entry{}, err
	}
	if err := checkOwnerSig(e.Alg, e.Key, unsigned, e.OwnerSig); err != nil {
		return Entry{}, err
	}
	return Entry{Type: TypeOwner, Owner: &e}, nil
}

func decodeConsent(b []byte) (Entry, error) {
	var e Consent
	if err := strict(b, &e); err != nil {
		return Entry{}, err
	}
	if err := e.check(); err != nil {
		return Entry{}, err
	}
	unsigned := e
	unsigned.Sig = nil
	if err := checkOwnerSig(e.Alg, e.Key, unsigned, e.Sig); err != nil {
		return Entry{}, err
	}
	return Entry{Type: TypeConsent, Consent: &e}, nil
}

// Status of an owner record and of a consent record.
const (
	OwnerBound       = "bound"
	OwnerReleased    = "released"
	ConsentGranted   = "granted"
	ConsentWithdrawn = "withdrawn"
)

// OwnerRecord is a device's record in the ledger's owners tree (schemas/ledger.md "owner
// records"): its owner key, whether it is bound, and where the entry that made it is. Its leaf
// is SHA-256(0x00 || Encode()).
type OwnerRecord struct {
	Dev    string `cbor:"dev"`
	Alg    string `cbor:"alg"`
	Key    []byte `cbor:"key"`
	Status string `cbor:"status"`
	Time   uint64 `cbor:"time"`   // the entry's time
	Entry  []byte `cbor:"entry"`  // the entry's log leaf, SHA-256(0x00 || entry)
	Index  uint64 `cbor:"index"`  // its log index
	Height uint64 `cbor:"height"` // the block that included it
}

// PublicKey is the record's owner key.
func (r OwnerRecord) PublicKey() reading.PublicKey {
	return reading.PublicKey{Alg: reading.Alg(r.Alg), Key: r.Key}
}

// Bound reports whether the record binds its device to Key.
func (r OwnerRecord) Bound() bool { return r.Status == OwnerBound }

// ConsentRecord is a device's consent for an audience in the ledger's consent tree
// (schemas/ledger.md "consent records"). It counts only while Key is the device's bound owner:
// a new owner starts with no consent.
type ConsentRecord struct {
	Dev      string `cbor:"dev"`
	Audience string `cbor:"audience"`
	Status   string `cbor:"status"`
	Alg      string `cbor:"alg"`
	Key      []byte `cbor:"key"` // the owner who signed it
	Time     uint64 `cbor:"time"`
	Entry    []byte `cbor:"entry"`
	Index    uint64 `cbor:"index"`
	Height   uint64 `cbor:"height"`
}

// ConsentKey is the key of a device's consent for an audience in the consent tree: the
// device id, 0x00, the audience (the tree's key is its SHA-256).
func ConsentKey(dev, audience string) string { return dev + "\x00" + audience }

// Encode returns the deterministic encoding of r.
func (r OwnerRecord) Encode() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return codecs.enc.Marshal(r)
}

func (r OwnerRecord) check() error {
	if !reading.ValidDeviceID(r.Dev) || (r.Status != OwnerBound && r.Status != OwnerReleased) || len(r.Entry) != 32 {
		return fmt.Errorf("%w: owner record of %q, status %q", ErrMalformed, r.Dev, r.Status)
	}
	return checkOwnerKey(r.Alg, r.Key)
}

// Encode returns the deterministic encoding of r.
func (r ConsentRecord) Encode() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return codecs.enc.Marshal(r)
}

func (r ConsentRecord) check() error {
	if !reading.ValidDeviceID(r.Dev) || !ValidAudience(r.Audience) || (r.Status != ConsentGranted && r.Status != ConsentWithdrawn) || len(r.Entry) != 32 {
		return fmt.Errorf("%w: consent record of %q for %q, status %q", ErrMalformed, r.Dev, r.Audience, r.Status)
	}
	return checkOwnerKey(r.Alg, r.Key)
}

// DecodeOwnerRecord parses an owner record strictly.
func DecodeOwnerRecord(b []byte) (OwnerRecord, error) {
	var r OwnerRecord
	if err := strict(b, &r); err != nil {
		return OwnerRecord{}, err
	}
	return r, r.check()
}

// DecodeConsentRecord parses a consent record strictly.
func DecodeConsentRecord(b []byte) (ConsentRecord, error) {
	var r ConsentRecord
	if err := strict(b, &r); err != nil {
		return ConsentRecord{}, err
	}
	return r, r.check()
}

var errNotKind = errors.New("entry: not of the kind asked for")

// ConsentOf returns the consent entry in b.
func ConsentOf(b []byte) (*Consent, error) {
	e, err := Decode(b)
	if err != nil {
		return nil, err
	}
	if e.Consent == nil {
		return nil, fmt.Errorf("%w: %s, want %s", errNotKind, e.Type, TypeConsent)
	}
	return e.Consent, nil
}
