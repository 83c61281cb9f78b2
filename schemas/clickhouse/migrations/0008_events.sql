-- Rule events (schemas/rule.md "events"): one row per firing. The event id derives from the
-- rule version, the device, the seq and the kind, so a reading evaluated again after a crash
-- gives the same id and ReplacingMergeTree folds the rows (count with FINAL, or uniqExact(event_id)).
-- seqs are the readings the decision used (their proofs make the event's bundle); time_ms is
-- the rules stage's clock when it decided, last_seen_ms (absence events) when the device's last
-- reading was received.
CREATE TABLE IF NOT EXISTS {db}.events (
    event_id     FixedString(16),
    rule_id      String,
    version      UInt64,
    rule_index   UInt64,
    height       UInt64,
    device_id    String,
    kind         String,
    seq          UInt64,
    armed_at     UInt64,
    seqs         Array(UInt64),
    partial      UInt8,
    time         DateTime,
    time_ms      UInt64,
    last_seen_ms UInt64,
    actions      Array(String)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (rule_id, device_id, event_id);

CREATE TABLE IF NOT EXISTS {db}.events_all AS {db}.events ENGINE = Distributed({cluster}, {db}, events, rand());
