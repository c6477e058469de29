#!/bin/bash
# File: bench/ab_kernels.sh
# Paired comparison of two or more dapq_kernels_bench binaries (e.g. a copy built at HEAD and one
# with a change) on a shared, noisy machine: the binaries take turns, ROUNDS times, and the best
# rate of each benchmark over all runs is printed per binary. OpenBLAS's CPU overrides are unset
# for the runs (native kernels).
# Usage: bench/ab_kernels.sh FILTER ROUNDS BINARY...
set -euo pipefail
filter=$1
rounds=$2
shift 2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$rounds"); do
  for b in "$@"; do
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$b" --benchmark_filter="$filter" \
      --benchmark_repetitions=3 --benchmark_format=json 2>/dev/null >"$out/$(basename "$b").$r.json"
  done
done
python3 - "$out" "$@" <<'PY'
import glob, json, os, sys
out, bins = sys.argv[1], [os.path.basename(b) for b in sys.argv[2:]]
best = {}
for b in bins:
    for f in glob.glob(f"{out}/{b}.*.json"):
        for x in json.load(open(f))["benchmarks"]:
            if x.get("run_type") != "iteration":
                continue
            rate = x.get("KV_B/s", x.get("B/s", x.get("FLOP/s", 0)))
            key = (x["run_name"].replace("/real_time", ""), b)
            best[key] = max(best.get(key, 0), rate)
print("%-62s" % "benchmark" + "".join("%16s" % b for b in bins))
for n in sorted({k[0] for k in best}):
    print("%-62s" % n + "".join("%14.1f G" % (best.get((n, b), 0) / 1e9) for b in bins))
PY
