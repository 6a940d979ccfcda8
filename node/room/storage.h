// RoomStorage: where a node keeps the rooms it serves, so that a relay survives a restart
// and acknowledges an update only once it is durable (issue 5, item 6).
//
// The swarm (node/room/swarm.h) is sans-I/O: it stages writes here and never waits. The
// shard drives durability each loop iteration (RoomHost::CommitPoll/CommitStart):
//
//     ... messages handled: swarms call PutGenesis/PutKeyEpoch/Append/PutCheckpoint ...
//     if (auto r = storage.CommitPoll()) {     // a batch finished (on the writer thread)
//       if (r->ok()) host.ReleaseAcks(outbox); // acks for what that batch made durable
//       else         host.DropAcks();          // publishers retransmit; nothing is lost
//     }
//     if (!storage.CommitInFlight()) { mark the queued acks; storage.CommitStart(); }
//
// Contract for implementations (the LMDB one in node/store, the in-memory one below):
//
// - Staged writes (every Put*/Append since the last Commit) become durable together at
//   Commit(), or not at all. A crash before Commit may lose them; it must never lose
//   anything an earlier successful Commit covered. Reads (Load) see staged writes.
// - Records are opaque bytes, stored exactly as given (signatures cover them). The storage
//   never parses them; ids are passed in so it need not hash.
// - Append is idempotent by update id: appending an id the room already holds is a no-op
//   (flooding delivers duplicates and a restarted relay re-receives its own log).
// - Per room, updates keep their append order. Load returns them in that order. Order
//   does not have to be causal: room::Room holds an update until its parents arrive.
// - PutCheckpoint replaces the room's previous checkpoint (only the newest is kept). It
//   does not delete updates: Prune does, for the ids Room::PruneCovered dropped behind a
//   checkpoint (a relay after its retention, node/room/swarm_prune.cc).
// - PutKeyEpoch for an epoch already stored is a no-op (epochs are immutable once signed).
// - Errors are environment errors (disk full, I/O): absl::Status, never a crash. A failed
//   Commit leaves the staged writes staged; the next Commit retries them.
//
// How a restarted relay reloads a room (RoomHost::Restore does this):
//   LoadedRoom r = *storage.Load(room_id);
//   room = Room::Open(r.genesis, identity);  for (e : r.key_epochs) room.AddKeyEpoch(e);
//   if r.checkpoint_record is set and not all its heads are among r.updates:
//       room.LoadCheckpoint(r.checkpoint_record, r.checkpoint_blob)   // started from it
//   for (u : r.updates) room.Receive(u);
//   if r.checkpoint_record is set and it was not loaded above:
//       room.AddCheckpoint(r.checkpoint_record, r.checkpoint_blob)
//
// Thread-safety: one storage object per shard, called only by that shard's thread. The
// LMDB implementation may run each batch on a writer thread of its own (UseWriterThread);
// that is inside it, and the calls above stay the shard's.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/assert.h"
#include "node/room/records.h"

namespace ringpeer::room {

// Everything stored for one room, as Load returns it.
struct LoadedRoom {
  std::vector<uint8_t> genesis;                   // the signed genesis record
  std::vector<std::vector<uint8_t>> key_epochs;   // key epoch records, by epoch 0, 1, ...
  std::vector<uint8_t> checkpoint_record;         // empty: no checkpoint stored
  std::vector<uint8_t> checkpoint_blob;           // the encrypted state it names
  std::vector<std::vector<uint8_t>> updates;      // update records, in append order
};

class RoomStorage {
 public:
  virtual ~RoomStorage() = default;

