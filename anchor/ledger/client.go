package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cometbft/cometbft/libs/bytes"
	rpcclient "github.com/cometbft/cometbft/rpc/client"
	coretypes "github.com/cometbft/cometbft/rpc/core/types"
	"github.com/cometbft/cometbft/types"

	"github.com/anchorline/anchorline/anchor/audit"
	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/internal/retry"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/lookup"
)

// Errors callers act on.
var (
	// ErrRejected: the ledger refused the entry (malformed, unauthorised, conflicting).
	ErrRejected = errors.New("ledger: entry rejected")
	// ErrUnknownDevice: no such device in the registry at that height. Device wraps it
	// together with lookup.ErrNotFound, which every query for something that does not exist
	// (yet) returns: an entry, a height, a log size, a device.
	ErrUnknownDevice = errors.New("ledger: unknown device")
)

// RPC is the part of a CometBFT RPC client that the ledger client uses. Both of CometBFT's
// clients implement it: in-process (rpc/client/local) and over the network (rpc/client/http).
type RPC interface {
	ABCIQuery(ctx context.Context, path string, data bytes.HexBytes) (*coretypes.ResultABCIQuery, error)
	BroadcastTxSync(ctx context.Context, tx types.Tx) (*coretypes.ResultBroadcastTx, error)
	Status(ctx context.Context) (*coretypes.ResultStatus, error)
	Validators(ctx context.Context, height *int64, page, perPage *int) (*coretypes.ResultValidators, error)
	Commit(ctx context.Context, height *int64) (*coretypes.ResultCommit, error)
}

var _ RPC = rpcclient.Client(nil)

// Client talks to a ledger node through an RPC client.
type Client struct {
	rpc RPC
	log *slog.Logger
	// How long Submit waits for a broadcast entry to be included before broadcasting it again
	// (v0.38 silently drops transactions when its mempool is full).
	ResubmitAfter time.Duration
	// Retry paces Submit's retries of failed RPCs and of entries not included in time.
	Retry retry.Policy
}

// NewClient returns a client over rpc that logs the failures it retries to log (nil:
// slog.Default(), as node.Config.Logger).
func NewClient(rpc RPC, log *slog.Logger) *Client {
	if log == nil {
		log = slog.Default()
	}
	return &Client{rpc: rpc, log: log, ResubmitAfter: 10 * time.Second, Retry: retry.Default()}
}

// Receipt says where the ledger put an entry.
type Receipt struct {
	Height   int64  `json:"height"` // the block that included it
	LogIndex uint64 `json:"log_index"`
	TxHash   []byte `json:"tx_hash,omitempty"`
}

// query runs an ABCI query and decodes its JSON answer into out.
func (c *Client) query(ctx context.Context, path string, req, out any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	res, err := c.rpc.ABCIQuery(ctx, path, data)
	if err != nil {
		return fmt.Errorf("ledger query %s: %w", path, err)
	}
	switch res.Response.Code {
	case CodeOK:
		if err := json.Unmarshal(res.Response.Value, out); err != nil {
			return fmt.Errorf("ledger query %s: %w", path, err)
		}
		return nil
	case CodeNotFound:
		return fmt.Errorf("ledger query %s: %w: %s", path, lookup.ErrNotFound, res.Response.Log)
	default:
		return fmt.Errorf("ledger query %s: code %d: %s", path, res.Response.Code, res.Response.Log)
	}
}

// Lookup finds a committed entry by its bytes.
func (c *Client) Lookup(ctx context.Context, e []byte) (Receipt, error) {
	var rc Receipt
	if err := c.query(ctx, PathEntryByLeaf, LeafRequest{Leaf: merkle.EntryLeaf(e)}, &rc); err != nil {
		return Receipt{}, err
	}
	rc.TxHash = types.Tx(e).Hash()
	return rc, nil
}

