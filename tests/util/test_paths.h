// File: tests/util/test_paths.h
// Paths of the shared test fixtures. Tests run with the repository root as working directory
// (dapq_cc_test sets it), and ../shared sits beside the checkout.
#ifndef DAPQ_TESTS_UTIL_TEST_PATHS_H_
#define DAPQ_TESTS_UTIL_TEST_PATHS_H_

#include <string>

namespace dapq::testing {

inline std::string SharedModelPath(const std::string& file) { return "../shared/models/" + file; }
inline std::string Stories260KPath() { return SharedModelPath("stories260K.bin"); }
inline std::string Tok512Path() { return SharedModelPath("tok512.bin"); }
// A file of the npm test peers (tests/npm, installed by scripts/setup.sh with `npm ci`).
inline std::string NpmModulePath(const std::string& file) {
  return "tests/npm/node_modules/" + file;
}

// A fresh, empty directory under the test temp dir, unique to this process.
std::string MakeTempDir(const std::string& name);

}  // namespace dapq::testing

#endif  // DAPQ_TESTS_UTIL_TEST_PATHS_H_
