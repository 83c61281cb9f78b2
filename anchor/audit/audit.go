package audit

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/entry"
)

// Batch is a batch record as stored.
type Batch struct {
	ID        [16]byte
	Root      merkle.Hash
	Size      uint32
	CreatedAt time.Time
	TSMax     uint64 // the latest device time of its readings, Unix ms
}

// Expiry is what retention dropped of the readings (services/retention), as the store
// records it: the monthly partitions of readings dropped (Months, YYYYMM of device time) and
// the end of the latest (Before), and the positions (by batch) recorded of readings dropped
// from batches that hold later ones. A position with no row is expired, not missing, when
// the month of its device time is one of Months (for a batch whose positions' months the store
// recorded, Source.LeafMonths); for a batch without them (stored before the store recorded
// them), when its TSMax is before Before; and, either way, when Positions lists it.
type Expiry struct {
	Months    map[uint32]bool
	Before    time.Time
	Positions map[[16]byte]map[uint32]bool
}

// dropped reports whether retention dropped any readings.
func (e Expiry) dropped() bool { return len(e.Months) > 0 || !e.Before.IsZero() }

// expired reports whether position i of batch b left by retention; months are the months of
// b's positions, nil if not recorded.
func (e Expiry) expired(b Batch, months []uint32, i uint32) bool {
	switch {
	case e.Positions[b.ID][i]:
		return true
	case months != nil:
		return int(i) < len(months) && e.Months[months[i]]
	}
	return !e.Before.IsZero() && b.TSMax < uint64(e.Before.UnixMilli())
}

// Reading is a stored reading row.
type Reading struct {
	Device    string
	Seq       uint64
	TS        uint64 // device time, Unix ms
	Raw       []byte
	Leaf      merkle.Hash // as stored
	BatchID   [16]byte
	LeafIndex uint32
	ErasedBy  uint64 // the log index of the erase entry its bytes were removed under, 0 if none
}

// Anchor is an anchor as stored: where its entry is in the ledger's log.
type Anchor struct {
	ID         [16]byte
	LogIndex   uint64
	AnchoredAt time.Time // as recorded
}

// Source is what the audit reads from the store (ClickHouse). Nothing it returns is trusted.
// The audit reads in ranges: no call names more than MaxIDs ids, and the readings of a range
// are asked for a window of batches at a time. It calls Readings (for the next window) while
// it calls the other methods: a Source must be safe for concurrent use.
type Source interface {
	// Batches returns the batch records whose readings' device times overlap [from, to]
	// (Unix ms), only those holding readings of device if it is not empty.
	Batches(ctx context.Context, from, to uint64, device string) ([]Batch, error)
	// Readings returns every row stored with one of the batch ids, by batch id (a batch
	// without rows is not in the map), in any order.
	Readings(ctx context.Context, ids [][16]byte) (map[[16]byte][]Reading, error)
	// BatchAnchors returns the anchor covering each of the batches that an anchor covers (the
	// one with the lowest id, if two do); a batch no anchor covers yet is not in the map.
	BatchAnchors(ctx context.Context, ids [][16]byte) (map[[16]byte][16]byte, error)
	// Anchors returns the records of those of the anchors that have one.
	Anchors(ctx context.Context, ids [][16]byte) (map[[16]byte]Anchor, error)
	// AnchorBatches returns, for each of the anchors that batches name, the ids of its
	// batches in batch index order, and the records of those batches that have one.
	AnchorBatches(ctx context.Context, ids [][16]byte) (map[[16]byte][][16]byte, map[[16]byte]Batch, error)
	// Strays returns readings in [from, to] (of device, if set), received before before,
	// whose batch has no record.
	Strays(ctx context.Context, from, to uint64, device string, before time.Time) ([]Reading, error)
	// Copies returns, for each of rs that has one, the batch of another stored row with the
	// same device, seq and leaf in a batch that has a record.
	Copies(ctx context.Context, rs []Reading) (map[int][16]byte, error)
	// Expired returns what retention dropped of the readings (zero: nothing).
	Expired(ctx context.Context) (Expiry, error)
	// LeafMonths returns, for each of the batches whose positions' device months are
	// recorded where retention does not drop them, the month (YYYYMM, as Expiry.Months) of
	// each of its positions in leaf index order; a batch without such a record is not in the
	// map. The audit asks only about batches lacking a row at some position, and only once
	// retention has dropped readings.
	LeafMonths(ctx context.Context, ids [][16]byte) (map[[16]byte][]uint32, error)
}

// MaxIDs is the most ids the audit passes to one call of a Source.
const MaxIDs = 1000

// DefaultWindow is how many readings the audit holds at once unless Query.Window says otherwise.
const DefaultWindow = 50_000

