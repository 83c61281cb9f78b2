package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
)

// RangeFormat is the format of a range bundle: the proofs of a device's readings between two
// seqs in one file (schemas/proof.md, "Range bundles").
const RangeFormat = "anchorline.range/v1"

// ErrErased marks a range whose erased readings (DESIGN 2.4: leaf, ts and erase in place of
// raw) or erasures do not fit together (schemas/proof.md "Erased readings in a range").
var ErrErased = errors.New("bundle: an erased reading has leaf and erase in place of raw, and its erase entry in erasures")

// Range proves a device's readings with seqs in [From, To]: what the readings share is there
// once. Each reading refers to its batch, each batch to its anchor, each anchor to the head
// whose log proves its entry: a head is a ledger state (its header, log, registry and the
// device's record there) that proves the entries of a run of anchors at once.
type Range struct {
	Format  string `json:"format"`
	ChainID string `json:"chain_id"`
	Device  string `json:"device"`
	From    uint64 `json:"from"`
	To      uint64 `json:"to"`
	// LightChain is the union of the heads' light chains: light blocks oldest first, each
	// below the newest head's header; a head's header is checked from those below it,
	// exactly as a bundle's light_block from its light_chain. [] while the set never changed.
	LightChain []json.RawMessage `json:"light_chain"`
	Heads      []RangeHead       `json:"heads"`    // in height order
	Anchors    []RangeAnchor     `json:"anchors"`  // in log order
	Batches    []RangeBatch      `json:"batches"`  // in (anchor, batch_index) order
	Readings   []RangeReading    `json:"readings"` // in seq order
	// Erasures are the erase entries of the range's erased readings, in log order, each
	// proven in the log of a head; absent when no reading of the range is erased.
	Erasures []RangeErasure `json:"erasures,omitempty"`
}

// RangeErasure is an erase entry under which readings of the range lost their bytes.
type RangeErasure struct {
	Entry    Hex    `json:"entry"`
	LogIndex uint64 `json:"log_index"`
	Head     uint64 `json:"head"` // index into Range.Heads: the state whose log proves the entry
}

// RangeHead is a ledger state that proves the entries of the anchors that refer to it: a
// bundle's ledger member without what a range holds elsewhere (chain_id, light_chain, and the
// entry, which each anchor carries), with one multiproof for all its anchors' entries, and
// the device's record in that state.
type RangeHead struct {
	Device  Device `json:"device"` // as in a bundle, v1 or v2 as the head's app hash version
	Height  int64  `json:"height"`
	LogSize uint64 `json:"log_size"`
	LogRoot Hex    `json:"log_root"`
	// LogProof is the multiproof (anchor/merkle.MultiProof) of the entry leaves of this
	// head's anchors and erasures, in log order, in the log of LogSize entries.
	LogProof       []Hex           `json:"log_proof"`
	RegistryRoot   Hex             `json:"registry_root"`
	AppHashVersion uint64          `json:"app_hash_version,omitempty"`
	StateRoot      Hex             `json:"state_root,omitempty"`
	StateProof     *StateProof     `json:"state_proof,omitempty"`
	LightBlock     json.RawMessage `json:"light_block"`
}

// Bundle returns the bundle ledger member that h and chainID make (no entry, log path or
// light chain), for the checks a range shares with a bundle.
func (h *RangeHead) Bundle(chainID string) Ledger {
	return Ledger{ChainID: chainID, Height: h.Height, LogSize: h.LogSize, LogRoot: h.LogRoot, RegistryRoot: h.RegistryRoot,
		AppHashVersion: h.AppHashVersion, StateRoot: h.StateRoot, StateProof: h.StateProof, LightBlock: h.LightBlock}
}

// V2 reports whether the head's ledger state is under app hash v2.
func (h *RangeHead) V2() bool { return h.AppHashVersion == AppHashV2 }

// checkVersion checks that the head carries exactly the members of its app hash version.
func (h *RangeHead) checkVersion() error {
	b := Bundle{Device: h.Device, Ledger: Ledger{AppHashVersion: h.AppHashVersion, StateRoot: h.StateRoot, StateProof: h.StateProof}}
	return b.checkVersion()
}

