#!/usr/bin/env bash
# File: scripts/gpu_bundle.sh
# Builds the GPU test binaries and the GPU benches on a CPU machine (build-cuda/, DAPQ_CUDA=ON)
# and packs them for a GPU machine whose image has the CUDA toolkit, cuBLAS and NCCL but none of
# Debian's C++ libraries (abseil, gRPC, protobuf, Gloo, OpenBLAS, GoogleTest...): the binaries go
# to BUNDLE/bin with every shared library they load copied to BUNDLE/bin/lib, found through their
# DT_RPATH $ORIGIN/lib (scripts/build.sh links build-cuda that way), except glibc's own
# libraries, the NVIDIA driver's and the large CUDA libraries the image has (cuBLAS, cuBLASLt,
# NCCL). BUNDLE/tests.txt names the test binaries (gtest, from build-cuda/gpu_tests.txt) and
# BUNDLE/benches.txt the benches (from build-cuda/gpu_benches.txt), so that gpu_check.sh runs
# each kind as what it is. Also copies scripts/gpu_check.sh, and packs it all as BUNDLE.tar.xz,
# which must stay under 60 MiB. Usage: scripts/gpu_bundle.sh [BUNDLE] (default: gpu-bundle);
# then, on the GPU machine, scripts/gpu_check.sh BUNDLE or BUNDLE.tar.xz.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="${1:-gpu-bundle}"
limit_mib=60

# The GPU tests: every test binary labelled gpu (CMake lists them in gpu_tests.txt).
bash scripts/build.sh cuda >/dev/null
mapfile -t tests < <(grep -v '^$' build-cuda/gpu_tests.txt)
if [[ ${#tests[@]} -eq 0 ]]; then
  echo "gpu_bundle: no gpu-labelled tests in build-cuda (is nvcc installed?)" >&2
  exit 1
fi
# The GPU benches (bench/CMakeLists.txt's DAPQ_GPU_BENCHES, listed in gpu_benches.txt).
mapfile -t benches < <(grep -v '^$' build-cuda/gpu_benches.txt)
if [[ ${#benches[@]} -eq 0 ]]; then
  echo "gpu_bundle: no GPU benches in build-cuda/gpu_benches.txt" >&2
  exit 1
fi
binaries=("${tests[@]}" "${benches[@]}")

rm -rf "$bundle"
mkdir -p "$bundle/bin/lib"
# Shared libraries the GPU machine provides itself: glibc, the driver, the big CUDA libraries.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libresolv|libcuda\.so|libnvidia|libcublas|libcublasLt|libnccl)'
for b in "${binaries[@]}"; do
  cp "$b" "$bundle/bin/"
  while read -r name path; do
    [[ -z "$path" || "$name" =~ $skip ]] && continue
    cp -nL "$path" "$bundle/bin/lib/$name"
  done < <(ldd "$b" | awk '/=> \// {print $1, $3}')
done
cp scripts/gpu_check.sh bench/peers/torch_bench.py bench/peers/torch_attention_bench.py "$bundle/"
# The models the engine parity test reads as ../shared/models from bin/ (gpu_check.sh runs the
# tests there).
mkdir -p "$bundle/shared/models"
cp ../shared/models/stories260K.bin ../shared/models/tok512.bin "$bundle/shared/models/"
printf '%s\n' "${tests[@]##*/}" >"$bundle/tests.txt"
printf '%s\n' "${benches[@]##*/}" >"$bundle/benches.txt"
# What travels to the GPU machine: the archive (oneDNN and OpenBLAS alone are ~75 MiB unpacked).
tar -C "$(dirname "$bundle")" -cf - "$(basename "$bundle")" | xz -T0 -4 >"$bundle.tar.xz"
dir_mib=$(( $(du -sk "$bundle" | cut -f1) / 1024 ))
size_mib=$(( $(stat -c %s "$bundle.tar.xz") / 1048576 ))
libs=$(find "$bundle/bin/lib" -maxdepth 1 -type f | wc -l)
echo "gpu_bundle: $bundle.tar.xz: ${#tests[@]} test binaries, ${#benches[@]} benches," \
  "$libs libraries, ${size_mib} MiB (${dir_mib} MiB unpacked)"
if (( size_mib > limit_mib )); then
  echo "gpu_bundle: $bundle.tar.xz is ${size_mib} MiB, over the ${limit_mib} MiB limit" >&2
  exit 1
fi
