-- Rollups, second form. The hourly rollup is built from the minute rollup, not from metrics:
-- metrics_1m_mv aggregates each insert into metrics by minute, and what it writes triggers
-- metrics_1h_mv, which merges those minute states into hour states (a cascade of materialized
-- views), so each metric value is aggregated once. Servers differ in what a cascade hangs on:
-- 18.16 triggers the views that read FROM the first view (metrics_1m_mv), current releases
-- those that read FROM its target table (metrics_1m). Migrate finds out which with a probe of
-- its own and puts that source in place of {metrics_1m_source}.
-- Late readings need nothing special: their insert makes new minute and hour rows for their
-- old periods, which the table merges with the earlier ones (AggregatingMergeTree), and every
-- query finishes the states with -Merge anyway.
--
-- metrics no longer carries the batch id: 16 incompressible bytes per metric value that no
-- query needs (a reading's copies, stored twice by a redelivery, have the same values, so
-- metrics_unique keeps any one of them). Nor readings its prev: 32 incompressible bytes that
-- are inside raw already (the signed payload's prev), and that nothing reads from the column.
--
-- The old rollups are derived data: they are dropped and rebuilt from metrics below. Run
-- this migration with ingest stopped: a reading inserted while it runs may be counted twice.
DROP TABLE IF EXISTS {db}.metrics_1h_mv;
DROP TABLE IF EXISTS {db}.metrics_1m_mv;
DROP TABLE IF EXISTS {db}.metrics_1h;
DROP TABLE IF EXISTS {db}.metrics_1m;

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

-- Rebuild both from the metrics stored so far, before the views exist (on current releases an
-- INSERT into metrics_1m would cascade into metrics_1h).
INSERT INTO {db}.metrics_1m
SELECT device_id, metric, toStartOfMinute(time) AS period,
       countState() AS count, minState(value) AS min, maxState(value) AS max,
       sumState(value) AS sum, avgState(value) AS avg, quantilesState(0.5, 0.9, 0.99)(value) AS quantiles
FROM {db}.metrics
GROUP BY device_id, metric, period;

INSERT INTO {db}.metrics_1h
SELECT device_id, metric, toStartOfHour(time) AS period,
       countState() AS count, minState(value) AS min, maxState(value) AS max,
       sumState(value) AS sum, avgState(value) AS avg, quantilesState(0.5, 0.9, 0.99)(value) AS quantiles
FROM {db}.metrics
GROUP BY device_id, metric, period;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.metrics_1m_mv TO {db}.metrics_1m AS
SELECT device_id, metric, toStartOfMinute(time) AS period,
       countState() AS count, minState(value) AS min, maxState(value) AS max,
       sumState(value) AS sum, avgState(value) AS avg, quantilesState(0.5, 0.9, 0.99)(value) AS quantiles
FROM {db}.metrics
GROUP BY device_id, metric, period;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.metrics_1h_mv TO {db}.metrics_1h AS
SELECT device_id, metric, toStartOfHour(period) AS period,
       countMergeState(count) AS count, minMergeState(min) AS min, maxMergeState(max) AS max,
       sumMergeState(sum) AS sum, avgMergeState(avg) AS avg,
       quantilesMergeState(0.5, 0.9, 0.99)(quantiles) AS quantiles
FROM {metrics_1m_source}
GROUP BY device_id, metric, period;

DROP TABLE IF EXISTS {db}.metrics_unique;
-- (Migrate skips a DROP COLUMN whose column is gone: 18.16 has no IF EXISTS for it.)
ALTER TABLE {db}.metrics DROP COLUMN batch_id;
ALTER TABLE {db}.readings DROP COLUMN prev;
CREATE VIEW IF NOT EXISTS {db}.metrics_unique AS
SELECT * FROM {db}.metrics
ORDER BY device_id, seq, metric
LIMIT 1 BY device_id, seq, metric
