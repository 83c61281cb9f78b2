package proof

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cometbft/cometbft/types"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// IsRange reports whether data is a range bundle (its format member is bundle.RangeFormat),
// so that a command given a file dispatches to VerifyRange or Verify.
func IsRange(data []byte) bool { return bundle.FormatOf(data) == bundle.RangeFormat }

// LogProver returns the multiproof (merkle.MultiProofAt) of the entries at indices (strictly
// increasing) in the ledger's log of size entries, as ledger.Client.LogMultiProof does.
type LogProver func(indices []uint64, size uint64) ([]merkle.Hash, error)

// BuildRange assembles the range bundle of device's readings with seqs in [from, to] from one
// full single-reading Parts per reading, in any order. Parts of readings in the same anchor
// (same AnchorID) must agree on everything of the anchor (entry, log proof, state, record,
// light block, the anchor's batches), parts in the same batch on its leaves and index: their
// slices may be shared, and shared slices are not compared again. BuildRange checks, as
// Build does, that the parts fit together (ErrInconsistent otherwise: Build runs on the first
// reading of each anchor) and computes each batch's and anchor's multiproof once.
//
// Each run of consecutive anchors (in log order) under the same device record is proven in
// one head, the ledger state of the run's last anchor, whose log multiproof prove gives; the
// record bytes hold the height of their last change, so the record checked in the head is the
// one in force when each anchor of the run was committed. With prove nil, every anchor is its
// own head (its log path is its multiproof), and anchors committed in one block are refused.
func BuildRange(device string, from, to uint64, parts []Parts, prove LogProver) (*bundle.Range, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: a range needs at least one reading", ErrInconsistent)
	}
	if from > to {
		return nil, fmt.Errorf("%w: from %d is after to %d", ErrInconsistent, from, to)
	}
	order := make([]int, len(parts))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(parts[a].Seq, parts[b].Seq) })

	type batchGroup struct {
		first   *Parts
		members []int // indices into order, in seq order
	}
	type anchorGroup struct {
		first   *Parts
		b       *bundle.Bundle // Build of first
		batches map[[16]byte]*batchGroup
	}
	anchors := map[[16]byte]*anchorGroup{}
	erasures := map[uint64]*rangeErasure{} // by log index
	for k, i := range order {
		p := &parts[i]
		if p.Device != device {
			return nil, fmt.Errorf("%w: reading seq %d is of device %q, the range is of %q", ErrInconsistent, p.Seq, p.Device, device)
		}
		if p.Seq < from || p.Seq > to {
			return nil, fmt.Errorf("%w: reading seq %d is outside [%d, %d]", ErrInconsistent, p.Seq, from, to)
		}
		if k > 0 && parts[order[k-1]].Seq == p.Seq {
			return nil, fmt.Errorf("%w: two readings with seq %d", ErrInconsistent, p.Seq)
		}
		if p.ChainID != parts[order[0]].ChainID {
			return nil, fmt.Errorf("%w: reading seq %d is on chain %q, seq %d on %q", ErrInconsistent, p.Seq, p.ChainID, parts[order[0]].Seq, parts[order[0]].ChainID)
		}
		ag := anchors[p.AnchorID]
		if ag == nil {
			b, err := build(*p, false)
			if err != nil {
				return nil, fmt.Errorf("reading seq %d: %w", p.Seq, err)
			}
			if b.Device.ID != device {
				return nil, fmt.Errorf("%w: the record of reading seq %d is of device %q", ErrInconsistent, p.Seq, b.Device.ID)
			}
			ag = &anchorGroup{first: p, b: b, batches: map[[16]byte]*batchGroup{}}
			anchors[p.AnchorID] = ag
		} else if err := sameAnchor(ag.first, p); err != nil {
			return nil, fmt.Errorf("%w: reading seq %d and seq %d are in anchor %x but %s", ErrInconsistent, ag.first.Seq, p.Seq, p.AnchorID, err)
		}
		bg := ag.batches[p.BatchID]
		if bg == nil {
			bg = &batchGroup{first: p}
			ag.batches[p.BatchID] = bg
		} else if p.BatchIndex != bg.first.BatchIndex || !sameHashes(p.BatchLeaves, bg.first.BatchLeaves) {
			return nil, fmt.Errorf("%w: reading seq %d and seq %d are in batch %x but disagree on its index or leaves", ErrInconsistent, bg.first.Seq, p.Seq, p.BatchID)
		}
		if p.LeafIndex >= uint64(len(p.BatchLeaves)) || p.BatchLeaves[p.LeafIndex] != p.leaf() {
			return nil, fmt.Errorf("%w: reading seq %d is not leaf %d of its batch", ErrInconsistent, p.Seq, p.LeafIndex)
		}
		if e := p.Erasure; e != nil {
			if x, ok := erasures[e.LogIndex]; ok && !bytes.Equal(x.Entry, e.Entry) {
				return nil, fmt.Errorf("%w: readings seq %d and seq %d name different erase entries at log index %d", ErrInconsistent, x.seq, p.Seq, e.LogIndex)
			} else if !ok {
				erasures[e.LogIndex] = &rangeErasure{Erasure: e, seq: p.Seq}
			}
		}
		bg.members = append(bg.members, k)
	}

	groups := make([]*anchorGroup, 0, len(anchors))
	for _, ag := range anchors {
		groups = append(groups, ag)
	}
	slices.SortFunc(groups, func(a, b *anchorGroup) int { return cmp.Compare(a.first.LogIndex, b.first.LogIndex) })
	r := &bundle.Range{Format: bundle.RangeFormat, ChainID: parts[order[0]].ChainID, Device: device, From: from, To: to,
		Readings: make([]bundle.RangeReading, len(parts))}
	for ai, ag := range groups {
		if ai > 0 && ag.first.LogIndex == groups[ai-1].first.LogIndex {
			return nil, fmt.Errorf("%w: anchors %x and %x are both entry %d of the log", ErrInconsistent, groups[ai-1].first.AnchorID, ag.first.AnchorID, ag.first.LogIndex)
		}
		bgs := make([]*batchGroup, 0, len(ag.batches))
		for _, bg := range ag.batches {
			bgs = append(bgs, bg)
		}
		slices.SortFunc(bgs, func(a, b *batchGroup) int { return cmp.Compare(a.first.BatchIndex, b.first.BatchIndex) })
		ab := ag.first.AnchorBatches
		aleaves := make([]merkle.Hash, len(ab))
		for i, b := range ab {
			aleaves[i] = merkle.AnchorLeaf(b.ID, b.Size, b.Root)
		}
		bidx := make([]uint64, len(bgs))
		for j, bg := range bgs {
			p := bg.first
			if j > 0 && p.BatchIndex == bgs[j-1].first.BatchIndex {
				return nil, fmt.Errorf("%w: batches %x and %x are both batch %d of anchor %x", ErrInconsistent, bgs[j-1].first.BatchID, p.BatchID, p.BatchIndex, p.AnchorID)
			}
			bidx[j] = p.BatchIndex
			members := slices.Clone(bg.members)
			slices.SortFunc(members, func(a, b int) int { return cmp.Compare(parts[order[a]].LeafIndex, parts[order[b]].LeafIndex) })
			idx := make([]uint64, len(members))
			for x, k := range members {
				idx[x] = parts[order[k]].LeafIndex
				if x > 0 && idx[x] == idx[x-1] {
					return nil, fmt.Errorf("%w: readings seq %d and seq %d are both leaf %d of batch %x", ErrInconsistent, parts[order[members[x-1]]].Seq, parts[order[k]].Seq, idx[x], p.BatchID)
				}
			}
			var proof []merkle.Hash
			var root merkle.Hash
			var err error
			if p.BatchTree != nil && p.BatchTree.Size() == uint64(len(p.BatchLeaves)) {
				proof, root, err = merkle.MultiProofOf(p.BatchTree, idx)
			} else {
				proof, root, err = merkle.MultiProof(p.BatchLeaves, idx)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: batch %x: %w", ErrInconsistent, p.BatchID, err)
			}
			if p.BatchIndex >= uint64(len(ab)) || ab[p.BatchIndex].ID != p.BatchID || ab[p.BatchIndex].Root != root || ab[p.BatchIndex].Size != uint64(len(p.BatchLeaves)) {
				return nil, fmt.Errorf("%w: batch %x (size %d, root %s) is not batch %d of anchor %x", ErrInconsistent, p.BatchID, len(p.BatchLeaves), root, p.BatchIndex, p.AnchorID)
			}
			bi := uint64(len(r.Batches))
			r.Batches = append(r.Batches, bundle.RangeBatch{ID: bytes.Clone(p.BatchID[:]), Size: uint64(len(p.BatchLeaves)), Root: bytes.Clone(root[:]),
				Anchor: uint64(ai), BatchIndex: p.BatchIndex, Proof: hexes(proof)})
			for _, k := range bg.members {
				q := &parts[order[k]]
				if q.Erasure != nil {
					r.Readings[k] = bundle.RangeReading{Seq: q.Seq, Batch: bi, LeafIndex: q.LeafIndex, Leaf: bytes.Clone(q.Leaf[:]), TS: q.TS,
						Erase: &erasures[q.Erasure.LogIndex].at}
				} else {
					r.Readings[k] = bundle.RangeReading{Seq: q.Seq, Batch: bi, LeafIndex: q.LeafIndex, Raw: q.Raw}
				}
			}
		}
		aproof, aroot, err := merkle.MultiProof(aleaves, bidx)
		if err != nil {
			return nil, fmt.Errorf("%w: anchor %x: %w", ErrInconsistent, ag.first.AnchorID, err)
		}
		b := ag.b
		if !bytes.Equal(aroot[:], b.Anchor.Root) {
			return nil, fmt.Errorf("%w: anchor %x: the batches rebuild root %s, the single bundle has %x", ErrInconsistent, ag.first.AnchorID, aroot, b.Anchor.Root)
		}
		r.Anchors = append(r.Anchors, bundle.RangeAnchor{ID: b.Anchor.ID, Batches: b.Anchor.Batches, Root: b.Anchor.Root, Proof: hexes(aproof),
			Entry: b.Ledger.Entry, LogIndex: b.Ledger.LogIndex})
	}
	firsts := make([]*Parts, len(groups))
	singles := make([]*bundle.Bundle, len(groups))
	for i, ag := range groups {
		firsts[i], singles[i] = ag.first, ag.b
	}
	es := slices.SortedFunc(maps.Values(erasures), func(a, b *rangeErasure) int { return cmp.Compare(a.LogIndex, b.LogIndex) })
	for i, e := range es {
		e.at = uint64(i) // the readings' Erase points here
		r.Erasures = append(r.Erasures, bundle.RangeErasure{Entry: e.Entry, LogIndex: e.LogIndex})
	}
	heads, err := rangeHeads(r, firsts, singles, prove)
	if err != nil {
		return nil, err
	}
	if len(es) > 0 && r.Erasures[0].Head == erasureHead {
		p, err := erasuresHead(device, r, es, prove)
		if err != nil {
			return nil, err
		}
		heads = append(heads, p)
	}
	chain, err := unionChain(heads, r.Heads[len(r.Heads)-1].Height)
	if err != nil {
		return nil, err
	}
	r.LightChain = chain
	return r, nil
}

