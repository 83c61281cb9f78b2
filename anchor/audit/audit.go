package audit

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/lookup"
)

// Batch is a batch record as stored.
type Batch struct {
	ID        [16]byte
	Root      merkle.Hash
	Size      uint32
	CreatedAt time.Time
}

// Reading is a stored reading row.
type Reading struct {
	Device    string
	Seq       uint64
	Raw       []byte
	Leaf      merkle.Hash // as stored
	BatchID   [16]byte
	LeafIndex uint32
}

// Anchor is an anchor as stored: where its entry is in the ledger's log.
type Anchor struct {
	ID         [16]byte
	LogIndex   uint64
	AnchoredAt time.Time // as recorded
}

// Source is what the audit reads from the store (ClickHouse). Nothing it returns is trusted.
type Source interface {
	// Batches returns the batch records whose readings' device times overlap [from, to]
	// (Unix ms), only those holding readings of device if it is not empty.
	Batches(ctx context.Context, from, to uint64, device string) ([]Batch, error)
	// BatchReadings returns every row stored with the batch id, in leaf index order.
	BatchReadings(ctx context.Context, id [16]byte) ([]Reading, error)
	// BatchAnchor returns the anchor covering a batch, or an error wrapping
	// lookup.ErrNotAnchored if no anchor covers it yet.
	BatchAnchor(ctx context.Context, id [16]byte) (anchorID [16]byte, err error)
	// Anchor returns an anchor's record, or an error wrapping lookup.ErrNotFound if it has
	// none.
	Anchor(ctx context.Context, id [16]byte) (Anchor, error)
	// AnchorBatches returns the ids of an anchor's batches in batch index order, and the
	// records of those that have one.
	AnchorBatches(ctx context.Context, id [16]byte) ([][16]byte, map[[16]byte]Batch, error)
	// Strays returns readings in [from, to] (of device, if set), received before before,
	// whose batch has no record.
	Strays(ctx context.Context, from, to uint64, device string, before time.Time) ([]Reading, error)
	// Copies returns, for each of rs that has one, the batch of another stored row with the
	// same device, seq and leaf in a batch that has a record.
	Copies(ctx context.Context, rs []Reading) (map[int][16]byte, error)
}

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

	checked map[[16]byte]bool // batches already compared with their anchor
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

// anchored is what the ledger commits for one anchor: its batches' ids, sizes and roots, once
// the stored records are shown to rebuild the ledger's root.
type anchored struct {
	batches    map[[16]byte]Batch
	err        string // why the stored records cannot be trusted, if they cannot
	unrecorded bool   // no record of the anchor is stored at all
	reported   bool   // the unrecorded anchor is in Report.Unmatched
}

