// Package anchoring is the anchor service: it collects the batch records that ingest publishes
// to the JetStream stream BATCHES and, every interval, commits one anchor entry over all pending
// batch roots to the ledger. Batch records are acknowledged only after the entry is in a committed
// block and the anchor is recorded in ClickHouse, so a slow or failed ledger delays anchors but
// never loses them.
package anchoring