// rangeHeads fills r.Heads and each anchor's head: one head per run of consecutive anchors
// under the same device record (per anchor with prove nil), the state of the run's last
// anchor. firsts and singles are, per anchor of r, its first reading's parts and their
// single bundle. It returns the parts of each head's anchor.
func rangeHeads(r *bundle.Range, firsts []*Parts, singles []*bundle.Bundle, prove LogProver) ([]*Parts, error) {
	var heads []*Parts
	for lo := 0; lo < len(firsts); {
		hi := lo + 1
		for prove != nil && hi < len(firsts) && bytes.Equal(firsts[hi].Record, firsts[lo].Record) {
			hi++
		}
		if prove == nil && hi < len(firsts) && firsts[hi].LogSize == firsts[lo].LogSize {
			return nil, fmt.Errorf("%w: anchors %d and %d are proven in one ledger state: a range of them needs a log prover", ErrInconsistent, lo, hi)
		}
		last := hi - 1
		p, b := firsts[last], singles[last]
		hi64 := uint64(len(r.Heads))
		// The range's erase entries join the last head when its log holds them all.
		withErasures := hi == len(firsts) && len(r.Erasures) > 0 && r.Erasures[len(r.Erasures)-1].LogIndex < p.LogSize
		var proof []merkle.Hash
		var err error
		if hi-lo == 1 && !withErasures {
			proof, err = merkle.MultiProofFromInclusion(p.LogIndex, p.LogSize, p.LogPath)
		} else {
			var idx []uint64
			var leaves []merkle.Hash
			for j := lo; j < hi; j++ {
				idx, leaves = append(idx, firsts[j].LogIndex), append(leaves, merkle.EntryLeaf(firsts[j].Entry))
			}
			if withErasures {
				for j := range r.Erasures {
					e := &r.Erasures[j]
					e.Head = hi64
					idx, leaves = append(idx, e.LogIndex), append(leaves, merkle.EntryLeaf(e.Entry))
				}
				idx, leaves, err = inLogOrder(idx, leaves)
			}
			switch {
			case err != nil:
			case prove == nil:
				err = errors.New("a head of several entries needs a log prover")
			default:
				if proof, err = prove(idx, p.LogSize); err == nil {
					err = merkle.VerifyMultiProof(p.LogSize, idx, leaves, proof, p.LogRoot)
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: log proof of anchors %d to %d in the log of %d entries: %w", ErrInconsistent, lo, last, p.LogSize, err)
		}
		l := b.Ledger
		r.Heads = append(r.Heads, bundle.RangeHead{Device: b.Device, Height: l.Height, LogSize: l.LogSize, LogRoot: l.LogRoot, LogProof: hexes(proof),
			RegistryRoot: l.RegistryRoot, AppHashVersion: l.AppHashVersion, StateRoot: l.StateRoot, StateProof: l.StateProof, LightBlock: l.LightBlock})
		for j := lo; j < hi; j++ {
			r.Anchors[j].Head = hi64
		}
		heads = append(heads, p)
		lo = hi
	}
	if n := len(r.Erasures); n > 0 && r.Erasures[n-1].LogIndex >= heads[len(heads)-1].LogSize {
		for j := range r.Erasures {
			r.Erasures[j].Head = erasureHead
		}
	}
	return heads, nil
}

// erasureHead marks the erasures of a range that no head of its anchors proves, for
// erasuresHead.
const erasureHead = ^uint64(0)

// rangeErasure is an erase entry of a range's readings: at is its index in Range.Erasures,
// seq that of the first reading found erased under it.
type rangeErasure struct {
	*Erasure
	seq, at uint64
}

// leaf is the reading's leaf: its row's, once erased.
func (p *Parts) leaf() merkle.Hash {
	if p.Erasure != nil {
		return p.Leaf
	}
	return merkle.ReadingLeaf(p.Raw)
}

// inLogOrder sorts the entries' log indices with their leaves and refuses an index twice.
func inLogOrder(idx []uint64, leaves []merkle.Hash) ([]uint64, []merkle.Hash, error) {
	order := make([]int, len(idx))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(idx[a], idx[b]) })
	si, sl := make([]uint64, len(idx)), make([]merkle.Hash, len(idx))
	for j, i := range order {
		si[j], sl[j] = idx[i], leaves[i]
		if j > 0 && si[j] == si[j-1] {
			return nil, nil, fmt.Errorf("log index %d is both an anchor and an erase entry", si[j])
		}
	}
	return si, sl, nil
}

