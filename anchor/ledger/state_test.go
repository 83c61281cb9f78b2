package ledger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// answers collects what every query path says about a chain at every height, as JSON.
func answers(c *chain) []string {
	c.t.Helper()
	var out []string
	ask := func(path string, req any) {
		var v json.RawMessage
		c.query(path, req, &v)
		out = append(out, fmt.Sprintf("%s %v: %s", path, req, v))
	}
	for h := uint64(1); h <= uint64(c.height); h++ {
		ask(PathState, StateRequest{Height: h})
		var st State
		c.query(PathState, StateRequest{Height: h}, &st)
		for i := uint64(0); i < st.LogSize; i++ {
			ask(PathEntry, EntryRequest{Index: i, Height: h})
		}
		ask(PathDevicesChanged, ChangesRequest{Since: h - 1})
		if st.LogSize > 1 {
			ask(PathConsistency, ConsistencyRequest{Size1: st.LogSize / 2, Size2: st.LogSize})
		}
	}
	var all Entries
	c.query(PathEntries, EntriesRequest{Max: 1000}, &all)
	for _, e := range all.Entries {
		ask(PathEntryByLeaf, LeafRequest{Leaf: merkle.EntryLeaf(e.Entry)})
	}
	for _, dev := range []string{"dev-m", "dev-zz", "dev-0"} {
		ask(PathDevice, DeviceRequest{ID: dev})
	}
	return out
}

// TestMigrateOlderLayout opens the database of a chain made before the app kept its log tree,
// leaf, anchor, size and change indexes in it (only entries, records, height and authority),
// as a ledger upgraded in place does: every query answers as before, for both app hash
// versions, and the chain goes on with the same app hashes as one that never lost them.
func TestMigrateOlderLayout(t *testing.T) {
	for _, appState := range []string{
		fmt.Sprintf(`{"admins":[%q]}`, hexKeys(key(1))[0]),
		fmt.Sprintf(`{"admins":[%q],"app_hash_version":2}`, hexKeys(key(1))[0]),
	} {
		c, _ := registryChain(t, appState)
		before := answers(c)
		if err := c.app.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := dbm.NewGoLevelDB("anchorline", c.dir)
		if err != nil {
			t.Fatal(err)
		}
		dropped := 0
		for _, p := range [][]byte{prefNode, prefLeaf, prefAnchor, prefSize, prefChange, prefLatest, keyLayout, keyLogSize} {
			it, err := db.Iterator(p, prefixEnd(p))
			if err != nil {
				t.Fatal(err)
			}
			var keys [][]byte
			for ; it.Valid(); it.Next() {
				keys = append(keys, bytes.Clone(it.Key()))
			}
			it.Close()
			for _, k := range keys {
				if err := db.Delete(k); err != nil {
					t.Fatal(err)
				}
				dropped++
			}
		}
		if dropped < 20 {
			t.Fatalf("only %d derived keys found to drop", dropped)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		c.open()
		after := answers(c)
		if !reflect.DeepEqual(before, after) {
			for i := range min(len(before), len(after)) {
				if before[i] != after[i] {
					t.Fatalf("%s: after migrating\n%s\nwas\n%s", appState, after[i], before[i])
				}
			}
			t.Fatalf("%s: %d answers after migrating, %d before", appState, len(after), len(before))
		}
		info, err := c.app.Info(t.Context(), &abci.RequestInfo{})
		if err != nil || !bytes.Equal(info.LastBlockAppHash, c.hashes[len(c.hashes)-1]) {
			t.Fatalf("%s: app hash after migrating %x, %v", appState, info.GetLastBlockAppHash(), err)
		}
		// The same next block on the migrated database and on one that kept its keys.
		twin, _ := registryChain(t, appState)
		e := must(t)(entry.NewRegister(key(1), "dev-after", reading.PublicKey{Alg: reading.Ed25519, Key: pub(key(8))}, t0))
		r1, r2 := c.block(e), twin.block(e)
		if !bytes.Equal(r1.AppHash, r2.AppHash) || r1.TxResults[0].Code != CodeOK {
			t.Fatalf("%s: next block: app hash %x (code %d), without migration %x", appState, r1.AppHash, r1.TxResults[0].Code, r2.AppHash)
		}
	}
}

// TestLogMultiProof: the app's log multiproof at every committed size is the one a tree over
// the same entries gives, and a size beyond the committed log or indices out of order are
// refused.
func TestLogMultiProof(t *testing.T) {
	c, _ := registryChain(t, fmt.Sprintf(`{"admins":[%q],"app_hash_version":2}`, hexKeys(key(1))[0]))
	var all Entries
	c.query(PathEntries, EntriesRequest{Max: 1000}, &all)
	if all.LogSize < 5 {
		t.Fatalf("log of %d entries, want several", all.LogSize)
	}
	leaves := make([]merkle.Hash, len(all.Entries))
	for i, e := range all.Entries {
		leaves[i] = merkle.EntryLeaf(e.Entry)
	}
	for size := uint64(1); size <= all.LogSize; size++ {
		for _, idx := range [][]uint64{{0}, {size - 1}, {0, size - 1}, {size / 2}} {
			if len(idx) == 2 && idx[0] == idx[1] {
				continue
			}
			want, _, err := merkle.MultiProof(leaves[:size], idx)
			if err != nil {
				t.Fatal(err)
			}
			var got []merkle.Hash
			c.query(PathLogMultiProof, LogMultiProofRequest{Indices: idx, Size: size}, &got)
			if !reflect.DeepEqual(got, nonNil(want)) {
				t.Fatalf("size %d %v: the app says %v, the tree %v", size, idx, got, want)
			}
		}
	}
	for name, req := range map[string]LogMultiProofRequest{
		"beyond the log": {Indices: []uint64{0}, Size: all.LogSize + 1},
		"out of order":   {Indices: []uint64{2, 1}, Size: all.LogSize},
		"none":           {Size: all.LogSize},
	} {
		b, _ := json.Marshal(req)
		r, err := c.app.Query(t.Context(), &abci.RequestQuery{Path: PathLogMultiProof, Data: b})
		if err != nil || r.Code == CodeOK {
			t.Fatalf("%s: code %d (%v), want a refusal", name, r.GetCode(), err)
		}
	}
}
