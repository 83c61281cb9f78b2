// Package entry is the wire format of the ledger's log entries (DESIGN 2.3) and of the device
// records in its registry: deterministic CBOR maps, with the admin signatures that authorise device
// key events. The exact fields are documented in ../ledger.md.
package entry
