package consume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/schemas/stream"
)

// ErrLowWaterUnknown: a batch not anchored yet has a record without its Readings stream
// sequences (a worker older than the field wrote it), so nothing below it can be known safe.
var ErrLowWaterUnknown = errors.New("a batch not anchored yet does not say which readings messages it holds")

// ReadingsLowWater returns the Readings stream sequence below which every message is stored
// in ClickHouse (its flush acknowledged it) and, if it is a reading, in an anchored batch:
// the ingest consumer's ack floor + 1, lowered to the lowest StreamSeqMin of the batch records
// the anchoring consumer has not acknowledged (the batches not anchored yet). The ack floor is
// read first: a flush publishes its batch record before it acknowledges its messages, so every
// message below that floor has its record in stream.Batches by the time the records are read.
func ReadingsLowWater(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	ingest, err := js.Consumer(ctx, stream.Readings, stream.IngestConsumer)
	if err != nil {
		return 0, fmt.Errorf("retention: consumer %s: %w", stream.IngestConsumer, err)
	}
	info, err := ingest.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("retention: consumer %s: %w", stream.IngestConsumer, err)
	}
	low := info.AckFloor.Stream + 1
	batches, err := js.Stream(ctx, stream.Batches)
	if err != nil {
		return 0, fmt.Errorf("retention: stream %s: %w", stream.Batches, err)
	}
	anchor, err := js.Consumer(ctx, stream.Batches, stream.AnchorConsumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, fmt.Errorf("retention: no anchoring service has consumed %s yet: %w", stream.Batches, err)
	}
	if err != nil {
		return 0, fmt.Errorf("retention: consumer %s: %w", stream.AnchorConsumer, err)
	}
	ainfo, err := anchor.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("retention: consumer %s: %w", stream.AnchorConsumer, err)
	}
	binfo, err := batches.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("retention: stream %s: %w", stream.Batches, err)
	}
	for seq := max(ainfo.AckFloor.Stream+1, binfo.State.FirstSeq); seq <= binfo.State.LastSeq; seq++ {
		m, err := batches.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // acknowledged out of order and removed, or deleted
		}
		if err != nil {
			return 0, fmt.Errorf("retention: batch record %d: %w", seq, err)
		}
		var rec stream.BatchRecord
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			continue // not a record: the anchoring service skips it too
		}
		if rec.StreamSeqMin == 0 {
			return 0, fmt.Errorf("retention: batch %s (record %d): %w", rec.ID, seq, ErrLowWaterUnknown)
		}
		low = min(low, rec.StreamSeqMin)
	}
	return low, nil
}

// PurgeAnchored removes from stream.Readings every message below ReadingsLowWater (stored,
// and anchored if a reading): they are in ClickHouse and under an anchor, and the stream need
// not keep them. It returns the low-water mark and how many messages it removed.
func PurgeAnchored(ctx context.Context, js jetstream.JetStream) (low, purged uint64, err error) {
	if low, err = ReadingsLowWater(ctx, js); err != nil {
		return 0, 0, err
	}
	s, err := js.Stream(ctx, stream.Readings)
	if err != nil {
		return 0, 0, fmt.Errorf("retention: stream %s: %w", stream.Readings, err)
	}
	if s.CachedInfo().State.FirstSeq >= low {
		return low, 0, nil
	}
	before := s.CachedInfo().State.Msgs
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(low)); err != nil {
		return 0, 0, fmt.Errorf("retention: purge %s below %d: %w", stream.Readings, low, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return low, 0, fmt.Errorf("retention: stream %s: %w", stream.Readings, err)
	}
	if before > info.State.Msgs {
		purged = before - info.State.Msgs
	}
	return low, purged, nil
}
