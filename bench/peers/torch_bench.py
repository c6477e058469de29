#!/usr/bin/env python3
"""torch_bench.py - PyTorch peer benchmark for issue #12: prefill and decode on synthetic Llama-3-8B shapes.

A peer tool, not part of the engine. Runs a plain eager Llama forward (RMSNorm, GQA attention
with a KV cache, Llama-3 RoPE, SwiGLU FFN, untied classifier) written with torch ops, on the
shapes of our bench's `synthetic:llama3-8b-<N>l` (worker/synthetic_model.cc), with seeded
random weights (uniform in [-0.02, 0.02)).

Measures, with --threads threads (torch.set_num_threads; OpenBLAS threads via the environment):
  - prefill tok/s: one forward of the whole prompt, logits for the last token only (as our bench
    and llama.cpp do); each length in --prompt_lengths is run in order, so "512,512" gives a
    first and a warm second run;
  - decode tok/s at --decode_prompt context, batch 1: prefill, then --decode_steps single-token
    steps (one untimed first), each computing the full logits and a greedy argmax; twice: first
    with F.linear for every product (what an eager model does; torch 1.13 sends a 1-row F.linear
    to BLAS sgemm, slow here), then continuing the same sequence with torch.mv for the 1-row
    products (BLAS sgemv for fp32).

On a GPU (--device cuda, issue #13's peer for dapq_device_engine_bench) the weights are drawn on
the device, every timing waits for the device (torch.cuda.synchronize), and --batches runs B
sequences at once: prefill of B prompts in one forward, decode of one token for each of B.
Attention is torch.nn.functional.scaled_dot_product_attention when the torch has it (2.x:
FlashAttention on the GPU), else the bmm + softmax below.
  python3 bench/peers/torch_bench.py --device cuda --dtype bf16 --layers 32 --batches 1,32 \
      --prompt_lengths 512,2048 --decode_prompt 512

Intended for Debian's python3-torch 1.13 (fp32 matmuls go to the system BLAS, OpenBLAS here;
bf16 matmuls to oneDNN). Run it with Debian's /usr/bin/python3:
  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/peers/torch_bench.py --dtype fp32
  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/peers/torch_bench.py --dtype bf16
The fp32 model of 2 layers holds ~6.2 GB of weights (bf16: ~3.1 GB).
"""
import argparse
import math
import os
import subprocess
import time

import torch
import torch.nn.functional as F

DIM, FFN, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 4096, 14336, 32, 8, 128, 128256
THETA, ROPE_FACTOR, ROPE_ORIG_CTX, EPS = 500000.0, 8.0, 8192, 1e-5


def llama3_inv_freq():
    inv = 1.0 / (THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM))
    low_wavelen, high_wavelen = ROPE_ORIG_CTX / 1.0, ROPE_ORIG_CTX / 4.0
    out = []
    for f in inv.tolist():
        w = 2 * math.pi / f
        if w < high_wavelen:
            out.append(f)
        elif w > low_wavelen:
            out.append(f / ROPE_FACTOR)
        else:
            s = (ROPE_ORIG_CTX / w - 1.0) / 3.0
            out.append((1 - s) * f / ROPE_FACTOR + s * f)
    return torch.tensor(out, dtype=torch.float32)


