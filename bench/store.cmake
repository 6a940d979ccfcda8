# bench/store.cmake: what durability costs (node/store). Included by bench/CMakeLists.txt,
# which exists only when RINGPEER_BENCH is on; the guard keeps this file safe to include
# from anywhere else.
if(RINGPEER_BENCH AND TARGET store)
  add_executable(ringpeer-bench-store ${CMAKE_CURRENT_LIST_DIR}/store_benchmark.cc)
  target_include_directories(ringpeer-bench-store PRIVATE ${PROJECT_SOURCE_DIR}
                             ${PROJECT_BINARY_DIR})
  target_link_libraries(ringpeer-bench-store PRIVATE store benchmark::benchmark)
endif()