// erasuresHead appends to r the head that proves its erase entries (es, in log order) when no
// head of its anchors does: the state of the newest entry's Head parts, the device's record
// there (possibly revoked since) and one multiproof of every entry in its log. It returns
// those parts, for the light chain.
func erasuresHead(device string, r *bundle.Range, es []*rangeErasure, prove LogProver) (*Parts, error) {
	newest := es[len(es)-1]
	p := newest.Head
	if p == nil || p.Erasure == nil || p.Erasure.LogIndex != newest.LogIndex || !bytes.Equal(p.Erasure.Entry, newest.Entry) {
		return nil, fmt.Errorf("%w: erase entry %d is after the range's last anchor and has no parts of a state that holds it", ErrInconsistent, newest.LogIndex)
	}
	b, err := Build(*p)
	if err != nil {
		return nil, fmt.Errorf("the state of erase entry %d: %w", newest.LogIndex, err)
	}
	if b.Device.ID != device {
		return nil, fmt.Errorf("%w: the record in the state of erase entry %d is of device %q", ErrInconsistent, newest.LogIndex, b.Device.ID)
	}
	l := b.Ledger
	if top := r.Heads[len(r.Heads)-1].Height; l.Height <= top {
		return nil, fmt.Errorf("%w: the state of erase entry %d (height %d) is not after the range's last head (height %d)", ErrInconsistent, newest.LogIndex, l.Height, top)
	}
	var proof []merkle.Hash
	if len(es) == 1 {
		proof, err = merkle.MultiProofFromInclusion(p.Erasure.LogIndex, p.LogSize, p.Erasure.LogPath)
	} else if prove == nil {
		err = errors.New("a head of several entries needs a log prover")
	} else {
		idx := make([]uint64, len(es))
		leaves := make([]merkle.Hash, len(es))
		for j, e := range es {
			idx[j], leaves[j] = e.LogIndex, merkle.EntryLeaf(e.Entry)
		}
		if proof, err = prove(idx, p.LogSize); err == nil {
			err = merkle.VerifyMultiProof(p.LogSize, idx, leaves, proof, p.LogRoot)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: log proof of erase entries %d to %d in the log of %d entries: %w", ErrInconsistent, es[0].LogIndex, newest.LogIndex, p.LogSize, err)
	}
	hi := uint64(len(r.Heads))
	r.Heads = append(r.Heads, bundle.RangeHead{Device: b.Device, Height: l.Height, LogSize: l.LogSize, LogRoot: l.LogRoot, LogProof: hexes(proof),
		RegistryRoot: l.RegistryRoot, AppHashVersion: l.AppHashVersion, StateRoot: l.StateRoot, StateProof: l.StateProof, LightBlock: l.LightBlock})
	for j := range r.Erasures {
		r.Erasures[j].Head = hi
	}
	return p, nil
}

// unionChain is the union of the heads' light chains, oldest first, each height once: every
// block must be below its own head's header, so below the newest header (maxHeight).
func unionChain(heads []*Parts, maxHeight int64) ([]json.RawMessage, error) {
	byHeight := map[int64][]byte{}
	var lastChain []*types.LightBlock
	for _, p := range heads {
		c := p.LightChain
		if len(c) == 0 || len(c) == len(lastChain) && &c[0] == &lastChain[0] {
			continue // the same shared slice as the head before
		}
		lastChain = c
		for _, lb := range c {
			if lb == nil || lb.SignedHeader == nil || lb.ValidatorSet == nil || lb.Height >= maxHeight {
				return nil, fmt.Errorf("%w: light chain block of reading seq %d is missing or not below the newest header", ErrInconsistent, p.Seq)
			}
			if _, ok := byHeight[lb.Height]; ok {
				// The first one fetched: two fetches of a height may differ in their commit's
				// signatures (seen or canonical commit), and either is checked as it is.
				continue
			}
			raw, err := encodeLightBlock(lb)
			if err != nil {
				return nil, err
			}
			byHeight[lb.Height] = raw
		}
	}
	heights := make([]int64, 0, len(byHeight))
	for h := range byHeight {
		heights = append(heights, h)
	}
	slices.Sort(heights)
	out := make([]json.RawMessage, len(heights))
	for i, h := range heights {
		out[i] = byHeight[h]
	}
	return out, nil
}

// sameHashes compares two hash slices, at once when they are the same slice.
func sameHashes(a, b []merkle.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

// sameAnchor says how q disagrees with p on the anchor they share, or nil.
func sameAnchor(p, q *Parts) error {
	switch {
	case !bytes.Equal(p.Entry, q.Entry) || p.LogIndex != q.LogIndex || p.LogSize != q.LogSize || p.LogRoot != q.LogRoot || !sameHashes(p.LogPath, q.LogPath):
		return errors.New("disagree on the entry or its log proof")
	case p.RegistryRoot != q.RegistryRoot || p.Version != q.Version || !sameState(p, q):
		return errors.New("disagree on the ledger state")
	case !bytes.Equal(p.Record, q.Record) || p.RegistryIndex != q.RegistryIndex || p.RegistrySize != q.RegistrySize ||
		!sameHashes(p.RegistryPath, q.RegistryPath) || !bytes.Equal(p.SMTProof, q.SMTProof):
		return errors.New("disagree on the device record or its registry proof")
	case !sameLightBlock(p.LightBlock, q.LightBlock):
		return errors.New("disagree on the light block")
	case !sameAnchorBatches(p.AnchorBatches, q.AnchorBatches):
		return errors.New("disagree on the anchor's batches")
	}
	return nil
}

func sameState(p, q *Parts) bool {
	if (p.StateRoot == nil) != (q.StateRoot == nil) || p.StateRoot != nil && *p.StateRoot != *q.StateRoot {
		return false
	}
	a, b := p.StateProof, q.StateProof
	if a == b {
		return true
	}
	return a != nil && b != nil && a.Name == b.Name && a.Root == b.Root && a.Index == b.Index && a.Size == b.Size && sameHashes(a.Path, b.Path)
}

func sameLightBlock(a, b *types.LightBlock) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil || a.SignedHeader == nil || b.SignedHeader == nil || a.Header == nil || b.Header == nil {
		return false
	}
	return a.Height == b.Height && bytes.Equal(a.Hash(), b.Hash())
}

func sameAnchorBatches(a, b []AnchorBatch) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

// Gap is a run of seqs of the range for which it holds no reading and cannot show that the
// device sent none.
type Gap struct {
	From, To uint64 // inclusive
	Reason   string
}

// RangeReport is what VerifyRange checked: the steps, summarised over the range (the names
// are Verify's where the rule is the same), and, when every step holds, what the range says
// about the readings it does not hold.
type RangeReport struct {
	Steps    []Step
	Device   string
	From, To uint64
	Readings int
	Batches  int
	Anchors  int
	Heads    int // ledger states the anchors are proven in
	Ed25519  int // readings signed with Ed25519
	ES256    int // readings signed with ES256
	Erased   int // readings whose bytes were erased, proven by their leaf and erase entry
	Chained  int // consecutive pairs of readings the later's prev links
	// Complete is set when every step holds and every seq in [From, To] either has its
	// reading in the range or lies between two readings that prev links: no reading of the
	// device with a seq in the range is missing. Gaps lists the seqs where that is not shown.
	Complete bool
	Gaps     []Gap
}

// Print writes one line per step, as Report.Print does, then the completeness verdict when
// every step held: "✓ complete" or "! complete" followed by one "! gap" line per gap.
func (r RangeReport) Print(w io.Writer) {
	Report{Steps: r.Steps}.Print(w)
	if len(r.Steps) == 0 || !r.Steps[len(r.Steps)-1].OK || r.Readings == 0 {
		return
	}
	if r.Complete {
		fmt.Fprintf(w, "✓ %-18s seqs %d..%d: %d readings, %d of %d consecutive pairs linked by prev; no reading missing\n",
			"complete", r.From, r.To, r.Readings, r.Chained, r.Readings-1)
		return
	}
	gaps := "gaps"
	if len(r.Gaps) == 1 {
		gaps = "gap"
	}
	fmt.Fprintf(w, "! %-18s not shown: %d readings in seqs %d..%d, %d of %d consecutive pairs linked by prev, %d %s:\n",
		"complete", r.Readings, r.From, r.To, r.Chained, r.Readings-1, len(r.Gaps), gaps)
	for _, g := range r.Gaps {
		fmt.Fprintf(w, "! %-18s seqs %d..%d: %s\n", "gap", g.From, g.To, g.Reason)
	}
}

// rangeVerifier holds what the steps of VerifyRange compute for the later ones.
type rangeVerifier struct {
	r        *bundle.Range
	chainID  string
	trusted  *types.ValidatorSet
	trustH   int64
	msgs     []reading.Message
	leaves   []merkle.Hash       // of the readings
	keys     []headKey           // per head
	regRoots []merkle.Hash       // per head
	logRoots []merkle.Hash       // per head
	aroots   []merkle.Hash       // per anchor
	lbs      []*types.LightBlock // per head
	chain    []*types.LightBlock // the parsed light_chain
	rep      *RangeReport
}

// headKey is a head's device key.
type headKey struct {
	pub      reading.PublicKey
	expanded *voi.ExpandedPublicKey // Ed25519 keys that expand
}

// VerifyRange checks a range bundle offline against a trust file, by the rules of Verify
// applied reading by reading (each anchor's ledger part, record and light block once, each
// batch's multiproof once), and reports whether the range is complete. It returns the report
// of every step it ran and an error wrapping ErrVerify unless all hold; an incomplete range
// whose proofs all hold is not an error (RangeReport.Complete, Gaps).
func VerifyRange(rangeJSON, trustJSON []byte) (RangeReport, error) {
	v := &verifier{}
	rep := RangeReport{}
	rv := &rangeVerifier{rep: &rep}
	v.step("bundle", func() (string, error) {
		r, err := bundle.ParseRange(rangeJSON)
		if err != nil {
			return "", err
		}
		rv.r = r
		rep.Device, rep.From, rep.To = r.Device, r.From, r.To
		rep.Readings, rep.Batches, rep.Anchors, rep.Heads = len(r.Readings), len(r.Batches), len(r.Anchors), len(r.Heads)
		erased := ""
		if len(r.Erasures) > 0 {
			erased = fmt.Sprintf(" and %s", eraseEntries(len(r.Erasures)))
		}
		return fmt.Sprintf("%s, canonical encoding (%d bytes): %s seqs %d..%d, %d readings in %d batches of %d anchors%s, proven in %s",
			r.Format, len(rangeJSON), r.Device, r.From, r.To, len(r.Readings), len(r.Batches), len(r.Anchors), erased, counted(len(r.Heads), "head")), nil
	})
	v.step("trust", func() (string, error) {
		t, err := bundle.ParseTrust(trustJSON)
		if err != nil {
			return "", err
		}
		if rv.trusted, err = parseValidators(t.Validators); err != nil {
			return "", err
		}
		rv.chainID, rv.trustH = t.ChainID, t.Height
		at := ""
		if t.Height > 0 {
			at = fmt.Sprintf(" at height %d", t.Height)
		}
		return fmt.Sprintf("chain %s, %d validators, set %X%s", rv.chainID, rv.trusted.Size(), rv.trusted.Hash(), at), nil
	})
	v.step("reading signature", rv.signatures)
	if v.err == nil && len(rv.r.Erasures) > 0 {
		v.step("erased reading", rv.erasedReadings)
	}
	v.step("device record", rv.records)
	v.step("batch", rv.batches)
	v.step("anchor", rv.anchors)
	v.step("anchor entry", rv.entries)
	v.step("ledger log", rv.logs)
	v.step("app hash", rv.appHashes)
	if v.err == nil && len(rv.r.LightChain) > 0 {
		v.step("light chain", rv.parseChain)
		v.step("light chain", rv.chainHops)
	}
	v.step("signed header", rv.signedHeaders)
	rep.Steps = v.r.Steps
	if v.err != nil {
		return rep, v.err
	}
	rv.completeness()
	return rep, nil
}

// headOf is the index of the head of reading i.
func (rv *rangeVerifier) headOf(i int) uint64 {
	return rv.r.Anchors[rv.r.Batches[rv.r.Readings[i].Batch].Anchor].Head
}

// anchorName names anchor i in an error.
func (rv *rangeVerifier) anchorName(i int) string {
	return fmt.Sprintf("anchor %d (%s, log index %d)", i, hex.EncodeToString(rv.r.Anchors[i].ID), rv.r.Anchors[i].LogIndex)
}

// headName names head i in an error.
func (rv *rangeVerifier) headName(i int) string {
	return fmt.Sprintf("head %d (height %d)", i, rv.r.Heads[i].Height)
}

// headAnchors is the anchors head i proves: [lo, hi), contiguous since anchors are in head
// order and every head proves one.
func (rv *rangeVerifier) headAnchors(i int) (lo, hi int) {
	as := rv.r.Anchors
	lo, _ = slices.BinarySearchFunc(as, uint64(i), func(a bundle.RangeAnchor, h uint64) int { return cmp.Compare(a.Head, h) })
	hi, _ = slices.BinarySearchFunc(as, uint64(i+1), func(a bundle.RangeAnchor, h uint64) int { return cmp.Compare(a.Head, h) })
	return lo, hi
}

// signatures decodes every reading, checks its device and seq, and verifies its signature
// under the record of its anchor: Ed25519 in batches (curve25519-voi, the rules of
// reading.Ed25519Rules, as ingest), ES256 one by one, spread over the CPUs.
func (rv *rangeVerifier) signatures() (string, error) {
	r := rv.r
	rv.keys = make([]headKey, len(r.Heads))
	expanded := map[string]*voi.ExpandedPublicKey{}
	for i, h := range r.Heads {
		if h.Device.ID != r.Device {
			return "", fmt.Errorf("%s: device record is for %s, the range is of %s", rv.headName(i), h.Device.ID, r.Device)
		}
		alg, err := reading.ParseAlg(h.Device.Alg)
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(i), err)
		}
		pub, err := reading.ParsePublicKey(alg, h.Device.PublicKey)
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(i), err)
		}
		k := headKey{pub: pub}
		if alg == reading.Ed25519 {
			e, ok := expanded[string(pub.Key)]
			if !ok {
				e, _ = voi.NewExpandedPublicKey(voi.PublicKey(pub.Key)) // nil: verified one by one
				expanded[string(pub.Key)] = e
			}
			k.expanded = e
		}
		rv.keys[i] = k
	}
	n := len(r.Readings)
	rv.msgs = make([]reading.Message, n)
	rv.leaves = make([]merkle.Hash, n)
	errs := make([]error, n)
	const minChunk = 256
	workers := max(1, min(runtime.GOMAXPROCS(0), n/minChunk))
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*n/workers, (w+1)*n/workers
		wg.Go(func() { rv.verifyChunk(lo, hi, errs) })
	}
	wg.Wait()
	keys := map[string]bool{}
	for i, err := range errs {
		if err != nil {
			return "", fmt.Errorf("reading seq %d (%s): %w", r.Readings[i].Seq, rv.headName(int(rv.headOf(i))), err)
		}
		if r.Readings[i].Erased() {
			rv.rep.Erased++
			continue
		}
		k := rv.keys[rv.headOf(i)].pub
		keys[string(k.Key)] = true
		if k.Alg == reading.Ed25519 {
			rv.rep.Ed25519++
		} else {
			rv.rep.ES256++
		}
	}
	erased := ""
	if rv.rep.Erased > 0 {
		erased = fmt.Sprintf(", erased ×%d: nothing signed left to check", rv.rep.Erased)
	}
	return fmt.Sprintf("%d readings of %s, seqs %d to %d (Ed25519 ×%d, ES256 ×%d%s) under %d device key(s)",
		n, r.Device, r.Readings[0].Seq, r.Readings[n-1].Seq, rv.rep.Ed25519, rv.rep.ES256, erased, len(keys)), nil
}

