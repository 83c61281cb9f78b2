package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// behind is how many blocks the stopped validator misses: what a few minutes down costs at the
// default pace. With four validators on one host blocks come about every 150 ms under load
// (../shared/ENVIRONMENT.md), so 600 blocks are 90 s with all four up; with one of four down,
// every fourth height waits out the missing proposer's timeout_propose and timeout_precommit
// (1 s each), about 0.65 s a block, so 600 blocks are six and a half minutes, and an idle chain
// (one block a second) takes ten.
const behind = 600

// fastBlocks lowers a home's consensus timeouts and network delays so that the test's blocks
// come as fast as four in-process validators on two cores make them: empty blocks at once, a
// height whose proposer is down given up after tens of milliseconds instead of two seconds,
// and votes and block parts sent within milliseconds (the default gossip sleep of 100 ms and
// flush throttle of 10 ms hold blocks to about 200 ms and 70 ms here, whatever the timeouts).
// Measured with -race: about 55 ms a block with one of four down.
func fastBlocks(_ int, conf *cfg.Config) {
	c := conf.Consensus
	c.TimeoutCommit = 5 * time.Millisecond
	c.TimeoutPropose, c.TimeoutProposeDelta = 50*time.Millisecond, 10*time.Millisecond
	c.TimeoutPrevote, c.TimeoutPrevoteDelta = 20*time.Millisecond, 10*time.Millisecond
	c.TimeoutPrecommit, c.TimeoutPrecommitDelta = 20*time.Millisecond, 10*time.Millisecond
	c.CreateEmptyBlocksInterval = 0
	c.PeerGossipSleepDuration = 2 * time.Millisecond
	conf.P2P.FlushThrottleTimeout = 2 * time.Millisecond
}

// syncLog records, once armed, the heights at which CometBFT's block sync handed over to
// consensus ("Time to switch to consensus reactor!") and the ones its progress reports name.
// The Testnet's validators share one logger: arming it right before one validator restarts,
// when the others have long left block sync, attributes what follows to that validator.
type syncLog struct {
	mu       sync.Mutex
	armed    bool
	switched []int64
	progress []string
}

func (l *syncLog) arm() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed = true
}

// switchedAt is the first height block sync handed over at since arm.
func (l *syncLog) switchedAt() (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.switched) == 0 {
		return 0, false
	}
	return l.switched[0], true
}

