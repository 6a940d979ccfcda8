// MonotonicUs: CLOCK_MONOTONIC in microseconds. Only the glue reads clocks (the shards'
// loops, the Node); sans-I/O code takes `now_us` from its caller.
#pragma once

#include <time.h>

#include <cstdint>

namespace ringpeer::base {

inline int64_t MonotonicUs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

}  // namespace ringpeer::base
