-- Erasure (schemas/ledger.md "erase"). erased_by is the log index of the erase entry under
-- which a reading's raw bytes were removed (0: not erased); the row keeps its leaf, batch and
-- position, so the batch's Merkle tree and the reading's proof stay. erasures has a row per
-- erase entry Anchorline has carried out (services/erasure): what an auditor and `status`
-- compare with the ledger's erase entries.
ALTER TABLE {db}.readings ADD COLUMN erased_by UInt64;
DROP TABLE IF EXISTS {db}.readings_all;
CREATE TABLE IF NOT EXISTS {db}.readings_all AS {db}.readings ENGINE = Distributed({cluster}, {db}, readings, rand());
CREATE TABLE IF NOT EXISTS {db}.erasures (
    entry_index UInt64,
    height      UInt64,
    device_id   String,
    by          String,
    from_value  UInt64,
    to_value    UInt64,
    signer      String,
    reason      String,
    readings    UInt64,
    done_at     DateTime
) ENGINE = ReplacingMergeTree
ORDER BY entry_index;
