// File: tests/util/stories_model.h
// stories260K (../shared/models) loaded once per test process and shared read-only by every
// engine a test creates. Header-only; include it only from tests that link dapq_worker.
#ifndef DAPQ_TESTS_UTIL_STORIES_MODEL_H_
#define DAPQ_TESTS_UTIL_STORIES_MODEL_H_

#include <memory>

#include "gtest/gtest.h"
#include "tests/util/test_paths.h"
#include "worker/llama2c_loader.h"

namespace dapq::testing {

// A short story in stories260K's register, long enough (~170 tokens) for prefix-reuse tests
// that ask several questions about it.
inline constexpr const char* kStoryDocument =
    "Once upon a time, there was a little girl named Lily. She lived in a small house near the "
    "woods with her mom and her dog Max. Every morning Lily and Max went for a walk. They saw "
    "birds, trees and a big blue lake. One day Lily found a shiny red stone near the water. "
    "She put it in her pocket and ran home to show her mom. Her mom smiled and said it was "
    "the most beautiful stone she had ever seen. Lily was very happy.";

inline std::shared_ptr<const worker::ModelWeights> SharedStories260K() {
  static const std::shared_ptr<const worker::ModelWeights> model = [] {
    auto w = worker::LoadLlama2cModel(Stories260KPath());
    EXPECT_TRUE(w.ok()) << w.status();
    return std::make_shared<const worker::ModelWeights>(std::move(*w));
  }();
  return model;
}

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_STORIES_MODEL_H_
