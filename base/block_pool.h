// BlockPool: memory for what grows with a room's log (its records' chunks, its index and
// order arrays, the store's id map), taken from one address range reserved at start.
//
// Why (issue 15, `allocs_per_update`): a relay whose log grows took a heap block about
// once per 200 updates: a new 64 KiB record chunk, or a container doubling. The rest of
// the relay path takes nothing from the heap in steady state; these are the log's own
// growth. Here they come from a pool sized at start, as dht/ and ring/ size theirs.
//
// How. The range is reserved once (mmap, MAP_NORESERVE): it is address space, and a page
// of it takes memory only when first written, as a fresh heap page would. Blocks are
// powers of two from 4 KiB to 1 GiB. A freed block goes on its size's free list and is the
// next one of that size handed out; the range is carved front to back only when the list
// is empty. The free lists are lock-free stacks (Treiber) whose links live in a side
// table, one 32-bit word per 4 KiB of range, not in the blocks; each head carries a tag
// against ABA. So a block may be freed on any thread, a block's bytes are never touched
// by the pool, and under ASan a freed block is poisoned whole. A freed block of 256 KiB or
// more gives its pages back (MADV_DONTNEED), as the heap unmaps its large blocks, so a
// vector that doubled does not keep its old buffer resident; a smaller one keeps them
// while its list holds under 512 KiB (the next few of its size are ready), and gives them
// back beyond (a closed room's chunks). Nothing is unmapped. Rounding up to a power of
// two costs address space, not memory: a block's tail past what was asked for is never
// written (a room's held-bytes estimate counts what was asked for).
//
// When the range is used up, could not be reserved (space 0, or the kernel refused), or a
// block is over 1 GiB, Take returns nullptr and the caller uses the heap: counted
// (`fallbacks`), never an error. The node's `--room-log-space` sets the global pool's range
// (default 16 GiB of address space); the simulators set 0 so that their per-node heap
// accounting sees every byte.
//
// PoolAllocator: an STL allocator over the global pool for blocks of 4 KiB or more (a
// quiet room's small containers stay on the heap: they are taken once, when the room
// opens, not per update).
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#include "base/assert.h"
#include "base/sanitizers.h"

#if RINGPEER_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#endif

namespace ringpeer::base {

class BlockPool {
 public:
  static constexpr int kMinShift = 12;
  static constexpr int kMaxShift = 30;
  static constexpr int kClasses = kMaxShift - kMinShift + 1;
  static constexpr size_t kMinBlock = size_t{1} << kMinShift;
  static constexpr size_t kMaxBlock = size_t{1} << kMaxShift;
  static constexpr size_t kReleaseFrom = size_t{256} << 10;  // freed: pages given back
  // Freed blocks below kReleaseFrom keep their pages while their size's list holds less
  // than this; beyond it they give them back too (a closed room's log is not kept
  // resident for its size alone: the heap could have reused it for anything).
  static constexpr size_t kKeepResident = size_t{512} << 10;
  static constexpr uint64_t kDefaultSpace = uint64_t{16} << 30;
  // Links hold page + 1 in 32 bits (0: none), so the range has fewer than 2^32 pages.
  static constexpr uint64_t kMaxSpace = (uint64_t{1} << 44) - kMinBlock;

  struct Stats {
    uint64_t space = 0;      // bytes of range reserved (0: none; every Take falls back)
    uint64_t carved = 0;     // bytes of it handed out at least once
    uint64_t takes = 0;      // blocks handed out
    uint64_t reuses = 0;     // of those, from a free list
    uint64_t fallbacks = 0;  // Takes refused (range used up, none, or block too large)
    uint64_t gives = 0;      // blocks freed back
  };

