// Package audit recomputes what is stored against what the ledger committed: for every batch
// in a range it rehashes each reading's raw bytes, rebuilds the batch root and the anchor root,
// and compares them with the anchor entry read from the ledger itself. It reports modified,
// missing, inserted and unanchored readings by device and seq; ClickHouse is not trusted.
// It reads the store in windows of batches (a few queries per window, the next window read
// while this one is hashed on every core), so its memory is bounded whatever the range.
package audit
