package ledger

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cometbft/cometbft/libs/bytes"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	coretypes "github.com/cometbft/cometbft/rpc/core/types"
	rpctypes "github.com/cometbft/cometbft/rpc/jsonrpc/types"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/internal/retry"
)

// ErrNoNode means that no ledger node answered a call. It comes as a *NodesError, which names
// each address tried and how it failed. Retry later: Client.Submit does.
var ErrNoNode = errors.New("ledger: no node answered")

// ErrCatchingUp means a node is still syncing blocks from its peers: its answers would be
// stale, so Failover does not use it.
var ErrCatchingUp = errors.New("node is catching up with its peers")

// DefaultCallTimeout is Failover.CallTimeout unless set: generous, because a registry change
// list over a large fleet is one long answer; a node that is reachable but silent costs this
// long once before the next is tried.
const DefaultCallTimeout = 30 * time.Second

// NodesError is the evidence of a call that no node answered: every address tried, in order,
// with its failure. It matches ErrNoNode and each failure with errors.Is.
type NodesError struct {
	Method string
	Addrs  []string
	Errs   []error // Errs[i] is how Addrs[i] failed
}

func (e *NodesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %s tried %s", ErrNoNode, e.Method, strings.Join(e.Addrs, ", "))
	for i, a := range e.Addrs {
		fmt.Fprintf(&b, "; %s: %v", a, e.Errs[i])
	}
	return b.String()
}

func (e *NodesError) Unwrap() []error { return append([]error{ErrNoNode}, e.Errs...) }

// Failover is an RPC over the CometBFT RPC of several nodes of one chain (one per validator,
// as ledger.rpc lists them). Each call goes to the node in use; when that node fails at the
// connection level (refused, reset, EOF, no answer within CallTimeout, an HTTP 5xx, an answer
// that is not JSON-RPC, or catching up) it is marked down and the call is retried on the
// next, through all of them, before a *NodesError is returned. The node that answers is used
// from then on; each switch is logged. Answers of the node itself (a JSON-RPC error such as
// "tx already exists in cache" or a height it does not have yet, an ABCI code) are returned
// as they are and never cause a switch. A node marked down goes to the back of the order
// until its backoff (Backoff, the project's retry policy) has passed, then is tried again
// in turn; it is never given up on. A node is asked for its status before its first use and
// after each failure, and not used while it is catching up.
//
// Failover is safe for concurrent use. Set the exported fields before the first call.
type Failover struct {
	// CallTimeout bounds one call to one node (0: only the caller's context bounds it).
	CallTimeout time.Duration
	// Backoff paces the tries of a node marked down; its Timeout is ignored.
	Backoff retry.Policy

	log   *slog.Logger
	nodes []*failoverNode

	mu  sync.Mutex
	cur int // index of the node in use
}

// failoverNode is one node; the fields after rpc are guarded by Failover.mu.
type failoverNode struct {
	addr string
	rpc  *rpchttp.HTTP

	healthy bool          // answered the last call; false: ask its status before using it
	down    bool          // failed, and has not answered since
	retryAt time.Time     // down: tried only after the nodes that are up until then
	backoff *retry.Waiter // down: paces retryAt
	lastErr error         // why it is not healthy
}

var _ RPC = (*Failover)(nil)

// NewFailover returns a Failover over the RPC addresses addrs (host:port, or a URL such as
// tcp://host:port or https://host:port), in order of preference; the first is used first.
// With tlsCfg, host:port addresses are reached over https with it. It logs switches and nodes
// going down to log (nil: slog.Default()).
func NewFailover(addrs []string, tlsCfg *tls.Config, log *slog.Logger) (*Failover, error) {
	if len(addrs) == 0 {
		return nil, errors.New("ledger failover: no RPC address")
	}
	if log == nil {
		log = slog.Default()
	}
	f := &Failover{CallTimeout: DefaultCallTimeout, Backoff: retry.Default(), log: log}
	for _, a := range addrs {
		c, err := NewRPC(a, tlsCfg)
		if err != nil {
			return nil, fmt.Errorf("ledger rpc %s: %w", a, err)
		}
		f.nodes = append(f.nodes, &failoverNode{addr: a, rpc: c})
	}
	return f, nil
}

