// File: tests/util/test_paths.cc
// Temporary directories for tests.
#include "tests/util/test_paths.h"

#include <filesystem>

#include "gtest/gtest.h"

namespace dapq::testing {

std::string MakeTempDir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace dapq::testing
