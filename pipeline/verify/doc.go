// Package verify is where a reading is verified: it classifies each message from READINGS as a
// verified reading or a rejection with a reason code (size, COSE structure, kid and subject,
// device key from the ledger registry, signature, payload). Device keys are cached, with Ed25519
// keys kept expanded for fast verification.
package verify
