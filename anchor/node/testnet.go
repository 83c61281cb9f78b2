package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	cfg "github.com/cometbft/cometbft/config"

	"github.com/anchorline/anchorline/internal/retry"
)

// Testnet runs the validators of one network in this process, on loopback, each from the home
// InitNetwork wrote, so that tests and benchmarks can stop and start them one at a time as
// separate processes would be. A validator keeps its P2P and RPC addresses across a stop and a
// start: while it is stopped, the Testnet holds both ports with a listener that closes every
// connection at once (what a host answers for a process that has gone, so peers and clients
// fail over instead of waiting), and gives them up right before the validator starts again.
//
// A Testnet is safe for concurrent use.
type Testnet struct {
	Validators []Validator // as InitNetwork wrote them; RPCAddr is where the RPC listens

	log   *slog.Logger
	mu    sync.Mutex
	nodes []*Node  // nil while stopped
	holds [][]hold // a stopped validator's held ports (P2P, RPC)
}

// ErrPortTaken means a stopped validator's port was taken by another process while it was
// not held (a test machine running other tests): the validator cannot start on it again.
var ErrPortTaken = errors.New("testnet: a validator's port was taken")

// StartTestnet writes the homes of network n with InitNetwork on 127.0.0.1, with P2P and RPC
// ports it found free and holds, starts every validator and returns once each has committed a
// block. n.Hosts, n.P2PPort and n.RPCPort must be left zero (the Testnet chooses them); the
// rest of n is as InitNetwork takes it. Close stops the validators again.
func StartTestnet(ctx context.Context, n Network, log *slog.Logger) (*Testnet, error) {
	return StartTestnetWith(ctx, n, TestnetOptions{Log: log})
}

// TestnetOptions are what StartTestnetWith takes beyond the network.
type TestnetOptions struct {
	Log *slog.Logger // nil: slog.Default()
	// Configure, if set, edits validator i's config as InitNetwork wrote it, before the
	// validator first starts; the result is its home's config.toml, kept across restarts (a
	// test's faster consensus timeouts, say). Addresses and peers are the Testnet's: leave
	// them.
	Configure func(i int, conf *cfg.Config)
}

// StartTestnetWith is StartTestnet with options.
func StartTestnetWith(ctx context.Context, n Network, o TestnetOptions) (*Testnet, error) {
	log := o.Log
	if len(n.Hosts) > 0 || n.P2PPort != 0 || n.RPCPort != 0 {
		return nil, fmt.Errorf("testnet: %w: hosts and ports are the testnet's own", ErrInvalidNetwork)
	}
	if n.Validators < 1 {
		return nil, fmt.Errorf("testnet: %w: %d validators", ErrInvalidNetwork, n.Validators)
	}
	if log == nil {
		log = slog.Default()
	}
	p2pBase, p2pHolds, err := holdRun(n.Validators)
	if err != nil {
		return nil, err
	}
	tn := &Testnet{log: log, nodes: make([]*Node, n.Validators), holds: make([][]hold, n.Validators)}
	for i, h := range p2pHolds {
		tn.holds[i] = []hold{h}
	}
	n.Hosts, n.P2PPort, n.RPCPort = []string{"127.0.0.1"}, p2pBase, -1
	if tn.Validators, err = InitNetwork(n); err != nil {
		return nil, errors.Join(err, tn.Close())
	}
	for i := range tn.Validators {
		rpc, err := newHold("127.0.0.1:0")
		if err != nil {
			return nil, errors.Join(err, tn.Close())
		}
		tn.Validators[i].RPCAddr = rpc.Addr().String()
		tn.holds[i] = append(tn.holds[i], rpc)
		if o.Configure != nil {
			if err := configure(tn.Validators[i].Home, func(conf *cfg.Config) { o.Configure(i, conf) }); err != nil {
				return nil, errors.Join(err, tn.Close())
			}
		}
	}
	for i := range tn.Validators {
		if err := tn.Start(ctx, i); err != nil {
			return nil, errors.Join(err, tn.Close())
		}
	}
	if err := tn.awaitBlocks(ctx); err != nil {
		return nil, errors.Join(err, tn.Close())
	}
	return tn, nil
}

// configure rewrites a home's config.toml with edit applied.
func configure(home string, edit func(*cfg.Config)) error {
	conf, err := LoadConfig(home)
	if err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	edit(conf)
	if err := conf.ValidateBasic(); err != nil {
		return fmt.Errorf("testnet: %s: configured: %w", home, err)
	}
	return writeConfig(conf)
}

