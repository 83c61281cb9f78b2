package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/syndtr/goleveldb/leveldb/opt"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
)

// Genesis is the app_state of the genesis file (schemas/ledger.md).
type Genesis struct {
	Admins []string `json:"admins"` // hex Ed25519 public keys allowed to sign device events
	// AdminThreshold is M, the admin signatures a validator or admins entry needs; nil: 1 for
	// one admin, a majority of several.
	AdminThreshold *uint64 `json:"admin_threshold,omitempty"`
	// AnchorKeys are the hex Ed25519 anchoring keys authorised from genesis. Present (even
	// empty), it makes the ledger accept only anchors signed by an authorised key from the
	// first block; absent (a genesis older than authorised writers), the rule holds from the
	// block after the first anchor_key entry.
	AnchorKeys *[]string `json:"anchor_keys,omitempty"`
	// AppHashVersion is the app hash version of the chain (DESIGN 2.2, schemas/ledger.md):
	// absent, 0 or 1, the first (every genesis made before the second existed); 2, the second
	// from genesis on, which NewGenesis writes for every new chain.
	AppHashVersion uint64 `json:"app_hash_version,omitempty"`
}

// App is the ABCI application.
type App struct {
	abci.BaseApplication

	db  dbm.DB
	log *slog.Logger

	mu     sync.RWMutex
	s      *state
	staged *staged
	stHt   uint64 // height of the staged block
}

var _ abci.Application = (*App)(nil)

// OpenApp opens (or creates) the app's database under dir, with the goleveldb options the
// registry's sparse Merkle tree is tuned for (bloom filter, so that lookups of keys that are not
// there, as a new device's record, read nothing; larger write buffer and tables; no compression
// of hashes); it logs refused entries to log
// (nil: slog.Default()).
func OpenApp(dir string, log *slog.Logger) (*App, error) {
	if log == nil {
		log = slog.Default()
	}
	db, err := dbm.NewGoLevelDBWithOpts("anchorline", dir, dbOptions())
	if err != nil {
		return nil, fmt.Errorf("ledger: open state in %s: %w", dir, err)
	}
	s, err := loadState(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: load state: %w", err)
	}
	return &App{db: db, log: log, s: s}, nil
}

// dbOptions are smt.LevelDBOptions with a 64 MiB block cache: the app's database holds, besides
// the tree, the entries, records and indexes, whose filter and index blocks a registration's
// lookups read (BenchmarkRegistry at 1,000,000 devices).
func dbOptions() *opt.Options {
	o := smt.LevelDBOptions()
	o.BlockCacheCapacity = 64 << 20
	return o
}

// Close closes the database.
func (a *App) Close() error { return a.db.Close() }

// Info tells CometBFT where the app is, so that it replays the blocks the app has not seen.
func (a *App) Info(context.Context, *abci.RequestInfo) (*abci.ResponseInfo, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	h, err := a.s.appHash()
	if err != nil {
		return nil, err
	}
	resp := &abci.ResponseInfo{Data: "anchorline ledger", Version: "1", AppVersion: 1, LastBlockHeight: int64(a.s.height)}
	if a.s.height > 0 {
		resp.LastBlockAppHash = h[:]
	}
	return resp, nil
}

