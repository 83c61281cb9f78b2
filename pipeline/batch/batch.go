package batch

import (
	"encoding/hex"
	"errors"
	"time"

	"github.com/anchorline/anchorline/anchor/merkle"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/stream"
)

// ErrEmpty is returned by Flush on an empty builder: an empty tree is not allowed.
var ErrEmpty = errors.New("batch: nothing to flush")

// Builder accumulates the readings of one batch. It builds the batch's Merkle tree as readings
// come (merkle.Frontier: the perfect subtrees so far, no allocation per reading), so that
// Flush only folds at most 64 hashes into the root.
type Builder struct {
	worker   string
	readings []write.Reading
	tree     merkle.Frontier
	first    time.Time // when the first reading was added
}

// New returns an empty builder whose batches name worker.
func New(worker string, capacity int) *Builder {
	return &Builder{worker: worker, readings: make([]write.Reading, 0, capacity)}
}

// Add appends a verified reading; its LeafIndex is set to its position.
func (b *Builder) Add(r write.Reading) {
	if len(b.readings) == 0 {
		b.first = time.Now()
	}
	r.LeafIndex = uint32(len(b.readings))
	b.readings = append(b.readings, r)
	b.tree.Append(r.Leaf, nil)
}

// Len is the number of readings in the batch.
func (b *Builder) Len() int { return len(b.readings) }

// Age is how long the oldest reading has waited; zero when empty.
func (b *Builder) Age() time.Duration {
	if len(b.readings) == 0 {
		return 0
	}
	return time.Since(b.first)
}

// Flush closes the batch: it computes the root, returns the batch and its record, and empties
// the builder.
func (b *Builder) Flush(now time.Time) (*write.Batch, stream.BatchRecord, error) {
	if len(b.readings) == 0 {
		return nil, stream.BatchRecord{}, ErrEmpty
	}
	root := b.tree.Root()
	out := &write.Batch{ID: stream.NewID(now), Root: root, Created: now, Worker: b.worker, Readings: b.readings}
	rec := stream.BatchRecord{ID: hex.EncodeToString(out.ID[:]), Root: root.String(), Size: uint64(len(b.readings)),
		TSMin: b.readings[0].TS, TSMax: b.readings[0].TS, Created: now.UnixMilli(), Worker: b.worker}
	for _, r := range b.readings {
		rec.TSMin, rec.TSMax = min(rec.TSMin, r.TS), max(rec.TSMax, r.TS)
	}
	b.readings = make([]write.Reading, 0, cap(b.readings))
	b.tree = merkle.Frontier{}
	return out, rec, nil
}
