package stack

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cometbft/cometbft/types"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/proof"
	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/services/api"
	"github.com/anchorline/anchorline/services/store"
)

// Sizes of the proof caches. A batch tree holds about 64 bytes per reading (its leaves and
// every complete subtree), so the batch trees cached hold at most ProofCacheLeaves leaves
// together (about 256 MiB); an anchor's shared part is a few KB (its light blocks, log path and
// batch list); a device proof a few hundred bytes.
const (
	ProofCacheLeaves  = 4 << 20
	ProofCacheAnchors = 4096
	ProofCacheDevices = 65536
)

// Proofs builds proof bundles and keeps what they are made of that never changes once a batch
// is anchored: per batch its anchor, its position there and its Merkle tree (all levels); per
// anchor the part every proof of its readings shares (proof.Shared: the anchor tree, the
// entry's log proof, the state and light blocks of the next header); per device and height the
// device's registry proof. A proof of a reading whose batch and anchor are cached costs one
// ClickHouse lookup (the reading) and, unless the device proof is cached, one ledger query.
// Concurrent misses of one batch or anchor load it once. A batch is cached only once it is
// anchored. Forget drops what is cached about a batch or a device, for a later erasure of its
// readings. Proofs is safe for concurrent use.
type Proofs struct {
	store    *store.Store
	ledger   *ledger.Client
	readings *readingLoader

	batches *lru.Cache[[16]byte, *batchPart]
	leaves  atomic.Int64 // in the cached batch trees
	anchors *lru.Cache[[16]byte, *proof.Shared]
	devices *lru.Cache[deviceAt, ledger.DeviceProof]
	loads   singleflight.Group

	mu      sync.Mutex
	chainID string // once known: a chain keeps its id
}

// batchPart is a batch's place in its anchor and its tree; the tree is read-only.
type batchPart struct {
	anchorID   [16]byte
	batchIndex uint32
	tree       *merkle.Tree
}

// deviceAt names a device's registry proof: the registry root it proves the record under. The
// root changes only when a device event is committed, so one proof serves every anchor in
// between.
type deviceAt struct {
	id   string
	root merkle.Hash
}

// NewProofs returns a proof builder over the store and the ledger with caches of the default
// sizes.
func NewProofs(st *store.Store, l *ledger.Client) *Proofs {
	p := &Proofs{store: st, ledger: l, readings: &readingLoader{store: st}}
	// lru.New fails only on a size below 1. The batch cache is bounded by its leaves (addBatch),
	// not its entries.
	p.batches, _ = lru.NewWithEvict(ProofCacheLeaves, func(_ [16]byte, b *batchPart) { p.leaves.Add(-int64(b.tree.Size())) })
	p.anchors, _ = lru.New[[16]byte, *proof.Shared](ProofCacheAnchors)
	p.devices, _ = lru.New[deviceAt, ledger.DeviceProof](ProofCacheDevices)
	return p
}

// Forget drops what is cached about the batches and the devices named: their trees and the
// devices' registry proofs. (An anchor's shared part holds no reading.)
func (p *Proofs) Forget(batches [][16]byte, devices []string) {
	for _, b := range batches {
		p.batches.Remove(b)
	}
	if len(devices) == 0 {
		return
	}
	drop := make(map[string]bool, len(devices))
	for _, d := range devices {
		drop[d] = true
	}
	for _, k := range p.devices.Keys() {
		if drop[k.id] {
			p.devices.Remove(k)
		}
	}
}

// Cached reports how many batches, anchors and device proofs are cached.
func (p *Proofs) Cached() (batches, anchors, devices int) {
	return p.batches.Len(), p.anchors.Len(), p.devices.Len()
}

// Proof assembles the proof bundle of one reading: from ClickHouse the reading, its batch's
// leaves and its anchor's batches; from the ledger the anchor entry's log proof and the device's
// registry record at the anchor's block, and the light block of the next height, whose header
// commits that state.
func (p *Proofs) Proof(ctx context.Context, dev string, seq uint64) ([]byte, error) {
	r, err := p.reading(ctx, dev, seq)
	if err != nil {
		return nil, err
	}
	if len(r.Raw) == 0 {
		return p.erased(ctx, r)
	}
	parts, shared, b, err := p.parts(ctx, r)
	if err != nil {
		return nil, err
	}
	bundle, err := shared.Build(parts, b.tree)
	if err != nil {
		return nil, fmt.Errorf("build proof of %s seq %d: %w", dev, seq, err)
	}
	return bundle.Marshal()
}

