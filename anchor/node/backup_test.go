package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cmtjson "github.com/cometbft/cometbft/libs/json"
	"github.com/cometbft/cometbft/privval"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/dircopy"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// The files of a validator home that change as it signs and commits (InitNetwork's layout:
// CometBFT's config/ and data/, the ledger's app/).
const (
	stateFile = "data/priv_validator_state.json" // the last height, round and step it signed
	keyFile   = "config/priv_validator_key.json"
)

// signState reads a priv_validator_state.json.
func signState(file string) (privval.FilePVLastSignState, []byte, error) {
	var s privval.FilePVLastSignState
	b, err := os.ReadFile(file)
	if err != nil {
		return s, nil, err
	}
	if err := cmtjson.Unmarshal(b, &s); err != nil {
		return s, nil, fmt.Errorf("%s: %w", file, err)
	}
	return s, b, nil
}

// after reports whether a is a later height, round and step than b.
func after(a, b privval.FilePVLastSignState) bool {
	if a.Height != b.Height {
		return a.Height > b.Height
	}
	if a.Round != b.Round {
		return a.Round > b.Round
	}
	return a.Step > b.Step
}

// restoreHome makes home the backup again: home must be gone (the loss) or empty. survived is
// the validator's priv_validator_state.json as it was at the loss, if that file survived (nil if
// it was lost too): of it and the backup's, the later one is kept, so that the restored
// validator remembers the last thing it signed.
func restoreHome(backup, home string, survived []byte) error {
	if err := dircopy.Tree(home, backup); err != nil {
		return fmt.Errorf("restore %s: %w", home, err)
	}
	if survived == nil {
		return nil
	}
	var kept privval.FilePVLastSignState
	if err := cmtjson.Unmarshal(survived, &kept); err != nil {
		return fmt.Errorf("restore %s: the surviving %s: %w", home, stateFile, err)
	}
	old, _, err := signState(filepath.Join(home, stateFile))
	if err != nil {
		return fmt.Errorf("restore %s: %w", home, err)
	}
	if !after(kept, old) {
		return nil
	}
	return os.WriteFile(filepath.Join(home, stateFile), survived, 0o600)
}

// rearm forgets what the syncLog recorded, for the next restart.
func (l *syncLog) rearm() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed, l.switched, l.progress = true, nil, nil
}

