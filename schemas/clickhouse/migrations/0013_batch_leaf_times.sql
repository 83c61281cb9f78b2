-- The device time of each position of a batch, kept where retention never drops it: times in
-- batch_leaves, in leaf_index order, the readings' `time` (what readings and reading_lookup
-- are partitioned by, toYYYYMM(time)). The view writes it in the same insert as the batch's
-- rows, so it is there before the batch record, and a month dropped between a flush's rows
-- and its record (services/retention) still leaves the times of the positions it removed: the
-- audit counts a position without a row as expired when the month of its time is one that
-- retention dropped (the expired table), and as missing otherwise. 4 bytes a reading. A row
-- written before this migration has no times (an empty array): its batch's positions are
-- judged as before (expired_positions, or a batch older than every month dropped).
--
-- The view is made anew (18.16 cannot change a view's query), and keeps every byte of the
-- leaves: toString of a FixedString cuts its trailing zero bytes, so the view of 0007 wrote a
-- short leaves string for any batch holding a leaf that ends in 0x00 (one leaf in 256; most
-- batches of a few hundred readings or more), which readers reject and then read the batch's
-- rows of readings instead (slower, and failing once retention has dropped some of them).
-- concat(leaf, '') keeps the 32 bytes. The old view goes first (18.16 fails an insert into
-- readings while a view's query lacks a column of its table). A batch inserted between the
-- DROP and the CREATE gets no row (run migrate with ingest stopped); the INSERT below repairs
-- it with the others.
DROP TABLE IF EXISTS {db}.batch_leaves_mv;
ALTER TABLE {db}.batch_leaves ADD COLUMN times Array(DateTime);
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batch_leaves_mv TO {db}.batch_leaves AS
SELECT batch_id, toUInt32(count()) AS n, toUInt32(uniqExact(leaf_index)) AS distinct_indexes, max(leaf_index) AS max_index,
    arrayStringConcat(arrayMap(x -> concat(x.2, ''), arraySort(x -> x.1, groupArray((leaf_index, leaf))))) AS leaves,
    arrayMap(x -> x.2, arraySort(x -> x.1, groupArray((leaf_index, time)))) AS times
FROM {db}.readings
GROUP BY batch_id;

-- The batches stored before this migration without a whole leaves string (cut by the old view,
-- or no row at all): a new row from their rows of readings, with times, where those still hold
-- one leaf per position of the batch record (the identical copies a retried insert stored
-- count once, and a batch retention has already taken rows from is left as it is).
-- ReplacingMergeTree keeps the newer row when it merges the two; readers take a whole row.
INSERT INTO {db}.batch_leaves (batch_id, n, distinct_indexes, max_index, leaves, times)
SELECT batch_id, toUInt32(length(groupUniqArray((leaf_index, leaf, time)) AS l)) AS n, toUInt32(uniqExact(leaf_index)) AS distinct_indexes,
    max(leaf_index) AS max_index,
    arrayStringConcat(arrayMap(x -> concat(x.2, ''), arraySort(x -> x.1, l))),
    arrayMap(x -> x.3, arraySort(x -> x.1, l))
FROM {db}.readings
WHERE batch_id NOT IN (SELECT batch_id FROM {db}.batch_leaves WHERE length(leaves) = 32 * n AND distinct_indexes = n AND max_index + 1 = n)
GROUP BY batch_id
HAVING n = distinct_indexes AND max_index + 1 = n AND (batch_id, n) IN (SELECT batch_id, size FROM {db}.batches)
