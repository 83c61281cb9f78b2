// Package store reads what ingest and anchoring wrote to ClickHouse, for the HTTP API and proof
// bundles, and records committed anchors (`anchors`, `batch_anchors`).
package store
