// Package proof builds an auditor's proof bundle from stored data and the ledger, and verifies
// a bundle offline against a trust file, step by step: the reading's signature, the device's
// registry record, the batch, the anchor, the ledger log, the app hash and the signed header.
package proof
