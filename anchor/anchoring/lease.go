package anchoring

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/schemas/stream"
)

// DefaultLeaseTTL is how long the lease and the claims of an anchoring service that stopped
// renewing them (it died, or lost NATS) last: a standby takes over within about this long.
const DefaultLeaseTTL = 3 * time.Second

// leaderKey is the lease's key in stream.AnchoringBucket; claims are claimPrefix + batch id.
const (
	leaderKey   = "leader"
	claimPrefix = "claim."
)

// Lease makes one anchoring service of several the active one, and lets it claim batches before
// it anchors them. Both live in a JetStream key-value bucket whose entries expire TTL after
// their last write: the active service holds the "leader" entry, renewing it by compare-and-set
// on its revision every TTL/3, and a standby creates it once it has expired. Before submitting
// an anchor, the active service creates a "claim.<batch id>" entry for each batch (create
// fails if another service claimed it and is still renewing the claim) and renews its claims
// while the ledger works, so two services anchor the same batch only if one of them is cut off
// from NATS for longer than TTL in the middle of a submission.
type Lease struct {
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
	log    *slog.Logger

	mu  sync.Mutex
	rev uint64 // revision of the leader entry while held; 0 when not held
}

// OpenLease creates the bucket if it is missing (TTL ttl, or DefaultLeaseTTL; replicas copies)
// and returns a lease that holder (a name unique among the services, for logs and the entry's
// value) can try to hold.
func OpenLease(ctx context.Context, js jetstream.JetStream, holder string, ttl time.Duration, replicas int, log *slog.Logger) (*Lease, error) {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      stream.AnchoringBucket,
		Description: "the active anchoring service's lease and its batch claims",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("anchoring lease: bucket %s: %w", stream.AnchoringBucket, err)
	}
	return &Lease{kv: kv, holder: holder, ttl: ttl, log: log}, nil
}

// Held reports whether this service holds the lease (as of its last renewal).
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev != 0
}

// Try takes the lease if nobody holds it, or renews it if this service does; it reports
// whether this service holds it now.
func (l *Lease) Try(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var rev uint64
	var err error
	if l.rev == 0 {
		rev, err = l.kv.Create(ctx, leaderKey, []byte(l.holder))
	} else {
		rev, err = l.kv.Update(ctx, leaderKey, []byte(l.holder), l.rev)
	}
	switch {
	case err == nil:
		if l.rev == 0 {
			l.log.Info("anchoring: holds the lease: this service is the active one", "holder", l.holder)
		}
		l.rev = rev
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		// Another service holds it (or took it over after this one failed to renew in time).
		if l.rev != 0 {
			l.log.Warn("anchoring: lost the lease: standing by", "holder", l.holder)
		}
		l.rev = 0
		return false, nil
	case ctx.Err() != nil:
		return l.rev != 0, ctx.Err() // stopping: Run releases what is held
	default:
		// Not known either way: act as if lost, so that this service anchors nothing it may
		// not hold (the entry expires if it cannot be renewed).
		if l.rev != 0 {
			l.log.Warn("anchoring: cannot renew the lease: standing by until it can", "holder", l.holder, "err", err)
		}
		l.rev = 0
		return false, fmt.Errorf("anchoring lease: %w", err)
	}
}

// Run renews (or tries to take) the lease every TTL/3 until ctx ends, then releases it.
func (l *Lease) Run(ctx context.Context) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		if _, err := l.Try(ctx); err != nil && ctx.Err() == nil {
			l.log.Debug("anchoring lease", "err", err)
		}
		select {
		case <-ctx.Done():
			l.release()
			return
		case <-t.C:
			if ctx.Err() != nil { // both ready: stopping wins
				l.release()
				return
			}
		}
	}
}

// release deletes the leader entry if this service holds it, so a standby need not wait for it
// to expire.
func (l *Lease) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, leaderKey, jetstream.LastRevision(l.rev)); err != nil {
		l.log.Warn("anchoring: lease not released; it expires on its own", "err", err)
	}
	l.rev = 0
}

// claim is one batch claimed by this service: the revision of its entry.
type claim struct {
	key string
	rev uint64
}

// Claims are the batches this service claimed for one anchor.
type Claims struct {
	l      *Lease
	claims []claim
}

// Claim claims each batch it can: those no other service claimed within TTL. It returns the
// claims and, for each id, whether it is claimed by this service.
func (l *Lease) Claim(ctx context.Context, ids [][16]byte) (*Claims, []bool, error) {
	c := &Claims{l: l}
	ok := make([]bool, len(ids))
	for i, id := range ids {
		key := claimPrefix + hex.EncodeToString(id[:])
		rev, err := l.kv.Create(ctx, key, []byte(l.holder))
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return c, ok, fmt.Errorf("anchoring: claim batch %x: %w", id, err)
		}
		c.claims = append(c.claims, claim{key: key, rev: rev})
		ok[i] = true
	}
	return c, ok, nil
}

// Renew renews every claim (compare-and-set on its revision); an error means a claim could not
// be renewed and may lapse.
func (c *Claims) Renew(ctx context.Context) error {
	var errs []error
	for i, cl := range c.claims {
		rev, err := c.l.kv.Update(ctx, cl.key, []byte(c.l.holder), cl.rev)
		if err != nil {
			errs = append(errs, fmt.Errorf("anchoring: renew %s: %w", cl.key, err))
			continue
		}
		c.claims[i].rev = rev
	}
	return errors.Join(errs...)
}