// Ledger is the ledger's log: the one thing the audit trusts.
type Ledger interface {
	// Entries returns consecutive entries from position from on (as many as it likes, none
	// past the end) and the log's size.
	Entries(ctx context.Context, from uint64) ([]LogEntry, uint64, error)
}

// Head is a log size and root the auditor has verified (a header signed by the trusted
// validators commits them): with it, the log the ledger node serves must rebuild that root.
type Head struct {
	Height  int64
	LogSize uint64
	LogRoot merkle.Hash
	// LightBlocks is how many light blocks led from the trusted validator set to the header
	// (0: the trusted set signed it).
	LightBlocks int
}

// LogEntry is a ledger log entry at its position.
type LogEntry struct {
	Index uint64
	Entry []byte
}

// anchorSlack is how long after the last device time of a range its readings may still be
// anchored (late delivery): anchors committed up to then are looked at.
const anchorSlack = 24 * time.Hour

// Kind is what is wrong with a reading.
type Kind string

// The kinds of findings.
const (
	Modified   Kind = "modified"   // stored bytes differ from what was anchored
	Missing    Kind = "missing"    // anchored, no longer stored
	Inserted   Kind = "inserted"   // stored, never anchored as part of its batch
	Unanchored Kind = "unanchored" // stored, its batch older than the grace period and not anchored
)

// Finding is one reading (or, where the device and seq cannot be known, one batch position)
// that does not match the ledger.
type Finding struct {
	Kind      Kind
	Device    string // empty for a missing reading: only its position is known
	Seq       uint64
	Batch     [16]byte
	LeafIndex uint32
	Detail    string
}

// Query bounds an audit: readings whose device time is in [From, To] (Unix ms), of Device if
// set. Batches younger than Grace at Now may be unanchored without a finding, as may batches
// anchored after the ledger was read.
type Query struct {
	From, To uint64
	Device   string
	Grace    time.Duration
	Now      time.Time
	Head     *Head // if set, the ledger's log is checked against it and read no further
	// Window is about how many readings are read and checked at once, by their batch records'
	// sizes (a larger batch is a window of its own; a window holds at most MaxIDs batches);
	// 0 means DefaultWindow. It bounds the audit's memory, whatever the range; the report is
	// the same for any window.
	Window int
}

func (q Query) window() int {
	if q.Window <= 0 {
		return DefaultWindow
	}
	return q.Window
}

// Report is the outcome of an audit.
type Report struct {
	Batches  int    // batch records checked
	Readings int    // readings checked against an anchor
	Anchors  int    // anchors checked against their ledger entry
	Entries  uint64 // ledger log entries read
	Verified bool   // the log read rebuilt the log root of a signed header (Query.Head)
	// LightBlocks is Head.LightBlocks of a verified head: the validator-set changes followed.
	LightBlocks int
	Pending     int // batches within the grace period or anchored after the ledger was read
	// Interrupted counts rows without a batch record that are copies of readings the audit
	// matched with their anchor (left by a worker killed between writing rows and record).
	Interrupted int
	Findings    []Finding
	Unmatched   []string // anchors whose batch records do not rebuild their ledger root
	// Erased counts, by the log index of the erase entry, the readings whose bytes were
	// removed under an entry of the log that covers them: their stored leaves rebuild the
	// anchored roots. Not findings; bytes gone without such an entry are.
	Erased map[uint64]int
	// Expired counts the anchored positions with no row that retention dropped (Expiry):
	// not findings.
	Expired int

	checked map[[16]byte]bool       // batches already compared with their anchor
	erases  map[uint64]*entry.Erase // the log's erase entries, by log index
	expiry  Expiry
	months  []uint32 // of the positions of the batch checkBatch checks, nil if not recorded
}

// leafOf is the leaf a row stands for: its stored leaf if its bytes were erased under an
// erase entry of the log that covers it, else the hash of its bytes.
func (r *Report) leafOf(row Reading) (merkle.Hash, bool) {
	if len(row.Raw) == 0 && row.ErasedBy > 0 {
		if e, ok := r.erases[row.ErasedBy]; ok && e.Covers(row.Device, row.Seq, row.TS) {
			return row.Leaf, true
		}
	}
	return merkle.ReadingLeaf(row.Raw), false
}

// OK reports whether nothing was found.
func (r Report) OK() bool { return len(r.Findings) == 0 && len(r.Unmatched) == 0 }