// erasedReadings checks, as Verify's "erased reading" step, every erased reading against its
// erase entry: the entry decodes as an erase entry (its signatures verified as the ledger
// did) and covers the reading's device and seq (or device time); the entry's place in its
// head's log is checked by the ledger log step.
func (rv *rangeVerifier) erasedReadings() (string, error) {
	r := rv.r
	es := make([]*entry.Erase, len(r.Erasures))
	for i, x := range r.Erasures {
		e, err := entry.EraseOf(x.Entry)
		if err != nil {
			return "", fmt.Errorf("erasures[%d] (log index %d): %w", i, x.LogIndex, err)
		}
		es[i] = e
	}
	for i := range r.Readings {
		rd := &r.Readings[i]
		if !rd.Erased() {
			continue
		}
		e := es[*rd.Erase]
		if !e.Covers(r.Device, rd.Seq, rd.TS) {
			return "", fmt.Errorf("reading seq %d: the erase entry at log index %d (%s, %s %d..%d) does not cover %s seq %d (device time %d)",
				rd.Seq, r.Erasures[*rd.Erase].LogIndex, e.Dev, e.By, e.From, e.To, r.Device, rd.Seq, rd.TS)
		}
	}
	idx := make([]uint64, len(r.Erasures))
	for i, x := range r.Erasures {
		idx[i] = x.LogIndex
	}
	return fmt.Sprintf("%d readings of %s proven by their leaves, erased under %s (log indices %s), each covering its readings",
		rv.rep.Erased, r.Device, eraseEntries(len(es)), joinHeights(idx)), nil
}

