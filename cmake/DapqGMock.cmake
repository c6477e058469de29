# Debian's GTest config exports only GTest::gtest and GTest::gtest_main: add GTest::gmock.
if(NOT TARGET GTest::gmock)
  find_library(DAPQ_GMOCK_LIBRARY gmock REQUIRED)
  add_library(GTest::gmock UNKNOWN IMPORTED)
  set_target_properties(GTest::gmock PROPERTIES
    IMPORTED_LOCATION ${DAPQ_GMOCK_LIBRARY}
    INTERFACE_LINK_LIBRARIES GTest::gtest)
endif()
