package proof

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	cmtjson "github.com/cometbft/cometbft/libs/json"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/bundle"
	"github.com/anchorline/anchorline/schemas/entry"
)

// AnchorBatch is one batch of an anchor, in anchor order.
type AnchorBatch struct {
	ID   [16]byte
	Size uint64
	Root merkle.Hash
}

// Parts are what Build assembles; the services layer fetches them from ClickHouse and the ledger.
type Parts struct {
	Raw []byte // the reading, as received
	// Erasure is set for a reading whose bytes were erased (Raw empty): Leaf and TS are its
	// row's leaf and device time, and the parts' ledger members are of a state whose log holds
	// the erase entry (at Erasure.LogIndex) as well as the anchor entry.
	Erasure     *Erasure
	Leaf        merkle.Hash
	TS          uint64
	Device      string
	Seq         uint64
	BatchID     [16]byte
	BatchLeaves []merkle.Hash // the batch's leaves in leaf_index order
	// BatchTree, if set, is the tree over BatchLeaves with its complete subtrees (read, not
	// changed): Build and BuildRange then read its nodes instead of hashing the batch again.
	BatchTree *merkle.Tree
	LeafIndex uint64
	// Shared, if set, is NewShared of these parts' anchor and ledger members, made before (a
	// proof server keeps one per anchor): Build and BuildRange use it instead of making it again.
	Shared *Shared

	AnchorID      [16]byte
	AnchorBatches []AnchorBatch
	BatchIndex    uint64

	ChainID      string
	Entry        []byte // the anchor entry
	LogIndex     uint64
	LogSize      uint64
	LogPath      []merkle.Hash
	LogRoot      merkle.Hash
	RegistryRoot merkle.Hash

	// Version is the app hash version of the state (ledger.EntryProof.Version): 0 or 1 builds
	// a v1 bundle, 2 a v2 bundle. Under v2, StateRoot is the state root the app hash commits
	// and StateProof proves RegistryRoot as its "registry" sub-root (EntryProof.StateRoot and
	// StateProof).
	Version    uint64
	StateRoot  *merkle.Hash
	StateProof *merkle.StateProof

	Record []byte // the device's registry record in the same state
	// v1: the record's place and inclusion path in the sorted registry tree (ledger.DeviceProof
	// Index, Size, Path); unused under v2.
	RegistryIndex uint64
	RegistrySize  uint64
	RegistryPath  []merkle.Hash
	// SMTProof is, under v2, the record's proof in the registry's sparse Merkle tree under
	// RegistryRoot (ledger.DeviceProof.SMTProof); unused under v1.
	SMTProof []byte

	LightBlock *types.LightBlock // whose header's app hash commits the state above
	// LightChain leads from earlier validator sets to LightBlock's (ledger.Client.LightChain):
	// older light blocks, oldest first; empty while the set never changed.
	LightChain []*types.LightBlock
}

// Erasure is an erase entry and its inclusion path in the log of the parts' ledger state.
type Erasure struct {
	Entry    []byte
	LogIndex uint64
	LogPath  []merkle.Hash
	// Head is for BuildRange, whose parts of an erased reading are of its anchor's state
	// (LogPath unused): the full parts of an erased reading's single bundle (Build) in a
	// state whose log holds this entry. BuildRange proves a range's erase entries in the
	// head of its last anchors when that state's log holds them all, else in a head of its
	// own, made from the Head of the newest entry.
	Head *Parts
}

// ErrInconsistent means the parts do not fit together (stored data and ledger disagree).
var ErrInconsistent = errors.New("proof: parts are inconsistent")

func hexes(hs []merkle.Hash) []bundle.Hex {
	out := make([]bundle.Hex, len(hs))
	for i, h := range hs {
		out[i] = bytes.Clone(h[:])
	}
	return out
}

// Build assembles a bundle: it computes the batch and anchor paths and roots itself and checks
// that the parts fit together before anyone relies on the result.
func Build(p Parts) (*bundle.Bundle, error) {
	return build(p, true)
}

