package entry

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func adminKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

func devicePub(seed byte) reading.PublicKey {
	return reading.PublicKey{Alg: reading.Ed25519, Key: adminKey(seed).Public().(ed25519.PublicKey)}
}

var t0 = time.UnixMilli(1_700_000_000_000)

func TestRoundTrip(t *testing.T) {
	admin := adminKey(1)
	reg, err := NewRegister(admin, "dev-1", devicePub(2), t0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Decode(reg)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != TypeRegister || e.Register.Dev != "dev-1" || e.Register.Alg != "ed25519" || e.Device() != "dev-1" ||
		!e.Admin().Equal(admin.Public()) || e.Register.Time != uint64(t0.UnixMilli()) {
		t.Fatalf("register decoded as %+v", e.Register)
	}

	rev, err := NewRevoke(admin, "dev-1", t0)
	if err != nil {
		t.Fatal(err)
	}
	if e, err = Decode(rev); err != nil || e.Type != TypeRevoke || e.Revoke.Dev != "dev-1" {
		t.Fatalf("revoke: %+v %v", e, err)
	}

	var id [16]byte
	var root [32]byte
	id[0], root[0] = 1, 2
	anc, err := NewAnchor(id, root, 3, 300, t0)
	if err != nil {
		t.Fatal(err)
	}
	if e, err = Decode(anc); err != nil || e.Type != TypeAnchor || e.Anchor.Batches != 3 || e.Anchor.Readings != 300 || e.Anchor.ID[0] != 1 {
		t.Fatalf("anchor: %+v %v", e, err)
	}
	if e.Device() != "" || e.Admin() != nil {
		t.Fatal("an anchor has no device or admin")
	}
}

func TestDecodeRejects(t *testing.T) {
	admin := adminKey(1)
	reg, err := NewRegister(admin, "dev-1", devicePub(2), t0)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := cbor.Unmarshal(reg, &m); err != nil {
		t.Fatal(err)
	}
	enc := func(m map[string]any) []byte {
		b, err := codecs.enc.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range m {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	nonDet, err := cbor.EncOptions{Sort: cbor.SortNone}.EncMode()
	if err != nil {
		t.Fatal(err)
	}
	// Same content, keys in a non-canonical order: a map with insertion order is not
	// expressible in Go, so encode a struct with reversed field order.
	type reversed struct {
		Sig   []byte `cbor:"sig"`
		Admin []byte `cbor:"admin"`
		Time  uint64 `cbor:"time"`
		Key   []byte `cbor:"key"`
		Alg   string `cbor:"alg"`
		Dev   string `cbor:"dev"`
		Type  string `cbor:"type"`
	}
	var r Register
	if err := cbor.Unmarshal(reg, &r); err != nil {
		t.Fatal(err)
	}
	rev, err := nonDet.Marshal(reversed{r.Sig, r.Admin, r.Time, r.Key, r.Alg, r.Dev, string(r.Type)})
	if err != nil {
		t.Fatal(err)
	}
	other := adminKey(9)
	otherReg, err := NewRegister(other, "dev-1", devicePub(2), t0)
	if err != nil {
		t.Fatal(err)
	}
	var o map[string]any
	if err := cbor.Unmarshal(otherReg, &o); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"not cbor", []byte{0xff, 0x00}, ErrMalformed},
		{"unknown type", enc(with("type", "mint")), ErrMalformed},
		{"unknown field", enc(with("extra", 1)), ErrMalformed},
		{"missing sig", enc(with("sig", nil)), ErrMalformed},
		{"missing key", enc(with("key", nil)), ErrMalformed},
		{"bad device id", enc(with("dev", "a b")), ErrMalformed},
		{"bad alg", enc(with("alg", "rsa")), ErrMalformed},
		{"short key", enc(with("key", []byte{1, 2})), ErrMalformed},
		{"changed device", enc(with("dev", "dev-2")), ErrBadSignature},
		{"changed time", enc(with("time", uint64(1))), ErrBadSignature},
		{"signature of another admin", enc(with("sig", o["sig"])), ErrBadSignature},
		{"not deterministic", rev, ErrMalformed},
		{"trailing bytes", append(append([]byte(nil), reg...), 0), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Decode(c.b); !errors.Is(err, c.want) {
				t.Fatalf("Decode: %v, want %v", err, c.want)
			}
		})
	}
}

