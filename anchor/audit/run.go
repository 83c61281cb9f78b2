package audit

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/entry"
)

// Run audits the batches in q's range. It reads the store in windows of about q.Window
// readings: a few queries per window, none per batch, and the rows of a window are hashed on
// every core while nothing else of the range is held but the batch records.
func Run(ctx context.Context, src Source, led Ledger, q Query) (Report, error) {
	rep := Report{checked: map[[16]byte]bool{}}
	logged, err := rep.readLog(ctx, led, q)
	if err != nil || len(rep.Unmatched) > 0 {
		return rep, err
	}
	if rep.expiry, err = src.Expired(ctx); err != nil {
		return rep, err
	}
	batches, err := src.Batches(ctx, q.From, q.To, q.Device)
	if err != nil {
		return rep, err
	}
	if err := audit(ctx, src, q, &rep, logged, batches); err != nil {
		return rep, err
	}
	// A batch's rows are written just before its record: a row younger than the grace period
	// may be waiting for it.
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

// audit checks the batches against the anchors in the log, then the anchors of the range in
// the log that no batch led to.
func audit(ctx context.Context, src Source, q Query, rep *Report, logged map[[16]byte]logAnchor, batches []Batch) error {
	ctx, cancel := context.WithCancel(ctx)
	au := &auditor{src: src, q: q, rep: rep, logged: logged, anchors: map[[16]byte]*anchored{},
		records: map[[16]byte]*Anchor{}, lists: map[[16]byte]listed{}}
	defer func() {
		cancel()
		if au.ahead != nil { // a window still being read when the audit failed
			<-au.ahead.done
		}
	}()
	for len(batches) > 0 {
		n := windowLen(batches, q.window(), func(b Batch) uint32 { return b.Size })
		if err := au.stored(ctx, batches[:n]); err != nil {
			return err
		}
		batches = batches[n:]
	}
	if err := au.unseenAnchors(ctx); err != nil {
		return err
	}
	return au.finish()
}

// windowLen is how many of the first items make a window of about window readings (at least
// one item, at most MaxIDs).
func windowLen[T any](items []T, window int, size func(T) uint32) int {
	n, sum := 0, 0
	for n < len(items) && n < MaxIDs {
		s := int(size(items[n]))
		if n > 0 && sum+s > window {
			break
		}
		n, sum = n+1, sum+s
	}
	return n
}

// auditor is one run of the audit: what it has read of the anchors so far.
type auditor struct {
	src    Source
	q      Query
	rep    *Report
	logged map[[16]byte]logAnchor
	// anchors holds the anchors of the log that were checked against their ledger entry.
	anchors map[[16]byte]*anchored
	// records holds the anchors' records looked up (nil: the anchor has none).
	records map[[16]byte]*Anchor
	// lists holds the batch lists of anchors of the log read but not checked yet.
	lists map[[16]byte]listed
	// ahead is the last window given to check, read but not checked yet (finish).
	ahead *window
}

// anchored is what the ledger commits for one anchor: its batches' ids, sizes and roots, once
// the stored records are shown to rebuild the ledger's root.
type anchored struct {
	order      [][16]byte // the batches in batch index order
	batches    map[[16]byte]Batch
	err        string // why the stored records cannot be trusted, if they cannot
	unrecorded bool   // no record of the anchor is stored at all
	reported   bool   // the unrecorded anchor is in Report.Unmatched
}

// listed is an anchor's batches as stored: ids in batch index order, and the records found.
type listed struct {
	ids  [][16]byte
	recs map[[16]byte]Batch
}

// item is one batch's part of the report, computed from its rows.
type item struct {
	id   [16]byte
	size uint32 // about how many rows it has, for the windows
	// every, if set, makes each row a finding of this kind, with detail.
	every  Kind
	detail string
	// Otherwise the rows are checked against truth, the batch as anchored.
	truth Batch
	// unseen: the batch was reached from its anchor, not from the range; it counts only if
	// it holds the queried device's readings (any, without Query.Device).
	unseen bool
	// fixed is a finding without rows (no rows are read).
	fixed *Finding
}

// stored audits a window of the range's batch records, in order.
func (au *auditor) stored(ctx context.Context, bs []Batch) error {
	q, rep := au.q, au.rep
	ids := make([][16]byte, len(bs))
	for i, b := range bs {
		ids[i] = b.ID
	}
	covering, err := au.src.BatchAnchors(ctx, ids)
	if err != nil {
		return err
	}
	if err := au.lookUp(ctx, slices.Collect(maps.Values(covering))); err != nil {
		return err
	}
	items := make([]item, 0, len(bs))
	for _, b := range bs {
		rep.Batches++
		aid, ok := covering[b.ID]
		if !ok {
			if q.Now.Sub(b.CreatedAt) < q.Grace {
				rep.Pending++
				continue
			}
			items = append(items, item{id: b.ID, size: b.Size, every: Unanchored,
				detail: fmt.Sprintf("batch created %s, not anchored", b.CreatedAt.UTC().Format(time.RFC3339))})
			continue
		}
		la, ok := au.logged[aid]
		if !ok {
			// Recorded as anchored after the part of the log that was read (the newest block's
			// entries are committed by a header not signed yet): pending while the anchor is
			// recent, whatever the batch's age (a batch may wait for the ledger).
			if a := au.records[aid]; a != nil && a.LogIndex >= rep.Entries && (q.Now.Sub(b.CreatedAt) < q.Grace || q.Now.Sub(a.AnchoredAt) < q.Grace) {
				rep.Pending++
				continue
			}
			// An anchor the ledger's log does not hold.
			items = append(items, item{id: b.ID, size: b.Size, every: Unanchored, detail: fmt.Sprintf("its anchor %x is not on the ledger", aid)})
			continue
		}
		a := au.anchors[aid]
		if a == nil {
			if a, err = au.anchor(aid, la); err != nil {
				return err
			}
			if a.unrecorded {
				a.err = fmt.Sprintf("anchor %x (ledger entry %d): its batches name it, but no record of it is stored", aid, la.index)
			}
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
			items = append(items, item{id: b.ID, size: b.Size, every: Modified, detail: detail})
			continue
		}
		rep.Readings += int(truth.Size)
		items = append(items, item{id: b.ID, size: truth.Size, truth: truth})
		rep.checked[b.ID] = true
	}
	return au.check(ctx, items)
}

// unseenAnchors checks the anchors of the log, committed from q.From to anchorSlack after
// q.To, that the stored batches did not lead to: an anchor whose records and readings were all
// deleted is found only here.
func (au *auditor) unseenAnchors(ctx context.Context) error {
	q, rep := au.q, au.rep
	until := q.To
	if slack := uint64(anchorSlack.Milliseconds()); until < math.MaxUint64-slack {
		until += slack
	}
	var ids [][16]byte
	for id, la := range au.logged {
		if _, ok := au.anchors[id]; !ok && la.anchor.Time >= q.From && la.anchor.Time <= until {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b [16]byte) int { return cmp.Compare(au.logged[a].index, au.logged[b].index) })
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), MaxIDs)]
		ids = ids[len(chunk):]
		if err := au.lookUp(ctx, chunk); err != nil {
			return err
		}
		var items []item
		for _, id := range chunk {
			la := au.logged[id]
			a, err := au.anchor(id, la)
			if err != nil {
				return err
			}
			if a.unrecorded {
				items = append(items, item{fixed: &Finding{Kind: Missing, Detail: fmt.Sprintf("anchor %x (ledger entry %d) commits %d batches with %d readings; none of it is stored",
					id, la.index, la.anchor.Batches, la.anchor.Readings)}})
				continue
			}
			for _, bid := range a.order {
				if rep.checked[bid] {
					continue
				}
				rep.checked[bid] = true
				items = append(items, item{id: bid, size: a.batches[bid].Size, truth: a.batches[bid], unseen: true})
			}
		}
		if err := au.check(ctx, items); err != nil {
			return err
		}
	}
	return nil
}