// Submit commits an entry and returns once it is in a committed block. It broadcasts with
// BroadcastTxSync, then watches the app for the entry, broadcasting again if it was not
// included within ResubmitAfter; transient RPC errors are retried under c.Retry, each logged,
// until ctx ends. An entry the ledger refuses returns an error wrapping ErrRejected with the
// ledger's reason. Submitting an entry that is already committed returns its receipt.
func (c *Client) Submit(ctx context.Context, e []byte) (Receipt, error) {
	rc, err := retry.Do(ctx, c.Retry, func(ctx context.Context) (Receipt, error) { return c.submitOnce(ctx, e) },
		func(err error, next time.Duration) {
			c.log.WarnContext(ctx, "ledger: submit failed, retrying", "tx", fmt.Sprintf("%X", types.Tx(e).Hash()), "err", err, "retry_in", next)
		})
	if err != nil {
		return Receipt{}, fmt.Errorf("ledger submit: %w", err)
	}
	return rc, nil
}

// submitOnce is one try of Submit: look the entry up, broadcast it if it is not there, and
// watch for it until ResubmitAfter. A refused entry is a retry.Permanent error.
func (c *Client) submitOnce(ctx context.Context, e []byte) (Receipt, error) {
	rc, err := c.Lookup(ctx, e)
	if err == nil {
		return rc, nil
	}
	if !errors.Is(err, lookup.ErrNotFound) {
		return Receipt{}, err
	}
	res, err := c.rpc.BroadcastTxSync(ctx, e)
	switch {
	case err != nil && !strings.Contains(err.Error(), "already exists in cache"):
		return Receipt{}, fmt.Errorf("broadcast: %w", err)
	case err == nil && res.Code == CodeConflict && strings.Contains(res.Log, "already in the log"):
		return c.Lookup(ctx, e) // committed meanwhile
	case err == nil && res.Code != CodeOK:
		return Receipt{}, retry.Permanent(fmt.Errorf("%w: %s", ErrRejected, res.Log))
	}
	// In the mempool: wait for a block to include it.
	deadline := time.Now().Add(c.ResubmitAfter)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return Receipt{}, context.Cause(ctx)
		case <-time.After(25 * time.Millisecond):
		}
		if rc, err := c.Lookup(ctx, e); err == nil {
			return rc, nil
		}
	}
	return Receipt{}, fmt.Errorf("not in a block %s after broadcasting it", c.ResubmitAfter)
}

// EntryProof is a log entry with its inclusion proof in the log as of a height.
type EntryProof struct {
	Entry        []byte        `json:"entry"`
	LogIndex     uint64        `json:"log_index"`
	LogSize      uint64        `json:"log_size"`
	Path         []merkle.Hash `json:"path"`
	LogRoot      merkle.Hash   `json:"log_root"`
	RegistryRoot merkle.Hash   `json:"registry_root"`
	Height       int64         `json:"height"`
	// Version is the app hash version of the state at Height (0 from a ledger older than v2:
	// read it as 1). Under v2 StateRoot is the state root the app hash commits and StateProof
	// proves RegistryRoot as its "registry" sub-root (merkle.VerifySubRoot).
	Version    uint64             `json:"version,omitempty"`
	StateRoot  *merkle.Hash       `json:"state_root,omitempty"`
	StateProof *merkle.StateProof `json:"state_proof,omitempty"`
}

// EntryProof returns the entry at logIndex and its proof against the state after block height
// (0: the latest).
func (c *Client) EntryProof(ctx context.Context, logIndex uint64, height int64) (EntryProof, error) {
	var p EntryProof
	err := c.query(ctx, PathEntry, EntryRequest{Index: logIndex, Height: uint64(height)}, &p)
	return p, err
}

// Entries returns up to limit committed log entries from index from on (at most 1,000 a
// call), and the committed log size.
func (c *Client) Entries(ctx context.Context, from, limit uint64) (Entries, error) {
	var e Entries
	err := c.query(ctx, PathEntries, EntriesRequest{From: from, Max: limit}, &e)
	return e, err
}