// InitChain reads the admins, their threshold and the anchoring keys from the genesis
// app_state, and the validators from the genesis.
func (a *App) InitChain(_ context.Context, req *abci.RequestInitChain) (*abci.ResponseInitChain, error) {
	var g Genesis
	if len(req.AppStateBytes) > 0 {
		if err := json.Unmarshal(req.AppStateBytes, &g); err != nil {
			return nil, fmt.Errorf("ledger: genesis app_state: %w", err)
		}
	}
	auth, err := genesisAuthority(g, req.Validators)
	if err != nil {
		return nil, err
	}
	if g.AppHashVersion > merkle.AppHashV2 {
		return nil, fmt.Errorf("ledger: genesis app_state: app_hash_version %d is not 1 or 2", g.AppHashVersion)
	}
	var raw []byte
	for _, k := range auth.Admins {
		raw = append(raw, k...)
	}
	enc, err := auth.encode()
	if err != nil {
		return nil, err
	}
	b := a.db.NewBatch()
	defer b.Close()
	if err := errors.Join(b.Set(keyAdmins, raw), b.Set(keyAuthority, enc)); err != nil {
		return nil, err
	}
	// The state after genesis (height 0) already has the chain's version.
	v2 := g.AppHashVersion == merkle.AppHashV2
	if v2 {
		if err := b.Set(keyHashV2, u64(0)); err != nil {
			return nil, err
		}
	}
	if err := b.WriteSync(); err != nil {
		return nil, fmt.Errorf("ledger: persist genesis: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.s.auth = auth
	if v2 {
		a.s.version = merkle.AppHashV2
	}
	h, err := a.s.appHash()
	if err != nil {
		return nil, err
	}
	return &abci.ResponseInitChain{AppHash: h[:]}, nil
}

// CheckTx admits an entry to the mempool if it is valid against the committed state.
func (a *App) CheckTx(_ context.Context, req *abci.RequestCheckTx) (*abci.ResponseCheckTx, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if _, err := a.s.check(req.Tx, nil, a.s.height+1); err != nil {
		return &abci.ResponseCheckTx{Code: txCode(err), Log: err.Error()}, nil
	}
	return &abci.ResponseCheckTx{Code: CodeOK}, nil
}

// FinalizeBlock validates the block's entries in order and stages the valid ones.
func (a *App) FinalizeBlock(ctx context.Context, req *abci.RequestFinalizeBlock) (*abci.ResponseFinalizeBlock, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	height := uint64(req.Height)
	st := newStaged(a.s)
	if !st.auth.ValidatorsKnown {
		st.auth.learnValidators(req.DecidedLastCommit.Votes)
	}
	results := make([]*abci.ExecTxResult, len(req.Txs))
	for i, tx := range req.Txs {
		dec, err := a.s.check(tx, st, height)
		if err == nil {
			err = a.s.stage(st, dec, tx, height)
		}
		if err != nil {
			results[i] = &abci.ExecTxResult{Code: txCode(err), Log: err.Error()}
			a.log.WarnContext(ctx, "ledger: entry refused in a block", "height", height, "code", txCode(err), "reason", err.Error())
			continue
		}
		results[i] = &abci.ExecTxResult{Code: CodeOK, Events: []abci.Event{{Type: "anchorline", Attributes: []abci.EventAttribute{
			{Key: "type", Value: string(dec.Type), Index: true},
			{Key: "leaf", Value: merkle.EntryLeaf(tx).String(), Index: true},
		}}}}
	}
	// The app hash after this block: apply on a copy-free basis by computing roots with the
	// staged entries appended (they are applied for real at Commit).
	hash, err := a.hashWith(ctx, st, height)
	if err != nil {
		return nil, err
	}
	a.staged, a.stHt = st, height
	return &abci.ResponseFinalizeBlock{TxResults: results, AppHash: hash[:], ValidatorUpdates: st.validatorUpdates()}, nil
}

// hashWith computes the app hash the state will have once st is applied at height: the log
// after the block's entries (its new nodes kept in st for Commit) and the registry after its
// records. Under v2 the registry's sparse Merkle tree gets its version for height now: its
// nodes are immutable and CometBFT never takes back a finalized block; when a restart replays
// a block whose version the tree already has (the app crashed between this and Commit), that
// version's root is used as it is.
func (a *App) hashWith(ctx context.Context, st *staged, height uint64) (merkle.Hash, error) {
	st.log, st.nodes = a.s.log.Clone(), nil
	for _, e := range st.entries {
		st.log.Append(merkle.EntryLeaf(e), func(level uint, index uint64, h merkle.Hash) {
			st.nodes = append(st.nodes, logNode{level, index, h})
		})
	}
	var regRoot merkle.Hash
	switch a.s.version {
	case merkle.AppHashV2:
		changes := make([]smt.Change, 0, len(st.records))
		for d, v := range st.records {
			changes = append(changes, smt.Change{Key: smt.KeyOf(d), Value: smt.Hash(v.leaf)})
		}
		var root smt.Hash
		var err error
		if a.s.smt.Latest() >= height {
			root, err = a.s.smt.Root(height)
		} else {
			root, err = a.s.smt.Commit(ctx, height, changes)
		}
		if err != nil {
			return merkle.Hash{}, fmt.Errorf("ledger: registry at %d: %w", height, err)
		}
		regRoot = merkle.Hash(root)
	default:
		changed := make(map[string]merkle.Hash, len(st.records))
		for d, v := range st.records {
			changed[d] = v.leaf
		}
		var err error
		if st.reg, err = a.s.reg.next(changed); err != nil {
			return merkle.Hash{}, err
		}
		regRoot = st.reg.root
	}
	var kr keptRoots
	if a.s.version == merkle.AppHashV2 {
		for k, kd := range a.s.kinds {
			var err error
			if kr[k], st.from[k], err = kd.commit(ctx, st.kept[k], height); err != nil {
				return merkle.Hash{}, err
			}
		}
	}
	c, err := a.s.hashOf(st.log.Size(), st.log.Root(), regRoot, kr)
	return c.appHash, err
}

// Commit persists the staged block atomically, then makes it visible to queries.
func (a *App) Commit(context.Context, *abci.RequestCommit) (*abci.ResponseCommit, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st, height := a.staged, a.stHt
	if st == nil {
		return &abci.ResponseCommit{}, nil
	}
	b := a.db.NewBatch()
	defer b.Close()
	var errs []error
	set := func(k, v []byte) { errs = append(errs, b.Set(k, v)) }
	next := a.s.logSize()
	for i, e := range st.entries {
		set(dbKey(prefEntry, u64(next+uint64(i))), append(u64(height), e...))
		leaf := merkle.EntryLeaf(e)
		set(dbKey(prefLeaf, leaf[:]), u64(next+uint64(i)))
	}
	for id := range st.anchors {
		set(dbKey(prefAnchor, []byte(id)), present)
	}
	for _, n := range st.nodes {
		set(nodeKey(n.level, n.index), n.hash[:])
	}
	if len(st.entries) > 0 {
		set(dbKey(prefSize, u64(height)), u64(st.log.Size()))
	}
	for k, kd := range a.s.kinds {
		kd.persist(set, st.kept[k], height, st.from[k])
	}
	for _, x := range st.erasures {
		set(dbKey(prefErase, u64(x.index)), []byte(x.dev))
	}
	for d, v := range st.records {
		set(devKey(d, height), v.record)
		set(dbKey(prefLatest, []byte(d)), append(u64(height), v.record...))
		set(dbKey(prefChange, u64(height), []byte(d)), present)
	}
	auth, err := st.auth.encode()
	if err != nil {
		return nil, err
	}
	set(keyAuthority, auth)
	set(keyLogSize, u64(st.log.Size()))
	set(keyHeight, u64(height))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ledger: persist block %d: %w", height, err)
	}
	if err := b.WriteSync(); err != nil {
		return nil, fmt.Errorf("ledger: persist block %d: %w", height, err)
	}
	if a.s.version == merkle.AppHashV1 {
		if err := a.s.reg.apply(st.reg); err != nil {
			return nil, err
		}
	}
	a.s.log = st.log
	a.s.height = height
	a.s.auth = st.auth
	for k, kd := range a.s.kinds {
		kd.from = st.from[k]
	}
	a.staged = nil
	return &abci.ResponseCommit{}, nil
}
