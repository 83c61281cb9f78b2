package chain

import (
	"bytes"
	"errors"
	"testing"
)

func TestAskRoundTrip(t *testing.T) {
	leaves := [][32]byte{leaf(1), leaf(2), leaf(3)}
	data := appendAsk(nil, leaves)
	if len(data) != 96 {
		t.Fatalf("question of %d bytes, want 96", len(data))
	}
	got := parseAsk(append(data, 0xff)) // a trailing byte short of a leaf is ignored
	if len(got) != 3 || got[0] != leaf(1) || got[2] != leaf(3) {
		t.Fatalf("leaves %x", got)
	}
}

func TestAnswerRoundTrip(t *testing.T) {
	rs := []Reading{{Device: "d1", Seq: 1 << 40, Leaf: leaf(1)}, {Device: "sensor-0042", Seq: 7, Leaf: leaf(2)}}
	data := appendAnswer(nil, rs)
	// len(device) u8 ‖ device ‖ seq u64 BE ‖ leaf
	want := append([]byte{2, 'd', '1', 0, 0, 1, 0, 0, 0, 0, 0}, prev(1)...)
	if !bytes.HasPrefix(data, want) {
		t.Fatalf("first record %x, want %x", data[:len(want)], want)
	}
	got, err := parseAnswer(data)
	if err != nil || len(got) != 2 || got[0].Device != "d1" || got[0].Seq != 1<<40 || got[1].Device != "sensor-0042" || got[1].Seq != 7 || got[1].Leaf != leaf(2) {
		t.Fatalf("records %+v %v", got, err)
	}
	// Cut short: the whole records before the cut count.
	got, err = parseAnswer(data[:len(data)-1])
	if !errors.Is(err, ErrMalformedAnswer) || len(got) != 1 || got[0].Device != "d1" {
		t.Fatalf("cut answer: %+v %v", got, err)
	}
	// A device id that cannot be framed is left out.
	if data := appendAnswer(nil, []Reading{{Device: string(make([]byte, 256))}}); len(data) != 0 {
		t.Fatalf("framed a 256-byte device id: %d bytes", len(data))
	}
}

// Whatever parseAnswer accepts encodes back to the bytes it read.
func FuzzParseAnswer(f *testing.F) {
	f.Add(appendAnswer(nil, []Reading{{Device: "d1", Seq: 3, Leaf: leaf(1)}}))
	f.Add([]byte{5, 'a'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := parseAnswer(data)
		enc := appendAnswer(nil, rs)
		if err == nil && !bytes.Equal(enc, data) || err != nil && (!errors.Is(err, ErrMalformedAnswer) || !bytes.HasPrefix(data, enc)) {
			t.Fatalf("parsed %+v (%v) from %x, encodes to %x", rs, err, data, enc)
		}
	})
}
