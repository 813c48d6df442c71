#!/bin/sh
# The local federation's one-off set-up (deploy/compose.yaml): the sector CA, the coordinator's
# certificate, three institutions enrolled the way a real one is (publiek-node init makes the
# key and the request, the CA signs it), and their synthetic exports. Runs once: a second
# `docker compose up` finds the CA and leaves everything as it is.
set -eu

if [ -f /pki/ca/ca.pem ]; then
    echo "setup: the sector CA exists already; nothing to do"
    exit 0
fi

publiek-coordinator ca init /pki/ca --host coordinator --name "publiek local sector CA"
mkdir -p /pki/coordinator
cp /pki/ca/ca.pem /pki/ca/crl.pem /pki/ca/coordinator.pem /pki/ca/coordinator.key /pki/coordinator/

for id in inst-01 inst-02 inst-03; do
    # At a real institution this runs on its own machine; only node.csr travels.
    publiek-node init --institution-id "$id" --key-out "/pki/$id/node.key" --csr-out "/pki/$id/node.csr"
    publiek-coordinator ca sign /pki/ca "/pki/$id/node.csr" --out "/pki/$id/node.pem"
    cp /pki/ca/ca.pem /pki/ca/crl.pem "/pki/$id/"
done

publiek-synth generate --institutions 3 --seed 7 --scale 0.05 --out /data/sector --quiet
# The coordinator and the nodes run as uid 10001; keys stay readable by their owner only.
chown -R 10001:10001 /pki /data
echo "setup: done"
