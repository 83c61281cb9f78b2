package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/anchorline/anchorline/anchor/merkle"
)

// ABCI query paths. Requests and responses are JSON in Data and Value. A height of 0 means the
// latest committed height; "state at height h" is the state after block h committed, which the
// header at h+1 commits through its app hash.
const (
	PathEntry          = "/entry"           // EntryRequest -> EntryProof
	PathEntryByLeaf    = "/entry_by_leaf"   // LeafRequest -> Receipt (without TxHash)
	PathDevice         = "/device"          // DeviceRequest -> deviceResponse
	PathDevicesChanged = "/devices_changed" // ChangesRequest -> changesResponse
	PathConsistency    = "/consistency"     // ConsistencyRequest -> []merkle.Hash
	PathLogMultiProof  = "/log_multiproof"  // LogMultiProofRequest -> []merkle.Hash
	PathState          = "/state"           // StateRequest -> State
	PathEntries        = "/entries"         // EntriesRequest -> Entries
	PathAuthority      = "/authority"       // (no request) -> Authority, at the latest height only
	PathRules          = "/rules"           // RulesRequest -> Rules
	PathRule           = "/rule"            // RuleRequest -> RuleProof
)

// RulesRequest asks for every rule's record as of Height (0: the latest), with the entry of
// each rule's version.
type RulesRequest struct {
	Height uint64 `json:"height"`
	// RecordsOnly leaves the entries out: a follower that has the versions it knows asks
	// for the records, then for the entries of new versions (/rule).
	RecordsOnly bool `json:"records_only,omitempty"`
}

// Rules are the rule records at a height (retired ones included), sorted by id, each with
// the entry that made it.
type Rules struct {
	Height uint64      `json:"height"`
	Rules  []RuleState `json:"rules"`
}

// RuleState is a rule's record and the entry it names.
type RuleState struct {
	Record []byte `json:"record"` // entry.RuleRecord, deterministic CBOR
	Entry  []byte `json:"entry"`  // the rule entry at Record's index
}

// RuleRequest asks for one rule's record at Height with its proof in the rules tree.
type RuleRequest struct {
	ID     string `json:"id"`
	Height uint64 `json:"height"`
}

// RuleProof is a rule's record and entry at Height, the record's membership proof in the
// rules tree (anchor/smt encoding) and the tree's root, and the rules sub-root's proof in the
// state root at Height.
type RuleProof struct {
	RuleState
	Height     uint64            `json:"height"`
	SMTProof   []byte            `json:"smt_proof"`
	RulesRoot  merkle.Hash       `json:"rules_root"`
	StateRoot  merkle.Hash       `json:"state_root"`
	StateProof merkle.StateProof `json:"state_proof"`
}

// EntriesRequest asks for up to Max committed log entries from index From on (Max is capped
// at maxEntries).
type EntriesRequest struct {
	From uint64 `json:"from"`
	Max  uint64 `json:"max"`
}

// Entries are consecutive committed log entries, without proofs, and the committed log size.
type Entries struct {
	Entries []LogEntry `json:"entries"`
	LogSize uint64     `json:"log_size"`
}

// LogEntry is an entry at its log index.
type LogEntry struct {
	Index uint64 `json:"index"`
	Entry []byte `json:"entry"`
}

const maxEntries = 1000

// Query codes besides CodeOK.
const (
	CodeNotFound   uint32 = 10
	CodeBadRequest uint32 = 11
)

// EntryRequest asks for the log entry at Index with its proof at Height.
type EntryRequest struct {
	Index  uint64 `json:"index"`
	Height uint64 `json:"height"`
}

// LeafRequest asks where an entry (by its leaf hash) is in the log.
type LeafRequest struct {
	Leaf merkle.Hash `json:"leaf"`
}

// DeviceRequest asks for a device's record with its registry proof at Height.
type DeviceRequest struct {
	ID     string `json:"id"`
	Height uint64 `json:"height"`
}

type deviceResponse struct {
	Record []byte        `json:"record"`
	Index  uint64        `json:"index"`
	Size   uint64        `json:"size"`
	Path   []merkle.Hash `json:"path"`
	Root   merkle.Hash   `json:"root"`
	Height uint64        `json:"height"`
	// SMTProof: under app hash v2, the record's proof in the registry's sparse Merkle tree.
	SMTProof []byte `json:"smt_proof,omitempty"`
}

// ChangesRequest asks for the device records changed in blocks after Since.
type ChangesRequest struct {
	Since uint64 `json:"since"`
}