// Print writes the report for people: a summary, then one line per finding.
func (r Report) Print(w io.Writer) {
	count := map[Kind]int{}
	for _, f := range r.Findings {
		count[f.Kind]++
	}
	fmt.Fprintf(w, "audited %d batches, %d readings, %d anchors (%d batches too recent to be anchored)\n",
		r.Batches, r.Readings, r.Anchors, r.Pending)
	if r.Interrupted > 0 {
		fmt.Fprintf(w, "%d rows without a batch record are copies of audited readings (an interrupted write; not findings)\n", r.Interrupted)
	}
	switch {
	case r.Verified && r.LightBlocks > 0:
		fmt.Fprintf(w, "ledger log: %d entries, rebuilt to the log root a header commits, reached from the trusted validators through %d light blocks across validator-set changes\n", r.Entries, r.LightBlocks)
	case r.Verified:
		fmt.Fprintf(w, "ledger log: %d entries, rebuilt to the log root a header signed by the trusted validators commits\n", r.Entries)
	default:
		fmt.Fprintf(w, "ledger log: %d entries, as the ledger node served them (give --trust to check them against signed headers)\n", r.Entries)
	}
	fmt.Fprintf(w, "modified %d, missing %d, inserted %d, unanchored %d\n", count[Modified], count[Missing], count[Inserted], count[Unanchored])
	if r.Expired > 0 {
		fmt.Fprintf(w, "expired    %d anchored readings dropped by retention (clickhouse.retention.readings; not findings)\n", r.Expired)
	}
	for _, i := range slices.Sorted(maps.Keys(r.Erased)) {
		fmt.Fprintf(w, "erased     %d readings under the erase entry at log index %d (their leaves, not their bytes, match the anchors: not findings)\n", r.Erased[i], i)
	}
	for _, u := range r.Unmatched {
		fmt.Fprintf(w, "anchor     %s\n", u)
	}
	for _, f := range r.Findings {
		who := fmt.Sprintf("%s seq %d", f.Device, f.Seq)
		if f.Device == "" {
			who = "(unknown reading)"
		}
		fmt.Fprintf(w, "%-10s %s  batch %x leaf %d: %s\n", f.Kind, who, f.Batch, f.LeafIndex, f.Detail)
	}
	if r.OK() {
		fmt.Fprintln(w, "every stored reading in range matches its anchor on the ledger")
	}
}

// logAnchor is an anchor entry as the ledger's log holds it.
type logAnchor struct {
	index  uint64
	anchor *entry.Anchor
}

// readLog reads the ledger's log (up to q.Head's size if set, and then checks that it rebuilds
// q.Head's root) and returns its anchor entries by id.
func (rep *Report) readLog(ctx context.Context, led Ledger, q Query) (map[[16]byte]logAnchor, error) {
	out := map[[16]byte]logAnchor{}
	var leaves compactRoot
	for from := uint64(0); ; {
		es, size, err := led.Entries(ctx, from)
		if err != nil {
			return nil, fmt.Errorf("ledger log from entry %d: %w", from, err)
		}
		if q.Head != nil {
			size = q.Head.LogSize
		}
		for _, le := range es {
			if le.Index != from || from >= size {
				break
			}
			from++
			leaves.append(merkle.EntryLeaf(le.Entry))
			e, err := entry.Decode(le.Entry)
			switch {
			case err != nil:
			case e.Anchor != nil:
				var id [16]byte
				copy(id[:], e.Anchor.ID)
				out[id] = logAnchor{index: le.Index, anchor: e.Anchor}
			case e.Erase != nil:
				if rep.erases == nil {
					rep.erases = map[uint64]*entry.Erase{}
				}
				rep.erases[le.Index] = e.Erase
			}
		}
		rep.Entries = from
		if len(es) == 0 || from >= size {
			break
		}
	}
	if q.Head != nil {
		root, err := leaves.root()
		if err != nil {
			return nil, err
		}
		if rep.Entries != q.Head.LogSize || root != q.Head.LogRoot {
			rep.Unmatched = append(rep.Unmatched, fmt.Sprintf("the ledger node served %d log entries that do not rebuild the log root %s of %d entries signed at height %d: it cannot be trusted",
				rep.Entries, q.Head.LogRoot, q.Head.LogSize, q.Head.Height))
			return out, nil
		}
		rep.Verified, rep.LightBlocks = true, q.Head.LightBlocks
	}
	return out, nil
}

// compactRoot computes an RFC 6962 root over leaves appended one by one in O(log n) memory.
type compactRoot struct{ r *compact.Range }

func (c *compactRoot) append(leaf merkle.Hash) {
	if c.r == nil {
		c.r = (&compact.RangeFactory{Hash: func(l, r []byte) []byte { h := merkle.NodeHash(merkle.Hash(l), merkle.Hash(r)); return h[:] }}).NewEmptyRange(0)
	}
	_ = c.r.Append(leaf[:], nil) // appending to a range that starts at 0 cannot fail
}

func (c *compactRoot) root() (merkle.Hash, error) {
	if c.r == nil {
		return merkle.EmptyRoot(), nil
	}
	b, err := c.r.GetRootHash(nil)
	if err != nil {
		return merkle.Hash{}, err
	}
	return merkle.Hash(b), nil
}

