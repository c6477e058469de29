// File: kernels/convert_test.cc
// fp16/bf16 conversions: the scalar ones against the IEEE rules (every fp16 value round-trips,
// halfway cases round to even, overflow and subnormals), and the row conversions against the
// scalar ones bit for bit on seeded random rows of every length class.
#include "kernels/convert.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace dapq::kernels {
namespace {

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}

TEST(ConvertTest, EveryF16ValueRoundTripsThroughFloat) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = F16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(f)))) << std::hex << h;
      continue;
    }
    EXPECT_EQ(FloatToF16(f), h) << std::hex << h;
  }
}

TEST(ConvertTest, F16RoundsToNearestEvenAndSaturatesToInfinity) {
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // halfway, even stays
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // halfway, up to even
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.2f, -11)), 0x3C01);      // past halfway
  EXPECT_EQ(FloatToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65519.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7C00);  // halfway to 2^16: rounds to even, infinity
  EXPECT_EQ(FloatToF16(-1e9f), 0xFC00);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);     // half the smallest: to even
  EXPECT_EQ(FloatToF16(std::ldexp(1.5f, -25)), 0x0001);     // past half: the smallest
  EXPECT_EQ(FloatToF16(std::ldexp(3.0f, -25)), 0x0002);     // 1.5 units: to even
  EXPECT_EQ(FloatToF16(std::ldexp(1023.5f, -24)), 0x0400);  // into the smallest normal
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(ConvertTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);      // halfway, even stays
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // halfway, up to even
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
}

// Rows of every length around the vector widths, with values across fp16's whole range
// (normals, subnormals, overflow, exact halfway cases, signed zeros, infinities, NaN) and values
// halfway between two bf16 ones.
std::vector<float> RandomRow(std::mt19937& rng, int n) {
  std::uniform_int_distribution<int> kind(0, 9), exp2(-30, 18);
  std::uniform_real_distribution<float> unit(-2.0f, 2.0f);
  std::vector<float> row(n);
  for (float& x : row) {
    switch (kind(rng)) {
      case 0:
        x = F16ToFloat(static_cast<uint16_t>(rng())) + std::ldexp(1.0f, -30);
        break;
      case 1:
        x = (rng() & 1) ? -0.0f : 0.0f;
        break;
      case 2:
        x = std::numeric_limits<float>::infinity();
        break;
      case 3:
        x = std::numeric_limits<float>::quiet_NaN();
        break;
      case 4: {  // halfway between two bf16 values (ties to even); NaNs with any payload
        const uint32_t bits = (static_cast<uint32_t>(rng()) & 0xffff0000u) | 0x8000u;
        std::memcpy(&x, &bits, sizeof(x));
        break;
      }
      default:
        x = std::ldexp(unit(rng), exp2(rng));
        break;
    }
  }
  return row;
}

TEST(ConvertTest, RowConversionsMatchTheScalarOnesBitForBit) {
  std::mt19937 rng(20261206);
  for (DType type : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (int n : {0, 1, 7, 8, 9, 15, 16, 17, 64, 100, 1031}) {
      const std::vector<float> row = RandomRow(rng, n);
      std::vector<uint16_t> half(n + 1, 0xABCD);
      std::vector<float> wide(n + 1, -7.0f), back(n + 1, -7.0f);
      if (type == DType::kF32) {
        ConvertFromFloat(row.data(), type, wide.data(), n);
        ConvertToFloat(type, wide.data(), back.data(), n);
        for (int i = 0; i < n; ++i) EXPECT_EQ(Bits(back[i]), Bits(row[i])) << i;
        EXPECT_EQ(back[n], -7.0f);
        continue;
      }
      ConvertFromFloat(row.data(), type, half.data(), n);
      EXPECT_EQ(half[n], 0xABCD) << "wrote past n=" << n;
      for (int i = 0; i < n; ++i) {
        const uint16_t want = type == DType::kBF16 ? FloatToBf16(row[i]) : FloatToF16(row[i]);
        ASSERT_EQ(half[i], want) << DTypeName(type) << " n=" << n << " i=" << i << " x=" << row[i];
      }
      ConvertToFloat(type, half.data(), back.data(), n);
      EXPECT_EQ(back[n], -7.0f) << "wrote past n=" << n;
      for (int i = 0; i < n; ++i) {
        const float want = type == DType::kBF16 ? Bf16ToFloat(half[i]) : F16ToFloat(half[i]);
        if (std::isnan(want)) {
          EXPECT_TRUE(std::isnan(back[i]));
        } else {
          ASSERT_EQ(Bits(back[i]), Bits(want)) << DTypeName(type) << " n=" << n << " i=" << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace dapq::kernels
