package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// network is the Testnet of this test, with the validators' addresses in node order.
type network struct {
	t     *testing.T
	tn    *Testnet
	addrs []types.Address // validator addresses, by node index
}

func startNetwork(t *testing.T, n int, admins []ed25519.PublicKey) *network {
	t.Helper()
	tn, err := StartTestnet(t.Context(), Network{Dir: t.TempDir() + "/net", ChainID: "net-test", Validators: n, Admins: admins},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tn.Close() })
	doc, err := types.GenesisDocFromFile(tn.Validators[0].Home + "/config/genesis.json")
	if err != nil {
		t.Fatal(err)
	}
	nw := &network{t: t, tn: tn}
	for _, v := range doc.Validators { // in node order
		nw.addrs = append(nw.addrs, v.Address)
	}
	return nw
}

// node is validator i's node (nil while it is stopped).
func (nw *network) node(i int) *Node { return nw.tn.Node(i) }

func (nw *network) start(i int) {
	nw.t.Helper()
	if err := nw.tn.Start(nw.t.Context(), i); err != nil {
		nw.t.Fatalf("start node%d: %v", i, err)
	}
}

func (nw *network) stop(i int) {
	nw.t.Helper()
	if err := nw.tn.Stop(i); err != nil {
		nw.t.Errorf("stop node%d: %v", i, err)
	}
}

// votes records the votes a node's consensus state adds (its own and its peers'), from its
// event bus.
type votes struct {
	mu   sync.Mutex
	seen map[voteKey]types.BlockID
}

type voteKey struct {
	height int64
	round  int32
	typ    cmtproto.SignedMsgType
	index  int32
}

