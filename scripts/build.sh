#!/usr/bin/env bash
# File: scripts/build.sh
# Configures and builds DapQ Serve into build/ (CPU; DAPQ_CUDA=OFF) or, with "cuda", into
# build-cuda/ (DAPQ_CUDA=ON: compiles the CUDA kernels; needs nvcc; binaries find libraries in
# $ORIGIN/lib too, for scripts/gpu_bundle.sh). Extra args go to ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-cpu}"
shift || true
extra=()
if [[ "$mode" == "cuda" ]]; then
  dir=build-cuda
  cuda=ON
  # scripts/gpu_bundle.sh copies the GPU test binaries with their libraries in bin/lib beside
  # them: a DT_RPATH (not RUNPATH, so it also serves the libraries' own dependencies) of
  # $ORIGIN/lib finds them there.
  extra=("-DCMAKE_BUILD_RPATH=\$ORIGIN/lib" "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags")
else
  dir=build
  cuda=OFF
fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDAPQ_CUDA="$cuda" "${extra[@]}" >/dev/null
ninja -C "$dir" "$@"
