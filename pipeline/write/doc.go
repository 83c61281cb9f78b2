// Package write holds every ClickHouse write, each a columnar batch insert: ingest's verified
// readings into `readings` and `metrics` with their batch record in `batches`, refused messages
// into `rejected`, broken chain links into `anomalies`, the rules stage's events into `events`,
// and the anchor service's committed anchors into `anchors` and `batch_anchors`. It reads
// nothing: the API's and the audit's reads are services/store's, the chain check's are
// pipeline/chain's, the rules stage's are pipeline/rules'.
package write
