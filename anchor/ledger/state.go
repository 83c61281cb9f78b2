package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"
	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/fxamacker/cbor/v2"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// Keys of the app's database. The entries, the device records, the height and the authority
// are the state; everything else is derived from them, written in the same batch, and rebuilt
// by migrate for a database made before it existed.
var (
	keyHeight = []byte("meta/height") // last committed height, uint64 BE
	keyAdmins = []byte("meta/admins") // concatenated 32-byte admin keys
	// keyHashV2 is present (uint64 BE 0) on a chain whose app hash is of the second version
	// (DESIGN 2.2) from genesis on; absent: the first version at every height.
	keyHashV2  = []byte("meta/app_hash_v2_from")
	keyLayout  = []byte("meta/layout")   // layoutVersion once the derived keys below exist
	keyLogSize = []byte("meta/log_size") // committed log size, uint64 BE
	prefEntry  = []byte("e/")            // e/<index BE> = height BE || entry bytes
	prefDev    = []byte("d/")            // d/<device> 0x00 <height BE> = record bytes
	prefNode   = []byte("t/")            // t/<level u8><index BE> = the log tree's complete subtree hash
	prefLeaf   = []byte("l/")            // l/<entry leaf> = log index BE
	prefAnchor = []byte("a/")            // a/<anchor id> = 0x01: the anchor is in the log
	prefSize   = []byte("z/")            // z/<height BE> = log size after the block, for blocks with entries
	prefChange = []byte("c/")            // c/<height BE><device> = 0x01: the device's record changed then
	prefLatest = []byte("r/")            // r/<device> = height BE || its latest record
	prefSMT    = []byte("s/")            // the v2 registry's sparse Merkle tree (anchor/smt)
)

// layoutVersion is the database layout with the derived keys above.
const layoutVersion = 2

