#!/usr/bin/env bash
# File: scripts/test.sh
# Builds and runs every CPU test: installs dependencies, checks formatting, builds with CUDA off
# and runs `ctest -L cpu`; runs the KV store under TSan, every parser's fuzz target for a bounded
# time (clang, build-fuzz/) and the parser-heavy unit tests under ASan + UBSan (build-asan/);
# when nvcc exists, also builds with CUDA on (the CUDA kernels and GPU tests compile) and runs
# the GPU-labelled tests, which skip without a GPU.
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

echo "== KV store and coordinator tests under ThreadSanitizer"
# The store's tiers (a real redis-server over TLS included) and the coordinator's batch store.
# Not the coordinator's gRPC services: Debian's gRPC and Abseil are not built with TSan, and
# absl::Mutex's deadlock graph inside them is reported as a race (seen: group_registry_test).
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDAPQ_CUDA=OFF \
  -DDAPQ_SANITIZE=thread >/dev/null
tsan_tests=(kvstore_test redis_tier_test batch_store_test)
ninja -C build-tsan "${tsan_tests[@]}"
for t in "${tsan_tests[@]}"; do
  exe="$(find build-tsan -type f -name "$t" -perm -u+x | head -n 1)"
  TSAN_OPTIONS=halt_on_error=1 DAPQ_SOURCE_DIR="$PWD" "$exe" --gtest_brief=1
done

echo "== fuzz targets, bounded (clang-14 libFuzzer + ASan + UBSan; tests/fuzz/README.md)"
# Every parser's fuzz target for a few seconds from its checked-in corpus (copied to a temp dir),
# then every regression input replayed; any crash, leak, UB report, timeout or OOM fails.
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" -DDAPQ_CUDA=OFF \
  -DCMAKE_CXX_COMPILER=clang++-14 -DDAPQ_FUZZ=ON >/dev/null
ninja -C build-fuzz dapq_fuzzers
bash tests/fuzz/run_fuzzers.sh build-fuzz/tests/fuzz 8

echo "== unit tests under ASan + UBSan (gcc; parser-heavy libraries)"
# Leak checking on; UB aborts (-fno-sanitize-recover=undefined). The multi-process tests
# (tests/e2e, gloo_test, multiprocess_engine_test) are left to the plain CPU run above.
asan_tests=(common_test stop_sequences_test hf_tokenizer_test llama2c_tokenizer_json_test
  kvstore_test redis_tier_test worker_test hf_test chat_template_test scheduler_test
  batch_store_test group_registry_test openai_protocol_test compress_test cluster_etcd_test
  postgres_batch_store_test batch_store_contract_test)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDAPQ_CUDA=OFF \
  -DDAPQ_SANITIZE=address,undefined >/dev/null
ninja -C build-asan "${asan_tests[@]}"
mkdir -p build-asan/logs
for t in "${asan_tests[@]}"; do
  exe="$(find build-asan -type f -name "$t" -perm -u+x | head -n 1)"
  if ! ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
      DAPQ_SOURCE_DIR="$PWD" "$exe" --gtest_brief=1 >"build-asan/logs/$t.log" 2>&1; then
    tail -n 80 "build-asan/logs/$t.log"
    echo "== $t failed under ASan + UBSan (log: build-asan/logs/$t.log)"
    exit 1
  fi
  echo "$t: passed"
done

if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "== CUDA build (DAPQ_CUDA=ON, compile only on machines without a GPU)"
  bash scripts/build.sh cuda
  ctest --test-dir build-cuda -L gpu --output-on-failure --timeout 600
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "== GPU checks without a GPU: DAPQ_REQUIRE_GPU=1 fails, the bundle builds, gpu_check stops at its probe"
    if DAPQ_REQUIRE_GPU=1 ctest --test-dir build-cuda -L gpu >build-cuda/require_gpu.log 2>&1; then
      echo "DAPQ_REQUIRE_GPU=1 ctest -L gpu passed on a machine without a GPU"
      exit 1
    fi
    bash scripts/gpu_bundle.sh build-cuda/gpu-bundle
    rc=0
    OUT=build-cuda/gpu-check-out bash scripts/gpu_check.sh build-cuda/gpu-bundle || rc=$?
    if [[ $rc -ne 2 ]]; then
      echo "scripts/gpu_check.sh exited $rc without a GPU (expected 2: no GPU)"
      exit 1
    fi
  fi
else
  echo "== nvcc not found: CUDA build skipped"
fi
echo "== all tests passed"