func (l *syncLog) record(r slog.Record) {
	const switchMsg, rateMsg = "Time to switch to consensus reactor!", "Block Sync Rate"
	if r.Message != switchMsg && r.Message != rateMsg {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.armed {
		return
	}
	var height int64 = -1
	var kv string
	r.Attrs(func(a slog.Attr) bool {
		if v := a.Value.Resolve(); a.Key == "height" && v.Kind() == slog.KindInt64 {
			height = v.Int64()
		}
		kv += " " + a.String()
		return true
	})
	if r.Message == switchMsg {
		l.switched = append(l.switched, height)
		return
	}
	l.progress = append(l.progress, kv)
}

// syncHandler is the slog.Handler that feeds a syncLog and discards everything else.
type syncHandler struct{ log *syncLog }

func (h syncHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h syncHandler) Handle(_ context.Context, r slog.Record) error {
	h.log.record(r)
	return nil
}
func (h syncHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h syncHandler) WithGroup(string) slog.Handler      { return h }

// signedBy reports how validator addr's signature stands in the commit of lb.
func signedBy(lb *types.LightBlock, addr types.Address) (types.BlockIDFlag, error) {
	idx, _ := lb.ValidatorSet.GetByAddress(addr)
	if idx < 0 || int(idx) >= len(lb.Commit.Signatures) {
		return 0, fmt.Errorf("validator %s is not in the set at %d", addr, lb.Height)
	}
	return lb.Commit.Signatures[idx].BlockIDFlag, nil
}

// TestCatchUpAfterLongDowntime stops one of four validators while the others commit `behind`
// blocks and register entries, then starts it again: it catches up from its peers (block sync),
// holds every entry committed while it was down, and signs commits again.
func TestCatchUpAfterLongDowntime(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	adminPub, admin, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sl := &syncLog{}
	tn, err := StartTestnetWith(ctx, Network{Dir: t.TempDir() + "/net", ChainID: "catchup-test", Validators: 4,
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
	doc, err := types.GenesisDocFromFile(tn.Validators[3].Home + "/config/genesis.json")
	if err != nil {
		t.Fatal(err)
	}
	addr3 := doc.Validators[3].Address // genesis lists the validators in node order
	c0 := tn.Node(0).Client()

	// node3 goes down; the other three commit `behind` blocks without it, with an admin's
	// register entry every behind/entries blocks.
	if err := tn.Stop(3); err != nil {
		t.Fatal(err)
	}
	downAt, err := c0.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const entries = 12
	regs := make([][]byte, entries)
	receipts := make([]ledger.Receipt, entries)
	for k := range regs {
		key, err := reading.GenerateKey(reading.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		if regs[k], err = entry.NewRegister(admin, "dev-"+strconv.Itoa(k), key.Public(), time.Now()); err != nil {
			t.Fatal(err)
		}
		if receipts[k], err = c0.Submit(ctx, regs[k]); err != nil {
			t.Fatal(err)
		}
		if err := c0.WaitHeight(ctx, downAt+int64(k+1)*behind/entries); err != nil {
			t.Fatal(err)
		}
	}
	// The gap is real: a block committed meanwhile lacks node3's signature.
	lb, err := c0.LightBlock(ctx, receipts[entries-1].Height)
	if err != nil {
		t.Fatal(err)
	}
	if flag, err := signedBy(lb, addr3); err != nil || flag != types.BlockIDFlagAbsent {
		t.Fatalf("node3 down: its signature at %d is %v (%v), want absent", lb.Height, flag, err)
	}

	// node3 returns, `behind` blocks or more behind the others.
	target, err := c0.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if target-downAt < behind {
		t.Fatalf("node3 down from %d to %d: %d blocks behind, want %d", downAt, target, target-downAt, behind)
	}
	sl.arm()
	restarted := time.Now()
	if err := tn.Start(ctx, 3); err != nil {
		t.Fatal(err)
	}
	c3 := tn.Node(3).Client()
	// It reaches the height the others had when it returned; the block after is the sign that
	// its app has applied that one (the block store is written first).
	if err := c3.WaitHeight(ctx, target+1); err != nil {
		t.Fatal(err)
	}
	caughtUp := time.Since(restarted)
	for k, e := range regs {
		got, err := c3.Lookup(ctx, e)
		if err != nil {
			t.Fatalf("node3 after catching up: entry %d (committed at %d): %v", k, receipts[k].Height, err)
		}
		if got.LogIndex != receipts[k].LogIndex || got.Height != receipts[k].Height {
			t.Fatalf("node3: entry %d at log index %d, height %d; node0 committed it at %d, %d",
				k, got.LogIndex, got.Height, receipts[k].LogIndex, receipts[k].Height)
		}
	}

	// Block sync caught it up: it handed over to consensus only once it was at most a block
	// short of its peers' height, which was at least target when they first told it.
	await.Until(t, ctx, "node3 leaves block sync", func() (bool, string) {
		_, ok := sl.switchedAt()
		return ok, "no \"Time to switch to consensus reactor!\" from node3's block sync"
	})
	switched, _ := sl.switchedAt()
	if switched < target-1 {
		t.Fatalf("node3's block sync handed over at height %d, the others were at %d: consensus, not block sync, caught it up", switched, target)
	}
	sl.mu.Lock()
	t.Logf("node3 down at %d, restarted %d blocks behind (others at %d), at their height %v later; block sync fetched up to %d, then consensus; block sync's progress:%v",
		downAt, target-downAt, target, caughtUp.Round(time.Millisecond), switched, sl.progress)
	sl.mu.Unlock()

	// And it signs again: a commit after the handover carries its signature.
	await.Until(t, ctx, "a commit signed by node3", func() (bool, string) {
		h, err := c0.Height(ctx)
		if err != nil {
			return false, err.Error()
		}
		lb, err := c0.LightBlock(ctx, max(switched+1, h-1))
		if err != nil {
			return false, err.Error()
		}
		flag, err := signedBy(lb, addr3)
		if err != nil {
			return false, err.Error()
		}
		return flag == types.BlockIDFlagCommit, fmt.Sprintf("node3's signature at %d: %v", lb.Height, flag)
	})
}
