package stack

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/services/auth"
)

// Auth is a running auth callout service (`anchorline auth`, and inside `dev`): it lets
// devices connect from the ledger's registry and closes revoked devices' connections within
// about one poll of the revoking block.
type Auth struct {
	*auth.Service
	keys    *follower
	nc, sys *nats.Conn
	stop    func()
	pending map[string]bool // revoked devices whose connections are still to be closed
}

// authPoll is how often the auth service follows the registry.
const authPoll = 200 * time.Millisecond

// StartAuth connects to NATS as the setup's auth and system users (with the extra options, such
// as NATSTLS's) and answers the callout.
func StartAuth(ctx context.Context, setup auth.Setup, natsURL string, l *ledger.Client, log *slog.Logger, extra ...nats.Option) (*Auth, error) {
	keys := NewKeys(l)
	svc, err := auth.New(setup, keys, log)
	if err != nil {
		return nil, err
	}
	a := &Auth{Service: svc, pending: map[string]bool{}}
	opts, err := auth.ConnectOptions(auth.RoleAuth, setup.File(auth.RoleAuth))
	if err != nil {
		return nil, err
	}
	if a.nc, _, err = ConnectNATS(ctx, natsURL, "anchorline auth", log, append(opts, extra...)...); err != nil {
		return nil, err
	}
	sysOpts, err := auth.ConnectOptions(auth.RoleSystem, setup.File(auth.RoleSystem))
	if err == nil {
		a.sys, _, err = ConnectNATS(ctx, natsURL, "anchorline auth (system)", log, append(sysOpts, extra...)...)
	}
	if err == nil {
		a.stop, err = svc.Serve(a.nc, a.sys)
	}
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("auth: %w", err)
	}
	a.keys = &follower{l: l, keys: keys, log: log, applied: func(ctx context.Context, ks []verify.Key) {
		for _, k := range ks {
			if k.Revoked {
				a.pending[k.Device] = true
			}
		}
		a.kickPending(ctx, log)
	}}
	return a, nil
}

// kickPending closes the connections of the revoked devices not yet dealt with; devices whose
// kick failed stay pending for the next poll. It runs under the follower's lock.
func (a *Auth) kickPending(ctx context.Context, log *slog.Logger) {
	if len(a.pending) == 0 {
		return
	}
	devices := make([]string, 0, len(a.pending))
	for d := range a.pending {
		devices = append(devices, d)
	}
	if _, err := a.Kick(ctx, a.sys, devices); err != nil {
		log.Warn("auth: could not close every revoked device's connection; retrying", "err", err)
		return
	}
	clear(a.pending)
}

// Refresh applies the registry changes committed so far, now (after a device event).
func (a *Auth) Refresh(ctx context.Context) error { return a.keys.refresh(ctx) }

// Run follows the registry until ctx ends.
func (a *Auth) Run(ctx context.Context) error {
	a.keys.follow(ctx, authPoll)
	return nil
}

// Close unsubscribes and closes the connections.
func (a *Auth) Close() {
	if a.stop != nil {
		a.stop()
	}
	for _, c := range []*nats.Conn{a.nc, a.sys} {
		if c != nil {
			c.Close()
		}
	}
}
