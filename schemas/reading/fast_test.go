package reading

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// Every Ed25519 reading the SDK signs takes the fast path, whatever the length of its device
// id and payload; ES256 readings and other encodings take go-cose's.
func TestDecodeCommonShape(t *testing.T) {
	ed, es := testKey(t, Ed25519), testKey(t, ES256)
	for _, id := range []string{"d", strings.Repeat("x", 23), strings.Repeat("y", 24), strings.Repeat("z", 64)} {
		for _, metrics := range []int{1, 20, 400} {
			r := Reading{Device: id, Seq: 7, TS: 1700000000000, Prev: make([]byte, 32)}
			for i := range metrics {
				r.Metrics = append(r.Metrics, Metric{Name: fmt.Sprintf("m%03d", i), Value: float64(i)})
			}
			raw, err := Sign(r, ed)
			if err != nil {
				t.Fatal(err)
			}
			m := &Message{Raw: raw}
			if !m.decodeCommon() {
				t.Fatalf("device %q, %d metrics (%d bytes): not the common shape", id, metrics, len(raw))
			}
			sameAsGoCOSE(t, raw)
			if raw, err = Sign(r, es); err != nil {
				t.Fatal(err)
			}
			if (&Message{Raw: raw}).decodeCommon() {
				t.Fatal("an ES256 reading took the Ed25519 fast path")
			}
		}
	}
	// The same content in encodings the fast path leaves to go-cose: a longer-than-needed
	// length, an untagged message, trailing bytes.
	raw, err := Sign(Reading{Device: "d", Seq: 1, TS: 2, Metrics: []Metric{{"x", 1}}}, ed)
	if err != nil {
		t.Fatal(err)
	}
	long := append([]byte{0xd2, 0x84, 0x58, raw[2] & 0x1f}, raw[3:]...)
	for name, b := range map[string][]byte{"long length": long, "untagged": raw[1:], "trailing": append(bytes.Clone(raw), 0)} {
		if (&Message{Raw: b}).decodeCommon() {
			t.Errorf("%s: took the fast path", name)
		}
	}
	if _, err := Decode(long); err != nil {
		t.Errorf("long length: go-cose refused it: %v", err)
	}
}

// sameAsGoCOSE fails unless go-cose accepts raw and reads from it exactly what the fast path
// read.
func sameAsGoCOSE(t *testing.T, raw []byte) {
	t.Helper()
	fast := &Message{Raw: raw}
	if !fast.decodeCommon() {
		t.Fatalf("not the common shape: %x", raw)
	}
	slow := &Message{Raw: raw}
	if err := slow.decodeCOSE(); err != nil {
		t.Fatalf("the fast path accepted what go-cose refuses (%v): %x", err, raw)
	}
	switch {
	case fast.Alg != slow.Alg || fast.KID != slow.KID:
		t.Fatalf("alg/kid %s %q, go-cose %s %q", fast.Alg, fast.KID, slow.Alg, slow.KID)
	case !bytes.Equal(fast.SigStructure(), slow.SigStructure()):
		t.Fatalf("signed bytes differ:\n fast %x\n cose %x", fast.SigStructure(), slow.SigStructure())
	case !bytes.Equal(fast.Signature(), slow.Signature()):
		t.Fatalf("signature %x, go-cose %x", fast.Signature(), slow.Signature())
	}
}

// Whatever the fast path accepts, go-cose accepts and reads the same way.
func FuzzDecodeCommon(f *testing.F) {
	addGoldenSeeds(f)
	f.Add([]byte{0xd2, 0x84, 0x45, 0xa2, 0x01, 0x27, 0x04, 0x40, 0xa0, 0x40, 0x58, 0x40})
	f.Fuzz(func(t *testing.T, raw []byte) {
		if (&Message{Raw: raw}).decodeCommon() {
			sameAsGoCOSE(t, raw)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	k, err := GenerateKey(Ed25519)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := Sign(Reading{Device: "device-0042", Seq: 1234, TS: 1700000000000, Prev: make([]byte, 32),
		Metrics: []Metric{{"temp", 21.5}, {"hum", 40}}, Tags: map[string]string{"site": "a"}}, k)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("into", func(b *testing.B) { // what a batch verifier does: no Message allocated
		var m Message
		b.ReportAllocs()
		for b.Loop() {
			if err := DecodeInto(&m, raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-cose", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := &Message{Raw: raw}
			if err := m.decodeCOSE(); err != nil {
				b.Fatal(err)
			}
			if err := m.decodePayload(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-cose+reflection", func(b *testing.B) { // neither fast path
		b.ReportAllocs()
		for b.Loop() {
			m := &Message{Raw: raw}
			if err := m.decodeCOSE(); err != nil {
				b.Fatal(err)
			}
			if err := m.decodePayloadSlow(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
