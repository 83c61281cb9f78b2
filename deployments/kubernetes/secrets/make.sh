#!/bin/sh
# Makes the keys of a new Anchorline deployment on Kubernetes in DIR (which must not exist) and
# the kustomization that turns them into the Secrets the manifests name:
#
#   deployments/kubernetes/secrets/make.sh keys && kubectl apply -k keys
#
# It runs `anchorline` from PATH (or $ANCHORLINE): the broker identity (auth init), a network of
# four validators reached at ledger-N.ledger, the pods' names under the headless Service of
# ledger.yaml (ledger init), and a random ClickHouse password. Keep DIR safe and out of version
# control: it holds every private key of the deployment. deployments/deploy_test.go runs it.
set -eu
dir=${1:?usage: make.sh DIR (a new directory for the keys)}
anchorline=${ANCHORLINE:-anchorline}
here=$(dirname "$0")
umask 077
mkdir "$dir"
"$anchorline" auth init --nats.auth_dir "$dir/nats-auth"
"$anchorline" ledger init --validators 4 --chain-id anchorline \
  --hosts ledger-0.ledger,ledger-1.ledger,ledger-2.ledger,ledger-3.ledger --out "$dir/ledger"
od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$dir/clickhouse-password"
cp "$here/kustomization.yaml" "$dir/kustomization.yaml"
echo "wrote $dir: kubectl apply -f $here/../namespace.yaml && kubectl apply -k $dir"
