// File: worker/compress/compressor.h
// Compression of one rank's KV cache at the end of prefill (or of each chunk of a streamed
// prompt): for every layer, score the local KV heads (Scorer), reduce and select (selector.h,
// through the rank's Communicator), and compact the slabs to the keep-sets. Positions are
// untouched: the next token still goes to position n.
// Every rank of the group must call CompressRank for the same sequence (collectives inside).
#ifndef DAPQ_WORKER_COMPRESS_COMPRESSOR_H_
#define DAPQ_WORKER_COMPRESS_COMPRESSOR_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/comm/communicator.h"
#include "worker/compress/compression_config.h"
#include "worker/compress/query_collector.h"
#include "worker/compress/scorer.h"
#include "worker/kv_cache.h"
#include "worker/model_config.h"
#include "worker/model_runner.h"

namespace dapq::worker::compress {

struct CompressionStats {
  bool compressed = false;  // false: method full, or the prompt fits the budget
  int prompt_slots = 0;     // slots per (layer, KV head) before compression
  long slots_before = 0;    // over every layer and KV head of the model
  long slots_after = 0;
  double seconds = 0;    // scoring + selection + compaction (rank 0)
  int compressions = 0;  // 1, or one per streamed chunk that had something to evict
  std::vector<int> layer_budgets;
  std::string config;  // the resolved configuration
  double kept_fraction() const {
    return slots_before > 0 ? static_cast<double>(slots_after) / slots_before : 1.0;
  }
};

struct RankContext {
  const ModelConfig* model = nullptr;
  RankShard shard;
  const float* inv_freq = nullptr;
  Communicator* comm = nullptr;
  int next_position = 0;
};

// `config` resolved; every slab of `cache` holds at least one slot. A cache compressed before
// (a streamed prompt's next chunk, a session's next turn) is compressed again as it is: its
// retained slots and the new ones, each head over its own slots when per-head compression left
// them different in length. carried_attention (optional; H2O): receives, [layers * kv_heads],
// the accumulated attention of every kept slot, to seed the next chunk's collector.
absl::Status CompressRank(const CompressionConfig& config, const Scorer& scorer,
                          const QueryCollector& collector, const RankContext& ctx,
                          const std::vector<int>& layer_budgets, KvCache& cache,
                          std::vector<std::vector<float>>* carried_attention = nullptr);

}  // namespace dapq::worker::compress

#endif  // DAPQ_WORKER_COMPRESS_COMPRESSOR_H_
