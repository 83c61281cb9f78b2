package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// RangeFormat is the format of a range bundle: the proofs of a device's readings between two
// seqs in one file (schemas/proof.md, "Range bundles").
const RangeFormat = "anchorline.range/v1"

// ErrErased refuses a range reading that carries leaf and erase instead of raw: the room
// schemas/proof.md reserves for erased readings (DESIGN 2.4), which this version does not
// verify.
var ErrErased = errors.New("bundle: erased readings need a verifier that knows erase entries")

// Range proves a device's readings with seqs in [From, To]: what the readings share is there
// once (an anchor's ledger part and device record, a batch's root and multiproof), and each
// reading refers to its batch, which refers to its anchor.
type Range struct {
	Format  string `json:"format"`
	ChainID string `json:"chain_id"`
	Device  string `json:"device"`
	From    uint64 `json:"from"`
	To      uint64 `json:"to"`
	// LightChain is the union of the anchors' light chains: light blocks oldest first, each
	// below the newest anchor's header; an anchor's header is checked from those below it,
	// exactly as a bundle's light_block from its light_chain. [] while the set never changed.
	LightChain []json.RawMessage `json:"light_chain"`
	Anchors    []RangeAnchor     `json:"anchors"`  // in log order
	Batches    []RangeBatch      `json:"batches"`  // in (anchor, batch_index) order
	Readings   []RangeReading    `json:"readings"` // in seq order
}

// RangeAnchor is one anchor that holds readings of the range, with the ledger state after it
// and the device's record in that state.
type RangeAnchor struct {
	ID      Hex    `json:"id"`
	Batches uint64 `json:"batches"`
	Root    Hex    `json:"root"`
	// Proof is the multiproof (anchor/merkle.MultiProof) of the anchor leaves of this anchor's
	// batches in the range, in batch_index order.
	Proof  []Hex       `json:"proof"`
	Device Device      `json:"device"` // as in a bundle, v1 or v2 as the ledger part
	Ledger RangeLedger `json:"ledger"`
}

// RangeLedger is a bundle's ledger member without what a range holds once (chain_id,
// light_chain).
type RangeLedger struct {
	Height         int64           `json:"height"`
	Entry          Hex             `json:"entry"`
	LogIndex       uint64          `json:"log_index"`
	LogSize        uint64          `json:"log_size"`
	LogPath        []Hex           `json:"log_path"`
	LogRoot        Hex             `json:"log_root"`
	RegistryRoot   Hex             `json:"registry_root"`
	AppHashVersion uint64          `json:"app_hash_version,omitempty"`
	StateRoot      Hex             `json:"state_root,omitempty"`
	StateProof     *StateProof     `json:"state_proof,omitempty"`
	LightBlock     json.RawMessage `json:"light_block"`
}

// Bundle returns the bundle ledger member that l and chainID make (light_chain empty), for
// the checks a range shares with a bundle.
func (l *RangeLedger) Bundle(chainID string) Ledger {
	return Ledger{ChainID: chainID, Height: l.Height, Entry: l.Entry, LogIndex: l.LogIndex, LogSize: l.LogSize, LogPath: l.LogPath,
		LogRoot: l.LogRoot, RegistryRoot: l.RegistryRoot, AppHashVersion: l.AppHashVersion, StateRoot: l.StateRoot, StateProof: l.StateProof,
		LightBlock: l.LightBlock}
}

// RangeBatch is one batch that holds readings of the range.
type RangeBatch struct {
	ID         Hex    `json:"id"`
	Size       uint64 `json:"size"`
	Root       Hex    `json:"root"`
	Anchor     uint64 `json:"anchor"` // index into Range.Anchors
	BatchIndex uint64 `json:"batch_index"`
	// Proof is the multiproof (anchor/merkle.MultiProof) of the leaves of this batch's
	// readings in the range, in leaf_index order.
	Proof []Hex `json:"proof"`
}

