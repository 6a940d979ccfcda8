// Helpers of the kernel micro-benchmarks (ringpeer-bench-udp-gso, -udp-gro,
// -page-populate): a thread's CPU time, pinning a thread to a CPU, medians.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace ringpeer::bench {

// ThreadCpuUs: the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID), µs.
inline double ThreadCpuUs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

// PinToCpu: the calling thread to `cpu`; nothing on a machine with one CPU.
inline void PinToCpu(int cpu) {
  if (std::thread::hardware_concurrency() < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// Median: of a non-empty set (the mean of the middle two when it is even).
inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace ringpeer::bench