// NewRPC is CometBFT's HTTP RPC client for one node (host:port or a URL), over an HTTP client
// whose dials follow the call's context and which reports a 5xx answer as a failure of the
// node. With tlsCfg a host:port is reached over https, trusting what tlsCfg trusts.
func NewRPC(addr string, tlsCfg *tls.Config) (*rpchttp.HTTP, error) {
	remote := addr
	if !strings.Contains(remote, "://") {
		remote = "tcp://" + remote
		if tlsCfg != nil {
			remote = "https://" + addr
		}
	}
	hc := &http.Client{Transport: serverErrors{&http.Transport{
		DisableCompression:  true, // as CometBFT's default client: no gzip bombs
		DialContext:         (&net.Dialer{}).DialContext,
		Proxy:               http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: 16, // the client is shared: keep connections for concurrent callers
		TLSClientConfig:     tlsCfg,
	}}}
	return rpchttp.NewWithClient(remote, "/websocket", hc)
}

// serverErrors turns an HTTP 5xx answer into an error of the round trip. CometBFT answers
// JSON-RPC errors of the application (a full mempool, a missing height) with 200; a 5xx comes
// from a proxy in front of a node that is gone, or from a node that failed on the request.
type serverErrors struct{ http.RoundTripper }

func (s serverErrors) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := s.RoundTripper.RoundTrip(r)
	if err != nil || res.StatusCode < 500 {
		return res, err
	}
	body, _ := io.ReadAll(io.LimitReader(res.Body, 256))
	res.Body.Close()
	return nil, fmt.Errorf("HTTP %s: %s", res.Status, strings.TrimSpace(string(body)))
}

// Current is the address of the node in use.
func (f *Failover) Current() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[f.cur].addr
}

// ABCIQuery runs an ABCI query on a node that answers.
func (f *Failover) ABCIQuery(ctx context.Context, path string, data bytes.HexBytes) (*coretypes.ResultABCIQuery, error) {
	return call(ctx, f, "abci_query "+path, func(ctx context.Context, c *rpchttp.HTTP) (*coretypes.ResultABCIQuery, error) {
		return c.ABCIQuery(ctx, path, data)
	})
}

// BroadcastTxSync submits tx to the mempool of a node that answers.
func (f *Failover) BroadcastTxSync(ctx context.Context, tx types.Tx) (*coretypes.ResultBroadcastTx, error) {
	return call(ctx, f, "broadcast_tx_sync", func(ctx context.Context, c *rpchttp.HTTP) (*coretypes.ResultBroadcastTx, error) {
		return c.BroadcastTxSync(ctx, tx)
	})
}

// Status returns the status of a node that answers and is not catching up.
func (f *Failover) Status(ctx context.Context) (*coretypes.ResultStatus, error) {
	return call(ctx, f, "status", status)
}

// Validators returns the validator set at height from a node that answers.
func (f *Failover) Validators(ctx context.Context, height *int64, page, perPage *int) (*coretypes.ResultValidators, error) {
	return call(ctx, f, "validators", func(ctx context.Context, c *rpchttp.HTTP) (*coretypes.ResultValidators, error) {
		return c.Validators(ctx, height, page, perPage)
	})
}

// Commit returns the commit at height from a node that answers.
func (f *Failover) Commit(ctx context.Context, height *int64) (*coretypes.ResultCommit, error) {
	return call(ctx, f, "commit", func(ctx context.Context, c *rpchttp.HTTP) (*coretypes.ResultCommit, error) {
		return c.Commit(ctx, height)
	})
}

// status asks a node for its status; a node that is catching up fails with ErrCatchingUp.
func status(ctx context.Context, c *rpchttp.HTTP) (*coretypes.ResultStatus, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.SyncInfo.CatchingUp {
		return nil, fmt.Errorf("%w (at height %d)", ErrCatchingUp, st.SyncInfo.LatestBlockHeight)
	}
	return st, nil
}

// call runs op on the node in use, and on the next ones in f.order while they fail at the
// connection level.
func call[T any](ctx context.Context, f *Failover, method string, op func(context.Context, *rpchttp.HTTP) (T, error)) (T, error) {
	var zero T
	fails := &NodesError{Method: method}
	for _, i := range f.order(time.Now()) {
		n := f.nodes[i]
		v, err := attempt(ctx, f, n, op)
		switch {
		case err == nil:
			f.answered(i)
			return v, nil
		case ctx.Err() != nil: // the caller gave up: no node's fault
			return zero, err
		case !nodeFailure(err):
			f.answered(i)
			return zero, err
		}
		f.failed(i, err)
		fails.Addrs, fails.Errs = append(fails.Addrs, n.addr), append(fails.Errs, err)
	}
	return zero, fails
}

