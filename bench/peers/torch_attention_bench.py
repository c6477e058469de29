#!/usr/bin/env python3
"""torch_attention_bench.py - PyTorch peer for issue #13's prefill attention figure.

Times torch.nn.functional.scaled_dot_product_attention (causal) on the shapes of
dapq_gpu_kernels_bench's "Prefill attention" table: one layer of Llama-3-8B attention, 32 query
heads, 8 KV heads, head_dim 128, q_tokens = kv_len = n, bf16 (or --dtype). The FLOP count is the
same as ours: 4 x head_dim x q_heads x n(n+1)/2 (QK^T and PV over the causal pairs), so the
TFLOP/s columns compare directly. GQA: SDPA's enable_gqa when this torch has it (2.5+);
otherwise K and V are expanded to the query heads once, before timing (the expansion is not
timed, which favours the peer). A torch without SDPA (before 2.0) runs matmul + masked softmax
+ matmul, and says so in the backend column.

Timing: --warmup calls, then --reps calls, each alone between two synchronisations (CUDA events
on a GPU, perf_counter on the CPU); the best and the median are printed.

Output (Markdown, stdout):
  | attention | n | backend | best ms | median ms | TFLOP/s (best) |

A tool, not a dependency: it runs where torch is installed (the GPU image; Debian's
python3-torch on the CPU for a smoke test with small --tokens).
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def causal_flop(n, q_heads, head_dim):
    return 4.0 * head_dim * q_heads * n * (n + 1) / 2.0


def make_attention():
    """(backend label, attention(q, k, v), whether K/V must be expanded to the query heads)."""
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    if sdpa is not None:
        try:
            sdpa(torch.zeros(1, 2, 2, 8), torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8),
                 is_causal=True, enable_gqa=True)
            return ("sdpa (enable_gqa)",
                    lambda q, k, v: sdpa(q, k, v, is_causal=True, enable_gqa=True), False)
        except (TypeError, RuntimeError):
            return "sdpa (K/V expanded)", lambda q, k, v: sdpa(q, k, v, is_causal=True), True

    def manual(q, k, v):
        n = q.shape[-2]
        s = torch.matmul(q, k.transpose(-1, -2)).float() / (q.shape[-1] ** 0.5)
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
        return torch.matmul(torch.softmax(s, dim=-1).to(v.dtype), v)

    return "matmul + softmax (no sdpa, K/V expanded)", manual, True


def time_calls(fn, device, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--tokens", default="8192,32768", help="comma-separated n values")
    ap.add_argument("--q_heads", type=int, default=32)
    ap.add_argument("--kv_heads", type=int, default=8)
    ap.add_argument("--head_dim", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.q_heads % args.kv_heads != 0:
        raise SystemExit("--q_heads must be a multiple of --kv_heads")
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    backend, attention, expand = make_attention()
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"PyTorch {torch.__version__} on {name}: causal prefill attention, {args.q_heads} query heads, "
          f"{args.kv_heads} KV heads, head_dim {args.head_dim}, {args.dtype}; FLOP = 4 x head_dim x "
          f"q_heads x n(n+1)/2.\n")
    print("| attention | n | backend | best ms | median ms | TFLOP/s (best) |")
    print("|---|---|---|---|---|---|")
    group = args.q_heads // args.kv_heads
    for n in (int(x) for x in args.tokens.split(",")):
        def rand(heads):
            return torch.rand(1, heads, n, args.head_dim, generator=gen).mul_(2).sub_(1).to(device, dtype)
        q, k, v = rand(args.q_heads), rand(args.kv_heads), rand(args.kv_heads)
        if expand:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        best, median = time_calls(lambda: attention(q, k, v), device, args.warmup, args.reps)
        flop = causal_flop(n, args.q_heads, args.head_dim)
        print(f"| attention | {n} | {backend} | {best * 1e3:.2f} | {median * 1e3:.2f} | {flop / best / 1e12:.2f} |",
              flush=True)
        del q, k, v
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
