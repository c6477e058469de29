# OpenBLAS (chosen by measurement, see bench/README.md) as dapq::blas.
find_path(DAPQ_OPENBLAS_INCLUDE cblas.h PATHS /usr/include/x86_64-linux-gnu/openblas-pthread
  /usr/include/openblas /usr/include/x86_64-linux-gnu/openblas64-pthread NO_DEFAULT_PATH)
find_library(DAPQ_OPENBLAS_LIBRARY NAMES openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-pthread)
if(NOT DAPQ_OPENBLAS_INCLUDE OR NOT DAPQ_OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS not found: run scripts/setup.sh (libopenblas-dev)")
endif()
add_library(dapq_blas INTERFACE)
add_library(dapq::blas ALIAS dapq_blas)
target_include_directories(dapq_blas INTERFACE ${DAPQ_OPENBLAS_INCLUDE})
target_link_libraries(dapq_blas INTERFACE ${DAPQ_OPENBLAS_LIBRARY})
message(STATUS "dapq: OpenBLAS ${DAPQ_OPENBLAS_LIBRARY}")
