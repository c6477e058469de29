#!/bin/bash
# Usage: ab_engine.sh DTYPE ROUNDS BIN...  -> decode tok/s and fraction of memcpy per run
dt=$1; rounds=$2; shift 2
for r in $(seq $rounds); do
  for b in "$@"; do
    line=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 $b --weights_dtype $dt --kv_dtype $dt --prompt_lengths 16 --prefill_chunks 2048 --decode_prompt 2048 --decode_steps 32 --batches 1 --batch_steps 1 --repeats 1 --reference_blas "" --gemm_m 16 2>&1 | grep -E "^\| 2048 \| 32 ")
    echo "$dt r$r $(basename $b): $line"
  done
done
