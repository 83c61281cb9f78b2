-- Retention (clickhouse.retention, services/retention): a row per monthly partition dropped,
-- and, for the readings of a dropped partition whose batch also holds readings of later
-- months, their positions: so the audit can tell a reading that expired from one deleted.
-- (A batch all of whose readings are older than the readings' `before` needs no position.)
CREATE TABLE IF NOT EXISTS {db}.expired (
    expired_at DateTime,
    table_name String,
    partition  String,
    before     DateTime
) ENGINE = MergeTree
ORDER BY (table_name, partition);
CREATE TABLE IF NOT EXISTS {db}.expired_positions (
    batch_id   FixedString(16),
    leaf_index UInt32,
    device_id  String,
    seq        UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (batch_id, leaf_index);
