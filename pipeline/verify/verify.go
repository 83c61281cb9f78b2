package verify

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Reason is why a message was refused: the value of the `reason` column of the rejected table
// (DESIGN 2.5), which analysts filter on, and of the reason label of the rejected-messages
// metric. The values are a contract: add new ones, never rename one.
type Reason string

// The reasons.
const (
	TooLarge        Reason = "too_large"        // more bytes than the size limit
	BadCBOR         Reason = "bad_cbor"         // not a tagged COSE_Sign1 message of valid CBOR
	BadPayload      Reason = "bad_payload"      // the payload breaks DESIGN 2.1 (fields, names, values)
	UnsupportedAlg  Reason = "unsupported_alg"  // signed with neither EdDSA nor ES256
	KIDMismatch     Reason = "kid_mismatch"     // the payload's dev is not the header's kid
	SubjectMismatch Reason = "subject_mismatch" // published on another device's subject
	ClockSkew       Reason = "clock_skew"       // device time too far ahead of ours, or too old
	TooManyMetrics  Reason = "too_many_metrics" // more metrics than the limit
	TagsTooLarge    Reason = "tags_too_large"   // more tags, or longer ones, than the limits
	UnknownDevice   Reason = "unknown_device"   // the device is not registered on the ledger
	RevokedDevice   Reason = "revoked_device"   // the device's key was revoked
	BadSignature    Reason = "bad_signature"    // the signature does not verify under the registered key
	// NoConsent: the device was registered to need its owner's consent to collection and none
	// is in force; the reject row keeps the reading's leaf but not its bytes.
	NoConsent Reason = "no_consent"
)

// Limits are what a fleet's operator bounds; zero values take the defaults of DefaultLimits.
type Limits struct {
	MaxSize    int              // bytes of a reading on the wire
	MaxFuture  time.Duration    // device time ahead of ours
	MaxAge     time.Duration    // device time behind ours; 0: no limit
	MaxMetrics int              // metrics per reading
	MaxTags    int              // tags per reading
	MaxTagLen  int              // bytes of a tag key or value
	Now        func() time.Time // the clock device time is compared with; time.Now if nil
	// Collect says whether an opt-in device's owner consents to collection now, and the
	// ledger height of the answer; nil refuses every opt-in device's readings.
	Collect func(ctx context.Context, device string) (bool, uint64, error)
}

// DefaultLimits are the limits of a default configuration.
func DefaultLimits() Limits {
	return Limits{MaxSize: reading.MaxSize, MaxFuture: 5 * time.Minute, MaxAge: 30 * 24 * time.Hour, MaxMetrics: 64, MaxTags: 32, MaxTagLen: 128}
}

// Rejection is why a message is refused; ingest stores it with the message in `rejected`.
type Rejection struct {
	Reason Reason
	Detail string
	Device string // if known
}

func (r *Rejection) Error() string { return string(r.Reason) + ": " + r.Detail }

// Verified is a reading that passed every check.
type Verified struct {
	Msg  *reading.Message
	Leaf [32]byte
}

// Verifier checks messages against the device keys and the limits.
type Verifier struct {
	keys *Keys
	lim  Limits
}

// New returns a verifier.
func New(keys *Keys, lim Limits) *Verifier {
	d := DefaultLimits()
	if lim.MaxSize <= 0 {
		lim.MaxSize = d.MaxSize
	}
	if lim.MaxFuture <= 0 {
		lim.MaxFuture = d.MaxFuture
	}
	if lim.MaxMetrics <= 0 {
		lim.MaxMetrics = d.MaxMetrics
	}
	if lim.MaxTagLen <= 0 {
		lim.MaxTagLen = d.MaxTagLen
	}
	if lim.Now == nil {
		lim.Now = time.Now
	}
	return &Verifier{keys: keys, lim: lim}
}

