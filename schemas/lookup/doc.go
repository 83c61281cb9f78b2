// Package lookup holds the two answers, other than the record itself, that asking Anchorline
// for a stored record can get: ErrNotFound (nothing is stored under that key: a reading, batch,
// anchor, device, ledger entry, height or log size) and ErrNotAnchored (the reading or batch is
// stored, but no committed anchor covers it yet; ask again later).
//
// They are one contract across the layers: the store and the ledger client return them, the
// audit and the HTTP API server match them, the API answers 404 and 409 for them, and the API
// client turns those statuses back into them. Every layer wraps them with %w and its own
// context, so errors.Is gives the same answer wherever the error is looked at.
package lookup
