// Package stack wires Anchorline's parts into running services: ingest, anchoring and the HTTP
// API, each on its own for multi-node deployments, and Dev, which runs them all in one process
// with an embedded NATS server, an embedded single-validator ledger and, optionally, a private
// ClickHouse server.
package stack
