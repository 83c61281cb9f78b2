-- One row per verified reading. ts is the device's clock (Unix ms, exactly as signed), time the
-- same in seconds for partitioning and time functions; raw is the exact COSE_Sign1 bytes whose
-- SHA-256(0x00 || raw) is leaf; leaf_index is the position in the batch's Merkle tree.
CREATE TABLE IF NOT EXISTS {db}.readings (
    device_id   String,
    seq         UInt64,
    ts          UInt64,
    time        DateTime,
    received_at DateTime,
    raw         String,
    leaf        FixedString(32),
    prev        String,
    batch_id    FixedString(16),
    leaf_index  UInt32
) ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (device_id, seq);

-- One row per metric value (long format).
CREATE TABLE IF NOT EXISTS {db}.metrics (
    device_id String,
    seq       UInt64,
    ts        UInt64,
    time      DateTime,
    metric    String,
    value     Float64,
    batch_id  FixedString(16)
) ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (metric, device_id, time, seq);

-- Rollups: finish the aggregate states with -Merge (countMerge(count), quantilesMerge(0.5, 0.9, 0.99)(quantiles)).
CREATE TABLE IF NOT EXISTS {db}.metrics_1m (
    device_id String,
    metric    String,
    period    DateTime,
    count     AggregateFunction(count),
    min       AggregateFunction(min, Float64),
    max       AggregateFunction(max, Float64),
    sum       AggregateFunction(sum, Float64),
    avg       AggregateFunction(avg, Float64),
    quantiles AggregateFunction(quantiles(0.5, 0.9, 0.99), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(period)
ORDER BY (device_id, metric, period);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.metrics_1m_mv TO {db}.metrics_1m AS
SELECT device_id, metric, toStartOfMinute(time) AS period,
       countState() AS count, minState(value) AS min, maxState(value) AS max,
       sumState(value) AS sum, avgState(value) AS avg, quantilesState(0.5, 0.9, 0.99)(value) AS quantiles
FROM {db}.metrics
GROUP BY device_id, metric, period;

CREATE TABLE IF NOT EXISTS {db}.metrics_1h (
    device_id String,
    metric    String,
    period    DateTime,
    count     AggregateFunction(count),
    min       AggregateFunction(min, Float64),
    max       AggregateFunction(max, Float64),
    sum       AggregateFunction(sum, Float64),
    avg       AggregateFunction(avg, Float64),
    quantiles AggregateFunction(quantiles(0.5, 0.9, 0.99), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(period)
ORDER BY (device_id, metric, period);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.metrics_1h_mv TO {db}.metrics_1h AS
SELECT device_id, metric, toStartOfHour(time) AS period,
       countState() AS count, minState(value) AS min, maxState(value) AS max,
       sumState(value) AS sum, avgState(value) AS avg, quantilesState(0.5, 0.9, 0.99)(value) AS quantiles
FROM {db}.metrics
GROUP BY device_id, metric, period;

-- Quarantine: every message ingest refused, with its reason code and the exact bytes.
CREATE TABLE IF NOT EXISTS {db}.rejected (
    received_at DateTime,
    subject     String,
    device_id   String,
    reason      String,
    detail      String,
    raw         String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (received_at, reason);

-- One row per flushed batch; root is the Merkle root over its readings' leaves.
CREATE TABLE IF NOT EXISTS {db}.batches (
    batch_id   FixedString(16),
    root       FixedString(32),
    size       UInt32,
    created_at DateTime,
    worker     String,
    ts_min     UInt64,
    ts_max     UInt64
) ENGINE = ReplacingMergeTree
ORDER BY batch_id;

-- One row per anchor committed to the ledger: the block that included it (height) and its
-- position in the ledger's log (log_index); entry is the exact ledger entry.
CREATE TABLE IF NOT EXISTS {db}.anchors (
    anchor_id   FixedString(16),
    root        FixedString(32),
    batches     UInt32,
    readings    UInt64,
    height      UInt64,
    log_index   UInt64,
    tx_hash     String,
    entry       String,
    anchored_at DateTime
) ENGINE = ReplacingMergeTree
ORDER BY anchor_id;

-- Which anchor covers a batch, at which position of the anchor's tree. A batch record delivered
-- twice may be anchored twice: both anchors are valid, so the key is (batch_id, anchor_id).
CREATE TABLE IF NOT EXISTS {db}.batch_anchors (
    batch_id    FixedString(16),
    anchor_id   FixedString(16),
    batch_index UInt32
) ENGINE = ReplacingMergeTree
ORDER BY (batch_id, anchor_id)
