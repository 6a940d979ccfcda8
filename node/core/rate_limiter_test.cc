// Goal: the per-address limiter cuts a flood from one address, keeps serving others,
// refills with time, and ignores ports. Method: a virtual clock and a small table.
#include "node/core/rate_limiter.h"

#include <gtest/gtest.h>

#include <string>

namespace ringpeer::core {
namespace {

base::Endpoint Addr(int i, int port = 1000) {
  return *base::Endpoint::Parse("127.0." + std::to_string(i / 256) + "." +
                                std::to_string(i % 256) + ":" + std::to_string(port));
}

TEST(RateLimiter, CutsAFloodButNotOthers) {
  RateLimiter rl(1024, /*rate_per_s=*/100, /*burst=*/10);
  int64_t now = 1'000'000;
  int allowed = 0;
  for (int i = 0; i < 1000; ++i) allowed += rl.Allow(Addr(1, 1000 + i), now);  // new ports
  EXPECT_EQ(allowed, 10);  // the burst, whatever the port
  EXPECT_TRUE(rl.Allow(Addr(2), now));
  now += 100'000;  // 0.1 s refills 10 tokens
  allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += rl.Allow(Addr(1), now);
  EXPECT_EQ(allowed, 10);
}

TEST(RateLimiter, TableNeverGrowsAndEvictsOldest) {
  RateLimiter rl(16, 1, 1);
  int64_t now = 1;
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(rl.Allow(Addr(i), now + i));
  // Address 999 is recent and has spent its token; it is still tracked.
  EXPECT_FALSE(rl.Allow(Addr(999), now + 999));
}

}  // namespace
}  // namespace ringpeer::core