// verifyChunk checks readings [lo, hi), setting errs[i] for each that fails.
func (rv *rangeVerifier) verifyChunk(lo, hi int, errs []error) {
	r := rv.r
	size := 0
	for i := lo; i < hi; i++ {
		size += len(r.Readings[i].Raw) + 32
	}
	signed := make([]byte, 0, size)
	bv := voi.NewBatchVerifierWithCapacity(hi - lo)
	opts := reading.Ed25519Rules()
	var batched []int
	for i := lo; i < hi; i++ {
		rd := &r.Readings[i]
		if rd.Erased() {
			rv.leaves[i] = merkle.Hash(rd.Leaf) // 32 bytes: the bundle step checked
			continue
		}
		rv.leaves[i] = merkle.ReadingLeaf(rd.Raw)
		m := &rv.msgs[i]
		if err := reading.DecodeInto(m, rd.Raw); err != nil {
			errs[i] = err
			continue
		}
		if m.Reading.Device != r.Device || m.Reading.Seq != rd.Seq {
			errs[i] = fmt.Errorf("raw is %s seq %d, the range says %s seq %d", m.Reading.Device, m.Reading.Seq, r.Device, rd.Seq)
			continue
		}
		k := &rv.keys[rv.headOf(i)]
		if k.expanded == nil || m.Alg != reading.Ed25519 {
			errs[i] = m.Verify(k.pub) // ES256, or refused for its algorithm
			continue
		}
		from := len(signed)
		signed = m.AppendSigStructure(signed)
		bv.AddExpandedWithOptions(k.expanded, signed[from:len(signed):len(signed)], m.Signature(), opts)
		batched = append(batched, i)
	}
	if len(batched) == 0 {
		return
	}
	// On failure Verify checks each signature alone: valid names the bad ones.
	_, valid := bv.Verify(rand.Reader)
	for j, i := range batched {
		if !valid[j] {
			errs[i] = reading.ErrBadSignature
		}
	}
}

