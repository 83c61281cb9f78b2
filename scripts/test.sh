#!/usr/bin/env bash
# The whole test suite: formatting, vet, staticcheck, unit, golden, integration (real NATS,
# ClickHouse, CometBFT) under the race detector, and a short run of every fuzz target. Installs
# ClickHouse from apt when it is missing. Any finding fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-clickhouse.sh
scripts/install-prometheus.sh
scripts/install-zookeeper.sh
scripts/install-chromium.sh

echo "== browser verifier (go generate ./services/api/verifier)"
# Built from this source before anything compiles: the binary and the tests embed it.
go generate ./services/api/verifier

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "not gofmt-formatted (run gofmt -w):" >&2
	echo "$unformatted" >&2
	exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
go tool staticcheck ./...
echo "== go test -race"
# Child processes that tests start (the anchorline binary, clickhouse-server) are built
# without -race; everything in the test processes runs under it.
go test -race -count=1 -timeout 25m ./...
echo "== fuzz (short)"
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can report its own
# deadline as a failure ("context deadline exceeded", no crasher; golang/go#75804, fixed in 1.27).
fuzztime=${FUZZTIME:-30000x}
for target in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for fn in $(grep -h '^func Fuzz' "$target"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/'); do
		echo "-- $target $fn"
		# No minimizing: a new interesting input of a few KB (a bundle) would be minimized for
		# up to a minute, and a short run would spend its time there instead of fuzzing.
		go test -run '^$' -fuzz "^$fn\$" -fuzztime "$fuzztime" -fuzzminimizetime 0 "$target"
	done
done
