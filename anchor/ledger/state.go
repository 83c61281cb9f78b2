package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"
	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/fxamacker/cbor/v2"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// Keys of the app's database.
var (
	keyHeight = []byte("meta/height") // last committed height, uint64 BE
	keyAdmins = []byte("meta/admins") // concatenated 32-byte admin keys
	// keyHashV2 holds the first height (uint64 BE) whose state the app hash commits in its
	// second version (DESIGN 2.2); absent: every height is hashed in the first version.
	keyHashV2 = []byte("meta/app_hash_v2_from")
	prefEntry = []byte("e/") // e/<index BE> = height BE || entry bytes
	prefDev   = []byte("d/") // d/<device> 0x00 <height BE> = record bytes
)

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// version is a device record as of a height.
type version struct {
	height uint64
	record []byte
	leaf   merkle.Hash // merkle.LeafHash(record), the record's registry leaf
	rec    entry.Record
}

func newVersion(height uint64, record []byte, rec entry.Record) version {
	return version{height: height, record: record, leaf: merkle.LeafHash(record), rec: rec}
}

// state is the app's committed state, all of it in memory (rebuilt from the database on open).
type state struct {
	height  uint64
	auth    *authority
	log     merkle.Tree
	heights []uint64               // block height of each log entry
	byLeaf  map[merkle.Hash]uint64 // log index of each entry leaf
	anchors map[string]bool        // anchor ids in the log
	devices map[string][]version   // each device's record history, oldest first
	reg     *registry              // the registry tree at height
	// v2From is the first height whose app hash is of the second version (hasV2 false: none).
	v2From uint64
	hasV2  bool
}

func newState() *state {
	return &state{byLeaf: map[merkle.Hash]uint64{}, anchors: map[string]bool{}, devices: map[string][]version{}, reg: newRegistry()}
}

func loadState(db dbm.DB) (*state, error) {
	s := newState()
	b, err := db.Get(keyHeight)
	if err != nil {
		return nil, err
	}
	if len(b) == 8 {
		s.height = binary.BigEndian.Uint64(b)
	}
	if s.auth, err = loadAuthority(db); err != nil {
		return nil, err
	}
	if b, err = db.Get(keyHashV2); err != nil {
		return nil, err
	}
	if len(b) == 8 {
		s.v2From, s.hasV2 = binary.BigEndian.Uint64(b), true
	}
	it, err := db.Iterator(prefEntry, prefixEnd(prefEntry))
	if err != nil {
		return nil, err
	}
	for ; it.Valid(); it.Next() {
		v := it.Value()
		if len(v) < 8 {
			it.Close()
			return nil, fmt.Errorf("ledger db: entry %x is truncated", it.Key())
		}
		if err := s.appendEntry(binary.BigEndian.Uint64(v[:8]), bytes.Clone(v[8:]), false); err != nil {
			it.Close()
			return nil, fmt.Errorf("ledger db: %w", err)
		}
	}
	it.Close()
	it, err = db.Iterator(prefDev, prefixEnd(prefDev))
	if err != nil {
		return nil, err
	}
	// Keys sort by device id, then height: each device's versions come together, oldest first.
	var change regChange
	for ; it.Valid(); it.Next() {
		k := it.Key()[len(prefDev):]
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) != i+9 {
			it.Close()
			return nil, fmt.Errorf("ledger db: bad device key %q", it.Key())
		}
		rec, err := entry.DecodeRecord(it.Value())
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("ledger db: %w", err)
		}
		dev := string(k[:i])
		v := newVersion(binary.BigEndian.Uint64(k[i+1:]), bytes.Clone(it.Value()), rec)
		s.devices[dev] = append(s.devices[dev], v)
		if n := len(change.order); n > 0 && change.order[n-1] == dev {
			change.leaves[n-1] = v.leaf
		} else {
			change.order, change.leaves = append(change.order, dev), append(change.leaves, v.leaf)
		}
	}
	it.Close()
	if !slices.IsSorted(change.order) {
		return nil, errors.New("ledger db: device records are not in device order")
	}
	if len(change.order) > 0 {
		tree, err := merkle.Root(change.leaves)
		if err != nil {
			return nil, err
		}
		change.root = merkle.RegistryRoot(uint64(len(change.leaves)), tree)
	}
	if err := s.reg.apply(change); err != nil {
		return nil, err
	}
	return s, nil
}

