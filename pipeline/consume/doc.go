// Package consume sets up the JetStream side of the pipeline: the streams READINGS (what devices
// publish) and BATCHES (batch records for the anchor service), the durable pull consumers that
// ingest workers and the anchor service share, and the batch record format.
package consume
