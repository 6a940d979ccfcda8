// Test doubles for driving node cores without I/O: what the fuzzers, the core's unit tests
// and tools use in place of a transport and the shards' SPSC rings.
//
//   CaptureSink  an Outbox that checks every datagram a core sends (it must decode as one
//                a node accepts, and fit a datagram), counts it, and may keep it.
//   QueueMail    the mailboxes of one node's cores, as bounded in-memory queues.
//   LocalNode    N cores of one node (one identity), each with a CaptureSink, joined by a
//                QueueMail, stepped on the caller's clock the way a shard's loop steps.
//
// Not for production: they allocate freely. Single-threaded.
#pragma once

#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <span>
#include <vector>

#include "base/assert.h"
#include "base/outbox.h"
#include "node/core/mail.h"
#include "node/core/node_core.h"
#include "wire/message.h"

namespace ringpeer::core::testing {

class CaptureSink final : public base::Outbox {
 public:
  struct Sent {
    base::Endpoint to;
    std::vector<uint8_t> bytes;
  };
  std::span<uint8_t> Buffer() noexcept override { return buf_; }
  void Commit(size_t size, const base::Endpoint& to) noexcept override {
    RP_ASSERT(size <= wire::kDatagramBytesMax);
    wire::Message m;
    // Everything a node sends must be something a node accepts.
    RP_ASSERT(wire::Decode(buf_, size, &m) == wire::Verdict::kOk);
    ++sent;
    if (log) captured.push_back(Sent{to, std::vector<uint8_t>(buf_, buf_ + size)});
  }
  // Bursts, cut here as the kernel would: each of their datagrams passes Commit's check.
  std::span<uint8_t> BurstBuffer() noexcept override { return splitter_.Buffer(); }
  size_t CommitBurst(size_t size, size_t segment,
                     std::span<const base::Endpoint> to) noexcept override {
    return splitter_.Split(*this, size, segment, to);
  }

  int sent = 0;
  bool log = false;
  std::vector<Sent> captured;

 private:
  alignas(8) uint8_t buf_[wire::kDatagramBytesMax];
  base::BurstSplitter splitter_;
};

// QueueMail: one node's mailboxes: a bounded FIFO per ordered pair of cores. The sink for
// core `from` is Sink(from); Deliver(to, core) hands core `to` what the others sent it.
class QueueMail {
 public:
  QueueMail(uint32_t cores, size_t capacity) : cores_(cores), capacity_(capacity) {
    for (uint32_t i = 0; i < cores * cores; ++i) queues_.emplace_back();
    for (uint32_t i = 0; i < cores; ++i) sinks_.push_back(std::make_unique<QueueSink>(this, i));
  }
  MailSink* Sink(uint32_t from) { return sinks_[from].get(); }
  // Deliver: every item queued for core `to`, in order; returns how many.
  size_t Deliver(uint32_t to, NodeCore& core, int64_t now_us) {
    size_t n = 0;
    for (uint32_t from = 0; from < cores_; ++from) {
      std::deque<MailItem>& q = queues_[from * cores_ + to];
      // Items pushed while delivering (replies) wait for the next call.
      for (size_t k = q.size(); k > 0; --k) {
        const MailItem item = q.front();
        q.pop_front();
        core.OnMail(now_us, item);
        ++n;
      }
    }
    return n;
  }
  size_t queued() const {
    size_t n = 0;
    for (const auto& q : queues_) n += q.size();
    return n;
  }

 private:
  class QueueSink final : public MailSink {
   public:
    QueueSink(QueueMail* m, uint32_t from) : m_(m), from_(from) {}
    MailItem* Slot(uint32_t to) noexcept override {
      RP_ASSERT(to != from_ && to < m_->cores_);
      if (m_->queues_[from_ * m_->cores_ + to].size() >= m_->capacity_) return nullptr;
      return &slot_;
    }
    void Push(uint32_t to) noexcept override {
      m_->queues_[from_ * m_->cores_ + to].push_back(slot_);
    }

   private:
    QueueMail* m_;
    uint32_t from_;
    MailItem slot_;
  };

  uint32_t cores_;
  size_t capacity_;
  std::vector<std::deque<MailItem>> queues_;
  std::vector<std::unique_ptr<QueueSink>> sinks_;
};

// LocalNode: a node of `configs.size()` cores (config i must have index i and shards
// configs.size()), one identity, stepped by the caller.
class LocalNode {
 public:
  LocalNode(std::vector<CoreConfig> configs, const wire::KeyPair& identity,
            size_t mailbox_capacity = 64)
      : mail_(static_cast<uint32_t>(configs.size()), mailbox_capacity) {
    for (size_t i = 0; i < configs.size(); ++i) {
      RP_ASSERT(configs[i].index == i && configs[i].shards == configs.size());
      sinks_.push_back(std::make_unique<CaptureSink>());
      cores_.push_back(std::make_unique<NodeCore>(configs[i], identity, sinks_[i].get(),
                                                  mail_.Sink(static_cast<uint32_t>(i))));
    }
  }
  size_t size() const { return cores_.size(); }
  NodeCore& core(size_t i) { return *cores_[i]; }
  CaptureSink& sink(size_t i) { return *sinks_[i]; }
  QueueMail& mail() { return mail_; }
  int sent() const {
    int n = 0;
    for (const auto& s : sinks_) n += s->sent;
    return n;
  }
  // Receive: one datagram at core `i` (copied into an aligned buffer, as a receive ring
  // provides) as a receive batch of one (its room floods queued and sent at the batch's
  // end, as NodeCore::ReceiveBatch does), then the mail it caused delivered and storage
  // committed, as one loop iteration of the shards would.
  wire::Verdict Receive(size_t i, int64_t now_us, const base::Endpoint& from,
                        std::span<const uint8_t> bytes) {
    alignas(8) static uint8_t buf[2048];
    const size_t n = std::min(bytes.size(), sizeof(buf));
    std::memcpy(buf, bytes.data(), n);
    cores_[i]->BeginRoomBatch();
    const wire::Verdict v = cores_[i]->Receive(now_us, from, std::span<const uint8_t>(buf, n),
                                               bytes.size() > wire::kDatagramBytesMax + 64);
    cores_[i]->EndRoomBatch();
    Step(now_us, /*tick=*/false);
    return v;
  }
  // Step: mail delivered (two rounds: answers to mail), storage committed; with `tick`,
  // every core ticks and its mail is delivered too.
  void Step(int64_t now_us, bool tick) {
    for (int round = 0; round < 2; ++round) {
      for (size_t i = 0; i < cores_.size(); ++i) {
        mail_.Deliver(static_cast<uint32_t>(i), *cores_[i], now_us);
      }
    }
    for (auto& c : cores_) c->Commit(now_us);
    if (tick) {
      for (auto& c : cores_) c->Tick(now_us);
      for (size_t i = 0; i < cores_.size(); ++i) {
        mail_.Deliver(static_cast<uint32_t>(i), *cores_[i], now_us);
      }
    }
  }

 private:
  QueueMail mail_;
  std::vector<std::unique_ptr<CaptureSink>> sinks_;
  std::vector<std::unique_ptr<NodeCore>> cores_;
};

}  // namespace ringpeer::core::testing
