// Goal: the allocator LMDB is linked against (lmdb_alloc.h) keeps the C library's
// contracts (sizes, contents across realloc, zeroed calloc, alignment, strdup) while it
// recycles blocks per thread: a freed block of a class comes back to the next request of
// that class on the freeing thread, up to kCachedPerClass of them, large blocks are never
// kept, and a block freed twice aborts. Method: the rp_lmdb_* functions called directly;
// each test first empties the calling thread's cache for the classes it uses (other tests
// in this binary run LMDB on this thread and leave blocks there).
#include "node/store/lmdb_alloc.h"

#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/sanitizers.h"

namespace ringpeer::store::lmdb_alloc {
namespace {

// Holds kCachedPerClass blocks of `bytes`' class, so that the calling thread's cache has
// none of that class until Release().
struct Drained {
  explicit Drained(size_t bytes) {
    for (size_t i = 0; i < kCachedPerClass; ++i) held.push_back(rp_lmdb_malloc(bytes));
  }
  ~Drained() { Release(); }
  void Release() {
    for (void* p : held) rp_lmdb_free(p);
    held.clear();
  }
  std::vector<void*> held;
};

TEST(LmdbAlloc, AFreedBlockComesBackToTheNextRequestOfItsClass) {
  Drained d(100);
  const uint64_t heap0 = HeapAllocations();
  void* p = rp_lmdb_malloc(100);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u);
  std::memset(p, 0x5a, 100);
  EXPECT_EQ(HeapAllocations(), heap0 + 1);  // the class had nothing cached
  rp_lmdb_free(p);
  void* q = rp_lmdb_malloc(128);  // same class (65-128 B)
  EXPECT_EQ(q, p);
  EXPECT_EQ(HeapAllocations(), heap0 + 1);
  void* r = rp_lmdb_malloc(129);  // the next class: not the same block
  EXPECT_NE(r, p);
  rp_lmdb_free(q);
  rp_lmdb_free(r);
}

TEST(LmdbAlloc, EachClassKeepsAtMostItsShare) {
  Drained d(3000);
  std::vector<void*> blocks;
  for (size_t i = 0; i < kCachedPerClass + 2; ++i) blocks.push_back(rp_lmdb_malloc(3000));
  for (void* p : blocks) rp_lmdb_free(p);
  const uint64_t heap0 = HeapAllocations();
  for (size_t i = 0; i < kCachedPerClass + 2; ++i) blocks[i] = rp_lmdb_malloc(3000);
  EXPECT_EQ(HeapAllocations(), heap0 + 2);  // 4 came back from the cache, 2 from the heap
  for (void* p : blocks) rp_lmdb_free(p);
}

TEST(LmdbAlloc, CallocZeroesAReusedBlock) {
  Drained d(200);
  void* p = rp_lmdb_malloc(200);
  std::memset(p, 0xab, 200);
  rp_lmdb_free(p);
  auto* q = static_cast<uint8_t*>(rp_lmdb_calloc(25, 8));
  ASSERT_EQ(q, p);
  for (size_t i = 0; i < 200; ++i) ASSERT_EQ(q[i], 0) << i;
  rp_lmdb_free(q);
  auto* big = static_cast<uint8_t*>(rp_lmdb_calloc(1, 1 << 20));  // fresh from the heap
  ASSERT_NE(big, nullptr);
  for (size_t i = 0; i < (1u << 20); i += 4093) ASSERT_EQ(big[i], 0) << i;
  rp_lmdb_free(big);
  EXPECT_EQ(rp_lmdb_calloc(SIZE_MAX / 2, 4), nullptr);  // overflow
}

TEST(LmdbAlloc, ReallocKeepsTheContentsThroughClassesAndTheHeap) {
  auto fill = [](uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(i * 7 + 3);
  };
  auto same = [](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (p[i] != static_cast<uint8_t>(i * 7 + 3)) return false;
    }
    return true;
  };
  auto* p = static_cast<uint8_t*>(rp_lmdb_malloc(50));
  fill(p, 50);
  EXPECT_EQ(rp_lmdb_realloc(p, 64), p);  // room in its class: the same block
  p = static_cast<uint8_t*>(rp_lmdb_realloc(p, 5000));
  EXPECT_TRUE(same(p, 50));
  fill(p, 5000);
  p = static_cast<uint8_t*>(rp_lmdb_realloc(p, 1 << 20));  // into the heap (large)
  EXPECT_TRUE(same(p, 5000));
  fill(p, 1 << 20);
  p = static_cast<uint8_t*>(rp_lmdb_realloc(p, 300 * 1024));  // a large block shrinks
  EXPECT_TRUE(same(p, 300 * 1024));
  p = static_cast<uint8_t*>(rp_lmdb_realloc(p, 1000));  // back into a class
  EXPECT_TRUE(same(p, 1000));
  EXPECT_EQ(rp_lmdb_realloc(p, 0), nullptr);  // frees
  void* fresh = rp_lmdb_realloc(nullptr, 10);  // malloc
  EXPECT_NE(fresh, nullptr);
  rp_lmdb_free(fresh);
  rp_lmdb_free(nullptr);
}

