#!/bin/sh
# Makes the keys of a new Anchorline deployment on Kubernetes in DIR (which must not exist) and
# the kustomization that turns them into the Secrets the manifests name:
#
#   deployments/kubernetes/secrets/make.sh keys && kubectl apply -k keys
#
# It runs `anchorline` from PATH (or $ANCHORLINE): the broker identity (auth init); a private CA
# and one certificate per kind of server (tls init) for the names the manifests reach them at,
# the pods' names under their headless Services (nats-N.nats, ledger-N.ledger,
# clickhouse-N.clickhouse) and the API's Service, and localhost for `kubectl port-forward`; a
# network of four validators reached at ledger-N.ledger (ledger init), each serving its RPC
# over https with the certificate ledger.yaml mounts at /etc/anchorline/tls; the rules stage's
# command key; and a random ClickHouse password. Keep DIR safe and out of version control: it holds every private key of
# the deployment, the CA's (DIR/tls/ca-key.pem, in no Secret) too. deployments/deploy_test.go
# runs it.
set -eu
dir=${1:?usage: make.sh DIR (a new directory for the keys)}
anchorline=${ANCHORLINE:-anchorline}
here=$(dirname "$0")
umask 077
mkdir "$dir"
"$anchorline" auth init --nats.auth_dir "$dir/nats-auth"
"$anchorline" tls init --dir "$dir/tls" --name nats --hosts nats-0.nats,nats-1.nats,nats-2.nats,localhost,127.0.0.1
"$anchorline" tls init --dir "$dir/tls" --name ledger --hosts ledger-0.ledger,ledger-1.ledger,ledger-2.ledger,ledger-3.ledger,localhost,127.0.0.1
"$anchorline" tls init --dir "$dir/tls" --name clickhouse --hosts clickhouse-0.clickhouse,clickhouse-1.clickhouse,localhost,127.0.0.1
"$anchorline" tls init --dir "$dir/tls" --name http --hosts api,api.anchorline,api.anchorline.svc,api.anchorline.svc.cluster.local,localhost,127.0.0.1
"$anchorline" ledger init --validators 4 --chain-id anchorline \
  --hosts ledger-0.ledger,ledger-1.ledger,ledger-2.ledger,ledger-3.ledger --out "$dir/ledger" \
  --rpc-tls-cert /etc/anchorline/tls/ledger.pem --rpc-tls-key /etc/anchorline/tls/ledger-key.pem
"$anchorline" ledger keygen --out "$dir/rules.key" >/dev/null   # the rules stage's command key (the rules-commander Job registers it)
od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$dir/clickhouse-password"
cp "$here/kustomization.yaml" "$dir/kustomization.yaml"
echo "wrote $dir: kubectl apply -f $here/../namespace.yaml && kubectl apply -k $dir"
