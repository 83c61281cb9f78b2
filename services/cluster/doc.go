// Package cluster starts Anchorline's topology on one host out of real processes, for
// operators to try and for tests: today a NATS JetStream cluster of nats-server processes with
// Anchorline's accounts and auth callout (auth.conf). The validators, the replicated ClickHouse
// and the services join it as `anchorline cluster up` grows (issue 13).
package cluster
