-- With clickhouse.cluster set, one table per analysts' table that reads every shard of the
-- cluster (a query on readings_all is one query over all shards; on one shard of several
-- replicas it reads whichever replica answers). Anchorline writes each batch into the local
-- tables of the node it is connected to; these tables only read. Without a cluster Migrate
-- skips every statement that names {cluster}, and this migration changes nothing.
CREATE TABLE IF NOT EXISTS {db}.readings_all AS {db}.readings ENGINE = Distributed({cluster}, {db}, readings, rand());
CREATE TABLE IF NOT EXISTS {db}.metrics_all AS {db}.metrics ENGINE = Distributed({cluster}, {db}, metrics, rand());
CREATE TABLE IF NOT EXISTS {db}.metrics_1m_all AS {db}.metrics_1m ENGINE = Distributed({cluster}, {db}, metrics_1m, rand());
CREATE TABLE IF NOT EXISTS {db}.metrics_1h_all AS {db}.metrics_1h ENGINE = Distributed({cluster}, {db}, metrics_1h, rand());
CREATE TABLE IF NOT EXISTS {db}.rejected_all AS {db}.rejected ENGINE = Distributed({cluster}, {db}, rejected, rand());
CREATE TABLE IF NOT EXISTS {db}.anomalies_all AS {db}.anomalies ENGINE = Distributed({cluster}, {db}, anomalies, rand())
