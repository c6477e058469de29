// File: worker/compress/scorer_factory.cc
// MakeScorer: the method -> scorer table.
#include "absl/strings/str_cat.h"
#include "worker/compress/scorers.h"

namespace dapq::worker::compress {

absl::StatusOr<std::unique_ptr<Scorer>> MakeScorer(const CompressionConfig& c) {
  switch (c.method) {
    case Method::kDapq:
      return MakeDapqScorer(c);
    case Method::kSnapKv:
      return MakeSnapKvScorer(c);
    case Method::kH2o:
      return MakeH2oScorer(c);
    case Method::kTova:
      return MakeTovaScorer(c);
    case Method::kStreamingLlm:
      return MakeStreamingScorer(c);
    case Method::kRandom:
      return MakeRandomScorer(c);
    case Method::kExpectedAttention:
      return MakeExpectedAttentionScorer(c);
    case Method::kFull:
      break;
  }
  return absl::UnimplementedError(
      absl::StrCat("no scorer for method ", MethodName(c.method), " (full keeps every token)"));
}

}  // namespace dapq::worker::compress
