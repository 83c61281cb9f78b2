-- Delivery is at least once: a worker that crashes after inserting a batch and before its
-- acknowledgement reaches JetStream makes the readings come again, so `readings` and `metrics`
-- may hold a reading twice (status shows how many). These views read each reading once: the
-- copy in the lowest batch id (the earliest batch). Rollups (metrics_1m/1h) count copies too.
CREATE VIEW IF NOT EXISTS {db}.readings_unique AS
SELECT * FROM {db}.readings
ORDER BY device_id, seq, batch_id
LIMIT 1 BY device_id, seq;

CREATE VIEW IF NOT EXISTS {db}.metrics_unique AS
SELECT * FROM {db}.metrics
ORDER BY device_id, seq, metric, batch_id
LIMIT 1 BY device_id, seq, metric