// build is Build; erasureInLog as for Shared.build.
func build(p Parts, erasureInLog bool) (*bundle.Bundle, error) {
	s := p.Shared
	if s == nil {
		var err error
		if s, err = NewShared(p); err != nil {
			return nil, err
		}
	}
	tree := p.BatchTree
	if tree == nil {
		tree = &merkle.Tree{}
		for _, l := range p.BatchLeaves {
			tree.Append(l)
		}
	}
	return s.build(p, tree, erasureInLog)
}

// Shared is the part of a proof that every reading of one anchor shares: the anchor's tree, its
// entry's place in the ledger's log, the state the header commits and the light blocks, checked
// to fit together once and encoded once. A proof server keeps it per anchor (all of it is
// immutable once the anchor is committed) and builds each reading's bundle with Build. It is
// safe for concurrent use.
type Shared struct {
	p          Parts // the anchor and ledger members only
	anchorRoot merkle.Hash
	anchor     merkle.Tree // over the anchor leaves; read-only once built
	state      merkle.AppState
	lightBlock json.RawMessage
	lightChain []json.RawMessage
}

// NewShared checks and encodes the anchor and ledger members of p (AnchorID, AnchorBatches,
// ChainID, Entry, the log members, RegistryRoot, Version, StateRoot, StateProof, LightBlock,
// LightChain); the reading, batch and device members are not read.
func NewShared(p Parts) (*Shared, error) {
	s := &Shared{p: Parts{AnchorID: p.AnchorID, AnchorBatches: p.AnchorBatches, ChainID: p.ChainID, Entry: p.Entry,
		LogIndex: p.LogIndex, LogSize: p.LogSize, LogPath: p.LogPath, LogRoot: p.LogRoot, RegistryRoot: p.RegistryRoot,
		Version: p.Version, StateRoot: p.StateRoot, StateProof: p.StateProof, LightBlock: p.LightBlock, LightChain: p.LightChain}}
	if len(p.AnchorBatches) == 0 {
		return nil, fmt.Errorf("%w: the anchor has no batches", ErrInconsistent)
	}
	for _, b := range p.AnchorBatches {
		s.anchor.Append(merkle.AnchorLeaf(b.ID, b.Size, b.Root))
	}
	s.anchorRoot = s.anchor.Root()
	e, err := entry.Decode(p.Entry)
	if err != nil || e.Anchor == nil || !bytes.Equal(e.Anchor.ID, p.AnchorID[:]) || !bytes.Equal(e.Anchor.Root, s.anchorRoot[:]) {
		return nil, fmt.Errorf("%w: the ledger entry is not anchor %x with root %s (%v)", ErrInconsistent, p.AnchorID, s.anchorRoot, err)
	}
	if p.LightBlock == nil || p.LightBlock.SignedHeader == nil || p.LightBlock.ValidatorSet == nil {
		return nil, fmt.Errorf("%w: no light block", ErrInconsistent)
	}
	if s.state, err = p.appState(); err != nil {
		return nil, err
	}
	want, err := s.state.AppHash()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInconsistent, err)
	}
	if !bytes.Equal(p.LightBlock.Header.AppHash, want[:]) {
		return nil, fmt.Errorf("%w: the header at %d does not commit this log and registry (app hash v%d)", ErrInconsistent, p.LightBlock.Height, max(s.state.Version, 1))
	}
	if s.lightBlock, err = encodeLightBlock(p.LightBlock); err != nil {
		return nil, err
	}
	for i, l := range p.LightChain {
		if l == nil || l.SignedHeader == nil || l.ValidatorSet == nil || l.Height >= p.LightBlock.Height ||
			i > 0 && l.Height <= p.LightChain[i-1].Height {
			return nil, fmt.Errorf("%w: light chain block %d is missing or out of order", ErrInconsistent, i)
		}
		raw, err := encodeLightBlock(l)
		if err != nil {
			return nil, err
		}
		s.lightChain = append(s.lightChain, raw)
	}
	return s, nil
}

