// Package procnet tells, from Linux's /proc, whether a process holds the socket listening on a
// TCP port: the private servers the tests and dev start (ClickHouse, ZooKeeper) check with it
// that the server answering on their port is their own child, not a stranger.
package procnet