var present = []byte{1}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func dbKey(prefix []byte, parts ...[]byte) []byte {
	k := bytes.Clone(prefix)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

func nodeKey(level uint, index uint64) []byte {
	return dbKey(prefNode, []byte{byte(level)}, u64(index))
}

func devKey(dev string, height uint64) []byte {
	return dbKey(prefDev, []byte(dev), []byte{0}, u64(height))
}

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

// logNodes reads the log tree's complete subtrees from the database.
type logNodes struct{ db dbm.DB }

func (n logNodes) Node(level uint, index uint64) (merkle.Hash, error) {
	b, err := n.db.Get(nodeKey(level, index))
	if err != nil {
		return merkle.Hash{}, fmt.Errorf("ledger db: log node %d/%d: %w", level, index, err)
	}
	h, err := merkle.HashFromBytes(b)
	if err != nil {
		return merkle.Hash{}, fmt.Errorf("ledger db: log node %d/%d: %w", level, index, err)
	}
	return h, nil
}

// state is the app's committed state. It lives in the database; memory holds only the height,
// the authority, the log tree's right edge and, on a chain of the first app hash version, the
// v1 registry tree (whose shape needs every leaf). Under the second version the registry is a
// sparse Merkle tree in the database, so memory does not grow with the fleet or the log.
type state struct {
	db      dbm.DB
	height  uint64
	auth    *authority
	log     merkle.Frontier // the committed log
	version uint64          // the chain's app hash version
	reg     *registry       // v1 only: the registry tree at height
	smt     *smt.Tree       // v2 only: the registry, a version per height
	// kinds are the keyed kinds of state besides the registry (rules, owners, consent), v2
	// only: each a version per height from the first block that changes it.
	kinds [numKinds]*keyed
}

func loadState(db dbm.DB) (*state, error) {
	s := &state{db: db, reg: newRegistry(), version: merkle.AppHashV1}
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
	switch {
	case b == nil:
	case len(b) == 8 && binary.BigEndian.Uint64(b) == 0:
		s.version = merkle.AppHashV2
	default:
		return nil, fmt.Errorf("ledger db: %s is %x: only a second app hash version from genesis (0) is supported", keyHashV2, b)
	}
	if s.smt, err = smt.Open(smt.DBStore{DB: db}, smt.DefaultConfig(prefSMT)); err != nil {
		return nil, fmt.Errorf("ledger db: %w", err)
	}
	for k := range numKinds {
		if s.kinds[k], err = openKeyed(db, k); err != nil {
			return nil, err
		}
	}
	if err := migrate(db); err != nil {
		return nil, err
	}
	if b, err = db.Get(keyLogSize); err != nil {
		return nil, err
	}
	var size uint64
	if len(b) == 8 {
		size = binary.BigEndian.Uint64(b)
	}
	if s.log, err = merkle.FrontierOf(logNodes{db}, size); err != nil {
		return nil, err
	}
	if s.version == merkle.AppHashV1 {
		if err := s.loadRegistryV1(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// loadRegistryV1 builds the v1 registry tree from the latest record of every device.
func (s *state) loadRegistryV1() error {
	it, err := s.db.Iterator(prefDev, prefixEnd(prefDev))
	if err != nil {
		return err
	}
	defer it.Close()
	// Keys sort by device id, then height: each device's versions come together, oldest first.
	var change regChange
	for ; it.Valid(); it.Next() {
		dev, _, err := parseDevKey(it.Key())
		if err != nil {
			return err
		}
		leaf := merkle.LeafHash(it.Value())
		if n := len(change.order); n > 0 && change.order[n-1] == dev {
			change.leaves[n-1] = leaf
		} else {
			change.order, change.leaves = append(change.order, dev), append(change.leaves, leaf)
		}
	}
	if !slices.IsSorted(change.order) {
		return errors.New("ledger db: device records are not in device order")
	}
	if len(change.order) > 0 {
		tree, err := merkle.Root(change.leaves)
		if err != nil {
			return err
		}
		change.root = merkle.RegistryRoot(uint64(len(change.leaves)), tree)
	}
	return s.reg.apply(change)
}

func parseDevKey(k []byte) (dev string, height uint64, err error) {
	rest := k[len(prefDev):]
	i := bytes.IndexByte(rest, 0)
	if i < 0 || len(rest) != i+9 {
		return "", 0, fmt.Errorf("ledger db: bad device key %q", k)
	}
	return string(rest[:i]), binary.BigEndian.Uint64(rest[i+1:]), nil
}

// migrate writes the derived keys of a database made before they existed (the log tree's
// nodes, the leaf, anchor, size and change indexes), from its entries and records, in batches;
// the layout key, written last, says it is done, so an interrupted migration starts again.
func migrate(db dbm.DB) error {
	b, err := db.Get(keyLayout)
	if err != nil {
		return err
	}
	if len(b) == 8 && binary.BigEndian.Uint64(b) >= layoutVersion {
		return nil
	}
	batch := db.NewBatch()
	pending := 0
	flush := func(force bool) error {
		if pending < 10_000 && !force {
			return nil
		}
		if err := batch.Write(); err != nil {
			return fmt.Errorf("ledger db: migrate: %w", err)
		}
		batch.Close()
		batch, pending = db.NewBatch(), 0
		return nil
	}
	defer func() { batch.Close() }()
	set := func(k, v []byte) error { pending++; return batch.Set(k, v) }

	it, err := db.Iterator(prefEntry, prefixEnd(prefEntry))
	if err != nil {
		return err
	}
	var log merkle.Frontier
	var lastHeight uint64
	for ; it.Valid(); it.Next() {
		v := it.Value()
		if len(v) < 8 {
			it.Close()
			return fmt.Errorf("ledger db: entry %x is truncated", it.Key())
		}
		height, e := binary.BigEndian.Uint64(v[:8]), v[8:]
		if log.Size() > 0 && height != lastHeight {
			if err := set(dbKey(prefSize, u64(lastHeight)), u64(log.Size())); err != nil {
				it.Close()
				return err
			}
		}
		lastHeight = height
		writes, err := entryKeys(log.Size(), e)
		if err == nil {
			for _, w := range writes {
				if err = set(w[0], w[1]); err != nil {
					break
				}
			}
		}
		if err == nil {
			log.Append(merkle.EntryLeaf(e), func(level uint, index uint64, h merkle.Hash) {
				if err == nil {
					err = set(nodeKey(level, index), bytes.Clone(h[:]))
				}
			})
		}
		if err == nil {
			err = flush(false)
		}
		if err != nil {
			it.Close()
			return fmt.Errorf("ledger db: migrate entry %d: %w", log.Size(), err)
		}
	}
	it.Close()
	if log.Size() > 0 {
		if err := set(dbKey(prefSize, u64(lastHeight)), u64(log.Size())); err != nil {
			return err
		}
	}
	if it, err = db.Iterator(prefDev, prefixEnd(prefDev)); err != nil {
		return err
	}
	for ; it.Valid(); it.Next() {
		dev, height, err := parseDevKey(it.Key())
		if err == nil {
			err = set(dbKey(prefChange, u64(height), []byte(dev)), present)
		}
		if err == nil { // keys sort by device, then height: the last one set is the latest
			err = set(dbKey(prefLatest, []byte(dev)), append(u64(height), it.Value()...))
		}
		if err == nil {
			err = flush(false)
		}
		if err != nil {
			it.Close()
			return err
		}
	}
	it.Close()
	if err := errors.Join(set(keyLogSize, u64(log.Size())), set(keyLayout, u64(layoutVersion))); err != nil {
		return err
	}
	return flush(true)
}

// entryKeys are the derived keys of the entry e at log index i, besides the log tree's nodes:
// its leaf's index and, for an anchor, its id. The entry was checked (entry.Decode, signatures
// included) before it entered the log; only its type and anchor id are read here, so that
// migrating a ledger of many entries does not verify every signature again.
func entryKeys(i uint64, e []byte) ([][2][]byte, error) {
	var head struct {
		Type entry.Type `cbor:"type"`
		ID   []byte     `cbor:"id"`
	}
	if err := cbor.Unmarshal(e, &head); err != nil {
		return nil, fmt.Errorf("entry %d: %w", i, err)
	}
	leaf := merkle.EntryLeaf(e)
	out := [][2][]byte{{dbKey(prefLeaf, leaf[:]), u64(i)}}
	if head.Type == entry.TypeAnchor {
		out = append(out, [2][]byte{dbKey(prefAnchor, head.ID), present})
	}
	return out, nil
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

// logSize is the committed log size (a finalized block's leaves are staged apart).
func (s *state) logSize() uint64 { return s.log.Size() }

// logSizeAt is the number of entries committed in blocks up to height.
func (s *state) logSizeAt(height uint64) (uint64, error) {
	if height >= s.height {
		return s.log.Size(), nil
	}
	it, err := s.db.ReverseIterator(prefSize, dbKey(prefSize, u64(height+1)))
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if !it.Valid() {
		return 0, it.Error()
	}
	if len(it.Value()) != 8 {
		return 0, fmt.Errorf("ledger db: log size key %x is %d bytes", it.Key(), len(it.Value()))
	}
	return binary.BigEndian.Uint64(it.Value()), nil
}

// entryAt returns the committed entry at log index i and the height of its block.
func (s *state) entryAt(i uint64) ([]byte, uint64, error) {
	v, err := s.db.Get(dbKey(prefEntry, u64(i)))
	if err != nil {
		return nil, 0, err
	}
	if len(v) < 8 {
		return nil, 0, fmt.Errorf("ledger db: log entry %d is missing or truncated", i)
	}
	return v[8:], binary.BigEndian.Uint64(v[:8]), nil
}

// leafIndex returns the log index of the committed entry whose leaf is leaf.
func (s *state) leafIndex(leaf merkle.Hash) (uint64, bool, error) {
	v, err := s.db.Get(dbKey(prefLeaf, leaf[:]))
	if err != nil || v == nil {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("ledger db: leaf index %s is %d bytes", leaf, len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}

// hasAnchor reports whether the anchor with this id is in the committed log.
func (s *state) hasAnchor(id []byte) (bool, error) {
	return s.db.Has(dbKey(prefAnchor, id))
}

// recordAt returns a device's record as of height.
func (s *state) recordAt(dev string, height uint64) (version, bool, error) {
	if height >= s.height {
		return s.latestRecord(dev)
	}
	it, err := s.db.ReverseIterator(devKey(dev, 0), devKey(dev, height+1))
	if err != nil {
		return version{}, false, err
	}
	defer it.Close()
	if !it.Valid() {
		return version{}, false, it.Error()
	}
	_, h, err := parseDevKey(it.Key())
	if err != nil {
		return version{}, false, err
	}
	rec, err := entry.DecodeRecord(it.Value())
	if err != nil {
		return version{}, false, fmt.Errorf("ledger db: device %s at %d: %w", dev, h, err)
	}
	return newVersion(h, bytes.Clone(it.Value()), rec), true, nil
}

// latestRecord returns a device's committed record, by one lookup (which the database's bloom
// filter answers without a read for a device it never saw).
func (s *state) latestRecord(dev string) (version, bool, error) {
	v, err := s.db.Get(dbKey(prefLatest, []byte(dev)))
	if err != nil || v == nil {
		return version{}, false, err
	}
	if len(v) < 8 {
		return version{}, false, fmt.Errorf("ledger db: latest record of %s is truncated", dev)
	}
	rec, err := entry.DecodeRecord(v[8:])
	if err != nil {
		return version{}, false, fmt.Errorf("ledger db: device %s: %w", dev, err)
	}
	return newVersion(binary.BigEndian.Uint64(v[:8]), v[8:], rec), true, nil
}

// leafAt is dev's registry leaf as of height.
func (s *state) leafAt(dev string, height uint64) (merkle.Hash, bool, error) {
	v, ok, err := s.recordAt(dev, height)
	return v.leaf, ok, err
}

// changedSince returns the ids of the devices whose record changed in blocks after since,
// sorted.
func (s *state) changedSince(since uint64) ([]string, error) {
	it, err := s.db.Iterator(dbKey(prefChange, u64(since+1)), prefixEnd(prefChange))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	seen := map[string]bool{}
	for ; it.Valid(); it.Next() {
		k := it.Key()
		if len(k) < len(prefChange)+8 {
			return nil, fmt.Errorf("ledger db: bad change key %q", k)
		}
		seen[string(k[len(prefChange)+8:])] = true
	}
	return sortedKeys(seen), it.Error()
}

// registryRoot is the registry root as of height.
func (s *state) registryRoot(height uint64) (merkle.Hash, error) {
	if s.version == merkle.AppHashV2 {
		r, err := s.smt.Root(height)
		return merkle.Hash(r), err
	}
	return s.reg.rootAt(height, s.height, s.leafAt)
}

// registryProof is dev's registry proof as of height: under v1 its place in the sorted tree,
// under v2 its encoded sparse Merkle tree proof (smt).
func (s *state) registryProof(dev string, v version, height uint64) (regProof, error) {
	if s.version == merkle.AppHashV1 {
		return s.reg.prove(dev, height, s.height, s.leafAt)
	}
	root, err := s.smt.Root(height)
	if err != nil {
		return regProof{}, err
	}
	p, val, err := s.smt.Prove(height, smt.KeyOf(dev))
	if err != nil {
		return regProof{}, err
	}
	if !bytes.Equal(val, v.leaf[:]) {
		return regProof{}, fmt.Errorf("ledger db: device %s at %d: the registry holds leaf %x, the record hashes to %s", dev, height, val, v.leaf)
	}
	return regProof{path: []merkle.Hash{}, root: merkle.Hash(root), smt: p.Encode()}, nil
}

// keptRoots are the keyed kinds' sub-roots at a height, nil for a kind the state root does
// not commit at that height.
type keptRoots [numKinds]*merkle.Hash

// roots returns the log size and root, the registry root and the keyed kinds' roots as of
// height.
func (s *state) roots(height uint64) (size uint64, logRoot, regRoot merkle.Hash, kr keptRoots, err error) {
	if size, err = s.logSizeAt(height); err != nil {
		return
	}
	if logRoot, err = merkle.RootOf(logNodes{s.db}, size); err != nil {
		return
	}
	if regRoot, err = s.registryRoot(height); err != nil {
		return
	}
	if s.version != merkle.AppHashV2 {
		return
	}
	for k, kd := range s.kinds {
		if kd.has(height) {
			var r merkle.Hash
			if r, err = kd.root(height); err != nil {
				return
			}
			kr[k] = &r
		}
	}
	return
}

// committed is what the app hash of a height commits, and the hash.
type committed struct {
	version      uint64
	logSize      uint64
	logRoot      merkle.Hash
	registryRoot merkle.Hash
	subRoots     []merkle.SubRoot // v2 only
	stateRoot    merkle.Hash      // v2 only
	appHash      merkle.Hash
}

// subRoots are the named sub-roots a v2 state root commits at a height: the registry's, and
// each keyed kind's from the first block that changes it on, so that every earlier height
// keeps its state root.
func (s *state) subRoots(regRoot merkle.Hash, kr keptRoots) []merkle.SubRoot {
	out := []merkle.SubRoot{{Name: merkle.SubRootRegistry, Root: regRoot}}
	for k, r := range kr {
		if r != nil {
			out = append(out, merkle.SubRoot{Name: s.kinds[k].name, Root: *r})
		}
	}
	return out
}

// hashOf is the app hash, of height's version, over the given roots.
func (s *state) hashOf(size uint64, logRoot, regRoot merkle.Hash, kr keptRoots) (committed, error) {
	c := committed{version: s.version, logSize: size, logRoot: logRoot, registryRoot: regRoot}
	if c.version == merkle.AppHashV1 {
		c.appHash = merkle.AppHash(size, logRoot, regRoot)
		return c, nil
	}
	c.subRoots = s.subRoots(regRoot, kr)
	var err error
	if c.stateRoot, err = merkle.StateRoot(c.subRoots); err != nil {
		return committed{}, err
	}
	c.appHash = merkle.AppHashV2Of(size, logRoot, c.stateRoot)
	return c, nil
}

// committedAt is what the app hash after block height commits.
func (s *state) committedAt(height uint64) (committed, error) {
	size, logRoot, regRoot, kr, err := s.roots(height)
	if err != nil {
		return committed{}, err
	}
	return s.hashOf(size, logRoot, regRoot, kr)
}

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
	log     merkle.Frontier // the log after entries, computed by FinalizeBlock
	nodes   []logNode       // the log tree nodes entries complete
	reg     regChange       // v1: the registry after records, computed by FinalizeBlock
	anchors map[string]bool
	auth    *authority                      // the committed authority with the block's changes
	updates map[string]abci.ValidatorUpdate // by validator address: the last update wins
	// kept are the keyed records the block changes, by kind and key; from is each kind's
	// from height after the block, computed by FinalizeBlock.
	kept [numKinds]map[string]kept
	from [numKinds]uint64
	// erasures are the block's erase entries (their index, prefErase).
	erasures []erasureAt
}

// erasureAt is an erase entry's log index and device.
type erasureAt struct {
	index uint64
	dev   string
}

func newStaged(s *state) *staged {
	st := &staged{records: map[string]version{}, anchors: map[string]bool{}, auth: s.auth.clone(), updates: map[string]abci.ValidatorUpdate{}}
	for k := range st.kept {
		st.kept[k] = map[string]kept{}
	}
	return st
}

// logNode is a complete subtree of the log tree.
type logNode struct {
	level uint
	index uint64
	hash  merkle.Hash
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
	// The log can hold these bytes only if it holds an entry of the same kind about the same
	// thing: an anchor whose id is not in the log, and a register entry of a device without a
	// record (nearly every entry of a busy ledger), are not looked up by leaf.
	var anchorIn, known bool
	var cur version
	mayBeIn := true
	switch {
	case dec.Anchor != nil:
		if anchorIn, err = s.hasAnchor(dec.Anchor.ID); err != nil {
			return dec, err
		}
		mayBeIn = anchorIn
	case dec.Register != nil, dec.Revoke != nil:
		if cur, known, err = s.recordAt(dec.Device(), s.height); err != nil {
			return dec, err
		}
		mayBeIn = known
	}
	if mayBeIn {
		if _, dup, err := s.leafIndex(merkle.EntryLeaf(e)); err != nil || dup {
			if err != nil {
				return dec, err
			}
			return dec, &txError{CodeConflict, "entry is already in the log"}
		}
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
		if anchorIn || (st != nil && st.anchors[string(dec.Anchor.ID)]) {
			return dec, &txError{CodeConflict, fmt.Sprintf("anchor %x is already in the log", dec.Anchor.ID)}
		}
		return dec, nil
	case dec.AnchorKey != nil, dec.Validator != nil, dec.Admins != nil:
		return dec, nil
	case dec.Rule != nil:
		if !auth.isAdmin(dec.Admin()) {
			return dec, &txError{CodeUnauthorised, fmt.Sprintf("rule %s: key %x is not an admin of this ledger", dec.Rule.Rule.ID, []byte(dec.Admin()))}
		}
		return dec, s.checkRule(dec, st)
	case dec.Owner != nil:
		if !auth.isAdmin(dec.Admin()) {
			return dec, &txError{CodeUnauthorised, fmt.Sprintf("owner of %s: key %x is not an admin of this ledger", dec.Owner.Dev, []byte(dec.Admin()))}
		}
		return dec, s.checkOwner(dec, st)
	case dec.Consent != nil:
		return dec, s.checkConsent(dec, st)
	case dec.Erase != nil:
		return dec, s.checkErase(dec, st, auth)
	}
	if !auth.isAdmin(dec.Admin()) {
		return dec, &txError{CodeUnauthorised, fmt.Sprintf("%s of %s: key %x is not an admin of this ledger", dec.Type, dec.Device(), []byte(dec.Admin()))}
	}
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
	case dec.Rule != nil:
		return stageRule(st, dec, e, s.logSize()+uint64(len(st.entries))-1, height)
	case dec.Owner != nil:
		return stageOwner(st, dec.Owner, e, s.logSize()+uint64(len(st.entries))-1, height)
	case dec.Consent != nil:
		return stageConsent(st, dec.Consent, e, s.logSize()+uint64(len(st.entries))-1, height)
	case dec.Erase != nil:
		st.erasures = append(st.erasures, erasureAt{s.logSize() + uint64(len(st.entries)) - 1, dec.Erase.Dev})
	case dec.Register != nil:
		r := dec.Register
		rec := entry.Record{Dev: r.Dev, Alg: reading.Alg(r.Alg), Key: r.Key, Status: entry.StatusActive, Height: height, OptIn: r.OptIn}
		b, err := rec.Encode()
		if err != nil {
			return err
		}
		st.records[r.Dev] = newVersion(height, b, rec)
	case dec.Revoke != nil:
		prev, ok := st.records[dec.Revoke.Dev]
		if !ok {
			var err error
			if prev, _, err = s.recordAt(dec.Revoke.Dev, s.height); err != nil {
				return err
			}
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
