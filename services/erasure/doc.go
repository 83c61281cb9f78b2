// Package erasure carries out the ledger's erase entries (schemas/ledger.md "erase"): it
// removes the raw bytes and metric values of a device's readings in a range from ClickHouse
// (readings keep their leaf, batch and position, so every Merkle tree and proof stays), rebuilds
// the rollups of the hours concerned, deletes the rule events that quote those readings, clears
// the device's reject rows and deletes the messages still in the Readings stream, then records
// the erasure in the `erasures` table.
//
// An entry keeps applying once carried out: every Config.Sweep the Eraser looks, in the parts
// of the tables written since its last look, for what an entry's range still holds (a flush in
// flight at the erasure, a late redelivery, a range reaching into the future), removes it the
// same way and writes the entry's `erasures` row again with what it now covers (Sweep).
package erasure
