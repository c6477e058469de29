#!/usr/bin/env bash
# File: scripts/setup.sh
# Installs every build and test dependency of DapQ Serve on Debian 12 with apt-get.
# Idempotent and non-interactive: packages already present are skipped.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  clang-format-14
  clang-14 libclang-rt-14-dev llvm-14
  libabsl-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libopenblas-dev libdnnl-dev
  libxxhash-dev libhiredis-dev redis-server redis-tools
  libgloo-dev libsqlite3-dev prometheus-cpp-dev prometheus libyaml-cpp-dev
  nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  gnuplot-nox curl openssl libssl-dev xz-utils
  libcpp-httplib-dev libpcre2-dev libicu-dev
  libpq-dev postgresql-15 etcd-server
)
# Node.js runs the test peers of tests/npm (the JS tokenizers, the OpenAI client); a machine
# that already has node (any packaging) keeps it. A tree without tests/ (the Docker build stage
# copies this script alone) needs neither.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NPM_PEERS="$ROOT/tests/npm"
if [[ -f "$NPM_PEERS/package.json" ]] &&
   { ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; }; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# The npm test peers, pinned by tests/npm/package-lock.json (the npm registry).
if [[ -f "$NPM_PEERS/package.json" ]]; then
  if [[ ! -f "$NPM_PEERS/node_modules/.package-lock.json" ||
        "$NPM_PEERS/package-lock.json" -nt "$NPM_PEERS/node_modules/.package-lock.json" ]]; then
    echo "setup: npm ci in tests/npm"
    (cd "$NPM_PEERS" && npm ci --no-audit --no-fund --loglevel=error)
  else
    echo "setup: tests/npm packages present"
  fi
fi