// RangeReading is one reading of the range.
type RangeReading struct {
	Seq       uint64 `json:"seq"`
	Batch     uint64 `json:"batch"` // index into Range.Batches
	LeafIndex uint64 `json:"leaf_index"`
	Raw       Hex    `json:"raw"`
	// Leaf and Erase are reserved for erased readings (DESIGN 2.4): such a reading will carry
	// its leaf and the erase entry with its log proof instead of raw. This version refuses
	// them (ErrErased).
	Leaf  Hex             `json:"leaf,omitempty"`
	Erase json.RawMessage `json:"erase,omitempty"`
}

// V2 reports whether the anchor's ledger state is under app hash v2.
func (a *RangeAnchor) V2() bool { return a.Ledger.AppHashVersion == AppHashV2 }

// checkVersion checks that the anchor carries exactly the members of its app hash version.
func (a *RangeAnchor) checkVersion() error {
	b := Bundle{Device: a.Device, Ledger: Ledger{AppHashVersion: a.Ledger.AppHashVersion, StateRoot: a.Ledger.StateRoot, StateProof: a.Ledger.StateProof}}
	return b.checkVersion()
}

// check checks the range's shape: every count and reference in bounds, the orders the format
// fixes, nothing that no reading needs, and no erased reading.
func (r *Range) check() error {
	if r.From > r.To {
		return fmt.Errorf("%w: from %d is after to %d", ErrFormat, r.From, r.To)
	}
	if len(r.Readings) == 0 || len(r.Batches) == 0 || len(r.Anchors) == 0 {
		return fmt.Errorf("%w: a range holds at least one reading, batch and anchor", ErrFormat)
	}
	for i := range r.Anchors {
		a := &r.Anchors[i]
		if err := a.checkVersion(); err != nil {
			return fmt.Errorf("anchors[%d]: %w", i, err)
		}
		if i > 0 && a.Ledger.LogIndex <= r.Anchors[i-1].Ledger.LogIndex {
			return fmt.Errorf("%w: anchors[%d]: log_index %d after %d: anchors are in log order, each once", ErrFormat, i, a.Ledger.LogIndex, r.Anchors[i-1].Ledger.LogIndex)
		}
	}
	usedAnchor := make([]bool, len(r.Anchors))
	for i, b := range r.Batches {
		if b.Anchor >= uint64(len(r.Anchors)) {
			return fmt.Errorf("%w: batches[%d]: anchor %d, the range has %d", ErrFormat, i, b.Anchor, len(r.Anchors))
		}
		usedAnchor[b.Anchor] = true
		if i > 0 {
			p := r.Batches[i-1]
			if b.Anchor < p.Anchor || b.Anchor == p.Anchor && b.BatchIndex <= p.BatchIndex {
				return fmt.Errorf("%w: batches[%d]: batches are in (anchor, batch_index) order, each once", ErrFormat, i)
			}
		}
	}
	for i, used := range usedAnchor {
		if !used {
			return fmt.Errorf("%w: anchors[%d] holds no batch of the range", ErrFormat, i)
		}
	}
	usedBatch := make([]bool, len(r.Batches))
	for i := range r.Readings {
		rd := &r.Readings[i]
		if rd.Leaf != nil || rd.Erase != nil {
			return fmt.Errorf("%w: readings[%d] (seq %d) has leaf or erase", ErrErased, i, rd.Seq)
		}
		if len(rd.Raw) == 0 {
			return fmt.Errorf("%w: readings[%d] (seq %d) has no raw", ErrFormat, i, rd.Seq)
		}
		if rd.Seq < r.From || rd.Seq > r.To {
			return fmt.Errorf("%w: readings[%d]: seq %d is outside [%d, %d]", ErrFormat, i, rd.Seq, r.From, r.To)
		}
		if i > 0 && rd.Seq <= r.Readings[i-1].Seq {
			return fmt.Errorf("%w: readings[%d]: seq %d after seq %d: readings are in seq order, each seq once", ErrFormat, i, rd.Seq, r.Readings[i-1].Seq)
		}
		if rd.Batch >= uint64(len(r.Batches)) {
			return fmt.Errorf("%w: readings[%d] (seq %d): batch %d, the range has %d", ErrFormat, i, rd.Seq, rd.Batch, len(r.Batches))
		}
		usedBatch[rd.Batch] = true
	}
	for i, used := range usedBatch {
		if !used {
			return fmt.Errorf("%w: batches[%d] holds no reading of the range", ErrFormat, i)
		}
	}
	return nil
}