TEST(LmdbAlloc, LargeBlocksAreNotKept) {
  const uint64_t heap0 = HeapAllocations();
  void* p = rp_lmdb_malloc(kMaxClassBytes + 1);
  rp_lmdb_free(p);
  void* q = rp_lmdb_malloc(kMaxClassBytes + 1);
  rp_lmdb_free(q);
  EXPECT_EQ(HeapAllocations(), heap0 + 2);
}

TEST(LmdbAlloc, AlignedBlocksAndStrdup) {
  void* p = nullptr;
  ASSERT_EQ(rp_lmdb_posix_memalign(&p, 4096, 10000), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 4096, 0u);
  std::memset(p, 1, 10000);
  rp_lmdb_free(p);
  ASSERT_EQ(rp_lmdb_posix_memalign(&p, 8, 100), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u);
  rp_lmdb_free(p);
  char* s = rp_lmdb_strdup("data.mdb");
  ASSERT_NE(s, nullptr);
  EXPECT_STREQ(s, "data.mdb");
  rp_lmdb_free(s);
}

TEST(LmdbAlloc, ABlockFreedOnAnotherThreadGoesToThatThreadsCache) {
  Drained d(700);
  void* p = rp_lmdb_malloc(700);
  void* taken_there = nullptr;
  std::thread other([&] {
    rp_lmdb_free(p);                      // into this thread's cache
    taken_there = rp_lmdb_malloc(1000);   // same class (513-1024 B)
    rp_lmdb_free(taken_there);            // cached here, freed at this thread's exit
  });
  other.join();
  EXPECT_EQ(taken_there, p);
  const uint64_t heap0 = HeapAllocations();
  void* here = rp_lmdb_malloc(700);  // this thread's cache has none of the class
  EXPECT_EQ(HeapAllocations(), heap0 + 1);
  rp_lmdb_free(here);
}

TEST(LmdbAllocDeathTest, ABlockFreedTwiceAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Drained d(40);
        void* p = rp_lmdb_malloc(40);
        rp_lmdb_free(p);
        rp_lmdb_free(p);
      },
      "freed twice");
}

#if RINGPEER_ASAN
// A block in a cache is poisoned: LMDB touching memory it freed is still reported.
TEST(LmdbAllocDeathTest, TouchingACachedBlockIsReportedUnderAsan) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Drained d(48);
        void* p = rp_lmdb_malloc(48);
        rp_lmdb_free(p);
        static_cast<volatile uint8_t*>(p)[8] = 1;
      },
      "use-after-poison");
}
#endif

}  // namespace
}  // namespace ringpeer::store::lmdb_alloc
