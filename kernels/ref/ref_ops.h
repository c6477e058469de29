// File: kernels/ref/ref_ops.h
// CPU implementations of every op in kernels/ops.inc. They define correct behaviour (every other
// backend is tested against them) and are the CPU product mode. Called through dispatch.cc only;
// params are already validated. Thread-safety: reentrant (thread-local scratch only).
#ifndef DAPQ_KERNELS_REF_REF_OPS_H_
#define DAPQ_KERNELS_REF_REF_OPS_H_

#include "absl/status/status.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/attention_scores.h"
#include "kernels/embedding.h"
#include "kernels/fixed_point.h"
#include "kernels/gemm.h"
#include "kernels/kv_append.h"
#include "kernels/kv_compact.h"
#include "kernels/pooling.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/softmax.h"

namespace dapq::kernels::ref {

#define DAPQ_KERNEL_OP(Name, Params, Validator, Backends) absl::Status Name##Ref(const Params& p);
#include "kernels/ops.inc"
#undef DAPQ_KERNEL_OP

}  // namespace dapq::kernels::ref

#endif  // DAPQ_KERNELS_REF_REF_OPS_H_
