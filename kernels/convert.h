// File: kernels/convert.h
// Row conversions between fp32 and the stored element types (kernels/types.h's DType), in host
// memory: the KV cache writes its slots through ConvertFromFloat and reads them back through
// ConvertToFloat. Rounding is types.h's (to nearest, ties to even) and the results are
// bit-identical to the scalar conversions whichever instructions ran (F16C and AVX-512 where the
// CPU has them, plain C++ elsewhere).
// Thread-safety: pure functions.
#ifndef DAPQ_KERNELS_CONVERT_H_
#define DAPQ_KERNELS_CONVERT_H_

#include "kernels/types.h"

namespace dapq::kernels {

// dst[i] = src[i] widened to fp32, for n elements of type `type` at `src`. Pointers are aligned to
// their element size.
void ConvertToFloat(DType type, const void* src, float* dst, long n);
// dst[i] = src[i] rounded to `type`, n elements written at `dst`.
void ConvertFromFloat(const float* src, DType type, void* dst, long n);

}  // namespace dapq::kernels

#endif  // DAPQ_KERNELS_CONVERT_H_
