#!/bin/bash
# Paired engine runs, prefill 2048 (twice) and decode, bf16 weights + bf16 KV, native OpenBLAS: base = dapq_engine_bench
# built at 94eb448, new = built at 8880085 (copied to /work/base and /work/new_engine_bench), taking
# turns. Outputs were copied here as prefill_{base,new}_N.md.
cd /work/main
for i in 1 2 3; do
  for b in base new; do
    bin=/work/base/dapq_engine_bench; [[ $b == new ]] && bin=/work/new_engine_bench
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 $bin --weights_dtype bf16 --kv_dtype bf16 \
      --prompt_lengths 2048,2048 --prefill_chunks 2048 --decode_prompt 2048 --decode_steps 16 --batches 1 \
      --batch_steps 1 --repeats 2 --gemm_m 512,1024 --reference_blas "" > /work/ab2/${b}_$i.md 2>&1
    echo "$(date -u +%T) $b $i rc=$?" >> /work/ab2/progress.log
  done
done