type changesResponse struct {
	Records [][]byte `json:"records"`
	Height  uint64   `json:"height"`
}

// LogMultiProofRequest asks for the multiproof (merkle.MultiProofAt) of the log entries at
// Indices (strictly increasing) in the log of Size entries, a committed size.
type LogMultiProofRequest struct {
	Indices []uint64 `json:"indices"`
	Size    uint64   `json:"size"`
}

// maxMultiProofIndices bounds a log multiproof request.
const maxMultiProofIndices = 100_000

// ConsistencyRequest asks for a consistency proof between two log sizes.
type ConsistencyRequest struct {
	Size1 uint64 `json:"size1"`
	Size2 uint64 `json:"size2"`
}

// StateRequest asks for the committed roots at Height.
type StateRequest struct {
	Height uint64 `json:"height"`
}

// State is what the app hash at a height commits. Under the second app hash version
// (Version 2) AppHash is merkle.AppHashV2Of(LogSize, LogRoot, StateRoot) and RegistryProof
// proves RegistryRoot as the state root's "registry" sub-root.
type State struct {
	Height        uint64             `json:"height"`
	Version       uint64             `json:"version"`
	LogSize       uint64             `json:"log_size"`
	LogRoot       merkle.Hash        `json:"log_root"`
	RegistryRoot  merkle.Hash        `json:"registry_root"`
	StateRoot     *merkle.Hash       `json:"state_root,omitempty"`
	RegistryProof *merkle.StateProof `json:"registry_proof,omitempty"`
	AppHash       merkle.Hash        `json:"app_hash"`
}

// AppState is what s says the app hash commits, for proof.VerifyHead.
func (s State) AppState() merkle.AppState {
	as := merkle.AppState{Version: s.Version, LogSize: s.LogSize, LogRoot: s.LogRoot, RegistryRoot: s.RegistryRoot, StateProof: s.RegistryProof}
	if s.StateRoot != nil {
		as.StateRoot = *s.StateRoot
	}
	return as
}

// queryError is a query that cannot be answered, with its code.
type queryError struct {
	code uint32
	msg  string
}

func (e *queryError) Error() string { return e.msg }

func notFound(format string, args ...any) error {
	return &queryError{CodeNotFound, fmt.Sprintf(format, args...)}
}