  // PutGenesis: registers a room this node serves, by its id and signed genesis record.
  // Idempotent. Every other call for the room comes after this one.
  virtual absl::Status PutGenesis(const Hash256& room_id, Bytes genesis) = 0;
  // PutKeyEpoch: stages key epoch `epoch` (records arrive in epoch order, without gaps).
  virtual absl::Status PutKeyEpoch(const Hash256& room_id, uint32_t epoch, Bytes record) = 0;
  // Append: stages one accepted update record; a no-op for an id already stored.
  // Hot path: called once per accepted update; must not block on I/O (stage, then Commit).
  virtual absl::Status Append(const Hash256& room_id, const Hash256& update_id,
                              Bytes record) = 0;
  // PutCheckpoint: stages the room's newest checkpoint record and its blob (up to the
  // room's state cap, 5 MB by default), replacing the previous one.
  virtual absl::Status PutCheckpoint(const Hash256& room_id, Bytes record, Bytes blob) = 0;
  // PutCheckpointShared: the same, where `holder` holds the blob's bytes (a fetched
  // checkpoint object, immutable): a store that writes later may keep a reference to them
  // instead of a copy of megabytes. By default, PutCheckpoint (a copy).
  virtual absl::Status PutCheckpointShared(const Hash256& room_id, Bytes record, Bytes blob,
                                           const SharedBytes& holder) {
    (void)holder;
    return PutCheckpoint(room_id, record, blob);
  }
  // Commit: makes every staged write durable at once. On error nothing new is durable and
  // the writes stay staged.
  virtual absl::Status Commit() = 0;

  // Commit in two halves, so that a shard need not wait for the disk (issue 15, item 2):
  // CommitStart hands the staged writes over as one batch; CommitPoll gives its result
  // once, when it is done (nullopt before, and after it was given); the acks queued before
  // CommitStart may go out only when that result is OK. CommitWait blocks until no batch is
  // in flight. REQUIRES: CommitStart only while !CommitInFlight(). This default commits
  // at once (MemoryRoomStorage, the simulator): CommitStart then CommitPoll is Commit.
  // RoomStore can run the batch on a writer thread of its own (UseWriterThread, given the
  // eventfd that wakes the shard when a batch is done); the default ignores it.
  virtual void UseWriterThread(int wake_fd) { (void)wake_fd; }
  virtual void CommitStart() { commit_result_ = Commit(); }
  virtual bool CommitInFlight() const noexcept { return false; }
  virtual std::optional<absl::Status> CommitPoll() { return std::exchange(commit_result_, {}); }
  virtual void CommitWait() {}
  // CommitFigures: batches made durable so far, and the time they took (for RoomStore: the
  // LMDB transaction and its sync, on the writer), for metrics. Read on the shard's thread.
  struct CommitFigures {
    uint64_t commits = 0;
    uint64_t commit_us = 0;
  };
  virtual CommitFigures commit_figures() const noexcept { return {}; }

  // Rooms: the ids of every room stored (for a restart: Load each one).
  virtual std::vector<Hash256> Rooms() = 0;
  // Contains: whether `room_id` is stored (or staged). The default scans Rooms().
  virtual bool Contains(const Hash256& room_id) {
    for (const Hash256& r : Rooms()) {
      if (r == room_id) return true;
    }
    return false;
  }
  // Load: everything stored for `room_id` (staged writes included); NotFound if unknown.
  // Control path (start-up): allocating is fine.
  virtual absl::StatusOr<LoadedRoom> Load(const Hash256& room_id) = 0;
  // Forget: deletes a room and everything stored for it (staged; durable at Commit).
  virtual absl::Status Forget(const Hash256& room_id) = 0;
  // Prune: deletes these updates of the room (staged; durable at Commit, together with
  // the rest of the batch); ids not stored are ignored. The caller prunes only what the
  // stored checkpoint covers. A storage that does not override it keeps every update:
  // correct, but its log grows with the room (the simulator's disk does so).
  virtual absl::Status Prune(const Hash256& room_id, std::span<const Hash256> update_ids) {
    (void)room_id;
    (void)update_ids;
    return absl::OkStatus();
  }

