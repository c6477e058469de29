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
