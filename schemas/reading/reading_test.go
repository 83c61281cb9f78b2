package reading

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func testKey(t *testing.T, alg Alg) PrivateKey {
	t.Helper()
	k, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignDecodeVerify(t *testing.T) {
	for _, alg := range []Alg{Ed25519, ES256} {
		t.Run(string(alg), func(t *testing.T) {
			k := testKey(t, alg)
			r := Reading{Device: "dev-1", Seq: 7, TS: 1700000000123,
				Metrics: []Metric{{"temp", 21.5}, {"hum", 40}}, Tags: map[string]string{"site": "a"}}
			raw, err := Sign(r, k)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Decode(raw)
			if err != nil {
				t.Fatal(err)
			}
			if m.Alg != alg || m.KID != "dev-1" || m.Reading.Seq != 7 || m.Reading.TS != 1700000000123 {
				t.Fatalf("decoded %+v", m)
			}
			if len(m.Reading.Metrics) != 2 || m.Reading.Metrics[0] != (Metric{"hum", 40}) || m.Reading.Metrics[1] != (Metric{"temp", 21.5}) {
				t.Fatalf("metrics %+v", m.Reading.Metrics)
			}
			if m.Reading.Tags["site"] != "a" {
				t.Fatalf("tags %+v", m.Reading.Tags)
			}
			if err := m.Verify(k.Public()); err != nil {
				t.Fatalf("verify: %v", err)
			}
			other := testKey(t, alg)
			if err := m.Verify(other.Public()); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("verify with other key: %v", err)
			}
			// One flipped signature bit must fail.
			bad := append([]byte(nil), raw...)
			bad[len(bad)-1] ^= 1
			mb, err := Decode(bad)
			if err != nil {
				t.Fatal(err)
			}
			if err := mb.Verify(k.Public()); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("flipped signature verified: %v", err)
			}
		})
	}
}

// SigStructure must be exactly what go-cose signs and verifies.
func TestSigStructureMatchesGoCOSE(t *testing.T) {
	k := testKey(t, Ed25519)
	raw, err := Sign(Reading{Device: "d", Seq: 1, TS: 2, Metrics: []Metric{{"x", 1}}}, k)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(k.Public().Key, m.SigStructure(), m.Signature()) {
		t.Fatal("SigStructure is not what go-cose signed")
	}
	v, err := cose.NewVerifier(cose.AlgorithmEdDSA, ed25519.PublicKey(k.Public().Key))
	if err != nil {
		t.Fatal(err)
	}
	var cm cose.Sign1Message
	if err := cm.UnmarshalCBOR(raw); err != nil {
		t.Fatal(err)
	}
	if err := cm.Verify(nil, v); err != nil {
		t.Fatalf("go-cose verify: %v", err)
	}
}

func TestPublicKeyForms(t *testing.T) {
	k := testKey(t, ES256)
	pub := k.Public()
	if len(pub.Key) != 65 || pub.Key[0] != 4 {
		t.Fatalf("uncompressed key %x", pub.Key)
	}
	compressed := make([]byte, 33)
	compressed[0] = 2 | pub.Key[64]&1
	copy(compressed[1:], pub.Key[1:33])
	got, err := ParsePublicKey(ES256, compressed)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(got.Key) != pub.String() {
		t.Fatalf("compressed form decoded to %x, want %s", got.Key, pub)
	}
	for _, tc := range []struct {
		alg Alg
		key []byte
	}{{Ed25519, make([]byte, 31)}, {ES256, make([]byte, 65)}, {ES256, make([]byte, 10)}, {"rsa", make([]byte, 32)}} {
		if _, err := ParsePublicKey(tc.alg, tc.key); err == nil {
			t.Errorf("ParsePublicKey(%s, %d bytes) accepted", tc.alg, len(tc.key))
		}
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	for _, alg := range []Alg{Ed25519, ES256} {
		k := testKey(t, alg)
		f, err := NewKeyFile("dev-"+string(alg), k)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "key.json")
		if err := WriteKeyFile(path, f); err != nil {
			t.Fatal(err)
		}
		if err := WriteKeyFile(path, f); err == nil {
			t.Fatal("overwrote an existing key file")
		}
		g, k2, err := ReadKeyFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if g != f || k2.Public().String() != k.Public().String() {
			t.Fatalf("round trip %+v != %+v", g, f)
		}
	}
}

