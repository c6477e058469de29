#!/usr/bin/env bash
# File: deploy/make-certs.sh
# Makes the TLS files a deployed cluster runs with: a CA (ca.crt, ca.key) and one cluster
# certificate it signed (cluster.crt, cluster.key) for the name "dapq-cluster" — which every
# process checks its peers against (--tls_server_name dapq-cluster), so pod IPs and container
# names need no certificate of their own — plus localhost, 127.0.0.1 and the coordinator's
# Service names, so clients on the host or in the cluster can verify the coordinator by address.
# Usage: deploy/make-certs.sh [OUT_DIR]   (default: deploy/certs; keep ca.key offline)
#   compose:    docker compose picks deploy/certs up (docker-compose.yml, secrets)
#   kubernetes: kubectl -n dapq create secret generic dapq-tls \
#                 --from-file=ca.crt=deploy/certs/ca.crt \
#                 --from-file=cluster.crt=deploy/certs/cluster.crt \
#                 --from-file=cluster.key=deploy/certs/cluster.key
set -euo pipefail
out="${1:-$(dirname "$0")/certs}"
mkdir -p "$out"
cd "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
  -subj "/CN=DapQ Serve cluster CA" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=dapq-cluster" -keyout cluster.key -out cluster.csr 2>/dev/null
cat > cluster.ext <<'EXT'
subjectAltName=DNS:dapq-cluster,DNS:localhost,IP:127.0.0.1,DNS:coordinator,DNS:dapq-coordinator,DNS:dapq-coordinator.dapq,DNS:dapq-coordinator.dapq.svc
extendedKeyUsage=serverAuth,clientAuth
EXT
openssl x509 -req -in cluster.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
  -extfile cluster.ext -out cluster.crt 2>/dev/null
rm -f cluster.csr cluster.ext ca.srl
chmod 600 ca.key
# The containers run as uid 10001: they must read the cluster key (a compose secret keeps the
# host file's mode). Kubernetes mounts it from the Secret with mode 0400 instead.
chmod 644 cluster.key
echo "wrote $out/{ca.crt,ca.key,cluster.crt,cluster.key}"