// DeviceProof is a device's registry record with its proof as of a height.
type DeviceProof struct {
	Record      entry.Record
	RecordBytes []byte
	Index, Size uint64        // v1: the record's place in the sorted registry tree
	Path        []merkle.Hash // v1: its inclusion path
	// SMTProof is, under app hash v2, the record's membership proof in the registry's sparse
	// Merkle tree (smt.Proof.Encode; key smt.KeyOf(id), value merkle.LeafHash(RecordBytes)),
	// checked with smt.Verify against Root; nil under v1.
	SMTProof []byte
	Root     merkle.Hash
	Height   int64
}

// Device returns a device's record and registry proof as of block height (0: the latest).
func (c *Client) Device(ctx context.Context, id string, height int64) (DeviceProof, error) {
	var r deviceResponse
	if err := c.query(ctx, PathDevice, DeviceRequest{ID: id, Height: uint64(height)}, &r); err != nil {
		if errors.Is(err, lookup.ErrNotFound) {
			return DeviceProof{}, fmt.Errorf("%w: %w", ErrUnknownDevice, err)
		}
		return DeviceProof{}, err
	}
	rec, err := entry.DecodeRecord(r.Record)
	if err != nil {
		return DeviceProof{}, fmt.Errorf("ledger: device %s: %w", id, err)
	}
	return DeviceProof{Record: rec, RecordBytes: r.Record, Index: r.Index, Size: r.Size, Path: r.Path, SMTProof: r.SMTProof, Root: r.Root, Height: int64(r.Height)}, nil
}

// DevicesChanged returns the current records of the devices changed in blocks after since (0:
// every device) and the height they are current at; pass that height as since next time.
func (c *Client) DevicesChanged(ctx context.Context, since int64) ([]entry.Record, int64, error) {
	var r changesResponse
	if err := c.query(ctx, PathDevicesChanged, ChangesRequest{Since: uint64(since)}, &r); err != nil {
		return nil, 0, err
	}
	out := make([]entry.Record, 0, len(r.Records))
	for _, b := range r.Records {
		rec, err := entry.DecodeRecord(b)
		if err != nil {
			return nil, 0, fmt.Errorf("ledger: devices changed: %w", err)
		}
		out = append(out, rec)
	}
	return out, int64(r.Height), nil
}

// Consistency returns the proof that the log of size2 extends the log of size1.
func (c *Client) Consistency(ctx context.Context, size1, size2 uint64) ([]merkle.Hash, error) {
	var p []merkle.Hash
	err := c.query(ctx, PathConsistency, ConsistencyRequest{Size1: size1, Size2: size2}, &p)
	return p, err
}

// LogMultiProof returns the multiproof (merkle.MultiProofAt) of the log entries at indices
// (strictly increasing) in the committed log of size entries.
func (c *Client) LogMultiProof(ctx context.Context, indices []uint64, size uint64) ([]merkle.Hash, error) {
	var p []merkle.Hash
	err := c.query(ctx, PathLogMultiProof, LogMultiProofRequest{Indices: indices, Size: size}, &p)
	return p, err
}

// State returns the roots the app hash commits after block height (0: the latest).
func (c *Client) State(ctx context.Context, height int64) (State, error) {
	var s State
	err := c.query(ctx, PathState, StateRequest{Height: uint64(height)}, &s)
	return s, err
}

// Height returns the latest committed block height.
func (c *Client) Height(ctx context.Context) (int64, error) {
	st, err := c.rpc.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("ledger status: %w", err)
	}
	return st.SyncInfo.LatestBlockHeight, nil
}

// Head returns the height and time of the latest block the node knows. A chain that is idle
// still makes a block a second (create_empty_blocks_interval), so an old head means the
// validators have lost their quorum, or this node its peers.
func (c *Client) Head(ctx context.Context) (int64, time.Time, error) {
	st, err := c.rpc.Status(ctx)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("ledger status: %w", err)
	}
	return st.SyncInfo.LatestBlockHeight, st.SyncInfo.LatestBlockTime, nil
}

