// File: tests/parity/device_parity_test.cc
// The CUDA execution context (kernels/device.h) on a GPU: a round trip host -> device ->
// device -> pinned host with events, a second context's stream waiting on the first's event, the
// workspace, and a kernel run on the context's stream against the CPU context running the same
// call. Skips without a CUDA device (fails with DAPQ_REQUIRE_GPU=1).
#include <cuda_runtime.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/device.h"
#include "kernels/rms_norm.h"
#include "tests/parity/parity_util.h"
#include "tests/util/cuda_test_util.h"

namespace dapq::kernels {
namespace {

TEST(CudaContextParityTest, RoundTripThroughDeviceAndPinnedMemoryWithEvents) {
  DAPQ_SKIP_IF_NO_CUDA();
  auto context = ExecutionContext::Create(Device{Backend::kCuda, 0});
  ASSERT_TRUE(context.ok()) << context.status();
  ExecutionContext& gpu = **context;
  EXPECT_EQ(gpu.stream().backend, Backend::kCuda);
  std::vector<int32_t> source(1 << 20);
  std::iota(source.begin(), source.end(), 7);
  const size_t bytes = source.size() * sizeof(int32_t);
  auto a = gpu.Allocate(bytes);
  auto b = gpu.Allocate(bytes);
  auto pinned = gpu.Allocate(bytes, MemoryKind::kPinnedHost);
  ASSERT_TRUE(a.ok() && b.ok() && pinned.ok());
  ASSERT_TRUE(gpu.CopyAsync(a->data(), source.data(), bytes, CopyKind::kHostToDevice).ok());
  ASSERT_TRUE(gpu.CopyAsync(b->data(), a->data(), bytes, CopyKind::kDeviceToDevice).ok());
  ASSERT_TRUE(gpu.CopyAsync(pinned->data(), b->data(), bytes, CopyKind::kDeviceToHost).ok());
  auto event = gpu.RecordEvent();
  ASSERT_TRUE(event.ok()) << event.status();
  ASSERT_TRUE(gpu.Synchronize().ok());
  auto done = gpu.EventDone(*event);
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(*done);
  EXPECT_EQ(std::memcmp(pinned->data(), source.data(), bytes), 0);
}

TEST(CudaContextParityTest, SecondStreamWaitsForTheFirstsEvent) {
  DAPQ_SKIP_IF_NO_CUDA();
  auto first = ExecutionContext::Create(Device{Backend::kCuda, 0});
  auto second = ExecutionContext::Create(Device{Backend::kCuda, 0});
  ASSERT_TRUE(first.ok() && second.ok());
  std::vector<float> source(1 << 22, 1.5f);
  const size_t bytes = source.size() * sizeof(float);
  auto a = (*first)->Allocate(bytes);
  auto b = (*second)->Allocate(bytes);
  auto out = (*second)->Allocate(bytes, MemoryKind::kPinnedHost);
  ASSERT_TRUE(a.ok() && b.ok() && out.ok());
  ASSERT_TRUE((*first)->CopyAsync(a->data(), source.data(), bytes, CopyKind::kHostToDevice).ok());
  auto written = (*first)->RecordEvent();
  ASSERT_TRUE(written.ok());
  ASSERT_TRUE((*second)->StreamWait(*written).ok());
  ASSERT_TRUE((*second)->CopyAsync(b->data(), a->data(), bytes, CopyKind::kDeviceToDevice).ok());
  ASSERT_TRUE((*second)->CopyAsync(out->data(), b->data(), bytes, CopyKind::kDeviceToHost).ok());
  ASSERT_TRUE((*second)->Synchronize().ok());
  EXPECT_EQ(std::memcmp(out->data(), source.data(), bytes), 0);
  ASSERT_TRUE((*first)->Synchronize().ok());
}

// The same kernel call through the CPU context and through the CUDA context's stream.
TEST(CudaContextParityTest, KernelOnTheContextStreamMatchesTheCpuContext) {
  DAPQ_SKIP_IF_NO_CUDA();
  auto gpu = ExecutionContext::Create(Device{Backend::kCuda, 0});
  ASSERT_TRUE(gpu.ok());
  auto cpu = CreateCpuContext();
  const int rows = 6, dim = 4096;
  const auto x = parity::Random(static_cast<size_t>(rows) * dim, 11);
  const auto w = parity::Random(dim, 12);
  std::vector<float> expected(x.size());
  ASSERT_TRUE(
      RmsNorm({rows, dim, x.data(), dim, w.data(), expected.data(), dim, 1e-5f}, cpu->stream())
          .ok());
  const size_t bytes = x.size() * sizeof(float);
  auto dx = (*gpu)->Allocate(bytes);
  auto dw = (*gpu)->Allocate(dim * sizeof(float));
  auto workspace = (*gpu)->Workspace(bytes);  // the output lives in the context's workspace
  ASSERT_TRUE(dx.ok() && dw.ok() && workspace.ok());
  ASSERT_TRUE((*gpu)->CopyAsync(dx->data(), x.data(), bytes, CopyKind::kHostToDevice).ok());
  ASSERT_TRUE(
      (*gpu)->CopyAsync(dw->data(), w.data(), dim * sizeof(float), CopyKind::kHostToDevice).ok());
  float* dout = static_cast<float*>(*workspace);
  ASSERT_TRUE(RmsNorm({rows, dim, static_cast<float*>(dx->data()), dim,
                       static_cast<float*>(dw->data()), dout, dim, 1e-5f},
                      (*gpu)->stream())
                  .ok());
  std::vector<float> got(x.size());
  ASSERT_TRUE((*gpu)->CopyAsync(got.data(), dout, bytes, CopyKind::kDeviceToHost).ok());
  ASSERT_TRUE((*gpu)->Synchronize().ok());
  parity::ExpectClose(got, expected);
}

}  // namespace
}  // namespace dapq::kernels
