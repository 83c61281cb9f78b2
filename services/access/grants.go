package access

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/schemas/entry"
)

// Grants answers whether an audience may read a device's data, from the ledger's consents in
// force, read again when the copy is older than MaxAge: the HTTP API's raw readings and proofs
// follow the same consent as ClickHouse. The audience entry.AudienceOperator reads every device.
type Grants struct {
	ledger *ledger.Client
	maxAge time.Duration

	mu      sync.Mutex
	fetched time.Time
	height  uint64
	in      map[[2]string]bool // {audience, device} in force
}

// NewGrants returns Grants over the ledger; maxAge 0 is one second.
func NewGrants(l *ledger.Client, maxAge time.Duration) *Grants {
	if maxAge <= 0 {
		maxAge = time.Second
	}
	return &Grants{ledger: l, maxAge: maxAge}
}

// Allowed reports whether audience may read dev's data now, and the ledger height the answer
// is of (0 for the operator).
func (g *Grants) Allowed(ctx context.Context, audience, dev string) (bool, uint64, error) {
	if audience == entry.AudienceOperator {
		return true, 0, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.in == nil || time.Since(g.fetched) > g.maxAge {
		cs, err := g.ledger.Consents(ctx, "", 0)
		if err != nil {
			return false, 0, fmt.Errorf("consent: ledger: %w", err)
		}
		gs, err := cs.EffectiveGrants()
		if err != nil {
			return false, 0, fmt.Errorf("consent: ledger: %w", err)
		}
		in := make(map[[2]string]bool, len(gs))
		for _, x := range gs {
			in[[2]string{x.Audience, x.Dev}] = true
		}
		g.in, g.height, g.fetched = in, cs.Height, time.Now()
	}
	return g.in[[2]string{audience, dev}], g.height, nil
}
