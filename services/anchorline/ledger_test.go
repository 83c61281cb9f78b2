package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/services/stack"
)

// TestLedgerInit checks what `ledger init` writes for four validators on one host: four homes,
// one genesis byte for byte, every other validator in persistent_peers, distinct ports, the
// generated keys in app_state; and that a second init into the same directory is refused.
func TestLedgerInit(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "net")
	args := []string{"ledger", "init", "--validators", "4", "--chain-id", "init-test", "--out", dir, "--admins", "2", "--admin-threshold", "2"}
	if out, err := runOffline(ctx, t, args...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	var genesis []byte
	ids := map[string]int{} // node id -> index
	confs := make([]string, 4)
	for i := range 4 {
		home := filepath.Join(dir, "node"+strconv.Itoa(i))
		g, err := os.ReadFile(filepath.Join(home, "config", "genesis.json"))
		if err != nil {
			t.Fatal(err)
		}
		if genesis == nil {
			genesis = g
		} else if !bytes.Equal(g, genesis) {
			t.Fatalf("node%d's genesis differs from node0's", i)
		}
		key, err := p2p.LoadNodeKey(filepath.Join(home, "config", "node_key.json"))
		if err != nil {
			t.Fatal(err)
		}
		ids[string(key.ID())] = i
		conf, err := node.LoadConfig(home)
		if err != nil {
			t.Fatal(err)
		}
		if !conf.P2P.AllowDuplicateIP || conf.P2P.AddrBookStrict || conf.P2P.FlushThrottleTimeout.Milliseconds() != 10 ||
			conf.Consensus.TimeoutPropose.Seconds() != 1 || !conf.Consensus.CreateEmptyBlocks {
			t.Errorf("node%d: p2p %+v, consensus %+v", i, conf.P2P, conf.Consensus)
		}
		confs[i] = conf.P2P.ListenAddress + " " + conf.RPC.ListenAddress + " " + conf.P2P.PersistentPeers
	}
	if len(ids) != 4 {
		t.Fatalf("node ids not distinct: %v", ids)
	}

	// Ports: eight distinct listen addresses; each node's peers are the other three, at their
	// P2P addresses.
	p2pAddr := make([]string, 4)
	seen := map[string]bool{}
	for i, c := range confs {
		f := strings.Fields(c)
		if len(f) != 3 {
			t.Fatalf("node%d: listen addresses and peers %q", i, c)
		}
		for _, a := range f[:2] {
			if seen[a] {
				t.Fatalf("address %s used twice", a)
			}
			seen[a] = true
		}
		p2pAddr[i] = strings.TrimPrefix(f[0], "tcp://")
	}
	for i, c := range confs {
		peers := strings.Split(strings.Fields(c)[2], ",")
		var got []int
		for _, p := range peers {
			id, addr, _ := strings.Cut(p, "@")
			j, ok := ids[id]
			if !ok || addr != p2pAddr[j] {
				t.Fatalf("node%d: peer %q is not a validator at its P2P address", i, p)
			}
			got = append(got, j)
		}
		slices.Sort(got)
		want := slices.DeleteFunc([]int{0, 1, 2, 3}, func(j int) bool { return j == i })
		if !slices.Equal(got, want) {
			t.Fatalf("node%d: peers %v, want %v", i, got, want)
		}
	}

	// The genesis: four validators of equal power, the generated admin and anchoring keys.
	doc, err := types.GenesisDocFromJSON(genesis)
	if err != nil {
		t.Fatal(err)
	}
	if doc.ChainID != "init-test" || len(doc.Validators) != 4 {
		t.Fatalf("genesis: chain %q, %d validators", doc.ChainID, len(doc.Validators))
	}
	for _, v := range doc.Validators {
		if v.Power != doc.Validators[0].Power {
			t.Fatalf("unequal powers: %+v", doc.Validators)
		}
	}
	var app ledger.Genesis
	if err := json.Unmarshal(doc.AppState, &app); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		k, err := stack.LoadAdminKey(filepath.Join(dir, "admin"+strconv.Itoa(i)+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(app.Admins, hex.EncodeToString(reading.Ed25519Public(k))) {
			t.Fatalf("admin%d.key not in app_state.admins %v", i, app.Admins)
		}
	}
	anchor, err := stack.LoadOrCreateAnchorKey(filepath.Join(dir, "anchor.key"))
	if err != nil {
		t.Fatal(err)
	}
	if app.AnchorKeys == nil || !slices.Equal(*app.AnchorKeys, []string{hex.EncodeToString(reading.Ed25519Public(anchor))}) ||
		app.AdminThreshold == nil || *app.AdminThreshold != 2 {
		t.Fatalf("app_state anchor_keys %v, admin_threshold %v", app.AnchorKeys, app.AdminThreshold)
	}

	// A second init into the same directory is refused and changes nothing.
	out, err := runOffline(ctx, t, args...)
	if !errors.Is(err, node.ErrExists) || exitCode(err) != exitBadInput {
		t.Fatalf("second init: %v (exit %d)\n%s", err, exitCode(err), out)
	}
	if g, err := os.ReadFile(filepath.Join(dir, "node0", "config", "genesis.json")); err != nil || !bytes.Equal(g, genesis) {
		t.Fatalf("genesis changed by the refused init: %v", err)
	}

	// `ledger --home` on a directory that is no validator home is bad input, naming it.
	if _, err := runOffline(ctx, t, "ledger", "--home", t.TempDir()); !errors.Is(err, node.ErrNoHome) || exitCode(err) != exitBadInput {
		t.Fatalf("ledger --home on an empty directory: %v", err)
	}
}
