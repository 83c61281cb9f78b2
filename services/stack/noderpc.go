package stack

import (
	"context"
	"errors"
	"sync"

	"github.com/cometbft/cometbft/libs/bytes"
	coretypes "github.com/cometbft/cometbft/rpc/core/types"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/anchor/node"
)

// ErrLedgerStopped is what the dev services' ledger calls return while the embedded node is
// stopped (a fault drill).
var ErrLedgerStopped = errors.New("ledger node is stopped")

// nodeRPC is the ledger RPC of the embedded node that runs now, so that the services keep one
// ledger client across a stop and start of the node.
type nodeRPC struct {
	mu   sync.RWMutex
	node *node.Node
}

var _ ledger.RPC = (*nodeRPC)(nil)

// swap makes n the node that calls go to (nil: none) and returns the previous one.
func (r *nodeRPC) swap(n *node.Node) *node.Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.node
	r.node = n
	return old
}

func (r *nodeRPC) rpc() (ledger.RPC, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.node == nil {
		return nil, ErrLedgerStopped
	}
	return r.node.RPC(), nil
}

func (r *nodeRPC) ABCIQuery(ctx context.Context, path string, data bytes.HexBytes) (*coretypes.ResultABCIQuery, error) {
	c, err := r.rpc()
	if err != nil {
		return nil, err
	}
	return c.ABCIQuery(ctx, path, data)
}

func (r *nodeRPC) BroadcastTxSync(ctx context.Context, tx types.Tx) (*coretypes.ResultBroadcastTx, error) {
	c, err := r.rpc()
	if err != nil {
		return nil, err
	}
	return c.BroadcastTxSync(ctx, tx)
}

func (r *nodeRPC) Status(ctx context.Context) (*coretypes.ResultStatus, error) {
	c, err := r.rpc()
	if err != nil {
		return nil, err
	}
	return c.Status(ctx)
}

func (r *nodeRPC) Validators(ctx context.Context, height *int64, page, perPage *int) (*coretypes.ResultValidators, error) {
	c, err := r.rpc()
	if err != nil {
		return nil, err
	}
	return c.Validators(ctx, height, page, perPage)
}

func (r *nodeRPC) Commit(ctx context.Context, height *int64) (*coretypes.ResultCommit, error) {
	c, err := r.rpc()
	if err != nil {
		return nil, err
	}
	return c.Commit(ctx, height)
}
