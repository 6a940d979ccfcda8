// Goal: the SPSC ring never loses, duplicates or reorders an item, never blocks, and
// reports full instead. Method: single-thread edge cases, then a producer and a consumer
// thread pushing a numbered stream in random batch sizes; run under ThreadSanitizer by
// the test command (the tsan build), which checks the memory orders.
#include "node/shard/spsc_ring.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

namespace ringpeer::shard {
namespace {

struct Item {
  uint64_t seq;
  uint64_t check;
};

TEST(SpscRing, FullAndEmpty) {
  SpscRing<Item> r(4);
  EXPECT_EQ(r.Front(), nullptr);
  for (uint64_t i = 0; i < 4; ++i) {
    Item* s = r.BeginPush();
    ASSERT_NE(s, nullptr);
    *s = {i, ~i};
    r.CommitPush();
  }
  EXPECT_EQ(r.BeginPush(), nullptr);  // full: the caller drops and counts
  EXPECT_EQ(r.Front(), nullptr);      // nothing published yet
  EXPECT_EQ(r.Publish(), 4u);
  EXPECT_EQ(r.Depth(), 4u);
  for (uint64_t i = 0; i < 4; ++i) {
    Item* f = r.Front();
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->seq, i);
    r.Pop();
  }
  EXPECT_EQ(r.Front(), nullptr);
  EXPECT_EQ(r.BeginPush(), nullptr);  // still full until the consumer releases
  r.Release();
  EXPECT_NE(r.BeginPush(), nullptr);
}

TEST(SpscRing, TwoThreadsStreamInOrder) {
  constexpr uint64_t kItems = 2'000'000;
  SpscRing<Item> r(1024);
  std::atomic<uint64_t> full_count{0};
  std::thread producer([&] {
    std::mt19937 rng(1);
    uint64_t next = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (next < kItems && std::chrono::steady_clock::now() < deadline) {
      const uint32_t batch = 1 + rng() % 64;
      for (uint32_t b = 0; b < batch && next < kItems; ++b) {
        Item* s = r.BeginPush();
        if (s == nullptr) {
          full_count.fetch_add(1, std::memory_order_relaxed);
          break;  // never wait on a full ring: publish what we have and retry
        }
        *s = {next, next * 0x9E3779B97F4A7C15ull};
        r.CommitPush();
        ++next;
      }
      r.Publish();
    }
  });
  uint64_t expected = 0;
  bool ok = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (expected < kItems && std::chrono::steady_clock::now() < deadline) {
    for (int k = 0; k < 128; ++k) {
      Item* f = r.Front();
      if (f == nullptr) break;
      if (f->seq != expected || f->check != expected * 0x9E3779B97F4A7C15ull) ok = false;
      ++expected;
      r.Pop();
    }
    r.Release();
  }
  producer.join();
  EXPECT_TRUE(ok);
  EXPECT_EQ(expected, kItems);
  EXPECT_EQ(r.Depth(), 0u);
}

}  // namespace
}  // namespace ringpeer::shard
