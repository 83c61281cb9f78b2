// Package write stores ingest's output in ClickHouse with columnar batch inserts: verified
// readings into `readings` and `metrics` with their batch record in `batches`, and refused
// messages into `rejected`.
package write
