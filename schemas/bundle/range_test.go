package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func h(n int, b byte) Hex { return bytes.Repeat([]byte{b}, n) }

func ptr(v uint64) *uint64 { return &v }

// sampleRange is a well-formed range (its proofs are made up: only the shape matters here):
// a v2 head proving two anchors and an erasure, a v1 head proving one anchor and an erasure,
// two erased readings (one with a device time, one without).
func sampleRange() *Range {
	dev := Device{ID: "dev-1", Alg: "ed25519", PublicKey: h(32, 1), Status: "active", Height: 1, Record: h(40, 2), RegistryProof: h(70, 3)}
	v1dev := Device{ID: "dev-1", Alg: "ed25519", PublicKey: h(32, 1), Status: "active", Height: 1, Record: h(40, 2), RegistryIndex: 2, RegistrySize: 3}
	return &Range{Format: RangeFormat, ChainID: "chain <1>", Device: "dev-1", From: 0, To: math.MaxUint64,
		LightChain: []json.RawMessage{json.RawMessage(` {"h": 1} `)},
		Heads: []RangeHead{
			{Device: dev, Height: 5, LogSize: 4, LogRoot: h(32, 7), LogProof: []Hex{h(32, 5), h(32, 6)}, RegistryRoot: h(32, 8),
				AppHashVersion: AppHashV2, StateRoot: h(32, 9), StateProof: &StateProof{Name: "registry", Index: 0, Size: 1}, LightBlock: json.RawMessage(`{"a": [1, 2], "b": "<&>"}`)},
			{Device: v1dev, Height: 7, LogSize: 6, LogRoot: h(32, 11), RegistryRoot: h(32, 12), LightBlock: json.RawMessage(`{"c":3}`)},
		},
		Anchors: []RangeAnchor{
			{ID: h(16, 13), Batches: 3, Root: h(32, 14), Proof: []Hex{h(32, 15)}, Head: 0, Entry: h(90, 4), LogIndex: 1},
			{ID: h(16, 31), Batches: 1, Root: h(32, 32), Head: 0, Entry: h(90, 33), LogIndex: 3},
			{ID: h(16, 16), Batches: 1, Root: h(32, 17), Head: 1, Entry: h(90, 10), LogIndex: 5},
		},
		Batches: []RangeBatch{
			{ID: h(16, 18), Size: 7, Root: h(32, 19), Anchor: 0, BatchIndex: 0, Proof: []Hex{h(32, 20), h(32, 21)}},
			{ID: h(16, 22), Size: 1, Root: h(32, 23), Anchor: 0, BatchIndex: 2},
			{ID: h(16, 34), Size: 1, Root: h(32, 35), Anchor: 1, BatchIndex: 0},
			{ID: h(16, 24), Size: math.MaxUint64, Root: h(32, 25), Anchor: 2, BatchIndex: 0, Proof: []Hex{h(32, 26)}},
		},
		Readings: []RangeReading{
			{Seq: 0, Batch: 0, LeafIndex: 1, Raw: h(20, 27)},
			{Seq: 10, Batch: 1, LeafIndex: 0, Raw: h(1, 28)},
			{Seq: 11, Batch: 0, LeafIndex: 6, Raw: h(30, 29)},
			{Seq: 12, Batch: 2, LeafIndex: 0, Raw: h(5, 36)},
			{Seq: 13, Batch: 0, LeafIndex: 3, Leaf: h(32, 40), TS: 1_700_000_000_123, Erase: ptr(0)},
			{Seq: 14, Batch: 3, LeafIndex: 5, Leaf: h(32, 41), Erase: ptr(1)},
			{Seq: math.MaxUint64, Batch: 3, LeafIndex: math.MaxUint64 - 1, Raw: h(3, 30)},
		},
		Erasures: []RangeErasure{
			{Entry: h(80, 42), LogIndex: 2, Head: 0},
			{Entry: h(80, 43), LogIndex: 4, Head: 1},
		},
	}
}

