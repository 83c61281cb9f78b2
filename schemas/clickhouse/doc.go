// Package clickhouse holds the analysts' contract (DESIGN 2.5): the ClickHouse DDL as embedded,
// numbered migrations, applied idempotently by Migrate with a version table. The DDL keeps to
// what ClickHouse 18.16 (Debian's) and current releases both accept; where they behave apart
// (which view a cascade of materialized views triggers) Migrate probes the server.
package clickhouse
