// MemoryNetwork: the one in-memory datagram network of the tests, the benchmarks and the
// simulator (DESIGN.md section 2: the seam the simulator gives a node instead of `ring`).
//
// Datagrams sent through it are delivered later on a virtual clock, after a seeded
// uniform delay (so they are reordered freely), and may be lost, duplicated, or blocked
// by a partition predicate. Receivers are numbered: the caller says how an address maps
// to a receiver (`resolve`) and what delivering to one does (`deliver`). Delivery order is
// (time, send order), and every random choice comes from one seeded base::Rng, so a seed
// replays a run exactly.
//
// Memory: a datagram in flight holds one packet buffer (kDatagramBytesMax bytes); delivered
// buffers go to a free list of at most kSparePacketsMax, so a steady run does not allocate
// per datagram, and a burst (10,000 nodes joining) does not leave its peak behind: the
// network then holds what is in flight, not the most that ever was (the simulator counts
// every byte of it against its nodes). Senders write into one staging buffer of the
// network, not one each: a sender's Buffer() and Commit() are not interleaved with
// another sender's (asserted). Not thread-safe; test and simulation code only.
#pragma once

#include <cstdint>
#include <cstring>
#include <algorithm>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "base/assert.h"
#include "base/endpoint.h"
#include "base/outbox.h"
#include "base/rng.h"
#include "wire/header.h"

namespace ringpeer::testing {

struct NetworkConfig {
  uint64_t seed = 1;
  double loss = 0.0;       // probability a datagram is dropped
  double duplicate = 0.0;  // probability a datagram is delivered twice
  int64_t delay_min_us = 100;
  int64_t delay_max_us = 3'000;
};

class MemoryNetwork {
 public:
  // resolve: the receiver an address belongs to, or -1 (the datagram goes nowhere).
  using Resolve = std::function<int(const base::Endpoint&)>;
  // deliver: receiver `to` gets `bytes` (8-byte aligned) from `from`, at now().
  using Deliver =
      std::function<void(uint32_t to, const base::Endpoint& from, std::span<const uint8_t> bytes)>;
  // blocked: whether a datagram from `from` to receiver `to` is dropped now (a partition).
  using Blocked = std::function<bool(const base::Endpoint& from, uint32_t to)>;

  MemoryNetwork(const NetworkConfig& config, Resolve resolve, Deliver deliver)
      : config_(config), rng_(config.seed), resolve_(std::move(resolve)),
        deliver_(std::move(deliver)) {}
  MemoryNetwork(const MemoryNetwork&) = delete;
  MemoryNetwork& operator=(const MemoryNetwork&) = delete;
  ~MemoryNetwork() {
    for (const Due& d : queue_) delete d.packet;
  }

  // Delivered packet buffers kept for reuse; beyond these, they are freed.
  static constexpr size_t kSparePacketsMax = 256;

  NetworkConfig& config() { return config_; }
  void set_blocked(Blocked b) { blocked_ = std::move(b); }
  int64_t now() const { return now_; }
  // set_now: moves the clock (never backwards); packets due by then are not delivered
  // until DeliverDue or DeliverNext is called.
  void set_now(int64_t t) { now_ = std::max(now_, t); }

  // Send: one datagram from `from`; counted in sent() even when it is dropped.
  void Send(const base::Endpoint& from, const base::Endpoint& to, std::span<const uint8_t> bytes) {
    RP_ASSERT(bytes.size() <= wire::kDatagramBytesMax);
    ++sent_;
    const int dst = resolve_(to);
    if (dst < 0) return;
    if (blocked_ && blocked_(from, static_cast<uint32_t>(dst))) return;
    if (config_.loss > 0 && Uniform01() < config_.loss) return;
    const int copies = (config_.duplicate > 0 && Uniform01() < config_.duplicate) ? 2 : 1;
    for (int c = 0; c < copies; ++c) {
      Packet* p;
      if (!spare_.empty()) {
        p = spare_.back().release();
        spare_.pop_back();
      } else {
        p = new Packet;
      }
      p->from = from;
      p->to = static_cast<uint32_t>(dst);
      p->size = static_cast<uint16_t>(bytes.size());
      std::memcpy(p->bytes, bytes.data(), bytes.size());
      const int64_t span = config_.delay_max_us - config_.delay_min_us;
      const int64_t delay =
          config_.delay_min_us + (span > 0 ? static_cast<int64_t>(rng_.Uniform(span)) : 0);
      queue_.push_back(Due{now_ + delay, seq_++, p});
      std::push_heap(queue_.begin(), queue_.end(), std::greater<Due>());
    }
  }
  // Inject: delivers `bytes` to receiver `to` at once, as if sent from `from` (forgeries).
  void Inject(const base::Endpoint& from, uint32_t to, std::span<const uint8_t> bytes) {
    alignas(8) uint8_t buf[wire::kDatagramBytesMax];
    RP_ASSERT(bytes.size() <= sizeof(buf));
    std::memcpy(buf, bytes.data(), bytes.size());
    deliver_(to, from, std::span<const uint8_t>(buf, bytes.size()));
  }

