package retry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// ErrGaveUp wraps the last error of an operation that failed until the policy's Timeout.
var ErrGaveUp = errors.New("gave up retrying")

// Policy says how a failing operation is retried.
type Policy struct {
	Initial time.Duration // first wait (default 100ms)
	Max     time.Duration // longest wait (default 5s)
	// Timeout bounds the whole retrying: once it has passed, the last error is returned
	// wrapped in ErrGaveUp. 0 retries until the context ends.
	Timeout time.Duration
}

// Default is the policy for dependencies that come back on their own: 100ms doubling to 5s,
// until the context ends.
func Default() Policy { return Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second} }

// Within is Default with a deadline.
func Within(timeout time.Duration) Policy { p := Default(); p.Timeout = timeout; return p }

func (p Policy) backOff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = p.Initial, p.Max
	if b.InitialInterval <= 0 {
		b.InitialInterval = 100 * time.Millisecond
	}
	if b.MaxInterval <= 0 {
		b.MaxInterval = 5 * time.Second
	}
	b.Multiplier, b.RandomizationFactor = 2, 0.2
	return b
}

// Permanent marks an error that retrying cannot cure: Do returns it at once (unwrapped).
func Permanent(err error) error { return backoff.Permanent(err) }

// Do calls op until it succeeds, returns a Permanent error, ctx ends (the context's error,
// wrapping the last failure) or the policy's Timeout passes (ErrGaveUp wrapping the last
// failure). notify, if not nil, hears each failure and the wait before the next try: log it
// there, so that no retry goes unreported.
func Do[T any](ctx context.Context, p Policy, op func(context.Context) (T, error), notify func(err error, next time.Duration)) (T, error) {
	w := p.Start()
	for {
		v, err := op(ctx)
		if err == nil {
			return v, nil
		}
		if perm, ok := errors.AsType[*backoff.PermanentError](err); ok {
			return v, perm.Err
		}
		next, werr := w.next(err)
		if werr != nil {
			return v, werr
		}
		if notify != nil {
			notify(err, next)
		}
		if err := w.sleep(ctx, next, err); err != nil {
			return v, err
		}
	}
}

// Waiter paces a retry loop that does more than call one function (keeping partial progress
// between tries, for example).
type Waiter struct {
	p     Policy
	b     *backoff.ExponentialBackOff
	start time.Time
}

// Start begins a retry loop under the policy.
func (p Policy) Start() *Waiter { return &Waiter{p: p, b: p.backOff(), start: time.Now()} }

// Wait sleeps before the next try after failure err. It returns the context's error (wrapping
// err) when ctx ends first, or ErrGaveUp (wrapping err) once the policy's Timeout has passed.
func (w *Waiter) Wait(ctx context.Context, err error) error {
	next, werr := w.next(err)
	if werr != nil {
		return werr
	}
	return w.sleep(ctx, next, err)
}

// Next advances the backoff after failure err and returns the wait Wait would sleep, without
// sleeping: for pacing that is not a sleep (a server marked down until a time). It returns
// ErrGaveUp (wrapping err) once the policy's Timeout has passed.
func (w *Waiter) Next(err error) (time.Duration, error) { return w.next(err) }

// next is the wait Wait would sleep next; it advances the backoff.
func (w *Waiter) next(err error) (time.Duration, error) {
	next := w.b.NextBackOff()
	if w.p.Timeout > 0 {
		left := w.p.Timeout - time.Since(w.start)
		if left <= 0 {
			return 0, fmt.Errorf("%w after %s: %w", ErrGaveUp, w.p.Timeout, err)
		}
		next = min(next, left)
	}
	return next, nil
}

func (w *Waiter) sleep(ctx context.Context, d time.Duration, err error) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w (last error: %w)", context.Cause(ctx), err)
	case <-t.C:
		return nil
	}
}

// Reset starts the backoff over (after progress).
func (w *Waiter) Reset() { w.b.Reset(); w.start = time.Now() }
