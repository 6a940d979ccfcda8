// A relay's room takes nothing from the heap while its log grows (issue 15:
// allocs_per_update = 0). This binary counts every operator new made while a flag is set;
// the log's record chunks and index/order arrays come from base::BlockPool instead.
//
// Without the pool (BlockPool::SetGlobalSpace(0) before the first room) the same run
// counts 42 heap blocks: 64 KiB record chunks and the arrays doubling.
//
// Its own binary: replacing operator new is process-wide. Not in sanitizer builds (their
// allocator is the hook).
#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "base/block_pool.h"
#include "base/sanitizers.h"
#include "gtest/gtest.h"
#include "node/room/room.h"
#include "node/room/test_util.h"

#define RP_ROOM_ALLOC_HOOK (!RINGPEER_SANITIZED)

namespace {
thread_local bool t_counting = false;
std::atomic<uint64_t> g_counted{0};
}  // namespace

#if RP_ROOM_ALLOC_HOOK
void* operator new(size_t n) {
  if (t_counting) g_counted.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  std::abort();
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  if (t_counting) g_counted.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void* operator new(size_t n, std::align_val_t a) {
  if (t_counting) g_counted.fetch_add(1, std::memory_order_relaxed);
  void* p = nullptr;
  const size_t al = std::max(static_cast<size_t>(a), sizeof(void*));
  if (posix_memalign(&p, al, n == 0 ? 1 : n) != 0) std::abort();
  return p;
}
void* operator new[](size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { std::free(p); }
#endif

namespace ringpeer::room {
namespace {

using testing::RoomFixture;

TEST(RoomAlloc, ARelaysGrowingLogTakesNothingFromTheHeap) {
  if (!RP_ROOM_ALLOC_HOOK) GTEST_SKIP() << "sanitizer build: no allocation hook";
  constexpr int kUpdates = 6000;
  constexpr int kWarm = 1500;  // the log's arrays pass 4 KiB long before this
  RoomFixture f(77, ReducerKind::kChat, kStateBytesMaxDefault, 1);
  auto writer = f.Open(&f.members[0]);
  std::vector<std::vector<uint8_t>> records;
  records.reserve(kUpdates);
  for (int i = 0; i < kUpdates; ++i) {
    auto rec = writer->Write(
        ChatPayload(ChatOp::kMessage, f.members[0].public_key,
                    "message " + std::to_string(i) + std::string(200, 'x')),
        f.random);
    ASSERT_TRUE(rec.ok()) << rec.status();
    records.push_back(std::move(*rec));
  }
  auto relay = f.Open(nullptr);
  const uint64_t takes0 = base::BlockPool::Global().stats().takes;
  for (int i = 0; i < kUpdates; ++i) {
    if (i == kWarm) g_counted.store(0);
    t_counting = i >= kWarm;
    const Verdict v = relay->Receive(records[static_cast<size_t>(i)]);
    t_counting = false;
    ASSERT_EQ(v, Verdict::kOk) << i;
  }
  const uint64_t counted = g_counted.load();
  EXPECT_EQ(counted, 0u) << "heap blocks taken while the log grew from " << kWarm << " to "
                         << kUpdates << " updates";
  // The log did grow, into the pool: chunks and arrays were taken from it.
  EXPECT_GT(base::BlockPool::Global().stats().takes, takes0 + 20);
  EXPECT_EQ(base::BlockPool::Global().stats().fallbacks, 0u);
  EXPECT_EQ(relay->log_size(), static_cast<size_t>(kUpdates));
  EXPECT_EQ(relay->state_hash(), writer->state_hash());
}

}  // namespace
}  // namespace ringpeer::room
