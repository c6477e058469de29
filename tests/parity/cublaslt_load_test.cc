// File: tests/parity/cublaslt_load_test.cc
// cuBLASLt is dlopen'ed on first use (kernels/cuda/cublaslt_api.h), never linked: linked, its
// thread-local storage joined every thread's stack and threads with small explicit stacks
// (civetweb's 100 KB, the /metrics server) failed to start in CUDA builds. Host-only: these run
// without a GPU, wherever the CUDA toolkit's libraries are.
#include <pthread.h>

#include "gtest/gtest.h"
#include "kernels/cuda/cublaslt_api.h"

namespace dapq::kernels::cuda {
namespace {

TEST(CublasLtLoadTest, LoadsOnDemandWithEverySymbol) {
  const absl::Status loaded = LoadCublasLt();
  ASSERT_TRUE(loaded.ok()) << loaded;
  EXPECT_TRUE(LoadCublasLt().ok());  // once; the same answer after
  const CublasLtApi& api = Lt();
  EXPECT_NE(api.cublasLtCreate, nullptr);
  EXPECT_NE(api.cublasLtMatmul, nullptr);
  EXPECT_NE(api.cublasLtMatrixLayoutDestroy, nullptr);
  EXPECT_STRNE(api.cublasLtGetStatusName(CUBLAS_STATUS_SUCCESS), "");
}

void* Nothing(void*) { return nullptr; }

TEST(CublasLtLoadTest, ThreadsWithCivetwebsStackSizeStart) {
  ASSERT_TRUE(LoadCublasLt().ok());
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 102400), 0);  // civetweb's thread stack
  pthread_t thread;
  const int rc = pthread_create(&thread, &attr, &Nothing, nullptr);
  pthread_attr_destroy(&attr);
  ASSERT_EQ(rc, 0) << "a 100 KB-stack thread cannot start: too much static TLS in the process";
  pthread_join(thread, nullptr);
}

}  // namespace
}  // namespace dapq::kernels::cuda
