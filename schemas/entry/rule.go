package entry

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

// TypeRule is the entry of a rule version (schemas/ledger.md "rule").
const TypeRule Type = "rule"

// Operations of a rule entry.
const (
	OpPut    = "put"    // the rule's version Rule.Version, in force from the block that includes it
	OpRetire = "retire" // the rule is out of force from the block that includes it
)

// Rule puts a version of a rule in force, or retires the rule, signed by one admin. A retire
// entry's Rule carries only the id and the next version.
type Rule struct {
	Type  Type      `cbor:"type"`
	Op    string    `cbor:"op"`
	Rule  rule.Rule `cbor:"rule"`
	Time  uint64    `cbor:"time"`
	Admin []byte    `cbor:"admin"`
	Sig   []byte    `cbor:"sig,omitempty"`
}

// NewRule encodes a rule entry (op OpPut or OpRetire) signed by admin. A put's conditions are
// compiled first, so that a rule that does not compile never reaches the ledger (which
// compiles it again); the error says where.
func NewRule(admin ed25519.PrivateKey, op string, r rule.Rule, t time.Time) ([]byte, error) {
	if op == OpPut {
		if _, err := rule.Compile(r); err != nil {
			return nil, err
		}
	}
	e := Rule{Type: TypeRule, Op: op, Rule: r, Time: uint64(t.UnixMilli()), Admin: reading.Ed25519Public(admin)}
	if err := e.check(); err != nil {
		return nil, err
	}
	msg, err := codecs.enc.Marshal(e)
	if err != nil {
		return nil, err
	}
	e.Sig = ed25519.Sign(admin, msg)
	return codecs.enc.Marshal(e)
}

func (e Rule) check() error {
	if len(e.Admin) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: admin key is %d bytes, want %d", ErrMalformed, len(e.Admin), ed25519.PublicKeySize)
	}
	switch e.Op {
	case OpPut:
		if err := e.Rule.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
	case OpRetire:
		r := e.Rule
		if !reading.ValidDeviceID(r.ID) || r.Version == 0 {
			return fmt.Errorf("%w: a retire entry names the rule id and its next version", ErrMalformed)
		}
		r.ID, r.Version = "", 0
		if r.Devices != nil || r.Tags != nil || r.When != "" || r.Clear != "" || r.Last != 0 || r.SpanMS != 0 || r.AbsentMS != 0 || r.Actions != nil {
			return fmt.Errorf("%w: a retire entry's rule carries only id and version", ErrMalformed)
		}
	default:
		return fmt.Errorf("%w: rule op %q: want %q or %q", ErrMalformed, e.Op, OpPut, OpRetire)
	}
	return nil
}

func decodeRule(b []byte) (Entry, error) {
	var e Rule
	if err := strict(b, &e); err != nil {
		return Entry{}, err
	}
	if err := e.check(); err != nil {
		return Entry{}, err
	}
	sig := e.Sig
	e.Sig = nil
	if err := checkSig(e.Admin, e, sig); err != nil {
		return Entry{}, err
	}
	e.Sig = sig
	return Entry{Type: TypeRule, Rule: &e}, nil
}

// Rule status in a rule record.
const (
	RuleActive  = "active"
	RuleRetired = "retired"
)

// RuleRecord is a rule's record in the ledger's rules tree (schemas/ledger.md "rule records"):
// its latest version, whether it is in force, and where the entry that made it is. Its leaf
// in the tree is SHA-256(0x00 || Encode()).
type RuleRecord struct {
	ID      string `cbor:"id"`
	Version uint64 `cbor:"version"`
	Status  string `cbor:"status"`
	Entry   []byte `cbor:"entry"`  // the leaf of the rule entry, SHA-256(0x00 || entry)
	Index   uint64 `cbor:"index"`  // its log index
	Height  uint64 `cbor:"height"` // the block that included it
}

// Encode returns the deterministic encoding of r.
func (r RuleRecord) Encode() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return codecs.enc.Marshal(r)
}

func (r RuleRecord) check() error {
	if !reading.ValidDeviceID(r.ID) || r.Version == 0 {
		return fmt.Errorf("%w: rule record id %q version %d", ErrMalformed, r.ID, r.Version)
	}
	if r.Status != RuleActive && r.Status != RuleRetired {
		return fmt.Errorf("%w: rule record status %q", ErrMalformed, r.Status)
	}
	if len(r.Entry) != 32 {
		return fmt.Errorf("%w: rule record entry leaf is %d bytes, want 32", ErrMalformed, len(r.Entry))
	}
	return nil
}

// DecodeRuleRecord parses a rule record strictly.
func DecodeRuleRecord(b []byte) (RuleRecord, error) {
	var r RuleRecord
	if err := strict(b, &r); err != nil {
		return RuleRecord{}, err
	}
	if err := r.check(); err != nil {
		return RuleRecord{}, err
	}
	return r, nil
}

var errNotRule = errors.New("entry: not a rule entry")

// RuleOf returns the rule entry in b (a rule entry's bytes, as the log holds them).
func RuleOf(b []byte) (*Rule, error) {
	e, err := Decode(b)
	if err != nil {
		return nil, err
	}
	if e.Rule == nil {
		return nil, fmt.Errorf("%w: %s", errNotRule, e.Type)
	}
	return e.Rule, nil
}
