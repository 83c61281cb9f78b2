// Package chserver runs a private clickhouse-server (from Debian's apt, 18.16 or newer) as a
// child process with its own ports and data folder: for `anchorline dev --clickhouse.embedded`,
// the demo and the integration tests, so that nothing depends on a system-wide server.
package chserver
