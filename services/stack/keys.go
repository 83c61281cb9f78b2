package stack

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/schemas/entry"
)

// NewKeys returns the ingest key cache over the ledger registry: a cache miss asks the ledger
// (a device registered a moment ago), and FollowKeys keeps it current.
func NewKeys(l *ledger.Client) *verify.Keys {
	return verify.NewKeys(func(ctx context.Context, device string) (verify.Key, bool, error) {
		p, err := l.Device(ctx, device, 0)
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
	return verify.Key{Device: r.Dev, Key: pk, Revoked: r.Status == entry.StatusRevoked, Height: r.Height}, nil
}

// FollowKeys applies the registry changes of every new block to keys until ctx ends, so that a
// revocation takes effect within about one poll interval of its block.
func FollowKeys(ctx context.Context, l *ledger.Client, keys *verify.Keys, every time.Duration, log *slog.Logger) {
	var since int64
	failing := false
	for {
		recs, height, err := l.DevicesChanged(ctx, since)
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				log.Warn("device registry: cannot follow the ledger, retrying", "err", err)
			}
			failing = true
		case err == nil:
			if failing {
				log.Info("device registry: following the ledger again", "height", height)
			}
			failing = false
			ks := make([]verify.Key, 0, len(recs))
			for _, r := range recs {
				k, err := keyOf(r)
				if err != nil {
					log.Error("device registry: record with an unusable key", "device", r.Dev, "err", err)
					continue
				}
				ks = append(ks, k)
			}
			keys.Apply(ks)
			since = height
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
