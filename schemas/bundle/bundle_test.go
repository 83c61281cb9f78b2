package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func sample() *Bundle {
	return &Bundle{
		Format:  Format,
		Reading: Reading{Device: "d", Seq: 3, Raw: Hex{0xd2, 0x84}},
		Device:  Device{ID: "d", Alg: "ed25519", PublicKey: Hex{1}, Status: "active", Height: 2, Record: Hex{2}, RegistrySize: 1},
		Batch:   Batch{ID: make(Hex, 16), Size: 1, Root: make(Hex, 32)},
		Anchor:  Anchor{ID: make(Hex, 16), Batches: 1, Root: make(Hex, 32), Path: []Hex{make(Hex, 32)}},
		Ledger:  Ledger{ChainID: "c", Height: 9, Entry: Hex{3}, LogSize: 1, LogRoot: make(Hex, 32), RegistryRoot: make(Hex, 32), LightBlock: json.RawMessage(`{"a": 1,  "b":[2]}`)},
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	b, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"registry_path": []`, `"path": []`, `"log_path": []`, `"raw": "d284"`, "\"light_block\": {\n      \"a\": 1,"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("encoding lacks %q:\n%s", want, b)
		}
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Marshal()
	if !bytes.Equal(again, b) {
		t.Fatal("parse and marshal do not round-trip")
	}
}

func TestParseIsStrict(t *testing.T) {
	b, _ := sample().Marshal()
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"upper-case hex":    {bytes.Replace(b, []byte(`"d284"`), []byte(`"D284"`), 1), ErrFormat},
		"odd hex":           {bytes.Replace(b, []byte(`"d284"`), []byte(`"d28"`), 1), ErrFormat},
		"null path":         {bytes.Replace(b, []byte(`"path": []`), []byte(`"path": null`), 1), ErrNotCanonical},
		"unknown field":     {bytes.Replace(b, []byte(`"seq": 3`), []byte(`"seq": 3, "note": "x"`), 1), ErrFormat},
		"other format":      {bytes.Replace(b, []byte(Format), []byte("anchorline.proof/v2"), 1), ErrFormat},
		"extra space":       {bytes.Replace(b, []byte(`"seq": 3`), []byte(`"seq":  3`), 1), ErrNotCanonical},
		"trailing data":     {append(bytes.Clone(b), []byte("{}")...), ErrFormat},
		"no final newline":  {b[:len(b)-1], ErrNotCanonical},
		"number as string":  {bytes.Replace(b, []byte(`"seq": 3`), []byte(`"seq": "3"`), 1), ErrFormat},
		"leading zero":      {bytes.Replace(b, []byte(`"seq": 3`), []byte(`"seq": 03`), 1), ErrFormat},
		"reordered members": {reorder(t, b), ErrNotCanonical},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(tc.data); !errors.Is(err, tc.want) {
				t.Fatalf("Parse: %v, want %v", err, tc.want)
			}
		})
	}
}

func reorder(t *testing.T, b []byte) []byte {
	out := bytes.Replace(b, []byte("\"device\": \"d\",\n    \"seq\": 3,"), []byte("\"seq\": 3,\n    \"device\": \"d\","), 1)
	if bytes.Equal(out, b) {
		t.Fatal("reorder did not apply")
	}
	return out
}

func TestTrust(t *testing.T) {
	tr := &Trust{Format: TrustFormat, ChainID: "c", Validators: json.RawMessage(`[{"x":1}]`)}
	b, err := tr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseTrust(b)
	if err != nil || got.ChainID != "c" {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range []string{`{"format":"x","chain_id":"c","validators":[]}`, `{"format":"anchorline.trust/v1","validators":[1]}`, `{"format":"anchorline.trust/v1","chain_id":"c","validators":[1],"extra":1}`} {
		if _, err := ParseTrust([]byte(bad)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// A bundle without light_chain encodes as before (no member at all); one with it encodes each
// light block like light_block; an empty light_chain written out is not canonical.
func TestLightChain(t *testing.T) {
	plain, _ := sample().Marshal()
	if bytes.Contains(plain, []byte("light_chain")) {
		t.Fatalf("a bundle without a light chain has the member:\n%s", plain)
	}
	s := sample()
	s.Ledger.LightChain = []json.RawMessage{json.RawMessage(`{"h": 1}`), json.RawMessage(`{"h":  2}`)}
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\"light_chain\": [\n      {\n        \"h\": 1\n      },") {
		t.Fatalf("encoding:\n%s", b)
	}
	got, err := Parse(b)
	if err != nil || len(got.Ledger.LightChain) != 2 {
		t.Fatalf("Parse: %v", err)
	}
	empty := bytes.Replace(plain, []byte("\n  }\n}\n"), []byte(",\n    \"light_chain\": []\n  }\n}\n"), 1)
	if bytes.Equal(empty, plain) {
		t.Fatal("could not add an empty light_chain")
	}
	if _, err := Parse(empty); !errors.Is(err, ErrNotCanonical) {
		t.Fatalf("empty light_chain: %v", err)
	}
}

// A trust file may name its height; one without (made before) still parses, as height 0.
func TestTrustHeight(t *testing.T) {
	tr := &Trust{Format: TrustFormat, ChainID: "c", Height: 42, Validators: json.RawMessage(`[{"x":1}]`)}
	b, err := tr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"height": 42`) {
		t.Fatalf("encoding:\n%s", b)
	}
	if got, err := ParseTrust(b); err != nil || got.Height != 42 {
		t.Fatalf("%+v %v", got, err)
	}
	if got, err := ParseTrust([]byte(`{"format":"anchorline.trust/v1","chain_id":"c","validators":[1]}`)); err != nil || got.Height != 0 {
		t.Fatalf("old trust file: %+v %v", got, err)
	}
	if _, err := ParseTrust([]byte(`{"format":"anchorline.trust/v1","chain_id":"c","height":-1,"validators":[1]}`)); !errors.Is(err, ErrFormat) {
		t.Fatalf("negative height: %v", err)
	}
}
