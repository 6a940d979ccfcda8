// Shard: the glue between one node core (node/core), one transport, the mailboxes and a
// thread — nothing else.
//
// Each shard owns a socket per listen address (all shards share the port through
// SO_REUSEPORT) and a transport over them. Its loop polls the transport, hands each batch
// of datagrams to its NodeCore (which checks them in order of cost and dispatches them),
// drains the mailboxes from the other shards into the core, commits storage (group
// commit), runs the core's tick, pushes the core's mail with one doorbell per target per
// batch, and flushes the transport. The core's outgoing datagrams are written straight
// into the transport's send slots; its mail straight into the SPSC rings' slots.
//
// Thread-safety: Run() executes on the shard's own thread. counters() may be read from
// any thread (relaxed atomics written only by this shard). Post()/Withdraw() are the
// control thread's entry points.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/endpoint.h"
#include "node/core/mail.h"
#include "node/core/node_core.h"
#include "node/shard/spsc_ring.h"
#include "ring/transport.h"
#include "wire/crypto.h"

namespace ringpeer::shard {

// What the shard passes through from its core.
using core::ControlCommand;
using core::Counters;
using core::MailItem;
using ShardConfig = core::CoreConfig;

// Loop tick: timers, overlay maintenance and control requests run at least this often.
inline constexpr int64_t kTickUs = 50'000;
// Group commit: datagrams received are committed (fsync, then the acks it makes true) at
// most this often; the first after a quiet spell (this long since the last such commit) at
// once, so light traffic is acked after one commit, and a busy relay pays one fsync per
// this interval instead of one per receive batch (issue 15: commits were ~10% of a
// relay's CPU at one per ~60 updates). Iterations with no datagram waiting commit at once.
inline constexpr int64_t kGroupCommitUs = 10'000;
// Datagrams taken from the transport per iteration (bounded work per pass).
inline constexpr size_t kRecvBatchMax = 64;
// Items taken from each incoming mailbox per iteration.
inline constexpr size_t kMailboxBatchMax = 256;

// Mailboxes: one SpscRing per ordered pair of shards, plus each shard's wake handle.
class Mailboxes {
 public:
  Mailboxes(uint32_t shards, uint32_t capacity);
  SpscRing<MailItem>& Ring(uint32_t from, uint32_t to) noexcept {
    return *rings_[from * shards_ + to];
  }
  uint32_t shards() const noexcept { return shards_; }
  // Wake handles are set once, before any shard thread starts, then only read.
  void SetWake(uint32_t shard, ring::WakeHandle h) noexcept { wakes_[shard] = h; }
  const ring::WakeHandle& Wake(uint32_t shard) const noexcept { return wakes_[shard]; }

 private:
  uint32_t shards_;
  std::vector<std::unique_ptr<SpscRing<MailItem>>> rings_;
  std::vector<ring::WakeHandle> wakes_;
};

class Shard {
 public:
  // REQUIRES: identity, mailboxes and stop outlive the shard; the transport's wake handle
  // was registered in `mailboxes` before any shard runs.
  Shard(const ShardConfig& config, const wire::KeyPair& identity,
        std::unique_ptr<ring::Transport> transport, Mailboxes* mailboxes,
        const std::atomic<bool>* stop);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Run: the loop, until *stop. Returns after flushing queued sends and releasing the
  // port.
  void Run() noexcept;

  // Post: hands `cmd` to this (owner) shard and rings its doorbell; it sets cmd->done
  // (release, and a futex wake) when answered, within kCommandDeadlineUs. One command at a
  // time; false if one is pending. Any thread, while the shard runs (Node::Submit refuses
  // once the node stops: the transport may have closed the eventfd).
  bool Post(ControlCommand* cmd) noexcept;
  // Withdraw: takes back a command the shard has not claimed yet. False: the shard has it
  // and will set done by its deadline, so `cmd` must stay alive until then.
  bool Withdraw(ControlCommand* cmd) noexcept;

  core::NodeCore& core() noexcept { return *core_; }
  const Counters& counters() const noexcept { return core_->counters(); }
  // StorageError: see NodeCore::StorageError. Any thread.
  std::string StorageError() const { return core_->StorageError(); }
  // RestoreRooms: reloads the rooms in this shard's storage. Call before Run().
  absl::Status RestoreRooms() { return core_->RestoreRooms(); }
  // SavedTableBytes: the owner's routing table as a file's bytes (empty on other shards).
  // REQUIRES: Run() has returned (the shard thread no longer touches the overlay).
  std::vector<uint8_t> SavedTableBytes() const { return core_->SavedTableBytes(); }
  ring::Transport& transport() noexcept { return *transport_; }
  const char* transport_name() const noexcept { return transport_->name(); }

 private:
  class SlotOutbox;
  class RingMail;

  void DrainMailboxes(int64_t now_us) noexcept;
  void PublishMailboxes() noexcept;
  void PollCommand(int64_t now_us) noexcept;
  void PublishTransportStats() noexcept;

  const uint32_t index_;
  std::unique_ptr<ring::Transport> transport_;
  Mailboxes* mailboxes_;
  const std::atomic<bool>* stop_;
  std::unique_ptr<SlotOutbox> sink_;
  std::unique_ptr<RingMail> mail_;
  std::unique_ptr<core::NodeCore> core_;
  std::atomic<ControlCommand*> command_request_{nullptr};
  int64_t last_commit_us_ = 0;  // the last commit that carried datagrams; kGroupCommitUs
  uint64_t received_since_commit_ = 0;  // > 0: a commit is deferred (kGroupCommitUs)
  room::RoomStorage* room_storage_ = nullptr;  // set when its writer thread rings us
  int command_wake_fd_ = -1;  // the transport's eventfd, rung by Post (set at construction)
  room::SwarmListener* room_listener_ = nullptr;  // told when each loop iteration ends
  std::atomic<uint32_t>* claimed_done_ = nullptr;  // the command taken, until it is answered
  ring::TransportStats last_stats_{};
};

}  // namespace ringpeer::shard
