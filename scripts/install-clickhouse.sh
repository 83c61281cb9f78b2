#!/usr/bin/env bash
# Installs clickhouse-server and clickhouse-client from Debian's apt when they are missing.
# apt does not start the server: tests and the demo start a private one as a child process.
set -euo pipefail
if command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || [ -x /usr/bin/clickhouse-server ]; then
	exit 0
fi
echo "== installing ClickHouse from apt (once)"
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || { echo "clickhouse-server not found after apt install" >&2; exit 1; }
