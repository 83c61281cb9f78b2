package stream

import (
	"crypto/rand"
	"encoding/binary"
	"time"

	"github.com/anchorline/anchorline/schemas/reading"
)

// Names of the streams, subjects and durable consumers.
const (
	// Readings is the stream of signed readings (COSE_Sign1) that devices publish.
	Readings = "READINGS"
	// ReadingsSubjects is what Readings captures: every reading.Subject.
	ReadingsSubjects = reading.SubjectPrefix + ">"
	// IngestConsumer is the durable pull consumer on Readings that ingest workers share.
	IngestConsumer = "ingest"

	// Batches is the stream of batch records waiting to be anchored.
	Batches = "BATCHES"
	// BatchesSubject is the subject ingest publishes batch records on.
	BatchesSubject = "anchorline.batches"
	// AnchorConsumer is the durable pull consumer on Batches of the anchor service.
	AnchorConsumer = "anchor"
	// AnchoringBucket is the key-value bucket of the anchoring services' lease (which one is
	// active) and their batch claims (anchor/anchoring Lease).
	AnchoringBucket = "ANCHORING"
	// AnchorIntentsBucket is the key-value bucket where the active anchoring service writes each
	// anchor before submitting it, so that a successor records an anchor its predecessor
	// committed but did not live to record (anchor/anchoring Intents).
	AnchorIntentsBucket = "ANCHOR_INTENTS"
)

// BatchRecord is what ingest publishes on BatchesSubject for each flushed batch, JSON-encoded
// (encoding/json, fields in this order), with Nats-Msg-Id set to ID. The anchor service needs
// ID, Root and Size; the others describe the batch for operators.
type BatchRecord struct {
	ID      string `json:"id"`         // 16 bytes, lower-case hex (NewID)
	Root    string `json:"root"`       // the batch root (DESIGN 2.2), 32 bytes, lower-case hex
	Size    uint64 `json:"size"`       // readings in the batch, at least 1
	TSMin   uint64 `json:"ts_min"`     // the earliest device time in the batch, Unix ms
	TSMax   uint64 `json:"ts_max"`     // the latest device time in the batch, Unix ms
	Created int64  `json:"created_ms"` // when the batch was closed, Unix ms
	Worker  string `json:"worker"`     // the ingest worker that wrote it
	// StreamSeqMin and StreamSeqMax are the lowest and highest Readings stream sequence of
	// the messages of the flush that wrote the batch (its readings and the rejects stored with
	// them); 0 in records of workers older than the field. Retention purges Readings below the
	// lowest StreamSeqMin of the batches not anchored yet (consume.ReadingsLowWater).
	StreamSeqMin uint64 `json:"stream_seq_min,omitempty"`
	StreamSeqMax uint64 `json:"stream_seq_max,omitempty"`
}

// NewID returns a time-ordered 16-byte id, as batches and anchors have: 6 bytes of t's Unix
// milliseconds (big-endian), then 10 random bytes. Ids made in later milliseconds sort after.
func NewID(t time.Time) [16]byte {
	var id [16]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(t.UnixMilli()))
	copy(id[:6], ms[2:])
	_, _ = rand.Read(id[6:]) // crypto/rand.Read never returns an error
	return id
}
