// Package zkserver runs a private standalone ZooKeeper (Debian's zookeeper package: java with
// /usr/share/java/zookeeper.jar) as a child process, for tests of ClickHouse replication.
// Install it with scripts/install-zookeeper.sh.
package zkserver