// awaitBlocks waits until every validator has left block sync and committed a first block:
// before that, a node answers that it is catching up, and clients do not use it.
func (tn *Testnet) awaitBlocks(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := range tn.Validators {
		for {
			st, err := tn.Node(i).RPC().Status(ctx)
			if err == nil && !st.SyncInfo.CatchingUp && st.SyncInfo.LatestBlockHeight >= 1 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("testnet: node%d makes no blocks (%v): %w", i, err, context.Cause(ctx))
			case <-tick.C:
			}
		}
	}
	return nil
}

// RPCAddrs are the validators' RPC addresses (host:port), in validator order: what ledger.rpc
// lists for a client of the network.
func (tn *Testnet) RPCAddrs() []string {
	addrs := make([]string, len(tn.Validators))
	for i, v := range tn.Validators {
		addrs[i] = v.RPCAddr
	}
	return addrs
}

// Node is validator i while it runs, nil while it is stopped.
func (tn *Testnet) Node(i int) *Node {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.nodes[i]
}

// Start starts validator i (stopped: nothing to do if it runs) from its home, on its P2P and
// RPC addresses. It retries for a while if something else bound one of them in the instant
// between the hold's release and the node's listen, and fails with ErrPortTaken if that
// does not pass.
func (tn *Testnet) Start(ctx context.Context, i int) error {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.nodes[i] != nil {
		return nil
	}
	for _, h := range tn.holds[i] {
		h.Close()
	}
	tn.holds[i] = nil
	v := tn.Validators[i]
	n, err := retry.Do(ctx, retry.Within(10*time.Second), func(ctx context.Context) (*Node, error) {
		ln, err := net.Listen("tcp", v.RPCAddr)
		if err != nil {
			return nil, fmt.Errorf("%w: rpc %s: %w", ErrPortTaken, v.RPCAddr, err)
		}
		n, err := StartHome(ctx, v.Home, HomeOptions{RPC: ln, Logger: tn.log})
		if err != nil && !errors.Is(err, syscall.EADDRINUSE) {
			return nil, retry.Permanent(err)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: p2p %s: %w", ErrPortTaken, v.P2PAddr, err)
		}
		return n, nil
	}, nil)
	if err != nil {
		return fmt.Errorf("testnet: start node%d: %w", i, err)
	}
	tn.nodes[i] = n
	return nil
}

// Stop stops validator i (nothing to do if it is stopped) and holds its ports until it starts
// again.
func (tn *Testnet) Stop(i int) error {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	n := tn.nodes[i]
	if n == nil {
		return nil
	}
	tn.nodes[i] = nil
	err := n.Stop()
	for _, addr := range []string{tn.Validators[i].P2PAddr, tn.Validators[i].RPCAddr} {
		// A port that cannot be held now is tried again by Start.
		if h, herr := newHold(addr); herr == nil {
			tn.holds[i] = append(tn.holds[i], h)
		}
	}
	if err != nil {
		return fmt.Errorf("testnet: stop node%d: %w", i, err)
	}
	return nil
}

// Close stops every validator and releases every port.
func (tn *Testnet) Close() error {
	var errs []error
	for i := range tn.nodes {
		errs = append(errs, tn.Stop(i))
	}
	tn.mu.Lock()
	defer tn.mu.Unlock()
	for i, hs := range tn.holds {
		for _, h := range hs {
			h.Close()
		}
		tn.holds[i] = nil
	}
	return errors.Join(errs...)
}

// hold keeps a port taken: it accepts connections and closes them at once.
type hold struct {
	net.Listener
	done chan struct{}
}

func newHold(addr string) (hold, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return hold{}, err
	}
	h := hold{Listener: ln, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return h, nil
}

// Close releases the port once the accept loop has returned.
func (h hold) Close() {
	h.Listener.Close()
	<-h.done
}

// holdRun holds n loopback ports PortStride apart (InitNetwork's P2P ports of n validators on
// one host) and returns the first.
func holdRun(n int) (int, []hold, error) {
	for range 20 {
		first, err := newHold("127.0.0.1:0")
		if err != nil {
			return 0, nil, fmt.Errorf("testnet: %w", err)
		}
		ap, err := netip.ParseAddrPort(first.Addr().String())
		if err != nil {
			first.Close()
			return 0, nil, fmt.Errorf("testnet: %w", err)
		}
		base := int(ap.Port())
		holds := []hold{first}
		for i := 1; i < n; i++ {
			h, err := newHold(net.JoinHostPort("127.0.0.1", strconv.Itoa(base+PortStride*i)))
			if err != nil {
				break
			}
			holds = append(holds, h)
		}
		if len(holds) == n {
			return base, holds, nil
		}
		for _, h := range holds {
			h.Close()
		}
	}
	return 0, nil, fmt.Errorf("testnet: %w: no run of %d free loopback ports %d apart", ErrPortTaken, n, PortStride)
}
