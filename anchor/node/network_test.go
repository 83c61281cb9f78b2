package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
)

// network is validators run in-process from the homes InitNetwork wrote. P2P addresses must
// be in config.toml before a node starts (CometBFT binds them itself and peers dial them), so
// the test holds a listener on each validator's P2P port whenever that validator is not
// running, closes it right before the validator starts, and starts again (internal/retry)
// if something else took the port in between. RPC addresses are port 0 in config.toml
// (RPCPort -1): StartHome listens on any free port.
type network struct {
	t     *testing.T
	vals  []Validator
	addrs []types.Address // validator addresses, by node index
	nodes []*Node         // nil while stopped
	holds []net.Listener  // the held P2P port of a stopped validator
	log   *slog.Logger
}

// holdPorts listens on n loopback ports PortStride apart and returns the first port.
func holdPorts(t *testing.T, n int) (int, []net.Listener) {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := first.Addr().(*net.TCPAddr).Port
		holds := []net.Listener{first}
		for i := 1; i < n; i++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+PortStride*i)))
			if err != nil {
				break
			}
			holds = append(holds, l)
		}
		if len(holds) == n {
			return base, holds
		}
		for _, l := range holds {
			l.Close()
		}
	}
	t.Fatal("no run of free loopback ports")
	return 0, nil
}

func startNetwork(t *testing.T, n int, admins []ed25519.PublicKey) *network {
	t.Helper()
	base, holds := holdPorts(t, n)
	vals, err := InitNetwork(Network{Dir: t.TempDir() + "/net", ChainID: "net-test", Validators: n,
		P2PPort: base, RPCPort: -1, Admins: admins})
	if err != nil {
		t.Fatal(err)
	}
	nw := &network{t: t, vals: vals, nodes: make([]*Node, n), holds: holds,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	doc, err := types.GenesisDocFromFile(vals[0].Home + "/config/genesis.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range doc.Validators { // in node order
		nw.addrs = append(nw.addrs, v.Address)
	}
	t.Cleanup(func() {
		for i := range nw.nodes {
			nw.stop(i)
		}
		for _, l := range nw.holds {
			if l != nil {
				l.Close()
			}
		}
	})
	for i := range n {
		nw.start(i)
	}
	return nw
}

// start starts validator i from its home, giving up its held P2P port just before.
func (nw *network) start(i int) {
	nw.t.Helper()
	if nw.holds[i] != nil {
		nw.holds[i].Close()
		nw.holds[i] = nil
	}
	n, err := retry.Do(nw.t.Context(), retry.Within(10*time.Second), func(ctx context.Context) (*Node, error) {
		n, err := StartHome(ctx, nw.vals[i].Home, HomeOptions{Logger: nw.log})
		if err != nil && !errors.Is(err, syscall.EADDRINUSE) {
			return nil, retry.Permanent(err)
		}
		return n, err
	}, nil)
	if err != nil {
		nw.t.Fatalf("start node%d: %v", i, err)
	}
	nw.nodes[i] = n
}

// stop stops validator i and holds its P2P port until it starts again.
func (nw *network) stop(i int) {
	nw.t.Helper()
	if nw.nodes[i] == nil {
		return
	}
	if err := nw.nodes[i].Stop(); err != nil {
		nw.t.Errorf("stop node%d: %v", i, err)
	}
	nw.nodes[i] = nil
	if l, err := net.Listen("tcp", nw.vals[i].P2PAddr); err == nil {
		nw.holds[i] = l
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
	c0 := nw.nodes[0].Client()
	// From here on node0 records every vote it sees: the heights after the one in progress
	// now are seen whole, which (3) relies on.
	votes := watchVotes(t, nw.nodes[0])
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
	for i, n := range nw.nodes {
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
	hc, err := rpchttp.New("tcp://"+nw.nodes[1].RPCAddr(), "/websocket")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := ledger.NewClient(hc, nw.log).ChainID(ctx); err != nil || id != "net-test" {
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
		if h, err := nw.nodes[i].Client().Height(ctx); err != nil || h != stalledAt {
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
	c3 := nw.nodes[3].Client()
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