// signConflicting signs, with the validator key of home and the sign state in state, a
// precommit for another block at the height and round of lb's commit, as the validator of
// index idx. It works on copies of the two files: the real ones do not change.
func signConflicting(t *testing.T, home string, state []byte, lb *types.LightBlock, idx int32) (*types.Vote, error) {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "key.json")
	st := filepath.Join(dir, "state.json")
	info, err := os.Stat(filepath.Join(home, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := dircopy.File(key, filepath.Join(home, keyFile), info.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st, state, 0o600); err != nil {
		t.Fatal(err)
	}
	pv := privval.LoadFilePV(key, st) // both exist and are well-formed: it does not exit
	other := types.BlockID{Hash: bytes.Repeat([]byte{0xee}, 32), PartSetHeader: types.PartSetHeader{Total: 1, Hash: bytes.Repeat([]byte{0xdd}, 32)}}
	if other.Equals(lb.Commit.BlockID) {
		t.Fatal("the conflicting block id is the committed one")
	}
	v := &cmtproto.Vote{Type: cmtproto.PrecommitType, Height: lb.Height, Round: lb.Commit.Round, BlockID: other.ToProto(),
		Timestamp: time.Now(), ValidatorAddress: pv.GetAddress(), ValidatorIndex: idx}
	if err := pv.SignVote(lb.ChainID, v); err != nil {
		return nil, err
	}
	return types.VoteFromProto(v)
}

// TestBackupValidatorHome backs up the home of one of four validators (stopped cleanly: the
// whole folder, config/ with node_key.json and priv_validator_key.json, data/ with the block
// store, state, consensus WAL and priv_validator_state.json, app/ with the ledger's state),
// lets it sign on, and then restores it twice after losing its home: once with its current
// priv_validator_state.json saved from the loss, once with that file lost too. Each time the
// restored validator catches up by block sync, holds every entry, computes the same app hash
// as the others, and signs commits again; no block carries evidence of double signing.
//
// The danger of a restore is the backup's priv_validator_state.json: it records the last
// height, round and step the validator had signed when the backup was taken. CometBFT's file
// signer refuses to sign below what its state file records, and only that: a validator
// restored with the backup's file would sign a second, conflicting vote at a height it signed
// after the backup, if it were asked to (the test shows that the backup's file signs such a
// vote, which with the vote it really cast makes DuplicateVoteEvidence, the proof of double
// signing that gets a validator slashed or removed; the current file refuses it). In a
// running network it is asked to only if it rejoins consensus at such a height. The safe
// procedure is therefore: keep the current priv_validator_state.json if it survived (restore
// the rest, put it back: its height is later than the backup's); if it was lost, start the
// restored validator only once the network's height is at least 4 more than it was when the
// validator went down (read from any other validator). The reason for 4: a validator that had
// committed block L last may have signed at L+1, and at least two of the others had
// precommitted L, so they had committed L-1 at least: it signed at most 2 above their height
// D. Block sync hands over to consensus one block short of its peers' height, so with the
// network at D+4 the restored validator joins consensus at D+3 or later, above every height it
// signed before, and its old state file is never asked about one of them.
func TestBackupValidatorHome(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	adminPub, admin, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sl := &syncLog{}
	tn, err := StartTestnetWith(ctx, Network{Dir: t.TempDir() + "/net", ChainID: "backup-test", Validators: 4,
		Admins: []ed25519.PublicKey{adminPub}},
		TestnetOptions{Log: slog.New(syncHandler{sl}), Configure: fastBlocks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tn.Close(); err != nil {
			t.Error(err)
		}
	})
	const k = 3 // the validator that is backed up and restored
	home := tn.Validators[k].Home
	doc, err := types.GenesisDocFromFile(filepath.Join(home, "config", "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	addr := doc.Validators[k].Address // genesis lists the validators in node order
	c0 := tn.Node(0).Client()

	// Entries committed so far, all of which the restored validator must hold.
	var entries [][]byte
	var receipts []ledger.Receipt
	submit := func(n int) {
		t.Helper()
		for range n {
			key, err := reading.GenerateKey(reading.Ed25519)
			if err != nil {
				t.Fatal(err)
			}
			e, err := entry.NewRegister(admin, "dev-"+strconv.Itoa(len(entries)), key.Public(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			rc, err := c0.Submit(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			entries, receipts = append(entries, e), append(receipts, rc)
		}
	}
	// signedAfter waits for a commit after height h that carries validator k's signature, and
	// returns its light block.
	signedAfter := func(what string, h int64) *types.LightBlock {
		t.Helper()
		var signed *types.LightBlock
		await.Until(t, ctx, what, func() (bool, string) {
			top, err := c0.Height(ctx)
			if err != nil {
				return false, err.Error()
			}
			lb, err := c0.LightBlock(ctx, max(h+1, top-1))
			if err != nil {
				return false, err.Error()
			}
			flag, err := signedBy(lb, addr)
			if err != nil {
				return false, err.Error()
			}
			signed = lb
			return flag == types.BlockIDFlagCommit, fmt.Sprintf("node%d's signature at %d: %v", k, lb.Height, flag)
		})
		return signed
	}
	// rejoin starts validator k from its restored home and checks that it catches up by block
	// sync, holds every entry, has the others' app hash and signs again; it returns the
	// height at which block sync handed over to consensus (the first height it may sign at).
	rejoin := func(what string) int64 {
		t.Helper()
		sl.rearm()
		started := time.Now()
		if err := tn.Start(ctx, k); err != nil {
			t.Fatal(err)
		}
		target, err := c0.Height(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ck := tn.Node(k).Client()
		// The block after target is the sign that its app has applied target.
		if err := ck.WaitHeight(ctx, target+1); err != nil {
			t.Fatal(err)
		}
		caughtUp := time.Since(started)
		await.Until(t, ctx, what+": node leaves block sync", func() (bool, string) {
			_, ok := sl.switchedAt()
			return ok, "no \"Time to switch to consensus reactor!\" since the start"
		})
		switched, _ := sl.switchedAt()
		if switched < target-1 {
			t.Fatalf("%s: block sync handed over at %d, the others were at %d: it did not catch up by block sync", what, switched, target)
		}
		// Its own app, replaying the blocks it fetched, computed the app hash the others
		// committed to (checkState holds each against the signed header of the next block).
		stK, st0 := checkState(t, ctx, ck, target), checkState(t, ctx, c0, target)
		if stK.AppHash != st0.AppHash || stK.LogSize != st0.LogSize || stK.RegistryRoot != st0.RegistryRoot {
			t.Fatalf("%s: at height %d node%d has app hash %x (log size %d), node0 %x (log size %d)", what, target, k, stK.AppHash, stK.LogSize, st0.AppHash, st0.LogSize)
		}
		for i, e := range entries {
			got, err := ck.Lookup(ctx, e)
			if err != nil || got.LogIndex != receipts[i].LogIndex || got.Height != receipts[i].Height {
				t.Fatalf("%s: entry %d: node%d has %+v (%v), committed %+v", what, i, k, got, err, receipts[i])
			}
		}
		lb := signedAfter(what+": a commit signed by the restored validator", switched)
		t.Logf("%s: at the others' height %d after %v (block sync to %d), app hash %x at %d on both, signs again at %d",
			what, target, caughtUp.Round(time.Millisecond), switched, stK.AppHash[:8], target, lb.Height)
		return switched
	}
	stop := func() {
		t.Helper()
		if err := tn.Stop(k); err != nil {
			t.Fatal(err)
		}
	}

	// The network has app state: registered devices.
	submit(3)

	// The backup: validator k stopped cleanly, its home copied whole, started again.
	stop()
	backup := filepath.Join(t.TempDir(), "node"+strconv.Itoa(k))
	if err := dircopy.Tree(backup, home); err != nil {
		t.Fatal(err)
	}
	backupState, backupStateBytes, err := signState(filepath.Join(backup, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.Start(ctx, k); err != nil {
		t.Fatal(err)
	}

	// It signs on after the backup: its state file moves past the backup's.
	submit(3)
	signed := signedAfter("a commit signed after the backup", backupState.Height)

	// (1) The home is lost, its priv_validator_state.json saved (what the signer wrote last).
	stop()
	lost, lostBytes, err := signState(filepath.Join(home, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !after(lost, backupState) || lost.Height < signed.Height {
		t.Fatalf("state at the loss %d/%d/%d, backup's %d/%d/%d, signed a commit at %d: want the loss's later than both",
			lost.Height, lost.Round, lost.Step, backupState.Height, backupState.Round, backupState.Step, signed.Height)
	}
	// The danger: the backup's state file lets the key sign a conflicting precommit at a
	// height the validator signed after the backup; with the precommit it really cast there it
	// is evidence of double signing. The current state file refuses.
	idx, val := signed.ValidatorSet.GetByAddress(addr)
	cast := signed.Commit.GetVote(idx)
	if err := cast.Verify(signed.ChainID, val.PubKey); err != nil {
		t.Fatalf("node%d's precommit at %d: %v", k, signed.Height, err)
	}
	conflicting, err := signConflicting(t, home, backupStateBytes, signed, idx)
	if err != nil {
		t.Fatalf("the backup's state file (height %d) refused to sign at %d: %v", backupState.Height, signed.Height, err)
	}
	if err := conflicting.Verify(signed.ChainID, val.PubKey); err != nil {
		t.Fatal(err)
	}
	ev, err := types.NewDuplicateVoteEvidence(cast, conflicting, signed.Time, signed.ValidatorSet)
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.ValidateBasic(); err != nil {
		t.Fatalf("the two precommits at %d are not duplicate vote evidence: %v", signed.Height, err)
	}
	if _, err := signConflicting(t, home, lostBytes, signed, idx); err == nil || !strings.Contains(err.Error(), "regression") {
		t.Fatalf("the current state file (height %d) signed a conflicting precommit at %d: %v", lost.Height, signed.Height, err)
	}
	t.Logf("backup's state at height %d signs a second precommit at %d (%v); the state at the loss (height %d) refuses",
		backupState.Height, signed.Height, ev, lost.Height)

	// The restore keeps the later state file, and the validator may start at once.
	if err := os.RemoveAll(home); err != nil {
		t.Fatal(err)
	}
	if err := restoreHome(backup, home, lostBytes); err != nil {
		t.Fatal(err)
	}
	if got, _, err := signState(filepath.Join(home, stateFile)); err != nil || got.Height != lost.Height || got.Round != lost.Round || got.Step != lost.Step {
		t.Fatalf("restored state %+v (%v), want the one from the loss (height %d)", got, err, lost.Height)
	}
	rejoin("restored, state file kept")

	// (2) The home is lost with its state file. The operator knows the network's height when
	// it went down (any other validator's); the test also knows what the lost file said.
	submit(2)
	stop()
	var down int64
	for i := range tn.Validators {
		if i == k {
			continue
		}
		h, err := tn.Node(i).Client().Height(ctx)
		if err != nil {
			t.Fatal(err)
		}
		down = max(down, h)
	}
	lost, _, err = signState(filepath.Join(home, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if lost.Height > down+2 {
		t.Fatalf("validator signed at %d, the network was at %d when it went down: the bound of down+2 does not hold", lost.Height, down)
	}
	t.Logf("state file lost: the network was at %d when the validator went down; the lost file said %d", down, lost.Height)
	if err := os.RemoveAll(home); err != nil {
		t.Fatal(err)
	}
	if err := restoreHome(backup, home, nil); err != nil {
		t.Fatal(err)
	}
	// Wait until the network is far enough past every height it can have signed, then start it.
	if err := c0.WaitHeight(ctx, down+4); err != nil {
		t.Fatal(err)
	}
	switched := rejoin("restored, state file lost")
	if switched <= lost.Height {
		t.Fatalf("with the backup's state file (height %d) it joined consensus at %d, not above the %d it had signed", backupState.Height, switched, lost.Height)
	}
	now, _, err := signState(filepath.Join(home, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if now.Height < switched {
		t.Fatalf("state file at %d after signing again, want at or above %d", now.Height, switched)
	}

	// No block carries evidence of double signing.
	top, err := c0.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for h := int64(1); h <= top; h++ {
		b, err := tn.Node(0).RPC().Block(ctx, &h)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(b.Block.Evidence.Evidence); n > 0 {
			t.Fatalf("block %d carries %d pieces of evidence: %v", h, n, b.Block.Evidence.Evidence)
		}
	}
	t.Logf("blocks 1 to %d: no evidence; backup at %d, lost file at %d, joined consensus at %d", top, backupState.Height, lost.Height, switched)
}
