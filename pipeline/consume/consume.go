package consume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Runtime names (docs/architecture.md).
const (
	ReadingsStream   = "READINGS"
	ReadingsSubjects = "iot.readings.>"
	IngestConsumer   = "ingest"
	BatchesStream    = "BATCHES"
	BatchesSubject   = "anchorline.batches"
	AnchorConsumer   = "anchor"
)

// StreamMaxMsgSize is the largest message READINGS accepts. It is well above ingest's reading
// limit on purpose: an oversize reading must reach ingest to be quarantined as too_large with
// its bytes, rather than be refused at publish where nobody records it.
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
		Name:        ReadingsStream,
		Description: "signed device readings (COSE_Sign1)",
		Subjects:    []string{ReadingsSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxMsgSize:  StreamMaxMsgSize,
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("stream %s: %w", ReadingsStream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        BatchesStream,
		Description: "batch records (id, Merkle root, size) waiting to be anchored",
		Subjects:    []string{BatchesSubject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  10 * time.Minute,
	}); err != nil {
		return fmt.Errorf("stream %s: %w", BatchesStream, err)
	}
	for _, c := range []struct {
		stream string
		cfg    jetstream.ConsumerConfig
	}{
		{ReadingsStream, jetstream.ConsumerConfig{Durable: IngestConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: ackWait, MaxAckPending: maxAckPending, MaxDeliver: -1, MaxRequestBatch: 0,
			Description: "ingest workers share it"}},
		{BatchesStream, jetstream.ConsumerConfig{Durable: AnchorConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: 60 * time.Second, MaxAckPending: 100_000, MaxDeliver: -1, Description: "the anchor service"}},
	} {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.stream, c.cfg); err != nil {
			return fmt.Errorf("consumer %s on %s: %w", c.cfg.Durable, c.stream, err)
		}
	}
	return nil
}

// BatchRecord is what ingest publishes to BATCHES for each flushed batch, with Nats-Msg-Id set to
// the batch id so that a repeated publish is dropped.
type BatchRecord struct {
	ID      string `json:"id"`   // 16 bytes, hex
	Root    string `json:"root"` // 32 bytes, hex
	Size    int    `json:"size"`
	TSMin   uint64 `json:"ts_min"`
	TSMax   uint64 `json:"ts_max"`
	Created int64  `json:"created_ms"`
	Worker  string `json:"worker"`
}

// PublishBatch publishes a batch record and waits until JetStream has stored it.
func PublishBatch(ctx context.Context, js jetstream.JetStream, r BatchRecord) error {
	if r.ID == "" {
		return errors.New("batch record without id")
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(BatchesSubject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, r.ID)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish batch record %s: %w", r.ID, err)
	}
	return nil
}
