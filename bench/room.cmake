# bench/room.cmake: room model benchmarks (node/room). Included by bench/CMakeLists.txt,
# which exists only when RINGPEER_BENCH is on; the guard keeps this file safe to include
# from anywhere else.
if(RINGPEER_BENCH AND TARGET room)
  add_executable(ringpeer-bench-room ${CMAKE_CURRENT_LIST_DIR}/room_benchmark.cc)
  target_include_directories(ringpeer-bench-room PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(ringpeer-bench-room PRIVATE room benchmark::benchmark)
endif()