// MaxRangeReadings is the most readings one range bundle holds; a longer range is asked in
// pieces.
const MaxRangeReadings = 100_000

// Range assembles the range bundle (anchorline.range/v1) of a device's readings with seqs in
// [from, to]: one ClickHouse range read of the readings, per batch and anchor what Proof
// caches, and one ledger query per head (each run of anchors under one device record) for the
// multiproof of its anchors' entries. Every reading of the range must be anchored (else an error wrapping
// lookup.ErrNotAnchored names the first that is not); none stored is lookup.ErrNotFound; more
// than MaxRangeReadings is api.ErrBadRequest.
func (p *Proofs) Range(ctx context.Context, dev string, from, to uint64) ([]byte, error) {
	rows, more, err := p.store.ReadingsRange(ctx, dev, from, to, 2*MaxRangeReadings)
	if err != nil {
		return nil, err
	}
	var parts []proof.Parts
	var erased map[store.ErasedKey]store.Erased // read once, at the first erased reading
	erasures := map[uint64]*proof.Erasure{}     // by log index
	var newestEntry ledger.Erasure              // the newest erase entry, and a reading it erased
	var newestRow store.ReadingRow
	var newestErased store.Erased
	for i := 0; i < len(rows); {
		j := i + 1
		for j < len(rows) && rows[j].Seq == rows[i].Seq {
			j++
		}
		r, err := p.anchoredOf(ctx, rows[i:j])
		if err != nil {
			return nil, fmt.Errorf("%s seq %d: %w", dev, rows[i].Seq, err)
		}
		if len(parts) == MaxRangeReadings || more && j == len(rows) {
			return nil, fmt.Errorf("%w: %s holds more than %d readings from seq %d to %d: ask for a shorter range, up to seq %d at most",
				api.ErrBadRequest, dev, MaxRangeReadings, from, to, rows[i].Seq-1)
		}
		pp, shared, b, err := p.parts(ctx, r)
		if err != nil {
			return nil, err
		}
		full := shared.Parts()
		full.Raw, full.Device, full.Seq, full.BatchID, full.LeafIndex, full.BatchIndex = pp.Raw, pp.Device, pp.Seq, pp.BatchID, pp.LeafIndex, pp.BatchIndex
		full.Record, full.RegistryIndex, full.RegistrySize, full.RegistryPath, full.SMTProof = pp.Record, pp.RegistryIndex, pp.RegistrySize, pp.RegistryPath, pp.SMTProof
		full.BatchLeaves, full.BatchTree, full.Shared = b.tree.Leaves(), b.tree, shared
		if len(r.Raw) == 0 {
			if erased == nil {
				if erased, err = p.store.ErasedInRange(ctx, dev, from, to); err != nil {
					return nil, laterErr(err)
				}
			}
			e, ok := erased[store.ErasedKey{Seq: r.Seq, Batch: r.BatchID}]
			if !ok {
				return nil, fmt.Errorf("%s seq %d: the stored reading has no bytes and names no erase entry: a finding for the audit, not a proof", dev, r.Seq)
			}
			x := erasures[e.ErasedBy]
			if x == nil {
				le, err := p.eraseEntry(ctx, dev, r.Seq, e.ErasedBy)
				if err != nil {
					return nil, err
				}
				x = &proof.Erasure{Entry: le.Entry, LogIndex: le.Index}
				erasures[e.ErasedBy] = x
				if le.Index > newestEntry.Index {
					newestEntry, newestRow, newestErased = le, r, e
				}
			}
			full.Raw, full.Leaf, full.TS, full.Erasure = nil, e.Leaf, e.TS, x
		}
		parts = append(parts, full)
		i = j
	}
	if len(erasures) > 0 {
		// The newest erase entry's state, for the head that proves the range's erase entries
		// when the state of its last anchor does not hold them (BuildRange decides).
		head, err := p.erasedParts(ctx, newestRow, newestErased, newestEntry)
		if err != nil {
			return nil, err
		}
		erasures[newestEntry.Index].Head = &head
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: no reading of %s from seq %d to %d", lookup.ErrNotFound, dev, from, to)
	}
	prove := func(indices []uint64, size uint64) ([]merkle.Hash, error) {
		return p.ledger.LogMultiProof(ctx, indices, size)
	}
	rb, err := proof.BuildRange(dev, from, to, parts, prove)
	if err != nil {
		return nil, fmt.Errorf("build range proof of %s from %d to %d: %w", dev, from, to, err)
	}
	return rb.Marshal()
}

