// File: kernels/device_test.cc
// The backend seam on the CPU: device specs, tensor views, the CPU execution context, and what
// asking for a CUDA context does in a build or on a machine without one. The CUDA context's own
// test is tests/parity/device_parity_test.cc (label gpu).
#include "kernels/device.h"

#include <cstdint>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dapq::kernels {
namespace {

using ::testing::HasSubstr;

TEST(ParseDeviceTest, AcceptsCpuAndCudaOrdinals) {
  auto cpu = ParseDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(*cpu, (Device{Backend::kCpu, 0}));
  auto cuda = ParseDevice("cuda");
  ASSERT_TRUE(cuda.ok());
  EXPECT_EQ(*cuda, (Device{Backend::kCuda, 0}));
  auto third = ParseDevice("cuda:3");
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(*third, (Device{Backend::kCuda, 3}));
  EXPECT_EQ(DeviceName(*third), "cuda:3");
  EXPECT_EQ(DeviceName(*cpu), "cpu");
}

TEST(ParseDeviceTest, RejectsOtherSpecsNamingThem) {
  for (const char* spec : {"", "gpu", "CPU", "cuda:", "cuda:-1", "cuda:x", "cuda:1024", "cuda:1 ",
                           "cuda:+1", "cuda: 1"}) {
    auto device = ParseDevice(spec);
    ASSERT_FALSE(device.ok()) << spec;
    EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(device.status().message(), HasSubstr(std::string("\"") + spec + "\""));
    EXPECT_THAT(device.status().message(), HasSubstr("cuda:N"));
  }
}

TEST(TensorViewTest, ContiguousViewHasRowMajorStrides) {
  std::vector<float> data(2 * 3 * 4);
  auto view = TensorView::Contiguous(data.data(), DType::kF32, Device{}, {2, 3, 4});
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->rank, 3);
  EXPECT_EQ(view->strides[0], 12);
  EXPECT_EQ(view->strides[1], 4);
  EXPECT_EQ(view->strides[2], 1);
  EXPECT_EQ(view->elements(), 24);
  EXPECT_EQ(view->span_bytes(), 24 * 4);
  EXPECT_TRUE(view->contiguous());
}

TEST(TensorViewTest, SliceSelectsARowOfTheFirstDimension) {
  std::vector<uint16_t> data(5 * 8);
  std::iota(data.begin(), data.end(), 0);
  auto view = TensorView::Contiguous(data.data(), DType::kBF16, Device{}, {5, 8});
  ASSERT_TRUE(view.ok());
  auto row = view->Slice(3);
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->rank, 1);
  EXPECT_EQ(row->shape[0], 8);
  EXPECT_EQ(*static_cast<uint16_t*>(row->data), 24);
  EXPECT_EQ(row->span_bytes(), 16);
  EXPECT_FALSE(view->Slice(5).ok());
  EXPECT_FALSE(view->Slice(-1).ok());
  EXPECT_FALSE(row->Slice(0).ok());
}

TEST(TensorViewTest, StridedViewIsNotContiguous) {
  std::vector<float> data(4 * 10);
  auto view = TensorView::Contiguous(data.data(), DType::kF32, Device{}, {4, 8});
  ASSERT_TRUE(view.ok());
  view->strides[0] = 10;  // rows padded to 10 elements
  EXPECT_FALSE(view->contiguous());
  EXPECT_EQ(view->span_bytes(), (3 * 10 + 8) * 4);
}