class Model:
    def __init__(self, layers, dtype, seed, max_ctx, device="cpu", batch=1):
        g = torch.Generator(device=device).manual_seed(seed)
        self.dtype, self.device = dtype, device

        def w(out_f, in_f):  # [out, in], as F.linear wants
            t = torch.empty(out_f, in_f, dtype=torch.float32, device=device)
            t.uniform_(-0.02, 0.02, generator=g)
            return t.to(dtype) if dtype != torch.float32 else t

        self.embed = w(VOCAB, DIM)
        self.layers = []
        for _ in range(layers):
            self.layers.append(dict(
                attn_norm=torch.ones(DIM, dtype=dtype, device=device),
                ffn_norm=torch.ones(DIM, dtype=dtype, device=device),
                wq=w(HEADS * HEAD_DIM, DIM), wk=w(KV_HEADS * HEAD_DIM, DIM),
                wv=w(KV_HEADS * HEAD_DIM, DIM), wo=w(DIM, HEADS * HEAD_DIM),
                w1=w(FFN, DIM), w3=w(FFN, DIM), w2=w(DIM, FFN)))
        self.out_norm = torch.ones(DIM, dtype=dtype, device=device)
        self.classifier = w(VOCAB, DIM)
        pos = torch.arange(max_ctx, dtype=torch.float32)
        ang = torch.outer(pos, llama3_inv_freq())  # [ctx, HEAD_DIM/2]
        self.cos, self.sin = ang.cos().to(dtype).to(device), ang.sin().to(dtype).to(device)
        self.max_ctx = max_ctx
        self.matvec = False  # single-token steps through torch.mv instead of F.linear (see main)
        self.sdpa = getattr(F, "scaled_dot_product_attention", None)
        self.reset(batch)

    def reset(self, batch=1):
        shape = (batch, KV_HEADS, self.max_ctx, HEAD_DIM)
        self.k_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.v_cache = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.pos = 0

    def sync(self):
        if self.device != "cpu":
            torch.cuda.synchronize()

    def weight_bytes(self):
        n = self.embed.numel() + self.classifier.numel()
        for L in self.layers:
            n += sum(t.numel() for t in L.values())
        return n * self.embed.element_size()

    def lin(self, x, w):
        if self.matvec and x.shape[0] * x.shape[1] == 1:
            return torch.mv(w, x[0, 0]).view(1, 1, -1)
        return F.linear(x, w)

    @staticmethod
    def rms(x, wt):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * wt

    def rope(self, x, start):  # x: [b, h, t, d], pairs (2i, 2i+1) as llama.cpp's normal RoPE
        t = x.shape[2]
        cos, sin = self.cos[start:start + t], self.sin[start:start + t]
        x2 = x.reshape(*x.shape[:3], HEAD_DIM // 2, 2)
        a, b = x2[..., 0], x2[..., 1]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).view_as(x)

    def attend(self, q, kk, vv, start):
        """q: [b, HEADS, t, d]; kk, vv: [b, KV_HEADS, end, d] -> [b, t, DIM]."""
        b, _, t, _ = q.shape
        end = kk.shape[2]
        group = HEADS // KV_HEADS
        if self.sdpa is not None:
            kk = kk.repeat_interleave(group, dim=1)
            vv = vv.repeat_interleave(group, dim=1)
            o = self.sdpa(q, kk, vv, is_causal=t > 1 and start == 0)
            return o.transpose(1, 2).reshape(b, t, DIM)
        scale = 1.0 / math.sqrt(HEAD_DIM)
        # GQA without copying K/V: fold the group into the query rows.
        qg = q.reshape(b * KV_HEADS, group * t, HEAD_DIM)
        s = torch.bmm(qg, kk.reshape(b * KV_HEADS, end, HEAD_DIM).transpose(1, 2)).float() * scale
        if t > 1:
            mask = torch.ones(t, end, dtype=torch.bool, device=q.device).triu_(start + 1)
            s = s.view(b * KV_HEADS, group, t, end).masked_fill_(mask, float("-inf"))
            s = s.view(b * KV_HEADS, group * t, end)
        p = torch.softmax(s, -1).to(self.dtype)
        o = torch.bmm(p, vv.reshape(b * KV_HEADS, end, HEAD_DIM))
        return o.view(b, HEADS, t, HEAD_DIM).transpose(1, 2).reshape(b, t, DIM)

    def forward(self, tokens):
        """tokens: [b, t] LongTensor; appends to the KV cache; returns each sequence's last
        token's logits [b, VOCAB]."""
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        b, t = tokens.shape
        start = self.pos
        end = start + t
        x = F.embedding(tokens, self.embed)  # [b, t, DIM]
        for i, L in enumerate(self.layers):
            h = self.rms(x, L["attn_norm"])
            q = self.lin(h, L["wq"]).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
            k = self.lin(h, L["wk"]).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
            v = self.lin(h, L["wv"]).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
            q, k = self.rope(q, start), self.rope(k, start)
            self.k_cache[i][:b, :, start:end] = k
            self.v_cache[i][:b, :, start:end] = v
            o = self.attend(q, self.k_cache[i][:b, :, :end], self.v_cache[i][:b, :, :end], start)
            x = x + self.lin(o, L["wo"])
            h = self.rms(x, L["ffn_norm"])
            x = x + self.lin(F.silu(self.lin(h, L["w1"])) * self.lin(h, L["w3"]), L["w2"])
        self.pos = end
        last = self.rms(x[:, -1:], self.out_norm)
        return self.lin(last, self.classifier)[:, 0]


