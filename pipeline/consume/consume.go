package consume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
)

// StreamMaxMsgSize is the largest message stream.Readings accepts. It is well above ingest's
// reading limit on purpose: an oversize reading must reach ingest to be quarantined as too_large
// with its bytes, rather than be refused at publish where nobody records it.
const StreamMaxMsgSize = 1 << 20

// ErrReplicas means an existing stream has another number of replicas than configured.
var ErrReplicas = errors.New("stream replicas differ from nats.replicas")

// Topology is how Anchorline's streams and consumers are made: Replicas per stream (1 on one
// server, 3 on a cluster), the ingest consumer's MaxAckPending and AckWait (0: 30s).
type Topology struct {
	Replicas      int
	MaxAckPending int
	AckWait       time.Duration
	// ReadingsMaxAge is the Readings stream's MaxAge (0: none). Readings leave the stream once
	// stored and anchored (PurgeAnchored); this is only a safety limit for the disk, which also
	// drops what ingest has not stored if it is down for longer.
	ReadingsMaxAge time.Duration
}

// EnsureStreams creates or updates both streams (file storage, one replica) and both durable
// pull consumers; ackWait is how long a worker has to acknowledge a reading before it is
// redelivered (0: 30s). Services call the part they own: Topology.EnsureIngest and
// Topology.EnsureAnchoring.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, maxAckPending int, ackWait time.Duration) error {
	t := Topology{Replicas: 1, MaxAckPending: maxAckPending, AckWait: ackWait}
	if err := t.EnsureIngest(ctx, js); err != nil {
		return err
	}
	return t.EnsureAnchoring(ctx, js)
}

// EnsureIngest creates or updates what ingest reads and writes: the Readings stream and its
// durable consumer, and the Batches stream it publishes batch records on. A stream that exists
// with another number of replicas is an error wrapping ErrReplicas.
func (t Topology) EnsureIngest(ctx context.Context, js jetstream.JetStream) error {
	ackWait := t.AckWait
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	if t.MaxAckPending <= 0 {
		return fmt.Errorf("ingest.max_ack_pending %d: must be positive", t.MaxAckPending)
	}
	rs := t.stream(readingsStream)
	rs.MaxAge = t.ReadingsMaxAge
	if err := ensureStream(ctx, js, rs); err != nil {
		return fmt.Errorf("stream %s: %w", stream.Readings, err)
	}
	if err := ensureStream(ctx, js, t.stream(batchesStream)); err != nil {
		return fmt.Errorf("stream %s: %w", stream.Batches, err)
	}
	// Acknowledgements are explicit, one per message, not AckAll: the workers share the
	// durable consumer, so an AckAll from one worker would acknowledge messages another worker
	// holds and has not stored yet; and inside one worker, flushes complete out of order, chain
	// suspects are acknowledged later than the readings after them, and deferred messages are
	// nak'ed. Each ack is one small publish that the client batches into its writes (the server
	// spends about 0.4 µs on one: pipeline/ingest BenchmarkDrain's profile).
	c := jetstream.ConsumerConfig{Durable: stream.IngestConsumer, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: ackWait, MaxAckPending: t.MaxAckPending, MaxDeliver: -1, MaxRequestBatch: 0,
		Description: "ingest workers share it"}
	if err := ensureConsumer(ctx, js, stream.Readings, c); err != nil {
		return fmt.Errorf("consumer %s on %s: %w", c.Durable, stream.Readings, err)
	}
	return nil
}

// EnsureAnchoring creates or updates what the anchor service reads: the Batches stream and its
// durable consumer. Its ack wait is short (the service marks the records it works on in
// progress every 5 s): the records an active service held when it died reach the standby that
// takes over within it.
func (t Topology) EnsureAnchoring(ctx context.Context, js jetstream.JetStream) error {
	if err := ensureStream(ctx, js, t.stream(batchesStream)); err != nil {
		return fmt.Errorf("stream %s: %w", stream.Batches, err)
	}
	c := jetstream.ConsumerConfig{Durable: stream.AnchorConsumer, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 15 * time.Second, MaxAckPending: 100_000, MaxDeliver: -1, Description: "the anchor service"}
	if err := ensureConsumer(ctx, js, stream.Batches, c); err != nil {
		return fmt.Errorf("consumer %s on %s: %w", c.Durable, stream.Batches, err)
	}
	return nil
}

// stream is cfg with the topology's replicas.
func (t Topology) stream(cfg jetstream.StreamConfig) jetstream.StreamConfig {
	cfg.Replicas = max(t.Replicas, 1)
	return cfg
}

var (
	readingsStream = jetstream.StreamConfig{
		Name:        stream.Readings,
		Description: "signed device readings (COSE_Sign1)",
		Subjects:    []string{stream.ReadingsSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxMsgSize:  StreamMaxMsgSize,
		Duplicates:  2 * time.Minute,
	}
	batchesStream = jetstream.StreamConfig{
		Name:        stream.Batches,
		Description: "batch records (id, Merkle root, size) waiting to be anchored",
		Subjects:    []string{stream.BatchesSubject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  10 * time.Minute,
	}
)

// ensureStream creates the stream, or updates it if the fields Anchorline sets differ; a stream
// that already has them is left alone (every worker calls this at start, and an update while
// another worker creates its consumer is a data race inside nats-server v2.15).
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, want)
		return err
	}
	if err != nil {
		return err
	}
	have := s.CachedInfo().Config
	if have.Replicas != want.Replicas {
		return fmt.Errorf("%w: it has %d, nats.replicas is %d: set nats.replicas to %d, or change the stream first (nats stream edit %s --replicas %d)",
			ErrReplicas, have.Replicas, want.Replicas, have.Replicas, want.Name, want.Replicas)
	}
	maxMsgSize := want.MaxMsgSize
	if maxMsgSize == 0 {
		maxMsgSize = -1 // the server stores "no limit" as -1
	}
	if have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) && have.Storage == want.Storage &&
		have.Retention == want.Retention && have.MaxMsgSize == maxMsgSize && have.Duplicates == want.Duplicates && have.MaxAge == want.MaxAge {
		return nil
	}
	_, err = js.UpdateStream(ctx, want)
	return err
}