  // A pool over `space` bytes of fresh address space (rounded down to whole 4 KiB pages,
  // at most kMaxSpace); 0 reserves nothing.
  explicit BlockPool(uint64_t space) noexcept {
    space = std::min(space, kMaxSpace) & ~uint64_t{kMinBlock - 1};
    if (space == 0) return;
    const size_t pages = space >> kMinShift;
    void* range = mmap(nullptr, space, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (range == MAP_FAILED) return;
    void* links = mmap(nullptr, pages * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (links == MAP_FAILED) {
      munmap(range, space);
      return;
    }
    // Small blocks share 2 MiB stretches: a transparent huge page under one 4 KiB block
    // would make it resident 512 times over (THP "always").
    (void)madvise(range, space, MADV_NOHUGEPAGE);
    base_ = static_cast<uint8_t*>(range);
    next_ = static_cast<uint32_t*>(links);
    space_ = space;
  }
  ~BlockPool() {
    if (base_ == nullptr) return;
#if RINGPEER_ASAN
    __asan_unpoison_memory_region(base_, carved_.load());  // only carved blocks were poisoned
    for (uint64_t at = 0, end = roots_.load(); at < end;) {
      const uint64_t to = std::min(space_, at + kRootStep);
      __lsan_unregister_root_region(base_ + at, to - at);
      at = to;
    }
#endif
    munmap(base_, space_);
    munmap(next_, (space_ >> kMinShift) * sizeof(uint32_t));
  }
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // ClassOf: the size class of a block of `bytes` (0 for 4 KiB and less), or -1 above 1 GiB.
  static constexpr int ClassOf(size_t bytes) noexcept {
    if (bytes <= kMinBlock) return 0;
    if (bytes > kMaxBlock) return -1;
    return std::bit_width(bytes - 1) - kMinShift;
  }
  static constexpr size_t ClassBytes(int c) noexcept { return kMinBlock << c; }

  // Take: a block of at least `bytes`, 4 KiB-aligned, or nullptr (see above). Thread-safe.
  void* Take(size_t bytes) noexcept {
    const int c = ClassOf(bytes);
    if (c < 0 || base_ == nullptr) return Refuse();
    const size_t size = ClassBytes(c);
    uint8_t* p = Pop(c);
    if (p != nullptr) {
      reuses_.fetch_add(1, std::memory_order_relaxed);
    } else {
      uint64_t at = carved_.load(std::memory_order_relaxed);
      do {
        if (at + size > space_) return Refuse();
      } while (!carved_.compare_exchange_weak(at, at + size, std::memory_order_relaxed));
      p = base_ + at;
#if RINGPEER_ASAN
      __asan_poison_memory_region(p, size);  // fresh: what the caller did not ask for
      RegisterRoots(at + size);
#endif
    }
    takes_.fetch_add(1, std::memory_order_relaxed);
#if RINGPEER_ASAN
    __asan_unpoison_memory_region(p, bytes);  // the rest of the block stays poisoned
#endif
    return p;
  }

  // Give: `p`, taken with the same `bytes`, back to the pool; false (nothing done) when
  // `p` is not from this pool's range (the caller's heap fallback). Thread-safe.
  bool Give(void* p, size_t bytes) noexcept {
    if (!Owns(p)) return false;
    const int c = ClassOf(bytes);
    // A size no Take could have served, or a pointer inside a block, would put a block on
    // the wrong list and later hand out overlapping ones.
    RP_ASSERT(c >= 0 && ((static_cast<uint8_t*>(p) - base_) & (kMinBlock - 1)) == 0);
    const size_t size = ClassBytes(c);
#if RINGPEER_ASAN
    __asan_poison_memory_region(p, size);
#endif
    const uint64_t listed = listed_[c].fetch_add(1, std::memory_order_relaxed);
    if (size >= kReleaseFrom || listed * size >= kKeepResident) {
      (void)madvise(p, size, MADV_DONTNEED);
    }
    Push(c, static_cast<uint32_t>((static_cast<uint8_t*>(p) - base_) >> kMinShift));
    gives_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  bool Owns(const void* p) const noexcept {
    const auto* b = static_cast<const uint8_t*>(p);
    return base_ != nullptr && b >= base_ && b < base_ + space_;
  }

  Stats stats() const noexcept {
    Stats s;
    s.space = space_;
    s.carved = carved_.load(std::memory_order_relaxed);
    s.takes = takes_.load(std::memory_order_relaxed);
    s.reuses = reuses_.load(std::memory_order_relaxed);
    s.fallbacks = fallbacks_.load(std::memory_order_relaxed);
    s.gives = gives_.load(std::memory_order_relaxed);
    return s;
  }

  // Global: the process's pool, reserved at its first use with the space last set by
  // SetGlobalSpace (kDefaultSpace if none). Never destroyed: blocks may come back from
  // static destructors.
  static BlockPool& Global() noexcept {
    static BlockPool* const pool = [] {
      global_used_.store(true, std::memory_order_relaxed);
      return new BlockPool(global_space_.load(std::memory_order_relaxed));
    }();
    return *pool;
  }
  // SetGlobalSpace: before the first Global(), on the main thread before it starts any
  // other (the check and the store are not one step); false (nothing changed) after it.
  static bool SetGlobalSpace(uint64_t space) noexcept {
    if (global_used_.load(std::memory_order_relaxed)) return false;
    global_space_.store(space, std::memory_order_relaxed);
    return true;
  }

 private:
  static constexpr uint32_t kEnd = 0;  // links and heads hold page index + 1

#if RINGPEER_ASAN
  // LeakSanitizer does not scan mapped memory for pointers: heap blocks referenced only
  // from pool blocks (an entry's parents once there are more than two) would read as
  // leaked. The carved part of the range is registered as a root, 64 MiB at a time
  // (registering all 16 GiB would make it read every page).
  static constexpr uint64_t kRootStep = uint64_t{64} << 20;  // one region per step
  void RegisterRoots(uint64_t carved) noexcept {
    uint64_t done = roots_.load(std::memory_order_relaxed);
    while (done < carved) {
      const uint64_t to = std::min(space_, done + kRootStep);  // the destructor unregisters
      if (roots_.compare_exchange_weak(done, to, std::memory_order_relaxed)) {
        __lsan_register_root_region(base_ + done, to - done);
        done = to;
      }
    }
  }
  std::atomic<uint64_t> roots_{0};
#endif

  void* Refuse() noexcept {
    fallbacks_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }

  // Heads: (tag << 32) | (page + 1); the tag changes with every successful update, so a
  // pop that read a link, lost the block to another pop and saw it pushed back fails its CAS.
  uint8_t* Pop(int c) noexcept {
    uint64_t h = heads_[c].load(std::memory_order_acquire);
    while (static_cast<uint32_t>(h) != kEnd) {
      const uint32_t page = static_cast<uint32_t>(h) - 1;
      const uint32_t link = std::atomic_ref<uint32_t>(next_[page]).load(std::memory_order_relaxed);
      const uint64_t nh = (((h >> 32) + 1) << 32) | link;
      if (heads_[c].compare_exchange_weak(h, nh, std::memory_order_acquire,
                                          std::memory_order_acquire)) {
        listed_[c].fetch_sub(1, std::memory_order_relaxed);
        return base_ + (uint64_t{page} << kMinShift);
      }
    }
    return nullptr;
  }
  void Push(int c, uint32_t page) noexcept {
    uint64_t h = heads_[c].load(std::memory_order_relaxed);
    uint64_t nh;
    do {
      std::atomic_ref<uint32_t>(next_[page]).store(static_cast<uint32_t>(h),
                                                   std::memory_order_relaxed);
      nh = (((h >> 32) + 1) << 32) | (page + 1);
    } while (!heads_[c].compare_exchange_weak(h, nh, std::memory_order_release,
                                              std::memory_order_relaxed));
  }

  uint8_t* base_ = nullptr;
  uint32_t* next_ = nullptr;  // link of each free block, by its first page
  uint64_t space_ = 0;
  std::atomic<uint64_t> carved_{0};
  std::atomic<uint64_t> heads_[kClasses] = {};
  std::atomic<uint64_t> listed_[kClasses] = {};  // blocks on each list (counted before a push)
  std::atomic<uint64_t> takes_{0};
  std::atomic<uint64_t> reuses_{0};
  std::atomic<uint64_t> fallbacks_{0};
  std::atomic<uint64_t> gives_{0};

  static inline std::atomic<uint64_t> global_space_{kDefaultSpace};
  static inline std::atomic<bool> global_used_{false};
};

// TakeBlock / GiveBlock: a block from the global pool, else from the heap (16-aligned);
// GiveBlock returns either kind.
inline void* TakeBlock(size_t bytes) {
  if (bytes >= BlockPool::kMinBlock) {
    if (void* p = BlockPool::Global().Take(bytes)) return p;
  }
  return ::operator new(bytes);
}
inline void GiveBlock(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes >= BlockPool::kMinBlock && BlockPool::Global().Give(p, bytes)) return;
  ::operator delete(p);
}

template <typename T>
class PoolAllocator {
 public:
  using value_type = T;
  static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);

  PoolAllocator() noexcept = default;
  template <typename U>
  PoolAllocator(const PoolAllocator<U>&) noexcept {}  // NOLINT: rebinding

  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) std::abort();  // no exceptions; vector checks max_size first
    return static_cast<T*>(TakeBlock(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { GiveBlock(p, n * sizeof(T)); }

  template <typename U>
  bool operator==(const PoolAllocator<U>&) const noexcept {
    return true;
  }
};

template <typename T>
using PoolVector = std::vector<T, PoolAllocator<T>>;

}  // namespace ringpeer::base
