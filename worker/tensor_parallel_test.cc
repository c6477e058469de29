// File: worker/tensor_parallel_test.cc
// Invariant 4 (ARCHITECTURE.md §3): TP = 1, 2, 4 give identical greedy tokens and logits within
// fp32 reduction tolerance (tests/util/tolerance.h), on stories260K and on synthetic GQA / biased
// models.
#include <memory>
#include <span>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "tests/util/tolerance.h"
#include "worker/engine.h"
#include "worker/llama2c_loader.h"
#include "worker/model_runner.h"
#include "worker/synthetic_model.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::AllClose;
using ::dapq::testing::DecoderReductionLength;
using ::dapq::testing::Fp32Tolerance;
using ::dapq::testing::MaxAbs;
using ::dapq::testing::StatusIs;

struct Run {
  std::vector<int> tokens;
  std::vector<float> prompt_logits;
};

Run RunWithTp(std::shared_ptr<const ModelWeights> model, int tp, const std::vector<int>& prompt,
              int steps) {
  EngineOptions o;
  o.tp = tp;
  o.prefill_chunk = 7;  // several chunks, so prefill attends to earlier chunks too
  auto engine = Engine::Create(model, o);
  EXPECT_TRUE(engine.ok()) << engine.status();
  Run run;
  auto seq = (*engine)->NewSequence();
  EXPECT_TRUE((*engine)->Prefill(*seq, prompt, &run.prompt_logits).ok());
  GenerateOptions g;
  g.max_new_tokens = steps;
  g.stop_at_stop_tokens = false;
  auto r = (*engine)->Generate(prompt, g);
  EXPECT_TRUE(r.ok()) << r.status();
  run.tokens = r->tokens;
  return run;
}

void ExpectTpInvariant(const std::string& spec_or_path, const std::vector<int>& prompt, int steps,
                       const std::vector<int>& degrees) {
  absl::StatusOr<ModelWeights> w = spec_or_path.rfind(kSyntheticPrefix, 0) == 0
                                       ? MakeSyntheticModel(spec_or_path)
                                       : LoadLlama2cModel(spec_or_path);
  ASSERT_TRUE(w.ok()) << w.status();
  auto model = std::make_shared<const ModelWeights>(*std::move(w));
  const Run base = RunWithTp(model, 1, prompt, steps);
  ASSERT_EQ(static_cast<int>(base.tokens.size()), steps);
  // Sharding splits the projections' sums across ranks and changes the GEMM shapes (so OpenBLAS's
  // blocking): the logits differ by rounding along one forward pass only.
  const double tol =
      Fp32Tolerance(MaxAbs(base.prompt_logits),
                    DecoderReductionLength(model->config, static_cast<int>(prompt.size())));
  for (int tp : degrees) {
    SCOPED_TRACE(::testing::Message() << spec_or_path << " tp=" << tp);
    const Run run = RunWithTp(model, tp, prompt, steps);
    EXPECT_EQ(run.tokens, base.tokens);  // greedy tokens: exact
    EXPECT_TRUE(AllClose(run.prompt_logits, base.prompt_logits, tol)) << "prompt logits";
  }
}

TEST(TensorParallelTest, Stories260KTp124Identical) {
  ExpectTpInvariant(
      dapq::testing::Stories260KPath(),
      {1, 403, 407, 261, 378, 11, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337}, 40,
      {2, 4});
}

TEST(TensorParallelTest, SyntheticGqaTp124Identical) {
  // tiny-gqa: 16 query heads over 4 KV heads, FFN 201 (uneven split), Llama-3 rope scaling.
  std::vector<int> prompt = {1};
  for (int i = 0; i < 40; ++i) prompt.push_back((i * 37 + 11) % 320);
  ExpectTpInvariant("synthetic:tiny-gqa", prompt, 24, {2, 4});
}

TEST(TensorParallelTest, SyntheticBiasTiedTp124Identical) {
  std::vector<int> prompt = {1, 5, 9, 200, 17, 42, 299, 3, 77};
  ExpectTpInvariant("synthetic:tiny-mha", prompt, 16, {2, 4});
}

TEST(TensorParallelTest, FullKvPoolFailsEveryRankAndTheGroupStaysUsable) {
  auto w = MakeSyntheticModel("synthetic:tiny-gqa");
  ASSERT_TRUE(w.ok()) << w.status();
  auto model = std::make_shared<const ModelWeights>(*std::move(w));
  const int tables = model->config.n_layers * model->config.n_kv_heads / 2;  // per rank at tp=2
  EngineOptions o;
  o.tp = 2;
  o.kv_tokens_per_block = 4;
  o.kv_max_blocks = tables * 5;  // 20 slots per (layer, KV head)
  o.prefix_cache = false;        // b's prompt must need blocks of its own
  auto engine = Engine::Create(model, o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<int> prompt = {1};
  for (int i = 0; i < 15; ++i) prompt.push_back((i * 37 + 11) % 320);
  std::vector<float> logits;
  auto a = (*engine)->NewSequence();
  ASSERT_TRUE((*engine)->Prefill(*a, prompt, &logits).ok());
  auto b = (*engine)->NewSequence();
  EXPECT_THAT((*engine)->Prefill(*b, std::vector<int>(prompt.begin(), prompt.begin() + 8), &logits),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(b->cached_tokens(), 0);
  const int32_t pos = 16;
  const int token = 7;
  ASSERT_TRUE((*engine)->Forward(*a, std::span(&token, 1), std::span(&pos, 1), &logits).ok());
  EXPECT_EQ(a->cached_tokens(), 17);
  a.reset();  // its blocks return to the pools
  std::vector<float> capped, uncapped;
  ASSERT_TRUE((*engine)->Prefill(*b, prompt, &capped).ok());
  EngineOptions plain;
  plain.tp = 2;
  auto reference = Engine::Create(model, plain);
  ASSERT_TRUE(reference.ok()) << reference.status();
  auto c = (*reference)->NewSequence();
  ASSERT_TRUE((*reference)->Prefill(*c, prompt, &uncapped).ok());
  EXPECT_EQ(capped, uncapped);  // block size does not change a bit
}

TEST(TensorParallelTest, ShardsCoverEveryHeadAndFfnRow) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, SyntheticModelConfig("synthetic:tiny-gqa"));
  for (int tp : {1, 2, 4}) {
    int heads = 0, kv = 0, ffn = 0;
    for (int r = 0; r < tp; ++r) {
      ASSERT_OK_AND_ASSIGN(RankShard s, MakeRankShard(c, r, tp));
      EXPECT_EQ(s.head_begin, heads);
      EXPECT_EQ(s.kv_head_begin, kv);
      EXPECT_EQ(s.ffn_begin, ffn);
      heads += s.heads;
      kv += s.kv_heads;
      ffn += s.ffn_size;
    }
    EXPECT_EQ(heads, c.n_heads);
    EXPECT_EQ(kv, c.n_kv_heads);
    EXPECT_EQ(ffn, c.hidden_dim);
  }
}

}  // namespace
}  // namespace dapq::worker
