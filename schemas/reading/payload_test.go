package reading

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"testing"
)

// slowPayload decodes p with the reflection decoder, as if kid were the device.
func slowPayload(p []byte, kid string) (Reading, error) {
	m := &Message{KID: kid}
	m.msg.Payload = p
	err := m.decodePayloadSlow()
	return m.Reading, err
}

// sameAsSlow fails unless the slow decoder accepts p and reads from it what fastPayload read.
func sameAsSlow(t *testing.T, p []byte, fast Reading) {
	t.Helper()
	slow, err := slowPayload(p, fast.Device)
	if err != nil {
		t.Fatalf("the fast path accepted what the slow decoder refuses (%v): %x", err, p)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("payload %x:\n fast %+v\n slow %+v", p, fast, slow)
	}
}

func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The payloads of DESIGN 2.1 in the encodings a device may use: the fast path reads those it
// handles exactly as the slow decoder does, and leaves the others (and every invalid payload)
// to it.
func TestFastPayload(t *testing.T) {
	k := testKey(t, Ed25519)
	r := Reading{Device: "d-1", Seq: 7, TS: 1700000000000, Prev: bytes.Repeat([]byte{9}, 32),
		Metrics: []Metric{{"hum", 40}, {"temp", 21.5}, {"x.y_z", -3}}, Tags: map[string]string{"site": "a", "é": "ü"}}
	p, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := Sign(r, k)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.payloadText == "" || &m.Reading.Metrics[0] != &m.metrics[0] {
		t.Fatal("a reading the SDK signed did not take the fast path")
	}
	if !reflect.DeepEqual(m.Reading, r) {
		t.Fatalf("decoded %+v, signed %+v", m.Reading, r)
	}
	// {"dev": "d", "seq": 1, "ts": 2, "m": {"a": <value>}} with the value's encoding varied,
	// then other keys and encodings.
	pre := "a4" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161"
	for _, tc := range []struct {
		name string
		hex  string
		fast bool // the fast path reads it (else the slow decoder decides)
		ok   bool // it is a valid reading
	}{
		{"uint", pre + "18ff", true, true},
		{"uint64", pre + "1bffffffffffffffff", true, true},
		{"negative", pre + "3903e7", true, true},
		{"most negative int64", pre + "3b7fffffffffffffff", true, true},
		{"below int64", pre + "3b8000000000000000", false, false},
		{"float16", pre + "f93e00", true, true},
		{"float16 subnormal", pre + "f98001", true, true},
		{"float32", pre + "fa47c35000", true, true},
		{"float64", pre + "fb3ff199999999999a", true, true},
		{"float16 NaN", pre + "f97e00", false, false},
		{"float16 Inf", pre + "f97c00", false, false},
		{"float32 -Inf", pre + "faff800000", false, false},
		{"float64 NaN", pre + "fb7ff8000000000001", false, false},
		{"bool", pre + "f5", false, false},
		{"null", pre + "f6", false, false},
		{"text", pre + "6131", false, false},
		{"tagged", pre + "c11a514b67b0", false, false},
		{"bignum", pre + "c24101", false, false},
		{"non-shortest seq", "a4" + "63646576" + "6164" + "63736571" + "1b0000000000000001" + "627473" + "1902ff" + "616d" + "a1" + "6161" + "01", true, true},
		{"non-shortest lengths", "b90004" + "7803646576" + "780164" + "63736571" + "01" + "627473" + "02" + "616d" + "b90001" + "7a0000000161" + "01", true, true},
		{"unknown keys", "a7" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" +
			"6178" + "83f4f6fb3ff0000000000000" + "6179" + "4401020304" + "617a" + "f97e00", true, true},
		{"unknown map value", "a5" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" + "6178" + "a0", false, true},
		{"indefinite map", "bf" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" + "ff", false, true},
		{"indefinite text", "a4" + "63646576" + "7f6164ff" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01", false, true},
		{"tags null", "a5" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" + "6474616773" + "f6", false, true},
		{"empty tags", "a5" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" + "6474616773" + "a0", true, true},
		{"prev null", "a5" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" + "6470726576" + "f6", false, true},
		{"short prev", "a5" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" + "6470726576" + "4101", false, false},
		{"duplicate key", "a5" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" + "627473" + "02", false, false},
		{"duplicate metric", pre[:len(pre)-6] + "a2" + "6161" + "01" + "6161" + "02", false, false},
		{"duplicate unknown key", "a6" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" + "6178" + "01" + "6178" + "02", false, false},
		{"no metrics", "a4" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a0", false, false},
		{"missing ts", "a3" + "63646576" + "6164" + "63736571" + "01" + "616d" + "a1" + "6161" + "01", false, false},
		{"bad metric name", pre[:len(pre)-4] + "6141" + "01", false, false},
		{"bad device id", "a4" + "63646576" + "6121" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01", false, false},
		{"negative seq", "a4" + "63646576" + "6164" + "63736571" + "20" + "627473" + "02" + "616d" + "a1" + "6161" + "01", false, false},
		{"invalid UTF-8 tag", "a5" + "63646576" + "6164" + "63736571" + "01" + "627473" + "02" + "616d" + "a1" + "6161" + "01" + "6474616773" + "a161ff6161", false, false},
		{"trailing bytes", pre + "0100", false, false},
		{"truncated", pre, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := hexBytes(t, tc.hex)
			fast, fastOK := fastPayload(p, string(p), nil)
			if fastOK != tc.fast {
				t.Fatalf("fast path took it: %v, want %v", fastOK, tc.fast)
			}
			if fastOK {
				sameAsSlow(t, p, fast)
			}
			if _, err := slowPayload(p, "d"); (err == nil) != tc.ok {
				t.Fatalf("slow decoder: %v, want valid %v", err, tc.ok)
			}
		})
	}
	if fast, ok := fastPayload(p, string(p), nil); !ok {
		t.Fatal("an encoded payload did not take the fast path")
	} else {
		sameAsSlow(t, p, fast)
	}
}

// Whatever the fast payload path accepts, the slow decoder accepts and reads the same way.
func FuzzFastPayload(f *testing.F) {
	for _, r := range []Reading{
		{Device: "d", Seq: 1, TS: 2, Metrics: []Metric{{"a", 1}}},
		{Device: "device-0042", Seq: 1234, TS: 1700000000000, Prev: make([]byte, 32),
			Metrics: []Metric{{"temp", 21.5}, {"hum", 40}, {"n", -7}}, Tags: map[string]string{"site": "a"}},
	} {
		p, err := r.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add(hexBytes(f, "a7"+"63646576"+"6164"+"63736571"+"1901ff"+"627473"+"02"+"616d"+"a2"+"6161"+"f93e00"+"6162"+"fa47c35000"+
		"6178"+"83f4f6fb3ff0000000000000"+"6179"+"4401020304"+"617a"+"3903e7"))
	f.Fuzz(func(t *testing.T, p []byte) {
		if fast, ok := fastPayload(p, string(p), nil); ok {
			sameAsSlow(t, p, fast)
		}
	})
}
