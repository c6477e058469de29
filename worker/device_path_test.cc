// File: worker/device_path_test.cc
// The engine's device path (worker/model_runner.h's WeightPlacement::kUpload) on the CPU
// context: the rank's weight shard uploaded packed, activations and block tables in context
// buffers, the KV pool in a context arena, all-reduces, observer queries and logits staged
// through explicit copies. That is the GPU's code path less the CUDA calls, so it must give
// exactly what the native CPU path gives: bit-identical logits and tokens, at TP 1 and 2, in fp32
// and bf16, with compression. Also the device flags' errors on a machine without CUDA.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/device.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "worker/engine.h"
#include "worker/llama2c_loader.h"
#include "worker/model_runner.h"
#include "worker/rank_weights.h"
#include "worker/synthetic_model.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::testing::HasSubstr;

std::shared_ptr<const ModelWeights> Load(const std::string& spec, kernels::DType weights) {
  absl::StatusOr<ModelWeights> w =
      spec.rfind(kSyntheticPrefix, 0) == 0 ? MakeSyntheticModel(spec) : LoadLlama2cModel(spec);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return nullptr;
  EXPECT_THAT(ConvertLinearWeights(*w, weights), IsOk());
  return std::make_shared<const ModelWeights>(*std::move(w));
}

struct EngineRun {
  std::vector<float> prompt_logits;  // every prompt token's
  std::vector<int> tokens;           // greedy continuation
};

// Prefill (all logits) in chunks, then greedy generation, optionally compressed.
EngineRun RunEngine(std::shared_ptr<const ModelWeights> model, EngineOptions o,
                    const std::vector<int>& prompt, int steps,
                    const compress::CompressionConfig& compression = {}) {
  o.prefill_chunk = 5;  // several chunks: attention over earlier chunks' blocks
  o.prefix_cache = false;
  auto engine = Engine::Create(std::move(model), o);
  EXPECT_TRUE(engine.ok()) << engine.status();
  EngineRun run;
  if (!engine.ok()) return run;
  auto seq = (*engine)->NewSequence();
  EXPECT_THAT((*engine)->PrefillAllLogits(*seq, prompt, &run.prompt_logits), IsOk());
  GenerateOptions g;
  g.max_new_tokens = steps;
  g.stop_at_stop_tokens = false;
  g.compression = compression;
  auto r = (*engine)->Generate(prompt, g);
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) run.tokens = r->tokens;
  return run;
}

EngineOptions DevicePath(EngineOptions o) {
  o.placement = WeightPlacement::kUpload;
  return o;
}

const std::vector<int> kStoriesPrompt = {1,   403, 407, 261, 378, 11,  298, 315, 421,
                                         395, 317, 426, 338, 401, 396, 267, 337};

struct Case {
  std::string model;
  int tp;
  kernels::DType weights, kv;
  long kv_max_blocks;  // > 0: the pool is a context arena on the device path
};

class DevicePathTest : public ::testing::TestWithParam<Case> {};

TEST_P(DevicePathTest, MatchesTheNativeCpuPathBitForBit) {
  const Case& c = GetParam();
  const std::string spec =
      c.model == "stories260K" ? dapq::testing::Stories260KPath() : std::string(c.model);
  auto model = Load(spec, c.weights);
  ASSERT_NE(model, nullptr);
  std::vector<int> prompt = kStoriesPrompt;
  for (int& t : prompt) t %= model->config.vocab_size;
  EngineOptions o;
  o.tp = c.tp;
  o.kv_dtype = c.kv;
  o.kv_max_blocks = c.kv_max_blocks;
  const EngineRun native = RunEngine(model, o, prompt, 24);
  const EngineRun device = RunEngine(model, DevicePath(o), prompt, 24);
  ASSERT_EQ(native.tokens.size(), 24u);
  // Packing a shard changes no GEMM's shape or summation order: exact.
  EXPECT_EQ(device.prompt_logits, native.prompt_logits);
  EXPECT_EQ(device.tokens, native.tokens);
}

INSTANTIATE_TEST_SUITE_P(
    Models, DevicePathTest,
    ::testing::Values(
        Case{"stories260K", 1, kernels::DType::kF32, kernels::DType::kF32, 0},
        Case{"stories260K", 1, kernels::DType::kF32, kernels::DType::kF32, 4096},
        Case{"stories260K", 2, kernels::DType::kF32, kernels::DType::kF32, 4096},
        Case{"stories260K", 2, kernels::DType::kBF16, kernels::DType::kBF16, 4096},
        // GQA, an uneven FFN split, Llama-3 rope scaling.
        Case{"synthetic:tiny-gqa", 2, kernels::DType::kF32, kernels::DType::kF16, 4096},
        // Q/K/V biases (the rank-1 bias update) sharded over two ranks, a tied classifier.
        Case{"synthetic:tiny-mha", 2, kernels::DType::kF32, kernels::DType::kF32, 4096}),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string name = info.param.model.substr(info.param.model.find(':') + 1);
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      return name + "_tp" + std::to_string(info.param.tp) + "_" +
             kernels::DTypeName(info.param.weights) + "_kv" + kernels::DTypeName(info.param.kv) +
             (info.param.kv_max_blocks > 0 ? "_arena" : "_mmap");
    });

