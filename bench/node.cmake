# Micro-benchmarks of a shard's per-datagram work (ping handling, mailbox hop).
add_executable(node_benchmark node_benchmark.cc)
target_include_directories(node_benchmark PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
target_link_libraries(node_benchmark PRIVATE shard dht wire base benchmark::benchmark)
