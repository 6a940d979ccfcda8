#include "base/block_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"

namespace ringpeer::base {
namespace {

constexpr size_t kKiB = 1024;

TEST(BlockPool, SizeClassesArePowersOfTwoFrom4KiBTo1GiB) {
  EXPECT_EQ(BlockPool::ClassOf(1), 0);
  EXPECT_EQ(BlockPool::ClassOf(4096), 0);
  EXPECT_EQ(BlockPool::ClassOf(4097), 1);
  EXPECT_EQ(BlockPool::ClassOf(8192), 1);
  EXPECT_EQ(BlockPool::ClassOf(size_t{1} << 30), BlockPool::kClasses - 1);
  EXPECT_EQ(BlockPool::ClassOf((size_t{1} << 30) + 1), -1);
  EXPECT_EQ(BlockPool::ClassBytes(BlockPool::ClassOf(5000)), 8192u);
}

TEST(BlockPool, AFreedBlockIsTheNextOneOfItsSize) {
  BlockPool pool(1024 * kKiB);
  void* a = pool.Take(5000);
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(pool.Owns(a));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 4096, 0u);
  std::memset(a, 0xab, 5000);
  void* small = pool.Take(100);  // another class: not a
  ASSERT_NE(small, nullptr);
  EXPECT_NE(small, a);
  EXPECT_TRUE(pool.Give(a, 5000));
  void* b = pool.Take(8192);  // same class (8 KiB)
  EXPECT_EQ(b, a);
  const BlockPool::Stats s = pool.stats();
  EXPECT_EQ(s.takes, 3u);
  EXPECT_EQ(s.reuses, 1u);
  EXPECT_EQ(s.gives, 1u);
  EXPECT_EQ(s.carved, 8192u + 4096u);  // the reuse carved nothing
  EXPECT_EQ(s.fallbacks, 0u);
  EXPECT_TRUE(pool.Give(b, 8192));
  EXPECT_TRUE(pool.Give(small, 100));
}

TEST(BlockPool, AUsedUpRangeRefusesAndCountsIt) {
  BlockPool pool(64 * kKiB);
  std::vector<void*> held;
  for (int i = 0; i < 16; ++i) {
    void* p = pool.Take(4096);
    ASSERT_NE(p, nullptr) << i;
    held.push_back(p);
  }
  EXPECT_EQ(pool.Take(4096), nullptr);
  EXPECT_EQ(pool.Take(size_t{2} << 30), nullptr);  // over the largest class
  EXPECT_EQ(pool.stats().fallbacks, 2u);
  ASSERT_TRUE(pool.Give(held.back(), 4096));
  EXPECT_EQ(pool.Take(4096), held.back());  // a freed block serves again
  // A block larger than what is left is refused even though smaller ones remain free.
  ASSERT_TRUE(pool.Give(held[0], 4096));
  EXPECT_EQ(pool.Take(8192), nullptr);
  EXPECT_EQ(pool.Take(4096), held[0]);
}

TEST(BlockPool, SpaceZeroReservesNothingAndEveryTakeFallsBack) {
  BlockPool pool(0);
  EXPECT_EQ(pool.Take(4096), nullptr);
  int local = 0;
  EXPECT_FALSE(pool.Owns(&local));
  EXPECT_EQ(pool.stats().space, 0u);
  EXPECT_EQ(pool.stats().fallbacks, 1u);
}

TEST(BlockPool, APointerFromElsewhereIsNotTakenBack) {
  BlockPool pool(64 * kKiB);
  std::vector<uint8_t> heap(8192);
  EXPECT_FALSE(pool.Give(heap.data(), heap.size()));
  EXPECT_EQ(pool.stats().gives, 0u);
}

// A freed large block's pages go back to the kernel, as the heap's large blocks do, so a
// vector that doubled does not keep its old buffer resident.
TEST(BlockPool, ALargeFreedBlockGivesItsPagesBack) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  BlockPool pool(8 * 1024 * kKiB);
  const size_t bytes = 1024 * kKiB;
  auto* p = static_cast<uint8_t*>(pool.Take(bytes));
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, bytes);
  auto resident = [&] {
    std::vector<unsigned char> v(bytes / page);
    EXPECT_EQ(mincore(p, bytes, v.data()), 0);
    size_t n = 0;
    for (unsigned char c : v) n += c & 1;
    return n;
  };
  EXPECT_EQ(resident(), bytes / page);
  ASSERT_TRUE(pool.Give(p, bytes));
  EXPECT_EQ(resident(), 0u);
  // Small blocks keep their pages while their list holds under kKeepResident (the next
  // ones of their size are ready), and give them back beyond it (a closed room's chunks).
  constexpr size_t kSmall = 64 * kKiB;
  constexpr size_t kKept = BlockPool::kKeepResident / kSmall;  // 8
  std::vector<uint8_t*> q;
  for (size_t i = 0; i < 2 * kKept; ++i) {
    q.push_back(static_cast<uint8_t*>(pool.Take(kSmall)));
    ASSERT_NE(q.back(), nullptr);
    std::memset(q.back(), 1, kSmall);
  }
  for (uint8_t* b : q) ASSERT_TRUE(pool.Give(b, kSmall));
  auto first_page_resident = [&](uint8_t* b) {
    unsigned char v = 0;
    EXPECT_EQ(mincore(b, page, &v), 0);
    return (v & 1) != 0;
  };
  for (size_t i = 0; i < q.size(); ++i) {
    EXPECT_EQ(first_page_resident(q[i]), i < kKept) << i;
  }
}

