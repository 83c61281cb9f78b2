package anchoring

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/schemas/stream"
)

// Intents is the write-ahead record of anchors being submitted: the active service writes an
// anchor there (its entry and batches) before it submits the entry, and deletes it once the
// anchor is recorded in ClickHouse. A service killed between the ledger's commit and the record
// leaves its intent; the next active service finds the entry on the ledger and records the
// anchor, so that no committed anchor is left without its batches (the audit would report it as
// missing). A JetStream key-value bucket (stream.AnchorIntentsBucket), kept a day at most.
type Intents struct {
	kv jetstream.KeyValue
}

// intentMaxAge bounds how long an intent nobody resolved stays in the bucket.
const intentMaxAge = 24 * time.Hour

// OpenIntents creates the bucket if it is missing (replicas copies) and returns it.
func OpenIntents(ctx context.Context, js jetstream.JetStream, replicas int) (*Intents, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      stream.AnchorIntentsBucket,
		Description: "anchors written before they are submitted to the ledger, until they are recorded",
		History:     1,
		TTL:         intentMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("anchoring intents: bucket %s: %w", stream.AnchorIntentsBucket, err)
	}
	return &Intents{kv: kv}, nil
}

func intentKey(id [16]byte) string { return "intent." + hex.EncodeToString(id[:]) }

// put writes a's intent.
func (i *Intents) put(ctx context.Context, a Anchor) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if _, err := i.kv.Put(ctx, intentKey(a.ID), b); err != nil {
		return fmt.Errorf("anchoring: write intent of anchor %x: %w", a.ID, err)
	}
	return nil
}

// remove deletes an intent (a missing one is not an error).
func (i *Intents) remove(ctx context.Context, id [16]byte) error {
	if err := i.kv.Delete(ctx, intentKey(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("anchoring: delete intent of anchor %x: %w", id, err)
	}
	return nil
}

// list returns every intent in the bucket.
func (i *Intents) list(ctx context.Context) ([]Anchor, error) {
	keys, err := i.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("anchoring: list intents: %w", err)
	}
	var out []Anchor
	for k := range keys.Keys() {
		e, err := i.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // resolved meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("anchoring: read intent %s: %w", k, err)
		}
		var a Anchor
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			return nil, fmt.Errorf("anchoring: intent %s: %w", k, err)
		}
		out = append(out, a)
	}
	return out, nil
}