func (rep *Report) add(q Query, f Finding) {
	if q.Device == "" || f.Device == "" || f.Device == q.Device {
		rep.Findings = append(rep.Findings, f)
	}
}

// checkBatch compares a batch's stored rows with its anchored root and size.
func (rep *Report) checkBatch(q Query, truth Batch, rows []Reading) {
	at := make([][]Reading, truth.Size)
	for _, r := range rows {
		if r.LeafIndex >= truth.Size {
			rep.add(q, Finding{Kind: Inserted, Device: r.Device, Seq: r.Seq, Batch: truth.ID, LeafIndex: r.LeafIndex,
				Detail: fmt.Sprintf("leaf index beyond the anchored batch size %d", truth.Size)})
			continue
		}
		at[r.LeafIndex] = append(at[r.LeafIndex], r)
	}
	// The rows' own bytes first: one candidate leaf per position, if the rows agree.
	leaves := make([]merkle.Hash, truth.Size)
	agree, complete := true, true
	for i, rs := range at {
		if len(rs) == 0 {
			complete = false
			continue
		}
		leaves[i], _ = rep.leafOf(rs[0])
		for _, r := range rs[1:] {
			if l, _ := rep.leafOf(r); l != leaves[i] {
				agree = false
			}
		}
	}
	if complete && agree {
		if root, err := merkle.Root(leaves); err == nil && root == truth.Root {
			rep.countErased(rows) // every row is what was anchored
			return
		}
	}
	// Something differs. The stored leaf column tells which rows, if it still rebuilds the root
	// (where a position holds rows with different leaves, each choice is tried).
	stored := make([]merkle.Hash, truth.Size)
	leafColumnTrue := complete && pickLeaves(at, stored, truth.Root, 256)
	for i, rs := range at {
		if len(rs) == 0 && rep.expiry.expired(truth, rep.months, uint32(i)) {
			rep.Expired++
			continue
		}
		if len(rs) == 0 {
			rep.add(q, Finding{Kind: Missing, Batch: truth.ID, LeafIndex: uint32(i),
				Detail: "no row at this position of the anchored batch (until it is back, the batch's other rows are checked only against their own leaves)"})
			continue
		}
		for _, r := range rs {
			leaf, _ := rep.leafOf(r)
			switch {
			case leaf != r.Leaf && len(r.Raw) == 0:
				rep.add(q, Finding{Kind: Modified, Device: r.Device, Seq: r.Seq, Batch: truth.ID, LeafIndex: r.LeafIndex,
					Detail: fmt.Sprintf("raw bytes removed without an erase entry of the log covering the reading (erased_by %d)", r.ErasedBy)})
			case leaf != r.Leaf:
				rep.add(q, Finding{Kind: Modified, Device: r.Device, Seq: r.Seq, Batch: truth.ID, LeafIndex: r.LeafIndex,
					Detail: "raw bytes do not hash to the leaf"})
			case leafColumnTrue && r.Leaf != stored[i]:
				rep.add(q, Finding{Kind: Inserted, Device: r.Device, Seq: r.Seq, Batch: truth.ID, LeafIndex: r.LeafIndex,
					Detail: "a second, different row at an anchored position"})
			case !leafColumnTrue && complete:
				rep.add(q, Finding{Kind: Modified, Device: r.Device, Seq: r.Seq, Batch: truth.ID, LeafIndex: r.LeafIndex,
					Detail: "the batch's rows do not rebuild its anchored root (rows rewritten with their leaves; which ones cannot be told)"})
			default:
				rep.countErased([]Reading{r}) // this row is what was anchored
			}
		}
	}
}

// countErased counts the rows of a batch that checked out whose bytes were erased under an
// entry covering them.
func (rep *Report) countErased(rows []Reading) {
	for _, r := range rows {
		if _, erased := rep.leafOf(r); erased {
			if rep.Erased == nil {
				rep.Erased = map[uint64]int{}
			}
			rep.Erased[r.ErasedBy]++
		}
	}
}

// pickLeaves fills stored with one stored leaf per position so that the whole rebuilds root,
// trying the different leaves a position holds; it gives up after budget tries.
func pickLeaves(at [][]Reading, stored []merkle.Hash, root merkle.Hash, budget int) bool {
	tries := budget
	var pick func(i int) bool
	pick = func(i int) bool {
		if i == len(at) {
			tries--
			r, err := merkle.Root(stored)
			return err == nil && r == root
		}
		var seen []merkle.Hash
		for _, r := range at[i] {
			if slices.Contains(seen, r.Leaf) {
				continue
			}
			seen = append(seen, r.Leaf)
			stored[i] = r.Leaf
			if pick(i + 1) {
				return true
			}
			if tries <= 0 {
				return false
			}
		}
		return false
	}
	return pick(0)
}