// lookUp reads the records of those of ids not looked up yet, and the batch lists of those
// in the log that have one and are not checked yet.
func (au *auditor) lookUp(ctx context.Context, ids [][16]byte) error {
	var unknown, unlisted [][16]byte
	asked := map[[16]byte]bool{}
	for _, id := range ids {
		if _, ok := au.records[id]; !ok && !asked[id] {
			asked[id] = true
			unknown = append(unknown, id)
		}
	}
	for len(unknown) > 0 {
		chunk := unknown[:min(len(unknown), MaxIDs)]
		unknown = unknown[len(chunk):]
		recs, err := au.src.Anchors(ctx, chunk)
		if err != nil {
			return err
		}
		for _, id := range chunk {
			if r, ok := recs[id]; ok {
				au.records[id] = &r
			} else {
				au.records[id] = nil
			}
		}
	}
	listing := map[[16]byte]bool{}
	for _, id := range ids {
		_, inLog := au.logged[id]
		_, checked := au.anchors[id]
		_, read := au.lists[id]
		if inLog && !checked && !read && au.records[id] != nil && !listing[id] {
			listing[id] = true
			unlisted = append(unlisted, id)
		}
	}
	for len(unlisted) > 0 {
		chunk := unlisted[:min(len(unlisted), MaxIDs)]
		unlisted = unlisted[len(chunk):]
		lists, recs, err := au.src.AnchorBatches(ctx, chunk)
		if err != nil {
			return err
		}
		for _, id := range chunk {
			l := listed{ids: lists[id], recs: map[[16]byte]Batch{}}
			for _, bid := range l.ids {
				if b, ok := recs[bid]; ok {
					l.recs[bid] = b
				}
			}
			au.lists[id] = l
		}
	}
	return nil
}

