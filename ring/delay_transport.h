// DelayTransport: a test-only decorator over any ring::Transport that holds every outgoing
// datagram for a fixed time before handing it to the inner transport.
//
// Why: the netns tests (tests/netns/) need link delay, and the test kernel has no
// sch_netem. `ringpeer serve --test-delay-ms N` (TransportConfig::send_delay_us) wraps
// the shard's transport in this; with a delay of 0 nothing is wrapped, so the io_uring
// and recvmmsg transports and the hot path are untouched.
//
// How: SendBuffer() hands out the tail slot of a fixed ring of `slots` copies
// (allocated once, at construction); CommitSend() stamps it due at now + delay. Every
// Poll() and Flush() first moves the due datagrams, oldest first, into the inner
// transport's send slots (one copy each) and flushes them. The delay is constant and the
// clock monotonic, so due times are in commit order and the ring's order is the send
// order. Poll() shortens its wait to the oldest held datagram's due time, so a shard that
// would otherwise sleep to its next tick wakes in time: a datagram leaves at most one
// timer slack (tens of µs) after it is due, never a whole tick late.
//
// Bounded: when the ring is full SendBuffer() returns an empty span (the caller drops),
// counted in stats().send_slots_full like any full send queue and in send_delay_full.
// When the inner transport has no free slot, due datagrams stay held (in order) and go
// at the next Poll()/Flush(); the inner transport counts that as send_slots_full too.
// Datagrams still held when the shard stops are dropped (a test option).
//
// Doorbells (QueueWake) and receives are not delayed; they pass straight through.
//
// Thread-safety: like every Transport, owned by one shard thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "base/endpoint.h"
#include "ring/transport.h"

namespace ringpeer::ring {

struct DelayConfig {
  int64_t delay_us = 0;      // > 0
  uint32_t slots = 4096;     // datagrams held at most
  uint32_t slot_bytes = 1280;  // >= the largest datagram; 8-byte multiple
  // Monotonic clock in µs; empty: CLOCK_MONOTONIC. Tests inject their own.
  std::function<int64_t()> now_us;
};

class DelayTransport final : public Transport {
 public:
  // REQUIRES: inner != nullptr, config.delay_us > 0, config.slots > 0,
  // config.slot_bytes a nonzero multiple of 8.
  DelayTransport(std::unique_ptr<Transport> inner, DelayConfig config);

  const char* name() const noexcept override { return inner_->name(); }
  size_t Poll(int64_t timeout_us, std::span<RecvDatagram> out, bool* woken) noexcept override;
  void ReleaseReceived() noexcept override { inner_->ReleaseReceived(); }
  std::span<uint8_t> SendBuffer() noexcept override;
  void CommitSend(size_t size, const base::Endpoint& to, int socket_index = -1) noexcept override;
  void Flush() noexcept override;
  WakeHandle wake_handle() const noexcept override { return inner_->wake_handle(); }
  void QueueWake(const WakeHandle& target) noexcept override { inner_->QueueWake(target); }
  base::Endpoint local_address(size_t i) const noexcept override {
    return inner_->local_address(i);
  }
  size_t socket_count() const noexcept override { return inner_->socket_count(); }
  // The inner transport's counters plus this one's (send_delayed, send_delay_full, and
  // send_delay_full added to send_slots_full).
  const TransportStats& stats() const noexcept override;
  // Held datagrams are dropped (the link "goes down" with the node); the inner one shuts.
  void Shutdown() noexcept override { inner_->Shutdown(); }

  // Datagrams held now, and the due time of the oldest (meaningless when none are held).
  uint32_t held() const noexcept { return count_; }
  int64_t next_due_us() const noexcept;

 private:
  struct Held {
    int64_t due_us = 0;
    base::Endpoint to;
    uint32_t size = 0;
    int socket_index = -1;
  };

  int64_t Now() const noexcept;
  // Release: moves every datagram due at `now_us` into the inner transport, in order,
  // until the inner one has no free slot. True if any moved.
  bool Release(int64_t now_us) noexcept;
  uint8_t* SlotBytes(uint32_t i) noexcept {
    return reinterpret_cast<uint8_t*>(memory_.get()) + size_t{i} * config_.slot_bytes;
  }

  std::unique_ptr<Transport> inner_;
  const DelayConfig config_;
  std::unique_ptr<uint64_t[]> memory_;  // uint64_t: 8-byte aligned slots
  std::unique_ptr<Held[]> held_;
  uint32_t head_ = 0;   // oldest held
  uint32_t count_ = 0;
  uint64_t delayed_ = 0;
  uint64_t full_ = 0;
  mutable TransportStats stats_;
};

}  // namespace ringpeer::ring