// anchoredOf returns, of the stored rows of one reading, the first whose batch is anchored, else
// an error wrapping lookup.ErrNotAnchored.
func (p *Proofs) anchoredOf(ctx context.Context, rows []store.ReadingRow) (store.ReadingRow, error) {
	var err error
	for _, r := range rows {
		_, err = p.batch(ctx, r.BatchID)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, lookup.ErrNotAnchored) {
			return store.ReadingRow{}, err
		}
	}
	return store.ReadingRow{}, err
}

// reading returns the stored row of a reading to prove: of a reading stored twice (at-least-once
// delivery), the first whose batch is anchored, else an error wrapping lookup.ErrNotAnchored.
func (p *Proofs) reading(ctx context.Context, dev string, seq uint64) (store.ReadingRow, error) {
	rows, err := p.readings.get(ctx, store.ReadingKey{Device: dev, Seq: seq})
	if err != nil {
		return store.ReadingRow{}, lookupErr(err)
	}
	return p.anchoredOf(ctx, rows)
}

// parts returns the reading's proof parts (reading, batch and device members), its anchor's
// shared part and its batch.
func (p *Proofs) parts(ctx context.Context, r store.ReadingRow) (proof.Parts, *proof.Shared, *batchPart, error) {
	b, err := p.batch(ctx, r.BatchID)
	if err != nil {
		return proof.Parts{}, nil, nil, err
	}
	shared, err := p.anchor(ctx, b.anchorID)
	if err != nil {
		return proof.Parts{}, nil, nil, err
	}
	h := shared.Height() - 1 // the block that included the anchor
	dp, err := p.device(ctx, r.Device, h, shared.Parts().RegistryRoot)
	if err != nil {
		return proof.Parts{}, nil, nil, laterErr(fmt.Errorf("device %s at height %d: %w", r.Device, h, err))
	}
	parts := proof.Parts{Raw: r.Raw, Device: r.Device, Seq: r.Seq, BatchID: r.BatchID, LeafIndex: uint64(r.LeafIndex),
		BatchIndex: uint64(b.batchIndex), Record: dp.RecordBytes, RegistryIndex: dp.Index, RegistrySize: dp.Size,
		RegistryPath: dp.Path, SMTProof: dp.SMTProof}
	return parts, shared, b, nil
}

// batch returns a batch's anchor, position and tree: cached, or loaded once however many
// requests miss it at the same time. A batch not anchored yet is an error wrapping
// lookup.ErrNotAnchored (409) and is not cached.
func (p *Proofs) batch(ctx context.Context, id [16]byte) (*batchPart, error) {
	if b, ok := p.batches.Get(id); ok {
		return b, nil
	}
	v, err, _ := p.loads.Do("batch "+hex.EncodeToString(id[:]), func() (any, error) {
		ctx, cancel := loadContext(ctx)
		defer cancel()
		// The two lookups at once: a first proof of the batch waits for one round trip.
		var leaves [][32]byte
		var leavesErr error
		got := make(chan struct{})
		go func() { defer close(got); leaves, leavesErr = p.store.BatchLeaves(ctx, id) }()
		anchorID, batchIndex, err := p.store.BatchAnchor(ctx, id)
		<-got
		if err != nil {
			return nil, lookupErr(err) // not anchored yet: 409
		}
		if leavesErr != nil {
			return nil, laterErr(fmt.Errorf("leaves of batch %x: %w", id, leavesErr))
		}
		b := &batchPart{anchorID: anchorID, batchIndex: batchIndex, tree: &merkle.Tree{}}
		for _, l := range leaves {
			b.tree.Append(l)
		}
		p.addBatch(id, b)
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*batchPart), nil
}

// loadTimeout bounds a load that several requests wait for.
const loadTimeout = 30 * time.Second

// loadContext is the context of a load shared by the requests that missed the same entry: the
// first one's values, but not its cancellation (the others still wait for the load).
func loadContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
}

