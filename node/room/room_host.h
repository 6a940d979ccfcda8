// RoomHost: the rooms one shard serves (issue 5, item 1). A bounded table of Swarms keyed
// by room id; room messages are dispatched to their swarm by the room id they carry.
//
// The shard owns one RoomHost and one RoomStorage. Per loop iteration it calls:
//   host.OnMessage(now, from, msg, out)   for every verified message with msg.is_room()
//   host.Tick(now, out)                   every ~10-50 ms
//   host.CommitPoll(out)                  a finished storage batch: its acks go out (or
//                                         are dropped when it failed)
//   host.CommitStart(out)                 when no batch is in flight: the staged writes
//                                         become one (a writer thread may run it)
// (CommitAndRelease does both and waits: tests, the simulator, a shard's exit).
// and, around a batch of messages, BeginBatch() / EndBatch(out): the batch's floods leave
// packed at its end.
// Rooms hash to shards by the header's shard hint (the room id's first 4 bytes), so a room
// message normally arrives at its owner; one that does not is the shard's to forward.
//
// Shard-local; not thread-safe. Owning type: not copyable.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "node/room/swarm.h"

namespace ringpeer::room {

// SourceCheck: whether an address has proved that it receives what is sent to it (the
// shard's ReflectionGuard). Shard-local.
class SourceCheck {
 public:
  virtual ~SourceCheck() = default;
  virtual bool Proved(const base::Endpoint& addr, int64_t now_us) const noexcept = 0;
};

// Which rooms a relay serves when a RoomJoin brings one it does not (issue 11, item 4).
enum class RoomAdmission : uint8_t {
  kOpen,    // any room, limited per source and hour
  kListed,  // only rooms whose id, or whose admin's public key, is in `allowed`
};

struct AdmissionConfig {
  RoomAdmission policy = RoomAdmission::kOpen;
  std::vector<Hash256> allowed;  // room ids and admin public keys (kListed)
  // Open relay: new rooms one proved source address (port ignored) may make us serve per
  // hour. 0: no limit.
  uint32_t new_rooms_per_source_per_hour = 16;
  // A full table unloads a room silent this long (kept in storage, reloaded when a member
  // joins again) to make room for a new one; never-written rooms go first, at any age.
  int64_t idle_unload_us = 600'000'000;
  // Who has proved its address; null: everyone counts as proved (tests, clients).
  const SourceCheck* sources = nullptr;
};

// What admission did, since start.
struct AdmissionCounters {
  uint64_t opened = 0;            // rooms started from a RoomJoin's genesis
  uint64_t reloaded = 0;          // stored rooms loaded again for a join
  uint64_t refused_policy = 0;    // not in the configured list
  uint64_t refused_unproved = 0;  // source has not proved its address (yet)
  uint64_t refused_rate = 0;      // source over its new rooms per hour
  uint64_t refused_full = 0;      // table full of written, active rooms
  uint64_t dropped_unwritten = 0; // never-written rooms dropped (and forgotten) for new ones
  uint64_t unloaded_idle = 0;     // idle rooms unloaded from memory (kept in storage)
};

struct RoomHostConfig {
  // The node's identity (key epochs seal member keys to it); null for a relay.
  const KeyPair* identity = nullptr;
  // Rooms one shard serves at once; a full table refuses new rooms (Create fails) unless
  // admission can make space. Each room costs its log plus ~peers_max x 200 bytes of swarm
  // state.
  uint32_t rooms_max = 256;
  SwarmConfig swarm;
  AdmissionConfig admission;
};

class RoomHost {
 public:
  // `storage` may be null (a member without persistence); `encoder`, `rng` and `listener`
  // (may be null) outlive the host.
  RoomHost(const RoomHostConfig& config, RoomStorage* storage, wire::Encoder* encoder,
           base::Rng* rng, SwarmListener* listener);
  RoomHost(const RoomHost&) = delete;
  RoomHost& operator=(const RoomHost&) = delete;

