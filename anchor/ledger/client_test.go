package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/libs/bytes"
	coretypes "github.com/cometbft/cometbft/rpc/core/types"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/schemas/lookup"
)

// fakeRPC is an RPC made of functions; the methods Submit does not call fail the test.
type fakeRPC struct {
	t         *testing.T
	query     func(path string, data []byte) (*coretypes.ResultABCIQuery, error)
	broadcast func(tx types.Tx) (*coretypes.ResultBroadcastTx, error)
}

func (f fakeRPC) ABCIQuery(_ context.Context, path string, data bytes.HexBytes) (*coretypes.ResultABCIQuery, error) {
	return f.query(path, data)
}

func (f fakeRPC) BroadcastTxSync(_ context.Context, tx types.Tx) (*coretypes.ResultBroadcastTx, error) {
	return f.broadcast(tx)
}

func (f fakeRPC) Status(context.Context) (*coretypes.ResultStatus, error) {
	f.t.Error("unexpected Status")
	return nil, errors.New("unexpected")
}

func (f fakeRPC) Validators(context.Context, *int64, *int, *int) (*coretypes.ResultValidators, error) {
	f.t.Error("unexpected Validators")
	return nil, errors.New("unexpected")
}

func (f fakeRPC) Commit(context.Context, *int64) (*coretypes.ResultCommit, error) {
	f.t.Error("unexpected Commit")
	return nil, errors.New("unexpected")
}

// recordHandler keeps the messages logged.
type recordHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func missing() *coretypes.ResultABCIQuery {
	return &coretypes.ResultABCIQuery{Response: abci.ResponseQuery{Code: CodeNotFound, Log: "entry is not in the log"}}
}

func TestSubmitRetriesAndReports(t *testing.T) {
	committed := false
	broadcasts := 0
	rpc := fakeRPC{t: t,
		query: func(path string, _ []byte) (*coretypes.ResultABCIQuery, error) {
			if path != PathEntryByLeaf {
				t.Errorf("query %s", path)
			}
			if !committed {
				return missing(), nil
			}
			b, err := json.Marshal(Receipt{Height: 5, LogIndex: 2})
			return &coretypes.ResultABCIQuery{Response: abci.ResponseQuery{Code: CodeOK, Value: b}}, err
		},
		broadcast: func(types.Tx) (*coretypes.ResultBroadcastTx, error) {
			broadcasts++
			if broadcasts <= 2 {
				return nil, errors.New("connection refused")
			}
			committed = true
			return &coretypes.ResultBroadcastTx{Code: CodeOK}, nil
		},
	}
	logs := &recordHandler{}
	c := NewClient(rpc, slog.New(logs))
	c.Retry = retry.Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond}
	rc, err := c.Submit(t.Context(), []byte("entry"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Height != 5 || rc.LogIndex != 2 || broadcasts != 3 {
		t.Fatalf("receipt %+v after %d broadcasts", rc, broadcasts)
	}
	if len(logs.msgs) != 2 || logs.msgs[0] != "ledger: submit failed, retrying" {
		t.Fatalf("retries logged: %q, want two", logs.msgs)
	}
}

func TestSubmitRejectedIsNotRetried(t *testing.T) {
	broadcasts := 0
	rpc := fakeRPC{t: t,
		query: func(string, []byte) (*coretypes.ResultABCIQuery, error) { return missing(), nil },
		broadcast: func(types.Tx) (*coretypes.ResultBroadcastTx, error) {
			broadcasts++
			return &coretypes.ResultBroadcastTx{Code: 1, Log: "bad signature"}, nil
		},
	}
	c := NewClient(rpc, slog.New(&recordHandler{}))
	_, err := c.Submit(t.Context(), []byte("entry"))
	if !errors.Is(err, ErrRejected) || broadcasts != 1 {
		t.Fatalf("%v after %d broadcasts, want ErrRejected after one", err, broadcasts)
	}
}

func TestSubmitStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	rpc := fakeRPC{t: t,
		query: func(string, []byte) (*coretypes.ResultABCIQuery, error) {
			cancel() // the ledger is down and the caller gives up
			return nil, errors.New("connection refused")
		},
	}
	c := NewClient(rpc, slog.New(&recordHandler{}))
	_, err := c.Submit(ctx, []byte("entry"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
}

func TestQueryNotFoundIsLookupErrNotFound(t *testing.T) {
	rpc := fakeRPC{t: t, query: func(string, []byte) (*coretypes.ResultABCIQuery, error) { return missing(), nil }}
	c := NewClient(rpc, slog.New(&recordHandler{}))
	if _, err := c.Lookup(t.Context(), []byte("entry")); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("lookup of a missing entry: %v, want lookup.ErrNotFound", err)
	}
	_, err := c.Device(t.Context(), "nobody", 0)
	if !errors.Is(err, lookup.ErrNotFound) || !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("unknown device: %v, want ErrUnknownDevice and lookup.ErrNotFound", err)
	}
}