// records checks each head's device record as Verify's "device record" step does.
func (rv *rangeVerifier) records() (string, error) {
	r := rv.r
	rv.regRoots = make([]merkle.Hash, len(r.Heads))
	since := map[uint64]bool{}
	v2 := 0
	for i := range r.Heads {
		hd := &r.Heads[i]
		rec, err := entry.DecodeRecord(hd.Device.Record)
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(i), err)
		}
		d := hd.Device
		if rec.Dev != d.ID || string(rec.Alg) != d.Alg || !bytes.Equal(rec.Key, d.PublicKey) || string(rec.Status) != d.Status || rec.Height != d.Height {
			return "", fmt.Errorf("%s: the record's bytes do not say what the device fields say", rv.headName(i))
		}
		// A head that proves only erase entries is of a state after them, when the device
		// may have been revoked; a head of anchors needs the key in force.
		if lo, hi := rv.headAnchors(i); rec.Status != entry.StatusActive && lo < hi {
			return "", fmt.Errorf("%s: device %s is %s (since height %d)", rv.headName(i), rec.Dev, rec.Status, rec.Height)
		}
		root, err := hash(hd.RegistryRoot, "registry_root")
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(i), err)
		}
		rv.regRoots[i] = root
		if hd.V2() {
			if _, err := verifyRegistrySMT(d, root); err != nil {
				return "", fmt.Errorf("%s: %w", rv.headName(i), err)
			}
			v2++
		} else {
			p, err := path(d.RegistryPath, "device.registry_path")
			if err != nil {
				return "", fmt.Errorf("%s: %w", rv.headName(i), err)
			}
			if err := merkle.VerifyRegistry(d.RegistryIndex, d.RegistrySize, merkle.LeafHash(d.Record), p, root); err != nil {
				return "", fmt.Errorf("%s: %w", rv.headName(i), err)
			}
		}
		since[rec.Height] = true
	}
	heights := slices.Sorted(maps.Keys(since))
	active := "active in the state of " + counted(len(r.Heads), "head")
	if lo, hi := rv.headAnchors(len(r.Heads) - 1); lo == hi && r.Heads[len(r.Heads)-1].Device.Status != string(entry.StatusActive) {
		active = fmt.Sprintf("active in the state of %s, %s in the state after its erasures", counted(len(r.Heads)-1, "head"), r.Heads[len(r.Heads)-1].Device.Status)
	}
	return fmt.Sprintf("%s %s (records since height %s), each record proven in its head's registry (sparse Merkle tree ×%d, sorted tree ×%d)",
		r.Device, active, joinHeights(heights), v2, len(r.Heads)-v2), nil
}

// onEveryCore calls f(i) for every i in [0, n), on up to GOMAXPROCS goroutines taking the
// next i as they finish, and returns when all calls have.
func onEveryCore(n int, f func(i int)) {
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	wg.Wait()
}

// eraseEntries is "1 erase entry", "2 erase entries".
func eraseEntries(n int) string {
	if n == 1 {
		return "1 erase entry"
	}
	return fmt.Sprintf("%d erase entries", n)
}

// counted is "1 head", "2 heads".
func counted(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func joinHeights(hs []uint64) string {
	var b bytes.Buffer
	for i, h := range hs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, h)
	}
	return b.String()
}

// batches rebuilds each batch's root from its readings' leaves and its multiproof, the
// batches spread over the CPUs; the first failing batch in batch order is reported.
func (rv *rangeVerifier) batches() (string, error) {
	r := rv.r
	members := make([][]int, len(r.Batches)) // readings of each batch
	for i, rd := range r.Readings {
		members[rd.Batch] = append(members[rd.Batch], i)
	}
	errs := make([]error, len(r.Batches))
	hashes := make([]int, len(r.Batches))
	onEveryCore(len(r.Batches), func(bi int) { hashes[bi], errs[bi] = rv.batch(bi, members[bi]) })
	total := 0
	for bi, err := range errs {
		if err != nil {
			return "", err
		}
		total += hashes[bi]
	}
	return fmt.Sprintf("%d batch roots rebuilt from the leaves of %d readings and %d proof hashes", len(r.Batches), len(r.Readings), total), nil
}

// batch rebuilds batch bi's root from the leaves of its readings m and its multiproof, and
// returns the number of proof hashes.
func (rv *rangeVerifier) batch(bi int, m []int) (int, error) {
	r := rv.r
	b := &r.Batches[bi]
	name := fmt.Sprintf("batch %d (%s)", bi, hex.EncodeToString(b.ID))
	if len(b.ID) != 16 {
		return 0, fmt.Errorf("%s: batch id is %d bytes, want 16", name, len(b.ID))
	}
	root, err := hash(b.Root, "root")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	slices.SortFunc(m, func(x, y int) int { return cmp.Compare(r.Readings[x].LeafIndex, r.Readings[y].LeafIndex) })
	idx := make([]uint64, len(m))
	leaves := make([]merkle.Hash, len(m))
	for j, i := range m {
		idx[j], leaves[j] = r.Readings[i].LeafIndex, rv.leaves[i]
		if j > 0 && idx[j] == idx[j-1] {
			return 0, fmt.Errorf("%s: readings seq %d and seq %d are both leaf %d", name, r.Readings[m[j-1]].Seq, r.Readings[i].Seq, idx[j])
		}
	}
	proof, err := path(b.Proof, "proof")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if err := merkle.VerifyMultiProof(b.Size, idx, leaves, proof, root); err != nil {
		return 0, fmt.Errorf("%s of seqs %s: %w", name, seqList(r, m), err)
	}
	return len(proof), nil
}