// loadAuthority reads the authority state; a database of a chain older than it has only its
// admins (keyAdmins), and gets the default threshold and no anchoring rule.
func loadAuthority(db dbm.DB) (*authority, error) {
	b, err := db.Get(keyAuthority)
	if err != nil {
		return nil, err
	}
	if b != nil {
		var a authority
		if err := json.Unmarshal(b, &a); err != nil {
			return nil, fmt.Errorf("ledger db: authority: %w", err)
		}
		return &a, nil
	}
	if b, err = db.Get(keyAdmins); err != nil {
		return nil, err
	}
	a := &authority{AnchorKeys: [][]byte{}, Validators: []validator{}}
	for ; len(b) >= ed25519.PublicKeySize; b = b[ed25519.PublicKeySize:] {
		a.Admins = append(a.Admins, bytes.Clone(b[:ed25519.PublicKeySize]))
	}
	a.Threshold = defaultThreshold(len(a.Admins))
	return a, nil
}

func prefixEnd(p []byte) []byte {
	e := bytes.Clone(p)
	e[len(e)-1]++
	return e
}

// appendEntry records a committed entry; its leaf is appended to the tree unless inTree says
// FinalizeBlock did already.
func (s *state) appendEntry(height uint64, e []byte, inTree bool) error {
	leaf := merkle.EntryLeaf(e)
	// The entry was checked (entry.Decode, signatures included) before it entered the log; on
	// a restart only its type and anchor id are read back, so that opening a ledger of many
	// entries does not verify every signature again.
	var head struct {
		Type entry.Type `cbor:"type"`
		ID   []byte     `cbor:"id"`
	}
	if err := cbor.Unmarshal(e, &head); err != nil {
		return fmt.Errorf("entry %d: %w", len(s.heights), err)
	}
	s.byLeaf[leaf] = uint64(len(s.heights))
	if !inTree {
		s.log.Append(leaf)
	}
	s.heights = append(s.heights, height)
	if head.Type == entry.TypeAnchor {
		s.anchors[string(head.ID)] = true
	}
	return nil
}

// logSizeAt is the number of entries committed in blocks up to height.
func (s *state) logSizeAt(height uint64) uint64 {
	return uint64(sort.Search(len(s.heights), func(i int) bool { return s.heights[i] > height }))
}

// recordAt returns a device's record as of height.
func (s *state) recordAt(dev string, height uint64) (version, bool) {
	vs := s.devices[dev]
	i := sort.Search(len(vs), func(i int) bool { return vs[i].height > height })
	if i == 0 {
		return version{}, false
	}
	return vs[i-1], true
}

// leafAt is dev's registry leaf as of height.
func (s *state) leafAt(dev string, height uint64) (merkle.Hash, bool) {
	v, ok := s.recordAt(dev, height)
	return v.leaf, ok
}

// registryRoot is the registry root as of height.
func (s *state) registryRoot(height uint64) (merkle.Hash, error) {
	return s.reg.rootAt(height, s.height, s.leafAt)
}

// registryProof is dev's registry proof as of height.
func (s *state) registryProof(dev string, height uint64) (regProof, error) {
	return s.reg.prove(dev, height, s.height, s.leafAt)
}