def load():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1", help="sequences per forward, e.g. 1,32")
    ap.add_argument("--prompt_lengths", default="512,512,2048,2048")
    ap.add_argument("--decode_prompt", type=int, default=2048)
    ap.add_argument("--decode_steps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_bench: --device cuda but torch sees no CUDA device")
        raise SystemExit(2)
    torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    lengths = [int(s) for s in args.prompt_lengths.split(",") if s]
    batches = [int(s) for s in args.batches.split(",") if s]
    max_ctx = max(lengths + [args.decode_prompt + 2 * args.decode_steps + 2])
    where = (torch.cuda.get_device_name(0) if args.device == "cuda"
             else f"threads {torch.get_num_threads()}")
    print(f"# torch_bench: torch {torch.__version__}, device {args.device} ({where}), dtype {args.dtype}, "
          f"layers {args.layers}, batches {batches}, attention "
          f"{'scaled_dot_product_attention' if hasattr(F, 'scaled_dot_product_attention') else 'bmm + softmax'}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset: native)')}, "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}")
    print(f"# start {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} load: {load()}")
    t0 = time.perf_counter()
    m = Model(args.layers, dtype, args.seed, max_ctx, args.device, max(batches))
    m.sync()
    print(f"# built model in {time.perf_counter() - t0:.1f} s, weights {m.weight_bytes() / 1e9:.2f} GB")
    gen = torch.Generator().manual_seed(args.seed)

    def tokens(b, n):
        return torch.randint(0, VOCAB, (b, n), generator=gen).to(args.device)

    with torch.inference_mode():
        print("\n| run | batch | prompt tokens | seconds | tok/s |\n|---|---:|---:|---:|---:|")
        run = 0
        for b in batches:
            for n in lengths:
                toks = tokens(b, n)
                m.reset(b)
                m.sync()
                t0 = time.perf_counter()
                logits = m.forward(toks)
                m.sync()
                dt = time.perf_counter() - t0
                assert torch.isfinite(logits.float()).all()
                run += 1
                print(f"| prefill {run} | {b} | {n} | {dt:.3f} | {b * n / dt:.1f} |", flush=True)

        print("\n| decode | context | timed steps | ms/step (mean) | tok/s (mean) | median ms | min ms | tok/s at median |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|")
        for b in batches:
            m.reset(b)
            t0 = time.perf_counter()
            logits = m.forward(tokens(b, args.decode_prompt))
            m.sync()
            pre = time.perf_counter() - t0
            tok = logits.argmax(-1).unsqueeze(1)
            # torch.mv serves one row on the CPU only (see the module's docstring).
            modes = ("F.linear", "torch.mv") if b == 1 and args.device == "cpu" else ("F.linear",)
            for mode in modes:
                m.matvec = mode == "torch.mv"
                try:
                    tok = m.forward(tok).argmax(-1).unsqueeze(1)  # untimed first step of this mode
                    m.sync()
                    ctx = m.pos
                    step_ms = []
                    t0 = time.perf_counter()
                    for _ in range(args.decode_steps):
                        ts = time.perf_counter()
                        tok = m.forward(tok).argmax(-1).unsqueeze(1)
                        m.sync()
                        step_ms.append(1000 * (time.perf_counter() - ts))
                    dt = time.perf_counter() - t0
                    med = sorted(step_ms)[len(step_ms) // 2]
                    print(f"| batch {b}, {mode} | {ctx} | {args.decode_steps} | {1000 * dt / args.decode_steps:.1f} | "
                          f"{b * args.decode_steps / dt:.2f} | {med:.1f} | {min(step_ms):.1f} | {b * 1000 / med:.2f} |",
                          flush=True)
                except RuntimeError as e:
                    print(f"| batch {b}, {mode} | {m.pos} | failed: {str(e).splitlines()[0]} | | | | | |")
            print(f"(batch {b}: prefill before decode {args.decode_prompt} tokens each in {pre:.3f} s; "
                  f"the modes continue the same sequences)")
    print(f"# end {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} load: {load()}")


if __name__ == "__main__":
    main()
