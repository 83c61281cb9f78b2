package verify

import (
	"context"
	"sync"
	"time"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Key is a device's registered key as the ledger registry holds it.
type Key struct {
	Device  string
	Key     reading.PublicKey
	Revoked bool
	Height  uint64 // ledger block of the record's last change
	// OptIn: the device's readings are stored only with its owner's consent to collection.
	OptIn bool
}

type cached struct {
	Key
	expanded *voi.ExpandedPublicKey // Ed25519 only
}

// FetchFunc looks a device up in the ledger registry: (key, true) if registered, (_, false) if
// unknown, an error if the ledger could not answer.
type FetchFunc func(ctx context.Context, device string) (Key, bool, error)

// Keys is the device-key cache of an ingest worker. The services layer keeps it current by
// applying the registry changes of each new block (Apply); a device missing from the cache is
// fetched from the ledger once (a device registered a moment ago), and a device the ledger does
// not know is remembered as unknown for a short while, so that a flood of readings from an
// unknown device does not become a flood of ledger queries.
type Keys struct {
	fetch   FetchFunc
	negTTL  time.Duration
	mu      sync.RWMutex
	keys    map[string]*cached
	unknown map[string]time.Time // device -> until when it is known to be unknown
}

// NewKeys returns an empty cache; fetch may be nil (then only Apply fills it).
func NewKeys(fetch FetchFunc) *Keys {
	return &Keys{fetch: fetch, negTTL: time.Second, keys: map[string]*cached{}, unknown: map[string]time.Time{}}
}

func expand(k Key) *cached {
	c := &cached{Key: k}
	if k.Key.Alg == reading.Ed25519 {
		if e, err := voi.NewExpandedPublicKey(voi.PublicKey(k.Key.Key)); err == nil {
			c.expanded = e
		}
	}
	return c
}

// Apply stores keys; for a device already cached, the record of the later height wins.
func (k *Keys) Apply(keys []Key) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range keys {
		if old, ok := k.keys[key.Device]; ok && old.Height > key.Height {
			continue
		}
		k.keys[key.Device] = expand(key)
		delete(k.unknown, key.Device)
	}
}

// Lookup returns a device's key: from the cache, or from the ledger on a miss.
func (k *Keys) Lookup(ctx context.Context, device string) (Key, bool, error) {
	c, ok, err := k.lookup(ctx, device)
	if c == nil {
		return Key{}, ok, err
	}
	return c.Key, ok, err
}

func (k *Keys) lookup(ctx context.Context, device string) (*cached, bool, error) {
	k.mu.RLock()
	c, ok := k.keys[device]
	until, neg := k.unknown[device]
	k.mu.RUnlock()
	switch {
	case ok:
		return c, true, nil
	case neg && time.Now().Before(until), k.fetch == nil:
		return nil, false, nil
	}
	key, found, err := k.fetch(ctx, device)
	if err != nil {
		return nil, false, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if !found {
		k.unknown[device] = time.Now().Add(k.negTTL)
		return nil, false, nil
	}
	if old, ok := k.keys[device]; ok && old.Height > key.Height {
		return old, true, nil
	}
	c = expand(key)
	k.keys[device] = c
	return c, true, nil
}