// slowEncode is the canonical encoding as json.MarshalIndent writes the whole range.
func slowEncode(t *testing.T, r *Range) []byte {
	t.Helper()
	c := *r
	c.LightChain = make([]json.RawMessage, len(r.LightChain))
	for i, lb := range r.LightChain {
		c.LightChain[i], _ = compactRawJSON(lb, "")
	}
	c.Heads = make([]RangeHead, len(r.Heads))
	for i, hd := range r.Heads {
		hd.LogProof = nonNil(hd.LogProof)
		if hd.StateProof != nil {
			sp := *hd.StateProof
			sp.Path = nonNil(sp.Path)
			hd.StateProof = &sp
		}
		hd.LightBlock, _ = compactRawJSON(hd.LightBlock, "")
		c.Heads[i] = hd
	}
	c.Anchors = make([]RangeAnchor, len(r.Anchors))
	for i, a := range r.Anchors {
		a.Proof = nonNil(a.Proof)
		c.Anchors[i] = a
	}
	c.Batches = make([]RangeBatch, len(r.Batches))
	for i, b := range r.Batches {
		b.Proof = nonNil(b.Proof)
		c.Batches[i] = b
	}
	out, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

// Marshal writes exactly what json.MarshalIndent writes of the whole range, and ParseRange
// gives back a range that encodes the same.
func TestRangeEncoding(t *testing.T) {
	r := sampleRange()
	got, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if want := slowEncode(t, r); !bytes.Equal(got, want) {
		t.Fatalf("differs at byte %d:\n%s\nwant\n%s", firstDiff(got, want), got, want)
	}
	for _, p := range []func([]byte) (*Range, error){ParseRange, parseRangeSlow} {
		back, err := p(got)
		if err != nil {
			t.Fatal(err)
		}
		again, err := back.Marshal()
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("round trip: %v", err)
		}
	}
	if _, ok, err := parseRangeFast(got); !ok || err != nil {
		t.Fatal("the fast path refuses the canonical encoding")
	}
	if FormatOf(got) != RangeFormat || FormatOf([]byte(`{"x": 1, "format": "f"}`)) != "f" || FormatOf([]byte(`[1]`)) != "" || FormatOf([]byte(`{"format": 1}`)) != "" {
		t.Fatal("FormatOf")
	}
}

// The fast path accepts a changed byte exactly when the slow path does (and then the same
// range): the scanner is no weaker than encoding/json's decoding and re-encoding.
func TestParseRangeFastIsSlow(t *testing.T) {
	good, err := sampleRange().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for i := range good {
		for _, d := range []byte{1, 0x20} {
			c := bytes.Clone(good)
			c[i] ^= d
			fast, fastErr := ParseRange(c)
			slow, slowErr := parseRangeSlow(c)
			if (fastErr == nil) != (slowErr == nil) {
				t.Fatalf("byte %d %q -> %q: ParseRange %v, slow path %v", i, good[i], c[i], fastErr, slowErr)
			}
			if fastErr != nil {
				continue
			}
			accepted++
			a, _ := fast.Marshal()
			b, _ := slow.Marshal()
			if !bytes.Equal(a, b) || !bytes.Equal(a, c) {
				t.Fatalf("byte %d: the two paths decode different ranges", i)
			}
		}
	}
	if accepted == 0 {
		t.Fatal("no changed byte was accepted (a changed seq or proof hash is well formed)")
	}
}

