package verify

import (
	"context"
	"errors"
	"fmt"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Reject reasons: the `reason` column of the rejected table.
const (
	TooLarge        = "too_large"
	BadCBOR         = "bad_cbor"
	BadPayload      = "bad_payload"
	UnsupportedAlg  = "unsupported_alg"
	KIDMismatch     = "kid_mismatch"
	SubjectMismatch = "subject_mismatch"
	UnknownDevice   = "unknown_device"
	RevokedDevice   = "revoked_device"
	BadSignature    = "bad_signature"
)

// Rejection is why a message is refused; ingest stores it with the message in `rejected`.
type Rejection struct {
	Reason string
	Detail string
	Device string // if known
}

func (r *Rejection) Error() string { return r.Reason + ": " + r.Detail }

// Verified is a reading that passed every check.
type Verified struct {
	Msg  *reading.Message
	Leaf [32]byte
}

// ed25519Options are the verification rules for Ed25519: those of Go's crypto/ed25519 (which
// the offline verifier uses), so that ingest and auditors accept exactly the same signatures.
var ed25519Options = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// Verifier checks messages against the device keys.
type Verifier struct {
	keys    *Keys
	maxSize int
}

// New returns a verifier; maxSize is the largest reading accepted.
func New(keys *Keys, maxSize int) *Verifier { return &Verifier{keys: keys, maxSize: maxSize} }

// Check verifies one message received on subject. A *Rejection error means the message is bad
// and must be quarantined; any other error means the check could not be made (the ledger did
// not answer) and must be retried.
func (v *Verifier) Check(ctx context.Context, subject string, raw []byte) (Verified, error) {
	if len(raw) > v.maxSize {
		return Verified{}, &Rejection{TooLarge, fmt.Sprintf("%d bytes, the limit is %d", len(raw), v.maxSize), ""}
	}
	msg, err := reading.Decode(raw)
	if err != nil {
		reason := BadCBOR
		switch {
		case errors.Is(err, reading.ErrBadPayload):
			reason = BadPayload
		case errors.Is(err, reading.ErrKIDMismatch):
			reason = KIDMismatch
		case errors.Is(err, reading.ErrUnsupportedAlg):
			reason = UnsupportedAlg
		}
		dev := ""
		if msg != nil {
			dev = msg.KID
		}
		return Verified{}, &Rejection{reason, err.Error(), dev}
	}
	dev := msg.Reading.Device
	if want := reading.Subject(dev); subject != want {
		return Verified{}, &Rejection{SubjectMismatch, fmt.Sprintf("published on %s, signed for %s", subject, want), dev}
	}
	key, ok, err := v.keys.lookup(ctx, dev)
	if err != nil {
		return Verified{}, fmt.Errorf("device key of %s: %w", dev, err)
	}
	if !ok {
		return Verified{}, &Rejection{UnknownDevice, "device " + dev + " is not registered on the ledger", dev}
	}
	reg := key.Key
	if reg.Revoked {
		return Verified{}, &Rejection{RevokedDevice, fmt.Sprintf("device %s was revoked at ledger height %d", dev, reg.Height), dev}
	}
	if reg.Key.Alg != msg.Alg {
		return Verified{}, &Rejection{BadSignature, fmt.Sprintf("signed with %s, the registered key is %s", msg.Alg, reg.Key.Alg), dev}
	}
	if key.expanded != nil {
		if !voi.VerifyExpandedWithOptions(key.expanded, msg.SigStructure(), msg.Signature(), ed25519Options) {
			return Verified{}, &Rejection{BadSignature, "Ed25519 signature does not verify under the registered key", dev}
		}
	} else if err := msg.Verify(reg.Key); err != nil {
		return Verified{}, &Rejection{BadSignature, err.Error(), dev}
	}
	return Verified{Msg: msg, Leaf: reading.Leaf(raw)}, nil
}
