package entry

import (
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/anchorline/anchorline/schemas/reading"
)

func TestSignedAnchor(t *testing.T) {
	key := adminKey(7)
	var id [16]byte
	var root [32]byte
	id[0], root[0] = 1, 2
	b, err := NewSignedAnchor(key, id, root, 3, 300, t0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Anchor.Signed() || !reading.Ed25519Public(key).Equal(ed25519.PublicKey(e.Anchor.Key)) || e.Anchor.Batches != 3 {
		t.Fatalf("signed anchor decoded as %+v", e.Anchor)
	}
	again, err := e.Anchor.Encode()
	if err != nil || string(again) != string(b) {
		t.Fatalf("re-encode: %v", err)
	}
	unsigned, err := NewAnchor(id, root, 3, 300, t0)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := Decode(unsigned); err != nil || e.Anchor.Signed() {
		t.Fatalf("unsigned anchor: %+v %v", e, err)
	}

	var m map[string]any
	if err := cbor.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	other, err := NewSignedAnchor(adminKey(8), id, root, 3, 300, t0)
	if err != nil {
		t.Fatal(err)
	}
	var o map[string]any
	if err := cbor.Unmarshal(other, &o); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"changed root", reencode(t, m, "root", make([]byte, 32)), ErrBadSignature},
		{"changed readings", reencode(t, m, "readings", uint64(301)), ErrBadSignature},
		{"key of another signer", reencode(t, m, "key", o["key"]), ErrBadSignature},
		{"sig of another signer", reencode(t, m, "sig", o["sig"]), ErrBadSignature},
		{"key without sig", reencode(t, m, "sig", nil), ErrMalformed},
		{"sig without key", reencode(t, m, "key", nil), ErrMalformed},
		{"short key", reencode(t, m, "key", []byte{1}), ErrMalformed},
		{"short sig", reencode(t, m, "sig", []byte{1}), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Decode(c.b); !errors.Is(err, c.want) {
				t.Fatalf("Decode: %v, want %v", err, c.want)
			}
		})
	}
}

func TestAnchorKeyEntry(t *testing.T) {
	admin := adminKey(1)
	anchorPub := reading.Ed25519Public(adminKey(7))
	b, err := NewAnchorKey(admin, OpAdd, anchorPub, t0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != TypeAnchorKey || e.AnchorKey.Op != OpAdd || !anchorPub.Equal(ed25519.PublicKey(e.AnchorKey.Key)) || !e.Admin().Equal(reading.Ed25519Public(admin)) {
		t.Fatalf("anchor_key decoded as %+v", e.AnchorKey)
	}
	if _, err := NewAnchorKey(admin, "replace", anchorPub, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad op: %v", err)
	}
	var m map[string]any
	if err := cbor.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		k    string
		v    any
		want error
	}{
		"changed op":  {"op", OpRemove, ErrBadSignature},
		"changed key": {"key", make([]byte, 32), ErrBadSignature},
		"missing sig": {"sig", nil, ErrMalformed},
		"bad op":      {"op", "flip", ErrMalformed},
	} {
		if _, err := Decode(reencode(t, m, c.k, c.v)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func TestThresholdEntries(t *testing.T) {
	a1, a2, a3 := adminKey(1), adminKey(2), adminKey(3)
	val := reading.Ed25519Public(adminKey(20))
	b, err := NewValidator(val, 10, t0, a2, a1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Validator.Power != 10 || len(e.Signers()) != 2 {
		t.Fatalf("validator decoded as %+v", e.Validator)
	}
	// Signatures are kept sorted by key whatever the signing order: the same signers give the
	// same bytes.
	b2, err := NewValidator(val, 10, t0, a1)
	if err != nil {
		t.Fatal(err)
	}
	if b2, err = Cosign(b2, a2); err != nil {
		t.Fatal(err)
	}
	if string(b2) != string(b) {
		t.Fatal("cosigning in another order gave other bytes")
	}
	if _, err := Cosign(b, a1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("signing twice: %v", err)
	}
	b3, err := Cosign(b, a3)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := Decode(b3); err != nil || len(e.Signers()) != 3 {
		t.Fatalf("three signers: %v", err)
	}

	adm, err := NewAdmins([]ed25519.PublicKey{reading.Ed25519Public(a3)}, []ed25519.PublicKey{reading.Ed25519Public(a1)}, 2, t0, a1, a2)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := Decode(adm); err != nil || e.Admins.Threshold != 2 || len(e.Admins.Add) != 1 || len(e.Admins.Remove) != 1 {
		t.Fatalf("admins: %+v %v", e, err)
	}
	if _, err := NewAdmins(nil, nil, 0, t0, a1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("threshold 0: %v", err)
	}
	if _, err := NewAdmins([]ed25519.PublicKey{reading.Ed25519Public(a3)}, []ed25519.PublicKey{reading.Ed25519Public(a3)}, 1, t0, a1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a key added and removed: %v", err)
	}

	var m map[string]any
	if err := cbor.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	sigs, ok := m["sigs"].([]any)
	if !ok || len(sigs) != 2 {
		t.Fatalf("sigs: %T", m["sigs"])
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"changed power", reencode(t, m, "power", uint64(1000)), ErrBadSignature},
		{"changed key", reencode(t, m, "pub_key", make([]byte, 32)), ErrBadSignature},
		{"no sigs", reencode(t, m, "sigs", []any{}), ErrMalformed},
		{"sigs missing", reencode(t, m, "sigs", nil), ErrMalformed},
		{"sigs out of order", reencode(t, m, "sigs", []any{sigs[1], sigs[0]}), ErrMalformed},
		{"one admin twice", reencode(t, m, "sigs", []any{sigs[0], sigs[0]}), ErrMalformed},
		{"short pub_key", reencode(t, m, "pub_key", []byte{1}), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Decode(c.b); !errors.Is(err, c.want) {
				t.Fatalf("Decode: %v, want %v", err, c.want)
			}
		})
	}
}

// reencode returns m with key k set to v (deleted if v is nil), deterministically encoded.
func reencode(t *testing.T, m map[string]any, k string, v any) []byte {
	t.Helper()
	c := map[string]any{}
	for kk, vv := range m {
		c[kk] = vv
	}
	if v == nil {
		delete(c, k)
	} else {
		c[k] = v
	}
	b, err := codecs.enc.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
