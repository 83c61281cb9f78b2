#!/usr/bin/env bash
# Installs promtool (Debian's prometheus package) when it is missing: the tests check the
# Prometheus configuration and alert rules in deployments/prometheus with it. apt starts no
# server here (no init system in CI); nothing listens.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
	exit 0
fi
echo "== installing promtool (prometheus) from apt (once)"
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null || { echo "promtool not found after apt install" >&2; exit 1; }
