#!/usr/bin/env python3
"""write_gguf.py - writes a synthetic Llama-3-8B-shaped GGUF (v3) for the peer benchmarks (issue #12).

A peer tool, not part of the engine. It writes the same shapes as our bench's
`synthetic:llama3-8b-<N>l` (worker/synthetic_model.cc: hidden 4096, 32 heads, 8 KV heads,
head_dim 128, FFN 14336, vocab 128256, RMSNorm eps 1e-5, RoPE theta 500000 with Llama-3
scaling factor 8 from 8192, untied output head) with N transformer layers, so that llama.cpp
(via node-llama-cpp, see llamacpp_bench.mjs) can load it.

Weights are seeded uniform random values in [-0.02, 0.02) (speed does not depend on them; they
are not our engine's values). Norm weights are 1.0 and stay f32 whatever --dtype says, as
llama.cpp's converter keeps 1-D tensors in f32. The vocabulary is synthetic: <unk>, <s>, </s>,
the 256 byte tokens <0x00>..<0xFF>, then "tok<i>" up to 128256 entries, tokenizer model "llama"
(SentencePiece-style), so that llama.cpp accepts the file; the benchmarks feed token ids
directly and never tokenize text.

Needs only numpy. Writes tensor by tensor in chunks (peak memory ~ a few hundred MB).

Usage:
  python3 write_gguf.py --out /work/peers-tmp/llama3-8b-2l-f32.gguf --dtype f32 --layers 2
  python3 write_gguf.py --out /work/peers-tmp/llama3-8b-2l-bf16.gguf --dtype bf16 --layers 2
"""
import argparse
import math
import struct

import numpy as np

# Llama-3-8B, as worker/synthetic_model.cc's "llama3-8b" row.
DIM, FFN, HEADS, KV_HEADS, HEAD_DIM, VOCAB, CTX = 4096, 14336, 32, 8, 128, 128256, 131072
THETA, ROPE_FACTOR, ROPE_ORIG_CTX, EPS = 500000.0, 8.0, 8192, 1e-5

ALIGN = 32
# GGUF metadata value types
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9
# ggml tensor types
GGML_F32, GGML_BF16 = 0, 30
# llama_ftype
FTYPE_ALL_F32, FTYPE_MOSTLY_BF16 = 0, 32


def gguf_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = gguf_str(key) + struct.pack("<I", vtype)
    if vtype == T_STRING:
        return out + gguf_str(value)
    if vtype == T_UINT32:
        return out + struct.pack("<I", value)
    if vtype == T_INT32:
        return out + struct.pack("<i", value)
    if vtype == T_FLOAT32:
        return out + struct.pack("<f", value)
    if vtype == T_BOOL:
        return out + struct.pack("<?", value)
    raise ValueError(vtype)


def kv_array(key, elem_type, values):
    out = [gguf_str(key), struct.pack("<IIQ", T_ARRAY, elem_type, len(values))]
    if elem_type == T_STRING:
        out.extend(gguf_str(v) for v in values)
    elif elem_type == T_FLOAT32:
        out.append(np.asarray(values, dtype="<f4").tobytes())
    elif elem_type == T_INT32:
        out.append(np.asarray(values, dtype="<i4").tobytes())
    else:
        raise ValueError(elem_type)
    return b"".join(out)


def llama3_rope_freqs():
    """Llama-3 RoPE scaling as llama.cpp's converter writes it (rope_freqs.weight: 1/factor)."""
    low_freq_factor, high_freq_factor = 1.0, 4.0
    low_wavelen = ROPE_ORIG_CTX / low_freq_factor
    high_wavelen = ROPE_ORIG_CTX / high_freq_factor
    out = []
    for i in range(0, HEAD_DIM, 2):
        freq = 1.0 / (THETA ** (i / HEAD_DIM))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(ROPE_FACTOR)
        else:
            smooth = (ROPE_ORIG_CTX / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1.0 / ((1 - smooth) / ROPE_FACTOR + smooth))
    return np.asarray(out, dtype=np.float32)