  // Create: starts serving a room from its genesis and key epoch records (stored first).
  // AlreadyExists when served; ResourceExhausted when the table is full. `identity`, when
  // set, replaces the host's for this room: the key its grants are sealed to (an invite's
  // member key, node/client); the Room keeps a copy.
  absl::StatusOr<Swarm*> Create(Bytes genesis, std::span<const std::vector<uint8_t>> epochs,
                                const KeyPair* identity = nullptr);
  // Join: Create, then Connect to each bootstrap peer (providers from the DHT). On a
  // member with a storage (a client's cache) a room stored before is reopened from it.
  absl::StatusOr<Swarm*> Join(int64_t now_us, Bytes genesis,
                              std::span<const std::vector<uint8_t>> epochs,
                              std::span<const base::Endpoint> bootstrap, base::Outbox& out,
                              const KeyPair* identity = nullptr);
  // JoinById: a member that knows only the room id (a short invite, node/room/invite.h).
  // A room joined before is reopened from the storage (its stored genesis and epochs).
  // Otherwise the host asks `bootstrap` for the genesis (RoomJoin with want_genesis, again
  // every kByIdRetryUs) and opens the room when a peer answers with a genesis record that
  // hashes to `room_id`; the key epochs then come from the relays, each checked against
  // the genesis's admin key. Returns the swarm when it opened at once, else null (Joining
  // is true until the genesis comes; Close gives up).
  absl::StatusOr<Swarm*> JoinById(int64_t now_us, const Hash256& room_id,
                                  std::span<const base::Endpoint> bootstrap, base::Outbox& out,
                                  const KeyPair* identity);
  bool Joining(const Hash256& room_id) const noexcept;
  size_t joins_pending() const noexcept { return by_id_.size(); }
  // Genesis records from peers that did not hash to the room id asked for (a liar's).
  uint64_t genesis_refused() const noexcept { return genesis_refused_; }
  static constexpr int64_t kByIdRetryUs = 1'000'000;
  static constexpr size_t kByIdJoinsMax = 64;
  // Restore: reloads every room in the storage (start-up). See storage.h for the order.
  absl::Status Restore();
  // Close: leaves a room and stops serving it (its storage stays).
  void Close(const Hash256& room_id, base::Outbox& out);
  Swarm* Find(const Hash256& room_id) noexcept;
  // ForEach: calls f(Swarm&) for every room served, in the order they were opened (f must
  // not open or close rooms).
  template <typename F>
  void ForEach(F&& f) {
    for (Swarm* swarm : ordered_) f(*swarm);
  }

  // OnMessage: one verified room message. kOk, or why it was dropped (unknown room: the
  // room is not served here). A relay starts serving an unknown room when a RoomJoin
  // carries its signed genesis and admission allows it, and reloads a stored room that
  // was unloaded when a RoomJoin names it (see AdmissionConfig).
  wire::Verdict OnMessage(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                          base::Outbox& out) noexcept;
  void Tick(int64_t now_us, base::Outbox& out) noexcept;
  // CommitStart: takes a batch that finished since the last CommitPoll first (returning
  // its result, with its acks released or dropped), then every swarm marks the acks queued
  // so far as the new batch's, and the storage starts it (storage.h). REQUIRES:
  // !CommitInFlight(). CommitPoll: when a batch finished, its result: OK releases the acks
  // it made true, an error drops every queued ack (publishers retransmit); nullopt while in
  // flight or when nothing finished.
  // CommitAndRelease: waits for a batch in flight, then starts one and waits for it, and
  // returns the first error of the two (or OK). Without a storage all do nothing.
  std::optional<absl::Status> CommitStart(base::Outbox& out);
  bool CommitInFlight() const noexcept {
    return storage_ != nullptr && storage_->CommitInFlight();
  }
  std::optional<absl::Status> CommitPoll(base::Outbox& out);
  absl::Status CommitAndRelease(base::Outbox& out);
  void ReleaseAcks(base::Outbox& out) noexcept;
  void DropAcks() noexcept;
  // BeginBatch / EndBatch: around one receive batch (NodeCore::ReceiveBatch). Between them
  // the rooms queue the records they flood, and EndBatch sends them packed: several records
  // for one peer share a RoomPublish (issue 15). Outside a batch floods go at once.
  void BeginBatch() noexcept { floods_.Open(); }
  void EndBatch(base::Outbox& out) noexcept { floods_.Close(out); }