// seqList names the seqs of readings m, shortened.
func seqList(r *bundle.Range, m []int) string {
	seqs := make([]uint64, len(m))
	for j, i := range m {
		seqs[j] = r.Readings[i].Seq
	}
	slices.Sort(seqs)
	if len(seqs) > 4 {
		return fmt.Sprintf("%d, %d, … %d (%d readings)", seqs[0], seqs[1], seqs[len(seqs)-1], len(seqs))
	}
	return joinHeights(seqs)
}

// anchors rebuilds each anchor's root from the anchor leaves of its batches and its
// multiproof.
func (rv *rangeVerifier) anchors() (string, error) {
	r := rv.r
	rv.aroots = make([]merkle.Hash, len(r.Anchors))
	hashes := 0
	start := 0
	for ai := range r.Anchors {
		a := &r.Anchors[ai]
		end := start
		for end < len(r.Batches) && r.Batches[end].Anchor == uint64(ai) {
			end++
		}
		bs := r.Batches[start:end] // contiguous: batches are in anchor order, every anchor has one
		start = end
		root, err := hash(a.Root, "root")
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.anchorName(ai), err)
		}
		idx := make([]uint64, len(bs))
		leaves := make([]merkle.Hash, len(bs))
		for j, b := range bs {
			broot, _ := merkle.HashFromBytes(b.Root) // checked by the batch step
			idx[j], leaves[j] = b.BatchIndex, merkle.AnchorLeaf([16]byte(b.ID), b.Size, broot)
		}
		proof, err := path(a.Proof, "proof")
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.anchorName(ai), err)
		}
		if err := merkle.VerifyMultiProof(a.Batches, idx, leaves, proof, root); err != nil {
			return "", fmt.Errorf("%s: %w", rv.anchorName(ai), err)
		}
		rv.aroots[ai] = root
		hashes += len(proof)
	}
	return fmt.Sprintf("%d anchor roots rebuilt from the anchor leaves of %d batches and %d proof hashes", len(r.Anchors), len(r.Batches), hashes), nil
}

// entries checks that each anchor's entry is that anchor.
func (rv *rangeVerifier) entries() (string, error) {
	var batches, readings uint64
	for ai := range rv.r.Anchors {
		a := &rv.r.Anchors[ai]
		e, err := entry.Decode(a.Entry)
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.anchorName(ai), err)
		}
		if e.Anchor == nil {
			return "", fmt.Errorf("%s: the ledger entry is a %s, not an anchor", rv.anchorName(ai), e.Type)
		}
		if !bytes.Equal(e.Anchor.ID, a.ID) || !bytes.Equal(e.Anchor.Root, rv.aroots[ai][:]) || e.Anchor.Batches != a.Batches {
			return "", fmt.Errorf("%s: the entry commits a different anchor id, root or batch count", rv.anchorName(ai))
		}
		batches += e.Anchor.Batches
		readings += e.Anchor.Readings
	}
	return fmt.Sprintf("%d anchor entries, of %d batches and %d readings in all", len(rv.r.Anchors), batches, readings), nil
}

// logs checks, for each head, its anchors' entries in its log with its multiproof.
func (rv *rangeVerifier) logs() (string, error) {
	r := rv.r
	rv.logRoots = make([]merkle.Hash, len(r.Heads))
	hashes := 0
	for hi := range r.Heads {
		h := &r.Heads[hi]
		root, err := hash(h.LogRoot, "log_root")
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(hi), err)
		}
		p, err := path(h.LogProof, "log_proof")
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(hi), err)
		}
		lo, end := rv.headAnchors(hi)
		var idx []uint64
		var leaves []merkle.Hash
		for j := lo; j < end; j++ {
			a := &r.Anchors[j]
			idx, leaves = append(idx, a.LogIndex), append(leaves, merkle.EntryLeaf(a.Entry))
		}
		what := fmt.Sprintf("the entries of anchors %d to %d", lo, end-1)
		if e0, e1 := rv.headErasures(hi); e0 < e1 {
			for j := e0; j < e1; j++ {
				idx, leaves = append(idx, r.Erasures[j].LogIndex), append(leaves, merkle.EntryLeaf(r.Erasures[j].Entry))
			}
			if idx, leaves, err = inLogOrder(idx, leaves); err != nil {
				return "", fmt.Errorf("%s: %w", rv.headName(hi), err)
			}
			what = fmt.Sprintf("the entries of erasures %d to %d", e0, e1-1)
			if lo < end {
				what = fmt.Sprintf("the entries of anchors %d to %d and erasures %d to %d", lo, end-1, e0, e1-1)
			}
		}
		if err := merkle.VerifyMultiProof(h.LogSize, idx, leaves, p, root); err != nil {
			return "", fmt.Errorf("%s, %s: %w", rv.headName(hi), what, err)
		}
		rv.logRoots[hi] = root
		hashes += len(p)
	}
	first, last := r.Anchors[0].LogIndex, r.Anchors[len(r.Anchors)-1].LogIndex
	erasures := ""
	if n := len(r.Erasures); n > 0 {
		first, last = min(first, r.Erasures[0].LogIndex), max(last, r.Erasures[n-1].LogIndex)
		erasures = fmt.Sprintf(" (%s, %s)", counted(len(r.Anchors), "anchor"), eraseEntries(n))
	}
	return fmt.Sprintf("%d entries%s in the log of %s, log indices %d to %d (log sizes %d to %d), %d proof hashes",
		len(r.Anchors)+len(r.Erasures), erasures, counted(len(r.Heads), "head"), first, last, r.Heads[0].LogSize, r.Heads[len(r.Heads)-1].LogSize, hashes), nil
}

// headErasures is the erasures head i proves: [lo, hi), contiguous since erasures are in head
// order.
func (rv *rangeVerifier) headErasures(i int) (lo, hi int) {
	es := rv.r.Erasures
	lo, _ = slices.BinarySearchFunc(es, uint64(i), func(e bundle.RangeErasure, h uint64) int { return cmp.Compare(e.Head, h) })
	hi, _ = slices.BinarySearchFunc(es, uint64(i+1), func(e bundle.RangeErasure, h uint64) int { return cmp.Compare(e.Head, h) })
	return lo, hi
}

