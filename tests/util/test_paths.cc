// File: tests/util/test_paths.cc
// Temporary directories for tests.
#include "tests/util/test_paths.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace dapq::testing {

std::string MakeTempDir(const std::string& name) {
  // The pid keeps tests of one suite apart when CTest runs them as parallel processes.
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / (name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace dapq::testing
