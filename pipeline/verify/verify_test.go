package verify

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
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
	v := New(keys, DefaultLimits())
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
		want          Reason
	}{
		{"ed25519 ok", reading.Subject("ed"), sign(t, "ed", 1, ed), ""},
		{"es256 ok", reading.Subject("es"), sign(t, "es", 1, es), ""},
		{"bad signature", reading.Subject("ed"), badSig, BadSignature},
		{"signed by another key", reading.Subject("es"), sign(t, "es", 2, key(t, reading.ES256)), BadSignature},
		{"alg differs from the registered key", reading.Subject("wrongalg"), sign(t, "wrongalg", 1, ed), BadSignature},
		{"unknown device", reading.Subject("nobody"), sign(t, "nobody", 1, ed), UnknownDevice},
		{"revoked device", reading.Subject("gone"), sign(t, "gone", 1, revoked), RevokedDevice},
		{"kid mismatch", reading.Subject("ed"), coseRaw(t, "ed", map[string]any{"dev": "es", "seq": 1, "ts": now, "m": map[string]any{"x": 1}}, raw), KIDMismatch},
		{"subject mismatch", reading.Subject("es"), sign(t, "ed", 3, ed), SubjectMismatch},
		{"not cbor", reading.Subject("ed"), []byte("hello"), BadCBOR},
		{"no metrics", reading.Subject("ed"), coseRaw(t, "ed", map[string]any{"dev": "ed", "seq": 1, "ts": now}, raw), BadPayload},
		{"too large", reading.Subject("ed"), bigRaw, TooLarge},
		{"device clock ahead", reading.Subject("ed"), signAt(t, ed, time.Now().Add(6*time.Minute), 1, nil), ClockSkew},
		{"device clock slightly ahead", reading.Subject("ed"), signAt(t, ed, time.Now().Add(4*time.Minute), 1, nil), ""},
		{"reading too old", reading.Subject("ed"), signAt(t, ed, time.Now().Add(-31*24*time.Hour), 1, nil), ClockSkew},
		{"too many metrics", reading.Subject("ed"), signAt(t, ed, time.Now(), 65, nil), TooManyMetrics},
		{"64 metrics", reading.Subject("ed"), signAt(t, ed, time.Now(), 64, nil), ""},
		{"too many tags", reading.Subject("ed"), signAt(t, ed, time.Now(), 1, tags(33, 4)), TagsTooLarge},
		{"tag too long", reading.Subject("ed"), signAt(t, ed, time.Now(), 1, tags(1, 129)), TagsTooLarge},
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

func signAt(t *testing.T, k reading.PrivateKey, at time.Time, metrics int, tags map[string]string) []byte {
	t.Helper()
	var ms []reading.Metric
	for i := range metrics {
		ms = append(ms, reading.Metric{Name: fmt.Sprintf("m%03d", i), Value: float64(i)})
	}
	raw, err := reading.Sign(reading.Reading{Device: "ed", Seq: 1, TS: uint64(at.UnixMilli()), Metrics: ms, Tags: tags}, k)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func tags(n, size int) map[string]string {
	out := map[string]string{}
	for i := range n {
		out[fmt.Sprintf("t%d", i)] = strings.Repeat("v", size)
	}
	return out
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
	v := New(keys, DefaultLimits())
	if _, err := v.Check(ctx, reading.Subject("down"), sign(t, "down", 1, k)); err == nil || errors.As(err, new(*Rejection)) {
		t.Fatalf("ledger down: %v", err)
	}
}

// Batch verification (what ingest does) and single verification (what the offline verifier
// does, reading.VerifyEd25519) accept exactly the same signatures: the ZIP-215 vectors, which
// include small-order and non-canonical points, and corrupted ordinary signatures.
func TestBatchMatchesSingle(t *testing.T) {
	b, err := os.ReadFile("../../schemas/reading/testdata/zip215.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs [][2]string
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	type sigCase struct{ pub, msg, sig []byte }
	var cases []sigCase
	for _, v := range vs {
		pub, _ := hex.DecodeString(v[0])
		sig, _ := hex.DecodeString(v[1])
		cases = append(cases, sigCase{pub, []byte("Zcash"), sig})
	}
	for i := range 64 {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		msg := []byte{byte(i)}
		sig := ed25519.Sign(priv, msg)
		if i%3 == 0 {
			sig[i%64] ^= 1 << (i % 8)
		}
		cases = append(cases, sigCase{pub, msg, sig})
	}
	bv := voi.NewBatchVerifier()
	for _, c := range cases {
		exp, err := voi.NewExpandedPublicKey(voi.PublicKey(c.pub))
		if err != nil {
			t.Fatal(err)
		}
		bv.AddExpandedWithOptions(exp, c.msg, c.sig, reading.Ed25519Rules())
	}
	_, valid := bv.Verify(rand.Reader)
	accepted := 0
	for i, c := range cases {
		single := reading.VerifyEd25519(c.pub, c.msg, c.sig)
		if single != valid[i] {
			t.Errorf("case %d: single %v, batch %v", i, single, valid[i])
		}
		if i < len(vs) && !single {
			t.Errorf("ZIP-215 vector %d refused", i)
		}
		if single {
			accepted++
		}
	}
	if accepted == len(cases) {
		t.Fatal("no corrupted signature was refused")
	}
}

// CheckBatch gives the same answers as Check, one by one, and a bad signature in a batch
// rejects only that message.
func TestCheckBatch(t *testing.T) {
	ctx := context.Background()
	ed, es := key(t, reading.Ed25519), key(t, reading.ES256)
	keys := NewKeys(nil)
	keys.Apply([]Key{{Device: "ed", Key: ed.Public(), Height: 1}, {Device: "es", Key: es.Public(), Height: 1}})
	v := New(keys, DefaultLimits())
	var in []Input
	for i := range 40 {
		raw := sign(t, "ed", uint64(i+1), ed)
		if i == 7 || i == 30 {
			raw[len(raw)-2] ^= 4
		}
		in = append(in, Input{reading.Subject("ed"), raw})
		if i%10 == 0 {
			in = append(in, Input{reading.Subject("es"), sign(t, "es", uint64(i+1), es)})
		}
	}
	in = append(in, Input{reading.Subject("nobody"), sign(t, "nobody", 1, ed)}, Input{reading.Subject("ed"), []byte("junk")})
	out := make([]Result, len(in))
	v.CheckBatch(ctx, in, out)
	bad := 0
	for i, m := range in {
		one, err := v.Check(ctx, m.Subject, m.Raw)
		var r1, r2 *Rejection
		errors.As(err, &r1)
		errors.As(out[i].Err, &r2)
		if (err == nil) != (out[i].Err == nil) || (r1 != nil) != (r2 != nil) || (r1 != nil && r1.Reason != r2.Reason) {
			t.Fatalf("message %d: Check %v, CheckBatch %v", i, err, out[i].Err)
		}
		if err == nil && one.Leaf != out[i].Leaf {
			t.Fatalf("message %d: leaves differ", i)
		}
		if r2 != nil && r2.Reason == BadSignature {
			bad++
		}
	}
	if bad != 2 {
		t.Fatalf("%d bad signatures rejected, want 2", bad)
	}
}

func BenchmarkCheckEd25519(b *testing.B) {
	k := key(b, reading.Ed25519)
	keys := NewKeys(nil)
	keys.Apply([]Key{{Device: "bench", Key: k.Public(), Height: 1}})
	v := New(keys, DefaultLimits())
	raw := sign(b, "bench", 1, k)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Check(ctx, reading.Subject("bench"), raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckBatch1024(b *testing.B) {
	k := key(b, reading.Ed25519)
	keys := NewKeys(nil)
	keys.Apply([]Key{{Device: "bench", Key: k.Public(), Height: 1}})
	v := New(keys, DefaultLimits())
	in := make([]Input, 1024)
	for i := range in {
		in[i] = Input{reading.Subject("bench"), sign(b, "bench", uint64(i+1), k)}
	}
	out := make([]Result, len(in))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v.CheckBatch(ctx, in, out)
	}
	b.ReportMetric(float64(b.N*len(in))/b.Elapsed().Seconds(), "readings/s")
}

// TestReasons pins the reason codes: analysts filter the rejected table on them, so a value
// may be added but never changed.
func TestReasons(t *testing.T) {
	for r, want := range map[Reason]string{
		TooLarge: "too_large", BadCBOR: "bad_cbor", BadPayload: "bad_payload", UnsupportedAlg: "unsupported_alg",
		KIDMismatch: "kid_mismatch", SubjectMismatch: "subject_mismatch", ClockSkew: "clock_skew",
		TooManyMetrics: "too_many_metrics", TagsTooLarge: "tags_too_large", UnknownDevice: "unknown_device",
		RevokedDevice: "revoked_device", BadSignature: "bad_signature",
	} {
		if string(r) != want {
			t.Errorf("reason %q, want %q", r, want)
		}
	}
}

// BenchmarkCheckBatchSizes measures what a signature costs by the size of the batch verified
// together (ingest's chunk size): ns/reading is the figure to compare.
func BenchmarkCheckBatchSizes(b *testing.B) {
	k := key(b, reading.Ed25519)
	keys := NewKeys(nil)
	keys.Apply([]Key{{Device: "bench", Key: k.Public(), Height: 1}})
	v := New(keys, DefaultLimits())
	all := make([]Input, 4096)
	for i := range all {
		all[i] = Input{reading.Subject("bench"), sign(b, "bench", uint64(i+1), k)}
	}
	ctx := context.Background()
	for _, n := range []int{1, 16, 64, 128, 256, 512, 1024, 2048, 4096} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			in, out := all[:n], make([]Result, n)
			b.ReportAllocs()
			for b.Loop() {
				v.CheckBatch(ctx, in, out)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/reading")
		})
	}
}

func TestIsSubject(t *testing.T) {
	for _, tc := range []struct {
		subject, device string
		want            bool
	}{
		{"iot.readings.d-1", "d-1", true},
		{"iot.readings.d-1", "d-2", false},
		{"iot.readings.d-12", "d-1", false},
		{"iot.readings.d", "d-1", false},
		{"iot.reading.sd-1", "d-1", false},
		{"xot.readings.d-1", "d-1", false},
		{"iot.readings.", "", true}, // what reading.Subject gives; Decode never yields an empty device
	} {
		if got := isSubject(tc.subject, tc.device); got != tc.want || got != (tc.subject == reading.Subject(tc.device)) {
			t.Errorf("isSubject(%q, %q) = %v, want %v", tc.subject, tc.device, got, tc.want)
		}
	}
}