TEST(TensorViewTest, RejectsBadShapes) {
  EXPECT_EQ(TensorView::Contiguous(nullptr, DType::kF32, Device{}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TensorView::Contiguous(nullptr, DType::kF32, Device{}, {1, 2, 3, 4, 5}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto negative = TensorView::Contiguous(nullptr, DType::kF32, Device{}, {2, -1});
  ASSERT_FALSE(negative.ok());
  EXPECT_THAT(negative.status().message(), HasSubstr("dimension 1"));
  auto overflow =
      TensorView::Contiguous(nullptr, DType::kF32, Device{}, {1L << 40, 1L << 40, 1L << 40});
  EXPECT_FALSE(overflow.ok());
  auto empty = TensorView::Contiguous(nullptr, DType::kF16, Device{}, {3, 0});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->elements(), 0);
  EXPECT_EQ(empty->span_bytes(), 0);
}

TEST(CpuContextTest, AllocatesCopiesAndOrdersInline) {
  auto context = ExecutionContext::Create(Device{});
  ASSERT_TRUE(context.ok()) << context.status();
  ExecutionContext& cpu = **context;
  EXPECT_EQ(cpu.device(), Device{});
  EXPECT_EQ(cpu.stream().backend, Backend::kCpu);

  auto empty = cpu.Allocate(0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->data(), nullptr);

  std::vector<int32_t> source(1000);
  std::iota(source.begin(), source.end(), -500);
  auto device = cpu.Allocate(source.size() * sizeof(int32_t));
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(device->data()) % 64, 0u);
  auto pinned = cpu.Allocate(source.size() * sizeof(int32_t), MemoryKind::kPinnedHost);
  ASSERT_TRUE(pinned.ok());
  EXPECT_EQ(pinned->kind(), MemoryKind::kPinnedHost);

  const size_t bytes = source.size() * sizeof(int32_t);
  ASSERT_TRUE(cpu.CopyAsync(device->data(), source.data(), bytes, CopyKind::kHostToDevice).ok());
  ASSERT_TRUE(cpu.CopyAsync(pinned->data(), device->data(), bytes, CopyKind::kDeviceToDevice).ok());
  std::vector<int32_t> back(source.size());
  ASSERT_TRUE(cpu.CopyAsync(back.data(), pinned->data(), bytes, CopyKind::kDeviceToHost).ok());
  auto event = cpu.RecordEvent();
  ASSERT_TRUE(event.ok());
  auto done = cpu.EventDone(*event);
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(*done);
  EXPECT_TRUE(cpu.StreamWait(*event).ok());
  EXPECT_TRUE(cpu.Synchronize().ok());
  EXPECT_EQ(back, source);
}

TEST(CpuContextTest, NullCopyIsInvalidArgument) {
  auto cpu = CreateCpuContext();
  int32_t x = 0;
  absl::Status s = cpu->CopyAsync(nullptr, &x, 4, CopyKind::kHostToDevice);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("null destination"));
  EXPECT_TRUE(cpu->CopyAsync(nullptr, nullptr, 0, CopyKind::kHostToDevice).ok());
}

TEST(CpuContextTest, AbsurdAllocationIsResourceExhausted) {
  auto cpu = CreateCpuContext();
  auto huge = cpu->Allocate(size_t{1} << 62);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(huge.status().message(), HasSubstr("bytes"));
}

TEST(CpuContextTest, WorkspaceGrowsAndIsReused) {
  auto cpu = CreateCpuContext();
  auto small = cpu->Workspace(100);
  ASSERT_TRUE(small.ok());
  auto again = cpu->Workspace(50);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *small);
  auto larger = cpu->Workspace(1000);
  ASSERT_TRUE(larger.ok());
  static_cast<char*>(*larger)[999] = 1;  // the whole size is usable
  auto within = cpu->Workspace(1000);
  ASSERT_TRUE(within.ok());
  EXPECT_EQ(*within, *larger);
}

TEST(DeviceMemoryTest, MoveTransfersOwnership) {
  auto cpu = CreateCpuContext();
  auto memory = cpu->Allocate(256);
  ASSERT_TRUE(memory.ok());
  void* ptr = memory->data();
  DeviceMemory moved = std::move(*memory);
  EXPECT_EQ(moved.data(), ptr);
  EXPECT_EQ(memory->data(), nullptr);  // NOLINT(bugprone-use-after-move): checking the move
  moved.Reset();
  EXPECT_EQ(moved.bytes(), 0u);
}

// Without CUDA in the build, or without a device on this machine, a CUDA context is a clear
// error naming the device; never a crash and never a silent CPU fallback.
TEST(CudaContextTest, UnavailableCudaIsAClearError) {
  auto context = ExecutionContext::Create(Device{Backend::kCuda, 0});
#if !DAPQ_HAVE_CUDA
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(context.status().message(), HasSubstr("cuda:0"));
#else
  if (context.ok()) GTEST_SKIP() << "this machine has a CUDA device (tests/parity covers it)";
  EXPECT_EQ(context.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(context.status().message(), HasSubstr("cuda:0"));
#endif
  auto far = ExecutionContext::Create(Device{Backend::kCuda, 1000});
  ASSERT_FALSE(far.ok());
  EXPECT_THAT(far.status().message(), HasSubstr("cuda:1000"));
}

}  // namespace
}  // namespace dapq::kernels