// Parts returns the anchor and ledger members s was made from (the others are zero): with a
// reading's members added, what Build or BuildRange takes. Its slices are s's: read them only.
func (s *Shared) Parts() Parts { return s.p }

// Height is the height of the header the shared part's light block carries.
func (s *Shared) Height() int64 { return s.p.LightBlock.Height }

// Build assembles the bundle of one reading of the anchor from its reading, batch and device
// members of p (Raw, Device, Seq, BatchID, LeafIndex, BatchIndex, Record and its registry proof)
// and its batch's tree (the leaves in leaf_index order; read, not changed). The anchor and
// ledger members of p are not read: they are s's.
func (s *Shared) Build(p Parts, batch *merkle.Tree) (*bundle.Bundle, error) {
	return s.build(p, batch, true)
}

// build is Build; with erasureInLog false, an erased reading's erase entry is not looked for in
// s's log (BuildRange proves it in a head of its own).
func (s *Shared) build(p Parts, batch *merkle.Tree, erasureInLog bool) (*bundle.Bundle, error) {
	size := batch.Size()
	want := merkle.ReadingLeaf(p.Raw)
	if p.Erasure != nil {
		want = p.Leaf
	}
	if p.Erasure != nil && erasureInLog {
		if err := merkle.VerifyInclusion(p.Erasure.LogIndex, s.p.LogSize, merkle.EntryLeaf(p.Erasure.Entry), p.Erasure.LogPath, s.p.LogRoot); err != nil {
			return nil, fmt.Errorf("%w: the erase entry is not entry %d of the log of %d: %w", ErrInconsistent, p.Erasure.LogIndex, s.p.LogSize, err)
		}
	}
	leaf, err := batch.Leaf(p.LeafIndex)
	if err != nil || leaf != want {
		return nil, fmt.Errorf("%w: the reading is not leaf %d of its batch", ErrInconsistent, p.LeafIndex)
	}
	batchRoot := batch.Root()
	batchPath, err := batch.InclusionProof(p.LeafIndex, size)
	if err != nil {
		return nil, err
	}
	if p.BatchIndex >= uint64(len(s.p.AnchorBatches)) {
		return nil, fmt.Errorf("%w: batch index %d of %d", ErrInconsistent, p.BatchIndex, len(s.p.AnchorBatches))
	}
	ab := s.p.AnchorBatches[p.BatchIndex]
	if ab.ID != p.BatchID || ab.Root != batchRoot || ab.Size != size {
		return nil, fmt.Errorf("%w: the batch recorded in the anchor (size %d, root %s) is not the stored batch (size %d, root %s)",
			ErrInconsistent, ab.Size, ab.Root, size, batchRoot)
	}
	anchorPath, err := s.anchor.InclusionProof(p.BatchIndex, s.anchor.Size())
	if err != nil {
		return nil, err
	}
	rec, err := entry.DecodeRecord(p.Record)
	if err != nil {
		return nil, fmt.Errorf("%w: device record: %w", ErrInconsistent, err)
	}
	if s.state.Version == merkle.AppHashV2 {
		if len(p.SMTProof) == 0 {
			return nil, fmt.Errorf("%w: app hash v2 needs the record's sparse Merkle proof", ErrInconsistent)
		}
		leaf := merkle.LeafHash(p.Record)
		if err := smt.Verify(smt.Hash(s.p.RegistryRoot), smt.KeyOf(rec.Dev), leaf[:], p.SMTProof); err != nil {
			return nil, fmt.Errorf("%w: the record of %s is not in registry %s: %w", ErrInconsistent, rec.Dev, s.p.RegistryRoot, err)
		}
	}
	l := s.p
	b := &bundle.Bundle{
		Format:  bundle.Format,
		Reading: bundle.Reading{Device: p.Device, Seq: p.Seq, Raw: p.Raw},
		Device:  bundle.Device{ID: rec.Dev, Alg: string(rec.Alg), PublicKey: rec.Key, Status: string(rec.Status), Height: rec.Height, Record: p.Record},
		Batch:   bundle.Batch{ID: bytes.Clone(p.BatchID[:]), Size: size, LeafIndex: p.LeafIndex, Path: hexes(batchPath), Root: bytes.Clone(batchRoot[:])},
		Anchor:  bundle.Anchor{ID: bytes.Clone(l.AnchorID[:]), Batches: s.anchor.Size(), BatchIndex: p.BatchIndex, Path: hexes(anchorPath), Root: bytes.Clone(s.anchorRoot[:])},
		Ledger: bundle.Ledger{ChainID: l.ChainID, Height: l.LightBlock.Height, Entry: l.Entry, LogIndex: l.LogIndex, LogSize: l.LogSize,
			LogPath: hexes(l.LogPath), LogRoot: bytes.Clone(l.LogRoot[:]), RegistryRoot: bytes.Clone(l.RegistryRoot[:]), LightBlock: s.lightBlock, LightChain: s.lightChain},
	}
	if p.Erasure != nil {
		b.Reading = bundle.Reading{Device: p.Device, Seq: p.Seq, Leaf: bytes.Clone(p.Leaf[:]), TS: p.TS}
		b.Erasure = &bundle.Erasure{Entry: p.Erasure.Entry, LogIndex: p.Erasure.LogIndex, LogPath: hexes(p.Erasure.LogPath)}
	}
	if s.state.Version == merkle.AppHashV2 {
		st := s.state
		b.Device.RegistryProof = bytes.Clone(p.SMTProof)
		b.Ledger.AppHashVersion = bundle.AppHashV2
		b.Ledger.StateRoot = bytes.Clone(st.StateRoot[:])
		b.Ledger.StateProof = &bundle.StateProof{Name: st.StateProof.Name, Index: st.StateProof.Index, Size: st.StateProof.Size, Path: hexes(st.StateProof.Path)}
	} else {
		b.Device.RegistryIndex, b.Device.RegistrySize, b.Device.RegistryPath = p.RegistryIndex, p.RegistrySize, hexes(p.RegistryPath)
	}
	return b, nil
}