// roots returns the log size and root and the registry root as of height.
func (s *state) roots(height uint64) (size uint64, logRoot, regRoot merkle.Hash, err error) {
	size = s.logSizeAt(height)
	logRoot = merkle.EmptyRoot()
	if size > 0 {
		if logRoot, err = s.log.RootAt(size); err != nil {
			return
		}
	}
	regRoot, err = s.registryRoot(height)
	return
}

// hashVersion is the app hash version of the state at height.
func (s *state) hashVersion(height uint64) uint64 {
	if s.hasV2 && height >= s.v2From {
		return merkle.AppHashV2
	}
	return merkle.AppHashV1
}

// committed is what the app hash of a height commits, and the hash.
type committed struct {
	version      uint64
	logSize      uint64
	logRoot      merkle.Hash
	registryRoot merkle.Hash
	subRoots     []merkle.SubRoot // v2 only, sorted by name
	stateRoot    merkle.Hash      // v2 only
	appHash      merkle.Hash
}

// subRoots are the named sub-roots a v2 state root commits at a height: the registry's only,
// so far. A later sub-root (rules, owners, consent) joins from a height recorded in state, so
// that every earlier height keeps its state root.
func subRoots(regRoot merkle.Hash) []merkle.SubRoot {
	return []merkle.SubRoot{{Name: merkle.SubRootRegistry, Root: regRoot}}
}

// hashOf is the app hash, of height's version, over the given roots.
func (s *state) hashOf(height, size uint64, logRoot, regRoot merkle.Hash) (committed, error) {
	c := committed{version: s.hashVersion(height), logSize: size, logRoot: logRoot, registryRoot: regRoot}
	if c.version == merkle.AppHashV1 {
		c.appHash = merkle.AppHash(size, logRoot, regRoot)
		return c, nil
	}
	c.subRoots = subRoots(regRoot)
	var err error
	if c.stateRoot, err = merkle.StateRoot(c.subRoots); err != nil {
		return committed{}, err
	}
	c.appHash = merkle.AppHashV2Of(size, logRoot, c.stateRoot)
	return c, nil
}

// committedAt is what the app hash after block height commits.
func (s *state) committedAt(height uint64) (committed, error) {
	size, logRoot, regRoot, err := s.roots(height)
	if err != nil {
		return committed{}, err
	}
	return s.hashOf(height, size, logRoot, regRoot)
}

// logSize is the committed log size (the tree may hold a finalized block's leaves already).
func (s *state) logSize() uint64 { return uint64(len(s.heights)) }

func (s *state) appHash() (merkle.Hash, error) {
	c, err := s.committedAt(s.height)
	return c.appHash, err
}

// Codes of rejected transactions.
const (
	CodeOK           uint32 = 0
	CodeMalformed    uint32 = 1
	CodeUnauthorised uint32 = 2
	CodeConflict     uint32 = 3
	// CodeBadSignature: a signature in the entry does not verify (entry.ErrBadSignature).
	CodeBadSignature uint32 = 4
)

// txError is why a transaction is refused.
type txError struct {
	code uint32
	msg  string
}

func (e *txError) Error() string { return e.msg }

// txCode is the result code for a refused transaction: the txError's, or CodeMalformed for
// any other error.
func txCode(err error) uint32 {
	if te, ok := errors.AsType[*txError](err); ok {
		return te.code
	}
	return CodeMalformed
}

// staged is a block's changes on top of the committed state.
type staged struct {
	entries [][]byte
	records map[string]version
	reg     regChange // the registry after records, computed by FinalizeBlock
	anchors map[string]bool
	auth    *authority                      // the committed authority with the block's changes
	updates map[string]abci.ValidatorUpdate // by validator address: the last update wins
}

func newStaged(s *state) *staged {
	return &staged{records: map[string]version{}, anchors: map[string]bool{}, auth: s.auth.clone(), updates: map[string]abci.ValidatorUpdate{}}
}

