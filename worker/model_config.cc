// File: worker/model_config.cc
// ModelConfig validation and a one-line description for logs.
#include "worker/model_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dapq::worker {
namespace {
absl::Status Positive(const char* field, long value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("model config: ", field, "=", value, " must be > 0"));
}
}  // namespace

absl::Status ModelConfig::Validate() const {
  for (const auto& [field, value] : {std::pair<const char*, long>{"dim", dim},
                                     {"hidden_dim", hidden_dim},
                                     {"n_layers", n_layers},
                                     {"n_heads", n_heads},
                                     {"n_kv_heads", n_kv_heads},
                                     {"head_dim", head_dim},
                                     {"vocab_size", vocab_size},
                                     {"max_seq_len", max_seq_len}}) {
    absl::Status s = Positive(field, value);
    if (!s.ok()) return s;
  }
  if (n_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config: n_heads=", n_heads, " is not a multiple of n_kv_heads=", n_kv_heads));
  }
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config: head_dim=", head_dim, " must be even for RoPE"));
  }
  if (rope.head_dim != head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("model config: rope.head_dim=", rope.head_dim,
                                                   " differs from head_dim=", head_dim));
  }
  if (!(norm_eps > 0.0f) || norm_eps > 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat("model config: norm_eps=", norm_eps));
  }
  if (bos_token_id < 0 || bos_token_id >= vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("model config: bos_token_id=", bos_token_id,
                                                   " outside [0, vocab_size=", vocab_size, ")"));
  }
  for (int id : stop_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("model config: stop token id ", id, " outside the vocabulary"));
    }
  }
  return kernels::ComputeRopeInvFreq(rope).status();
}

std::string ModelConfig::DebugString() const {
  return absl::StrCat(
      name, ": dim=", dim, " hidden=", hidden_dim, " layers=", n_layers, " heads=", n_heads, "/",
      n_kv_heads, " head_dim=", head_dim, " vocab=", vocab_size, " ctx=", max_seq_len,
      " rope_theta=", rope.theta,
      rope.layout == kernels::RopeLayout::kInterleaved ? " interleaved" : " half-split",
      rope.scaling.factor > 0 ? absl::StrCat(" llama3-scaling x", rope.scaling.factor) : "",
      tied_embeddings ? " tied" : "", attention_bias ? " qkv-bias" : "", " stop={",
      absl::StrJoin(stop_token_ids, ","), "}");
}

}  // namespace dapq::worker