// RangeAnchor is one anchor that holds readings of the range, with its ledger entry.
type RangeAnchor struct {
	ID      Hex    `json:"id"`
	Batches uint64 `json:"batches"`
	Root    Hex    `json:"root"`
	// Proof is the multiproof (anchor/merkle.MultiProof) of the anchor leaves of this anchor's
	// batches in the range, in batch_index order.
	Proof    []Hex  `json:"proof"`
	Head     uint64 `json:"head"` // index into Range.Heads
	Entry    Hex    `json:"entry"`
	LogIndex uint64 `json:"log_index"`
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
	Raw       Hex    `json:"raw,omitempty"`
	// An erased reading (DESIGN 2.4) has, in place of Raw, its leaf as stored, its device
	// time as its row recorded (omitted when 0) and Erase, the index in Range.Erasures of
	// the entry it was erased under.
	Leaf  Hex     `json:"leaf,omitempty"`
	TS    uint64  `json:"ts,omitempty"`
	Erase *uint64 `json:"erase,omitempty"`
}

// Erased reports whether the reading's bytes were erased.
func (rd *RangeReading) Erased() bool { return rd.Erase != nil }

// check checks the range's shape: every count and reference in bounds, the orders the format
// fixes, nothing that no reading needs, and no erased reading.
func (r *Range) check() error {
	if r.From > r.To {
		return fmt.Errorf("%w: from %d is after to %d", ErrFormat, r.From, r.To)
	}
	if len(r.Readings) == 0 || len(r.Batches) == 0 || len(r.Anchors) == 0 || len(r.Heads) == 0 {
		return fmt.Errorf("%w: a range holds at least one reading, batch, anchor and head", ErrFormat)
	}
	for i := range r.Heads {
		h := &r.Heads[i]
		if err := h.checkVersion(); err != nil {
			return fmt.Errorf("heads[%d]: %w", i, err)
		}
		if i > 0 && h.Height <= r.Heads[i-1].Height {
			return fmt.Errorf("%w: heads[%d]: height %d after %d: heads are in height order, each once", ErrFormat, i, h.Height, r.Heads[i-1].Height)
		}
	}
	usedHead := make([]bool, len(r.Heads))
	for i := range r.Anchors {
		a := &r.Anchors[i]
		if a.Head >= uint64(len(r.Heads)) {
			return fmt.Errorf("%w: anchors[%d]: head %d, the range has %d", ErrFormat, i, a.Head, len(r.Heads))
		}
		usedHead[a.Head] = true
		if i > 0 {
			p := &r.Anchors[i-1]
			if a.LogIndex <= p.LogIndex {
				return fmt.Errorf("%w: anchors[%d]: log_index %d after %d: anchors are in log order, each once", ErrFormat, i, a.LogIndex, p.LogIndex)
			}
			if a.Head < p.Head {
				return fmt.Errorf("%w: anchors[%d]: head %d after head %d: an anchor later in the log is proven in the same head or a later one", ErrFormat, i, a.Head, p.Head)
			}
		}
	}
	for i := range r.Erasures {
		e := &r.Erasures[i]
		if e.Head >= uint64(len(r.Heads)) {
			return fmt.Errorf("%w: erasures[%d]: head %d, the range has %d", ErrErased, i, e.Head, len(r.Heads))
		}
		usedHead[e.Head] = true
		if i > 0 {
			p := &r.Erasures[i-1]
			if e.LogIndex <= p.LogIndex {
				return fmt.Errorf("%w: erasures[%d]: log_index %d after %d: erasures are in log order, each once", ErrErased, i, e.LogIndex, p.LogIndex)
			}
			if e.Head < p.Head {
				return fmt.Errorf("%w: erasures[%d]: head %d after head %d: an erasure later in the log is proven in the same head or a later one", ErrErased, i, e.Head, p.Head)
			}
		}
	}
	for i, used := range usedHead {
		if !used {
			return fmt.Errorf("%w: heads[%d] proves no anchor or erasure of the range", ErrFormat, i)
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
	usedErasure := make([]bool, len(r.Erasures))
	for i := range r.Readings {
		rd := &r.Readings[i]
		switch {
		case rd.Erased() && (rd.Raw != nil || len(rd.Leaf) != 32):
			return fmt.Errorf("%w: readings[%d] (seq %d) has erase: it needs leaf (32 bytes) and no raw", ErrErased, i, rd.Seq)
		case rd.Erased() && *rd.Erase >= uint64(len(r.Erasures)):
			return fmt.Errorf("%w: readings[%d] (seq %d): erase %d, the range has %d erasures", ErrErased, i, rd.Seq, *rd.Erase, len(r.Erasures))
		case rd.Erased():
			usedErasure[*rd.Erase] = true
		case rd.Leaf != nil || rd.TS != 0:
			return fmt.Errorf("%w: readings[%d] (seq %d) has leaf or ts but no erase", ErrErased, i, rd.Seq)
		case len(rd.Raw) == 0:
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
	for i, used := range usedErasure {
		if !used {
			return fmt.Errorf("%w: erasures[%d] erased no reading of the range", ErrErased, i)
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

// rangeTail is how the canonical encoding of a range without anchors, batches and readings
// ends.
const rangeTail = ",\n  \"anchors\": [],\n  \"batches\": [],\n  \"readings\": []\n}"

// encode is the canonical encoding of r, whatever its shape. encoding/json writes everything
// up to the anchors; the anchors, batches and readings, which are the bulk of a range, are
// written here in the same layout (TestRangeEncoding holds the two to the same bytes).
func (r *Range) encode() ([]byte, error) {
	c := *r
	var err error
	c.LightChain = make([]json.RawMessage, len(r.LightChain))
	for i, lb := range r.LightChain {
		if c.LightChain[i], err = compactRawJSON(lb, fmt.Sprintf("light_chain[%d]", i)); err != nil {
			return nil, err
		}
	}
	c.Heads = make([]RangeHead, len(r.Heads))
	for i, h := range r.Heads {
		h.LogProof = nonNil(h.LogProof)
		if h.StateProof != nil {
			sp := *h.StateProof
			sp.Path = nonNil(sp.Path)
			h.StateProof = &sp
		}
		if h.LightBlock, err = compactRawJSON(h.LightBlock, fmt.Sprintf("heads[%d].light_block", i)); err != nil {
			return nil, err
		}
		c.Heads[i] = h
	}
	c.Anchors, c.Batches, c.Readings, c.Erasures = []RangeAnchor{}, []RangeBatch{}, []RangeReading{}, nil
	head, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(head, []byte(rangeTail)) {
		return nil, fmt.Errorf("%w: range encoding does not end in anchors, batches and readings", ErrFormat)
	}
	size := len(head)
	for _, rd := range r.Readings {
		size += 2*len(rd.Raw) + 128
	}
	for _, b := range r.Batches {
		size += 160 + 76*len(b.Proof)
	}
	for _, a := range r.Anchors {
		size += 200 + 2*len(a.Entry) + 76*len(a.Proof)
	}
	out := make([]byte, 0, size)
	out = append(out, head[:len(head)-len(rangeTail)]...)
	out = append(out, ",\n  \"anchors\": ["...)
	for i, a := range r.Anchors {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, "\n    {\n      \"id\": "...)
		out = appendHex(out, a.ID)
		out = append(out, ",\n      \"batches\": "...)
		out = strconv.AppendUint(out, a.Batches, 10)
		out = append(out, ",\n      \"root\": "...)
		out = appendHex(out, a.Root)
		out = append(out, ",\n      \"proof\": "...)
		out = appendHexes(out, a.Proof)
		out = append(out, ",\n      \"head\": "...)
		out = strconv.AppendUint(out, a.Head, 10)
		out = append(out, ",\n      \"entry\": "...)
		out = appendHex(out, a.Entry)
		out = append(out, ",\n      \"log_index\": "...)
		out = strconv.AppendUint(out, a.LogIndex, 10)
		out = append(out, "\n    }"...)
	}
	if len(r.Anchors) > 0 {
		out = append(out, "\n  "...)
	}
	out = append(out, "]"...)
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
		out = append(out, ",\n      \"proof\": "...)
		out = appendHexes(out, b.Proof)
		out = append(out, "\n    }"...)
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
		if len(rd.Raw) > 0 { // the members encoding/json writes, omitempty
			out = append(out, ",\n      \"raw\": "...)
			out = appendHex(out, rd.Raw)
		}
		if len(rd.Leaf) > 0 {
			out = append(out, ",\n      \"leaf\": "...)
			out = appendHex(out, rd.Leaf)
		}
		if rd.TS != 0 {
			out = append(out, ",\n      \"ts\": "...)
			out = strconv.AppendUint(out, rd.TS, 10)
		}
		if rd.Erased() {
			out = append(out, ",\n      \"erase\": "...)
			out = strconv.AppendUint(out, *rd.Erase, 10)
		}
		out = append(out, "\n    }"...)
	}
	if len(r.Readings) > 0 {
		out = append(out, "\n  "...)
	}
	out = append(out, "]"...)
	if len(r.Erasures) > 0 {
		out = append(out, ",\n  \"erasures\": ["...)
		for i, e := range r.Erasures {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, "\n    {\n      \"entry\": "...)
			out = appendHex(out, e.Entry)
			out = append(out, ",\n      \"log_index\": "...)
			out = strconv.AppendUint(out, e.LogIndex, 10)
			out = append(out, ",\n      \"head\": "...)
			out = strconv.AppendUint(out, e.Head, 10)
			out = append(out, "\n    }"...)
		}
		out = append(out, "\n  ]"...)
	}
	out = append(out, "\n}\n"...)
	return out, nil
}

// appendHexes writes a list of hex strings as a member of an object in an array element.
func appendHexes(out []byte, hs []Hex) []byte {
	out = append(out, '[')
	for j, h := range hs {
		if j > 0 {
			out = append(out, ',')
		}
		out = append(out, "\n        "...)
		out = appendHex(out, h)
	}
	if len(hs) > 0 {
		out = append(out, "\n      "...)
	}
	return append(out, ']')
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
// before the anchors goes through encoding/json and its re-encoding is compared; the anchors,
// batches and readings are read by a scanner that accepts exactly the bytes encode writes (on
// every core where they are many bytes: array), so what it accepts is canonical by
// construction. A canonical range's first ",\n  \"anchors\": [" is its top-level member (no
// string holds a newline, light blocks are compact, nested members are indented deeper), so
// whatever the fast path refuses is not canonical: it returns the error when the part before
// the anchors is refused, and ok false when the scanner stops (then parseRangeSlow words the
// error: a reading's members are named there).
func parseRangeFast(data []byte) (*Range, bool, error) {
	const anchors = ",\n  \"anchors\": ["
	i := bytes.Index(data, []byte(anchors))
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
	s.lit(anchors)
	r.Anchors = array(&s, (*scanner).anchor)
	s.lit(",\n  \"batches\": [")
	r.Batches = array(&s, (*scanner).batch)
	s.lit(",\n  \"readings\": [")
	r.Readings = array(&s, (*scanner).reading)
	if s.try(",\n  \"erasures\": [") {
		if r.Erasures = array(&s, (*scanner).erasure); len(r.Erasures) == 0 {
			s.ok = false // an empty list is omitted
		}
	}
	s.lit("\n}\n")
	if !s.ok || s.i != len(data) {
		return nil, false, nil
	}
	return &r, true, nil
}

// onEveryCoreFrom is the size of an array's items from which array reads them on every core.
const onEveryCoreFrom = 64 << 10

// array reads what encode writes of an array member after its '[': "]" when it is empty, else
// its items, separated by ',', then "\n  ]". Decoding the hex of the batches' proofs and the
// readings' raws is most of parsing a range, so when the items are many bytes they are read
// on every core (itemsOnEveryCore), which accepts exactly what items accepts.
func array[T any](s *scanner, item func(*scanner) T) []T {
	if s.take(']') {
		return []T{}
	}
	var out []T
	if n, end := runtime.GOMAXPROCS(0), s.arrayEnd(); n > 1 && end-s.i > onEveryCoreFrom {
		out = itemsOnEveryCore(s, end, n, item)
	} else {
		out = items(s, item)
	}
	s.lit("\n  ]")
	return out
}

// items reads one item or more, separated by ','.
func items[T any](s *scanner, item func(*scanner) T) []T {
	var out []T
	for s.ok {
		out = append(out, item(s))
		if !s.take(',') {
			break
		}
	}
	return out
}

// arrayEnd returns where the first "\n  ]" from s.i begins, or -1. When the items that begin
// at s.i are canonical, it is where they end: a top-level member is indented by two spaces,
// anything in an item by four or more, and no string holds a newline.
func (s *scanner) arrayEnd() int {
	for j := s.i; ; j++ {
		k := bytes.IndexByte(s.b[j:], ']')
		if k < 0 {
			return -1
		}
		j += k
		if j-3 >= s.i && string(s.b[j-3:j]) == "\n  " {
			return j - 3
		}
	}
}

// itemSep is what encode writes between two items of an array member. In canonical items it
// is nowhere else: a '{' after a newline and four spaces opens an item.
const itemSep = ",\n    {"

// itemsOnEveryCore reads the items in s.b[s.i:end] as items does, but on up to n goroutines:
// it cuts them at the separators found nearest after n-1 evenly spaced points (fewer if there
// are none) and reads each chunk with its own scanner, which must end exactly at its chunk's
// end. So it accepts exactly what items accepts, up to end (chunks joined by the separators'
// ',' are items separated by ','; canonical items are cut between two items), and leaves s at
// end.
func itemsOnEveryCore[T any](s *scanner, end, n int, item func(*scanner) T) []T {
	cuts := cutPoints(s.b[:end], s.i, n)
	parts := make([][]T, len(cuts)+1)
	ok := make([]bool, len(parts))
	var wg sync.WaitGroup
	from := s.i
	for k := range parts {
		to := end
		if k < len(cuts) {
			to = cuts[k]
		}
		c := &scanner{b: s.b[:to], i: from, ok: true, arena: s.spare((to - from) / 2)}
		wg.Go(func() {
			parts[k] = items(c, item)
			ok[k] = c.ok && c.i == to
		})
		from = to + 1 // past the separator's ','
	}
	wg.Wait()
	s.i = end
	s.ok = s.ok && !slices.Contains(ok, false)
	return slices.Concat(parts...)
}

// cutPoints returns the positions of the ',' of up to n-1 separators in b[from:], in order,
// each the first at or after (from + k*(len(b)-from)/n) and after the one before.
func cutPoints(b []byte, from, n int) []int {
	var cuts []int
	at := from + 1
	for k := 1; k < n; k++ {
		at = max(at, from+k*(len(b)-from)/n)
		j := bytes.Index(b[at:], []byte(itemSep))
		if j < 0 {
			break
		}
		cuts = append(cuts, at+j)
		at += j + 1
	}
	return cuts
}

// anchor reads what encode writes of an anchor.
func (s *scanner) anchor() RangeAnchor {
	var a RangeAnchor
	s.lit("\n    {\n      \"id\": ")
	a.ID = s.hex()
	s.lit(",\n      \"batches\": ")
	a.Batches = s.uint()
	s.lit(",\n      \"root\": ")
	a.Root = s.hex()
	s.lit(",\n      \"proof\": ")
	a.Proof = s.hexes()
	s.lit(",\n      \"head\": ")
	a.Head = s.uint()
	s.lit(",\n      \"entry\": ")
	a.Entry = s.hex()
	s.lit(",\n      \"log_index\": ")
	a.LogIndex = s.uint()
	s.lit("\n    }")
	return a
}

// batch reads what encode writes of a batch.
func (s *scanner) batch() RangeBatch {
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
	s.lit(",\n      \"proof\": ")
	b.Proof = s.hexes()
	s.lit("\n    }")
	return b
}

// reading reads what encode writes of a reading.
func (s *scanner) reading() RangeReading {
	var rd RangeReading
	s.lit("\n    {\n      \"seq\": ")
	rd.Seq = s.uint()
	s.lit(",\n      \"batch\": ")
	rd.Batch = s.uint()
	s.lit(",\n      \"leaf_index\": ")
	rd.LeafIndex = s.uint()
	if s.try(",\n      \"raw\": ") {
		rd.Raw = s.hex()
		s.lit("\n    }")
		return rd
	}
	// An erased reading: leaf, ts unless 0, erase.
	s.lit(",\n      \"leaf\": ")
	rd.Leaf = s.hex()
	if s.try(",\n      \"ts\": ") {
		if rd.TS = s.uint(); rd.TS == 0 {
			s.ok = false // 0 is omitted
		}
	}
	s.lit(",\n      \"erase\": ")
	e := s.uint()
	rd.Erase = &e
	s.lit("\n    }")
	return rd
}

// erasure reads what encode writes of an erasure.
func (s *scanner) erasure() RangeErasure {
	var e RangeErasure
	s.lit("\n    {\n      \"entry\": ")
	e.Entry = s.hex()
	s.lit(",\n      \"log_index\": ")
	e.LogIndex = s.uint()
	s.lit(",\n      \"head\": ")
	e.Head = s.uint()
	s.lit("\n    }")
	return e
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

// try consumes l if it is next, and reports whether it was; ok stays as it was otherwise.
func (s *scanner) try(l string) bool {
	if s.ok && len(s.b)-s.i >= len(l) && string(s.b[s.i:s.i+len(l)]) == l {
		s.i += len(l)
		return true
	}
	return false
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

// hexes reads what appendHexes writes.
func (s *scanner) hexes() []Hex {
	s.lit("[")
	out := []Hex{}
	if s.take(']') {
		return out
	}
	for s.ok {
		s.lit("\n        ")
		out = append(out, s.hex())
		if !s.take(',') {
			break
		}
	}
	s.lit("\n      ]")
	return out
}

// hex reads a quoted string of lower-case hex digits, of even length, in one pass: the
// closing quote found first (a string holds no quote), then each pair decoded by table.
func (s *scanner) hex() Hex {
	if !s.take('"') {
		s.ok = false
		return nil
	}
	end := bytes.IndexByte(s.b[s.i:], '"')
	if end < 0 || end%2 != 0 {
		s.ok = false
		return nil
	}
	digits := s.b[s.i : s.i+end]
	n := end / 2
	if cap(s.arena)-len(s.arena) < n {
		s.arena = make([]byte, 0, max(n, 4096))
	}
	at := len(s.arena)
	out := s.arena[at : at+n : at+n]
	for i := range n {
		hi, lo := lowerHex[digits[2*i]], lowerHex[digits[2*i+1]]
		if hi|lo == notHex {
			s.ok = false
			return nil
		}
		out[i] = hi<<4 | lo
	}
	s.arena = s.arena[:at+n]
	s.i += end + 1
	return out
}

// notHex marks a byte that is not a lower-case hex digit in lowerHex; its low nibble bits make
// any OR with it notHex's too, so one test covers both digits of a pair.
const notHex = 0xff

// lowerHex maps '0'-'9' and 'a'-'f' to their values and every other byte (upper-case digits
// included: the canonical encoding is lower-case) to notHex. Immutable.
var lowerHex = func() (t [256]byte) {
	for i := range t {
		t[i] = notHex
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()

// spare hands out n bytes of s's arena, as the empty arena of another scanner.
func (s *scanner) spare(n int) []byte {
	if cap(s.arena)-len(s.arena) < n {
		return make([]byte, 0, n)
	}
	at := len(s.arena)
	s.arena = s.arena[:at+n]
	return s.arena[at : at : at+n]
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
