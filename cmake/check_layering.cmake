# File: cmake/check_layering.cmake
# Fails when a product source includes a folder it may not depend on, or when any source includes
# an `internal/` header from outside the folder that owns it. Run by CTest (check_layering).
#
# The layers (ARCHITECTURE.md §2, plus the folders added since): each folder may include itself
# and the folders listed after it, nothing else. `dapq/` is the generated code of proto/.
# Test code may include anything except another folder's internal/ headers: tests/, every
# *_test.cc, and any file that includes gtest or gmock (typed test contracts beside their code).
#   common/      -> (nothing)
#   proto/       -> (nothing; .proto only)
#   api/         -> common, proto            request rules shared by coordinator, worker, cli
#   kernels/     -> common
#   tokenizer/   -> common                   llama2.c-independent text tokenizers (tokenizer.json)
#   cluster/     -> common                   etcd client, watches, registrations, rendezvous
#   kvstore/     -> common, kernels, proto
#   worker/      -> common, kernels, kvstore, proto, api, tokenizer, cluster
#   coordinator/ -> common, proto, api, cluster   never kernels, kvstore or worker
#   launcher/    -> common, proto, cluster   local processes and clusters
#   eval/        -> common, kernels, kvstore, worker, tokenizer
#   cli/         -> common, proto, api, kernels, tokenizer, cluster, kvstore, worker, coordinator,
#                   launcher, eval
#   bench/       -> everything but cli/ and tests/
# Usage: cmake -DSOURCE_DIR=<repo root> -P check_layering.cmake
set(allowed_common "")
set(allowed_proto "")
set(allowed_api common proto)
set(allowed_kernels common)
set(allowed_tokenizer common)
set(allowed_cluster common)
set(allowed_kvstore common kernels proto)
set(allowed_worker common kernels kvstore proto api tokenizer cluster)
set(allowed_coordinator common proto api cluster)
set(allowed_launcher common proto cluster)
set(allowed_eval common kernels kvstore worker tokenizer)
set(allowed_cli common proto api kernels tokenizer cluster kvstore worker coordinator launcher eval)
set(allowed_bench common proto api kernels tokenizer cluster kvstore worker coordinator launcher eval
  bench)
set(layers common proto api kernels tokenizer cluster kvstore worker coordinator launcher eval cli bench
  tests)

file(GLOB_RECURSE sources RELATIVE ${SOURCE_DIR}
  ${SOURCE_DIR}/*.h ${SOURCE_DIR}/*.cc ${SOURCE_DIR}/*.cu ${SOURCE_DIR}/*.cuh)
set(problems "")
set(checked 0)
foreach(src ${sources})
  if(src MATCHES "^build" OR src MATCHES "^\\.")
    continue()
  endif()
  string(REGEX MATCH "^[^/]+" folder "${src}")
  list(FIND layers "${folder}" known)
  if(known EQUAL -1)
    continue()
  endif()
  math(EXPR checked "${checked} + 1")
  file(STRINGS ${SOURCE_DIR}/${src} includes REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]")
  set(is_test FALSE)
  if(folder STREQUAL "tests" OR src MATCHES "_test\\.cc$")
    set(is_test TRUE)
  endif()
  foreach(line ${includes})
    if(line MATCHES "[\"<](gtest|gmock)/")
      set(is_test TRUE)
    endif()
  endforeach()
  get_filename_component(src_dir ${src} DIRECTORY)
  foreach(line ${includes})
    if(NOT line MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"")
      continue()
    endif()
    set(path "${CMAKE_MATCH_1}")
    # internal/ headers belong to the folder above internal/.
    if(path MATCHES "^(.*)/internal/")
      set(owner "${CMAKE_MATCH_1}")
      if(NOT src_dir STREQUAL owner AND NOT src MATCHES "^${owner}/")
        list(APPEND problems "${src} includes ${path} (internal to ${owner}/)")
      endif()
    endif()
    if(is_test)
      continue()
    endif()
    string(REGEX MATCH "^[^/]+" target "${path}")
    if(target STREQUAL "dapq")
      set(target proto)
    endif()
    list(FIND layers "${target}" target_known)
    if(target_known EQUAL -1 OR target STREQUAL folder)
      continue()
    endif()
    list(FIND allowed_${folder} "${target}" ok)
    if(ok EQUAL -1)
      list(APPEND problems "${src} includes ${path} (${folder}/ may not depend on ${target}/)")
    endif()
  endforeach()
endforeach()
if(problems)
  list(JOIN problems "\n  " text)
  message(FATAL_ERROR "layering violations:\n  ${text}")
endif()
message(STATUS "layering: ${checked} sources checked, no violations")