// compactRawJSON returns raw without insignificant whitespace.
func compactRawJSON(raw json.RawMessage, what string) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFormat, what, err)
	}
	return buf.Bytes(), nil
}

// Marshal returns the canonical encoding, as Bundle.Marshal's: two-space indented JSON in
// field order (json.MarshalIndent's layout), arrays as [] when empty, light blocks compacted
// then indented like the rest, and a final newline. It refuses a range whose shape check
// fails (ErrFormat, ErrErased).
func (r *Range) Marshal() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return r.encode()
}

// rangeTail is how the canonical encoding of a range without batches and readings ends.
const rangeTail = ",\n  \"batches\": [],\n  \"readings\": []\n}"

// encode is the canonical encoding of r, whatever its shape. encoding/json writes everything
// up to the batches; the batches and readings, which are the bulk of a range, are written
// here in the same layout (TestRangeEncoding holds the two to the same bytes).
func (r *Range) encode() ([]byte, error) {
	c := *r
	var err error
	c.LightChain = make([]json.RawMessage, len(r.LightChain))
	for i, lb := range r.LightChain {
		if c.LightChain[i], err = compactRawJSON(lb, fmt.Sprintf("light_chain[%d]", i)); err != nil {
			return nil, err
		}
	}
	c.Anchors = make([]RangeAnchor, len(r.Anchors))
	for i, a := range r.Anchors {
		a.Proof = nonNil(a.Proof)
		a.Ledger.LogPath = nonNil(a.Ledger.LogPath)
		if a.Ledger.StateProof != nil {
			sp := *a.Ledger.StateProof
			sp.Path = nonNil(sp.Path)
			a.Ledger.StateProof = &sp
		}
		if a.Ledger.LightBlock, err = compactRawJSON(a.Ledger.LightBlock, fmt.Sprintf("anchors[%d].ledger.light_block", i)); err != nil {
			return nil, err
		}
		c.Anchors[i] = a
	}
	c.Batches, c.Readings = []RangeBatch{}, []RangeReading{}
	head, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(head, []byte(rangeTail)) {
		return nil, fmt.Errorf("%w: range encoding does not end in batches and readings", ErrFormat)
	}
	size := len(head)
	for _, rd := range r.Readings {
		size += 2*len(rd.Raw) + 128
	}
	for _, b := range r.Batches {
		size += 160 + 76*len(b.Proof)
	}
	out := make([]byte, 0, size)
	out = append(out, head[:len(head)-len(rangeTail)]...)
	out = append(out, ",\n  \"batches\": ["...)
	for i, b := range r.Batches {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, "\n    {\n      \"id\": "...)
		out = appendHex(out, b.ID)
		out = append(out, ",\n      \"size\": "...)
		out = strconv.AppendUint(out, b.Size, 10)
		out = append(out, ",\n      \"root\": "...)
		out = appendHex(out, b.Root)
		out = append(out, ",\n      \"anchor\": "...)
		out = strconv.AppendUint(out, b.Anchor, 10)
		out = append(out, ",\n      \"batch_index\": "...)
		out = strconv.AppendUint(out, b.BatchIndex, 10)
		out = append(out, ",\n      \"proof\": ["...)
		for j, h := range b.Proof {
			if j > 0 {
				out = append(out, ',')
			}
			out = append(out, "\n        "...)
			out = appendHex(out, h)
		}
		if len(b.Proof) > 0 {
			out = append(out, "\n      "...)
		}
		out = append(out, "]\n    }"...)
	}
	if len(r.Batches) > 0 {
		out = append(out, "\n  "...)
	}
	out = append(out, "],\n  \"readings\": ["...)
	for i, rd := range r.Readings {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, "\n    {\n      \"seq\": "...)
		out = strconv.AppendUint(out, rd.Seq, 10)
		out = append(out, ",\n      \"batch\": "...)
		out = strconv.AppendUint(out, rd.Batch, 10)
		out = append(out, ",\n      \"leaf_index\": "...)
		out = strconv.AppendUint(out, rd.LeafIndex, 10)
		out = append(out, ",\n      \"raw\": "...)
		out = appendHex(out, rd.Raw)
		if rd.Leaf != nil || rd.Erase != nil {
			return nil, fmt.Errorf("%w: readings[%d] (seq %d) has leaf or erase", ErrErased, i, rd.Seq)
		}
		out = append(out, "\n    }"...)
	}
	if len(r.Readings) > 0 {
		out = append(out, "\n  "...)
	}
	out = append(out, "]\n}\n"...)
	return out, nil
}

