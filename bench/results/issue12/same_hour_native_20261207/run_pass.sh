#!/bin/bash
# One pass of same-hour benchmarks, native OpenBLAS kernels, one at a time.
# Usage: run_pass.sh PASS fwd|rev [BENCH...]; BENCH is ours_{fp32,bf16}, llamacpp_{f32,bf16} or
# torch_{fp32,bf16} (default: all six, in that order); rev runs the list backwards. Outputs and
# progress.log go to $OUT (default /work/peers-tmp/out). Paths are this machine's: the repository
# at /work/main, the GGUFs in /work/peers-tmp.
set -u
cd /work/main
P=$1
ORDER=$2
shift 2
OUT=${OUT:-/work/peers-tmp/out}
benches=("$@")
[[ ${#benches[@]} -eq 0 ]] && benches=(ours_fp32 ours_bf16 llamacpp_f32 llamacpp_bf16 torch_fp32 torch_bf16)
run() {
  local name=$1; shift
  echo "[$(date -u +%T)] pass $P $name start, load $(cut -d' ' -f1 /proc/loadavg)" >> "$OUT/progress.log"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 "$@" > "$OUT/${name}_pass$P.md" 2>&1
  echo "[$(date -u +%T)] pass $P $name done rc=$?" >> "$OUT/progress.log"
}
ours() { run ours_$1 build/bench/dapq_engine_bench --weights_dtype $1 --kv_dtype $1 --prompt_lengths 512,512,2048,2048 --prefill_chunks 2048 --decode_prompt 2048 --decode_steps 16 --batches 1 --batch_steps 2 --repeats 2 --reference_blas ""; }
llamacpp() { (cd bench/peers && run llamacpp_$1 node llamacpp_bench.mjs --model /work/peers-tmp/llama3-8b-2l-$1.gguf --kv $1 --threads 2); }
torch() { run torch_$1 /usr/bin/python3 bench/peers/torch_bench.py --dtype $1 --threads 2; }
if [[ $ORDER == rev ]]; then
  for ((i = ${#benches[@]} - 1; i >= 0; i--)); do ${benches[i]%_*} "${benches[i]##*_}"; done
else
  for b in "${benches[@]}"; do ${b%_*} "${b##*_}"; done
fi
