# Micro-benchmarks of the wire layer: header check, Decode, Encoder, and ed25519 verify for
# scale (bench/README.md).
add_executable(wire_benchmark wire_benchmark.cc)
target_include_directories(wire_benchmark PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
target_link_libraries(wire_benchmark PRIVATE wire base benchmark::benchmark)
