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

// sampleV2 is sample as a v2 bundle: the record proven in the sparse Merkle tree, the registry
// root in the state root.
func sampleV2() *Bundle {
	b := sample()
	b.Device.RegistrySize = 0
	b.Device.RegistryProof = Hex{1, 0, 0}
	b.Ledger.AppHashVersion = AppHashV2
	b.Ledger.StateRoot = make(Hex, 32)
	b.Ledger.StateProof = &StateProof{Name: "registry", Size: 1}
	return b
}

// A v1 bundle encodes without any member of v2 (its bytes are as before v2 existed); a v2
// bundle has registry_proof in place of the three v1 registry members and the state members
// right after registry_root.
func TestV2Encoding(t *testing.T) {
	v1, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, member := range []string{"registry_proof", "app_hash_version", "state_root", "state_proof"} {
		if bytes.Contains(v1, []byte(member)) {
			t.Errorf("a v1 bundle has %s:\n%s", member, v1)
		}
	}
	b, err := sampleV2().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\"record\": \"02\",\n    \"registry_proof\": \"010000\"\n  },",
		"\"registry_root\": \"" + strings.Repeat("00", 32) + "\",\n    \"app_hash_version\": 2,\n    \"state_root\": \"" + strings.Repeat("00", 32) +
			"\",\n    \"state_proof\": {\n      \"name\": \"registry\",\n      \"index\": 0,\n      \"size\": 1,\n      \"path\": []\n    },\n    \"light_block\": {",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("encoding lacks %q:\n%s", want, b)
		}
	}
	for _, member := range []string{"registry_index", "registry_size", "registry_path"} {
		if bytes.Contains(b, []byte(member)) {
			t.Errorf("a v2 bundle has %s:\n%s", member, b)
		}
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.V2() || !bytes.Equal(got.Device.RegistryProof, Hex{1, 0, 0}) || got.Ledger.StateProof == nil || got.Ledger.StateProof.Name != "registry" {
		t.Fatalf("parsed %+v", got)
	}
	if again, _ := got.Marshal(); !bytes.Equal(again, b) {
		t.Fatal("parse and marshal do not round-trip")
	}
	if v, err := Parse(v1); err != nil || v.V2() || v.Device.RegistryProof != nil {
		t.Fatalf("v1: %+v %v", v, err)
	}
}

