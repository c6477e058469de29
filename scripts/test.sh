#!/usr/bin/env bash
# File: scripts/test.sh
# Builds and runs every CPU test: installs dependencies, checks formatting, builds with CUDA off
# and runs `ctest -L cpu`; when nvcc exists, also builds with CUDA on (the CUDA kernels and GPU
# tests compile) and runs the GPU-labelled tests, which skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== format check (clang-format-14)"
git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format-14 --dry-run -Werror

echo "== CPU build (DAPQ_CUDA=OFF)"
bash scripts/build.sh cpu
echo "== CPU tests"
ctest --test-dir build -L cpu --output-on-failure -j2 --timeout 600

echo "== overload test (label slow: twice the admission capacity for 60 s, run alone)"
ctest --test-dir build -L slow --output-on-failure --timeout 600

echo "== KV store tests under ThreadSanitizer"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDAPQ_CUDA=OFF \
  -DDAPQ_SANITIZE=thread >/dev/null
ninja -C build-tsan kvstore_test batch_store_test
TSAN_OPTIONS=halt_on_error=1 ./build-tsan/kvstore/kvstore_test
TSAN_OPTIONS=halt_on_error=1 ./build-tsan/coordinator/batch_store_test

if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "== CUDA build (DAPQ_CUDA=ON, compile only on machines without a GPU)"
  bash scripts/build.sh cuda
  ctest --test-dir build-cuda -L gpu --output-on-failure --timeout 600
else
  echo "== nvcc not found: CUDA build skipped"
fi
echo "== all tests passed"
