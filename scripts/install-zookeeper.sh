#!/usr/bin/env bash
# Installs ZooKeeper from Debian's apt when it is missing (tests of ClickHouse replication need
# it). Debian's zookeeper package ships no running service unless zookeeperd is installed: tests
# start a private standalone ZooKeeper as a child process (internal/zkserver).
set -euo pipefail
if [ -f /usr/share/java/zookeeper.jar ]; then
	exit 0
fi
echo "== installing ZooKeeper from apt (once)"
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends zookeeper >/dev/null
[ -f /usr/share/java/zookeeper.jar ] || { echo "zookeeper jars not found after apt install" >&2; exit 1; }
