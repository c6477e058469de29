// File: worker/safetensors_test.cc
// Tests for the safetensors reader and writer: F32 round trip, F16/BF16 decoding (subnormals,
// infinities, NaN), bf16 rounding, and rejection of malformed files with named causes.
#include "worker/safetensors.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/types.h"
#include "tests/util/status_matchers.h"
#include "tests/util/test_paths.h"

namespace dapq::worker {
namespace {

using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        dapq::testing::MakeTempDir(std::string("safetensors_test_") +
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Writes the 8-byte little-endian `header_length` (default: header.size()), `header`, `data`.
  std::string WriteRaw(const std::string& name, const std::string& header,
                       const std::string& data = "", int64_t header_length = -1) const {
    std::string path = Path(name);
    const uint64_t n = header_length < 0 ? header.size() : static_cast<uint64_t>(header_length);
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << data;
    return path;
  }

  std::string dir_;
};

std::string U16Bytes(const std::vector<uint16_t>& v) {
  std::string s(v.size() * 2, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

TEST_F(SafetensorsTest, RoundTripPreservesNamesShapesAndValues) {
  const std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-30f};
  const std::vector<float> b = {7.0f, 8.0f, 9.0f, 10.0f, 11.0f};
  const float scalar = 42.0f;
  const std::string path = Path("round_trip.safetensors");
  ASSERT_THAT(WriteSafetensors(path, {{"b.weight", {5}, b.data()},
                                      {"a.weight", {2, 3}, a.data()},
                                      {"scalar", {}, &scalar},
                                      {"empty", {0, 4}, nullptr}}),
              IsOk());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  ASSERT_OK_AND_ASSIGN(SafetensorsFile f, SafetensorsFile::Open(path));
  EXPECT_THAT(f.Names(), ElementsAre("a.weight", "b.weight", "empty", "scalar"));
  EXPECT_TRUE(f.Has("a.weight"));
  EXPECT_FALSE(f.Has("c.weight"));

  ASSERT_OK_AND_ASSIGN(TensorView va, f.Get("a.weight"));
  EXPECT_EQ(va.dtype, SafetensorsDType::kF32);
  EXPECT_THAT(va.shape, ElementsAre(2, 3));
  EXPECT_EQ(va.bytes, a.size() * sizeof(float));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(va.data) % alignof(float), 0u);
  EXPECT_EQ(std::memcmp(va.data, a.data(), va.bytes), 0);

  ASSERT_OK_AND_ASSIGN(TensorView vb, f.Get("b.weight"));
  EXPECT_THAT(vb.shape, ElementsAre(5));
  std::vector<float> decoded(5);
  ConvertToF32(vb, decoded.data());
  EXPECT_EQ(decoded, b);

  ASSERT_OK_AND_ASSIGN(TensorView vs, f.Get("scalar"));
  EXPECT_TRUE(vs.shape.empty());
  EXPECT_EQ(vs.NumElements(), 1);
  float s = 0;
  ConvertToF32(vs, &s);
  EXPECT_EQ(s, 42.0f);

  ASSERT_OK_AND_ASSIGN(TensorView ve, f.Get("empty"));
  EXPECT_EQ(ve.bytes, 0u);
  EXPECT_EQ(ve.NumElements(), 0);

  EXPECT_THAT(f.Get("missing"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing")));
}

TEST_F(SafetensorsTest, WriterPadsHeaderToMultipleOfEight) {
  const float x = 1.0f;
  for (const std::string name : {"a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "h"}) {
    const std::string path = Path(name + ".safetensors");
    ASSERT_THAT(WriteSafetensors(path, {{name, {1}, &x}}), IsOk());
    std::ifstream in(path, std::ios::binary);
    unsigned char len[8];
    in.read(reinterpret_cast<char*>(len), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    EXPECT_EQ(n % 8, 0u) << name;
    EXPECT_EQ(std::filesystem::file_size(path), 8 + n + 4) << name;
  }
}

TEST_F(SafetensorsTest, WriterRejectsBadTensors) {
  const float x = 1.0f;
  EXPECT_THAT(WriteSafetensors(Path("dup"), {{"t", {1}, &x}, {"t", {1}, &x}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate tensor name 't'")));
  EXPECT_THAT(WriteSafetensors(Path("meta"), {{"__metadata__", {1}, &x}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reserved")));
  EXPECT_THAT(WriteSafetensors(Path("neg"), {{"t", {-1}, &x}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  EXPECT_THAT(WriteSafetensors(Path("null"), {{"t", {2}, nullptr}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null data")));
  EXPECT_FALSE(WriteSafetensors(dir_ + "/no/such/dir/x.safetensors", {{"t", {1}, &x}}).ok());
}

TEST(SafetensorsConversionTest, F16DecodesKnownValues) {
  EXPECT_EQ(kernels::F16ToFloat(0x3C00), 1.0f);
  EXPECT_EQ(kernels::F16ToFloat(0xC000), -2.0f);
  EXPECT_EQ(kernels::F16ToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(kernels::F16ToFloat(0x7BFF), 65504.0f);                  // largest finite
  EXPECT_EQ(kernels::F16ToFloat(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(kernels::F16ToFloat(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(kernels::F16ToFloat(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(kernels::F16ToFloat(0x8200), -std::ldexp(1.0f, -15));    // negative subnormal
  EXPECT_EQ(kernels::F16ToFloat(0x0000), 0.0f);
  EXPECT_FALSE(std::signbit(kernels::F16ToFloat(0x0000)));
  EXPECT_TRUE(std::signbit(kernels::F16ToFloat(0x8000)));
  EXPECT_EQ(kernels::F16ToFloat(0x8000), 0.0f);
  EXPECT_EQ(kernels::F16ToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(kernels::F16ToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(kernels::F16ToFloat(0x7E00)));
  EXPECT_TRUE(
      std::isnan(kernels::F16ToFloat(0x7C01)));  // signalling-NaN pattern stays NaN, not inf
  EXPECT_TRUE(std::isnan(kernels::F16ToFloat(0xFE00)));
}

TEST(SafetensorsConversionTest, F16DecodingIsExactForEveryFiniteValue) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const uint32_t exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
    if (exponent == 0x1f) continue;
    const float magnitude =
        exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -24)
                      : std::ldexp(1.0f + mantissa / 1024.0f, static_cast<int>(exponent) - 15);
    const float expected = (bits & 0x8000) ? -magnitude : magnitude;
    ASSERT_EQ(kernels::F16ToFloat(static_cast<uint16_t>(bits)), expected) << "bits=" << bits;
  }
}

TEST(SafetensorsConversionTest, BF16DecodesKnownValues) {
  EXPECT_EQ(kernels::Bf16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(kernels::Bf16ToFloat(0xC040), -3.0f);
  EXPECT_EQ(kernels::Bf16ToFloat(0x3EAB), 0.333984375f);
  EXPECT_EQ(kernels::Bf16ToFloat(0x0080), std::numeric_limits<float>::min());  // smallest normal
  EXPECT_EQ(kernels::Bf16ToFloat(0x0001), std::ldexp(1.0f, -133));             // smallest subnormal
  EXPECT_EQ(kernels::Bf16ToFloat(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(kernels::Bf16ToFloat(0xFF80), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(kernels::Bf16ToFloat(0x7FC0)));
  EXPECT_TRUE(std::signbit(kernels::Bf16ToFloat(0x8000)));
}

TEST(SafetensorsConversionTest, F32ToBF16RoundsToNearestEven) {
  EXPECT_EQ(kernels::FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(kernels::FloatToBf16(-3.0f), 0xC040);
  EXPECT_EQ(kernels::FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);      // tie -> even (down)
  EXPECT_EQ(kernels::FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(kernels::FloatToBf16(1.0f + std::ldexp(1.0f, -9)), 0x3F80);      // below half -> down
  EXPECT_EQ(kernels::FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -9)), 0x3F81);  // above half -> up
  EXPECT_EQ(kernels::FloatToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_TRUE(std::isnan(
      kernels::Bf16ToFloat(kernels::FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(kernels::FloatToBf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to inf
}

TEST_F(SafetensorsTest, ReadsF16AndBF16Tensors) {
  const std::vector<uint16_t> f16 = {0x3C00, 0x0001, 0x7C00, 0xFC00, 0x8000};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC040, 0x0001, 0x7F80};
  const std::string header = R"({"__metadata__":{"format":"pt"},)"
                             R"("h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},)"
                             R"("b":{"dtype":"BF16","shape":[2,2],"data_offsets":[10,18]}})";
  const std::string path = WriteRaw("mixed.safetensors", header, U16Bytes(f16) + U16Bytes(bf16));
  ASSERT_OK_AND_ASSIGN(SafetensorsFile f, SafetensorsFile::Open(path));
  EXPECT_THAT(f.Names(), ElementsAre("b", "h"));  // __metadata__ is not a tensor

  ASSERT_OK_AND_ASSIGN(TensorView h, f.Get("h"));
  EXPECT_EQ(h.dtype, SafetensorsDType::kF16);
  EXPECT_EQ(h.bytes, 10u);
  std::vector<float> out(5);
  ConvertToF32(h, out.data());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], std::ldexp(1.0f, -24));
  EXPECT_EQ(out[2], std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[3], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(out[4]));

  ASSERT_OK_AND_ASSIGN(TensorView b, f.Get("b"));
  EXPECT_EQ(b.dtype, SafetensorsDType::kBF16);
  EXPECT_THAT(b.shape, ElementsAre(2, 2));
  out.resize(4);
  ConvertToF32(b, out.data());  // data starts at an odd 2-byte offset: unaligned reads
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(out[2], std::ldexp(1.0f, -133));
  EXPECT_EQ(out[3], std::numeric_limits<float>::infinity());
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_THAT(SafetensorsFile::Open(Path("nope.safetensors")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope.safetensors")));
}

TEST_F(SafetensorsTest, FileShorterThanEightBytesIsInvalid) {
  const std::string path = Path("short.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("short.safetensors"), HasSubstr("shorter than"))));
  const std::string empty = Path("empty.safetensors");
  std::ofstream(empty, std::ios::binary).flush();
  EXPECT_THAT(SafetensorsFile::Open(empty), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFileIsInvalid) {
  EXPECT_THAT(SafetensorsFile::Open(WriteRaw("long.safetensors", "{}", "", 3)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header length 3 exceeds")));
  EXPECT_THAT(SafetensorsFile::Open(WriteRaw("huge.safetensors", "{}", "", int64_t{1} << 40)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header length")));
}

TEST_F(SafetensorsTest, HeaderLengthOverLimitIsInvalid) {
  // A sparse file large enough to hold the claimed 100 MB header.
  const int64_t length = int64_t{100} << 20;
  const std::string path = WriteRaw("limit.safetensors", "{}", "", length);
  std::filesystem::resize_file(path, 8 + length);
  EXPECT_THAT(SafetensorsFile::Open(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST_F(SafetensorsTest, HeaderNotJsonIsInvalid) {
  EXPECT_THAT(SafetensorsFile::Open(WriteRaw("bad.safetensors", "{not json")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid JSON")));
}

TEST_F(SafetensorsTest, HeaderJsonNotAnObjectIsInvalid) {
  EXPECT_THAT(SafetensorsFile::Open(WriteRaw("array.safetensors", "[1, 2]")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an object")));
  EXPECT_THAT(SafetensorsFile::Open(WriteRaw("entry.safetensors", R"({"t": 5})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 't'")));
}

TEST_F(SafetensorsTest, UnsupportedDtypeNamesTensorAndDtype) {
  const std::string header = R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})";
  EXPECT_THAT(SafetensorsFile::Open(WriteRaw("i64.safetensors", header, std::string(8, '\0'))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 'ids'"), HasSubstr("I64"))));
}

TEST_F(SafetensorsTest, BadShapeIsInvalid) {
  for (const std::string shape : {"[-1]", "[1.5]", "[\"2\"]", "3"}) {
    const std::string header =
        R"({"t":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,4]}})";
    EXPECT_THAT(SafetensorsFile::Open(WriteRaw("shape.safetensors", header, std::string(4, '\0'))),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shape")))
        << shape;
  }
}

TEST_F(SafetensorsTest, OffsetsOutOfRangeAreInvalid) {
  const std::string data(16, '\0');
  for (const std::string offsets : {"[0,20]", "[8,4]", "[17,17]", "[0]", "[-4,0]"}) {
    const std::string header =
        R"({"t":{"dtype":"F32","shape":[1],"data_offsets":)" + offsets + "}}";
    EXPECT_THAT(SafetensorsFile::Open(WriteRaw("range.safetensors", header, data)),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("tensor 't'"), HasSubstr("data_offsets"))))
        << offsets;
  }
}

TEST_F(SafetensorsTest, OffsetsDisagreeingWithShapeAreInvalid) {
  const std::string header = R"({"t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})";
  EXPECT_THAT(SafetensorsFile::Open(WriteRaw("size.safetensors", header, std::string(24, '\0'))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tensor 't'"), HasSubstr("[2, 3]"), HasSubstr("24"))));
  const std::string huge =
      R"({"t":{"dtype":"BF16","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}})";
  EXPECT_THAT(SafetensorsFile::Open(WriteRaw("overflow.safetensors", huge)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 't'")));
}

}  // namespace
}  // namespace dapq::worker
