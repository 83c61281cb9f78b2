// Package consume sets up the JetStream side of the pipeline: the streams stream.Readings (what
// devices publish) and stream.Batches (batch records for the anchor service) with their limits
// and duplicate windows, the durable pull consumers that ingest workers and the anchor service
// share, and the publishing of batch records. The names and the record format are the contract
// in schemas/stream.
package consume