func TestDeviceChainsPrev(t *testing.T) {
	d := &Device{ID: "chain", Key: testKey(t, Ed25519)}
	first, err := d.Next([]Metric{{"v", 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := d.Next([]Metric{{"v", 2}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := Decode(first)
	m2, err := Decode(second)
	if err != nil {
		t.Fatal(err)
	}
	leaf := Leaf(first)
	if m1.Reading.Prev != nil || m2.Reading.Seq != 2 || hex.EncodeToString(m2.Reading.Prev) != hex.EncodeToString(leaf[:]) {
		t.Fatalf("prev chain: first prev %x, second seq %d prev %x, want %x", m1.Reading.Prev, m2.Reading.Seq, m2.Reading.Prev, leaf)
	}
}

// signPayload signs an arbitrary payload so tests can build readings Sign refuses to make.
func signPayload(t *testing.T, k PrivateKey, kid string, payload []byte, unprotected bool) []byte {
	t.Helper()
	signer, err := cose.NewSigner(cose.AlgorithmEdDSA, k.ed)
	if err != nil {
		t.Fatal(err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(cose.AlgorithmEdDSA)
	msg.Headers.Protected[cose.HeaderLabelKeyID] = []byte(kid)
	if unprotected {
		msg.Headers.Unprotected[cose.HeaderLabelContentType] = "text/plain"
	}
	msg.Payload = payload
	if err := msg.Sign(nil, nil, signer); err != nil {
		t.Fatal(err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	k := testKey(t, Ed25519)
	good := map[string]any{"dev": "d1", "seq": 1, "ts": 5, "m": map[string]any{"t": 1.5}}
	with := func(key string, v any) []byte {
		p := map[string]any{}
		for k, x := range good {
			p[k] = x
		}
		if v == nil {
			delete(p, key)
		} else {
			p[key] = v
		}
		return mustCBOR(t, p)
	}
	valid := signPayload(t, k, "d1", mustCBOR(t, good), false)
	untagged := valid[1:] // tag 18 is the single byte 0xd2
	tests := []struct {
		name string
		raw  []byte
		want error
	}{
		{"not cbor", []byte("hello"), ErrBadCBOR},
		{"empty", nil, ErrBadCBOR},
		{"untagged", untagged, ErrBadCBOR},
		{"unprotected header", signPayload(t, k, "d1", mustCBOR(t, good), true), ErrBadCBOR},
		{"kid mismatch", signPayload(t, k, "d2", mustCBOR(t, good), false), ErrKIDMismatch},
		{"missing metrics", signPayload(t, k, "d1", with("m", nil), false), ErrBadPayload},
		{"empty metrics", signPayload(t, k, "d1", with("m", map[string]any{}), false), ErrBadPayload},
		{"nan", signPayload(t, k, "d1", with("m", map[string]any{"t": math.NaN()}), false), ErrBadPayload},
		{"inf", signPayload(t, k, "d1", with("m", map[string]any{"t": math.Inf(1)}), false), ErrBadPayload},
		{"string metric", signPayload(t, k, "d1", with("m", map[string]any{"t": "hot"}), false), ErrBadPayload},
		{"bad metric name", signPayload(t, k, "d1", with("m", map[string]any{"Temp": 1}), false), ErrBadPayload},
		{"missing seq", signPayload(t, k, "d1", with("seq", nil), false), ErrBadPayload},
		{"negative seq", signPayload(t, k, "d1", with("seq", -1), false), ErrBadPayload},
		{"missing ts", signPayload(t, k, "d1", with("ts", nil), false), ErrBadPayload},
		{"missing dev", signPayload(t, k, "d1", with("dev", nil), false), ErrBadPayload},
		{"short prev", signPayload(t, k, "d1", with("prev", []byte{1, 2}), false), ErrBadPayload},
		{"payload not a map", signPayload(t, k, "d1", mustCBOR(t, []int{1}), false), ErrBadPayload},
		{"bad device id", signPayload(t, k, "d 1", mustCBOR(t, map[string]any{"dev": "d 1", "seq": 1, "ts": 5, "m": map[string]any{"t": 1}}), false), ErrBadPayload},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.raw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
}

// Decoders accept any valid encoding of the values and keep unknown keys inside raw.
func TestDecodeAcceptsNonDeterministicEncodings(t *testing.T) {
	k := testKey(t, Ed25519)
	// Indefinite-length map with a float16 metric, an int metric, a float32 one and an unknown key.
	payload, _ := hex.DecodeString("bf" + "63646576" + "626431" + "63736571" + "01" + "627473" + "1903e8" +
		"616d" + "a3" + "6161" + "f93e00" + "6162" + "20" + "6163" + "fa3fc00000" +
		"656578747261" + "f5" + "ff")
	raw := signPayload(t, k, "d1", payload, false)
	m, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := []Metric{{"a", 1.5}, {"b", -1}, {"c", 1.5}}
	if len(m.Reading.Metrics) != 3 {
		t.Fatalf("metrics %+v", m.Reading.Metrics)
	}
	for i := range want {
		if m.Reading.Metrics[i] != want[i] {
			t.Fatalf("metric %d = %+v, want %+v", i, m.Reading.Metrics[i], want[i])
		}
	}
	if m.Reading.TS != 1000 {
		t.Fatalf("ts %d", m.Reading.TS)
	}
	if err := m.Verify(k.Public()); err != nil {
		t.Fatal(err)
	}
}

// golden is one vector of testdata/readings.json.
type golden struct {
	Name      string   `json:"name"`
	Alg       Alg      `json:"alg"`
	Seed      string   `json:"seed,omitempty"` // ed25519 only: signing is deterministic
	PublicKey string   `json:"public_key"`
	Device    string   `json:"device"`
	Seq       uint64   `json:"seq"`
	TS        uint64   `json:"ts"`
	Metrics   []Metric `json:"metrics"`
	Raw       string   `json:"raw"`
	Leaf      string   `json:"leaf"`
}

func TestGoldenReadings(t *testing.T) {
	path := filepath.Join("testdata", "readings.json")
	if *update {
		seed := make([]byte, 32)
		for i := range seed {
			seed[i] = byte(i)
		}
		ed := NewEd25519Key(ed25519.NewKeyFromSeed(seed))
		es := testKey(t, ES256)
		var out []golden
		for _, c := range []struct {
			name string
			key  PrivateKey
			r    Reading
		}{
			{"ed25519 first reading", ed, Reading{Device: "golden-ed", Seq: 1, TS: 1767225600000, Metrics: []Metric{{"temp", 21.5}}}},
			{"ed25519 with tags and prev", ed, Reading{Device: "golden-ed", Seq: 2, TS: 1767225601000, Metrics: []Metric{{"hum", 40}, {"temp", -3.25}}, Tags: map[string]string{"site": "north"}, Prev: make([]byte, 32)}},
			{"es256", es, Reading{Device: "golden-es", Seq: 1, TS: 1767225600000, Metrics: []Metric{{"power.w", 1234}}}},
		} {
			raw, err := Sign(c.r, c.key)
			if err != nil {
				t.Fatal(err)
			}
			leaf := Leaf(raw)
			g := golden{Name: c.name, Alg: c.key.Alg(), PublicKey: c.key.Public().String(), Device: c.r.Device, Seq: c.r.Seq, TS: c.r.TS, Metrics: c.r.Metrics, Raw: hex.EncodeToString(raw), Leaf: hex.EncodeToString(leaf[:])}
			if c.key.Alg() == Ed25519 {
				g.Seed = hex.EncodeToString(seed)
			}
			out = append(out, g)
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vectors []golden
	if err := json.Unmarshal(b, &vectors); err != nil {
		t.Fatal(err)
	}
	if len(vectors) == 0 {
		t.Fatal("no golden vectors")
	}
	for _, g := range vectors {
		t.Run(g.Name, func(t *testing.T) {
			raw, _ := hex.DecodeString(g.Raw)
			m, err := Decode(raw)
			if err != nil {
				t.Fatal(err)
			}
			pkb, _ := hex.DecodeString(g.PublicKey)
			pk, err := ParsePublicKey(g.Alg, pkb)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Verify(pk); err != nil {
				t.Fatal(err)
			}
			if leaf := Leaf(raw); hex.EncodeToString(leaf[:]) != g.Leaf {
				t.Fatalf("leaf %x, want %s", leaf, g.Leaf)
			}
			if m.Reading.Device != g.Device || m.Reading.Seq != g.Seq || m.Reading.TS != g.TS || len(m.Reading.Metrics) != len(g.Metrics) {
				t.Fatalf("decoded %+v", m.Reading)
			}
			if g.Seed != "" { // Ed25519 signatures are deterministic: Sign must reproduce the bytes.
				seed, _ := hex.DecodeString(g.Seed)
				again, err := Sign(m.Reading, NewEd25519Key(ed25519.NewKeyFromSeed(seed)))
				if err != nil {
					t.Fatal(err)
				}
				if hex.EncodeToString(again) != g.Raw {
					t.Fatalf("Sign no longer reproduces the golden bytes:\n got %x\nwant %s", again, g.Raw)
				}
			}
		})
	}
}

// addGoldenSeeds adds the raw bytes of every vector of testdata/readings.json to f's corpus.
func addGoldenSeeds(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "readings.json"))
	if err != nil {
		f.Fatal(err)
	}
	var vectors []golden
	if err := json.Unmarshal(b, &vectors); err != nil {
		f.Fatal(err)
	}
	for _, g := range vectors {
		raw, _ := hex.DecodeString(g.Raw)
		f.Add(raw)
	}
}

func FuzzDecode(f *testing.F) {
	addGoldenSeeds(f)
	f.Add([]byte{0xd2, 0x84, 0x40, 0xa0, 0x40, 0x40})
	key, err := GenerateKey(Ed25519)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Decode(raw)
		if err != nil {
			return
		}
		if m.KID != m.Reading.Device || len(m.Reading.Metrics) == 0 {
			t.Fatalf("Decode accepted an invalid reading: %+v", m.Reading)
		}
		for _, mt := range m.Reading.Metrics {
			if math.IsNaN(mt.Value) || math.IsInf(mt.Value, 0) {
				t.Fatalf("non-finite metric accepted: %+v", mt)
			}
		}
		_ = m.Verify(key.Public()) // must not panic
		_ = m.SigStructure()
	})
}

func TestEd25519Public(t *testing.T) {
	k := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	want, _ := k.Public().(ed25519.PublicKey)
	if got := Ed25519Public(k); !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
	if got := Ed25519Public(k[:10]); got != nil {
		t.Fatalf("a short key gave %x, want nil", got)
	}
}