// validatorUpdates returns the block's validator updates, one per validator, by address.
func (st *staged) validatorUpdates() []abci.ValidatorUpdate {
	out := make([]abci.ValidatorUpdate, 0, len(st.updates))
	for _, addr := range sortedKeys(boolKeys(st.updates)) {
		out = append(out, st.updates[addr])
	}
	return out
}

// check validates an entry against the committed state plus the block's earlier changes (st;
// nil for CheckTx, which checks against the committed state) for the block at height.
func (s *state) check(e []byte, st *staged, height uint64) (entry.Entry, error) {
	dec, err := entry.Decode(e)
	if errors.Is(err, entry.ErrBadSignature) {
		return dec, &txError{CodeBadSignature, err.Error()}
	}
	if err != nil {
		return dec, &txError{CodeMalformed, err.Error()}
	}
	if _, dup := s.byLeaf[merkle.EntryLeaf(e)]; dup {
		return dec, &txError{CodeConflict, "entry is already in the log"}
	}
	auth := s.auth
	if st != nil {
		auth = st.auth
	}
	if err := checkAuthority(auth, dec, height); err != nil {
		return dec, err
	}
	switch {
	case dec.Anchor != nil:
		if s.anchors[string(dec.Anchor.ID)] || (st != nil && st.anchors[string(dec.Anchor.ID)]) {
			return dec, &txError{CodeConflict, fmt.Sprintf("anchor %x is already in the log", dec.Anchor.ID)}
		}
		return dec, nil
	case dec.AnchorKey != nil, dec.Validator != nil, dec.Admins != nil:
		return dec, nil
	}
	if !auth.isAdmin(dec.Admin()) {
		return dec, &txError{CodeUnauthorised, fmt.Sprintf("%s of %s: key %x is not an admin of this ledger", dec.Type, dec.Device(), []byte(dec.Admin()))}
	}
	cur, known := s.recordAt(dec.Device(), s.height)
	if st != nil {
		if v, ok := st.records[dec.Device()]; ok {
			cur, known = v, true
		}
	}
	active := known && cur.rec.Status == entry.StatusActive
	switch {
	case dec.Register != nil && active:
		return dec, &txError{CodeConflict, fmt.Sprintf("device %s is already registered (revoke it first to change its key)", dec.Device())}
	case dec.Revoke != nil && !known:
		return dec, &txError{CodeConflict, fmt.Sprintf("device %s is not registered", dec.Device())}
	case dec.Revoke != nil && !active:
		return dec, &txError{CodeConflict, fmt.Sprintf("device %s is already revoked", dec.Device())}
	}
	return dec, nil
}

// stage adds a valid entry of the block at height to st.
func (s *state) stage(st *staged, dec entry.Entry, e []byte, height uint64) error {
	st.entries = append(st.entries, e)
	switch {
	case dec.Anchor != nil:
		st.anchors[string(dec.Anchor.ID)] = true
	case dec.AnchorKey != nil, dec.Validator != nil, dec.Admins != nil:
		if u := applyAuthority(st.auth, dec, height); u != nil {
			st.updates[string(cmted25519.PubKey(dec.Validator.PubKey).Address())] = *u
		}
	case dec.Register != nil:
		r := dec.Register
		rec := entry.Record{Dev: r.Dev, Alg: reading.Alg(r.Alg), Key: r.Key, Status: entry.StatusActive, Height: height}
		b, err := rec.Encode()
		if err != nil {
			return err
		}
		st.records[r.Dev] = newVersion(height, b, rec)
	case dec.Revoke != nil:
		prev, ok := st.records[dec.Revoke.Dev]
		if !ok {
			prev, _ = s.recordAt(dec.Revoke.Dev, s.height)
		}
		rec := prev.rec
		rec.Status, rec.Height = entry.StatusRevoked, height
		b, err := rec.Encode()
		if err != nil {
			return err
		}
		st.records[dec.Revoke.Dev] = newVersion(height, b, rec)
	default:
		return errors.New("ledger: entry of no known type")
	}
	return nil
}