// Two threads take and give blocks of three sizes, each stamping the blocks it holds and
// checking the stamps before giving them back: a block handed to both at once (a broken
// free list) shows as a stamp overwritten by the other thread. Blocks freed by one thread
// are taken by the other (the lists are shared).
TEST(BlockPool, ThreadsShareTheFreeListsWithoutHandingABlockOutTwice) {
  BlockPool pool(32 * 1024 * kKiB);
  constexpr int kRounds = 20000;
  constexpr size_t kHeld = 8;
  constexpr std::array<size_t, 3> kSizes = {4096, 16 * kKiB, 64 * kKiB};
  std::atomic<int> bad{0};
  std::atomic<int> refused{0};
  auto worker = [&](uint64_t id) {
    struct Held {
      uint64_t* p = nullptr;
      size_t bytes = 0;
      uint64_t stamp = 0;
    };
    std::array<Held, kHeld> held{};
    for (int i = 0; i < kRounds; ++i) {
      Held& h = held[static_cast<size_t>(i) % kHeld];
      if (h.p != nullptr) {
        if (h.p[0] != h.stamp || h.p[h.bytes / 8 - 1] != h.stamp) bad.fetch_add(1);
        pool.Give(h.p, h.bytes);
        h.p = nullptr;
      }
      h.bytes = kSizes[(static_cast<size_t>(i) * 7 + id) % kSizes.size()];
      h.p = static_cast<uint64_t*>(pool.Take(h.bytes));
      if (h.p == nullptr) {
        refused.fetch_add(1);
        continue;
      }
      h.stamp = (id << 32) | static_cast<uint64_t>(i);
      h.p[0] = h.stamp;
      h.p[h.bytes / 8 - 1] = h.stamp;
    }
    for (Held& h : held) {
      if (h.p == nullptr) continue;
      if (h.p[0] != h.stamp || h.p[h.bytes / 8 - 1] != h.stamp) bad.fetch_add(1);
      pool.Give(h.p, h.bytes);
    }
  };
  std::thread a(worker, 1), b(worker, 2);
  a.join();
  b.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(refused.load(), 0);
  const BlockPool::Stats s = pool.stats();
  EXPECT_EQ(s.takes, s.gives);
  EXPECT_EQ(s.takes, 2u * kRounds);
  // 16 blocks at most are held at once, so nearly every take is a reuse.
  EXPECT_GE(s.reuses, s.takes - 2 * kHeld * kSizes.size());
  EXPECT_LE(s.carved, 2 * kHeld * 64 * kKiB);
}

TEST(PoolAllocator, SmallBuffersStayOnTheHeapLargeOnesComeFromThePool) {
  PoolVector<uint64_t> v;
  v.reserve(16);  // 128 bytes
  EXPECT_FALSE(BlockPool::Global().Owns(v.data()));
  const uint64_t takes0 = BlockPool::Global().stats().takes;
  v.reserve(1024);  // 8 KiB
  EXPECT_TRUE(BlockPool::Global().Owns(v.data()));
  for (uint64_t i = 0; i < 1024; ++i) v.push_back(i);
  v.push_back(1024);  // doubles inside the pool
  EXPECT_TRUE(BlockPool::Global().Owns(v.data()));
  EXPECT_EQ(v[1000], 1000u);
  absl::flat_hash_map<uint64_t, uint64_t, absl::Hash<uint64_t>, std::equal_to<uint64_t>,
                      PoolAllocator<std::pair<const uint64_t, uint64_t>>>
      m;
  for (uint64_t i = 0; i < 5000; ++i) m[i] = i * 3;
  EXPECT_EQ(m.at(4321), 4321u * 3);
  EXPECT_GE(BlockPool::Global().stats().takes, takes0 + 3);
  // The global pool's range is fixed by its first use.
  EXPECT_FALSE(BlockPool::SetGlobalSpace(4096));
}

#if RINGPEER_ASAN
TEST(BlockPoolDeathTest, ABlockUsedAfterItWasGivenBackIsReported) {
  BlockPool pool(64 * kKiB);
  auto* p = static_cast<volatile uint8_t*>(pool.Take(4096));
  ASSERT_NE(p, nullptr);
  p[100] = 1;
  ASSERT_TRUE(pool.Give(const_cast<uint8_t*>(p), 4096));
  EXPECT_DEATH(p[100] = 2, "use-after-poison");
}

TEST(BlockPoolDeathTest, WritingPastTheBytesAskedForIsReported) {
  BlockPool pool(64 * kKiB);
  auto* p = static_cast<volatile uint8_t*>(pool.Take(5000));  // an 8 KiB block
  ASSERT_NE(p, nullptr);
  p[4999] = 1;
  EXPECT_DEATH(p[5100] = 2, "use-after-poison");
}
#endif

}  // namespace
}  // namespace ringpeer::base