 protected:
  std::optional<absl::Status> commit_result_;  // a finished batch's result, for CommitPoll
};

// MemoryRoomStorage: the in-memory RoomStorage for tests, benchmarks and the simulator.
// Staged and durable state are kept apart, so a test can "crash" (DropStaged) and see
// exactly what a Commit covered. A Commit replays the writes staged since the last one
// onto the durable copy, so it costs what was staged, not the whole store (the simulator
// commits after every step of every relay). Not for production: it allocates freely. Not
// thread-safe.
class MemoryRoomStorage final : public RoomStorage {
 public:
  absl::Status PutGenesis(const Hash256& room_id, Bytes genesis) override {
    Stored& s = staged_[room_id];
    if (s.room.genesis.empty()) {
      s.room.genesis.assign(genesis.begin(), genesis.end());
      journal_.push_back(Op{Op::kGenesis, room_id, 0, {}, s.room.genesis, {}});
    }
    return absl::OkStatus();
  }
  absl::Status PutKeyEpoch(const Hash256& room_id, uint32_t epoch, Bytes record) override {
    Stored* s = Find(room_id);
    if (s == nullptr) return absl::NotFoundError("room not stored");
    if (epoch < s->room.key_epochs.size()) return absl::OkStatus();
    if (epoch != s->room.key_epochs.size()) return absl::InvalidArgumentError("epoch gap");
    s->room.key_epochs.emplace_back(record.begin(), record.end());
    journal_.push_back(Op{Op::kEpoch, room_id, epoch, {}, s->room.key_epochs.back(), {}});
    return absl::OkStatus();
  }
  absl::Status Append(const Hash256& room_id, const Hash256& update_id,
                      Bytes record) override {
    if (fail_ || fail_writes_) return absl::UnavailableError("injected failure");
    Stored* s = Find(room_id);
    if (s == nullptr) return absl::NotFoundError("room not stored");
    if (s->ids.contains(update_id)) return absl::OkStatus();
    if (staged_bytes_ + record.size() > capacity_bytes_) {
      return absl::ResourceExhaustedError("store full (injected capacity)");
    }
    s->ids.insert(update_id);
    s->order.push_back(update_id);
    s->room.updates.emplace_back(record.begin(), record.end());
    staged_bytes_ += record.size();
    journal_.push_back(Op{Op::kAppend, room_id, 0, update_id, s->room.updates.back(), {}});
    return absl::OkStatus();
  }
  absl::Status PutCheckpoint(const Hash256& room_id, Bytes record, Bytes blob) override {
    Stored* s = Find(room_id);
    if (s == nullptr) return absl::NotFoundError("room not stored");
    s->room.checkpoint_record.assign(record.begin(), record.end());
    s->room.checkpoint_blob.assign(blob.begin(), blob.end());
    journal_.push_back(Op{Op::kCheckpoint, room_id, 0, {}, s->room.checkpoint_record,
                          s->room.checkpoint_blob});
    return absl::OkStatus();
  }
  absl::Status Commit() override {
    CommitWait();  // a deferred batch first (its result stays for CommitPoll)
    return CommitFirst(journal_.size());
  }
  // With SetDeferCommits (tests: a writer thread whose disk is slow), CommitStart takes
  // the writes staged so far as a batch that stays in flight until FinishCommit; writes
  // staged meanwhile belong to the next batch.
  void CommitStart() override {
    RP_ASSERT(!in_flight_ && !commit_result_.has_value());  // the contract in RoomStorage
    if (!defer_commits_ || journal_.empty()) {  // an empty batch answers at once, as
      commit_result_ = Commit();                // RoomStore's does
      return;
    }
    in_flight_ = true;
    batch_ops_ = journal_.size();
  }
  bool CommitInFlight() const noexcept override { return in_flight_; }
  CommitFigures commit_figures() const noexcept override { return {commits_, 0}; }
  void CommitWait() override {
    if (in_flight_) FinishCommit();
  }
  std::vector<Hash256> Rooms() override {
    std::vector<Hash256> out;
    for (const auto& [id, s] : staged_) out.push_back(id);
    return out;
  }
  absl::StatusOr<LoadedRoom> Load(const Hash256& room_id) override {
    Stored* s = Find(room_id);
    if (s == nullptr) return absl::NotFoundError("room not stored");
    return s->room;
  }
  absl::Status Prune(const Hash256& room_id, std::span<const Hash256> update_ids) override {
    Stored* s = Find(room_id);
    if (s == nullptr) return absl::NotFoundError("room not stored");
    if (update_ids.empty()) return absl::OkStatus();
    const absl::flat_hash_set<Hash256> gone(update_ids.begin(), update_ids.end());
    staged_bytes_ -= Drop(s, gone);
    Op op{Op::kPrune, room_id, 0, {}, {}, {}};
    for (const Hash256& id : update_ids) op.blob.insert(op.blob.end(), id.begin(), id.end());
    journal_.push_back(std::move(op));
    return absl::OkStatus();
  }
  absl::Status Forget(const Hash256& room_id) override {
    if (Stored* st = Find(room_id)) {
      for (const auto& u : st->room.updates) staged_bytes_ -= u.size();
    }
    staged_.erase(room_id);
    journal_.push_back(Op{Op::kForget, room_id, 0, {}, {}, {}});
    return absl::OkStatus();
  }

