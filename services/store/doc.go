// Package store reads what ingest and anchoring wrote to ClickHouse (through pipeline/write),
// for the HTTP API, proof bundles and the audit. It writes nothing.
package store
