// File: cli/compress_command.cc
// Implementation of `dapq compress`: flags, .npy input checks, outputs and the summary; the
// scoring itself is worker::compress::CompressLayerTensors (worker/compress/offline_layer.h).
#include "cli/compress_command.h"

#include <cstdio>
#include <limits>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/command.h"
#include "cli/compression_flags.h"
#include "common/npy.h"
#include "common/status_macros.h"
#include "kernels/rope.h"
#include "worker/compress/offline_layer.h"

namespace dapq::cli {
namespace {

namespace wc = worker::compress;

absl::StatusOr<kernels::RopeLayout> ParseRopeLayout(const std::string& name) {
  if (name == "interleaved") return kernels::RopeLayout::kInterleaved;
  if (name == "half_split") return kernels::RopeLayout::kHalfSplit;
  return absl::InvalidArgumentError(
      absl::StrCat("--rope-layout '", name,
                   "' unknown; expected interleaved (Meta/llama2.c) or half_split (HF)"));
}

std::string Shape(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Reads a float tensor of rank 3 with positive dimensions; errors name the flag.
absl::StatusOr<NpyArray> ReadTensor(const std::string& flag, const std::string& path) {
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  if (!a.ok())
    return absl::Status(a.status().code(), absl::StrCat(flag, ": ", a.status().message()));
  if (!a->is_float()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", path, ": dtype ", NpyDTypeName(a->dtype), ", expected float ('<f4' or '<f8')"));
  }
  bool positive = a->shape.size() == 3;
  for (int64_t dim : a->shape) positive = positive && dim > 0 && dim < (1 << 30);
  if (!positive) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": shape ", Shape(a->shape),
                                                   ", expected [heads, n, head_dim] (all > 0)"));
  }
  return a;
}

absl::Status WriteOutputs(const CompressCommandOptions& o, const wc::LayerResult& r, int kv_heads,
                          int n, bool* padded) {
  size_t width = 0, shortest = std::numeric_limits<size_t>::max();
  for (const auto& row : r.keep) {
    width = std::max(width, row.size());
    shortest = std::min(shortest, row.size());
  }
  *padded = shortest != width;
  std::vector<int64_t> kept(static_cast<size_t>(kv_heads) * width, -1);
  for (int h = 0; h < kv_heads; ++h) {
    std::copy(r.keep[h].begin(), r.keep[h].end(), kept.begin() + static_cast<long>(h) * width);
  }
  absl::Status s = WriteNpyI64(o.out_kept, {kv_heads, static_cast<int64_t>(width)}, kept);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("--out-kept: ", s.message()));
  if (!o.out_scores.empty()) {
    s = WriteNpyF32(o.out_scores, {kv_heads, n}, r.scores);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("--out-scores: ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CompressCommandOptions::Validate() const {
  if (queries.empty()) return absl::InvalidArgumentError("--queries is required");
  if (keys.empty()) return absl::InvalidArgumentError("--keys is required");
  if (out_kept.empty()) return absl::InvalidArgumentError("--out-kept is required");
  if (rope_theta != 0.0f && !(rope_theta > 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rope-theta=", rope_theta, " must be > 1 (0: RoPE not given)"));
  }
  return ParseRopeLayout(rope_layout).status();
}

absl::Status RunCompress(const CompressCommandOptions& o) {
  DAPQ_RETURN_IF_ERROR(o.Validate());
  DAPQ_ASSIGN_OR_RETURN(const kernels::RopeLayout layout, ParseRopeLayout(o.rope_layout));
  DAPQ_ASSIGN_OR_RETURN(const NpyArray q, ReadTensor("--queries", o.queries));
  DAPQ_ASSIGN_OR_RETURN(const NpyArray k, ReadTensor("--keys", o.keys));
  const int q_heads = static_cast<int>(q.shape[0]), n = static_cast<int>(q.shape[1]),
            d = static_cast<int>(q.shape[2]), kv_heads = static_cast<int>(k.shape[0]);
  if (k.shape[1] != n || k.shape[2] != d) {
    return absl::InvalidArgumentError(
        absl::StrCat("--queries shape ", Shape(q.shape), " [H, n, d] and --keys shape ",
                     Shape(k.shape), " [H_kv, n, d] must agree on n (tokens) and d (head_dim)"));
  }
  if (q_heads % kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--queries has H=", q_heads,
                                                   " heads, not a multiple of the --keys KV heads "
                                                   "H_kv=",
                                                   kv_heads));
  }
  NpyArray v;
  if (!o.values.empty()) {
    DAPQ_ASSIGN_OR_RETURN(v, ReadTensor("--values", o.values));
    if (v.shape != k.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--values shape ", Shape(v.shape), " differs from --keys shape ", Shape(k.shape)));
    }
  }
  DAPQ_ASSIGN_OR_RETURN(const wc::CompressionConfig config, o.compression.Resolve(n));
  std::vector<float> inv_freq;
  if (o.rope_theta != 0.0f) {
    kernels::RopeConfig rope;
    rope.head_dim = d;
    rope.theta = o.rope_theta;
    rope.layout = layout;
    absl::StatusOr<std::vector<float>> f = kernels::ComputeRopeInvFreq(rope);
    if (!f.ok())
      return absl::InvalidArgumentError(absl::StrCat("--rope-theta: ", f.status().message()));
    inv_freq = *std::move(f);
  }

  wc::LayerTensors t;
  t.q_heads = q_heads;
  t.kv_heads = kv_heads;
  t.n = n;
  t.head_dim = d;
  t.queries = q.f32.data();
  t.queries_pre_rope = o.queries_pre_rope;
  t.keys = k.f32.data();
  t.values = o.values.empty() ? nullptr : v.f32.data();
  t.inv_freq = inv_freq.empty() ? nullptr : inv_freq.data();
  t.rope_layout = layout;
  DAPQ_ASSIGN_OR_RETURN(const wc::LayerResult r, wc::CompressLayerTensors(config, t));
  bool padded = false;
  DAPQ_RETURN_IF_ERROR(WriteOutputs(o, r, kv_heads, n, &padded));

  std::vector<size_t> kept;
  for (const auto& row : r.keep) kept.push_back(row.size());
  std::fprintf(stderr,
               "compress: %s\n  queries %s (%s-RoPE), keys %s: n=%d, budget %d per KV head\n"
               "  kept per KV head: %s%s\n",
               config.DebugString().c_str(), Shape(q.shape).c_str(),
               o.queries_pre_rope ? "pre" : "post", Shape(k.shape).c_str(), n, r.budget,
               absl::StrJoin(kept, " ").c_str(), padded ? " (shorter rows padded with -1)" : "");
  return absl::OkStatus();
}

