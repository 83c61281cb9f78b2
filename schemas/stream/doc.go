// Package stream is the JetStream contract between the stages: the names of the streams,
// subjects and durable consumers, the batch record that ingest publishes on BATCHES and the
// anchor service consumes, and NewID, which makes the 16-byte time-ordered ids of batches and
// anchors.
//
// Readings: devices publish on reading.Subject(device) (iot.readings.<device id>), which the
// stream Readings captures with ReadingsSubjects; ingest workers share the durable consumer
// IngestConsumer. Batch records: ingest publishes one BatchRecord per flushed batch on
// BatchesSubject, JSON-encoded, with the Nats-Msg-Id header set to the record's id so that a
// repeated publish is dropped; the anchor service reads them through the durable consumer
// AnchorConsumer of the stream Batches. The encoding of BatchRecord must stay byte for byte
// what it is (testdata/batch_record.json): records already stored in BATCHES must still decode.
//
// How the streams are configured (limits, duplicate windows, ack waits) is pipeline/consume's
// business; this package holds only what both sides must agree on.
package stream
