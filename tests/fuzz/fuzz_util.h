// File: tests/fuzz/fuzz_util.h
// Helpers shared by the libFuzzer targets of tests/fuzz: a per-process scratch directory for
// parsers that only read files, paths of the checked-in fixtures, and FUZZ_CHECK, which aborts
// (a crash libFuzzer records) when an invariant of a parser's result does not hold.
// Thread-safety: none needed (libFuzzer runs one input at a time per process).
#ifndef DAPQ_TESTS_FUZZ_FUZZ_UTIL_H_
#define DAPQ_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace dapq::fuzz {

// Aborts with the condition and its location; a fuzz target's contract violations are crashes.
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// A fresh directory for this process, removed at exit: under $TMPDIR when set, else /dev/shm
// (files written per input: a memory file system runs such targets about 4x faster), else /tmp.
inline const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::error_code ec;
    const std::filesystem::path root = tmp != nullptr && *tmp != '\0'                  ? tmp
                                       : std::filesystem::is_directory("/dev/shm", ec) ? "/dev/shm"
                                                                                       : "/tmp";
    auto* d = new std::string((root / ("dapq_fuzz_" + std::to_string(::getpid()))).string());
    std::filesystem::remove_all(*d);
    std::filesystem::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(ScratchDir(), ec);
    });
    return d;
  }();
  return *dir;
}

// Writes `data` to ScratchDir()/name (replacing it) and returns the path.
inline std::string WriteScratchFile(const std::string& name, absl::string_view data) {
  const std::string path = ScratchDir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  FUZZ_CHECK(out.good());
  return path;
}

// A file of the source tree (DAPQ_SOURCE_DIR is set by tests/fuzz/CMakeLists.txt); the shared
// models sit beside the checkout, in ../shared/models.
inline std::string SourcePath(const std::string& relative) {
  return std::string(DAPQ_SOURCE_DIR) + "/" + relative;
}
inline std::string SharedModelPath(const std::string& file) {
  return SourcePath("../shared/models/" + file);
}

// The input as text (absl::string_view: Abseil 20220623 does not alias std::string_view).
inline absl::string_view AsView(const uint8_t* data, size_t size) {
  return absl::string_view(reinterpret_cast<const char*>(data), size);
}

}  // namespace dapq::fuzz

#endif  // DAPQ_TESTS_FUZZ_FUZZ_UTIL_H_
