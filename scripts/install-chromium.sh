#!/usr/bin/env bash
# Installs Debian's chromium when it is missing: the browser verifier's test
# (services/api/verifier) drives it headless to check the /verify page end to end.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
	exit 0
fi
echo "== installing chromium from apt (once)"
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || { echo "chromium not found after apt install" >&2; exit 1; }
