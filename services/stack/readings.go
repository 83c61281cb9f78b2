package stack

import (
	"context"
	"fmt"
	"sync"

	"github.com/anchorline/anchorline/schemas/lookup"
	"github.com/anchorline/anchorline/services/store"
)

// Limits of readingLoader: queries in flight at once, keys per query.
const (
	lookupsInFlight = 2
	lookupKeys      = 256
)

// readingLoader looks readings up for concurrent requests, many per ClickHouse query: a request
// whose key arrives while lookupsInFlight queries are running waits for the next query, which
// takes every key waiting by then (up to lookupKeys). ClickHouse 18.16 reads a whole granule per
// key and pays a fixed cost per query, so under load the fixed cost is shared; an idle loader
// asks at once, for one key. No request waits for a timer.
type readingLoader struct {
	store *store.Store

	mu      sync.Mutex
	pending []*readingWait
	running int
}

type readingWait struct {
	key  store.ReadingKey
	rows []store.ReadingRow
	err  error
	done chan struct{}
}

// get returns the stored rows of a reading (several if it was stored twice), ordered by batch
// id, or an error wrapping lookup.ErrNotFound.
func (l *readingLoader) get(ctx context.Context, key store.ReadingKey) ([]store.ReadingRow, error) {
	w := &readingWait{key: key, done: make(chan struct{})}
	l.mu.Lock()
	l.pending = append(l.pending, w)
	lead := l.running < lookupsInFlight
	if lead {
		l.running++
	}
	l.mu.Unlock()
	if lead {
		l.run(ctx, w)
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	if w.err != nil {
		return nil, w.err
	}
	if len(w.rows) == 0 {
		return nil, fmt.Errorf("%w: reading %s seq %d", lookup.ErrNotFound, key.Device, key.Seq)
	}
	return w.rows, nil
}

// run answers waiting keys, a query at a time, until own is answered; then, if keys still wait,
// it hands its place to a goroutine that goes on (so that a request does not serve others for
// ever), else it gives its place up. With own nil it runs until no key waits.
func (l *readingLoader) run(ctx context.Context, own *readingWait) {
	for {
		l.mu.Lock()
		if len(l.pending) == 0 {
			l.running--
			l.mu.Unlock()
			return
		}
		if own != nil && isDone(own.done) {
			l.mu.Unlock()
			go l.run(context.WithoutCancel(ctx), nil)
			return
		}
		n := min(len(l.pending), lookupKeys)
		ws := l.pending[:n:n]
		l.pending = l.pending[n:]
		l.mu.Unlock()

		keys := make([]store.ReadingKey, len(ws))
		for i, w := range ws {
			keys[i] = w.key
		}
		qctx, cancel := loadContext(ctx)
		found, err := l.store.ReadingsOf(qctx, keys)
		cancel()
		for _, w := range ws {
			w.rows, w.err = found[w.key], err
			close(w.done)
		}
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