func TestRangeShape(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*Range)
		want   error
		text   string
	}{
		"from after to":    {func(r *Range) { r.From, r.To = 5, 4 }, ErrFormat, "from 5 is after to 4"},
		"no readings":      {func(r *Range) { r.Readings = nil }, ErrFormat, "at least one reading"},
		"seq repeated":     {func(r *Range) { r.Readings[2].Seq = 10 }, ErrFormat, "seq order, each seq once"},
		"seq outside":      {func(r *Range) { r.To = 11 }, ErrFormat, "outside"},
		"batch reference":  {func(r *Range) { r.Readings[0].Batch = 4 }, ErrFormat, "batch 4, the range has 4"},
		"batch unused":     {func(r *Range) { r.Readings[1].Batch = 0 }, ErrFormat, "batches[1] holds no reading"},
		"batch order":      {func(r *Range) { r.Batches[1].BatchIndex = 0 }, ErrFormat, "(anchor, batch_index) order"},
		"anchor reference": {func(r *Range) { r.Batches[3].Anchor = 3 }, ErrFormat, "anchor 3, the range has 3"},
		"anchor unused":    {func(r *Range) { r.Batches[2].Anchor = 0; r.Batches[2].BatchIndex = 3 }, ErrFormat, "anchors[1] holds no batch"},
		"anchor order":     {func(r *Range) { r.Anchors[2].LogIndex = 3 }, ErrFormat, "log order"},
		"head reference":   {func(r *Range) { r.Anchors[2].Head = 2 }, ErrFormat, "head 2, the range has 2"},
		"head unused":      {func(r *Range) { r.Anchors[2].Head = 0; r.Erasures[1].Head = 0 }, ErrFormat, "heads[1] proves no anchor or erasure"},
		"head order":       {func(r *Range) { r.Heads[1].Height = 5 }, ErrFormat, "height order"},
		"anchor heads":     {func(r *Range) { r.Anchors[0].Head = 1; r.Anchors[2].Head = 0 }, ErrFormat, "same head or a later one"},
		"no heads":         {func(r *Range) { r.Heads = nil }, ErrFormat, "at least one"},
		"mixed versions":   {func(r *Range) { r.Heads[1].Device.RegistryProof = h(3, 1) }, ErrFormat, "registry_proof"},
		"v2 without proof": {func(r *Range) { r.Heads[0].StateProof = nil }, ErrFormat, "needs"},
		"no raw":           {func(r *Range) { r.Readings[1].Raw = nil }, ErrFormat, "has no raw"},
		"leaf, no erase":   {func(r *Range) { r.Readings[1].Leaf = h(32, 1) }, ErrErased, "seq 10) has leaf or ts but no erase"},
		"ts, no erase":     {func(r *Range) { r.Readings[1].TS = 5 }, ErrErased, "has leaf or ts but no erase"},
		"erased with raw":  {func(r *Range) { r.Readings[4].Raw = h(3, 1) }, ErrErased, "seq 13) has erase: it needs leaf (32 bytes) and no raw"},
		"erased leaf size": {func(r *Range) { r.Readings[5].Leaf = h(31, 1) }, ErrErased, "leaf (32 bytes)"},
		"erase reference":  {func(r *Range) { r.Readings[5].Erase = ptr(2) }, ErrErased, "erase 2, the range has 2 erasures"},
		"erasure unused":   {func(r *Range) { r.Readings[5].Erase = ptr(0) }, ErrErased, "erasures[1] erased no reading"},
		"erasure order":    {func(r *Range) { r.Erasures[1].LogIndex = 2 }, ErrErased, "erasures are in log order"},
		"erasure head":     {func(r *Range) { r.Erasures[1].Head = 2 }, ErrErased, "head 2, the range has 2"},
		"erasure heads":    {func(r *Range) { r.Erasures[0].Head = 1; r.Erasures[1].Head = 0 }, ErrErased, "same head or a later one"},
		"light block JSON": {func(r *Range) { r.Heads[0].LightBlock = json.RawMessage(`{`) }, ErrFormat, "light_block"},
		"light chain JSON": {func(r *Range) { r.LightChain[0] = json.RawMessage(`x`) }, ErrFormat, "light_chain[0]"},
	} {
		t.Run(name, func(t *testing.T) {
			r := sampleRange()
			tc.mutate(r)
			_, err := r.Marshal()
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Marshal: %v, want %v with %q", err, tc.want, tc.text)
			}
		})
	}
	// ParseRange refuses an erased reading's members on a reading that names no erasure.
	good, err := sampleRange().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	erased := bytes.Replace(good, []byte(`"leaf_index": 0,`), []byte(`"leaf_index": 0, "leaf": "`+strings.Repeat("ab", 32)+`",`), 1)
	if _, err := ParseRange(erased); !errors.Is(err, ErrErased) {
		t.Fatalf("erased reading: %v", err)
	}
	if _, err := ParseRange(bytes.Replace(good, []byte(RangeFormat), []byte(Format), 1)); !errors.Is(err, ErrFormat) {
		t.Fatalf("single bundle format: %v", err)
	}
	if _, err := ParseRange(bytes.Replace(good, []byte(`"seq": 10,`), []byte(`"seq": 010,`), 1)); !errors.Is(err, ErrFormat) {
		t.Fatalf("leading zero: %v", err)
	}
	if _, err := ParseRange(bytes.Replace(good, []byte(`"seq": 10,`), []byte(`"seq":10,`), 1)); !errors.Is(err, ErrNotCanonical) {
		t.Fatalf("whitespace: %v", err)
	}
}

func FuzzParseRange(f *testing.F) {
	good, err := sampleRange().Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"format":"anchorline.range/v1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, fastErr := ParseRange(data)
		_, slowErr := parseRangeSlow(data)
		if (fastErr == nil) != (slowErr == nil) {
			t.Fatalf("ParseRange %v, slow path %v", fastErr, slowErr)
		}
		if fastErr == nil {
			again, err := fast.Marshal()
			if err != nil || !bytes.Equal(again, data) {
				t.Fatalf("accepted a non-canonical range: %v", err)
			}
		}
	})
}
