// ringpeer-bench-page-populate: what memory touched for the first time costs (issue 15: a
// room's first join writes megabytes of fresh memory: the fetched checkpoint, its
// plaintext), and what base/huge_pages.h buys back.
//
// Each round maps a fresh anonymous region of --mib MiB and writes it whole (memset), in
// four ways, alternating:
//   plain:          4 KiB pages, each faulted in by the write;
//   populate:       madvise(MADV_POPULATE_WRITE) first (one call maps every page);
//   huge:           madvise(MADV_HUGEPAGE) first (transparent huge pages in "madvise" mode);
//   huge_populate:  both, as base::ReserveHuge does.
// The figure is the wall time from the advice to the end of the write, median over
// --rounds rounds. On a VM whose page faults are dear (a trap each, and the host's own
// mapping on first touch) plain is the slow one.
//
// Usage: ringpeer-bench-page-populate [--mib M] [--rounds R]
// Last line: plain_ms= populate_ms= huge_ms= huge_populate_ms= populate_over_plain=
//            huge_populate_over_plain= (key=value).
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/kernel_bench.h"

namespace {

using ringpeer::bench::Median;

using Clock = std::chrono::steady_clock;

double WriteFresh(size_t bytes, bool populate, bool huge) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  const auto t0 = Clock::now();
  if (huge) (void)madvise(p, bytes, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
  if (populate) (void)madvise(p, bytes, MADV_POPULATE_WRITE);
#endif
  std::memset(p, 1, bytes);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  munmap(p, bytes);
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 5;
  int rounds = 9;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mib" && i + 1 < argc) {
      mib = static_cast<size_t>(std::max(1, std::atoi(argv[++i])));
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--mib M] [--rounds R]\n", argv[0]);
      return 2;
    }
  }
  const size_t bytes = mib << 20;
  std::vector<double> plain, populate, huge, both;
  for (int r = 0; r < rounds; ++r) {
    plain.push_back(WriteFresh(bytes, false, false));
    populate.push_back(WriteFresh(bytes, true, false));
    huge.push_back(WriteFresh(bytes, false, true));
    both.push_back(WriteFresh(bytes, true, true));
  }
  const double p = Median(plain), q = Median(populate), h = Median(huge), b = Median(both);
  std::printf("%zu MiB written fresh, median of %d: plain %.2f ms, populated %.2f ms, huge "
              "%.2f ms, huge and populated %.2f ms\n",
              mib, rounds, p, q, h, b);
  std::printf("plain_ms=%.2f populate_ms=%.2f huge_ms=%.2f huge_populate_ms=%.2f "
              "populate_over_plain=%.2f huge_populate_over_plain=%.2f\n",
              p, q, h, b, q / p, b / p);
  return 0;
}