// Query answers the paths above.
func (a *App) Query(_ context.Context, req *abci.RequestQuery) (*abci.ResponseQuery, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	v, err := a.query(req.Path, req.Data)
	if err != nil {
		var qe *queryError
		if errors.As(err, &qe) {
			return &abci.ResponseQuery{Code: qe.code, Log: qe.msg, Height: int64(a.s.height)}, nil
		}
		return &abci.ResponseQuery{Code: CodeBadRequest, Log: err.Error(), Height: int64(a.s.height)}, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &abci.ResponseQuery{Code: CodeOK, Value: b, Height: int64(a.s.height)}, nil
}

func (a *App) at(h uint64) (uint64, error) {
	if h == 0 {
		return a.s.height, nil
	}
	if h > a.s.height {
		return 0, notFound("height %d is not committed yet (latest %d)", h, a.s.height)
	}
	return h, nil
}

func (a *App) query(path string, data []byte) (any, error) {
	s := a.s
	switch path {
	case PathEntry:
		var r EntryRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		h, err := a.at(r.Height)
		if err != nil {
			return nil, err
		}
		size, logRoot, regRoot, kr, err := s.roots(h)
		if err != nil {
			return nil, err
		}
		if r.Index >= size {
			return nil, notFound("log entry %d is not in the log at height %d (size %d)", r.Index, h, size)
		}
		path, err := merkle.InclusionProofOf(logNodes{a.db}, r.Index, size)
		if err != nil {
			return nil, err
		}
		e, _, err := s.entryAt(r.Index)
		if err != nil {
			return nil, err
		}
		c, err := s.hashOf(size, logRoot, regRoot, kr)
		if err != nil {
			return nil, err
		}
		out := EntryProof{Entry: e, LogIndex: r.Index, LogSize: size, Path: nonNil(path), LogRoot: logRoot, RegistryRoot: regRoot, Height: int64(h), Version: c.version}
		if c.version == merkle.AppHashV2 {
			p, err := merkle.ProveSubRoot(c.subRoots, merkle.SubRootRegistry)
			if err != nil {
				return nil, err
			}
			out.StateRoot, out.StateProof = &c.stateRoot, &p
		}
		return out, nil
	case PathEntries:
		var r EntriesRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		out := Entries{Entries: []LogEntry{}, LogSize: s.logSize()}
		for i := r.From; i < out.LogSize && uint64(len(out.Entries)) < min(max(r.Max, 1), maxEntries); i++ {
			e, _, err := s.entryAt(i)
			if err != nil {
				return nil, err
			}
			out.Entries = append(out.Entries, LogEntry{Index: i, Entry: e})
		}
		return out, nil
	case PathEntryByLeaf:
		var r LeafRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		i, ok, err := s.leafIndex(r.Leaf)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, notFound("entry %s is not in the log", r.Leaf)
		}
		_, height, err := s.entryAt(i)
		if err != nil {
			return nil, err
		}
		return Receipt{Height: int64(height), LogIndex: i}, nil
	case PathDevice:
		var r DeviceRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		h, err := a.at(r.Height)
		if err != nil {
			return nil, err
		}
		v, ok, err := s.recordAt(r.ID, h)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, notFound("device %s is not registered at height %d", r.ID, h)
		}
		p, err := s.registryProof(r.ID, v, h)
		if err != nil {
			return nil, err
		}
		return deviceResponse{Record: v.record, Index: p.index, Size: p.size, Path: nonNil(p.path), Root: p.root, Height: h, SMTProof: p.smt}, nil
	case PathDevicesChanged:
		var r ChangesRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		resp := changesResponse{Records: [][]byte{}, Height: s.height}
		devs, err := s.changedSince(r.Since)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			v, ok, err := s.recordAt(d, s.height)
			if err != nil {
				return nil, err
			}
			if ok && v.height > r.Since {
				resp.Records = append(resp.Records, v.record)
			}
		}
		return resp, nil
	case PathConsistency:
		var r ConsistencyRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		if r.Size2 > s.logSize() {
			return nil, notFound("log size %d is beyond the committed size %d", r.Size2, s.logSize())
		}
		p, err := merkle.ConsistencyProofOf(logNodes{a.db}, r.Size1, r.Size2)
		if err != nil {
			return nil, err
		}
		return nonNil(p), nil
	case PathLogMultiProof:
		var r LogMultiProofRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		if r.Size > s.logSize() {
			return nil, notFound("log size %d is beyond the committed size %d", r.Size, s.logSize())
		}
		if len(r.Indices) > maxMultiProofIndices {
			return nil, fmt.Errorf("%d indices in one log multiproof, at most %d", len(r.Indices), maxMultiProofIndices)
		}
		p, _, err := merkle.MultiProofAt(logNodes{a.db}, r.Size, r.Indices)
		if err != nil {
			return nil, err
		}
		return nonNil(p), nil
	case PathState:
		var r StateRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		h, err := a.at(r.Height)
		if err != nil {
			return nil, err
		}
		c, err := s.committedAt(h)
		if err != nil {
			return nil, err
		}
		out := State{Height: h, Version: c.version, LogSize: c.logSize, LogRoot: c.logRoot, RegistryRoot: c.registryRoot, AppHash: c.appHash}
		if c.version == merkle.AppHashV2 {
			p, err := merkle.ProveSubRoot(c.subRoots, merkle.SubRootRegistry)
			if err != nil {
				return nil, err
			}
			out.StateRoot, out.RegistryProof = &c.stateRoot, &p
		}
		return out, nil
	case PathAuthority:
		return s.auth.view(s.height), nil
	case PathRules:
		var r RulesRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		h, err := a.at(r.Height)
		if err != nil {
			return nil, err
		}
		return s.rulesAt(h, r.RecordsOnly)
	case PathRule:
		var r RuleRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		h, err := a.at(r.Height)
		if err != nil {
			return nil, err
		}
		return s.proveRule(r.ID, h)
	case PathOwner, PathConsent:
		var r KeyedRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		h, err := a.at(r.Height)
		if err != nil {
			return nil, err
		}
		k := kindOwners
		if path == PathConsent {
			k = kindConsent
		}
		return s.proveKept(k, r.Key, h)
	case PathErasures:
		var r ErasuresRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		return s.erasuresFrom(r.From, r.Max)
	case PathConsents:
		var r ConsentsRequest
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		h, err := a.at(r.Height)
		if err != nil {
			return nil, err
		}
		return s.consentsAt(h, r.Dev)
	}
	return nil, &queryError{CodeBadRequest, fmt.Sprintf("unknown query path %q", path)}
}

func nonNil(p []merkle.Hash) []merkle.Hash {
	if p == nil {
		return []merkle.Hash{}
	}
	return p
}
