// SpscRing: a bounded lock-free single-producer single-consumer ring of fixed slots.
//
// The cross-shard mailbox (DESIGN.md section 4). The producer writes items in place and
// publishes a whole batch with one release store; the consumer takes a batch and frees it
// with one release store. Each side keeps a cached copy of the other's index, so a push
// or pop touches the shared cache line only when the cached view says "full" or "empty"
// (folly's ProducerConsumerQueue keeps the indices on separate lines for the same reason).
// A full ring makes BeginPush() return nullptr: the caller drops and counts, never waits.
//
// Thread-safety: exactly one producer thread and one consumer thread. Slots are allocated
// once at construction.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "base/assert.h"

namespace ringpeer::shard {

inline constexpr size_t kCacheLineBytes = 64;

template <typename T>
class SpscRing {
 public:
  // REQUIRES: capacity is a power of two.
  explicit SpscRing(uint32_t capacity)
      : mask_(capacity - 1), slots_(std::make_unique<T[]>(capacity)) {
    RP_ASSERT(capacity >= 2);
    RP_ASSERT((capacity & (capacity - 1)) == 0);
  }
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;

  // Producer: BeginPush returns the next free slot to fill, or nullptr when full.
  // CommitPush makes it part of the pending batch; Publish makes the batch visible and
  // returns how many items it published.
  T* BeginPush() noexcept {
    if (prod_.local_tail - prod_.cached_head > mask_) {
      prod_.cached_head = head_.value.load(std::memory_order_acquire);
      if (prod_.local_tail - prod_.cached_head > mask_) return nullptr;
    }
    return &slots_[prod_.local_tail & mask_];
  }
  void CommitPush() noexcept { ++prod_.local_tail; }
  uint32_t Publish() noexcept {
    const uint64_t published = tail_.value.load(std::memory_order_relaxed);
    const uint32_t n = static_cast<uint32_t>(prod_.local_tail - published);
    if (n != 0) tail_.value.store(prod_.local_tail, std::memory_order_release);
    return n;
  }

  // Consumer: Front returns the oldest published item or nullptr; Pop moves past it.
  // Release frees every popped slot for the producer (call once per batch).
  T* Front() noexcept {
    if (cons_.local_head == cons_.cached_tail) {
      cons_.cached_tail = tail_.value.load(std::memory_order_acquire);
      if (cons_.local_head == cons_.cached_tail) return nullptr;
    }
    return &slots_[cons_.local_head & mask_];
  }
  void Pop() noexcept {
    RP_DASSERT(cons_.local_head != cons_.cached_tail);
    ++cons_.local_head;
  }
  void Release() noexcept { head_.value.store(cons_.local_head, std::memory_order_release); }

  // Depth: items published and not yet released (approximate; for metrics, any thread).
  uint64_t Depth() const noexcept {
    return tail_.value.load(std::memory_order_relaxed) -
           head_.value.load(std::memory_order_relaxed);
  }
  uint32_t capacity() const noexcept { return mask_ + 1; }

 private:
  struct alignas(kCacheLineBytes) Index {
    std::atomic<uint64_t> value{0};
  };
  struct alignas(kCacheLineBytes) ProducerView {
    uint64_t local_tail = 0;
    uint64_t cached_head = 0;
  };
  struct alignas(kCacheLineBytes) ConsumerView {
    uint64_t local_head = 0;
    uint64_t cached_tail = 0;
  };

  const uint32_t mask_;
  std::unique_ptr<T[]> slots_;
  Index head_;  // written by the consumer
  Index tail_;  // written by the producer
  ProducerView prod_;
  ConsumerView cons_;
};

}  // namespace ringpeer::shard
