// Package ledger is the Anchorline ledger: a CometBFT ABCI application that keeps an
// append-only RFC 6962 log of entries (anchors, device-key events and the authority entries that
// name anchoring keys, validators and admins), a registry of device records, and an app hash
// committing both after every block. It accepts an anchor only from an authorised anchoring key
// and a validator or admin-set change only with M of N admin signatures (authority.go,
// ../../schemas/ledger.md). Its state lives in its database (state.go): the log tree's nodes,
// the records and, on a chain of the second app hash version, the registry as a sparse Merkle
// tree (../smt), so memory and restart time do not grow with the fleet. And the Client that submits entries, confirms their inclusion and
// asks for proofs at any height.
package ledger
