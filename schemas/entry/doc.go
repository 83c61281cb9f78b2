// Package entry is the wire format of the ledger's log entries (DESIGN 2.3) and of the device
// records in its registry: deterministic CBOR maps, with the signatures that authorise them (an
// admin's for device events, anchor_key and rule entries, M admins' for validator and admins
// entries, the anchoring key's for signed anchors), and the rule records of its rules tree. The exact fields are documented in ../ledger.md.
package entry
