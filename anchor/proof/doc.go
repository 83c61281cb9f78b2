// Package proof builds an auditor's proof bundle from stored data and the ledger, and verifies
// a bundle offline against a trust file, step by step: the reading's signature, the device's
// registry record, the batch, the anchor, the ledger log, the app hash and the signed header.
// Bundles of both app hash versions are built and verified (v1: the sorted registry tree and
// the app hash over the registry root; v2: the registry's sparse Merkle tree and the app hash
// over a state root, merkle.AppState), each in its own canonical form (../../schemas/proof.md).
package proof
