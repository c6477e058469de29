// File: common/npy_test.cc
// Tests for the .npy reader/writer: round trips, hand-written v1.0/v2.0 byte fixtures (as NumPy
// writes them), dtype conversion, and an InvalidArgument naming the file for every bad input.
#include "common/npy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "gtest/gtest.h"
#include "tests/util/status_matchers.h"

namespace dapq {
namespace {
using ::dapq::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/" + name; }

// A .npy file: magic, version, little-endian header length, header, data.
std::string Fixture(int major, const std::string& header, const std::string& data) {
  std::string s("\x93NUMPY", 6);
  s.push_back(static_cast<char>(major));
  s.push_back('\0');
  const size_t len = header.size();
  s.push_back(static_cast<char>(len & 0xFF));
  s.push_back(static_cast<char>((len >> 8) & 0xFF));
  if (major >= 2) {
    s.push_back(static_cast<char>((len >> 16) & 0xFF));
    s.push_back(static_cast<char>((len >> 24) & 0xFF));
  }
  return s + header + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string WriteBytes(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

TEST(NpyTest, RoundTripsF32) {
  const std::string path = TempPath("npy_f32.npy");
  const std::vector<float> data = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  ASSERT_THAT(WriteNpyF32(path, {2, 3}, data), ::dapq::testing::IsOk());
  ASSERT_OK_AND_ASSIGN(NpyArray a, ReadNpy(path));
  EXPECT_EQ(a.dtype, NpyDType::kF32);
  EXPECT_THAT(a.shape, ElementsAre(2, 3));
  EXPECT_EQ(a.f32, data);
  EXPECT_TRUE(a.i64.empty());
  EXPECT_EQ(a.size(), 6);
}

TEST(NpyTest, RoundTripsI64ScalarsAndEmptyArrays) {
  const std::string path = TempPath("npy_i64.npy");
  const std::vector<int64_t> data = {-1, 0, 1LL << 40, 7};
  ASSERT_THAT(WriteNpyI64(path, {4}, data), ::dapq::testing::IsOk());
  ASSERT_OK_AND_ASSIGN(NpyArray a, ReadNpy(path));
  EXPECT_EQ(a.dtype, NpyDType::kI64);
  EXPECT_THAT(a.shape, ElementsAre(4));
  EXPECT_EQ(a.i64, data);

  ASSERT_THAT(WriteNpyF32(path, {}, {42.0f}), ::dapq::testing::IsOk());
  ASSERT_OK_AND_ASSIGN(NpyArray scalar, ReadNpy(path));
  EXPECT_TRUE(scalar.shape.empty());
  EXPECT_THAT(scalar.f32, ElementsAre(42.0f));

  ASSERT_THAT(WriteNpyI64(path, {2, 0}, {}), ::dapq::testing::IsOk());
  ASSERT_OK_AND_ASSIGN(NpyArray empty, ReadNpy(path));
  EXPECT_THAT(empty.shape, ElementsAre(2, 0));
  EXPECT_TRUE(empty.i64.empty());
}

TEST(NpyTest, WritesNumpyFormat10HeaderAlignedTo64) {
  const std::string path = TempPath("npy_header.npy");
  ASSERT_THAT(WriteNpyF32(path, {3}, {1, 2, 3}), ::dapq::testing::IsOk());
  ASSERT_OK_AND_ASSIGN(std::string bytes, ReadFileToString(path));
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  ASSERT_EQ(bytes.size(), 10 + header_len + 12);
  const std::string header = bytes.substr(10, header_len);
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 0), 0u)
      << header;
  EXPECT_EQ(header.back(), '\n');
}

TEST(NpyTest, ReadsHandWrittenVersion1Fixture) {
  // As numpy.save(np.arange(6, dtype='<f4').reshape(2, 3)) writes it.
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header.push_back('\n');
  const std::vector<float> data = {0, 1, 2, 3, 4, 5};
  const std::string path = WriteBytes("npy_v1.npy", Fixture(1, header, Bytes(data)));
  ASSERT_OK_AND_ASSIGN(NpyArray a, ReadNpy(path));
  EXPECT_THAT(a.shape, ElementsAre(2, 3));
  EXPECT_EQ(a.f32, data);
}

TEST(NpyTest, ReadsHandWrittenVersion2FixtureWithLooseSpelling) {
  // Version 2.0 (4-byte header length), double quotes, other key order, no trailing comma.
  const std::string header = "{\"shape\":(2,2),\"fortran_order\":False,\"descr\":\"<i4\"}\n";
  const std::vector<int32_t> data = {-3, 4, 5, -6};
  const std::string path = WriteBytes("npy_v2.npy", Fixture(2, header, Bytes(data)));
  ASSERT_OK_AND_ASSIGN(NpyArray a, ReadNpy(path));
  EXPECT_EQ(a.dtype, NpyDType::kI32);
  EXPECT_THAT(a.shape, ElementsAre(2, 2));
  EXPECT_THAT(a.i64, ElementsAre(-3, 4, 5, -6));
}

TEST(NpyTest, ConvertsF64ToFloat) {
  const std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n";
  const std::vector<double> data = {0.5, -1.25, 1e10};
  ASSERT_OK_AND_ASSIGN(NpyArray a, ParseNpy(Fixture(1, header, Bytes(data)), "f8"));
  EXPECT_EQ(a.dtype, NpyDType::kF64);
  EXPECT_TRUE(a.is_float());
  EXPECT_THAT(a.f32, ElementsAre(0.5f, -1.25f, 1e10f));
}

TEST(NpyTest, MissingFileIsNotFound) {
  EXPECT_THAT(ReadNpy("/nonexistent/q.npy"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/q.npy")));
}

TEST(NpyTest, EveryMalformedInputIsInvalidArgumentNamingFileAndProblem) {
  const std::string ok_header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
  const std::string ok_data = Bytes(std::vector<float>{1, 2});
  const std::string good = Fixture(1, ok_header, ok_data);
  ASSERT_THAT(ParseNpy(good, "good.npy"), ::dapq::testing::IsOk());
  struct Case {
    std::string name, bytes, problem;
  };
  auto with_header = [&](const std::string& h, const std::string& data = "") {
    return Fixture(1, h, data.empty() ? ok_data : data);
  };
  const std::vector<Case> cases = {
      {"empty.npy", "", "bad magic"},
      {"magic.npy", "\x93NUMPZ" + good.substr(6), "bad magic"},
      {"text.npy", "hello world, not numpy", "bad magic"},
      {"short.npy", good.substr(0, 7), "truncated header"},
      {"nolen.npy", good.substr(0, 9), "truncated header"},
      {"cut_header.npy", good.substr(0, 30), "truncated header"},
      {"v3.npy", std::string("\x93NUMPY\x03\x00", 8) + good.substr(8), "version 3.0"},
      {"cut_data.npy", good.substr(0, good.size() - 1), "truncated data"},
      {"no_data.npy", good.substr(0, good.size() - 8), "truncated data"},
      {"extra.npy", good + "xxxx", "shape/data size mismatch"},
      {"f2.npy", with_header("{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }"),
       "unsupported dtype '<f2'"},
      {"big.npy", with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }"),
       "unsupported dtype '>f4'"},
      {"u1.npy", with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (8,), }"),
       "unsupported dtype '|u1'"},
      {"struct.npy",
       with_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }"),
       "structured"},
      {"fortran.npy", with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }"),
       "fortran_order"},
      {"shape.npy", with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"),
       "truncated data"},
      {"neg.npy", with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }"),
       "non-negative"},
      {"noshape.npy", with_header("{'descr': '<f4', 'fortran_order': False}"), "'shape'"},
      {"extra_key.npy",
       with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}"),
       "unexpected key 'x'"},
      {"not_dict.npy", with_header("descr <f4"), "malformed header"},
      {"unterminated.npy", with_header("{'descr': '<f4"), "malformed header"},
      {"huge.npy",
       with_header(
           "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }"),
       "too large"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_THAT(ParseNpy(c.bytes, c.name),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         ::testing::AllOf(HasSubstr(c.name), HasSubstr(c.problem))));
  }
  // Through a real file too: the message names the path.
  const std::string path = WriteBytes("npy_bad_file.npy", "garbage");
  EXPECT_THAT(ReadNpy(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                      ::testing::AllOf(HasSubstr(path), HasSubstr("bad magic"))));
}

TEST(NpyTest, WriteRejectsShapeDataMismatchAndBadPaths) {
  EXPECT_THAT(WriteNpyF32(TempPath("npy_mismatch.npy"), {2, 2}, {1, 2, 3}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("holds 4 elements")));
  EXPECT_THAT(WriteNpyI64(TempPath("npy_negative.npy"), {-1}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  EXPECT_THAT(WriteNpyF32("/nonexistent/dir/out.npy", {1}, {1}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/dir/out.npy")));
}

}  // namespace
}  // namespace dapq
