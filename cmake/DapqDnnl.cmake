# oneDNN (Debian's libdnnl-dev) as dapq::dnnl: bf16 matrix multiplies for prefill with bf16
# weights (kernels/ref/bf16_matmul.h). Optional: without it those products widen the weights to
# fp32 for OpenBLAS (slower, same interface); scripts/setup.sh installs it. Found by header and
# library, not through its CMake package: Debian's requires the OpenCL headers (its GPU runtime),
# which the CPU path never uses.
find_path(DAPQ_DNNL_INCLUDE dnnl.hpp)
find_library(DAPQ_DNNL_LIBRARY dnnl)
add_library(dapq_dnnl INTERFACE)
add_library(dapq::dnnl ALIAS dapq_dnnl)
if(DAPQ_DNNL_INCLUDE AND DAPQ_DNNL_LIBRARY)
  target_include_directories(dapq_dnnl INTERFACE ${DAPQ_DNNL_INCLUDE})
  # gomp: oneDNN's OpenMP runtime (GCC's, found by the compiler driver); we size its team per
  # caller through omp_set_num_threads.
  target_link_libraries(dapq_dnnl INTERFACE ${DAPQ_DNNL_LIBRARY} gomp)
  target_compile_definitions(dapq_dnnl INTERFACE DAPQ_HAVE_DNNL=1)
  message(STATUS "dapq: oneDNN ${DAPQ_DNNL_LIBRARY} (bf16 prefill GEMM)")
else()
  message(STATUS "dapq: oneDNN not found: bf16 prefill GEMM widens to fp32 (libdnnl-dev)")
endif()
