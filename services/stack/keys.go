package stack

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/schemas/entry"
)

// NewKeys returns the ingest key cache over the ledger registry: a cache miss asks the ledger
// (a device registered a moment ago), and a follower keeps it current. A device the ledger does
// not know is asked for once more after the next block: with several validators, the one asked
// may be a block behind the one that committed the registration.
func NewKeys(l *ledger.Client) *verify.Keys {
	return verify.NewKeys(func(ctx context.Context, device string) (verify.Key, bool, error) {
		p, err := l.Device(ctx, device, 0)
		if errors.Is(err, ledger.ErrUnknownDevice) {
			// One more chance after the next block; if that block does not come in time (the
			// caller's deadline: the auth callout answers within a second or two), the answer
			// stays "unknown".
			h, herr := l.Height(ctx)
			if herr != nil {
				return verify.Key{}, false, nil
			}
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			werr := l.WaitHeight(wctx, h+1)
			cancel()
			if werr != nil {
				return verify.Key{}, false, nil
			}
			p, err = l.Device(ctx, device, 0)
		}
		if errors.Is(err, ledger.ErrUnknownDevice) {
			return verify.Key{}, false, nil
		}
		if err != nil {
			return verify.Key{}, false, err
		}
		k, err := keyOf(p.Record)
		return k, err == nil, err
	})
}

func keyOf(r entry.Record) (verify.Key, error) {
	pk, err := r.PublicKey()
	if err != nil {
		return verify.Key{}, err
	}
	return verify.Key{Device: r.Dev, Key: pk, Revoked: r.Status == entry.StatusRevoked, Height: r.Height, OptIn: r.OptIn}, nil
}

// follower applies the registry changes of new blocks to a key cache.
type follower struct {
	l     *ledger.Client
	keys  *verify.Keys
	log   *slog.Logger
	mu    sync.Mutex
	since int64 // changes up to this height are applied
	// height is since, for readers that must not wait for a refresh in progress.
	height atomic.Int64
	// applied, if set, is called with the keys each refresh applied (the auth service closes
	// revoked devices' connections).
	applied func(ctx context.Context, keys []verify.Key)
}

// refresh applies the changes since the last refresh.
func (f *follower) refresh(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	recs, height, err := f.l.DevicesChanged(ctx, f.since)
	if err != nil {
		return err
	}
	ks := make([]verify.Key, 0, len(recs))
	for _, r := range recs {
		k, err := keyOf(r)
		if err != nil {
			f.log.Error("device registry: record with an unusable key", "device", r.Dev, "err", err)
			continue
		}
		ks = append(ks, k)
	}
	f.keys.Apply(ks)
	f.since = height
	f.height.Store(height)
	if f.applied != nil {
		f.applied(ctx, ks)
	}
	return nil
}

// follow refreshes every interval until ctx ends, so that a revocation takes effect within
// about one interval of its block in every worker.
func (f *follower) follow(ctx context.Context, every time.Duration) {
	failing := false
	for {
		err := f.refresh(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			f.log.Warn("device registry: cannot follow the ledger, retrying", "err", err)
			failing = true
		case err == nil && failing:
			f.log.Info("device registry: following the ledger again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