void AddCompressCommand(CLI::App& app, CommandRunner& runner) {
  auto opts = std::make_shared<CompressCommandOptions>();
  auto compression = std::make_shared<CompressionFlags>();
  CLI::App* cmd = app.add_subcommand(
      "compress",
      "run a KV compression scorer + selector on .npy tensors (one layer, one rank) and write "
      "the kept positions");
  cmd->add_option("--queries", opts->queries,
                  "q.npy float [H, n, d]: the layer's queries, post-RoPE (see --queries-pre-rope)")
      ->required();
  cmd->add_option("--keys", opts->keys, "k.npy float [H_kv, n, d]: the cached (post-RoPE) keys")
      ->required();
  cmd->add_option("--values", opts->values,
                  "v.npy float [H_kv, n, d] (needed by expected_attention; default zeros)");
  cmd->add_option("--out-kept", opts->out_kept,
                  "output int64 [H_kv, B]: sorted kept positions, one row per KV head (identical "
                  "rows with --storage shared; with --storage per_head --allocator adaptive heads "
                  "keep different counts and shorter rows are padded with -1)")
      ->required();
  cmd->add_option("--out-scores", opts->out_scores,
                  "output float32 [H_kv, n]: raw scorer scores before pooling (zeros for full)");
  cmd->add_option("--rope-theta", opts->rope_theta,
                  "RoPE base; needed to un-rotate post-RoPE queries (dapq except "
                  "--positions actual --content last, expected_attention) or to rotate "
                  "--queries-pre-rope ones (0: not given)");
  cmd->add_option("--rope-layout", opts->rope_layout,
                  "RoPE layout: interleaved (Meta/llama2.c) | half_split (Hugging Face)")
      ->capture_default_str();
  cmd->add_flag("--queries-pre-rope", opts->queries_pre_rope,
                "q.npy holds pre-RoPE queries (rotated here with --rope-theta)");
  compression->Register(cmd);
  runner.Add(cmd, [opts, compression]() -> absl::Status {
    DAPQ_ASSIGN_OR_RETURN(opts->compression, compression->ToConfig());
    return RunCompress(*opts);
  });
}

}  // namespace dapq::cli
