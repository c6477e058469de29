// File: worker/hf_engine_test.cc
// The same real model through both loaders: stories260K converted to the Hugging Face layout
// (half-split RoPE, permuted wq/wk) and loaded from safetensors generates the reference tokens,
// with logits within fp32 rounding (tests/util/tolerance.h) of the llama2.c path, at TP = 1 and 2.
#include <memory>

#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"
#include "tests/util/tolerance.h"
#include "worker/engine.h"
#include "worker/hf_converter.h"
#include "worker/hf_loader.h"
#include "worker/llama2c_loader.h"
#include "worker/model_loader.h"
#include "worker/tokenizer.h"

namespace dapq::worker {
namespace {

TEST(HfEngineTest, ConvertedStories260KGeneratesIdenticalTokens) {
  ASSERT_OK_AND_ASSIGN(ModelWeights original, LoadLlama2cModel(dapq::testing::Stories260KPath()));
  const std::string dir = dapq::testing::MakeTempDir("hf_engine_stories260K");
  ASSERT_THAT(ConvertToHf(original, dir), dapq::testing::IsOk());
  ASSERT_OK_AND_ASSIGN(ModelWeights converted, LoadModel(dir));  // a directory: the HF path
  EXPECT_EQ(converted.config.rope.layout, kernels::RopeLayout::kHalfSplit);

  auto a = std::make_shared<const ModelWeights>(std::move(original));
  auto b = std::make_shared<const ModelWeights>(std::move(converted));
  ASSERT_OK_AND_ASSIGN(Tokenizer tok, Tokenizer::Load(dapq::testing::Tok512Path(), 512));
  for (const std::string prompt : {"", "Zoo", "Once upon a time, a little bird"}) {
    for (int tp : {1, 2}) {
      SCOPED_TRACE(::testing::Message() << "prompt='" << prompt << "' tp=" << tp);
      const std::vector<int> ids = tok.Encode(prompt, true, false);
      EngineOptions o;
      o.tp = tp;
      ASSERT_OK_AND_ASSIGN(auto ea, Engine::Create(a, o));
      ASSERT_OK_AND_ASSIGN(auto eb, Engine::Create(b, o));
      auto sa = ea->NewSequence();
      auto sb = eb->NewSequence();
      std::vector<float> la, lb;
      ASSERT_TRUE(ea->Prefill(*sa, ids, &la).ok());
      ASSERT_TRUE(eb->Prefill(*sb, ids, &lb).ok());
      // Permuted wq/wk rows and the half-split layout reorder the same sums.
      const double tol = dapq::testing::Fp32Tolerance(
          dapq::testing::MaxAbs(la),
          dapq::testing::DecoderReductionLength(a->config, static_cast<int>(ids.size())));
      ASSERT_TRUE(dapq::testing::AllClose(lb, la, tol));
      GenerateOptions g;
      g.max_new_tokens = 80;
      ASSERT_OK_AND_ASSIGN(GenerateResult ra, ea->Generate(ids, g));
      ASSERT_OK_AND_ASSIGN(GenerateResult rb, eb->Generate(ids, g));
      EXPECT_EQ(ra.tokens, rb.tokens);
      EXPECT_GE(ra.tokens.size(), 20u);
    }
  }
}

}  // namespace
}  // namespace dapq::worker