// limits checks the payload against the operator's bounds at time now.
func (v *Verifier) limits(r reading.Reading, now time.Time) *Rejection {
	ts := time.UnixMilli(int64(r.TS))
	if r.TS > uint64(now.Add(v.lim.MaxFuture).UnixMilli()) {
		return &Rejection{ClockSkew, fmt.Sprintf("device time %s is %s ahead (limit %s)", ts.UTC().Format(time.RFC3339Nano), ts.Sub(now).Round(time.Millisecond), v.lim.MaxFuture), r.Device}
	}
	if v.lim.MaxAge > 0 && r.TS < uint64(max(now.Add(-v.lim.MaxAge).UnixMilli(), 0)) {
		return &Rejection{ClockSkew, fmt.Sprintf("device time %s is %s old (limit %s)", ts.UTC().Format(time.RFC3339Nano), now.Sub(ts).Round(time.Second), v.lim.MaxAge), r.Device}
	}
	if len(r.Metrics) > v.lim.MaxMetrics {
		return &Rejection{TooManyMetrics, fmt.Sprintf("%d metrics, the limit is %d", len(r.Metrics), v.lim.MaxMetrics), r.Device}
	}
	if len(r.Tags) > v.lim.MaxTags {
		return &Rejection{TagsTooLarge, fmt.Sprintf("%d tags, the limit is %d", len(r.Tags), v.lim.MaxTags), r.Device}
	}
	for k, val := range r.Tags {
		if len(k) > v.lim.MaxTagLen || len(val) > v.lim.MaxTagLen {
			return &Rejection{TagsTooLarge, fmt.Sprintf("tag %.32q is %d+%d bytes, the limit is %d each", k, len(k), len(val), v.lim.MaxTagLen), r.Device}
		}
	}
	return nil
}

// Check verifies one message received on subject. A *Rejection error means the message is bad
// and must be quarantined; any other error means the check could not be made (the ledger did
// not answer) and must be retried.
func (v *Verifier) Check(ctx context.Context, subject string, raw []byte) (Verified, error) {
	p, err := v.prepare(ctx, subject, raw, new(reading.Message), v.lim.Now())
	if err != nil {
		return Verified{}, err
	}
	return p.verifyOne()
}

// pending is a message that passed every check but its signature.
type pending struct {
	msg *reading.Message
	key *cached
	raw []byte
}

func (p pending) verifyOne() (Verified, error) {
	dev := p.msg.Reading.Device
	if p.key.expanded != nil {
		if !voi.VerifyExpandedWithOptions(p.key.expanded, p.msg.SigStructure(), p.msg.Signature(), reading.Ed25519Rules()) {
			return Verified{}, &Rejection{BadSignature, "Ed25519 signature does not verify under the registered key", dev}
		}
	} else if err := p.msg.Verify(p.key.Key.Key); err != nil {
		return Verified{}, &Rejection{BadSignature, err.Error(), dev}
	}
	return Verified{Msg: p.msg, Leaf: reading.Leaf(p.raw)}, nil
}

// Input is one message to check.
type Input struct {
	Subject string
	Raw     []byte
}

// Result is the outcome of one Input: Err is nil, a *Rejection, or an error to retry.
type Result struct {
	Verified
	Err error
}

