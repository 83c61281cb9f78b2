package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func sampleCheckpoint() *Checkpoint {
	return &Checkpoint{Format: CheckpointFormat, ChainID: "c", Height: 9, LogSize: 3, LogRoot: bytes.Repeat(Hex{0xab}, 32),
		AppHashVersion: AppHashV2, StateRoot: make(Hex, 32), LightBlock: json.RawMessage(`{"a": 1,  "b":[2]}`)}
}

func TestCheckpointRoundTrip(t *testing.T) {
	for name, c := range map[string]*Checkpoint{
		"v2": sampleCheckpoint(),
		"v1": {Format: CheckpointFormat, ChainID: "c", Height: 2, LogSize: 0, LogRoot: make(Hex, 32), RegistryRoot: make(Hex, 32), LightBlock: json.RawMessage(`{}`)},
		"light chain": func() *Checkpoint {
			c := sampleCheckpoint()
			c.LightChain = []json.RawMessage{json.RawMessage(`{"x":  1}`)}
			return c
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			b, err := c.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseCheckpoint(b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			again, _ := got.Marshal()
			if !bytes.Equal(again, b) {
				t.Fatal("parse and marshal do not round-trip")
			}
			v2 := strings.Contains(string(b), `"app_hash_version": 2`)
			if v2 != c.V2() || v2 == strings.Contains(string(b), `"registry_root"`) || v2 != strings.Contains(string(b), `"state_root"`) {
				t.Fatalf("members of the wrong version:\n%s", b)
			}
			if (len(c.LightChain) > 0) != strings.Contains(string(b), `"light_chain"`) {
				t.Fatalf("light_chain written out wrongly:\n%s", b)
			}
		})
	}
}

func TestCheckpointIsStrict(t *testing.T) {
	b, err := sampleCheckpoint().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	zero := `"` + strings.Repeat("0", 64) + `"`
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"unknown member":        {bytes.Replace(b, []byte(`"height": 9`), []byte(`"height": 9, "note": "x"`), 1), ErrFormat},
		"other format":          {bytes.Replace(b, []byte(CheckpointFormat), []byte(Format), 1), ErrFormat},
		"app_hash_version 1":    {bytes.Replace(b, []byte(`"app_hash_version": 2`), []byte(`"app_hash_version": 1`), 1), ErrFormat},
		"app_hash_version 3":    {bytes.Replace(b, []byte(`"app_hash_version": 2`), []byte(`"app_hash_version": 3`), 1), ErrFormat},
		"v2 with registry_root": {bytes.Replace(b, []byte(`"app_hash_version"`), []byte(`"registry_root": `+zero+`,`+"\n  "+`"app_hash_version"`), 1), ErrFormat},
		"v1 with state_root":    {bytes.Replace(b, []byte(`"app_hash_version": 2,`), []byte(`"registry_root": `+zero+`,`), 1), ErrFormat},
		"v1 without registry":   {bytes.Replace(b, []byte("  \"app_hash_version\": 2,\n  \"state_root\": "+zero+",\n"), nil, 1), ErrFormat},
		"upper-case hex":        {bytes.Replace(b, []byte(`"abab`), []byte(`"ABab`), 1), ErrFormat},
		"no light block":        {bytes.Replace(b, []byte(`"light_block": {`), []byte(`"light_blocks": {`), 1), ErrFormat},
		"no chain id":           {bytes.Replace(b, []byte(`"chain_id": "c"`), []byte(`"chain_id": ""`), 1), ErrFormat},
		"height 0":              {bytes.Replace(b, []byte(`"height": 9`), []byte(`"height": 0`), 1), ErrFormat},
		"empty light chain":     {bytes.Replace(b, []byte("\n  }\n}"), []byte("\n  },\n  \"light_chain\": []\n}"), 1), ErrNotCanonical},
		"extra space":           {bytes.Replace(b, []byte(`"height": 9`), []byte(`"height":  9`), 1), ErrNotCanonical},
		"no final newline":      {b[:len(b)-1], ErrNotCanonical},
		"trailing data":         {append(bytes.Clone(b), "{}"...), ErrFormat},
	} {
		t.Run(name, func(t *testing.T) {
			if bytes.Equal(tc.data, b) {
				t.Fatal("the change did not apply")
			}
			if _, err := ParseCheckpoint(tc.data); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v\n%s", err, tc.want, tc.data)
			}
		})
	}
}

// FuzzParseCheckpoint: whatever parses re-encodes to the same bytes.
func FuzzParseCheckpoint(f *testing.F) {
	b, _ := sampleCheckpoint().Marshal()
	f.Add(b)
	f.Add([]byte(`{"format":"anchorline.checkpoint/v1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCheckpoint(data)
		if err != nil {
			return
		}
		again, err := c.Marshal()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("parsed but does not re-encode: %v", err)
		}
	})
}
