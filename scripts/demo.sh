#!/usr/bin/env bash
# The main job on embedded defaults: a private ClickHouse, `anchorline dev` (embedded NATS,
# ledger, ingest, anchoring, API), simulated devices, then one reading's proof bundle fetched
# and verified offline against the exported trust file, and an audit of everything stored.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-clickhouse.sh

export ANCHORLINE_DATA_DIR=${ANCHORLINE_DATA_DIR:-.demo}
# Ports of their own, so a ClickHouse or NATS already on the machine is left alone.
export ANCHORLINE_CLICKHOUSE_ADDR=${ANCHORLINE_CLICKHOUSE_ADDR:-127.0.0.1:19000}
export ANCHORLINE_CLICKHOUSE_EMBEDDED=true
export ANCHORLINE_NATS_URL=${ANCHORLINE_NATS_URL:-nats://127.0.0.1:14222}
export ANCHORLINE_HTTP_ADDR=${ANCHORLINE_HTTP_ADDR:-127.0.0.1:18080}
export ANCHORLINE_LEDGER_RPC=${ANCHORLINE_LEDGER_RPC:-127.0.0.1:36657}

echo "== building anchorline"
go build -o bin/anchorline ./services/anchorline
rm -rf "$ANCHORLINE_DATA_DIR"
mkdir -p "$ANCHORLINE_DATA_DIR"

echo "== starting anchorline dev (log: $ANCHORLINE_DATA_DIR/dev.log)"
bin/anchorline dev > "$ANCHORLINE_DATA_DIR/dev.log" 2>&1 &
dev_pid=$!
stop_dev() {
	kill -INT "$dev_pid" 2>/dev/null || true
	wait "$dev_pid" 2>/dev/null || true
}
trap stop_dev EXIT
bin/anchorline status --wait 120s || { tail -n 40 "$ANCHORLINE_DATA_DIR/dev.log"; exit 1; }

echo "== simulating 4 devices (ed25519 and es256) for 10s, each connecting to NATS as itself"
bin/anchorline device simulate --devices 4 --rate 200/s --duration 10s --prefix demo

echo "== a device of your own: key, registration, a reading published as itself"
bin/anchorline device keygen --id demo-boiler --out "$ANCHORLINE_DATA_DIR/boiler.key"
bin/anchorline device register "$ANCHORLINE_DATA_DIR/boiler.key"
bin/anchorline device publish "$ANCHORLINE_DATA_DIR/boiler.key" --metric temp=21.5 --tag site=demo

echo "== a stranger's key is refused by the broker itself (no registration, no connection)"
bin/anchorline device keygen --id demo-stranger --out "$ANCHORLINE_DATA_DIR/stranger.key"
if bin/anchorline device publish "$ANCHORLINE_DATA_DIR/stranger.key" --metric temp=99; then
	echo "the broker let an unregistered device publish" >&2
	exit 1
fi

echo "== status"
bin/anchorline status

echo "== fetching the proof of demo-001 seq 7 (an ES256 device) once it is anchored"
bin/anchorline proof --device demo-001 --seq 7 --wait 60s --out "$ANCHORLINE_DATA_DIR/proof.json"
bin/anchorline trust export --out "$ANCHORLINE_DATA_DIR/trust.json"

echo "== verifying offline"
bin/anchorline verify "$ANCHORLINE_DATA_DIR/proof.json" --trust "$ANCHORLINE_DATA_DIR/trust.json"

echo "== the proofs of demo-001's first 100 readings in one range bundle, verified, with its completeness"
bin/anchorline proof --device demo-001 --from 1 --to 100 --wait 60s --out "$ANCHORLINE_DATA_DIR/range.json"
bin/anchorline verify "$ANCHORLINE_DATA_DIR/range.json" --trust "$ANCHORLINE_DATA_DIR/trust.json"

echo "== auditing everything stored against the anchors on the ledger"
bin/anchorline audit --trust "$ANCHORLINE_DATA_DIR/trust.json"
