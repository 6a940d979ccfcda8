# Load tools: the kernel echo baseline and the ringpeer-load generator (bench/README.md).
# Both land in the same build directory because ringpeer-load starts ringpeer-udp-echo
# from next to its own executable for the baseline phase.
add_executable(ringpeer-udp-echo udp_echo.cc)
target_include_directories(ringpeer-udp-echo PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(ringpeer-udp-echo PRIVATE base)

add_executable(ringpeer-load ringpeer_load.cc)
target_include_directories(ringpeer-load PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
target_link_libraries(ringpeer-load PRIVATE dht wire base absl::str_format)
# Building the loader builds the baseline it launches.
add_dependencies(ringpeer-load ringpeer-udp-echo)

# The loader's pure helpers (histogram, flags, addressing, output) without its main().
rp_test(load_stats_test SRCS load_stats_test.cc DEPS dht wire base absl::str_format
        LABELS bench)

# ringpeer-bench-udp-gso: the kernel's cost per datagram sent on loopback, one by one
# against UDP GSO bursts (issue 15).
add_executable(ringpeer-bench-udp-gso udp_gso.cc)
target_include_directories(ringpeer-bench-udp-gso PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(ringpeer-bench-udp-gso PRIVATE Threads::Threads)

# ringpeer-bench-udp-gro: what a receiver pays per datagram for GSO bursts, with and
# without UDP GRO on its socket (issue 15: a joiner's checkpoint ranges).
add_executable(ringpeer-bench-udp-gro udp_gro.cc)
target_include_directories(ringpeer-bench-udp-gro PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(ringpeer-bench-udp-gro PRIVATE ring Threads::Threads)

# ringpeer-bench-page-populate: what fresh memory costs to write, 4 KiB pages against
# populated and huge pages (base/huge_pages.h; issue 15: a first join's page faults).
add_executable(ringpeer-bench-page-populate page_populate.cc)
target_include_directories(ringpeer-bench-page-populate PRIVATE ${PROJECT_SOURCE_DIR})
