package reading

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// The errors Decode and Verify return; each maps to one reject reason of ingest.
var (
	ErrBadCBOR        = errors.New("reading: not a tagged COSE_Sign1 message")
	ErrBadPayload     = errors.New("reading: invalid payload")
	ErrKIDMismatch    = errors.New("reading: payload dev does not match kid")
	ErrUnsupportedAlg = errors.New("reading: unsupported algorithm")
	ErrBadSignature   = errors.New("reading: signature does not verify")
)

// MaxSize is the default maximum size of a reading on the wire (DESIGN 2.1).
const MaxSize = 8 << 10

// Metric is one named value of a reading.
type Metric struct {
	Name  string
	Value float64
}

// Reading is the payload a device signs.
type Reading struct {
	Device  string            // "dev": equal to the COSE kid
	Seq     uint64            // "seq": increasing per device
	TS      uint64            // "ts": device clock, Unix milliseconds
	Metrics []Metric          // "m": at least one, sorted by name after Decode
	Tags    map[string]string // "tags": optional
	Prev    []byte            // "prev": optional, leaf hash of the device's previous reading
}

// Message is a decoded reading with what verification needs.
type Message struct {
	Alg     Alg
	KID     string
	Reading Reading
	Raw     []byte // the exact bytes received

	msg cose.Sign1Message
	// protected is the content of the protected header byte string, set by the fast path.
	protected []byte
	// payloadText holds the payload's bytes as a string, set by the fast path: the reading's
	// strings are substrings of it (one allocation for all of them).
	payloadText string
	// metrics holds Reading.Metrics when they fit: no allocation for a reading's few metrics.
	metrics [4]Metric
}

// payload is the CBOR shape of the signed map; pointers detect missing fields.
type payload struct {
	Dev  *string           `cbor:"dev"`
	Seq  *uint64           `cbor:"seq"`
	TS   *uint64           `cbor:"ts"`
	M    map[string]any    `cbor:"m"`
	Tags map[string]string `cbor:"tags"`
	Prev []byte            `cbor:"prev"`
}

// Decoding and encoding modes; built once per process from constant options.
type codec struct {
	dec cbor.DecMode
	enc cbor.EncMode
}

func newCodec() codec {
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF, // one meaning per signed byte string
		IndefLength:       cbor.IndefLengthAllowed,
		IntDec:            cbor.IntDecConvertNone,
		DefaultMapType:    nil,
		MaxNestedLevels:   8,
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	}.DecMode()
	if err != nil {
		panic(err) // constant options
	}
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // constant options
	}
	return codec{dec: dec, enc: enc}
}

var codecs = newCodec()

// Decode parses a reading. It checks the COSE structure (tag 18, algorithm, kid, empty
// unprotected header, attached payload) and the payload (DESIGN 2.1), not the signature. The
// message keeps raw (Raw; Reading.Prev may point into it): raw must not be modified while the
// message is in use.
func Decode(raw []byte) (*Message, error) {
	m := new(Message)
	if err := DecodeInto(m, raw); err != nil {
		return nil, err
	}
	return m, nil
}

// DecodeInto is Decode into m, which it overwrites: a caller decoding many messages can keep
// them in one slice instead of allocating each. Its Reading.Metrics may point into m.
func DecodeInto(m *Message, raw []byte) error {
	*m = Message{Raw: raw}
	if !m.decodeCommon() {
		if err := m.decodeCOSE(); err != nil {
			return err
		}
	}
	return m.decodePayload()
}

// decodeCOSE reads the COSE structure of m.Raw with go-cose: any shape the standard allows.
func (m *Message) decodeCOSE() error {
	if err := m.msg.UnmarshalCBOR(m.Raw); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCBOR, err)
	}
	if len(m.msg.Headers.Unprotected) != 0 {
		return fmt.Errorf("%w: unprotected header must be empty", ErrBadCBOR)
	}
	alg, err := m.msg.Headers.Protected.Algorithm()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupportedAlg, err)
	}
	switch alg {
	case cose.AlgorithmEdDSA:
		m.Alg = Ed25519
	case cose.AlgorithmES256:
		m.Alg = ES256
	default:
		return fmt.Errorf("%w: COSE alg %v", ErrUnsupportedAlg, alg)
	}
	kid, ok := m.msg.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
	if !ok {
		return fmt.Errorf("%w: protected header has no kid byte string", ErrBadCBOR)
	}
	m.KID = string(kid)
	if m.msg.Payload == nil {
		return fmt.Errorf("%w: payload is detached", ErrBadCBOR)
	}
	return nil
}

