package consume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/schemas/stream"
)

// StreamMaxMsgSize is the largest message stream.Readings accepts. It is well above ingest's
// reading limit on purpose: an oversize reading must reach ingest to be quarantined as too_large
// with its bytes, rather than be refused at publish where nobody records it.
const StreamMaxMsgSize = 1 << 20

// EnsureStreams creates or updates both streams (file storage) and both durable pull consumers;
// ackWait is how long a worker has to acknowledge a reading before it is redelivered (0: 30s).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, maxAckPending int, ackWait time.Duration) error {
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	if maxAckPending <= 0 {
		return fmt.Errorf("ingest.max_ack_pending %d: must be positive", maxAckPending)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        stream.Readings,
		Description: "signed device readings (COSE_Sign1)",
		Subjects:    []string{stream.ReadingsSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxMsgSize:  StreamMaxMsgSize,
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("stream %s: %w", stream.Readings, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        stream.Batches,
		Description: "batch records (id, Merkle root, size) waiting to be anchored",
		Subjects:    []string{stream.BatchesSubject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  10 * time.Minute,
	}); err != nil {
		return fmt.Errorf("stream %s: %w", stream.Batches, err)
	}
	for _, c := range []struct {
		stream string // the stream the consumer reads
		cfg    jetstream.ConsumerConfig
	}{
		{stream.Readings, jetstream.ConsumerConfig{Durable: stream.IngestConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: ackWait, MaxAckPending: maxAckPending, MaxDeliver: -1, MaxRequestBatch: 0,
			Description: "ingest workers share it"}},
		{stream.Batches, jetstream.ConsumerConfig{Durable: stream.AnchorConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: 60 * time.Second, MaxAckPending: 100_000, MaxDeliver: -1, Description: "the anchor service"}},
	} {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.stream, c.cfg); err != nil {
			return fmt.Errorf("consumer %s on %s: %w", c.cfg.Durable, c.stream, err)
		}
	}
	return nil
}

// PublishBatch publishes a batch record on stream.BatchesSubject, with Nats-Msg-Id set to its
// id, and waits until JetStream has stored it.
func PublishBatch(ctx context.Context, js jetstream.JetStream, r stream.BatchRecord) error {
	if r.ID == "" {
		return errors.New("batch record without id")
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode batch record %s: %w", r.ID, err)
	}
	msg := nats.NewMsg(stream.BatchesSubject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, r.ID)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish batch record %s: %w", r.ID, err)
	}
	return nil
}
