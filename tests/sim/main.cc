// ringpeer-sim: runs the DHT simulator for a given size, loss and churn, prints the
// figures, and ends with one line of key=value pairs (see README.md).
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "tests/sim/sim.h"

// Live heap bytes, for the memory-per-node figure: every allocation is counted by its
// usable size. Only this binary replaces operator new.
static std::atomic<int64_t> g_heap_bytes{0};

void* operator new(size_t n) {
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) std::abort();
  g_heap_bytes += static_cast<int64_t>(malloc_usable_size(p));
  return p;
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept {
  if (p == nullptr) return;
  g_heap_bytes -= static_cast<int64_t>(malloc_usable_size(p));
  std::free(p);
}
void operator delete[](void* p) noexcept { operator delete(p); }
void operator delete(void* p, size_t) noexcept { operator delete(p); }
void operator delete[](void* p, size_t) noexcept { operator delete(p); }

namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: ringpeer-sim [--nodes N] [--loss P] [--duplicate P] [--churn F]\n"
               "  [--seed S] [--lookups L] [--hellos H] [--size-estimates E] [--paths D]\n"
               "  [--measure-s T] [--no-walks] [--real-crypto] [--verbose]\n");
}

}  // namespace

int main(int argc, char** argv) {
  ringpeer::sim::SimConfig c;
  c.nodes = 10000;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        Usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--nodes") c.nodes = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--loss") c.loss = std::atof(next());
    else if (a == "--duplicate") c.duplicate = std::atof(next());
    else if (a == "--churn") c.churn = std::atof(next());
    else if (a == "--seed") c.seed = std::strtoull(next(), nullptr, 10);
    else if (a == "--lookups") c.lookups = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--hellos") c.hellos = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--size-estimates") c.size_estimates = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--paths") c.disjoint_paths = static_cast<uint8_t>(std::atoi(next()));
    else if (a == "--measure-s") c.measure_us = static_cast<int64_t>(std::atof(next()) * 1e6);
    else if (a == "--no-walks") c.walk_estimates = false;
    else if (a == "--real-crypto") c.real_crypto = true;
    else if (a == "--verbose") c.verbose = true;
    else {
      Usage();
      return 2;
    }
  }
  if (!ringpeer::wire::InitCrypto()) return 1;
  const auto start = std::chrono::steady_clock::now();
  const int64_t heap_before = g_heap_bytes.load();
  ringpeer::sim::Simulator sim(c);
  ringpeer::sim::SimReport r = sim.Run();
  // Everything the simulation holds now (nodes, pending datagrams, bookkeeping), per node.
  r.bytes_per_node = static_cast<double>(g_heap_bytes.load() - heap_before) / sim.size();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s", r.Text().c_str());
  std::printf("wall %.1f s; replay with --seed %llu\n", wall,
              static_cast<unsigned long long>(c.seed));
  std::printf("%s\n", r.KeyValues().c_str());
  return 0;
}
