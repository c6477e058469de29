#!/usr/bin/env bash
# File: scripts/build.sh
# Configures and builds DapQ Serve into build/ (CPU; DAPQ_CUDA=OFF) or, with "cuda", into
# build-cuda/ (DAPQ_CUDA=ON: compiles the CUDA kernels; needs nvcc). Extra args go to ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-cpu}"
shift || true
if [[ "$mode" == "cuda" ]]; then
  dir=build-cuda
  cuda=ON
else
  dir=build
  cuda=OFF
fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDAPQ_CUDA="$cuda" >/dev/null
ninja -C "$dir" "$@"
