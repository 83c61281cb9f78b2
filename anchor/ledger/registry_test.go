package ledger

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/anchor/smt"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// query asks the app path with req and decodes the answer into out.
func (c *chain) query(path string, req, out any) {
	c.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		c.t.Fatal(err)
	}
	r, err := c.app.Query(c.t.Context(), &abci.RequestQuery{Path: path, Data: b})
	if err != nil || r.Code != CodeOK {
		c.t.Fatalf("query %s %s: %v %d %s", path, b, err, r.GetCode(), r.GetLog())
	}
	if err := json.Unmarshal(r.Value, out); err != nil {
		c.t.Fatal(err)
	}
}

// model is the registry written out as DESIGN 2.2 v1 states it: every record as of a height,
// sorted by device id, in one RFC 6962 tree (what the app computed before it kept its tree).
type model struct {
	records map[string][]byte // device -> record at the latest height
	byHt    []map[string][]byte
}

func (m *model) commit() {
	m.byHt = append(m.byHt, mapsClone(m.records))
}

func mapsClone(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// root is the registry root at height h (1-based block height).
func (m *model) root(t *testing.T, h int) merkle.Hash {
	t.Helper()
	recs := m.byHt[h-1]
	ids := make([]string, 0, len(recs))
	for d := range recs {
		ids = append(ids, d)
	}
	slices.Sort(ids)
	var leaves []merkle.Hash
	for _, d := range ids {
		leaves = append(leaves, merkle.LeafHash(recs[d]))
	}
	r, err := merkle.RegistryFromLeaves(leaves)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// registryChain drives a chain of register and revoke blocks whose ids land before, between
// and after the ones already registered, so that every kind of incremental update happens.
func registryChain(t *testing.T, appState string) (*chain, *model) {
	t.Helper()
	admin := key(1)
	c := newChain(t, appState, key(9))
	m := &model{records: map[string][]byte{}}
	devKey := reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(7))}
	blocks := [][]string{
		{"dev-m"},
		{"dev-a", "dev-z", "dev-n"},
		{},
		{"-revoke-dev-m", "dev-b"},
		{"dev-m", "dev-0", "-revoke-dev-z"},
		{"-revoke-dev-a"},
		{"dev-zz", "dev-y", "dev-c", "dev-d"},
	}
	for i, blk := range blocks {
		var txs [][]byte
		for _, op := range blk {
			var e []byte
			var err error
			at := t0.Add(time.Duration(i) * time.Second)
			if dev, ok := cutPrefix(op, "-revoke-"); ok {
				e, err = entry.NewRevoke(admin, dev, at)
			} else {
				e, err = entry.NewRegister(admin, op, devKey, at)
			}
			if err != nil {
				t.Fatal(err)
			}
			txs = append(txs, e)
		}
		r := c.block(txs...)
		for j, res := range r.TxResults {
			if res.Code != CodeOK {
				t.Fatalf("block %d tx %d (%s): %d %s", c.height, j, blk[j], res.Code, res.Log)
			}
		}
		for _, op := range blk {
			dev, revoke := cutPrefix(op, "-revoke-")
			if !revoke {
				dev = op
			}
			var resp deviceResponse
			c.query(PathDevice, DeviceRequest{ID: dev, Height: uint64(c.height)}, &resp)
			m.records[dev] = resp.Record
		}
		m.commit()
	}
	return c, m
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

// checkRegistry checks, at every height, the registry root against the model and every
// device's registry proof against that root.
func checkRegistry(t *testing.T, c *chain, m *model) {
	t.Helper()
	for h := 1; h <= int(c.height); h++ {
		var st State
		c.query(PathState, StateRequest{Height: uint64(h)}, &st)
		if st.Version == merkle.AppHashV2 {
			checkRegistryV2(t, c, m, h, st)
			continue
		}
		if want := m.root(t, h); st.RegistryRoot != want {
			t.Fatalf("registry root at %d = %s, the v1 rebuild gives %s", h, st.RegistryRoot, want)
		}
		for dev, rec := range m.byHt[h-1] {
			var resp deviceResponse
			c.query(PathDevice, DeviceRequest{ID: dev, Height: uint64(h)}, &resp)
			if !bytes.Equal(resp.Record, rec) || resp.Root != st.RegistryRoot || resp.Size != uint64(len(m.byHt[h-1])) {
				t.Fatalf("device %s at %d: record %x root %s size %d; want %x %s %d", dev, h, resp.Record, resp.Root, resp.Size, rec, st.RegistryRoot, len(m.byHt[h-1]))
			}
			if err := merkle.VerifyRegistry(resp.Index, resp.Size, merkle.LeafHash(resp.Record), resp.Path, st.RegistryRoot); err != nil {
				t.Fatalf("device %s at %d: %v", dev, h, err)
			}
		}
	}
}

// checkRegistryV2 checks the v2 registry at height h: its root is the sparse Merkle tree over
// the model's records then, built afresh in memory, and each device's proof verifies under it.
func checkRegistryV2(t *testing.T, c *chain, m *model, h int, st State) {
	t.Helper()
	ref, err := smt.Open(smt.DBStore{DB: dbm.NewMemDB()}, smt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var changes []smt.Change
	for dev, rec := range m.byHt[h-1] {
		changes = append(changes, smt.Change{Key: smt.KeyOf(dev), Value: smt.Hash(merkle.LeafHash(rec))})
	}
	want, err := ref.Commit(t.Context(), 1, changes)
	if err != nil {
		t.Fatal(err)
	}
	if st.RegistryRoot != merkle.Hash(want) {
		t.Fatalf("v2 registry root at %d = %s, a fresh tree of the records gives %x", h, st.RegistryRoot, want)
	}
	for dev, rec := range m.byHt[h-1] {
		var resp deviceResponse
		c.query(PathDevice, DeviceRequest{ID: dev, Height: uint64(h)}, &resp)
		leaf := merkle.LeafHash(rec)
		if !bytes.Equal(resp.Record, rec) || resp.Root != st.RegistryRoot || len(resp.SMTProof) == 0 || resp.Size != 0 {
			t.Fatalf("device %s at %d: record %x root %s proof %x size %d; want %x %s", dev, h, resp.Record, resp.Root, resp.SMTProof, resp.Size, rec, st.RegistryRoot)
		}
		if err := smt.Verify(want, smt.KeyOf(dev), leaf[:], resp.SMTProof); err != nil {
			t.Fatalf("device %s at %d: %v", dev, h, err)
		}
	}
}

func TestRegistryIncrementalMatchesRebuild(t *testing.T) {
	c, m := registryChain(t, fmt.Sprintf(`{"admins":[%q]}`, hexKeys(key(1))[0]))
	for h := 1; h <= int(c.height); h++ {
		var st State
		c.query(PathState, StateRequest{Height: uint64(h)}, &st)
		want := merkle.AppHash(st.LogSize, st.LogRoot, m.root(t, h))
		if st.Version != merkle.AppHashV1 || st.AppHash != want || !bytes.Equal(c.hashes[h-1], want[:]) || st.StateRoot != nil {
			t.Fatalf("height %d: version %d app hash %s (block %x), want v1 %s", h, st.Version, st.AppHash, c.hashes[h-1], want)
		}
	}
	checkRegistry(t, c, m)
	c.reopen()
	h, err := c.app.Info(t.Context(), &abci.RequestInfo{})
	if err != nil || !bytes.Equal(h.LastBlockAppHash, c.hashes[len(c.hashes)-1]) {
		t.Fatalf("after a restart: app hash %x, %v; want %x", h.GetLastBlockAppHash(), err, c.hashes[len(c.hashes)-1])
	}
	checkRegistry(t, c, m)
}

func TestAppHashV2FromGenesis(t *testing.T) {
	admins := hexKeys(key(1))[0]
	c, m := registryChain(t, fmt.Sprintf(`{"admins":[%q],"app_hash_version":2}`, admins))
	v1, _ := registryChain(t, fmt.Sprintf(`{"admins":[%q]}`, admins))
	check := func() {
		t.Helper()
		for h := 1; h <= int(c.height); h++ {
			var st, st1 State
			c.query(PathState, StateRequest{Height: uint64(h)}, &st)
			v1.query(PathState, StateRequest{Height: uint64(h)}, &st1)
			if st.Version != merkle.AppHashV2 || st.StateRoot == nil || st.RegistryProof == nil {
				t.Fatalf("height %d: %+v, want version 2 with a state root and its registry proof", h, st)
			}
			// The same log as the v1 chain; the registry as a sparse Merkle tree (checked by
			// checkRegistry), all committed by another hash.
			if st.LogSize != st1.LogSize || st.LogRoot != st1.LogRoot || st.RegistryRoot == st1.RegistryRoot || st.AppHash == st1.AppHash {
				t.Fatalf("height %d: v2 %+v, v1 %+v", h, st, st1)
			}
			want := merkle.AppHashV2Of(st.LogSize, st.LogRoot, *st.StateRoot)
			if st.AppHash != want || !bytes.Equal(c.hashes[h-1], want[:]) {
				t.Fatalf("height %d: app hash %s (block %x), want %s", h, st.AppHash, c.hashes[h-1], want)
			}
			p := *st.RegistryProof
			if p.Name != merkle.SubRootRegistry || p.Root != st.RegistryRoot {
				t.Fatalf("height %d: registry proof %+v for registry root %s", h, p, st.RegistryRoot)
			}
			if err := merkle.VerifySubRoot(p, *st.StateRoot); err != nil {
				t.Fatalf("height %d: %v", h, err)
			}
		}
		checkRegistry(t, c, m)
	}
	check()
	c.reopen()
	check()
	info, err := c.app.Info(t.Context(), &abci.RequestInfo{})
	if err != nil || !bytes.Equal(info.LastBlockAppHash, c.hashes[len(c.hashes)-1]) {
		t.Fatalf("after a restart: app hash %x, %v", info.GetLastBlockAppHash(), err)
	}
}

func TestGenesisAppHashVersion(t *testing.T) {
	admins := hex.EncodeToString(pub(key(1)))
	for _, v := range []uint64{0, 1, 2} {
		c := newChain(t, fmt.Sprintf(`{"admins":[%q],"app_hash_version":%d}`, admins, v), key(9))
		c.block()
		var st State
		c.query(PathState, StateRequest{Height: 1}, &st)
		want := max(v, 1)
		if st.Version != want {
			t.Errorf("app_hash_version %d: state of version %d, want %d", v, st.Version, want)
		}
	}
	app, err := OpenApp(t.TempDir(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if _, err := app.InitChain(t.Context(), &abci.RequestInitChain{ChainId: "test", AppStateBytes: fmt.Appendf(nil, `{"admins":[%q],"app_hash_version":3}`, admins), Validators: []abci.ValidatorUpdate{abci.Ed25519ValidatorUpdate(pub(key(9)), 10)}}); err == nil {
		t.Error("a genesis with app_hash_version 3 was accepted")
	}
}