// decodePayload decodes and checks the payload: by hand if it can (fastPayload), else through
// fxamacker/cbor, which accepts any valid encoding and words the errors.
func (m *Message) decodePayload() error {
	text := m.payloadText
	if text == "" {
		text = string(m.msg.Payload)
	}
	if r, ok := fastPayload(m.msg.Payload, text, m.metrics[:0]); ok && r.Device == m.KID {
		m.Reading = r
		return nil
	}
	return m.decodePayloadSlow()
}

func (m *Message) decodePayloadSlow() error {
	var p payload
	if err := codecs.dec.Unmarshal(m.msg.Payload, &p); err != nil {
		return fmt.Errorf("%w: %w", ErrBadPayload, err)
	}
	switch {
	case p.Dev == nil:
		return fmt.Errorf("%w: missing dev", ErrBadPayload)
	case p.Seq == nil:
		return fmt.Errorf("%w: missing seq", ErrBadPayload)
	case p.TS == nil:
		return fmt.Errorf("%w: missing ts", ErrBadPayload)
	case len(p.M) == 0:
		return fmt.Errorf("%w: missing metrics (m needs at least one entry)", ErrBadPayload)
	case p.Prev != nil && len(p.Prev) != sha256.Size:
		return fmt.Errorf("%w: prev is %d bytes, want 32", ErrBadPayload, len(p.Prev))
	}
	if !ValidDeviceID(*p.Dev) {
		return fmt.Errorf("%w: dev %q must match %s", ErrBadPayload, *p.Dev, deviceIDPattern)
	}
	if *p.Dev != m.KID {
		return fmt.Errorf("%w: dev %q, kid %q", ErrKIDMismatch, *p.Dev, m.KID)
	}
	r := Reading{Device: *p.Dev, Seq: *p.Seq, TS: *p.TS, Tags: p.Tags, Prev: p.Prev}
	r.Metrics = make([]Metric, 0, len(p.M))
	for name, v := range p.M {
		if !validMetricName(name) {
			return fmt.Errorf("%w: metric name %q must match %s", ErrBadPayload, name, metricNamePattern)
		}
		f, err := number(v)
		if err != nil {
			return fmt.Errorf("%w: metric %q: %w", ErrBadPayload, name, err)
		}
		r.Metrics = append(r.Metrics, Metric{Name: name, Value: f})
	}
	slices.SortFunc(r.Metrics, func(a, b Metric) int { return strings.Compare(a.Name, b.Name) })
	m.Reading = r
	return nil
}

func number(v any) (float64, error) {
	switch n := v.(type) {
	case uint64:
		return float64(n), nil
	case int64:
		return float64(n), nil
	case float64:
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return 0, errors.New("NaN and infinities are not allowed")
		}
		return n, nil
	case float32:
		f := float64(n)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, errors.New("NaN and infinities are not allowed")
		}
		return f, nil
	}
	return 0, fmt.Errorf("value of type %T is not a number", v)
}

// SigStructure is COSE's ToBeSigned for this message: the CBOR array
// ["Signature1", protected, h”, payload] (RFC 9052 section 4.4). Batch verifiers sign-check
// these bytes directly.
func (m *Message) SigStructure() []byte {
	return m.AppendSigStructure(make([]byte, 0, 16+len(m.msg.Headers.RawProtected)+len(m.protected)+len(m.msg.Payload)+18))
}

// AppendSigStructure appends SigStructure to buf: a batch verifier can keep the signed bytes
// of many messages in one buffer.
func (m *Message) AppendSigStructure(buf []byte) []byte {
	content := m.protected
	if content == nil {
		content = m.unwrapProtected()
	}
	buf = append(buf, 0x84, 0x6a)
	buf = append(buf, "Signature1"...)
	buf = appendBstr(buf, content)
	buf = append(buf, 0x40)
	buf = appendBstr(buf, m.msg.Payload)
	return buf
}

// unwrapProtected is the content of the protected header byte string that go-cose read.
func (m *Message) unwrapProtected() []byte {
	var content []byte
	if err := cbor.Unmarshal(m.msg.Headers.RawProtected, &content); err != nil {
		return nil // cannot happen after Decode: go-cose checked the protected bstr
	}
	return content
}