def tensor_list(layers):
    """(name, ggml ne = [in/innermost, out], kind) in llama.cpp's naming."""
    t = [("token_embd.weight", [DIM, VOCAB], "w"),
         ("rope_freqs.weight", [HEAD_DIM // 2], "rope")]
    for l in range(layers):
        p = f"blk.{l}."
        t += [(p + "attn_norm.weight", [DIM], "norm"),
              (p + "attn_q.weight", [DIM, HEADS * HEAD_DIM], "w"),
              (p + "attn_k.weight", [DIM, KV_HEADS * HEAD_DIM], "w"),
              (p + "attn_v.weight", [DIM, KV_HEADS * HEAD_DIM], "w"),
              (p + "attn_output.weight", [HEADS * HEAD_DIM, DIM], "w"),
              (p + "ffn_norm.weight", [DIM], "norm"),
              (p + "ffn_gate.weight", [DIM, FFN], "w"),
              (p + "ffn_up.weight", [DIM, FFN], "w"),
              (p + "ffn_down.weight", [FFN, DIM], "w")]
    t += [("output_norm.weight", [DIM], "norm"),
          ("output.weight", [DIM, VOCAB], "w")]
    return t


def to_bf16(x):
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    wtype = GGML_F32 if args.dtype == "f32" else GGML_BF16
    tensors = tensor_list(args.layers)

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"tok{i}" for i in range(len(tokens), VOCAB)]
    types = [2, 3, 3] + [6] * 256 + [1] * (VOCAB - 259)  # unknown, control, byte, normal
    scores = [0.0] * 259 + [-float(i) for i in range(VOCAB - 259)]

    meta = [
        kv("general.architecture", T_STRING, "llama"),
        kv("general.name", T_STRING, f"synthetic-llama3-8b-{args.layers}l-{args.dtype}"),
        kv("general.file_type", T_UINT32, FTYPE_ALL_F32 if wtype == GGML_F32 else FTYPE_MOSTLY_BF16),
        kv("general.alignment", T_UINT32, ALIGN),
        kv("llama.vocab_size", T_UINT32, VOCAB),
        kv("llama.context_length", T_UINT32, CTX),
        kv("llama.embedding_length", T_UINT32, DIM),
        kv("llama.block_count", T_UINT32, args.layers),
        kv("llama.feed_forward_length", T_UINT32, FFN),
        kv("llama.rope.dimension_count", T_UINT32, HEAD_DIM),
        kv("llama.attention.head_count", T_UINT32, HEADS),
        kv("llama.attention.head_count_kv", T_UINT32, KV_HEADS),
        kv("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, EPS),
        kv("llama.rope.freq_base", T_FLOAT32, THETA),
        kv("tokenizer.ggml.model", T_STRING, "llama"),
        kv("tokenizer.ggml.pre", T_STRING, "default"),
        kv_array("tokenizer.ggml.tokens", T_STRING, tokens),
        kv_array("tokenizer.ggml.scores", T_FLOAT32, scores),
        kv_array("tokenizer.ggml.token_type", T_INT32, types),
        kv("tokenizer.ggml.bos_token_id", T_UINT32, 1),
        kv("tokenizer.ggml.eos_token_id", T_UINT32, 2),
        kv("tokenizer.ggml.unknown_token_id", T_UINT32, 0),
        kv("tokenizer.ggml.add_bos_token", T_BOOL, False),
        kv("tokenizer.ggml.add_eos_token", T_BOOL, False),
    ]

    infos, offset, layout = [], 0, []
    for name, ne, kind in tensors:
        ttype = wtype if kind == "w" else GGML_F32
        n = int(np.prod(ne))
        nbytes = n * (4 if ttype == GGML_F32 else 2)
        infos.append(gguf_str(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
                     + struct.pack("<IQ", ttype, offset))
        layout.append((name, n, kind, ttype, offset))
        offset += (nbytes + ALIGN - 1) // ALIGN * ALIGN

    with open(args.out, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
        for m in meta:
            f.write(m)
        for i in infos:
            f.write(i)
        pad = (-f.tell()) % ALIGN
        f.write(b"\0" * pad)
        data_start = f.tell()
        for idx, (name, n, kind, ttype, off) in enumerate(layout):
            assert f.tell() == data_start + off, name
            if kind == "norm":
                f.write(np.ones(n, dtype="<f4").tobytes())
            elif kind == "rope":
                f.write(llama3_rope_freqs().astype("<f4").tobytes())
            else:
                rng = np.random.default_rng([args.seed, idx])
                chunk = 1 << 24
                for s in range(0, n, chunk):
                    m = min(chunk, n - s)
                    x = rng.random(m, dtype=np.float32) * np.float32(0.04) - np.float32(0.02)
                    f.write((x if ttype == GGML_F32 else to_bf16(x)).tobytes())
            nb = n * (4 if ttype == GGML_F32 else 2)
            f.write(b"\0" * ((-nb) % ALIGN))
            print(f"  {name} {n} elements", flush=True)
    print(f"wrote {args.out}: {len(tensors)} tensors, {data_start + offset} bytes")


if __name__ == "__main__":
    main()
