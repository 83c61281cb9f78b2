-- The latest stored reading of each device, for the chain check of a worker that sees a
-- device for the first time: a few rows per device instead of its whole history in readings.
-- Filled by a materialized view on every insert into readings; read with argMax(…, head_seq),
-- since the rows of one device are only merged eventually. (The columns are not named seq and
-- leaf so that the view's aliases do not shadow the columns of readings.)
CREATE TABLE IF NOT EXISTS {db}.device_heads (
    device_id String,
    head_seq  UInt64,
    head_leaf FixedString(32)
) ENGINE = ReplacingMergeTree(head_seq)
ORDER BY device_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_heads_mv TO {db}.device_heads AS
SELECT device_id, max(seq) AS head_seq, argMax(leaf, seq) AS head_leaf
FROM {db}.readings
GROUP BY device_id;

-- Readings stored before this migration.
INSERT INTO {db}.device_heads (device_id, head_seq, head_leaf)
SELECT device_id, max(seq), argMax(leaf, seq) FROM {db}.readings GROUP BY device_id
