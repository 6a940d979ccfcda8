#include "base/seen_set.h"

#include <gtest/gtest.h>

namespace ringpeer::base {
namespace {

TEST(SeenSet, RemembersRecentIdsInBoundedMemory) {
  base::SeenSet s(64);
  for (uint64_t i = 1; i <= 64; ++i) EXPECT_TRUE(s.Insert(i));
  for (uint64_t i = 1; i <= 64; ++i) EXPECT_FALSE(s.Insert(i));  // all still remembered
  for (uint64_t i = 1000; i < 1000 + 10 * 64; ++i) s.Insert(i);
  // Only the last generations are remembered: the oldest ids are forgotten.
  EXPECT_FALSE(s.Contains(1));
  EXPECT_TRUE(s.Contains(1000 + 10 * 64 - 1));
  size_t remembered = 0;
  for (uint64_t i = 1000; i < 1000 + 10 * 64; ++i) remembered += s.Contains(i);
  EXPECT_GE(remembered, 64u);
  EXPECT_LE(remembered, 128u);
}

}  // namespace
}  // namespace ringpeer::base