// A bundle that mixes the members of the two versions, lacks one of v2's, or names another
// app hash version is not well formed, whether parsed or marshalled.
func TestV2IsStrict(t *testing.T) {
	v1, _ := sample().Marshal()
	v2, _ := sampleV2().Marshal()
	replace := func(b []byte, old, new string) []byte {
		t.Helper()
		out := bytes.Replace(b, []byte(old), []byte(new), 1)
		if bytes.Equal(out, b) {
			t.Fatalf("%q not found", old)
		}
		return out
	}
	const (
		proofLine = "\"record\": \"02\",\n    \"registry_proof\": \"010000\"\n"
		v2Ledger  = "\"app_hash_version\": 2,\n"
	)
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"app_hash_version 1":        {replace(v2, `"app_hash_version": 2`, `"app_hash_version": 1`), ErrFormat},
		"app_hash_version 0":        {replace(v2, `"app_hash_version": 2`, `"app_hash_version": 0`), ErrFormat},
		"app_hash_version 3":        {replace(v2, `"app_hash_version": 2`, `"app_hash_version": 3`), ErrFormat},
		"v1 with app_hash_version":  {replace(v1, "\"light_block\"", v2Ledger+"    \"light_block\""), ErrFormat},
		"v1 with state_root":        {replace(v1, "\"light_block\"", "\"state_root\": \"00\",\n    \"light_block\""), ErrFormat},
		"v1 with registry_proof":    {replace(v1, "\"registry_path\": []", "\"registry_path\": [],\n    \"registry_proof\": \"01\""), ErrFormat},
		"v1 only registry_proof":    {replace(v1, "\"registry_index\": 0,\n    \"registry_size\": 1,\n    \"registry_path\": []", "\"registry_proof\": \"01\""), ErrFormat},
		"v2 with registry_index":    {replace(v2, proofLine, "\"record\": \"02\",\n    \"registry_index\": 0,\n    \"registry_proof\": \"010000\"\n"), ErrFormat},
		"v2 with registry_path":     {replace(v2, proofLine, "\"record\": \"02\",\n    \"registry_path\": [],\n    \"registry_proof\": \"010000\"\n"), ErrFormat},
		"v2 with v1 registry":       {replace(v2, proofLine, "\"record\": \"02\",\n    \"registry_index\": 0,\n    \"registry_size\": 1,\n    \"registry_path\": []\n"), ErrFormat},
		"v2 without registry_proof": {replace(v2, proofLine, "\"record\": \"02\"\n"), ErrFormat},
		"v2 empty registry_proof":   {replace(v2, `"registry_proof": "010000"`, `"registry_proof": ""`), ErrFormat},
		"v2 without state_root":     {replace(v2, "\"state_root\": \""+strings.Repeat("00", 32)+"\",\n    ", ""), ErrFormat},
		"v2 without state_proof":    {replace(v2, "\"state_proof\": {\n      \"name\": \"registry\",\n      \"index\": 0,\n      \"size\": 1,\n      \"path\": []\n    },\n    ", ""), ErrFormat},
		"state_proof with root":     {replace(v2, "\"name\": \"registry\",", "\"name\": \"registry\",\n      \"root\": \"00\","), ErrFormat},
		"unknown device member":     {replace(v2, `"record": "02",`, `"record": "02", "note": 1,`), ErrFormat},
		"unknown ledger member":     {replace(v2, `"app_hash_version": 2,`, `"app_hash_version": 2, "note": 1,`), ErrFormat},
		"state_proof path null":     {replace(v2, "\"path\": []\n    },", "\"path\": null\n    },"), ErrNotCanonical},
		"state_proof reordered":     {replace(v2, "\"index\": 0,\n      \"size\": 1,", "\"size\": 1,\n      \"index\": 0,"), ErrNotCanonical},
		"v2 members reordered":      {replace(v2, "\"app_hash_version\": 2,\n    \"state_root\": \""+strings.Repeat("00", 32)+"\",", "\"state_root\": \""+strings.Repeat("00", 32)+"\",\n    \"app_hash_version\": 2,"), ErrNotCanonical},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(tc.data); !errors.Is(err, tc.want) {
				t.Fatalf("Parse: %v, want %v", err, tc.want)
			}
		})
	}
	for name, mutate := range map[string]func(*Bundle){
		"v2 with registry_size":     func(b *Bundle) { b.Device.RegistrySize = 1 },
		"v2 without registry_proof": func(b *Bundle) { b.Device.RegistryProof = nil },
		"v2 without state_proof":    func(b *Bundle) { b.Ledger.StateProof = nil },
		"v2 without state_root":     func(b *Bundle) { b.Ledger.StateRoot = nil },
		"version 1":                 func(b *Bundle) { b.Ledger.AppHashVersion = 1 },
		"v1 with registry_proof":    func(b *Bundle) { b.Ledger.AppHashVersion = 0; b.Device.RegistryProof = Hex{1} },
		"v1 with state_proof": func(b *Bundle) {
			b.Ledger.AppHashVersion, b.Device.RegistryProof, b.Ledger.StateRoot = 0, nil, nil
		},
	} {
		t.Run("Marshal "+name, func(t *testing.T) {
			b := sampleV2()
			mutate(b)
			if _, err := b.Marshal(); !errors.Is(err, ErrFormat) {
				t.Fatalf("Marshal: %v, want ErrFormat", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, b := range []*Bundle{sample(), sampleV2()} {
		data, err := b.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(data)
		if err != nil {
			return
		}
		// What parses is in its one canonical encoding and says which version it is.
		again, err := b.Marshal()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("parsed bundle re-encodes differently (%v)", err)
		}
		if b.V2() == (b.Device.RegistryProof == nil) {
			t.Fatalf("app_hash_version %d with registry_proof %x", b.Ledger.AppHashVersion, b.Device.RegistryProof)
		}
	})
}