// appHashes checks that each head's header commits its log and registry.
func (rv *rangeVerifier) appHashes() (string, error) {
	r := rv.r
	rv.lbs = make([]*types.LightBlock, len(r.Heads))
	// Decoding a light block (CometBFT's JSON, by reflection) is most of a head's cost: on
	// every core, the first error in head order reported.
	errs := make([]error, len(r.Heads))
	onEveryCore(len(r.Heads), func(hi int) { rv.lbs[hi], errs[hi] = parseLightBlock(r.Heads[hi].LightBlock) })
	v2 := 0
	for hi := range r.Heads {
		h := &r.Heads[hi]
		if errs[hi] != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(hi), errs[hi])
		}
		b := bundle.Bundle{Ledger: h.Bundle(r.ChainID)}
		st, err := appState(&b, rv.logRoots[hi], rv.regRoots[hi])
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(hi), err)
		}
		want, err := st.AppHash()
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(hi), err)
		}
		if lb := rv.lbs[hi]; !bytes.Equal(lb.Header.AppHash, want[:]) {
			return "", fmt.Errorf("%s: header app hash %X, the log and registry give %X", rv.headName(hi), lb.Header.AppHash, want[:])
		}
		if st.Version == merkle.AppHashV2 {
			v2++
		}
	}
	return fmt.Sprintf("%s, heights %d to %d, commit their heads' log sizes, log roots and registries (app hash v2 ×%d, v1 ×%d)",
		counted(len(r.Heads), "header"), rv.lbs[0].Height, rv.lbs[len(rv.lbs)-1].Height, v2, len(r.Heads)-v2), nil
}

// parseChain parses the light chain: canonical blocks, heights increasing, each below the
// newest head's header (so that some head's hops check it).
func (rv *rangeVerifier) parseChain() (string, error) {
	top := rv.lbs[len(rv.lbs)-1].Height
	for i, raw := range rv.r.LightChain {
		lb, err := parseLightBlock(raw)
		if err != nil {
			return "", fmt.Errorf("light_chain[%d]: %w", i, err)
		}
		if i > 0 && lb.Height <= rv.chain[i-1].Height {
			return "", fmt.Errorf("%w: light_chain[%d] at height %d after height %d", ErrLightChain, i, lb.Height, rv.chain[i-1].Height)
		}
		if lb.Height >= top {
			return "", fmt.Errorf("%w: light_chain[%d] at height %d is not below any head's header (the newest is at %d)", ErrLightChain, i, lb.Height, top)
		}
		rv.chain = append(rv.chain, lb)
	}
	return fmt.Sprintf("%d light blocks, heights %d to %d, in canonical form", len(rv.chain), rv.chain[0].Height, rv.chain[len(rv.chain)-1].Height), nil
}

// chainFor is the light chain of head hi's header, as a bundle of one of its readings holds
// it: the range's light blocks below the header, then the header.
func (rv *rangeVerifier) chainFor(hi int) *lightChain {
	lb := rv.lbs[hi]
	n, _ := slices.BinarySearchFunc(rv.chain, lb.Height, func(b *types.LightBlock, h int64) int { return cmp.Compare(b.Height, h) })
	blocks := append(slices.Clone(rv.chain[:n]), lb)
	return &lightChain{chainID: rv.chainID, trusted: rv.trusted, trustHeight: rv.trustH, blocks: blocks}
}

// chainHops checks, for each head's header, the hops of the light blocks below it.
func (rv *rangeVerifier) chainHops() (string, error) {
	hops := 0
	for hi := range rv.r.Heads {
		lc := rv.chainFor(hi)
		n := len(lc.blocks)
		for i := range n - 1 {
			if _, err := lc.hop(i); err != nil {
				return "", fmt.Errorf("%s: hop %d of %d: %w", rv.headName(hi), i+1, n, err)
			}
			hops++
		}
	}
	return fmt.Sprintf("%d hops below the heads' headers, each by the rules of a bundle's light chain", hops), nil
}

// signedHeaders checks each head's header as Verify's "signed header" step does: the last
// hop of its chain.
func (rv *rangeVerifier) signedHeaders() (string, error) {
	r := rv.r
	var last string
	for hi := range r.Heads {
		lb := rv.lbs[hi]
		if lb.ChainID != rv.chainID || r.ChainID != rv.chainID {
			return "", fmt.Errorf("%s: chain %q (header) / %q (range), the trust file is for %q", rv.headName(hi), lb.ChainID, r.ChainID, rv.chainID)
		}
		if lb.Height != r.Heads[hi].Height {
			return "", fmt.Errorf("%s: header height %d, the range says %d", rv.headName(hi), lb.Height, r.Heads[hi].Height)
		}
		lc := rv.chainFor(hi)
		d, err := lc.hop(len(lc.blocks) - 1)
		if err != nil {
			return "", fmt.Errorf("%s: %w", rv.headName(hi), err)
		}
		last = d
	}
	return fmt.Sprintf("%s of %s, heights %d to %d, each trusted from the trust file's set (newest: %s, %d signatures)",
		counted(len(r.Heads), "header"), rv.chainID, rv.lbs[0].Height, rv.lbs[len(rv.lbs)-1].Height, last, len(rv.lbs[len(rv.lbs)-1].Commit.Signatures)), nil
}

// completeness finds the seqs of [From, To] the range neither holds nor shows absent: a
// reading whose prev is the leaf of the reading before it in the range shows that the device
// sent nothing between them.
func (rv *rangeVerifier) completeness() {
	r, rep := rv.r, rv.rep
	rds := r.Readings
	if first := rds[0].Seq; first > r.From {
		rep.Gaps = append(rep.Gaps, Gap{From: r.From, To: first - 1,
			Reason: fmt.Sprintf("before seq %d, the first reading of the range: a prev names the reading before by its leaf, not its seq, so the range cannot show these absent", first)})
	}
	for i := 1; i < len(rds); i++ {
		prev := rv.msgs[i].Reading.Prev
		linked := bytes.Equal(prev, rv.leaves[i-1][:])
		if linked {
			rep.Chained++
		}
		a, b := rds[i-1].Seq, rds[i].Seq
		if linked || b == a+1 {
			continue
		}
		reason := fmt.Sprintf("seq %d's prev is not seq %d's leaf: readings may be missing between", b, a)
		if rds[i].Erased() {
			reason = fmt.Sprintf("seq %d was erased, and its prev with its bytes: readings may be missing between seq %d and it", b, a)
		} else if prev == nil {
			reason = fmt.Sprintf("seq %d has no prev (its device does not chain its readings): readings may be missing between seq %d and it", b, a)
		}
		rep.Gaps = append(rep.Gaps, Gap{From: a + 1, To: b - 1, Reason: reason})
	}
	if last := rds[len(rds)-1].Seq; last < r.To {
		rep.Gaps = append(rep.Gaps, Gap{From: last + 1, To: r.To,
			Reason: fmt.Sprintf("after seq %d, the last reading of the range: only a later reading's prev could show these absent", last)})
	}
	rep.Complete = len(rep.Gaps) == 0
}
