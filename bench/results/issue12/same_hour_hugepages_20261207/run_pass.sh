#!/bin/bash
# One pass: ours and llama.cpp, fp32 and bf16, native OpenBLAS kernels. $1 = pass, $2 = fwd|rev
set -u
cd /work/main
P=$1
run() {
  local name=$1; shift
  echo "[$(date -u +%T)] pass $P $name start, load $(cut -d' ' -f1 /proc/loadavg)" >> /work/peers-tmp/out2/progress.log
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 "$@" > /work/peers-tmp/out2/${name}_pass$P.md 2>&1
  echo "[$(date -u +%T)] pass $P $name done rc=$?" >> /work/peers-tmp/out2/progress.log
}
ours() { run ours_$1 build/bench/dapq_engine_bench --weights_dtype $1 --kv_dtype $1 --prompt_lengths 512,512,2048,2048 --prefill_chunks 2048 --decode_prompt 2048 --decode_steps 16 --batches 1 --batch_steps 2 --repeats 2 --reference_blas ""; }
llama() { (cd bench/peers && run llamacpp_$1 node llamacpp_bench.mjs --model /work/peers-tmp/llama3-8b-2l-$1.gguf --kv $1 --threads 2); }
if [[ $2 == fwd ]]; then
  ours bf16; llama bf16; ours fp32; llama f32
else
  llama f32; ours fp32; llama bf16; ours bf16
fi