  // Test hooks (the simulator's disk faults):
  //   DropStaged / Crash: forget what no Commit covered (a crash loses unsynced writes);
  //   SetFail: Append and Commit fail (a failing disk);
  //   SetFailWrites / SetFailCommits: only one of them fails (a write error; an fsync
  //     error: nothing new becomes durable and the writes stay staged);
  //   SetCapacity: appends past this many update bytes fail with ResourceExhausted (a
  //     full disk), until the limit is raised;
  //   DurableUpdates / DurableHas: what survived.
  void DropStaged() {
    staged_ = durable_;
    staged_bytes_ = durable_bytes_;
    journal_.clear();
    in_flight_ = false;  // a batch in flight is lost with the rest, and never reported
    batch_ops_ = 0;
    commit_result_.reset();
  }
  void Crash() { DropStaged(); }
  void SetFail(bool fail) { fail_ = fail; }
  void SetFailWrites(bool fail) { fail_writes_ = fail; }
  void SetFailCommits(bool fail) { fail_commits_ = fail; }
  void SetCapacity(uint64_t bytes) { capacity_bytes_ = bytes; }
  void SetDeferCommits(bool defer) { defer_commits_ = defer; }
  void FinishCommit() {
    if (!in_flight_) return;
    in_flight_ = false;
    commit_result_ = CommitFirst(batch_ops_);
  }
  size_t DurableUpdates(const Hash256& room_id) const {
    auto it = durable_.find(room_id);
    return it == durable_.end() ? 0 : it->second.room.updates.size();
  }
  bool DurableHas(const Hash256& room_id, const Hash256& update_id) const {
    auto it = durable_.find(room_id);
    return it != durable_.end() && it->second.ids.contains(update_id);
  }
  uint64_t commits() const { return commits_; }
  uint64_t staged_bytes() const { return staged_bytes_; }
  // StoredBytes: a room's update records plus its checkpoint (record and blob), staged.
  uint64_t StoredBytes(const Hash256& room_id) {
    Stored* s = Find(room_id);
    if (s == nullptr) return 0;
    uint64_t n = s->room.checkpoint_record.size() + s->room.checkpoint_blob.size();
    for (const auto& u : s->room.updates) n += u.size();
    return n;
  }