TEST(DevicePathCompressionTest, DapqAndSnapKvKeepTheSameTokens) {
  // Compression reads queries through the observer (staged to the host) and keys through the
  // cache's Gather, and compacts blocks with Keep: on the device path all of that crosses
  // copies.
  auto model = Load(dapq::testing::Stories260KPath(), kernels::DType::kF32);
  ASSERT_NE(model, nullptr);
  std::vector<int> prompt;
  for (int i = 0; i < 3; ++i)
    prompt.insert(prompt.end(), kStoriesPrompt.begin(), kStoriesPrompt.end());
  for (const compress::Method method : {compress::Method::kDapq, compress::Method::kSnapKv}) {
    for (const int tp : {1, 2}) {
      SCOPED_TRACE(::testing::Message() << "method " << static_cast<int>(method) << " tp " << tp);
      compress::CompressionConfig c;
      c.method = method;
      c.budget_tokens = 12;
      EngineOptions o;
      o.tp = tp;
      o.kv_max_blocks = 4096;
      const EngineRun native = RunEngine(model, o, prompt, 16, c);
      const EngineRun device = RunEngine(model, DevicePath(o), prompt, 16, c);
      ASSERT_EQ(native.tokens.size(), 16u);
      EXPECT_EQ(device.tokens, native.tokens);
    }
  }
}

TEST(RankWeightsTest, UploadHoldsOnlyTheShardAndRankZeroTheClassifier) {
  auto model = Load(dapq::testing::Stories260KPath(), kernels::DType::kF32);
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config;
  auto context = kernels::CreateCpuContext();
  size_t totals[2] = {0, 0};
  for (int rank = 0; rank < 2; ++rank) {
    auto shard = MakeRankShard(c, rank, 2);
    ASSERT_TRUE(shard.ok()) << shard.status();
    auto w = RankWeights::Upload(*model, *shard, *context);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->layers.size(), static_cast<size_t>(c.n_layers));
    // Column blocks are packed: wo and w2 get the local width as their row stride.
    EXPECT_EQ(w->layers[0].wo.ld, shard->heads * c.head_dim);
    EXPECT_EQ(w->layers[0].w2.ld, shard->ffn_size);
    EXPECT_EQ(w->classifier.data != nullptr, rank == 0);
    totals[rank] = w->device_bytes();
  }
  const size_t linear = static_cast<size_t>(c.n_layers) *
                        (2 * static_cast<size_t>(c.q_dim()) * c.dim +
                         2 * static_cast<size_t>(c.n_kv_heads) * c.head_dim * c.dim +
                         3 * static_cast<size_t>(c.hidden_dim) * c.dim) *
                        sizeof(float);
  // Each rank holds half of the linear layers plus the replicated embedding (and norms, within
  // the slack); rank 0 also the classifier unless it is the embedding (tied).
  const size_t embedding = static_cast<size_t>(c.vocab_size) * c.dim * sizeof(float);
  const size_t classifier = model->classifier == model->token_embedding ? 0 : embedding;
  for (int rank = 0; rank < 2; ++rank) {
    const size_t expected = linear / 2 + embedding + (rank == 0 ? classifier : 0);
    EXPECT_GE(totals[rank], expected) << "rank " << rank;
    EXPECT_LT(totals[rank], expected + 64 * 1024) << "rank " << rank;
  }
}

TEST(DeviceOptionsTest, CudaNeedsAKvPoolCap) {
  auto model = Load(dapq::testing::Stories260KPath(), kernels::DType::kF32);
  ASSERT_NE(model, nullptr);
  EngineOptions o;
  o.device = kernels::Device{kernels::Backend::kCuda, 0};
  EXPECT_THAT(Engine::Create(model, o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--kv_pool_blocks")));
}

TEST(DeviceOptionsTest, CudaWithoutADeviceSaysSo) {
  auto model = Load(dapq::testing::Stories260KPath(), kernels::DType::kF32);
  ASSERT_NE(model, nullptr);
  EngineOptions o;
  o.device = kernels::Device{kernels::Backend::kCuda, 0};
  o.kv_max_blocks = 64;
  auto engine = Engine::Create(model, o);
  if (engine.ok()) GTEST_SKIP() << "a CUDA device is present: the GPU tests cover it";
  // A build without CUDA: Unimplemented; a CUDA build on a machine without a device:
  // FailedPrecondition. Either names the device.
  EXPECT_TRUE(engine.status().code() == absl::StatusCode::kUnimplemented ||
              engine.status().code() == absl::StatusCode::kFailedPrecondition)
      << engine.status();
  EXPECT_THAT(engine.status().message(), HasSubstr("cuda"));
}

TEST(DeviceOptionsTest, RankModelRejectsAPoolOnAnotherDevice) {
  auto model = Load(dapq::testing::Stories260KPath(), kernels::DType::kF32);
  ASSERT_NE(model, nullptr);
  auto pool = kvstore::BlockPool::Create(model->config.head_dim + 1, 16);
  ASSERT_TRUE(pool.ok());
  auto shard = MakeRankShard(model->config, 0, 1);
  ASSERT_TRUE(shard.ok());
  auto rank =
      RankModel::Create(*model, *shard, nullptr, *pool,
                        std::shared_ptr<kernels::ExecutionContext>(kernels::CreateCpuContext()),
                        WeightPlacement::kUpload);
  EXPECT_THAT(rank.status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("head_dim")));
}

}  // namespace
}  // namespace dapq::worker
