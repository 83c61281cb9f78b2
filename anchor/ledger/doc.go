// Package ledger is the Anchorline ledger: a CometBFT ABCI application that keeps an
// append-only RFC 6962 log of entries (anchors and device-key events), a registry of device
// records, and an app hash committing both after every block; and the Client that submits
// entries, confirms their inclusion and asks for proofs at any height.
package ledger
