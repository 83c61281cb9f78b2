// Package dircopy copies a directory tree: what the tests that back up and restore a ledger
// home, a ClickHouse data path or a deployment's mounts do by hand, and what an operator does
// with cp -a.
package dircopy
