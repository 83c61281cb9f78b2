// Package retention keeps ClickHouse's tables only as long as clickhouse.retention says: on
// ClickHouse 18.16, which has no TTL, it drops each monthly partition once all of it is past
// its table's retention, and records what it dropped (the expired table, and, for batches
// stored before their positions' device times were kept in batch_leaves, the positions of
// readings leaving batches that hold later ones), so that the audit reports those readings as
// expired rather than missing. Batch records, anchors and batch_leaves stay.
package retention
