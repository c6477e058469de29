// File: worker/compress/compression_config.h
// The per-request KV-cache compression configuration (../shared/docs/COMPRESSION.md): method,
// budget (tokens or ratio of the prompt), local window, sinks, pooling, the DapQ options, budget
// allocator and storage mode. Fields left at -1 take the method's published default (Resolve()).
// Validate() rejects bad configs with InvalidArgument naming the field.
// Plain value type; thread-compatible.
#ifndef DAPQ_WORKER_COMPRESS_COMPRESSION_CONFIG_H_
#define DAPQ_WORKER_COMPRESS_COMPRESSION_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/pooling.h"

namespace dapq::worker::compress {

enum class Method {
  kFull,
  kDapq,
  kSnapKv,
  kH2o,
  kStreamingLlm,
  kTova,
  kExpectedAttention,
  kRandom
};
// DapQ pseudo-query content (step 1 of the spec).
enum class Content { kLast, kMean, kLastToken, kRandom, kZero };
// DapQ pseudo-query positions: future n+offset+i*stride, or the window's actual n-w+i.
enum class Positions { kFuture, kActual };
// DapQ mode: cheap pseudo queries (content + RoPE), or `forward`: run placeholder tokens through
// the layers at the future positions and use their queries.
enum class DapqMode { kPseudo, kForward };
enum class Allocator { kUniform, kPyramid, kAdaptive };
enum class Storage { kShared, kPerHead };

struct CompressionConfig {
  Method method = Method::kFull;
  int budget_tokens = 0;      // > 0: tokens kept per (layer, KV head), local window included
  double budget_ratio = 0.0;  // in (0, 1]: budget = ceil(ratio * prompt length); one of the two
  int window = -1;            // local window w_l kept as is (dapq 0, snapkv 32, h2o 8, others 0)
  int sinks = -1;        // first tokens always kept (streaming 4, expected_attention 4, else 0)
  int pool_kernel = -1;  // odd; 1 = none (dapq/snapkv 7, others 1)
  kernels::PoolType pool = kernels::PoolType::kMax;
  int query_window = -1;  // queries scored with: dapq w_p 16, snapkv = window (32)
  // DapQ.
  Content content = Content::kLastToken;  // chosen by evaluation (bench/results/eval)
  Positions positions = Positions::kFuture;
  int offset = 0;        // first pseudo position = n + offset
  int stride = 1;        // pseudo positions step
  float gamma = 1.0f;    // proximity weight omega_i ~ gamma^i (1 = uniform)
  int mean_tokens = -1;  // content=mean: last m prompt queries averaged (default w_p)
  DapqMode mode = DapqMode::kPseudo;
  // H2O: divide by the number of queries that saw each key.
  bool h2o_normalize = false;
  // ExpectedAttention: future positions RoPE is averaged over.
  int expected_future = 512;
  Allocator allocator = Allocator::kUniform;
  float pyramid_beta = 20.0f;
  float adaptive_floor = 0.2f;  // AdaKV alpha: share of the uniform budget every head keeps
  Storage storage = Storage::kShared;
  uint64_t seed = 0;  // random content / random method
  // Prompts whose every layer fits the budget are not compressed (a plain prefill). false runs
  // the compressor anyway, which then keeps every token (tests of the full-cache invariant).
  bool skip_within_budget = true;
  // Streaming compression (Engine::PrefillCompressed): prefill in chunks of this many tokens,
  // compressing back to the budget after each; 0 compresses once, at the end of prefill.
  int streaming_chunk = 0;
  // A session's later turns compress again (retained slots + the new turn); otherwise only the
  // first turn is compressed and later turns are plain prefills.
  bool every_turn = false;

  // InvalidArgument naming the field: budget <= 0 or both/neither budget forms, ratio outside
  // (0, 1], window or sinks negative or window + sinks > budget tokens, even pool kernel, ...
  absl::Status Validate() const;
  // Fills the -1 defaults for the method and validates. With the prompt length n > 0, defaulted
  // windows and sinks are capped to half and a quarter of that prompt's budget (explicit values
  // are kept; the selector clamps them to the budget).
  absl::StatusOr<CompressionConfig> Resolve(int n = 0) const;
  // Tokens kept per (layer, KV head) for a prompt of n tokens (before allocators), >= 1.
  int BudgetFor(int n) const;
  std::string DebugString() const;
};

absl::StatusOr<Method> ParseMethod(absl::string_view name);
absl::string_view MethodName(Method m);
absl::StatusOr<Content> ParseContent(absl::string_view name);
absl::StatusOr<Positions> ParsePositions(absl::string_view name);
absl::StatusOr<Allocator> ParseAllocator(absl::string_view name);
absl::StatusOr<Storage> ParseStorage(absl::string_view name);
absl::StatusOr<kernels::PoolType> ParsePool(absl::string_view name);
absl::StatusOr<DapqMode> ParseDapqMode(absl::string_view name);

}  // namespace dapq::worker::compress

#endif  // DAPQ_WORKER_COMPRESS_COMPRESSION_CONFIG_H_