func watchVotes(t *testing.T, n *Node) *votes {
	t.Helper()
	sub, err := n.node.EventBus().Subscribe(t.Context(), "network-test", types.EventQueryVote, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	v := &votes{seen: map[voteKey]types.BlockID{}}
	go func() {
		for {
			select {
			case <-sub.Canceled():
				return
			case msg := <-sub.Out():
				if ev, ok := msg.Data().(types.EventDataVote); ok {
					v.mu.Lock()
					v.seen[voteKey{ev.Vote.Height, ev.Vote.Round, ev.Vote.Type, ev.Vote.ValidatorIndex}] = ev.Vote.BlockID
					v.mu.Unlock()
				}
			}
		}
	}()
	return v
}

// stuck reports whether, at height h, the live validators (by index in the validator set)
// have all cast their votes of some round and those votes cannot reach a quorum (3 of 4 equal
// powers): either the prevotes of the round lack 2/3 of any kind, so that nobody may
// precommit, or everyone live has precommitted and no block has 2/3. Without another
// validator's vote nothing more can happen at h: this is the event "the blocks would have come
// by now" stated without a clock.
func (v *votes) stuck(h int64, live []int32, quorum int) (bool, string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for r := int32(0); r < 100; r++ {
		for _, typ := range []cmtproto.SignedMsgType{cmtproto.PrevoteType, cmtproto.PrecommitType} {
			all, perBlock := 0, map[string]int{}
			for k, id := range v.seen {
				if k.height == h && k.round == r && k.typ == typ {
					all++
					perBlock[id.Key()]++
				}
			}
			voted := true
			for _, i := range live {
				_, ok := v.seen[voteKey{h, r, typ, i}]
				voted = voted && ok
			}
			if !voted {
				continue
			}
			if typ == cmtproto.PrevoteType && all < quorum {
				return true, ""
			}
			if typ == cmtproto.PrecommitType && maxCount(perBlock) < quorum {
				return true, ""
			}
		}
	}
	return false, fmt.Sprintf("no round at height %d where every live validator voted without a quorum", h)
}

func maxCount(m map[string]int) int {
	best := 0
	for _, n := range m {
		best = max(best, n)
	}
	return best
}

func (nw *network) index(lb *types.LightBlock, node int) int32 {
	idx, _ := lb.ValidatorSet.GetByAddress(nw.addrs[node])
	if idx < 0 {
		nw.t.Fatalf("node%d is not in the validator set", node)
	}
	return idx
}

func TestNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	adminPub, admin, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nw := startNetwork(t, 4, []ed25519.PublicKey{adminPub})
	c0 := nw.node(0).Client()
	// From here on node0 records every vote it sees: the heights after the one in progress
	// now are seen whole, which (3) relies on.
	votes := watchVotes(t, nw.node(0))
	register := func(id string) []byte {
		key, err := reading.GenerateKey(reading.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		e, err := entry.NewRegister(admin, id, key.Public(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	// (1) An admin's register entry commits, and every validator has it.
	reg := register("dev-1")
	rc, err := c0.Submit(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range nw.tn.Validators {
		n := nw.node(i)
		// The block store is written before the app applies the block: the next block is the
		// sign that rc.Height is applied.
		if err := n.Client().WaitHeight(ctx, rc.Height+1); err != nil {
			t.Fatal(err)
		}
		if got, err := n.Client().Lookup(ctx, reg); err != nil || got.LogIndex != rc.LogIndex || got.Height != rc.Height {
			t.Fatalf("node%d: %+v %v, want %+v", i, got, err, rc)
		}
	}
	// The RPC listens where config.toml says (port 0 there): a client over HTTP reads the chain.
	hc, err := rpchttp.New("tcp://"+nw.node(1).RPCAddr(), "/websocket")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := ledger.NewClient(hc, slog.New(slog.NewTextHandler(io.Discard, nil))).ChainID(ctx); err != nil || id != "net-test" {
		t.Fatalf("chain id over HTTP: %q %v", id, err)
	}

	// (2) With node3 stopped, entries still commit, under three signatures.
	nw.stop(3)
	anchor := anchorEntry(t, 1)
	rc2, err := c0.Submit(ctx, anchor)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := c0.LightBlock(ctx, rc2.Height)
	if err != nil {
		t.Fatal(err)
	}
	if err := lb.ValidatorSet.VerifyCommitLight(lb.ChainID, lb.Commit.BlockID, lb.Height, lb.Commit); err != nil {
		t.Fatalf("commit at %d: %v", lb.Height, err)
	}
	signed := 0
	for _, s := range lb.Commit.Signatures {
		if s.BlockIDFlag == types.BlockIDFlagCommit {
			signed++
		}
	}
	if down := lb.Commit.Signatures[nw.index(lb, 3)]; signed != 3 || down.BlockIDFlag != types.BlockIDFlagAbsent {
		t.Fatalf("commit at %d: %d signatures, node3's %v; want 3, node3 absent", lb.Height, signed, down.BlockIDFlag)
	}

	// (3) With node2 stopped too, nothing commits: once node0 and node1 have voted at the next
	// height without a quorum, the entry is still pending; when node2 returns, it commits.
	nw.stop(2)
	pending := anchorEntry(t, 2)
	type result struct {
		rc  ledger.Receipt
		err error
	}
	done := make(chan result, 1)
	go func() {
		rc, err := c0.Submit(ctx, pending)
		done <- result{rc, err}
	}()
	live := []int32{nw.index(lb, 0), nw.index(lb, 1)}
	var stalledAt int64
	await.Until(t, ctx, "node0 and node1 vote without a quorum", func() (bool, string) {
		h, err := c0.Height(ctx)
		if err != nil {
			return false, err.Error()
		}
		stalledAt = h
		return votes.stuck(h+1, live, 3)
	})
	select {
	case r := <-done:
		t.Fatalf("with two of four validators down, an entry committed: %+v %v", r.rc, r.err)
	default:
	}
	for _, i := range []int{0, 1} {
		if h, err := nw.node(i).Client().Height(ctx); err != nil || h != stalledAt {
			t.Fatalf("node%d at height %d (%v) while two are down, want %d", i, h, err, stalledAt)
		}
	}
	nw.start(2)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.rc.Height <= stalledAt {
		t.Fatalf("pending entry committed at %d, not after the stall at %d", r.rc.Height, stalledAt)
	}

	// (4) node3, down since (2), catches up from its peers.
	target, err := c0.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nw.start(3)
	c3 := nw.node(3).Client()
	if err := c3.WaitHeight(ctx, target+1); err != nil {
		t.Fatal(err)
	}
	for _, e := range [][]byte{anchor, pending} {
		if _, err := c3.Lookup(ctx, e); err != nil {
			t.Fatalf("node3 after catching up: %v", err)
		}
	}
	// And it signs again: a new entry commits with its signature.
	rc4, err := c3.Submit(ctx, register("dev-2"))
	if err != nil {
		t.Fatal(err)
	}
	await.Until(t, ctx, "a commit signed by node3", func() (bool, string) {
		h, err := c0.Height(ctx)
		if err != nil {
			return false, err.Error()
		}
		lb, err := c0.LightBlock(ctx, max(rc4.Height, h-1))
		if err != nil {
			return false, err.Error()
		}
		flag := lb.Commit.Signatures[nw.index(lb, 3)].BlockIDFlag
		return flag == types.BlockIDFlagCommit, fmt.Sprintf("node3's flag at %d: %v", lb.Height, flag)
	})
}