// addBatch caches a batch, evicting the least recently used ones while the cached trees hold
// more than ProofCacheLeaves leaves (the last one added stays, however large).
func (p *Proofs) addBatch(id [16]byte, b *batchPart) {
	if p.batches.Contains(id) {
		return
	}
	p.leaves.Add(int64(b.tree.Size()))
	p.batches.Add(id, b)
	for p.leaves.Load() > ProofCacheLeaves && p.batches.Len() > 1 {
		p.batches.RemoveOldest()
	}
}

// anchor returns an anchor's shared proof part: cached, or loaded once.
func (p *Proofs) anchor(ctx context.Context, id [16]byte) (*proof.Shared, error) {
	if s, ok := p.anchors.Get(id); ok {
		return s, nil
	}
	v, err, _ := p.loads.Do("anchor "+hex.EncodeToString(id[:]), func() (any, error) {
		ctx, cancel := loadContext(ctx)
		defer cancel()
		s, err := p.loadAnchor(ctx, id)
		if err != nil {
			return nil, err
		}
		p.anchors.Add(id, s)
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*proof.Shared), nil
}

// erased is the proof bundle of a reading whose bytes were erased (schemas/proof.md "Erased
// readings"): its leaf and the erase entry, with the anchor entry's and the erase entry's log
// proofs, the device record and the light block, all of the state after the block that
// included the erase entry (or the anchor, if that came later). Nothing of it is cached: erased readings are asked for rarely.
func (p *Proofs) erased(ctx context.Context, r store.ReadingRow) ([]byte, error) {
	e, err := p.store.ErasedOf(ctx, r.Device, r.Seq, r.BatchID)
	if err != nil {
		return nil, err
	}
	if e.ErasedBy == 0 {
		return nil, fmt.Errorf("%s seq %d: the stored reading has no bytes and names no erase entry: a finding for the audit, not a proof", r.Device, r.Seq)
	}
	x, err := p.eraseEntry(ctx, r.Device, r.Seq, e.ErasedBy)
	if err != nil {
		return nil, err
	}
	parts, err := p.erasedParts(ctx, r, e, x)
	if err != nil {
		return nil, err
	}
	bundle, err := proof.Build(parts)
	if err != nil {
		return nil, fmt.Errorf("build proof of erased %s seq %d: %w", r.Device, r.Seq, err)
	}
	return bundle.Marshal()
}

// eraseEntry is the erase entry at log index idx, which the row of dev's reading seq names.
func (p *Proofs) eraseEntry(ctx context.Context, dev string, seq, idx uint64) (ledger.Erasure, error) {
	es, err := p.ledger.Erasures(ctx, idx, 1)
	if err != nil {
		return ledger.Erasure{}, laterErr(fmt.Errorf("erase entry %d: %w", idx, err))
	}
	if len(es.Erasures) == 0 || es.Erasures[0].Index != idx {
		return ledger.Erasure{}, fmt.Errorf("%s seq %d names erase entry %d, which the ledger's log does not hold", dev, seq, idx)
	}
	return es.Erasures[0], nil
}

// erasedParts are the full parts of the bundle of an erased reading (erased: what its row r
// keeps, e; the erase entry it names, x): of the state after x or the reading's anchor,
// whichever came last.
func (p *Proofs) erasedParts(ctx context.Context, r store.ReadingRow, e store.Erased, x ledger.Erasure) (proof.Parts, error) {
	b, err := p.batch(ctx, r.BatchID)
	if err != nil {
		return proof.Parts{}, err
	}
	a, err := p.anchorRow(ctx, b.anchorID)
	if err != nil {
		return proof.Parts{}, err
	}
	// The state after whichever came last, the erasure or the anchor.
	h := max(int64(x.Height), int64(a.Height))
	shared, err := p.loadAnchorAt(ctx, b.anchorID, h)
	if err != nil {
		return proof.Parts{}, err
	}
	ep, err := p.ledger.EntryProof(ctx, e.ErasedBy, h)
	if err != nil {
		return proof.Parts{}, laterErr(fmt.Errorf("erase entry %d at height %d: %w", e.ErasedBy, h, err))
	}
	dp, err := p.ledger.Device(ctx, r.Device, h)
	if err != nil {
		return proof.Parts{}, laterErr(fmt.Errorf("device %s at height %d: %w", r.Device, h, err))
	}
	full := shared.Parts()
	full.Device, full.Seq, full.BatchID, full.LeafIndex, full.BatchIndex = r.Device, r.Seq, r.BatchID, uint64(r.LeafIndex), uint64(b.batchIndex)
	full.Record, full.RegistryIndex, full.RegistrySize, full.RegistryPath, full.SMTProof = dp.RecordBytes, dp.Index, dp.Size, dp.Path, dp.SMTProof
	full.Erasure, full.Leaf, full.TS = &proof.Erasure{Entry: ep.Entry, LogIndex: ep.LogIndex, LogPath: ep.Path}, e.Leaf, e.TS
	full.BatchLeaves, full.BatchTree, full.Shared = b.tree.Leaves(), b.tree, shared
	return full, nil
}

func (p *Proofs) loadAnchor(ctx context.Context, id [16]byte) (*proof.Shared, error) {
	return p.loadAnchorAt(ctx, id, 0)
}

// loadAnchorAt is an anchor's shared part of the state after block h (0: the block that
// anchorRow is the stored row of an anchor that a batch's anchor record names. The anchoring
// service writes a committed anchor's batch records before its own row (pipeline/write
// WriteAnchor), and retries until both are written: an anchor a batch names but `anchors` does
// not hold yet is being recorded, lookup.ErrNotAnchored (409: ask again), not an inconsistency.
func (p *Proofs) anchorRow(ctx context.Context, id [16]byte) (store.AnchorRow, error) {
	a, err := p.store.Anchor(ctx, id)
	if errors.Is(err, lookup.ErrNotFound) {
		return a, fmt.Errorf("%w: anchor %x is being recorded (its batches are, its own row is not yet)", lookup.ErrNotAnchored, id)
	}
	if err != nil {
		return a, laterErr(fmt.Errorf("anchor %x: %w", id, err))
	}
	return a, nil
}

// included the anchor, as every proof but an erased reading's has it).
func (p *Proofs) loadAnchorAt(ctx context.Context, id [16]byte, h int64) (*proof.Shared, error) {
	a, err := p.anchorRow(ctx, id)
	if err != nil {
		return nil, err
	}
	if h == 0 {
		h = int64(a.Height)
	}
	// The rest at once: a first proof of the anchor waits for the slowest lookup, not all.
	var rows []store.BatchRow
	var ep ledger.EntryProof
	var lb *types.LightBlock
	var chain []*types.LightBlock
	var chainID string
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		if rows, err = p.store.AnchorBatches(gctx, id); err != nil {
			return laterErr(fmt.Errorf("batches of anchor %x: %w", id, err))
		}
		return nil
	})
	g.Go(func() (err error) {
		if ep, err = p.ledger.EntryProof(gctx, a.LogIndex, h); err != nil {
			return laterErr(fmt.Errorf("ledger entry %d at height %d: %w", a.LogIndex, h, err))
		}
		return nil
	})
	g.Go(func() (err error) {
		// LightBlock waits for the blocks after h+1; LightChain reads commits up to h+1, so it
		// comes after.
		if lb, err = p.ledger.LightBlock(gctx, h+1); err != nil {
			return laterErr(fmt.Errorf("light block %d: %w", h+1, err))
		}
		if chain, err = p.ledger.LightChain(gctx, h+1); err != nil {
			return laterErr(fmt.Errorf("light chain to %d: %w", h+1, err))
		}
		return nil
	})
	g.Go(func() (err error) { chainID, err = p.chain(gctx); return err })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	parts := proof.Parts{AnchorID: id, AnchorBatches: make([]proof.AnchorBatch, len(rows)), ChainID: chainID,
		Entry: ep.Entry, LogIndex: ep.LogIndex, LogSize: ep.LogSize, LogPath: ep.Path, LogRoot: ep.LogRoot,
		RegistryRoot: ep.RegistryRoot, Version: ep.Version, StateRoot: ep.StateRoot, StateProof: ep.StateProof,
		LightBlock: lb, LightChain: chain}
	for i, x := range rows {
		parts.AnchorBatches[i] = proof.AnchorBatch{ID: x.ID, Size: uint64(x.Size), Root: x.Root}
	}
	s, err := proof.NewShared(parts)
	if err != nil {
		return nil, fmt.Errorf("proof part of anchor %x: %w", id, err)
	}
	return s, nil
}