// Signature is the raw COSE signature (Ed25519 64 bytes, or ES256 r||s 64 bytes).
func (m *Message) Signature() []byte { return m.msg.Signature }

func appendBstr(buf, b []byte) []byte {
	n := uint64(len(b))
	switch {
	case n < 24:
		buf = append(buf, 0x40|byte(n))
	case n <= math.MaxUint8:
		buf = append(buf, 0x58, byte(n))
	case n <= math.MaxUint16:
		buf = append(buf, 0x59)
		buf = binary.BigEndian.AppendUint16(buf, uint16(n))
	case n <= math.MaxUint32:
		buf = append(buf, 0x5a)
		buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	default:
		buf = append(buf, 0x5b)
		buf = binary.BigEndian.AppendUint64(buf, n)
	}
	return append(buf, b...)
}

// Verify checks the signature against pk. The key's algorithm must be the message's.
func (m *Message) Verify(pk PublicKey) error {
	if pk.Alg != m.Alg {
		return fmt.Errorf("%w: message signed with %s, device key is %s", ErrBadSignature, m.Alg, pk.Alg)
	}
	sig := m.msg.Signature
	switch pk.Alg {
	case Ed25519:
		if !VerifyEd25519(pk.Key, m.SigStructure(), sig) {
			return ErrBadSignature
		}
		return nil
	case ES256:
		key, err := parseP256(pk.Key)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadSignature, err)
		}
		v, err := cose.NewVerifier(cose.AlgorithmES256, key)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadSignature, err)
		}
		if err := m.msg.Verify(nil, v); err != nil {
			return fmt.Errorf("%w: %w", ErrBadSignature, err)
		}
		return nil
	}
	return fmt.Errorf("%w: %q", ErrUnsupportedAlg, pk.Alg)
}

// Encode returns the deterministic CBOR payload of r.
func (r Reading) Encode() ([]byte, error) {
	if len(r.Metrics) == 0 {
		return nil, fmt.Errorf("%w: at least one metric is required", ErrBadPayload)
	}
	if !ValidDeviceID(r.Device) {
		return nil, fmt.Errorf("%w: device id %q must match %s", ErrBadPayload, r.Device, deviceIDPattern)
	}
	m := make(map[string]float64, len(r.Metrics))
	for _, mt := range r.Metrics {
		if !validMetricName(mt.Name) {
			return nil, fmt.Errorf("%w: metric name %q must match %s", ErrBadPayload, mt.Name, metricNamePattern)
		}
		if math.IsNaN(mt.Value) || math.IsInf(mt.Value, 0) {
			return nil, fmt.Errorf("%w: metric %q is not finite", ErrBadPayload, mt.Name)
		}
		m[mt.Name] = mt.Value
	}
	out := map[string]any{"dev": r.Device, "seq": r.Seq, "ts": r.TS, "m": m}
	if len(r.Tags) > 0 {
		out["tags"] = r.Tags
	}
	if r.Prev != nil {
		out["prev"] = r.Prev
	}
	b, err := codecs.enc.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("reading: encode payload: %w", err)
	}
	return b, nil
}

// Sign encodes r and signs it with key as a tagged COSE_Sign1 message whose kid is r.Device.
func Sign(r Reading, key PrivateKey) ([]byte, error) {
	payload, err := r.Encode()
	if err != nil {
		return nil, err
	}
	var alg cose.Algorithm
	var signer cose.Signer
	switch key.alg {
	case Ed25519:
		alg = cose.AlgorithmEdDSA
		signer, err = cose.NewSigner(alg, key.ed)
	case ES256:
		alg = cose.AlgorithmES256
		signer, err = cose.NewSigner(alg, key.ec)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedAlg, key.alg)
	}
	if err != nil {
		return nil, fmt.Errorf("reading: signer: %w", err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(alg)
	msg.Headers.Protected[cose.HeaderLabelKeyID] = []byte(r.Device)
	msg.Payload = payload
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		return nil, fmt.Errorf("reading: sign: %w", err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		return nil, fmt.Errorf("reading: encode COSE_Sign1: %w", err)
	}
	return raw, nil
}

// Leaf is the reading leaf hash of DESIGN 2.2, SHA-256(0x00 || raw): what a device puts in
// the next reading's prev. It equals anchor/merkle.ReadingLeaf (schemas imports no anchor code).
func Leaf(raw []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(raw)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
