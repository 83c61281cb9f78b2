// Package bench is `anchorline bench`: it measures ingest against an in-process stack
// (embedded NATS and ledger, the configured ClickHouse, a fresh database) with ingest workers
// as separate processes, in two modes — drain (a pre-filled stream of signed readings) and live
// (a fixed publish rate) — next to two references on the same machine: the raw JetStream drain
// rate of the same messages and the Ed25519 verification rate.
//
// RunLedger is `anchorline bench ledger`: the ledger alone (no NATS, no ClickHouse), a network
// of validators run in this process from `ledger init` homes (node.Testnet) — anchor latency
// with all validators up and with one down, and the anchor throughput ceiling — next to the
// same figures for one validator as the reference.
package bench
