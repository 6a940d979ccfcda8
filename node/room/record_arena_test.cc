#include "node/room/record_arena.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

namespace ringpeer::room {
namespace {

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

// Goal (issue 15): a room's records are copied once into chunks, stay readable and aligned
// where they are until freed, and a log that frees as fast as it stores reuses its chunks
// instead of asking the heap for new ones.
TEST(RecordArena, RecordsStayPutAlignedAndReadable) {
  RecordArena a;
  std::vector<RecordArena::Ref> refs;
  std::vector<std::vector<uint8_t>> want;
  for (int i = 0; i < 1000; ++i) {
    want.push_back(Pattern(100 + static_cast<size_t>(i % 300), static_cast<uint8_t>(i)));
    refs.push_back(a.Store(want.back()));
  }
  EXPECT_EQ(a.records(), 1000u);
  for (size_t i = 0; i < refs.size(); ++i) {
    ASSERT_EQ(refs[i].size(), want[i].size());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(refs[i].data()) % RecordArena::kAlign, 0u) << i;
    EXPECT_TRUE(std::equal(want[i].begin(), want[i].end(), refs[i].data())) << i;
    // Chunks are pool blocks (base/block_pool.h), not heap ones.
    EXPECT_TRUE(base::BlockPool::Global().Owns(refs[i].data())) << i;
  }
  // ~250 KB: chunks of 4, 8, 16, 32 and 64 KiB (124 KiB), then 64 KiB ones.
  EXPECT_GE(a.chunks_in_use(), 6u);
  EXPECT_LE(a.chunks_in_use(), 8u);
  for (auto& r : refs) a.Free(r);
  EXPECT_EQ(a.records(), 0u);
  EXPECT_TRUE(refs[0].empty());
  // Emptied chunks: at most kFreeChunksKept kept, plus the current one, and the two tables
  // (one pool block each once the log reached full-size chunks).
  constexpr size_t kTables = 3 * base::BlockPool::kMinBlock;  // 8 KiB and 4 KiB
  EXPECT_LE(a.bytes_held(), (RecordArena::kFreeChunksKept + 1) * RecordArena::kChunkBytes + kTables);
  RecordArena::Ref none = a.Store({});
  EXPECT_TRUE(none.empty());
  a.Free(none);  // freeing nothing is harmless
}

TEST(RecordArena, AStoreThatFreesAsFastAsItStoresReusesItsChunks) {
  RecordArena a;
  std::vector<RecordArena::Ref> window;  // the last 500 records live, as a pruned log
  const auto rec = Pattern(300, 1);
  uint64_t held_after_warmup = 0;
  for (int i = 0; i < 20000; ++i) {
    window.push_back(a.Store(rec));
    if (window.size() > 500) {
      a.Free(window.front());
      window.erase(window.begin());
    }
    if (i == 2000) held_after_warmup = a.bytes_held();
  }
  // 500 x 304 bytes live: three or four chunks in use, never more chunks than that and
  // the two kept empty.
  EXPECT_LE(a.chunks_in_use(), 4u);
  EXPECT_EQ(a.bytes_held(), held_after_warmup);  // 18,000 more records, not a byte more
  for (const auto& r : window) {
    EXPECT_TRUE(std::equal(rec.begin(), rec.end(), r.data()));
  }
}

// A relay prunes in steps: each frees a slice of the log at once (here 1,000 of 8,000-9,000
// records, 4-5 of 38-43 chunks), and the log then grows back. The empty chunks wait on the
// free list for it: after a few prunes, no chunk comes from the heap again. When the
// log shrinks for good, the chunks beyond a quarter of it go back.
TEST(RecordArena, ALogPrunedInStepsTakesItsChunksBackFromTheFreeList) {
  RecordArena a;
  std::vector<RecordArena::Ref> log;
  size_t oldest = 0;
  const auto rec = Pattern(300, 2);
  uint64_t allocations_warm = 0;
  for (int step = 0; step < 40; ++step) {
    for (int i = 0; i < 1000; ++i) log.push_back(a.Store(rec));
    if (log.size() - oldest > 8000) {
      for (int i = 0; i < 1000; ++i) a.Free(log[oldest++]);
    }
    // Warm after a few prunes (the chunks' edges fall differently in each slice, so the
    // peak may take a chunk or two more than the first time).
    if (step == 12) allocations_warm = a.chunk_allocations();
  }
  ASSERT_GT(allocations_warm, 0u);
  EXPECT_EQ(a.chunk_allocations(), allocations_warm);  // 27,000 records later
  EXPECT_LE(a.chunks_free(), a.chunks_in_use() / RecordArena::kFreeChunksShare);
  for (size_t i = oldest; i < log.size(); ++i) {
    ASSERT_TRUE(std::equal(rec.begin(), rec.end(), log[i].data())) << i;
  }
  // The log shrinks to a tenth: the free list shrinks with it.
  while (log.size() - oldest > 800) a.Free(log[oldest++]);
  EXPECT_LE(a.chunks_free(), std::max<size_t>(RecordArena::kFreeChunksKept,
                                              a.chunks_in_use() / RecordArena::kFreeChunksShare));
  EXPECT_LE(a.bytes_held(), (a.chunks_in_use() + a.chunks_free()) * RecordArena::kChunkBytes +
                                3 * base::BlockPool::kMinBlock);  // + the two tables
  while (oldest < log.size()) a.Free(log[oldest++]);
  EXPECT_EQ(a.records(), 0u);
}

TEST(RecordArena, AQuietRoomHoldsLittleAndALargeRecordGivesItsChunkBack) {
  RecordArena a;
  const auto small = Pattern(200, 3);
  EXPECT_EQ(a.bytes_held(), RecordArena::kFreeChunksKept * sizeof(uint32_t));  // the free list

  const auto big = Pattern(RecordArena::kChunkBytes + 10, 5);
  RecordArena::Ref s = a.Store(small);
  const uint64_t before = a.bytes_held();
  EXPECT_LT(before, RecordArena::kFirstChunkBytes + 256);  // a quiet room holds 4 KiB
  RecordArena::Ref b = a.Store(big);
  ASSERT_EQ(b.size(), big.size());
  EXPECT_TRUE(std::equal(big.begin(), big.end(), b.data()));
  EXPECT_GE(a.bytes_held(), before + big.size());
  a.Free(b);
  EXPECT_LT(a.bytes_held(), before + 1024);  // its chunk is gone (the chunk table may grow)
  EXPECT_TRUE(std::equal(small.begin(), small.end(), s.data()));  // untouched
  a.Free(s);
}

}  // namespace
}  // namespace ringpeer::room
