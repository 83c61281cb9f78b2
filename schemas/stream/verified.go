package stream

import (
	"fmt"
	"hash/fnv"
	"strconv"

	"github.com/fxamacker/cbor/v2"
)

// Names of the rules stage's streams and consumers (schemas/rule.md "the rules stage").
const (
	// Verified is the stream of verified readings that ingest publishes, after a batch is
	// stored and before its messages are acknowledged, for the rules stage: one message per
	// batch, shard and chunk of at most MaxVerifiedChunk readings, on VerifiedSubject(shard).
	// It is a work queue: a message leaves it once the rules stage acknowledges it.
	Verified = "VERIFIED"
	// VerifiedSubjects is what Verified captures.
	VerifiedSubjects = "anchorline.verified.>"
	// RulesConsumerPrefix + shard is the durable consumer of one shard's subject; the rules
	// processes serving a shard share it through the priority group RulesGroup (pinned: one
	// of them receives, the others take over when it stops pulling).
	RulesConsumerPrefix = "rules-"
	RulesGroup          = "rules"
	// Events is the stream of rule events (rule.SubjectPrefix + ">"), deduplicated by their
	// Nats-Msg-Id, the event id.
	Events = "EVENTS"
	// CommandsConsumer and WebhooksConsumer are the durable consumers on Events of the rules
	// stage's actions: commands to devices (pinned to one process, priority group RulesGroup)
	// and webhooks (shared).
	CommandsConsumer = "commands"
	WebhooksConsumer = "webhooks"
	// EventsStoreConsumer is the durable consumer on Events (rule.SubjectPrefix only) through
	// which the rules processes store the events in ClickHouse, many per insert (shared).
	EventsStoreConsumer = "events-store"
	// EventsPerInsert is the most events the rules stage stores in one ClickHouse insert.
	EventsPerInsert = 20_000
	// ActionsSubjects are the Events stream's other subjects: an event whose rule has a
	// command or webhook action is published once more on ActionSubject for each such kind,
	// which its consumer filters on, so that the action runners receive only the events they
	// act on (most rules only record their events).
	ActionsSubjects = "anchorline.actions.>"
)

// ActionSubject is the subject of an event (of rule, for device) that has an action of kind:
// anchorline.actions.<kind>.<rule>.<device>.
func ActionSubject(kind, rule, device string) string {
	return "anchorline.actions." + kind + "." + rule + "." + device
}

// ActionFilter is the subject filter of the consumer of actions of kind.
func ActionFilter(kind string) string { return "anchorline.actions." + kind + ".>" }

// MaxVerifiedChunk bounds the readings of one Verified message, and MaxVerifiedBytes its
// encoding (a chunk over it is split): well under NATS's default 1 MiB payload.
const (
	MaxVerifiedChunk = 10_000
	MaxVerifiedBytes = 512 << 10
)

// VerifiedSubject is the subject of a shard's verified readings.
func VerifiedSubject(shard int) string { return "anchorline.verified." + strconv.Itoa(shard) }

// ShardOf is the shard of a device among shards (FNV-1a of its id): every reading of a device
// goes to one shard, so that one process sees a device's readings in order.
func ShardOf(device string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(device)) // never fails
	return int(h.Sum32() % uint32(shards))
}

// VerifiedBatch is one Verified message: readings of one stored batch (in leaf_index order)
// whose devices are in one shard, encoded as CBOR with integer keys (Encode, DecodeVerified).
type VerifiedBatch struct {
	Batch []byte `cbor:"1,keyasint"` // the batch id, 16 bytes
	// Height is the ledger height whose device registry the ingest worker had applied when it
	// verified the batch; the rules stage evaluates the rules in force at that height, so a
	// redelivered message is evaluated under the same rule versions.
	Height   uint64            `cbor:"2,keyasint"`
	Readings []VerifiedReading `cbor:"3,keyasint"`
}

// VerifiedReading is what the rules stage needs of a verified reading.
type VerifiedReading struct {
	Device     string `cbor:"1,keyasint"`
	Seq        uint64 `cbor:"2,keyasint"`
	TS         uint64 `cbor:"3,keyasint"` // device time, Unix ms
	ReceivedMS int64  `cbor:"4,keyasint"` // when JetStream received it, Unix ms
	// Key 5 held the reading's leaf, which the stage does not read; a message with it decodes.
	Metrics []VerifiedMetric  `cbor:"6,keyasint"`
	Tags    map[string]string `cbor:"7,keyasint,omitempty"`
}

// VerifiedMetric is a metric as [name, value].
type VerifiedMetric struct {
	_     struct{} `cbor:",toarray"`
	Name  string
	Value float64
}

// Encode returns b's CBOR encoding.
func (b *VerifiedBatch) Encode() ([]byte, error) { return cbor.Marshal(b) }

// DecodeVerified decodes a Verified message.
func DecodeVerified(data []byte) (*VerifiedBatch, error) {
	var b VerifiedBatch
	if err := cbor.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("verified batch: %w", err)
	}
	if len(b.Batch) != 16 {
		return nil, fmt.Errorf("verified batch: id of %d bytes, want 16", len(b.Batch))
	}
	return &b, nil
}