  // NextAt: when the next datagram is due (INT64_MAX: none in flight).
  int64_t NextAt() const { return queue_.empty() ? INT64_MAX : queue_.front().at_us; }
  // DeliverNext: moves the clock to the next datagram's time and delivers it. False when
  // none is in flight.
  bool DeliverNext() {
    if (queue_.empty()) return false;
    std::pop_heap(queue_.begin(), queue_.end(), std::greater<Due>());
    const Due d = queue_.back();
    queue_.pop_back();
    // The queue's storage follows what is in flight down too (after a burst).
    if (queue_.capacity() > 4 * kSparePacketsMax && queue_.size() < queue_.capacity() / 4) {
      queue_.shrink_to_fit();
    }
    now_ = std::max(now_, d.at_us);
    // Copy out first: the receiver's answers send packets, which may reuse this one.
    alignas(8) uint8_t buf[wire::kDatagramBytesMax];
    const base::Endpoint from = d.packet->from;
    const uint32_t to = d.packet->to;
    const size_t size = d.packet->size;
    std::memcpy(buf, d.packet->bytes, size);
    if (spare_.size() < kSparePacketsMax) {
      spare_.emplace_back(d.packet);
    } else {
      delete d.packet;
    }
    ++delivered_;
    deliver_(to, from, std::span<const uint8_t>(buf, size));
    return true;
  }
  // DeliverDue: every datagram due at or before `t_us` (including those their deliveries
  // send that are also due by then), then the clock stands at `t_us`. Bounded by `max`
  // deliveries; returns how many were made.
  uint64_t DeliverDue(int64_t t_us, uint64_t max = UINT64_MAX) {
    uint64_t n = 0;
    while (n < max && NextAt() <= t_us) {
      DeliverNext();
      ++n;
    }
    set_now(t_us);
    return n;
  }

  uint64_t sent() const { return sent_; }
  uint64_t delivered() const { return delivered_; }
  size_t in_flight() const { return queue_.size(); }

  // Sender: an Outbox that sends from `self` through the network (what a node under test
  // writes into).
  class Sender final : public base::Outbox {
   public:
    Sender(MemoryNetwork* net, const base::Endpoint& self) : net_(net), self_(self) {}
    // Buffer: the network's staging buffer, lent to this sender until its Commit (or
    // another Buffer() of this sender).
    std::span<uint8_t> Buffer() noexcept override {
      net_->staging_owner_ = this;
      return net_->staging_;
    }
    void Commit(size_t size, const base::Endpoint& to) noexcept override {
      // Another sender's Buffer() since ours would have overwritten what we wrote.
      RP_ASSERT(net_->staging_owner_ == this);
      RP_ASSERT(size <= sizeof(net_->staging_));
      net_->Send(self_, to, std::span<const uint8_t>(net_->staging_, size));
    }
    const base::Endpoint& self() const { return self_; }

   private:
    MemoryNetwork* net_;
    base::Endpoint self_;
  };
  // SparePackets: delivered packet buffers kept for reuse (at most kSparePacketsMax).
  size_t SparePackets() const { return spare_.size(); }

 private:
  struct Packet {
    base::Endpoint from;
    uint32_t to = 0;
    uint16_t size = 0;
    alignas(8) uint8_t bytes[wire::kDatagramBytesMax];
  };
  struct Due {
    int64_t at_us;
    uint64_t seq;
    Packet* packet;  // owned while queued
    bool operator>(const Due& o) const {
      return at_us != o.at_us ? at_us > o.at_us : seq > o.seq;
    }
  };
  double Uniform01() { return static_cast<double>(rng_.Next() >> 11) * 0x1p-53; }

  NetworkConfig config_;
  base::Rng rng_;
  Resolve resolve_;
  Deliver deliver_;
  Blocked blocked_;
  int64_t now_ = 0;
  uint64_t seq_ = 0, sent_ = 0, delivered_ = 0;
  std::vector<std::unique_ptr<Packet>> spare_;  // at most kSparePacketsMax
  std::vector<Due> queue_;                       // a min-heap on (at_us, seq)
  const Sender* staging_owner_ = nullptr;        // whose Buffer() staging_ holds
  alignas(8) uint8_t staging_[wire::kDatagramBytesMax];
};

}  // namespace ringpeer::testing
