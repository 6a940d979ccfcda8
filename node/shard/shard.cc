#include "node/shard/shard.h"

#include <unistd.h>

#include <algorithm>
#include <cstddef>

#include "base/assert.h"
#include "base/clock.h"
#include "base/futex.h"

namespace ringpeer::shard {
namespace {

using base::MonotonicUs;

// WithClockAndSeed: a core reads no clock and makes no randomness: what the shard's caller
// left open (0 / -1) comes from the system here.
ShardConfig WithClockAndSeed(ShardConfig c) {
  if (c.start_us < 0) c.start_us = MonotonicUs();
  while (c.rng_seed == 0) wire::RandomBytes({reinterpret_cast<uint8_t*>(&c.rng_seed), 8});
  return c;
}

}  // namespace

Mailboxes::Mailboxes(uint32_t shards, uint32_t capacity)
    : shards_(shards), wakes_(shards) {
  rings_.reserve(size_t{shards} * shards);
  for (uint32_t i = 0; i < shards * shards; ++i) {
    // The diagonal (a shard to itself) is never used; it costs only two slots.
    const bool diagonal = i / shards == i % shards;
    rings_.push_back(std::make_unique<SpscRing<MailItem>>(diagonal ? 2 : capacity));
  }
}

// SlotOutbox: the core's sink: the transport's send slots, written in place.
class Shard::SlotOutbox : public base::Outbox {
 public:
  explicit SlotOutbox(ring::Transport* t) : t_(t) {}
  std::span<uint8_t> Buffer() noexcept override { return t_->SendBuffer(); }
  void Commit(size_t size, const base::Endpoint& to) noexcept override {
    t_->CommitSend(size, to);
  }
  std::span<uint8_t> BurstBuffer() noexcept override { return t_->BurstBuffer(); }
  size_t CommitBurst(size_t size, size_t segment,
                     std::span<const base::Endpoint> to) noexcept override {
    return t_->CommitBurst(size, segment, to);
  }

 private:
  ring::Transport* t_;
};

// RingMail: the core's mail, written in place into the SPSC rings' slots; what was pushed
// is published (and the target woken, once) at the end of the loop iteration.
class Shard::RingMail : public core::MailSink {
 public:
  RingMail(uint32_t index, Mailboxes* m) : index_(index), m_(m), pending_(m->shards(), 0) {}
  MailItem* Slot(uint32_t to) noexcept override { return m_->Ring(index_, to).BeginPush(); }
  void Push(uint32_t to) noexcept override {
    m_->Ring(index_, to).CommitPush();
    pending_[to] = 1;
  }
  // Publish: makes what was pushed visible, with one doorbell per target.
  void Publish(ring::Transport& t) noexcept {
    for (uint32_t to = 0; to < m_->shards(); ++to) {
      if (!pending_[to]) continue;
      pending_[to] = 0;
      if (m_->Ring(index_, to).Publish() > 0) t.QueueWake(m_->Wake(to));
    }
  }

 private:
  uint32_t index_;
  Mailboxes* m_;
  std::vector<uint8_t> pending_;  // per target shard: items pushed, not published
};

Shard::Shard(const ShardConfig& config, const wire::KeyPair& identity,
             std::unique_ptr<ring::Transport> transport, Mailboxes* mailboxes,
             const std::atomic<bool>* stop)
    : index_(config.index),
      transport_(std::move(transport)),
      mailboxes_(mailboxes),
      stop_(stop),
      sink_(std::make_unique<SlotOutbox>(transport_.get())),
      mail_(std::make_unique<RingMail>(config.index, mailboxes)) {
  RP_ASSERT(mailboxes_->shards() == config.shards);
  core_ = std::make_unique<core::NodeCore>(WithClockAndSeed(config), identity, sink_.get(),
                                          mail_.get());
  // Durability off the shard thread (issue 15, item 2) when the writer can ring us.
  const int wake_fd = transport_->wake_handle().event_fd;
  command_wake_fd_ = wake_fd;
  room_listener_ = config.room_listener;
  if (config.room_storage != nullptr && wake_fd >= 0) {
    room_storage_ = config.room_storage;
    room_storage_->UseWriterThread(wake_fd);
  }
}

Shard::~Shard() = default;

bool Shard::Withdraw(ControlCommand* cmd) noexcept {
  ControlCommand* expected = cmd;
  return command_request_.compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel);
}

bool Shard::Post(ControlCommand* cmd) noexcept {
  ControlCommand* expected = nullptr;
  if (!command_request_.compare_exchange_strong(expected, cmd, std::memory_order_acq_rel)) {
    return false;
  }
  // Ring the shard's doorbell (its transport's eventfd, which other threads may write), so
  // that it takes the command now rather than at its next tick. Without one (a test
  // transport) the next tick does.
  if (command_wake_fd_ >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t w = write(command_wake_fd_, &one, sizeof(one));
  }
  return true;
}