// attempt runs op on node n within CallTimeout, asking n for its status first unless it
// answered the last call.
func attempt[T any](ctx context.Context, f *Failover, n *failoverNode, op func(context.Context, *rpchttp.HTTP) (T, error)) (T, error) {
	var zero T
	if f.CallTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, f.CallTimeout, fmt.Errorf("no answer within %s", f.CallTimeout))
		defer cancel()
	}
	f.mu.Lock()
	healthy := n.healthy
	f.mu.Unlock()
	if !healthy {
		if _, err := status(ctx, n.rpc); err != nil {
			return zero, fmt.Errorf("status: %w", asNodeFailure(ctx, err))
		}
	}
	v, err := op(ctx, n.rpc)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	return v, err
}

// asNodeFailure makes any failure of a status check count as the node's: a node that cannot
// say how it is is not used.
func asNodeFailure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	if nodeFailure(err) {
		return err
	}
	return fmt.Errorf("%w: %w", errUnhealthy, err)
}

var errUnhealthy = errors.New("unhealthy")

// nodeFailure tells a failure of the node (switch to another) from an answer of the node (a
// JSON-RPC error: return it to the caller). A CometBFT node answers every request it could
// read with JSON-RPC, success or error; whatever else happened (no connection, a broken one,
// a timeout, a 5xx, a body that is not JSON-RPC) is the node's or the network's failure, as
// is a node that is catching up or unhealthy.
func nodeFailure(err error) bool {
	if errors.Is(err, ErrCatchingUp) || errors.Is(err, errUnhealthy) {
		return true
	}
	_, answered := errors.AsType[*rpctypes.RPCError](err)
	return !answered
}

// order is the order in which a call tries the nodes: the one in use, then the others in
// turn, skipping those marked down whose backoff has not passed; those come last, soonest
// due first, so that a call is never refused without trying every node.
func (f *Failover) order(now time.Time) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	up := make([]int, 0, len(f.nodes))
	var waiting []int
	for k := range f.nodes {
		i := (f.cur + k) % len(f.nodes)
		if n := f.nodes[i]; n.down && now.Before(n.retryAt) {
			waiting = append(waiting, i)
		} else {
			up = append(up, i)
		}
	}
	slices.SortStableFunc(waiting, func(a, b int) int { return f.nodes[a].retryAt.Compare(f.nodes[b].retryAt) })
	return append(up, waiting...)
}

// answered records that node i answered; if the node in use is failing, i is used from now
// on.
func (f *Failover) answered(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[i]
	if n.down {
		f.log.Info("ledger rpc: node answers again", "addr", n.addr)
	}
	n.healthy, n.down, n.backoff, n.lastErr = true, false, nil, nil
	if cur := f.nodes[f.cur]; i != f.cur && !cur.healthy {
		f.log.Warn("ledger rpc: switched node", "from", cur.addr, "to", n.addr, "reason", errString(cur.lastErr))
		f.cur = i
	}
}

// failed marks node i down after err, or, if its backoff had passed, puts it back for the next
// backoff. Failures that other calls see during the same backoff change nothing but the
// reason.
func (f *Failover) failed(i int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, now := f.nodes[i], time.Now()
	n.healthy, n.lastErr = false, err
	if n.down && now.Before(n.retryAt) {
		return
	}
	first := !n.down
	if first {
		p := f.Backoff
		p.Timeout = 0 // a node is never given up on
		n.down, n.backoff = true, p.Start()
	}
	wait, _ := n.backoff.Next(err) // no Timeout: no error
	n.retryAt = now.Add(wait)
	if first {
		f.log.Warn("ledger rpc: node not answering", "addr", n.addr, "err", err, "retry_after", wait)
	} else {
		f.log.Debug("ledger rpc: node still not answering", "addr", n.addr, "err", err, "retry_after", wait)
	}
}

func errString(err error) string {
	if err == nil {
		return "not answering"
	}
	return err.Error()
}
