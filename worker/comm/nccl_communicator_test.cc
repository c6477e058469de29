// File: worker/comm/nccl_communicator_test.cc
// NCCL communicator smoke test on one GPU (label gpu): a group of one bootstrapped over an
// in-process communicator, every collective round-tripping host buffers, the stream-ordered
// all-reduce on device memory, Abort, and a bad device.
// NCCL will not run two ranks on one GPU, so multi-rank groups need a multi-GPU machine.
#include "worker/comm/nccl_communicator.h"

#include <cuda_runtime.h>

#include <vector>

#include "gtest/gtest.h"
#include "tests/util/cuda_test_util.h"
#include "tests/util/status_matchers.h"
#include "worker/comm/in_process_communicator.h"

namespace dapq::worker {
namespace {
using ::dapq::testing::IsOk;
using ::dapq::testing::StatusIs;

TEST(NcclCommunicatorTest, GroupOfOneRoundTripsEveryCollective) {
  DAPQ_SKIP_IF_NO_CUDA();
  ASSERT_OK_AND_ASSIGN(auto bootstrap, CreateInProcessGroup(1));
  ASSERT_OK_AND_ASSIGN(auto comm, ConnectNcclGroup(*bootstrap[0], 0));
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  std::vector<float> data(100003);
  for (size_t i = 0; i < data.size(); ++i) data[i] = 0.25f * static_cast<float>(i % 1000) - 3;
  const std::vector<float> floats = data;
  ASSERT_THAT(comm->AllReduceSum(data.data(), data.size()), IsOk());
  EXPECT_EQ(data, floats);
  std::vector<int64_t> ints = {int64_t{1} << 60, -7, 0, 42};
  const std::vector<int64_t> ints_before = ints;
  ASSERT_THAT(comm->AllReduceSum(ints.data(), ints.size()), IsOk());
  EXPECT_EQ(ints, ints_before);
  std::vector<unsigned char> bytes(13, 0x5A);
  ASSERT_THAT(comm->Broadcast(bytes.data(), bytes.size(), 0), IsOk());
  EXPECT_EQ(bytes, std::vector<unsigned char>(13, 0x5A));
  EXPECT_THAT(comm->Broadcast(bytes.data(), bytes.size(), 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(comm->Barrier(), IsOk());
  comm->Abort();
  EXPECT_THAT(comm->AllReduceSum(data.data(), data.size()), StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(comm->Barrier(), StatusIs(absl::StatusCode::kAborted));
}

TEST(NcclCommunicatorTest, StreamOrderedAllReduceOnDeviceMemory) {
  DAPQ_SKIP_IF_NO_CUDA();
  ASSERT_OK_AND_ASSIGN(auto bootstrap, CreateInProcessGroup(1));
  ASSERT_OK_AND_ASSIGN(auto comm, ConnectNcclGroup(*bootstrap[0], 0));
  EXPECT_TRUE(comm->TakesDeviceBuffers());
  std::vector<float> host(4099);
  for (size_t i = 0; i < host.size(); ++i) host[i] = 0.5f * static_cast<float>(i % 97) - 9;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  float* device = nullptr;
  ASSERT_EQ(cudaMalloc(&device, host.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(device, host.data(), host.size() * sizeof(float),
                            cudaMemcpyHostToDevice, stream),
            cudaSuccess);
  const kernels::Stream on{kernels::Backend::kCuda, stream};
  ASSERT_THAT(comm->AllReduceSumOnStream(device, host.size(), on), IsOk());
  std::vector<float> back(host.size());
  ASSERT_EQ(cudaMemcpyAsync(back.data(), device, back.size() * sizeof(float),
                            cudaMemcpyDeviceToHost, stream),
            cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(back, host);  // a group of one: the sum is the data
  EXPECT_THAT(comm->AsyncError(), IsOk());
  EXPECT_THAT(comm->AllReduceSumOnStream(device, host.size(), kernels::Stream{}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("CUDA stream")));
  comm->Abort();
  EXPECT_THAT(comm->AllReduceSumOnStream(device, host.size(), on),
              StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(comm->AsyncError(), StatusIs(absl::StatusCode::kAborted));
  cudaFree(device);
  cudaStreamDestroy(stream);
}

TEST(NcclCommunicatorTest, BadDeviceIsInvalidArgument) {
  DAPQ_SKIP_IF_NO_CUDA();
  ASSERT_OK_AND_ASSIGN(auto bootstrap, CreateInProcessGroup(1));
  EXPECT_THAT(ConnectNcclGroup(*bootstrap[0], 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("device")));
  EXPECT_THAT(ConnectNcclGroup(*bootstrap[0], -1), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace dapq::worker
