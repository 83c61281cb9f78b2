-- Breaks of a device's own chain (DESIGN 2.1 `prev`): a reading whose prev is not the leaf of
-- the same device's previous stored reading. The reading itself is stored in readings; this
-- records the break for the audit. expected is empty if no previous reading was stored.
CREATE TABLE IF NOT EXISTS {db}.anomalies (
    detected_at DateTime,
    device_id   String,
    seq         UInt64,
    kind        String,
    expected    String,
    got         String,
    prev_seq    UInt64,
    batch_id    FixedString(16),
    worker      String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(detected_at)
ORDER BY (device_id, seq)
