# bench/room_net.cmake: the sans-I/O parts of issue 5's room benchmark (join through
# checkpoint pieces, catch-up through sync, relay fan-out), on tests/net's in-memory network.
if(RINGPEER_BENCH AND TARGET room)
  add_executable(ringpeer-bench-room-net ${CMAKE_CURRENT_LIST_DIR}/room_net_benchmark.cc)
  target_include_directories(ringpeer-bench-room-net PRIVATE ${PROJECT_SOURCE_DIR}
                             ${PROJECT_BINARY_DIR})
  target_link_libraries(ringpeer-bench-room-net PRIVATE room memnet)
endif()