// anchor checks that the stored records of an anchor's batches (read by lookUp) rebuild the
// root of its entry in the ledger's log.
func (au *auditor) anchor(id [16]byte, la logAnchor) (*anchored, error) {
	rep := au.rep
	rep.Anchors++
	l := au.lists[id]
	delete(au.lists, id)
	a, err := func() (*anchored, error) {
		bad := func(format string, args ...any) *anchored {
			msg := fmt.Sprintf("anchor %x (ledger entry %d): ", id, la.index) + fmt.Sprintf(format, args...)
			rep.Unmatched = append(rep.Unmatched, msg)
			return &anchored{err: msg}
		}
		if au.records[id] == nil {
			return &anchored{unrecorded: true}, nil // the caller says what that means where it found it
		}
		if uint64(len(l.ids)) != la.anchor.Batches {
			return bad("the ledger commits %d batches, %d are recorded", la.anchor.Batches, len(l.ids)), nil
		}
		leaves := make([]merkle.Hash, len(l.ids))
		var missing []string
		for i, bid := range l.ids {
			b, ok := l.recs[bid]
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
		return &anchored{order: l.ids, batches: l.recs}, nil
	}()
	if err != nil {
		return nil, err
	}
	au.anchors[id] = a
	return a, nil
}

// outcome is what an item adds to the report.
type outcome struct {
	findings []Finding
	counts   bool           // false for an unseen batch without the queried device's readings
	erased   map[uint64]int // Report.Erased of the batch
	expired  int            // Report.Expired of the batch
}

// check reads the rows of items a window at a time and checks them (finish): the rows of a
// window are read while those of the window before are checked, so at most two windows are
// held at once.
func (au *auditor) check(ctx context.Context, items []item) error {
	for len(items) > 0 {
		n := windowLen(items, au.q.window(), func(it item) uint32 { return it.size })
		next := au.fetch(ctx, items[:n])
		items = items[n:]
		err := au.finish()
		au.ahead = next // if err is set, audit waits for it to end
		if err != nil {
			return err
		}
	}
	return nil
}

// window is a window of items and, once done is closed, their rows and the months of the
// positions of those lacking a row somewhere (Source.LeafMonths).
type window struct {
	items  []item
	done   chan struct{}
	rows   map[[16]byte][]Reading
	months map[[16]byte][]uint32
	err    error
}

// fetch starts reading the rows of a window's items.
func (au *auditor) fetch(ctx context.Context, items []item) *window {
	w := &window{items: items, done: make(chan struct{}), rows: map[[16]byte][]Reading{}}
	var ids [][16]byte
	for _, it := range items {
		if it.fixed == nil {
			ids = append(ids, it.id)
		}
	}
	if len(ids) == 0 {
		close(w.done)
		return w
	}
	go func() {
		defer close(w.done)
		if w.rows, w.err = au.src.Readings(ctx, ids); w.err == nil {
			w.months, w.err = au.months(ctx, items, w.rows)
		}
	}()
	return w
}

// months reads the months of the positions of those of the items' batches that lack a row at
// a position, once retention has dropped readings: only their positions may have expired, and
// a batch's months, unlike its rows, are never dropped. Nothing is read otherwise.
func (au *auditor) months(ctx context.Context, items []item, rows map[[16]byte][]Reading) (map[[16]byte][]uint32, error) {
	if !au.rep.expiry.dropped() {
		return nil, nil
	}
	var lacking [][16]byte
	asked := map[[16]byte]bool{}
	for _, it := range items {
		if it.fixed == nil && it.every == "" && !asked[it.id] && lacksRow(it.truth.Size, rows[it.id]) {
			asked[it.id] = true
			lacking = append(lacking, it.id)
		}
	}
	if len(lacking) == 0 {
		return nil, nil
	}
	return au.src.LeafMonths(ctx, lacking)
}

// lacksRow reports whether some position of a batch of size positions has none of rows.
func lacksRow(size uint32, rows []Reading) bool {
	if len(rows) < int(size) {
		return true
	}
	have, n := make([]bool, size), uint32(0)
	for _, r := range rows {
		if r.LeafIndex < size && !have[r.LeafIndex] {
			have[r.LeafIndex] = true
			n++
		}
	}
	return n < size
}

// finish checks the window read ahead, if any, on every core and adds the findings of its
// items in their order.
func (au *auditor) finish() error {
	w := au.ahead
	if w == nil {
		return nil
	}
	au.ahead = nil
	<-w.done
	if w.err != nil {
		return w.err
	}
	n := len(w.items)
	// Each batch's rows are sorted by its worker: a batch listed twice gets a copy.
	twice := map[[16]byte]bool{}
	seen := make(map[[16]byte]bool, n)
	for _, it := range w.items {
		twice[it.id], seen[it.id] = seen[it.id], true
	}
	out := make([]outcome, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				it := w.items[i]
				rs := w.rows[it.id]
				if twice[it.id] {
					rs = slices.Clone(rs)
				}
				out[i] = it.outcome(au.q, rs, au.rep.erases, au.rep.expiry, w.months[it.id])
			}
		})
	}
	wg.Wait()
	for i, it := range w.items {
		if it.unseen {
			if !out[i].counts {
				continue
			}
			au.rep.Batches++
			au.rep.Readings += int(it.truth.Size)
		}
		au.rep.Findings = append(au.rep.Findings, out[i].findings...)
		au.rep.Expired += out[i].expired
		for e, n := range out[i].erased {
			if au.rep.Erased == nil {
				au.rep.Erased = map[uint64]int{}
			}
			au.rep.Erased[e] += n
		}
	}
	return nil
}