// CheckBatch checks many messages at once; out[i] is the result of in[i]. Ed25519 signatures
// are verified together (batch verification with the cached expanded keys, same rules as a
// single check); if the batch fails, each signature is checked alone and only the bad ones
// are rejected.
//
// The work that does not depend on the reading is done once per call: the clock is read once,
// the messages are decoded into one slice and their signed bytes built in one buffer (the
// Verified messages of one call share them).
func (v *Verifier) CheckBatch(ctx context.Context, in []Input, out []Result) {
	bv := voi.NewBatchVerifierWithCapacity(len(in))
	opts := reading.Ed25519Rules()
	now := v.lim.Now()
	var batched []int
	ps := make([]pending, len(in))
	msgs := make([]reading.Message, len(in))
	size := 0
	for _, m := range in {
		size += len(m.Raw) + 32 // the signed bytes are the raw bytes but the signature, plus a header
	}
	signed := make([]byte, 0, size)
	for i, m := range in {
		p, err := v.prepare(ctx, m.Subject, m.Raw, &msgs[i], now)
		if err != nil {
			out[i] = Result{Err: err}
			continue
		}
		ps[i] = p
		if p.key.expanded == nil {
			out[i].Verified, out[i].Err = p.verifyOne()
			continue
		}
		from := len(signed)
		signed = p.msg.AppendSigStructure(signed)
		bv.AddExpandedWithOptions(p.key.expanded, signed[from:len(signed):len(signed)], p.msg.Signature(), opts)
		batched = append(batched, i)
	}
	if len(batched) == 0 {
		return
	}
	_, valid := bv.Verify(rand.Reader)
	for j, i := range batched {
		if valid[j] {
			out[i] = Result{Verified: Verified{Msg: ps[i].msg, Leaf: reading.Leaf(in[i].Raw)}}
			continue
		}
		out[i] = Result{Err: &Rejection{BadSignature, "Ed25519 signature does not verify under the registered key", ps[i].msg.Reading.Device}}
	}
}

// isSubject reports whether subject is reading.Subject(device), without building it.
func isSubject(subject, device string) bool {
	return len(subject) == len(reading.SubjectPrefix)+len(device) && strings.HasPrefix(subject, reading.SubjectPrefix) &&
		subject[len(reading.SubjectPrefix):] == device
}

// prepare runs every check but the signature's, decoding raw into msg; now is the time device
// clocks are compared with.
func (v *Verifier) prepare(ctx context.Context, subject string, raw []byte, msg *reading.Message, now time.Time) (pending, error) {
	if len(raw) > v.lim.MaxSize {
		return pending{}, &Rejection{TooLarge, fmt.Sprintf("%d bytes, the limit is %d", len(raw), v.lim.MaxSize), ""}
	}
	if err := reading.DecodeInto(msg, raw); err != nil {
		reason := BadCBOR
		switch {
		case errors.Is(err, reading.ErrBadPayload):
			reason = BadPayload
		case errors.Is(err, reading.ErrKIDMismatch):
			reason = KIDMismatch
		case errors.Is(err, reading.ErrUnsupportedAlg):
			reason = UnsupportedAlg
		}
		return pending{}, &Rejection{reason, err.Error(), ""} // the kid of a message that does not decode is not evidence
	}
	dev := msg.Reading.Device
	if !isSubject(subject, dev) {
		return pending{}, &Rejection{SubjectMismatch, fmt.Sprintf("published on %s, signed for %s", subject, reading.Subject(dev)), dev}
	}
	if rej := v.limits(msg.Reading, now); rej != nil {
		return pending{}, rej
	}
	key, ok, err := v.keys.lookup(ctx, dev)
	if err != nil {
		return pending{}, fmt.Errorf("device key of %s: %w", dev, err)
	}
	if !ok {
		return pending{}, &Rejection{UnknownDevice, "device " + dev + " is not registered on the ledger", dev}
	}
	reg := key.Key
	if reg.Revoked {
		return pending{}, &Rejection{RevokedDevice, fmt.Sprintf("device %s was revoked at ledger height %d", dev, reg.Height), dev}
	}
	if reg.Key.Alg != msg.Alg {
		return pending{}, &Rejection{BadSignature, fmt.Sprintf("signed with %s, the registered key is %s", msg.Alg, reg.Key.Alg), dev}
	}
	if reg.OptIn {
		in, height := false, uint64(0)
		if v.lim.Collect != nil {
			if in, height, err = v.lim.Collect(ctx, dev); err != nil {
				return pending{}, fmt.Errorf("consent of %s: %w", dev, err)
			}
		}
		if !in {
			return pending{}, &Rejection{NoConsent, fmt.Sprintf("device %s needs its owner's consent to collection (audience collect), none in force at ledger height %d: the reading's bytes are not stored, only its leaf", dev, height), dev}
		}
	}
	return pending{msg: msg, key: key, raw: raw}, nil
}
