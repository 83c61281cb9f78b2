// Package bench is `anchorline bench`: it measures ingest against an in-process stack
// (embedded NATS and ledger, the configured ClickHouse, a fresh database) with ingest workers
// as separate processes, in two modes — drain (a pre-filled stream of signed readings) and live
// (a fixed publish rate) — next to three references on the same machine: the raw JetStream drain
// rate of the same messages, the Ed25519 verification rate, and a plain connector (plain.go)
// that drains the same readings as unsigned JSON into one flat table the way generic connectors
// such as Telegraf do. For each drain it reports the CPU time per 1,000 readings of every
// process involved: the ingest workers, the bench process (embedded NATS and ledger), and the
// ClickHouse server when the bench started it (--clickhouse.embedded). While a drain runs the
// bench asks ClickHouse nothing: it follows the batch records in BATCHES and checks the stored
// rows once at the end, and before it starts it waits until the server runs no merge, so that
// what an earlier phase or another database left behind is not counted.
//
// RunLedger is `anchorline bench ledger`: the ledger alone (no NATS, no ClickHouse), a network
// of validators run in this process from `ledger init` homes (node.Testnet) — anchor latency
// with all validators up and with one down, and the anchor throughput ceiling — next to the
// same figures for one validator as the reference.
package bench
