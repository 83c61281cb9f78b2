// Package rules is the streaming rules stage: it reads the verified readings that ingest
// publishes once a batch is stored (stream.Verified, one shard per consumer, pinned to one
// process at a time), evaluates every rule in force at the batch's ledger height on each
// reading in device seq order (schemas/rule, the same evaluation the verifier runs), and stores
// and publishes each firing as an event, exactly once, before acknowledging the readings.
package rules
