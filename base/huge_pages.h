// Huge pages for the few large buffers a node fills at once (a joined room's checkpoint:
// its fetched bytes, its plaintext, a copy of its blob where one is made, the store's
// staging).
//
// A page fault costs ~12 us of CPU on the VMs we measured, and a 5 MB buffer touched for
// the first time takes ~1,250 of them: a room's first join paid ~60 ms in faults for
// ~5 MB of checkpoint (bench/README.md). Advised with MADV_HUGEPAGE (transparent huge
// pages in "madvise" mode, the usual default), each aligned 2 MiB of it is one fault.
// Where the kernel has no THP, or it is off, the advice fails and nothing changes.
//
// What stays in 4 KiB pages (a block's unaligned head and tail, or all of it where no huge
// page was free) is populated in one call (MADV_POPULATE_WRITE, Linux 5.14) rather than
// fault by fault. `ringpeer-bench-page-populate` (5 MiB mapped fresh, then written whole;
// medians of 9, two runs, this VM): 13.7 / 13.5 ms in 4 KiB pages, 7.4 / 7.0 populated
// first (x0.54 / x0.52); advised huge 2.9 / 8.0, huge and populated 1.6 / 3.9 (x0.12 /
// x0.29). The kernel still counts each page it maps as a minor fault. An older kernel
// refuses the advice and the pages fault in as before.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>

namespace ringpeer::base {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// AdviseHugePages: asks for huge pages over the pages of [p, p + bytes), for a region of
// at least 2 MiB. Call it before the memory is first written. The kernel backs with a
// huge page only each 2 MiB-aligned stretch that the advice covers whole; malloc's large
// blocks are not 2 MiB-aligned (Linux 6.18 aligns a fresh mapping only when its length
// is a multiple of 2 MiB), so the block's head and tail stay in 4 KiB pages (measured:
// a first join's faults 5,046 -> 3,514 over four such buffers). Advice is not content: a
// page shared with another block is unharmed.
inline void AdviseHugePages(void* p, size_t bytes) noexcept {
  if (bytes < kHugePageBytes) return;
  constexpr uintptr_t kPage = 4096;
  const auto begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t first = begin & ~(kPage - 1);
  const uintptr_t last = (begin + bytes + kPage - 1) & ~(kPage - 1);
  (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
}

// PopulatePages: maps, writable, the whole pages inside [p, p + bytes) now, in one call,
// for a region of at least 2 MiB that is about to be written. The pages at its ends that
// it may share with other blocks are left to fault (never content: populating a mapped
// page changes nothing, but they need no help).
inline void PopulatePages(void* p, size_t bytes) noexcept {
  if (bytes < kHugePageBytes) return;
  constexpr uintptr_t kPage = 4096;
  const auto begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t first = (begin + kPage - 1) & ~(kPage - 1);
  const uintptr_t last = (begin + bytes) & ~(kPage - 1);
#ifdef MADV_POPULATE_WRITE
  if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE);
#endif
}

// ReserveHuge: makes room for n elements (growing geometrically, as push_back would),
// advised as above when that allocated, and its first n elements' pages populated; for
// vectors of bytes about to be filled (resize, assign, insert). A vector with room for n
// already is left as it is.
template <typename Vector>
void ReserveHuge(Vector& v, size_t n) {
  if (v.capacity() >= n) return;
  v.reserve(n > 2 * v.capacity() ? n : 2 * v.capacity());
  AdviseHugePages(v.data(), v.capacity() * sizeof(*v.data()));
  PopulatePages(v.data(), n * sizeof(*v.data()));
}

}  // namespace ringpeer::base
