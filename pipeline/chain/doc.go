// Package chain checks device chains (DESIGN 2.1 `prev`): a reading's prev must be the leaf of
// the device's previous stored reading, and a link that points elsewhere is recorded as an
// anomaly. Its core (Heads, the waiting suspects and the rules that settle or break a link) is
// pure: it takes the clock as a value and does no I/O, so table tests drive it. Around it, the
// Checker asks the other ingest workers over core NATS who stored a predecessor (wire.go) and
// looks links up in ClickHouse through a Lookup (Reader, clickhouse.go).
package chain