func appendHex(out, b []byte) []byte {
	out = append(out, '"')
	out = hex.AppendEncode(out, b)
	return append(out, '"')
}

// ParseRange decodes a range bundle strictly: known members only, lower-case hex, the right
// format, the shape Marshal requires, and exactly the canonical encoding.
func ParseRange(data []byte) (*Range, error) {
	r, ok, err := parseRangeFast(data)
	if err != nil {
		return nil, err
	}
	if !ok {
		return parseRangeSlow(data)
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	return r, nil
}

// parseRangeSlow is ParseRange through encoding/json alone: it decodes any JSON and says
// what is wrong with it.
func parseRangeSlow(data []byte) (*Range, error) {
	var r Range
	if err := strict(data, &r); err != nil {
		return nil, err
	}
	if err := wantFormat(r.Format, RangeFormat); err != nil {
		return nil, err
	}
	if err := canonical(data, r.Marshal); err != nil {
		return nil, err
	}
	return &r, nil
}

// parseRangeFast decodes a range in its canonical encoding, and nothing else. Everything
// before the batches goes through encoding/json and its re-encoding is compared; the batches
// and readings are read by a scanner that accepts exactly the bytes encode writes, so what it
// accepts is canonical by construction. A canonical range's first ",\n  \"batches\": [" is
// its top-level member (no string holds a newline, light blocks are compact, nested members
// are indented deeper), so whatever the fast path refuses is not canonical: it returns the
// error when the part before the batches is refused, and ok false when the scanner stops (then
// parseRangeSlow words the error: a reading's members are named there).
func parseRangeFast(data []byte) (*Range, bool, error) {
	const batches = ",\n  \"batches\": ["
	i := bytes.Index(data, []byte(batches))
	if i < 0 {
		return nil, false, nil
	}
	synth := make([]byte, 0, i+len(rangeTail)+1)
	synth = append(append(append(synth, data[:i]...), rangeTail...), '\n')
	var r Range
	if err := strict(synth, &r); err != nil {
		return nil, false, err
	}
	if err := wantFormat(r.Format, RangeFormat); err != nil {
		return nil, false, err
	}
	again, err := r.encode()
	if err != nil {
		return nil, false, err
	}
	if !bytes.Equal(again, synth) {
		if d := firstDiff(again, synth); d < i {
			return nil, false, fmt.Errorf("%w: re-encoding differs at byte %d", ErrNotCanonical, d)
		}
		return nil, false, nil
	}
	s := scanner{b: data, i: i, ok: true, arena: make([]byte, 0, (len(data)-i)/2)}
	s.lit(batches)
	if !s.take(']') {
		for s.ok {
			var b RangeBatch
			s.lit("\n    {\n      \"id\": ")
			b.ID = s.hex()
			s.lit(",\n      \"size\": ")
			b.Size = s.uint()
			s.lit(",\n      \"root\": ")
			b.Root = s.hex()
			s.lit(",\n      \"anchor\": ")
			b.Anchor = s.uint()
			s.lit(",\n      \"batch_index\": ")
			b.BatchIndex = s.uint()
			s.lit(",\n      \"proof\": [")
			b.Proof = []Hex{}
			if !s.take(']') {
				for s.ok {
					s.lit("\n        ")
					b.Proof = append(b.Proof, s.hex())
					if !s.take(',') {
						break
					}
				}
				s.lit("\n      ]")
			}
			s.lit("\n    }")
			r.Batches = append(r.Batches, b)
			if !s.take(',') {
				break
			}
		}
		s.lit("\n  ]")
	}
	s.lit(",\n  \"readings\": [")
	if !s.take(']') {
		for s.ok {
			var rd RangeReading
			s.lit("\n    {\n      \"seq\": ")
			rd.Seq = s.uint()
			s.lit(",\n      \"batch\": ")
			rd.Batch = s.uint()
			s.lit(",\n      \"leaf_index\": ")
			rd.LeafIndex = s.uint()
			s.lit(",\n      \"raw\": ")
			rd.Raw = s.hex()
			s.lit("\n    }")
			r.Readings = append(r.Readings, rd)
			if !s.take(',') {
				break
			}
		}
		s.lit("\n  ]")
	}
	s.lit("\n}\n")
	if !s.ok || s.i != len(data) {
		return nil, false, nil
	}
	return &r, true, nil
}

// scanner reads the exact bytes encode writes; ok turns false at the first byte that is not.
type scanner struct {
	b     []byte
	i     int
	ok    bool
	arena []byte // backs the decoded hex values
}

func (s *scanner) lit(l string) {
	if s.ok && len(s.b)-s.i >= len(l) && string(s.b[s.i:s.i+len(l)]) == l {
		s.i += len(l)
		return
	}
	s.ok = false
}

// take consumes c if it is next.
func (s *scanner) take(c byte) bool {
	if s.ok && s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// uint reads a decimal number as encoding/json writes a uint64: no sign, no leading zero.
func (s *scanner) uint() uint64 {
	start := s.i
	var n uint64
	for s.ok && s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		d := uint64(s.b[s.i] - '0')
		if n > (math.MaxUint64-d)/10 {
			s.ok = false
			return 0
		}
		n = n*10 + d
		s.i++
	}
	if s.i == start || s.b[start] == '0' && s.i > start+1 {
		s.ok = false
	}
	return n
}

// hex reads a quoted string of lower-case hex digits, of even length.
func (s *scanner) hex() Hex {
	if !s.take('"') {
		s.ok = false
		return nil
	}
	start := s.i
	for s.i < len(s.b) && (s.b[s.i] >= '0' && s.b[s.i] <= '9' || s.b[s.i] >= 'a' && s.b[s.i] <= 'f') {
		s.i++
	}
	digits := s.b[start:s.i]
	if !s.take('"') || len(digits)%2 != 0 {
		s.ok = false
		return nil
	}
	n := len(digits) / 2
	if cap(s.arena)-len(s.arena) < n {
		s.arena = make([]byte, 0, max(n, 4096))
	}
	at := len(s.arena)
	s.arena = s.arena[:at+n]
	out := s.arena[at : at+n : at+n]
	if _, err := hex.Decode(out, digits); err != nil {
		s.ok = false
		return nil
	}
	return out
}

// FormatOf returns the format member of a JSON object (a bundle, range bundle, trust file or
// any other Anchorline document), or "" if data is not a JSON object with a string format: a
// command that reads any of them dispatches on it, then parses strictly.
// The canonical encodings have format first, so a range of megabytes is not decoded for it.
func FormatOf(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err == nil && t == json.Delim('{') {
		if k, err := dec.Token(); err == nil && k == "format" {
			if v, err := dec.Token(); err == nil {
				s, _ := v.(string)
				return s
			}
			return ""
		}
	}
	var f struct {
		Format string `json:"format"`
	}
	if json.Unmarshal(data, &f) != nil {
		return ""
	}
	return f.Format
}