// ChainID returns the ledger's chain id.
func (c *Client) ChainID(ctx context.Context) (string, error) {
	st, err := c.rpc.Status(ctx)
	if err != nil {
		return "", fmt.Errorf("ledger status: %w", err)
	}
	return st.NodeInfo.Network, nil
}

// WaitHeight waits until a block at height h is committed.
func (c *Client) WaitHeight(ctx context.Context, h int64) error {
	for {
		cur, err := c.Height(ctx)
		if err == nil && cur >= h {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ledger: waiting for height %d: %w", h, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Validators returns the validator set at height in canonical form: proposer priorities are
// not committed by any hash, so they are set to zero (and the proposer chosen from that),
// which makes light blocks and trust files byte-for-byte reproducible.
func (c *Client) Validators(ctx context.Context, height int64) (*types.ValidatorSet, error) {
	var vals []*types.Validator
	perPage := 100
	for page := 1; ; page++ {
		res, err := c.rpc.Validators(ctx, &height, &page, &perPage)
		if err != nil {
			return nil, fmt.Errorf("ledger validators at %d: %w", height, err)
		}
		for _, v := range res.Validators {
			cp := *v
			cp.ProposerPriority = 0
			vals = append(vals, &cp)
		}
		if len(vals) >= res.Total || len(res.Validators) == 0 {
			break
		}
	}
	return types.ValidatorSetFromExistingValidators(vals)
}

// LightBlock returns the signed header, commit and validator set at height. It waits for the
// next block too, so that the commit is the canonical one (the same on every node and every
// call).
func (c *Client) LightBlock(ctx context.Context, height int64) (*types.LightBlock, error) {
	var com *coretypes.ResultCommit
	for com == nil || !com.CanonicalCommit {
		// Not canonical: a Failover switched to a node that does not have block height+1 yet.
		if err := c.WaitHeight(ctx, height+1); err != nil {
			return nil, err
		}
		var err error
		if com, err = c.rpc.Commit(ctx, &height); err != nil {
			return nil, fmt.Errorf("ledger commit at %d: %w", height, err)
		}
	}
	vals, err := c.Validators(ctx, height)
	if err != nil {
		return nil, err
	}
	lb := &types.LightBlock{SignedHeader: &com.SignedHeader, ValidatorSet: vals}
	if err := lb.ValidateBasic(com.Header.ChainID); err != nil {
		return nil, fmt.Errorf("ledger light block at %d: %w", height, err)
	}
	return lb, nil
}

// Signers returns, for the latest block, how many of the validators that could sign it did
// (their commit signatures are for the block) and how many there are: fewer signers than
// validators means some are down or lagging.
func (c *Client) Signers(ctx context.Context) (signed, validators int, height int64, err error) {
	if height, err = c.Height(ctx); err != nil {
		return 0, 0, 0, err
	}
	h := height - 1 // the latest block's commit is in the next one; this one's is canonical
	if h < 1 {
		h = height
	}
	com, err := c.rpc.Commit(ctx, &h)
	if err != nil {
		return 0, 0, height, fmt.Errorf("ledger commit at %d: %w", h, err)
	}
	vals, err := c.Validators(ctx, h)
	if err != nil {
		return 0, 0, height, err
	}
	for _, s := range com.Commit.Signatures {
		if s.BlockIDFlag == types.BlockIDFlagCommit {
			signed++
		}
	}
	return signed, vals.Size(), h, nil
}

// AuditLog reads the ledger's log for anchor/audit (audit.Ledger), 1,000 entries a query.
type AuditLog struct{ Client *Client }

// Entries returns the committed entries from position from on and the log's size.
func (l AuditLog) Entries(ctx context.Context, from uint64) ([]audit.LogEntry, uint64, error) {
	es, err := l.Client.Entries(ctx, from, 1000)
	if err != nil {
		return nil, 0, err
	}
	out := make([]audit.LogEntry, len(es.Entries))
	for i, e := range es.Entries {
		out[i] = audit.LogEntry{Index: e.Index, Entry: e.Entry}
	}
	return out, es.LogSize, nil
}