 private:
  struct Stored {
    LoadedRoom room;
    absl::flat_hash_set<Hash256> ids;
    std::vector<Hash256> order;  // the id of each of room.updates
  };
  // One staged write, replayed onto the durable copy at Commit.
  struct Op {
    enum Kind : uint8_t { kGenesis, kEpoch, kAppend, kCheckpoint, kForget, kPrune } kind;
    Hash256 room{};
    uint32_t epoch = 0;
    Hash256 id{};
    std::vector<uint8_t> bytes;
    std::vector<uint8_t> blob;  // kCheckpoint; kPrune: the pruned ids, 32 bytes each
  };
  // CommitFirst: makes the first `n` staged writes durable (all of them: Commit).
  absl::Status CommitFirst(size_t n) {
    if (fail_ || fail_commits_) return absl::UnavailableError("injected failure");
    for (size_t i = 0; i < n; ++i) Replay(journal_[i]);
    journal_.erase(journal_.begin(), journal_.begin() + static_cast<std::ptrdiff_t>(n));
    if (journal_.empty()) {
      durable_bytes_ = staged_bytes_;
    } else {
      durable_bytes_ = 0;
      for (const auto& [id, st] : durable_) {
        for (const auto& u : st.room.updates) durable_bytes_ += u.size();
      }
    }
    ++commits_;
    return absl::OkStatus();
  }
  // Drop: removes the updates in `gone` from a stored room; returns their bytes.
  static uint64_t Drop(Stored* s, const absl::flat_hash_set<Hash256>& gone) {
    uint64_t bytes = 0;
    std::vector<std::vector<uint8_t>> kept;
    std::vector<Hash256> kept_ids;
    kept.reserve(s->room.updates.size());
    kept_ids.reserve(s->room.updates.size());
    for (size_t i = 0; i < s->room.updates.size(); ++i) {
      if (gone.contains(s->order[i])) {
        bytes += s->room.updates[i].size();
        s->ids.erase(s->order[i]);
      } else {
        kept.push_back(std::move(s->room.updates[i]));
        kept_ids.push_back(s->order[i]);
      }
    }
    s->room.updates = std::move(kept);
    s->order = std::move(kept_ids);
    return bytes;
  }
  Stored* Find(const Hash256& room_id) {
    auto it = staged_.find(room_id);
    return it == staged_.end() ? nullptr : &it->second;
  }
  void Replay(Op& op) {
    if (op.kind == Op::kForget) {
      durable_.erase(op.room);
      return;
    }
    Stored& d = durable_[op.room];
    switch (op.kind) {
      case Op::kGenesis:
        if (d.room.genesis.empty()) d.room.genesis = std::move(op.bytes);
        break;
      case Op::kEpoch:
        if (op.epoch == d.room.key_epochs.size()) d.room.key_epochs.push_back(std::move(op.bytes));
        break;
      case Op::kAppend:
        if (d.ids.insert(op.id).second) {
          d.order.push_back(op.id);
          d.room.updates.push_back(std::move(op.bytes));
        }
        break;
      case Op::kCheckpoint:
        d.room.checkpoint_record = std::move(op.bytes);
        d.room.checkpoint_blob = std::move(op.blob);
        break;
      case Op::kPrune:
      {
        absl::flat_hash_set<Hash256> gone;
        for (size_t i = 0; i + 32 <= op.blob.size(); i += 32) {
          Hash256 id;
          std::memcpy(id.data(), op.blob.data() + i, 32);
          gone.insert(id);
        }
        Drop(&d, gone);
      }
        break;
      case Op::kForget:
        break;
    }
  }

  std::map<Hash256, Stored> staged_;
  std::map<Hash256, Stored> durable_;
  std::vector<Op> journal_;  // staged since the last successful Commit, in order
  bool fail_ = false;
  bool fail_writes_ = false;
  bool fail_commits_ = false;
  uint64_t capacity_bytes_ = UINT64_MAX;
  uint64_t staged_bytes_ = 0;   // update bytes staged (and durable: durable_bytes_)
  uint64_t durable_bytes_ = 0;
  uint64_t commits_ = 0;
  bool defer_commits_ = false;
  bool in_flight_ = false;
  size_t batch_ops_ = 0;  // the batch in flight: journal_[0, batch_ops_)
};

}  // namespace ringpeer::room