// device returns a device's registry proof at a height whose registry root is root: cached
// under that root, or asked of the ledger.
func (p *Proofs) device(ctx context.Context, id string, height int64, root merkle.Hash) (ledger.DeviceProof, error) {
	k := deviceAt{id, root}
	if d, ok := p.devices.Get(k); ok {
		return d, nil
	}
	d, err := p.ledger.Device(ctx, id, height)
	if err != nil {
		return d, err
	}
	if d.Root != root {
		return d, fmt.Errorf("ledger: registry root at height %d is %s, its entry proof says %s", height, d.Root, root)
	}
	p.devices.Add(k, d)
	return d, nil
}

// chain returns the ledger's chain id, asked once.
func (p *Proofs) chain(ctx context.Context) (string, error) {
	p.mu.Lock()
	id := p.chainID
	p.mu.Unlock()
	if id != "" {
		return id, nil
	}
	id, err := p.ledger.ChainID(ctx)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	p.chainID = id
	p.mu.Unlock()
	return id, nil
}

// Event is the event bundle (anchorline.event/v1) of a rule event: the event as stored, the
// range bundle of the readings it used, and its rule version's proofs at the event's height
// H (the rule's record and entry, its log inclusion, and the checkpoint whose header at H+1
// commits them). A reading it used that is not anchored yet is an error wrapping
// lookup.ErrNotAnchored (409).
func (p *Proofs) Event(ctx context.Context, id [16]byte) ([]byte, error) {
	ev, err := p.store.Event(ctx, id)
	if err != nil {
		return nil, lookupErr(err)
	}
	if len(ev.Seqs) == 0 {
		return nil, fmt.Errorf("event %x lists no readings", id)
	}
	h := int64(ev.Height)
	var rangeJSON []byte
	var r ledger.Rule
	var rp ledger.RuleProof
	var ep ledger.EntryProof
	var st ledger.State
	var lb *types.LightBlock
	var chain []*types.LightBlock
	var chainID string
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		rangeJSON, err = p.Range(gctx, ev.Device, ev.Seqs[0], ev.Seqs[len(ev.Seqs)-1])
		return err
	})
	g.Go(func() (err error) {
		if r, rp, err = p.ledger.RuleAt(gctx, ev.Rule, h); err != nil {
			return laterErr(fmt.Errorf("rule %s at height %d: %w", ev.Rule, h, err))
		}
		if r.Record.Version != ev.Version {
			return fmt.Errorf("rule %s at height %d is version %d, the event says %d", ev.Rule, h, r.Record.Version, ev.Version)
		}
		if ep, err = p.ledger.EntryProof(gctx, r.Record.Index, h); err != nil {
			return laterErr(fmt.Errorf("rule entry %d at height %d: %w", r.Record.Index, h, err))
		}
		return nil
	})
	g.Go(func() (err error) {
		if st, err = p.ledger.State(gctx, h); err != nil {
			return laterErr(fmt.Errorf("ledger state at %d: %w", h, err))
		}
		if lb, err = p.ledger.LightBlock(gctx, h+1); err != nil {
			return laterErr(fmt.Errorf("light block %d: %w", h+1, err))
		}
		if chain, err = p.ledger.LightChain(gctx, h+1); err != nil {
			return laterErr(fmt.Errorf("light chain to %d: %w", h+1, err))
		}
		return nil
	})
	g.Go(func() (err error) { chainID, err = p.chain(gctx); return err })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	cp, err := proof.BuildCheckpoint(chainID, st.AppState(), lb, chain)
	if err != nil {
		return nil, err
	}
	b, err := proof.BuildEvent(ev, rangeJSON, proof.EventRule{Entry: rp.Entry, Record: rp.Record, RulesProof: rp.SMTProof, RulesRoot: rp.RulesRoot,
		StateProof: rp.StateProof, LogIndex: ep.LogIndex, LogPath: ep.Path, Checkpoint: cp})
	if err != nil {
		return nil, fmt.Errorf("build the bundle of event %x: %w", id, err)
	}
	return b.Marshal()
}
