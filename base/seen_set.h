// SeenSet: a bounded memory of recent 64-bit ids (routed-message and gossip loop guards).
//
// Two open-addressed generations of `capacity` ids each: inserts go to the current one;
// when it is full the older generation is wiped and the roles swap. So the set always
// remembers at least the last `capacity` ids and never more than 2 x capacity, in fixed
// memory: 2 generations x 2 x capacity slots x 8 bytes. Shard-local; not thread-safe.
#pragma once

#include <bit>
#include <cstdint>
#include <vector>

#include "base/assert.h"

namespace ringpeer::base {

class SeenSet {
 public:
  explicit SeenSet(uint32_t capacity)
      : capacity_(capacity), slots_(std::bit_ceil(uint64_t{capacity} * 2)) {
    RP_ASSERT(capacity > 0);
    gen_[0].assign(slots_, 0);
    gen_[1].assign(slots_, 0);
  }
  SeenSet(const SeenSet&) = delete;
  SeenSet& operator=(const SeenSet&) = delete;

  // Insert: remembers `id`; true if it was not already remembered.
  bool Insert(uint64_t id) noexcept {
    id = Key(id);
    if (Has(gen_[0], id) || Has(gen_[1], id)) return false;
    if (count_ == capacity_) {
      current_ ^= 1;
      std::fill(gen_[current_].begin(), gen_[current_].end(), 0);
      count_ = 0;
    }
    std::vector<uint64_t>& g = gen_[current_];
    for (uint64_t i = Mix(id);; ++i) {
      uint64_t& slot = g[i & (slots_ - 1)];
      if (slot == 0) {
        slot = id;
        break;
      }
    }
    ++count_;
    return true;
  }
  bool Contains(uint64_t id) const noexcept {
    id = Key(id);
    return Has(gen_[0], id) || Has(gen_[1], id);
  }
  uint32_t capacity() const noexcept { return capacity_; }

 private:
  static uint64_t Key(uint64_t id) noexcept { return id == 0 ? 1 : id; }  // 0 marks empty
  static uint64_t Mix(uint64_t x) noexcept {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    return x ^ (x >> 33);
  }
  bool Has(const std::vector<uint64_t>& g, uint64_t id) const noexcept {
    // At most half full, so a probe ends at an empty slot quickly.
    for (uint64_t i = Mix(id);; ++i) {
      const uint64_t slot = g[i & (slots_ - 1)];
      if (slot == id) return true;
      if (slot == 0) return false;
    }
  }

  const uint32_t capacity_;
  const uint64_t slots_;
  std::vector<uint64_t> gen_[2];
  int current_ = 0;
  uint32_t count_ = 0;
};

}  // namespace ringpeer::base