void Shard::Run() noexcept {
  ring::RecvDatagram batch[kRecvBatchMax];
  int64_t now = MonotonicUs();
  int64_t next_tick = now;
  Counters& counters = core_->counters();
  // The one intentionally unbounded loop: it runs until the node stops.
  while (!stop_->load(std::memory_order_relaxed)) {
    int64_t timeout = std::max<int64_t>(0, next_tick - now);
    // A deferred group commit is due within kGroupCommitUs, even if the burst has ended.
    // While a batch is in flight the writer's doorbell wakes us instead.
    if (received_since_commit_ > 0 && !core_->CommitInFlight()) {
      timeout = std::min(timeout, std::max<int64_t>(0, last_commit_us_ + kGroupCommitUs - now));
    }
    bool woken = false;
    const size_t n = transport_->Poll(timeout, batch, &woken);
    now = MonotonicUs();
    core_->ReceiveBatch(now, std::span<const ring::RecvDatagram>(batch, n));
    transport_->ReleaseReceived();
    DrainMailboxes(now);
    // Durability (DESIGN.md 8): a batch the store's writer thread finished sends the acks
    // it made true. A new batch starts when none is in flight: at once while no datagram
    // waits for one (ticks, commands, mail), and for datagrams at most every
    // kGroupCommitUs (the first after a quiet spell at once). While commits fail, the next
    // try waits for its backoff (the acks stay queued meanwhile).
    core_->CommitPoll(now);
    received_since_commit_ += n;
    if ((received_since_commit_ == 0 || now - last_commit_us_ >= kGroupCommitUs) &&
        !core_->CommitInFlight()) {
      // The writer may have finished between the poll above and that check: take its
      // result first, so that its acks go (and a failure's backoff is known) before the
      // queued acks are marked as the new batch's. (RoomHost::CommitStart does the same
      // as a guard; found by a review: the new batch's acks went out with the old one's.)
      core_->CommitPoll(now);
      if (core_->StorageDue(now)) {
        core_->CommitStart(now);
        core_->CommitPoll(now);  // a store without a writer thread has finished already
      }
      if (received_since_commit_ > 0) last_commit_us_ = now;
      received_since_commit_ = 0;
    }
    PollCommand(now);
    if (now >= next_tick) {
      core_->Tick(now);
      PublishTransportStats();
      next_tick = now + kTickUs;
    }
    mail_->Publish(*transport_);
    transport_->Flush();
    if (room_listener_ != nullptr) room_listener_->OnLoopEnd();
    Counters::Add(counters.received, n);
    Counters::Add(counters.loop_iterations, 1);
  }
  // What a deferred group commit still holds becomes durable (and acked) before exit.
  core_->Commit(now);
  // The store outlives this shard's transport: its writer must not ring the eventfd the
  // transport closes (no batch is in flight after Commit).
  if (room_storage_ != nullptr) room_storage_->UseWriterThread(-1);
  transport_->Flush();
  bool woken = false;
  transport_->Poll(0, std::span(batch, 0), &woken);  // submit the last sends
  // Release the port on this thread (io_uring's single issuer) before Run returns, so a
  // node restarted as soon as this process exits can bind it.
  transport_->Shutdown();
  PublishTransportStats();
}

void Shard::DrainMailboxes(int64_t now_us) noexcept {
  for (uint32_t from = 0; from < mailboxes_->shards(); ++from) {
    if (from == index_) continue;
    SpscRing<MailItem>& ring = mailboxes_->Ring(from, index_);
    size_t taken = 0;
    for (; taken < kMailboxBatchMax; ++taken) {
      const MailItem* item = ring.Front();
      if (item == nullptr) break;
      core_->OnMail(now_us, *item);
      ring.Pop();
    }
    if (taken > 0) ring.Release();
  }
}

void Shard::PollCommand(int64_t now_us) noexcept {
  if (core_->overlay() == nullptr) return;  // commands go to the owner only
  if (core_->command_busy()) {
    core_->CheckCommand(now_us);
  } else if (command_request_.load(std::memory_order_relaxed) != nullptr) {
    // A relaxed look first: the exchange (a locked instruction) only when there is work.
    ControlCommand* cmd = command_request_.exchange(nullptr, std::memory_order_acq_rel);
    if (cmd != nullptr) {
      claimed_done_ = &cmd->done;  // taken now: once answered, the application may free it
      core_->StartCommand(now_us, cmd);
    }
  }
  // Answered (here, or by a datagram earlier in this iteration): wake the application
  // sleeping on `done` (Node::Submit). A wake on an address freed meanwhile, or reused by
  // the next command, only makes a waiter look at its word again.
  if (claimed_done_ != nullptr && !core_->command_busy()) {
    base::FutexWake(claimed_done_);
    claimed_done_ = nullptr;
  }
}

void Shard::PublishTransportStats() noexcept {
  Counters& c = core_->counters();
  const ring::TransportStats& s = transport_->stats();
  Counters::Add(c.send_errors, s.send_errors - last_stats_.send_errors);
  Counters::Add(c.recv_no_buffers, s.recv_no_buffers - last_stats_.recv_no_buffers);
  Counters::Add(c.recv_coalesced, s.recv_coalesced - last_stats_.recv_coalesced);
  Counters::Add(c.recv_coalesced_dropped,
                s.recv_coalesced_dropped - last_stats_.recv_coalesced_dropped);
  Counters::Add(c.transport_syscalls, s.syscalls - last_stats_.syscalls);
  Counters::Add(c.transport_completions, s.completions - last_stats_.completions);
  Counters::Add(c.dropped[int(wire::Verdict::kSendQueueFull)],
                s.send_slots_full - last_stats_.send_slots_full);
  last_stats_ = s;
}

}  // namespace ringpeer::shard