// appState is the state the parts say the light block's app hash commits.
func (p Parts) appState() (merkle.AppState, error) {
	st := merkle.AppState{Version: p.Version, LogSize: p.LogSize, LogRoot: p.LogRoot, RegistryRoot: p.RegistryRoot}
	if p.Version != merkle.AppHashV2 {
		return st, nil
	}
	if p.StateRoot == nil || p.StateProof == nil {
		return st, fmt.Errorf("%w: app hash v2 needs the state root and its registry sub-root proof", ErrInconsistent)
	}
	st.StateRoot, st.StateProof = *p.StateRoot, p.StateProof
	return st, nil
}

// encodeLightBlock is CometBFT's JSON of lb with its validator set in canonical form.
func encodeLightBlock(lb *types.LightBlock) ([]byte, error) {
	vals, err := canonicalValidators(lb.ValidatorSet.Validators)
	if err != nil {
		return nil, err
	}
	return cmtjson.Marshal(&types.LightBlock{SignedHeader: lb.SignedHeader, ValidatorSet: vals})
}

// TrustFile encodes the trust file for a chain and its validator set, without a height (as
// trust files were first made): its set is the one a bundle's light chain starts from.
func TrustFile(chainID string, vals *types.ValidatorSet) ([]byte, error) {
	return TrustFileAt(chainID, 0, vals)
}

// TrustFileAt encodes the trust file for a chain and the validator set that signs its header at
// height.
func TrustFileAt(chainID string, height int64, vals *types.ValidatorSet) ([]byte, error) {
	canon, err := canonicalValidators(vals.Validators)
	if err != nil {
		return nil, err
	}
	raw, err := cmtjson.Marshal(canon.Validators)
	if err != nil {
		return nil, err
	}
	t := bundle.Trust{Format: bundle.TrustFormat, ChainID: chainID, Height: height, Validators: raw}
	return t.Marshal()
}

func compactJSON(dst *bytes.Buffer, src []byte) error { return json.Compact(dst, src) }