  size_t rooms_count() const noexcept { return rooms_.size(); }
  // Rooms served, by the reducer kind their genesis names (index: ReducerKind; 0 unused).
  // An app room (kOpaque) on a relay is carried unread. O(rooms).
  std::array<uint64_t, 4> rooms_by_reducer() const noexcept;
  // Rooms served that hold a checkpoint (a relay fetches every new one to serve joiners).
  // O(rooms).
  uint64_t rooms_with_checkpoint() const noexcept;
  const AdmissionCounters& admission() const noexcept { return admission_; }
  // dropped: rooms admission stopped serving (dropped or unloaded) since the caller last
  // cleared it; the shard withdraws their provider announcements. At most twice rooms_max
  // (4 at least, kDroppedMax at most) are remembered: the core clears it every tick, and
  // the announcements of drops beyond that expire instead (a simulated node serving one
  // room kept 2 KB for 64).
  std::vector<Hash256>& dropped() noexcept { return dropped_; }
  static constexpr size_t kDroppedMax = 64;
  // Updates from peers that the rooms took into their logs, or refused, since start.
  uint64_t updates_accepted() const noexcept { return updates_accepted_; }
  uint64_t updates_rejected() const noexcept { return updates_rejected_; }

  // What a member's cache did for its joins (Join on a non-relay host with a storage).
  struct CacheCounters {
    uint64_t opened = 0;  // joins that found the room stored (Swarm::restored_updates: how much)
  };
  const CacheCounters& cache_counters() const noexcept { return cache_; }

 private:
  absl::StatusOr<Swarm*> Open(Bytes genesis, std::span<const std::vector<uint8_t>> epochs,
                              bool store, const KeyPair* identity = nullptr);
  Swarm* ServeOnJoin(int64_t now_us, const base::Endpoint& from,
                     const wire::Message& msg) noexcept;
  struct SourceRooms;
  // PreAdmit: the checks before the genesis is verified (open relay: a proved source under
  // its hourly count; `quota` is its entry, counted once the room opens). Listed: whether
  // a listed relay serves the room of `genesis`.
  bool PreAdmit(int64_t now_us, const base::Endpoint& from, SourceRooms** quota) noexcept;
  bool Listed(const Genesis& genesis) noexcept;
  // MakeSpace: frees a slot of a full table (a never-written room, else the idlest room
  // past idle_unload_us). False when every room is written and active.
  bool MakeSpace(int64_t now_us) noexcept;
  absl::StatusOr<Swarm*> LoadStored(const Hash256& room_id);
  absl::StatusOr<Swarm*> OpenCached(Bytes genesis, std::span<const std::vector<uint8_t>> epochs,
                                    const KeyPair* identity);

  // A join by room id waiting for the genesis (JoinById).
  struct ByIdJoin {
    Hash256 room_id{};
    std::optional<KeyPair> identity;
    std::vector<base::Endpoint> bootstrap;
    int64_t next_us = 0;
  };
  void AskGenesis(int64_t now_us, ByIdJoin& j, base::Outbox& out) noexcept;
  wire::Verdict OnGenesis(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                          base::Outbox& out) noexcept;

  RoomHostConfig config_;
  std::vector<ByIdJoin> by_id_;
  uint64_t genesis_refused_ = 0;
  RoomStorage* storage_;
  wire::Encoder* encoder_;
  base::Rng* rng_;
  SwarmListener* listener_;
  // The floods of the receive batch in progress (before rooms_: swarms forget their
  // entries when they close).
  FloodQueue floods_;
  // Erase: stops serving a room (both tables).
  void Erase(const Hash256& room_id);

  absl::flat_hash_map<Hash256, std::unique_ptr<Swarm>, IdHash> rooms_;
  // The same swarms in the order they were opened: every walk over the rooms (ticks, acks,
  // admission) goes in this order, not the hash table's, whose order changes from run to
  // run (abseil salts it with the table's address), so a seeded simulation replays exactly.
  std::vector<Swarm*> ordered_;
  CacheCounters cache_;
  uint64_t updates_accepted_ = 0;
  uint64_t updates_rejected_ = 0;
  AdmissionCounters admission_;
  std::vector<Hash256> dropped_;
  size_t dropped_max_ = kDroppedMax;  // its capacity: see dropped()
  // New rooms per source address and hour (open relay): a fixed 4-way table.
  struct SourceRooms {
    uint64_t key = 0;
    int64_t window_us = 0;  // start of the current hour
    uint32_t count = 0;
  };
  static constexpr uint32_t kSourceEntries = 1024;
  std::unique_ptr<SourceRooms[]> sources_;
};

}  // namespace ringpeer::room
