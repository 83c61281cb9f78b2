package entry

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/anchorline/anchorline/schemas/reading"
)

// TypeErase is the entry of an erasure (schemas/ledger.md "erase").
const TypeErase Type = "erase"

// What an erase entry's range counts in.
const (
	EraseBySeq = "seq" // device seqs, From..To inclusive
	EraseByTS  = "ts"  // device time, Unix ms, From..To inclusive
)

// Erase asks for the raw bytes and metric values of a device's readings in a range to be
// removed, keeping their leaves: signed by the device's owner, or by an admin with a reason.
type Erase struct {
	Type   Type   `cbor:"type"`
	Dev    string `cbor:"dev"`
	By     string `cbor:"by"`
	From   uint64 `cbor:"from"`
	To     uint64 `cbor:"to"`
	Reason string `cbor:"reason,omitempty"` // why, required when an admin signs
	Alg    string `cbor:"alg"`              // the signer's key: the owner's, or an admin's (ed25519)
	Key    []byte `cbor:"key"`
	Time   uint64 `cbor:"time"`
	Sig    []byte `cbor:"sig,omitempty"`
}

// Covers reports whether a reading of the entry's device with seq and device time ts is in
// the entry's range. A device-time range covers no reading without a time (ts 0): a bundle
// that leaves an erased reading's time out cannot claim it for such a range.
func (e Erase) Covers(dev string, seq, ts uint64) bool {
	v := seq
	if e.By == EraseByTS {
		if ts == 0 {
			return false
		}
		v = ts
	}
	return dev == e.Dev && e.From <= v && v <= e.To
}

// NewEraseByOwner encodes an erase entry of dev's readings from..to (by EraseBySeq or
// EraseByTS) signed by the device's owner; reason may be empty.
func NewEraseByOwner(owner reading.PrivateKey, dev, by string, from, to uint64, reason string, t time.Time) ([]byte, error) {
	pub := owner.Public()
	return newErase(Erase{Type: TypeErase, Dev: dev, By: by, From: from, To: to, Reason: reason, Alg: string(pub.Alg), Key: pub.Key, Time: uint64(t.UnixMilli())}, owner.Sign)
}

// NewEraseByAdmin encodes an erase entry signed by an admin, who must give a reason.
func NewEraseByAdmin(admin ed25519.PrivateKey, dev, by string, from, to uint64, reason string, t time.Time) ([]byte, error) {
	if reason == "" {
		return nil, fmt.Errorf("%w: an admin's erasure needs a reason", ErrMalformed)
	}
	k := reading.NewEd25519Key(admin)
	return newErase(Erase{Type: TypeErase, Dev: dev, By: by, From: from, To: to, Reason: reason, Alg: string(reading.Ed25519), Key: reading.Ed25519Public(admin), Time: uint64(t.UnixMilli())}, k.Sign)
}

func newErase(e Erase, sign func([]byte) ([]byte, error)) ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	msg, err := codecs.enc.Marshal(e)
	if err != nil {
		return nil, err
	}
	if e.Sig, err = sign(msg); err != nil {
		return nil, err
	}
	return codecs.enc.Marshal(e)
}

func (e Erase) check() error {
	if !reading.ValidDeviceID(e.Dev) {
		return fmt.Errorf("%w: device id %q is not valid", ErrMalformed, e.Dev)
	}
	if e.By != EraseBySeq && e.By != EraseByTS {
		return fmt.Errorf("%w: erase by %q: want %q or %q", ErrMalformed, e.By, EraseBySeq, EraseByTS)
	}
	if e.From > e.To {
		return fmt.Errorf("%w: erase from %d is after to %d (the range is from..to, both included)", ErrMalformed, e.From, e.To)
	}
	if len(e.Reason) > 1024 {
		return fmt.Errorf("%w: the reason is %d bytes, at most 1024", ErrMalformed, len(e.Reason))
	}
	return checkOwnerKey(e.Alg, e.Key)
}

func decodeErase(b []byte) (Entry, error) {
	var e Erase
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
	return Entry{Type: TypeErase, Erase: &e}, nil
}

// EraseOf returns the erase entry in b.
func EraseOf(b []byte) (*Erase, error) {
	e, err := Decode(b)
	if err != nil {
		return nil, err
	}
	if e.Erase == nil {
		return nil, fmt.Errorf("%w: %s, want %s", errNotKind, e.Type, TypeErase)
	}
	return e.Erase, nil
}
