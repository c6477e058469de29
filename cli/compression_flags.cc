// File: cli/compression_flags.cc
// Registration and parsing of the compression flags.
#include "cli/compression_flags.h"

#include "common/status_macros.h"

namespace dapq::cli {

void CompressionFlags::Register(CLI::App* app, bool with_method) {
  auto& c = numeric;
  if (with_method) {
    app->add_option("--method", method,
                    "KV compression: full|dapq|snapkv|h2o|streaming|tova|expected_attention|random")
        ->capture_default_str();
  }
  app->add_option("--budget", c.budget_tokens, "tokens kept per layer and KV head (incl. window)");
  app->add_option("--budget_ratio", c.budget_ratio, "budget as a fraction of the prompt, (0, 1]");
  app->add_option("--window", c.window, "local window kept (-1: method default)");
  app->add_option("--sinks", c.sinks, "first tokens always kept (-1: method default)");
  app->add_option("--kernel", c.pool_kernel, "pooling kernel, odd (-1: method default)");
  app->add_option("--pool", pool, "pooling: max|avg")->capture_default_str();
  app->add_option("--query_window", c.query_window,
                  "queries scored with: DapQ pseudo window w_p, SnapKV observation window");
  app->add_option("--content", content, "DapQ content: last|mean|last_token|random|zero")
      ->capture_default_str();
  app->add_option("--positions", positions, "DapQ positions: future|actual")->capture_default_str();
  app->add_option("--offset", c.offset, "DapQ: first pseudo position is n + offset");
  app->add_option("--stride", c.stride, "DapQ: pseudo position stride");
  app->add_option("--gamma", c.gamma, "DapQ proximity weight gamma^i");
  app->add_option("--mean_tokens", c.mean_tokens, "DapQ content=mean: prompt queries averaged");
  app->add_option("--mode", mode, "DapQ mode: pseudo|forward")->capture_default_str();
  app->add_flag("--h2o_normalize", c.h2o_normalize, "H2O: divide by queries that saw each key");
  app->add_option("--expected_future", c.expected_future, "ExpectedAttention: future positions");
  app->add_option("--allocator", allocator, "budget allocator: uniform|pyramid|adaptive")
      ->capture_default_str();
  app->add_option("--storage", storage, "keep-sets: shared (per layer) | per_head")
      ->capture_default_str();
  app->add_option("--compress_seed", c.seed, "seed of random content / the random method");
  app->add_option("--streaming_chunk", c.streaming_chunk,
                  "streaming compression: prefill in chunks of this many tokens, evicting back "
                  "to the budget after each (0: compress once, after the prompt)");
  app->add_flag("--every_turn", c.every_turn,
                "a session's later turns compress again (retained cache + the new turn)");
}

absl::StatusOr<worker::compress::CompressionConfig> CompressionFlags::ToConfig() const {
  namespace wc = worker::compress;
  wc::CompressionConfig c = numeric;
  DAPQ_ASSIGN_OR_RETURN(c.method, wc::ParseMethod(method));
  DAPQ_ASSIGN_OR_RETURN(c.content, wc::ParseContent(content));
  DAPQ_ASSIGN_OR_RETURN(c.positions, wc::ParsePositions(positions));
  DAPQ_ASSIGN_OR_RETURN(c.pool, wc::ParsePool(pool));
  DAPQ_ASSIGN_OR_RETURN(c.allocator, wc::ParseAllocator(allocator));
  DAPQ_ASSIGN_OR_RETURN(c.storage, wc::ParseStorage(storage));
  DAPQ_ASSIGN_OR_RETURN(c.mode, wc::ParseDapqMode(mode));
  DAPQ_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace dapq::cli