// Run audits the batches in q's range.
func Run(ctx context.Context, src Source, led Ledger, q Query) (Report, error) {
	rep := Report{checked: map[[16]byte]bool{}}
	logged, err := rep.readLog(ctx, led, q)
	if err != nil || len(rep.Unmatched) > 0 {
		return rep, err
	}
	batches, err := src.Batches(ctx, q.From, q.To, q.Device)
	if err != nil {
		return rep, err
	}
	anchors := map[[16]byte]*anchored{}
	for _, b := range batches {
		rep.Batches++
		rows, err := src.BatchReadings(ctx, b.ID)
		if err != nil {
			return rep, err
		}
		aid, err := src.BatchAnchor(ctx, b.ID)
		if errors.Is(err, lookup.ErrNotAnchored) {
			if q.Now.Sub(b.CreatedAt) < q.Grace {
				rep.Pending++
				continue
			}
			for _, r := range rows {
				rep.add(q, Finding{Kind: Unanchored, Device: r.Device, Seq: r.Seq, Batch: b.ID, LeafIndex: r.LeafIndex,
					Detail: fmt.Sprintf("batch created %s, not anchored", b.CreatedAt.UTC().Format(time.RFC3339))})
			}
			continue
		}
		if err != nil {
			return rep, err
		}
		la, ok := logged[aid]
		if !ok {
			// Recorded as anchored after the part of the log that was read (the newest block's
			// entries are committed by a header not signed yet): pending while the anchor is
			// recent, whatever the batch's age (a batch may wait for the ledger).
			if a, err := src.Anchor(ctx, aid); err == nil && a.LogIndex >= rep.Entries && (q.Now.Sub(b.CreatedAt) < q.Grace || q.Now.Sub(a.AnchoredAt) < q.Grace) {
				rep.Pending++
				continue
			}
			// An anchor the ledger's log does not hold.
			for _, r := range rows {
				rep.add(q, Finding{Kind: Unanchored, Device: r.Device, Seq: r.Seq, Batch: b.ID, LeafIndex: r.LeafIndex,
					Detail: fmt.Sprintf("its anchor %x is not on the ledger", aid)})
			}
			continue
		}
		a := anchors[aid]
		if a == nil {
			if a, err = rep.anchor(ctx, src, aid, la); err != nil {
				return rep, err
			}
			if a.unrecorded {
				a.err = fmt.Sprintf("anchor %x (ledger entry %d): its batches name it, but no record of it is stored", aid, la.index)
			}
			anchors[aid] = a
		}
		if a.unrecorded {
			// The anchoring service writes a batch's batch_anchors row before the anchor's own
			// row (pipeline/write WriteAnchor): a young batch may be between the two.
			if q.Now.Sub(b.CreatedAt) < q.Grace {
				rep.Pending++
				continue
			}
			if !a.reported {
				rep.Unmatched = append(rep.Unmatched, a.err)
				a.reported = true
			}
		}
		truth, ok := a.batches[b.ID]
		if a.err != "" || !ok {
			detail := a.err
			if detail == "" {
				detail = fmt.Sprintf("anchor %x does not list this batch", aid)
			}
			for _, r := range rows {
				rep.add(q, Finding{Kind: Modified, Device: r.Device, Seq: r.Seq, Batch: b.ID, LeafIndex: r.LeafIndex, Detail: detail})
			}
			continue
		}
		rep.Readings += int(truth.Size)
		rep.checkBatch(q, truth, rows)
		rep.checked[b.ID] = true
	}
	// A batch's rows are written just before its record: a row younger than the grace period
	// may be waiting for it.
	if err := rep.unseenAnchors(ctx, src, q, logged, anchors); err != nil {
		return rep, err
	}
	strays, err := src.Strays(ctx, q.From, q.To, q.Device, q.Now.Add(-q.Grace))
	if err != nil {
		return rep, err
	}
	// A worker killed between writing a batch's rows and its record leaves rows no record
	// covers; their messages were delivered again and stored in a batch of their own. A row
	// identical to one in a batch the audit matched with its anchor adds nothing: counted, not
	// a finding. Any other row without a record is.
	copies := map[int][16]byte{}
	if len(strays) > 0 {
		if copies, err = src.Copies(ctx, strays); err != nil {
			return rep, err
		}
	}
	for i, r := range strays {
		if b, ok := copies[i]; ok && rep.checked[b] {
			rep.Interrupted++
			continue
		}
		rep.add(q, Finding{Kind: Inserted, Device: r.Device, Seq: r.Seq, Batch: r.BatchID, LeafIndex: r.LeafIndex, Detail: "its batch has no record"})
	}
	return rep, nil
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
			if e, err := entry.Decode(le.Entry); err == nil && e.Anchor != nil {
				var id [16]byte
				copy(id[:], e.Anchor.ID)
				out[id] = logAnchor{index: le.Index, anchor: e.Anchor}
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

// unseenAnchors checks the anchors of the log, committed from q.From to anchorSlack after
// q.To, that the stored batches did not lead to: an anchor whose records and readings were all
// deleted is found only here.
func (rep *Report) unseenAnchors(ctx context.Context, src Source, q Query, logged map[[16]byte]logAnchor, seen map[[16]byte]*anchored) error {
	until := q.To
	if slack := uint64(anchorSlack.Milliseconds()); until < math.MaxUint64-slack {
		until += slack
	}
	ids := slices.SortedFunc(maps.Keys(logged), func(a, b [16]byte) int { return cmp.Compare(logged[a].index, logged[b].index) })
	for _, id := range ids {
		la := logged[id]
		if _, ok := seen[id]; ok || la.anchor.Time < q.From || la.anchor.Time > until {
			continue
		}
		a, err := rep.anchor(ctx, src, id, la)
		if err != nil {
			return err
		}
		seen[id] = a
		if a.unrecorded {
			rep.add(q, Finding{Kind: Missing, Detail: fmt.Sprintf("anchor %x (ledger entry %d) commits %d batches with %d readings; none of it is stored",
				id, la.index, la.anchor.Batches, la.anchor.Readings)})
			continue
		}
		for bid, truth := range a.batches {
			if rep.checked[bid] {
				continue
			}
			rep.checked[bid] = true
			rows, err := src.BatchReadings(ctx, bid)
			if err != nil {
				return err
			}
			if q.Device != "" && !slices.ContainsFunc(rows, func(r Reading) bool { return r.Device == q.Device }) {
				continue
			}
			rep.Batches++
			rep.Readings += int(truth.Size)
			rep.checkBatch(q, truth, rows)
		}
	}
	return nil
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

// anchor checks that the stored records of an anchor's batches rebuild the root of its entry
// in the ledger's log.
func (rep *Report) anchor(ctx context.Context, src Source, id [16]byte, la logAnchor) (*anchored, error) {
	rep.Anchors++
	bad := func(format string, args ...any) *anchored {
		msg := fmt.Sprintf("anchor %x (ledger entry %d): ", id, la.index) + fmt.Sprintf(format, args...)
		rep.Unmatched = append(rep.Unmatched, msg)
		return &anchored{err: msg}
	}
	if _, err := src.Anchor(ctx, id); errors.Is(err, lookup.ErrNotFound) {
		return &anchored{unrecorded: true}, nil // the caller says what that means where it found it
	} else if err != nil {
		return nil, err
	}
	ids, recs, err := src.AnchorBatches(ctx, id)
	if err != nil {
		return nil, err
	}
	if uint64(len(ids)) != la.anchor.Batches {
		return bad("the ledger commits %d batches, %d are recorded", la.anchor.Batches, len(ids)), nil
	}
	leaves := make([]merkle.Hash, len(ids))
	var missing []string
	for i, bid := range ids {
		b, ok := recs[bid]
		if !ok {
			missing = append(missing, fmt.Sprintf("%x", bid))
			continue
		}
		leaves[i] = merkle.AnchorLeaf(bid, uint64(b.Size), b.Root)
	}
	if len(missing) > 0 {
		return bad("batch records missing: %v", missing), nil
	}
	root, err := merkle.Root(leaves)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(root[:], la.anchor.Root) {
		return bad("the stored batch records (ids, sizes, roots) do not rebuild the root the ledger commits"), nil
	}
	out := &anchored{batches: make(map[[16]byte]Batch, len(ids))}
	for _, bid := range ids {
		out.batches[bid] = recs[bid]
	}
	return out, nil
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
		leaves[i] = merkle.ReadingLeaf(rs[0].Raw)
		for _, r := range rs[1:] {
			if merkle.ReadingLeaf(r.Raw) != leaves[i] {
				agree = false
			}
		}
	}
	if complete && agree {
		if root, err := merkle.Root(leaves); err == nil && root == truth.Root {
			return // every row is what was anchored
		}
	}
	// Something differs. The stored leaf column tells which rows, if it still rebuilds the root
	// (where a position holds rows with different leaves, each choice is tried).
	stored := make([]merkle.Hash, truth.Size)
	leafColumnTrue := complete && pickLeaves(at, stored, truth.Root, 256)
	for i, rs := range at {
		if len(rs) == 0 {
			rep.add(q, Finding{Kind: Missing, Batch: truth.ID, LeafIndex: uint32(i),
				Detail: "no row at this position of the anchored batch (until it is back, the batch's other rows are checked only against their own leaves)"})
			continue
		}
		for _, r := range rs {
			switch {
			case merkle.ReadingLeaf(r.Raw) != r.Leaf:
				rep.add(q, Finding{Kind: Modified, Device: r.Device, Seq: r.Seq, Batch: truth.ID, LeafIndex: r.LeafIndex,
					Detail: "raw bytes do not hash to the leaf"})
			case leafColumnTrue && r.Leaf != stored[i]:
				rep.add(q, Finding{Kind: Inserted, Device: r.Device, Seq: r.Seq, Batch: truth.ID, LeafIndex: r.LeafIndex,
					Detail: "a second, different row at an anchored position"})
			case !leafColumnTrue && complete:
				rep.add(q, Finding{Kind: Modified, Device: r.Device, Seq: r.Seq, Batch: truth.ID, LeafIndex: r.LeafIndex,
					Detail: "the batch's rows do not rebuild its anchored root (rows rewritten with their leaves; which ones cannot be told)"})
			}
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
