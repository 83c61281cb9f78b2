package anchoring

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
//
// A resolved intent is purged from the bucket's stream, leaving no delete marker, so that the
// stream holds exactly the unresolved intents: listing them is one stream info (its subjects)
// and a read per intent, with no consumer (which the anchoring role may not create).
type Intents struct {
	kv     jetstream.KeyValue
	stream jetstream.Stream
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
	st, err := js.Stream(ctx, intentsStream)
	if err != nil {
		return nil, fmt.Errorf("anchoring intents: stream %s: %w", intentsStream, err)
	}
	return &Intents{kv: kv, stream: st}, nil
}

// intentsStream is the stream behind the bucket, and intentSubjects its keys' subjects
// (JetStream's key-value naming).
const (
	intentsStream  = "KV_" + stream.AnchorIntentsBucket
	intentSubjects = "$KV." + stream.AnchorIntentsBucket + "."
)

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

// Remove purges an intent from the stream (a missing one is not an error).
func (i *Intents) Remove(ctx context.Context, id [16]byte) error {
	if err := i.stream.Purge(ctx, jetstream.WithPurgeSubject(intentSubjects+intentKey(id))); err != nil {
		return fmt.Errorf("anchoring: remove intent of anchor %x: %w", id, err)
	}
	return nil
}

// List returns every unresolved intent in the bucket.
func (i *Intents) List(ctx context.Context) ([]Anchor, error) {
	info, err := i.stream.Info(ctx, jetstream.WithSubjectFilter(intentSubjects+">"))
	if err != nil {
		return nil, fmt.Errorf("anchoring: list intents: %w", err)
	}
	var out []Anchor
	for subj, n := range info.State.Subjects {
		k, ok := strings.CutPrefix(subj, intentSubjects)
		if !ok || n == 0 {
			continue
		}
		e, err := i.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // resolved meanwhile, or a delete marker an earlier version left
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
