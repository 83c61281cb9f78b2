// Package access enforces the ledger's consent where analysts read: it keeps, for every
// audience named in a consent entry, a ClickHouse database whose tables hold exactly the rows
// of the devices whose owners granted that audience access, in step with the ledger within
// seconds. ClickHouse 18.16 has no row policies and checks the tables behind a view, so the
// audience tables are Distributed tables that read filtered views through a cluster connection
// (schemas/clickhouse.LocalCluster on one server); see the README's "Consent" section.
package access
