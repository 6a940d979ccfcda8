# bench/room_loopback.cmake: issue 5's room benchmark over real sockets on 127.0.0.1 (a
# one-shard relay node with its LMDB store, clients, raw UDP members).
if(RINGPEER_BENCH AND TARGET client)
  add_executable(ringpeer-bench-room-loopback ${CMAKE_CURRENT_LIST_DIR}/room_loopback_benchmark.cc)
  target_include_directories(ringpeer-bench-room-loopback PRIVATE ${PROJECT_SOURCE_DIR}
                             ${PROJECT_BINARY_DIR})
  target_link_libraries(ringpeer-bench-room-loopback PRIVATE client)
endif()
