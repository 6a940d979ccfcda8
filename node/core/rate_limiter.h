// RateLimiter: a token bucket per source address, in a fixed 4-way set-associative table.
//
// The first line of flow control (DESIGN.md section 7): every datagram is charged to its
// source address (port ignored: a host cannot dodge the limit by changing ports) before
// the FlatBuffers Verifier runs. The table never grows: a new address evicts the least
// recently used of the four entries in its set, so an attacker spraying addresses can
// reset buckets only by also spending the packets to do so. Shard-local; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>

#include "base/assert.h"
#include "base/endpoint.h"
#include "base/token_bucket.h"

namespace ringpeer::core {

class RateLimiter {
 public:
  // entries: table size (power of two, >= 4); rate_per_s/burst: per-address limits.
  RateLimiter(uint32_t entries, uint32_t rate_per_s, uint32_t burst)
      : sets_mask_(entries / kWays - 1), rate_per_s_(rate_per_s), burst_(burst),
        entries_(std::make_unique<Entry[]>(entries)) {
    RP_ASSERT(entries >= kWays);
    RP_ASSERT((entries & (entries - 1)) == 0);
  }
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // Allow: charges one datagram to `from`'s address. False: over the limit, drop it.
  bool Allow(const base::Endpoint& from, int64_t now_us) noexcept {
    const uint64_t key = from.HashAddressOnly() | 1;  // 0 marks an empty entry
    Entry* set = &entries_[(key & sets_mask_) * kWays];
    Entry* victim = &set[0];
    for (uint32_t w = 0; w < kWays; ++w) {
      Entry& e = set[w];
      if (e.key == key) {
        e.last_us = now_us;
        return e.bucket.TryTake(now_us);
      }
      if (e.last_us < victim->last_us) victim = &e;
    }
    victim->key = key;
    victim->last_us = now_us;
    victim->bucket = base::TokenBucket(rate_per_s_, burst_, now_us);
    return victim->bucket.TryTake(now_us);
  }

 private:
  static constexpr uint32_t kWays = 4;
  struct Entry {
    uint64_t key = 0;
    int64_t last_us = INT64_MIN;
    base::TokenBucket bucket;
  };
  const uint64_t sets_mask_;
  const uint32_t rate_per_s_;
  const uint32_t burst_;
  std::unique_ptr<Entry[]> entries_;
};

}  // namespace ringpeer::core