func TestAnchorChecks(t *testing.T) {
	if _, err := (Anchor{ID: make([]byte, 15), Root: make([]byte, 32), Batches: 1}).Encode(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short id: %v", err)
	}
	if _, err := (Anchor{ID: make([]byte, 16), Root: make([]byte, 32)}).Encode(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("zero batches: %v", err)
	}
}

func TestRecord(t *testing.T) {
	r := Record{Dev: "dev-1", Alg: reading.Ed25519, Key: devicePub(2).Key, Status: StatusActive, Height: 12}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Dev != r.Dev || got.Status != r.Status || got.Height != 12 || hex.EncodeToString(got.Key) != hex.EncodeToString(r.Key) {
		t.Fatalf("record round trip: %+v", got)
	}
	pk, err := got.PublicKey()
	if err != nil || pk.Alg != reading.Ed25519 {
		t.Fatalf("public key: %v %v", pk, err)
	}
	r.Status = "lost"
	if _, err := r.Encode(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad status: %v", err)
	}
	if _, err := DecodeRecord(append(b, 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
}

// golden pins the exact bytes of each entry kind: other implementations depend on them.
type golden struct {
	Name  string `json:"name"`
	Bytes string `json:"bytes"`
}

func TestGolden(t *testing.T) {
	admin := adminKey(1)
	var id [16]byte
	var root [32]byte
	for i := range id {
		id[i] = byte(i)
	}
	for i := range root {
		root[i] = byte(0xa0 + i)
	}
	anc, err := NewAnchor(id, root, 12, 12000, t0)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegister(admin, "dev-1", devicePub(2), t0) // Ed25519 signatures are deterministic
	if err != nil {
		t.Fatal(err)
	}
	rev, err := NewRevoke(admin, "dev-1", t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Record{Dev: "dev-1", Alg: reading.Ed25519, Key: devicePub(2).Key, Status: StatusRevoked, Height: 42}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// Authorised writers (after the first release): appended, the vectors above stay as
	// they were.
	anchorKey := adminKey(7)
	signed, err := NewSignedAnchor(anchorKey, id, root, 12, 12000, t0)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := NewAnchorKey(admin, OpAdd, reading.Ed25519Public(anchorKey), t0)
	if err != nil {
		t.Fatal(err)
	}
	val, err := NewValidator(reading.Ed25519Public(adminKey(20)), 10, t0, admin, adminKey(3))
	if err != nil {
		t.Fatal(err)
	}
	adm, err := NewAdmins([]ed25519.PublicKey{reading.Ed25519Public(adminKey(4))}, []ed25519.PublicKey{reading.Ed25519Public(admin)}, 2, t0, admin, adminKey(3))
	if err != nil {
		t.Fatal(err)
	}
	// Rules (automation): appended likewise.
	put, err := NewRule(admin, OpPut, goldenRule(), t0)
	if err != nil {
		t.Fatal(err)
	}
	retire, err := NewRule(admin, OpRetire, rule.Rule{ID: "hot", Version: 2}, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var leaf [32]byte
	leaf[0] = 0xee
	ruleRec, err := RuleRecord{ID: "hot", Version: 1, Status: RuleActive, Entry: leaf[:], Index: 7, Height: 42}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// Owners and consent (identity management): appended likewise; the owner's key is
	// Ed25519, whose signatures are deterministic.
	owner := reading.NewEd25519Key(adminKey(30))
	bind, err := NewOwner(admin, owner, OpBind, "dev-1", t0)
	if err != nil {
		t.Fatal(err)
	}
	grant, err := NewConsent(owner, OpGrant, "dev-1", "research", t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ownerRec, err := OwnerRecord{Dev: "dev-1", Alg: "ed25519", Key: owner.Public().Key, Status: OwnerBound, Time: uint64(t0.UnixMilli()), Entry: leaf[:], Index: 8, Height: 43}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	consentRec, err := ConsentRecord{Dev: "dev-1", Audience: "research", Status: ConsentGranted, Alg: "ed25519", Key: owner.Public().Key, Time: uint64(t0.UnixMilli()) + 1000, Entry: leaf[:], Index: 9, Height: 44}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	optIn, err := NewRegisterOptIn(admin, "dev-2", devicePub(2), t0)
	if err != nil {
		t.Fatal(err)
	}
	optRec, err := Record{Dev: "dev-2", Alg: reading.Ed25519, Key: devicePub(2).Key, Status: StatusActive, Height: 45, OptIn: true}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	eraseOwner, err := NewEraseByOwner(owner, "dev-1", EraseBySeq, 3, 9, "", t0.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	eraseAdmin, err := NewEraseByAdmin(admin, "dev-1", EraseByTS, 1700000000000, 1700000060000, "court order 17", t0.Add(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := []golden{
		{"anchor", hex.EncodeToString(anc)},
		{"register", hex.EncodeToString(reg)},
		{"revoke", hex.EncodeToString(rev)},
		{"record", hex.EncodeToString(rec)},
		{"anchor_signed", hex.EncodeToString(signed)},
		{"anchor_key", hex.EncodeToString(ak)},
		{"validator", hex.EncodeToString(val)},
		{"admins", hex.EncodeToString(adm)},
		{"rule_put", hex.EncodeToString(put)},
		{"rule_retire", hex.EncodeToString(retire)},
		{"rule_record", hex.EncodeToString(ruleRec)},
		{"owner_bind", hex.EncodeToString(bind)},
		{"consent_grant", hex.EncodeToString(grant)},
		{"owner_record", hex.EncodeToString(ownerRec)},
		{"consent_record", hex.EncodeToString(consentRec)},
		{"register_opt_in", hex.EncodeToString(optIn)},
		{"record_opt_in", hex.EncodeToString(optRec)},
		{"erase_by_owner", hex.EncodeToString(eraseOwner)},
		{"erase_by_admin", hex.EncodeToString(eraseAdmin)},
	}
	path := filepath.Join("testdata", "entries.json")
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	var want []golden
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Fatalf("golden has %d entries, want %d", len(want), len(got))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Errorf("%s: got %s\nwant %s", got[i].Name, got[i].Bytes, want[i].Bytes)
		}
		raw, _ := hex.DecodeString(want[i].Bytes)
		var err error
		switch want[i].Name {
		case "record", "record_opt_in":
			_, err = DecodeRecord(raw)
		case "rule_record":
			_, err = DecodeRuleRecord(raw)
		case "owner_record":
			_, err = DecodeOwnerRecord(raw)
		case "consent_record":
			_, err = DecodeConsentRecord(raw)
		default:
			_, err = Decode(raw)
		}
		if err != nil {
			t.Errorf("golden %s: %v", want[i].Name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	reg, _ := NewRegister(adminKey(1), "dev-1", devicePub(2), t0)
	f.Add(reg)
	var id [16]byte
	var root [32]byte
	signed, _ := NewSignedAnchor(adminKey(7), id, root, 1, 1, t0)
	f.Add(signed)
	val, _ := NewValidator(reading.Ed25519Public(adminKey(20)), 10, t0, adminKey(1), adminKey(3))
	f.Add(val)
	adm, _ := NewAdmins(nil, []ed25519.PublicKey{reading.Ed25519Public(adminKey(1))}, 1, t0, adminKey(1))
	f.Add(adm)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		var again []byte
		switch e.Type {
		case TypeAnchor:
			again, err = e.Anchor.Encode()
		case TypeAnchorKey:
			again, err = codecs.enc.Marshal(e.AnchorKey)
		case TypeValidator:
			again, err = codecs.enc.Marshal(e.Validator)
		case TypeAdmins:
			again, err = codecs.enc.Marshal(e.Admins)
		default:
			return
		}
		if err != nil || string(again) != string(b) {
			t.Fatalf("accepted bytes that do not re-encode identically: %v", err)
		}
	})
}