// ensureConsumer creates the durable consumer, or updates it if the fields Anchorline sets
// differ.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, streamName string, want jetstream.ConsumerConfig) error {
	c, err := js.Consumer(ctx, streamName, want.Durable)
	if err == nil {
		have := c.CachedInfo().Config
		if have.Description == want.Description && have.AckPolicy == want.AckPolicy && have.AckWait == want.AckWait &&
			have.MaxAckPending == want.MaxAckPending && have.MaxDeliver == want.MaxDeliver && have.MaxRequestBatch == want.MaxRequestBatch &&
			have.FilterSubject == want.FilterSubject {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	_, err = js.CreateOrUpdateConsumer(ctx, streamName, want)
	return err
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

// RulesPinnedTTL is how long a rules process that stopped pulling keeps its shard pinned
// before another process of the shard takes over.
const RulesPinnedTTL = 10 * time.Second

// RulesMaxAckPending is how many Verified messages of a shard its process may hold
// unacknowledged: one. A process that takes a shard over gets the one its predecessor left
// before any later message, so it evaluates a device's readings in seq order; with more, it
// would get later messages first (a redelivery waits for the ack wait) and evaluate the
// earlier readings only as history, without their events (TestRulesProcessKilled). Ingest
// makes the messages large instead (stream.MaxVerifiedChunk), so that a ClickHouse insert
// stores the events of many readings.
const RulesMaxAckPending = 1

// EnsureVerified creates or updates the Verified stream (a work queue) with one durable
// consumer per shard, filtered to its subject and pinned to one process at a time (priority
// group stream.RulesGroup). Ingest calls it before it publishes verified readings, so that none
// is published before its shard's consumer exists (a work queue keeps a message until a
// consumer acknowledges it). A shard's consumer hands out one message at a time
// (MaxAckPending 1): a message redelivered after a crash comes before any later one, so each
// device's readings are evaluated in the order they were stored, and evaluated again to the
// same events.
func (t Topology) EnsureVerified(ctx context.Context, js jetstream.JetStream, shards int) error {
	if shards < 1 {
		return fmt.Errorf("rules.shards %d: must be at least 1", shards)
	}
	if err := ensureStream(ctx, js, t.stream(verifiedStream)); err != nil {
		return fmt.Errorf("stream %s: %w", stream.Verified, err)
	}
	for i := range shards {
		c := jetstream.ConsumerConfig{Durable: stream.RulesConsumerPrefix + strconv.Itoa(i), FilterSubject: stream.VerifiedSubject(i),
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Second, MaxAckPending: RulesMaxAckPending, MaxDeliver: -1,
			PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{stream.RulesGroup}, PinnedTTL: RulesPinnedTTL,
			Description: fmt.Sprintf("the rules processes of shard %d of %d", i, shards)}
		if err := ensureConsumer(ctx, js, stream.Verified, c); err != nil {
			return fmt.Errorf("consumer %s on %s: %w", c.Durable, stream.Verified, err)
		}
	}
	return nil
}

// EnsureRules creates or updates what the rules stage reads and writes: EnsureVerified's
// stream and consumers, and the Events stream.
func (t Topology) EnsureRules(ctx context.Context, js jetstream.JetStream, shards int) error {
	if err := t.EnsureVerified(ctx, js, shards); err != nil {
		return err
	}
	if err := ensureStream(ctx, js, t.stream(eventsStream)); err != nil {
		return fmt.Errorf("stream %s: %w", stream.Events, err)
	}
	for _, c := range []jetstream.ConsumerConfig{
		{Durable: stream.CommandsConsumer, FilterSubject: stream.ActionFilter(rule.ActionCommand), AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 1, MaxDeliver: -1,
			PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{stream.RulesGroup}, PinnedTTL: RulesPinnedTTL,
			Description: "the rules stage's commands to devices (one process at a time)"},
		{Durable: stream.WebhooksConsumer, FilterSubject: stream.ActionFilter(rule.ActionWebhook), AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 64, MaxDeliver: -1,
			Description: "the rules stage's webhooks"},
		{Durable: stream.EventsStoreConsumer, FilterSubject: rule.SubjectPrefix + ">", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxAckPending: 4 * stream.EventsPerInsert, MaxDeliver: -1,
			Description: "the rules stage's events, stored in ClickHouse many per insert"},
	} {
		if err := ensureConsumer(ctx, js, stream.Events, c); err != nil {
			return fmt.Errorf("consumer %s on %s: %w", c.Durable, stream.Events, err)
		}
	}
	return nil
}

var (
	verifiedStream = jetstream.StreamConfig{
		Name:        stream.Verified,
		Description: "verified readings of stored batches, for the rules stage",
		Subjects:    []string{stream.VerifiedSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  10 * time.Minute,
		// An operator's safety limit, not retention: with no rules process running for a
		// week, the oldest verified readings leave unevaluated (they stay stored and anchored).
		MaxAge: 7 * 24 * time.Hour,
	}
	eventsStream = jetstream.StreamConfig{
		Name:        stream.Events,
		Description: "rule events (schemas/rule.md)",
		Subjects:    []string{rule.SubjectPrefix + ">", stream.ActionsSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  10 * time.Minute,
	}
)
