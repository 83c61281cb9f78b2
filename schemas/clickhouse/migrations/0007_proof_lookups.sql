-- The leaves of each batch in one row, for proofs: a batch's tree is then one point lookup
-- instead of a scan of readings by batch_id (readings are ordered by device and seq, so a
-- batch's rows are spread over every granule). Filled by a materialized view on every insert
-- into readings (ingest inserts a batch as one block; a retried insert repeats the same row,
-- which ReplacingMergeTree folds). leaves is the batch's leaves concatenated in leaf_index
-- order (32 bytes each); n, distinct_indexes and max_index let a reader check that the row
-- holds exactly one leaf per index 0..n-1 (else it reads readings). A row is 32 bytes per
-- reading, so the small granularity keeps a lookup to a few rows. Leaves are hashes only:
-- erasing a reading's raw bytes leaves them, as proofs of erased readings need them.
CREATE TABLE IF NOT EXISTS {db}.batch_leaves (
    batch_id         FixedString(16),
    n                UInt32,
    distinct_indexes UInt32,
    max_index        UInt32,
    leaves           String
) ENGINE = ReplacingMergeTree
ORDER BY batch_id
SETTINGS index_granularity = 8;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_leaves_mv TO {db}.batch_leaves AS
SELECT batch_id, toUInt32(count()) AS n, toUInt32(uniqExact(leaf_index)) AS distinct_indexes, max(leaf_index) AS max_index,
    arrayStringConcat(arrayMap(x -> toString(x.2), arraySort(x -> x.1, groupArray((leaf_index, leaf))))) AS leaves
FROM {db}.readings
GROUP BY batch_id;

-- Batches stored before this migration.
INSERT INTO {db}.batch_leaves (batch_id, n, distinct_indexes, max_index, leaves)
SELECT batch_id, toUInt32(count()), toUInt32(uniqExact(leaf_index)), max(leaf_index),
    arrayStringConcat(arrayMap(x -> toString(x.2), arraySort(x -> x.1, groupArray((leaf_index, leaf)))))
FROM {db}.readings GROUP BY batch_id;

-- What a proof needs of one reading, found by a point lookup that reads little: readings is
-- ordered by (device_id, seq) too, but with ClickHouse's default granularity of 8192 rows a
-- lookup there decodes 8192 rows of every column it reads (about 2 MB of raw bytes); here it
-- decodes 256. The price is a second copy of raw (about 200 bytes a reading), written by a
-- materialized view on every insert into readings. Partitioned like readings, so retention can
-- drop the same months; erasure must clear raw here as in readings.
CREATE TABLE IF NOT EXISTS {db}.reading_lookup (
    device_id  String,
    seq        UInt64,
    time       DateTime,
    raw        String,
    batch_id   FixedString(16),
    leaf_index UInt32
) ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (device_id, seq)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.reading_lookup_mv TO {db}.reading_lookup AS
SELECT device_id, seq, time, raw, batch_id, leaf_index FROM {db}.readings;

-- Readings stored before this migration.
INSERT INTO {db}.reading_lookup (device_id, seq, time, raw, batch_id, leaf_index)
SELECT device_id, seq, time, raw, batch_id, leaf_index FROM {db}.readings
