// Package merkle holds the hashes of Anchorline's contract (DESIGN 2.2): reading leaves,
// batch and anchor roots, ledger log leaves, the device registry root and the ledger app
// hash in both versions (AppHash; AppHashV2Of over a StateRoot of named sub-roots, each
// provable on its own with ProveSubRoot and VerifySubRoot), all RFC 6962 trees over SHA-256. It does no I/O, so ingest may import it to compute batch roots while the ledger
// and the offline verifier use the same code.
package merkle
