package verify

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"github.com/veraison/go-cose"

	"github.com/anchorline/anchorline/schemas/reading"
)

func key(t testing.TB, alg reading.Alg) reading.PrivateKey {
	k, err := reading.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t testing.TB, dev string, seq uint64, k reading.PrivateKey) []byte {
	raw, err := reading.Sign(reading.Reading{Device: dev, Seq: seq, TS: uint64(time.Now().UnixMilli()), Metrics: []reading.Metric{{Name: "temp", Value: 21.5}}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func coseRaw(t *testing.T, kid string, payload any, k ed25519.PrivateKey) []byte {
	p, err := cbor.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := cose.NewSigner(cose.AlgorithmEdDSA, k)
	if err != nil {
		t.Fatal(err)
	}
	m := cose.NewSign1Message()
	m.Headers.Protected.SetAlgorithm(cose.AlgorithmEdDSA)
	m.Headers.Protected[cose.HeaderLabelKeyID] = []byte(kid)
	m.Payload = p
	if err := m.Sign(rand.Reader, nil, s); err != nil {
		t.Fatal(err)
	}
	raw, err := m.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestCheckClassifies(t *testing.T) {
	ctx := context.Background()
	ed, es, revoked := key(t, reading.Ed25519), key(t, reading.ES256), key(t, reading.Ed25519)
	keys := NewKeys(nil)
	keys.Apply([]Key{
		{Device: "ed", Key: ed.Public(), Height: 1},
		{Device: "es", Key: es.Public(), Height: 1},
		{Device: "gone", Key: revoked.Public(), Revoked: true, Height: 5},
		{Device: "wrongalg", Key: es.Public(), Height: 1},
	})
	v := New(keys, reading.MaxSize)
	badSig := sign(t, "ed", 2, ed)
	badSig[len(badSig)-3] ^= 0x10
	_, raw, _ := ed25519.GenerateKey(rand.Reader)
	now := uint64(time.Now().UnixMilli())
	big := make(map[string]string)
	for i := range 300 {
		big[strings.Repeat("k", 10)+string(rune('a'+i%26))+strings.Repeat("x", i%7)+string(rune('0'+i%10))+string(rune('A'+i/26))] = strings.Repeat("v", 30)
	}
	bigRaw, err := reading.Sign(reading.Reading{Device: "ed", Seq: 9, TS: now, Metrics: []reading.Metric{{Name: "x", Value: 1}}, Tags: big}, ed)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, subject string
		raw           []byte
		want          string
	}{
		{"ed25519 ok", "iot.readings.ed", sign(t, "ed", 1, ed), ""},
		{"es256 ok", "iot.readings.es", sign(t, "es", 1, es), ""},
		{"bad signature", "iot.readings.ed", badSig, BadSignature},
		{"signed by another key", "iot.readings.es", sign(t, "es", 2, key(t, reading.ES256)), BadSignature},
		{"alg differs from the registered key", "iot.readings.wrongalg", sign(t, "wrongalg", 1, ed), BadSignature},
		{"unknown device", "iot.readings.nobody", sign(t, "nobody", 1, ed), UnknownDevice},
		{"revoked device", "iot.readings.gone", sign(t, "gone", 1, revoked), RevokedDevice},
		{"kid mismatch", "iot.readings.ed", coseRaw(t, "ed", map[string]any{"dev": "es", "seq": 1, "ts": now, "m": map[string]any{"x": 1}}, raw), KIDMismatch},
		{"subject mismatch", "iot.readings.es", sign(t, "ed", 3, ed), SubjectMismatch},
		{"not cbor", "iot.readings.ed", []byte("hello"), BadCBOR},
		{"no metrics", "iot.readings.ed", coseRaw(t, "ed", map[string]any{"dev": "ed", "seq": 1, "ts": now}, raw), BadPayload},
		{"too large", "iot.readings.ed", bigRaw, TooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Check(ctx, tc.subject, tc.raw)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if got.Leaf != reading.Leaf(tc.raw) || got.Msg == nil {
					t.Fatal("verified reading without its leaf")
				}
				return
			}
			var r *Rejection
			if !errors.As(err, &r) || r.Reason != tc.want || r.Detail == "" {
				t.Fatalf("got %v, want a %s rejection", err, tc.want)
			}
		})
	}
	if len(bigRaw) <= reading.MaxSize {
		t.Fatalf("the oversize reading is only %d bytes", len(bigRaw))
	}
}

func TestKeysFetchAndNegativeCache(t *testing.T) {
	ctx := context.Background()
	k := key(t, reading.Ed25519)
	var calls atomic.Int32
	registered := atomic.Bool{}
	keys := NewKeys(func(_ context.Context, dev string) (Key, bool, error) {
		calls.Add(1)
		if dev == "down" {
			return Key{}, false, errors.New("ledger unreachable")
		}
		if !registered.Load() {
			return Key{}, false, nil
		}
		return Key{Device: dev, Key: k.Public(), Height: 3}, true, nil
	})
	keys.negTTL = time.Hour
	if _, ok, err := keys.Lookup(ctx, "d"); ok || err != nil {
		t.Fatalf("unknown: %v %v", ok, err)
	}
	registered.Store(true)
	if _, ok, _ := keys.Lookup(ctx, "d"); ok || calls.Load() != 1 {
		t.Fatalf("negative answer not cached: ok=%v calls=%d", ok, calls.Load())
	}
	// A block that registers it clears the negative entry.
	keys.Apply([]Key{{Device: "d", Key: k.Public(), Height: 3}})
	if got, ok, _ := keys.Lookup(ctx, "d"); !ok || got.Height != 3 {
		t.Fatalf("after apply: %+v %v", got, ok)
	}
	// An older record does not replace a newer one.
	keys.Apply([]Key{{Device: "d", Key: k.Public(), Height: 2, Revoked: true}})
	if got, _, _ := keys.Lookup(ctx, "d"); got.Revoked {
		t.Fatal("older record replaced a newer one")
	}
	keys.Apply([]Key{{Device: "d", Key: k.Public(), Height: 4, Revoked: true}})
	if got, _, _ := keys.Lookup(ctx, "d"); !got.Revoked {
		t.Fatal("revocation not applied")
	}
	// A miss is fetched from the ledger once, then cached.
	before := calls.Load()
	for range 3 {
		if _, ok, err := keys.Lookup(ctx, "fresh"); !ok || err != nil {
			t.Fatalf("fresh: %v %v", ok, err)
		}
	}
	if calls.Load() != before+1 {
		t.Fatalf("%d fetches for one device", calls.Load()-before)
	}
	// A ledger error is an error (retry), not a rejection.
	v := New(keys, reading.MaxSize)
	if _, err := v.Check(ctx, "iot.readings.down", sign(t, "down", 1, k)); err == nil || errors.As(err, new(*Rejection)) {
		t.Fatalf("ledger down: %v", err)
	}
}

// Ingest (curve25519-voi with cached expanded keys) and the offline verifier (crypto/ed25519,
// through reading.Message.Verify) must accept exactly the same signatures.
func TestEd25519RulesMatchStdlib(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("anchorline")
	good := ed25519.Sign(priv, msg)
	cases := map[string][]byte{"valid": good}
	flip := append([]byte(nil), good...)
	flip[5] ^= 1
	cases["flipped R"] = flip
	flipS := append([]byte(nil), good...)
	flipS[40] ^= 1
	cases["flipped S"] = flipS
	// S + L: the same signature with a non-canonical scalar; both must refuse it.
	l := []byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	nonCanon := append([]byte(nil), good...)
	carry := 0
	for i := range 32 {
		s := int(nonCanon[32+i]) + int(l[i]) + carry
		nonCanon[32+i], carry = byte(s), s>>8
	}
	cases["S+L"] = nonCanon
	cases["zero"] = make([]byte, 64)
	high := append([]byte(nil), good...)
	high[63] |= 0xe0
	cases["high bits of S"] = high

	exp, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		t.Fatal(err)
	}
	for name, sig := range cases {
		std := ed25519.Verify(pub, msg, sig)
		fast := voi.VerifyExpandedWithOptions(exp, msg, sig, ed25519Options)
		if std != fast {
			t.Errorf("%s: crypto/ed25519 %v, ingest %v", name, std, fast)
		}
		if name == "valid" && !std {
			t.Error("valid signature refused")
		}
		if name != "valid" && std {
			t.Errorf("%s accepted", name)
		}
	}
}

func BenchmarkCheckEd25519(b *testing.B) {
	k := key(b, reading.Ed25519)
	keys := NewKeys(nil)
	keys.Apply([]Key{{Device: "bench", Key: k.Public(), Height: 1}})
	v := New(keys, reading.MaxSize)
	raw := sign(b, "bench", 1, k)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Check(ctx, "iot.readings.bench", raw); err != nil {
			b.Fatal(err)
		}
	}
}
