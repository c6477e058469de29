# dapq_cc_library / dapq_cc_test: the only way targets and tests are declared.
include(GoogleTest)

# dapq_cc_test(NAME n SRCS a.cc... DEPS libs... [LABELS cpu|gpu|slow...])
# Registers every TEST with CTest (PRE_TEST discovery) and records the sources so that
# check_tests_registered can prove no *_test.cc is left out of the build.
function(dapq_cc_test)
  cmake_parse_arguments(T "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT T_LABELS)
    set(T_LABELS cpu)
  endif()
  add_executable(${T_NAME} ${T_SRCS})
  target_link_libraries(${T_NAME} PRIVATE ${T_DEPS} dapq_config GTest::gmock GTest::gtest_main)
  gtest_discover_tests(${T_NAME}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES LABELS "${T_LABELS}" ENVIRONMENT "DAPQ_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
  dapq_note_test_sources(${T_SRCS})
  if("gpu" IN_LIST T_LABELS)  # listed in gpu_tests.txt for scripts/gpu_bundle.sh
    set_property(GLOBAL APPEND PROPERTY DAPQ_GPU_TESTS "$<TARGET_FILE:${T_NAME}>")
  endif()
endfunction()

# Records test sources for check_tests_registered. Called by dapq_cc_test, and directly for GPU
# test sources in builds without CUDA (they are registered whenever nvcc is present).
function(dapq_note_test_sources)
  foreach(src ${ARGN})
    get_filename_component(abs ${src} ABSOLUTE)
    set_property(GLOBAL APPEND PROPERTY DAPQ_TEST_SOURCES ${abs})
  endforeach()
  get_property(all GLOBAL PROPERTY DAPQ_TEST_SOURCES)
  file(WRITE ${PROJECT_BINARY_DIR}/registered_tests.txt "")
  foreach(s ${all})
    file(APPEND ${PROJECT_BINARY_DIR}/registered_tests.txt "${s}\n")
  endforeach()
endfunction()