// outcome checks one batch's rows; erases are the log's erase entries (Report.erases), expiry
// what retention dropped, months those of the batch's positions (nil if not read, or not one
// per position of the anchored batch).
func (it item) outcome(q Query, rows []Reading, erases map[uint64]*entry.Erase, expiry Expiry, months []uint32) outcome {
	if len(months) != int(it.truth.Size) {
		months = nil
	}
	r := Report{erases: erases, expiry: expiry, months: months}
	switch {
	case it.fixed != nil:
		r.add(q, *it.fixed)
		return outcome{findings: r.Findings}
	case it.unseen && q.Device != "" && !slices.ContainsFunc(rows, func(r Reading) bool { return r.Device == q.Device }):
		return outcome{}
	}
	if it.every == "" && r.intact(it.truth, rows) {
		r.countErased(rows)
		return outcome{counts: true, erased: r.Erased}
	}
	// The store returns a batch's rows in any order; the findings follow leaf index order.
	slices.SortStableFunc(rows, func(a, b Reading) int { return cmp.Compare(a.LeafIndex, b.LeafIndex) })
	if it.every != "" {
		for _, row := range rows {
			r.add(q, Finding{Kind: it.every, Device: row.Device, Seq: row.Seq, Batch: it.id, LeafIndex: row.LeafIndex, Detail: it.detail})
		}
	} else {
		r.checkBatch(q, it.truth, rows)
	}
	return outcome{findings: r.Findings, counts: true, erased: r.Erased, expired: r.Expired}
}

// intact reports whether rows are one row per position of the anchored batch whose raw bytes
// rebuild its root: checkBatch finds nothing then. It is the common case, checked without
// grouping the rows by position.
func (rep *Report) intact(truth Batch, rows []Reading) bool {
	if len(rows) == 0 || len(rows) != int(truth.Size) {
		return false
	}
	leaves := make([]merkle.Hash, len(rows))
	set := make([]bool, len(rows))
	for _, r := range rows {
		if r.LeafIndex >= truth.Size || set[r.LeafIndex] {
			return false
		}
		set[r.LeafIndex] = true
		leaves[r.LeafIndex], _ = rep.leafOf(r)
	}
	root, err := merkle.Root(leaves)
	return err == nil && root == truth.Root
}
