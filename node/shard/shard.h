// Shard: one core's event loop — transport + overlay + rate limits + mailboxes.
//
// Each shard owns a socket per listen address (all shards share the port through
// SO_REUSEPORT), a transport, a PingResponder, a RateLimiter and, on the owner shard only,
// the dht::Overlay. A datagram is checked in order of cost (DESIGN.md section 1): header,
// per-address rate limit, FlatBuffers Verifier, then the handler (signatures last).
// What belongs to another shard — a pong to a ping that shard sent, overlay traffic for
// the owner — crosses over that pair's SpscRing, copied into a fixed slot, and the target
// is woken once per batch (MSG_RING or eventfd). A full mailbox drops and counts.
//
// Thread-safety: Run() executes on the shard's own thread. counters() may be read from
// any thread (relaxed atomics written only by this shard). RequestSnapshot() is the one
// entry point for the control thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/endpoint.h"
#include "dht/overlay.h"
#include "dht/ping_responder.h"
#include "node/room/room_host.h"
#include "node/room/storage.h"
#include "node/shard/rate_limiter.h"
#include "node/shard/reflection_guard.h"
#include "node/shard/spsc_ring.h"
#include "ring/transport.h"
#include "wire/crypto.h"
#include "wire/header.h"
#include "wire/verdict.h"

namespace ringpeer::shard {

// Loop tick: timers, overlay maintenance and control requests run at least this often.
inline constexpr int64_t kTickUs = 50'000;
// Group commit: while datagrams arrive in full batches (more are waiting), the room store
// commits (fsync, then the acks it makes true) at most this often; as soon as a batch is
// not full, at once. Light traffic is acked after one commit; a saturated relay pays one
// fsync per this interval instead of one per batch of kRecvBatchMax.
inline constexpr int64_t kGroupCommitUs = 10'000;
// Datagrams taken from the transport per iteration (bounded work per pass).
inline constexpr size_t kRecvBatchMax = 64;
// Items taken from each incoming mailbox per iteration.
inline constexpr size_t kMailboxBatchMax = 256;
// A ping from an address the owner has heard about within this window is not reported
// to the owner again (each report costs a mailbox slot or a table lookup).
inline constexpr int64_t kPingSeenIntervalUs = 2'000'000;
inline constexpr uint32_t kPingSeenCacheEntries = 4096;

// MailItem: one datagram handed to another shard. The payload is 8-byte aligned so that
// the FlatBuffers body at bytes + 16 is aligned for the Verifier.
struct MailItem {
  // kDatagram, kPingSeen: a verified datagram (bytes) from `from`.
  // kRoomProviders: to the owner shard: look up the providers of the room whose id is
  // bytes[0..32] (and announce us as one when bytes[32] is 1). kRoomPeer: from the owner: `from` is a
  // provider of room bytes[0..32]; the room's shard connects its swarm to it.
  enum class Kind : uint8_t { kDatagram, kPingSeen, kRoomProviders, kRoomPeer };
  base::Endpoint from;
  Kind kind = Kind::kDatagram;
  uint16_t size = 0;
  alignas(8) uint8_t bytes[wire::kDatagramBytesMax];
};

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

struct ShardConfig {
  uint32_t index = 0;
  uint32_t shards = 1;
  uint32_t owner = 0;  // the shard that owns the overlay's peer table
  uint32_t rate_limit_per_s = 5000;
  uint32_t rate_limit_burst = 10000;
  uint32_t rate_limit_entries = 16384;
  // Addresses whose reflection credit and proof the shard tracks (ReflectionGuard).
  uint32_t reflection_entries = 16384;
  dht::OverlayConfig overlay;  // used on the owner shard only
  std::vector<dht::SavedContact> restore;  // the saved routing table (owner shard only)
  // Rooms: this shard serves the rooms whose id's first byte is its index modulo shards.
  // With a storage it is a relay for them (stores logs, acks durably, serves joiners);
  // without one it only relays live traffic and never acks. Owned by the Node.
  room::RoomStorage* room_storage = nullptr;
  // True: a relay (stores every room its members bring, acks once durable, reloads its
  // rooms at start). False with a storage: a member whose storage is its room cache.
  bool room_relay = true;
  uint32_t rooms_max = 256;
  // Which rooms a relay serves (open or listed; per-source limits; idle unloading). The
  // shard sets `sources` (its ReflectionGuard).
  room::AdmissionConfig room_admission;
  // Limits and timers of every room's swarm (publish limits, keepalive, sync windows);
  // `relay` and `self` are set by the shard.
  room::SwarmConfig room_swarm;
  // Told about every room event on the shard thread (an embedded client's event ring,
  // node/client); may be null. Owned by the Node's creator; outlives the shard.
  room::SwarmListener* room_listener = nullptr;
  // Tests, fuzzers and simulators: a fixed seed and start time make a shard reproducible
  // (0 / -1: seeded from the system, started at the monotonic clock's now).
  uint64_t rng_seed = 0;
  int64_t start_us = -1;
};

// A failed storage commit is retried after this long, doubling up to the maximum while it
// keeps failing (a full disk: each try writes the whole staged batch again).
inline constexpr int64_t kStorageRetryFirstUs = 50'000;
inline constexpr int64_t kStorageRetryMaxUs = 1'000'000;

// Upper bounds of the lookup duration histogram's buckets (the last bucket counts what
// is slower than all of them): from a loopback round trip to a lookup whose nearest
// candidates all time out their five tries.
inline constexpr int64_t kLookupDurationBoundsUs[] = {
    5'000, 10'000, 25'000, 50'000, 100'000, 250'000,
    500'000, 1'000'000, 2'500'000, 5'000'000, 10'000'000, 30'000'000};
inline constexpr size_t kLookupDurationBuckets = std::size(kLookupDurationBoundsUs) + 1;

// Counters published for status and metrics. Written only by the owning shard.
struct ShardCounters {
  std::atomic<uint64_t> received{0};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> pings_answered{0};
  std::atomic<uint64_t> mailbox_out{0};
  std::atomic<uint64_t> mailbox_in{0};
  std::atomic<uint64_t> loop_iterations{0};
  std::atomic<uint64_t> send_errors{0};
  std::atomic<uint64_t> recv_no_buffers{0};
  std::atomic<uint64_t> rooms{0};            // rooms this shard serves
  // Of those, by the reducer kind their genesis names (index: room::ReducerKind, 0
  // unused); a relay carries app rooms (kOpaque) unread. Set every tick.
  std::atomic<uint64_t> rooms_by_reducer[4] = {};
  std::atomic<uint64_t> rooms_checkpointed{0};  // rooms holding a checkpoint
  std::atomic<uint64_t> room_messages{0};    // verified room messages handled here
  std::atomic<uint64_t> storage_errors{0};   // failed commits (acks withheld; retried)
  std::atomic<uint64_t> storage_failing{0};  // 1 while the last commit failed
  std::atomic<uint64_t> storage_recoveries{0};  // commits that worked after failing ones
  // ReflectionGuard (issue 11, item 3): sends refused to unproved addresses out of credit,
  // probes sent, addresses proved.
  std::atomic<uint64_t> reflection_refused{0};
  std::atomic<uint64_t> reflection_refused_bytes{0};
  std::atomic<uint64_t> reflection_probes{0};
  std::atomic<uint64_t> reflection_proved{0};
  // Room admission (issue 11, item 4), RoomHost::admission() as it moves.
  std::atomic<uint64_t> rooms_opened{0};
  std::atomic<uint64_t> rooms_reloaded{0};
  std::atomic<uint64_t> rooms_refused_policy{0};
  std::atomic<uint64_t> rooms_refused_unproved{0};
  std::atomic<uint64_t> rooms_refused_rate{0};
  std::atomic<uint64_t> rooms_refused_full{0};
  std::atomic<uint64_t> rooms_dropped_unwritten{0};
  std::atomic<uint64_t> rooms_unloaded_idle{0};
  // Room updates from peers that the rooms served here took into their logs, or refused
  // (the swarms' counters, added up as they move: they stay when a room is closed).
  std::atomic<uint64_t> room_updates_accepted{0};
  std::atomic<uint64_t> room_updates_rejected{0};
  // Lookups of every kind the overlay ran (owner shard only). Succeeded: at least one
  // node answered. Started minus both: lookups in flight.
  std::atomic<uint64_t> lookups_started{0};
  std::atomic<uint64_t> lookups_succeeded{0};
  std::atomic<uint64_t> lookups_failed{0};
  // Finished lookups by duration: per bucket of kLookupDurationBoundsUs (not cumulative;
  // the last one is past every bound), and the sum. A reader derives the count from the
  // buckets, so its cumulative counts never exceed it.
  std::atomic<uint64_t> lookup_duration_buckets[kLookupDurationBuckets]{};
  std::atomic<uint64_t> lookup_duration_sum_us{0};
  std::atomic<uint64_t> dropped[wire::kVerdictCount]{};

  static void Add(std::atomic<uint64_t>& c, uint64_t n) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

// ControlCommand: a request from the control thread to the owner shard (the one with the
// overlay), and its answer. The control thread posts it with Shard::Post(); the owner
// claims it at its next loop iteration, works on it (a lookup takes a few round trips),
// fills the answer and sets `done` (release). Control path: allocating is fine here.
struct ControlCommand {
  enum class Kind : uint8_t {
    kSnapshot, kLookup, kProviders, kAnnounce, kSaveTable,
    // Rooms (an embedded client, node/client); `target` is the room id. Answered at once.
    kRoomJoin,     // open the room from `genesis` + `epochs` as `member`, join `bootstrap`
    kRoomPublish,  // write each of `payloads`; `published` gets their ids
    kRoomLeave,    // leave and stop serving the room
    kRoomState,    // the room's serialized state and figures (RoomFigures)
    kRoomEpoch,    // apply `epochs[0]` (the admin's next key epoch) and flood it
  };
  Kind kind = Kind::kSnapshot;
  wire::NodeId target{};  // lookup target or provider key

  // Room requests.
  std::vector<uint8_t> genesis;
  std::vector<std::vector<uint8_t>> epochs;
  std::optional<wire::KeyPair> member;  // the key the epochs' grants are sealed to
  std::vector<base::Endpoint> bootstrap;
  std::vector<std::vector<uint8_t>> payloads;

  // Answer.
  bool ok = false;
  std::string error;
  int64_t now_us = 0;
  std::vector<dht::PeerStatus> peers;  // kSnapshot
  base::Endpoint observed;
  dht::OverlayCounters overlay;
  size_t table_size = 0;
  std::optional<dht::SizeEstimate> size_density, size_walks;
  std::vector<dht::Contact> closest;    // kLookup, kProviders
  std::vector<dht::Contact> providers;  // kProviders
  uint32_t rounds = 0, requests = 0, acks = 0;
  std::vector<uint8_t> table_bytes;  // kSaveTable: the routing table file's contents
  std::vector<wire::Hash256> published;  // kRoomPublish: ids of the updates written
  struct RoomFigures {
    uint64_t log_size = 0;
    uint32_t peers = 0;        // swarm peers in the room's table
    uint32_t unacked = 0;      // own updates no relay has acknowledged yet
    bool syncing = false;      // a sync or checkpoint fetch is in progress
    bool caught_up = false;    // our heads equal a peer's last announced heads
    bool can_write = false;
    int64_t epoch = -1;
    wire::Hash256 state_hash{};  // what every member that holds the same log agrees on
    uint64_t event_mark = 0;     // the listener's Mark() when the state was taken
    uint64_t restored = 0;       // updates reloaded from storage (a member's cache)
  } room;                      // kRoomState
  std::vector<uint8_t> state;  // kRoomState: Room::SerializeState
  std::vector<wire::Hash256> heads;  // kRoomState: the log's current heads (sorted)
  std::atomic<bool> done{false};
};

// How long the owner works on one command before answering "timed out" (lookups end by
// themselves well before: every request has a timeout and a bounded number of tries).
inline constexpr int64_t kCommandDeadlineUs = 30'000'000;
// Size estimates: the first this long after start, then at this period.
inline constexpr int64_t kSizeEstimateFirstUs = 20'000'000;
inline constexpr int64_t kSizeEstimateIntervalUs = 300'000'000;
// Room discovery (issue 5, item 2): every node announces the rooms it serves as provider
// records under the room id, and looks up each room's providers when it opens the room,
// then again after 5 s, 10 s, ... up to every 10 minutes, connecting the room's swarm to
// at most kRoomProvidersJoinMax of them per lookup (relays find each other this way, and
// a joiner finds relays that its invite does not name).
inline constexpr int64_t kRoomDiscoveryFirstUs = 5'000'000;
inline constexpr int64_t kRoomDiscoveryMaxUs = 600'000'000;
inline constexpr size_t kRoomProvidersJoinMax = 8;
inline constexpr size_t kRoomLookupsMax = 8;        // provider lookups in flight (owner)
inline constexpr size_t kRoomPeersFoundMax = 256;   // found, not yet handed to a swarm

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

  // Run: the loop, until *stop. Returns after flushing queued sends.
  void Run() noexcept;

  // Post: hands `cmd` to this (owner) shard; it sets cmd->done (release) when answered,
  // within kCommandDeadlineUs. One command at a time; false if one is pending. Any thread.
  bool Post(ControlCommand* cmd) noexcept;
  // Withdraw: takes back a command the shard has not claimed yet. False: the shard has it
  // and will set done by its deadline, so `cmd` must stay alive until then.
  bool Withdraw(ControlCommand* cmd) noexcept;

  // --- One step at a time, for fuzzers and tests (Run() does these in its loop). Each
  // runs the same dispatch as Run(), on the caller's clock; the caller owns the thread.
  // Receive: one datagram from the transport, through every check in order of cost.
  void Receive(const ring::RecvDatagram& d, int64_t now_us) noexcept {
    now_us_ = now_us;
    HandleDatagram(d, now_us);
  }
  // DeliverMail: takes this shard's mail from the other shards, then sends what it queued
  // for them (with their doorbells).
  void DeliverMail(int64_t now_us) noexcept {
    now_us_ = now_us;
    DrainMailboxes(now_us);
    PublishMailboxes();
  }
  // Tick: the periodic work (timeouts, pings, lookups, room timers).
  void Tick(int64_t now_us) noexcept {
    now_us_ = now_us;
    OnTick(now_us);
  }
  // Commit: one storage transaction and the acks it made true.
  // (The same path as Run's: a failed commit is counted, reported and backed off.)
  void Commit() noexcept;
  dht::Overlay* overlay() noexcept { return overlay_.get(); }
  base::Outbox& outbox() noexcept;
  room::RoomHost& rooms() noexcept { return *rooms_; }

  const ShardCounters& counters() const noexcept { return counters_; }
  // StorageError: why the last storage commit failed while commits are failing (path and
  // error); empty when the last one worked. Any thread.
  std::string StorageError() const {
    std::lock_guard<std::mutex> lock(storage_mu_);
    return storage_error_;
  }
  // RoomsRestore: reloads the rooms in this shard's storage. Call before Run().
  absl::Status RestoreRooms() { return rooms_->Restore(); }
  // SavedTableBytes: the owner's routing table as a file's bytes (empty on other shards).
  // REQUIRES: Run() has returned (the shard thread no longer touches the overlay).
  std::vector<uint8_t> SavedTableBytes() const {
    return overlay_ ? dht::SerializeTable(overlay_->SavedTable()) : std::vector<uint8_t>{};
  }
  ring::Transport& transport() noexcept { return *transport_; }
  const char* transport_name() const noexcept { return transport_->name(); }

 private:
  class TransportOutbox;

  void HandleDatagram(const ring::RecvDatagram& d, int64_t now_us) noexcept;
  void HandleVerified(const base::Endpoint& from, const wire::Message& msg, bool from_mailbox,
                      int64_t now_us) noexcept;
  void HandlePing(const base::Endpoint& from, const wire::Message& msg, int64_t now_us) noexcept;
  void HandleRoom(const base::Endpoint& from, const wire::Message& msg, int64_t now_us) noexcept;
  // Forward: copies a datagram into the mailbox towards `to`. Counts a full mailbox.
  void Forward(uint32_t to, MailItem::Kind kind, const base::Endpoint& from,
               std::span<const uint8_t> bytes) noexcept;
  void DrainMailboxes(int64_t now_us) noexcept;
  void PublishMailboxes() noexcept;
  void OnTick(int64_t now_us) noexcept;
  // Room discovery: RoomDiscoveryTick schedules it per room; ProvideRoom runs on the owner
  // shard; DeliverRoomPeers hands what lookups found to the rooms' swarms.
  void RoomDiscoveryTick(int64_t now_us) noexcept;
  bool ProvideRoom(const wire::Hash256& room, bool announce, int64_t now_us) noexcept;
  void DeliverRoomPeers(int64_t now_us) noexcept;
  void ConnectRoomPeer(const wire::Hash256& room, const base::Endpoint& peer,
                       int64_t now_us) noexcept;
  // Commands from the control thread (owner shard only).
  class Events;
  void PollCommand(int64_t now_us) noexcept;
  void StartCommand(ControlCommand* cmd, int64_t now_us) noexcept;
  // StartRoomCommand: the room kinds; each is answered before it returns.
  void StartRoomCommand(ControlCommand* cmd, int64_t now_us) noexcept;
  void FinishCommand() noexcept;
  void MaybeEstimateSize(int64_t now_us) noexcept;
  bool PingSeenRecently(const base::Endpoint& from, int64_t now_us) noexcept;
  // Received: credits a datagram handled here to its source (ReflectionGuard). MaybeProbe:
  // after handling it, probes the source if the guard wants that.
  void Received(const base::Endpoint& from, const wire::Message& msg, int64_t now_us) noexcept {
    guard_.OnReceive(from, msg.bytes().size(), now_us);
  }
  void MaybeProbe(const base::Endpoint& from, int64_t now_us,
                  uint32_t hint = wire::kNoShardHint) noexcept {
    if (guard_.ShouldProbe(from, now_us)) SendProbe(from, now_us, hint);
  }
  // SendProbe: a ping with a fresh txid to `to`, with shard hint `hint` (which of its
  // shards answers); the pong proves the address.
  void SendProbe(const base::Endpoint& to, int64_t now_us, uint32_t hint) noexcept;
  void PublishReflectionCounters() noexcept;
  // PublishAdmission: the room host's admission counters, and the rooms it stopped serving
  // withdrawn from the DHT (owner shard; elsewhere their announcements expire).
  void PublishAdmission() noexcept;
  void Drop(wire::Verdict v) noexcept { ShardCounters::Add(counters_.dropped[int(v)], 1); }
  void PublishTransportStats() noexcept;
  // CommitStorage: the room store's group commit and the acks it makes true; a failure is
  // counted, published (StorageError) and retried with backoff.
  void CommitStorage(int64_t now_us) noexcept;

  const ShardConfig config_;
  const wire::KeyPair& identity_;
  std::unique_ptr<ring::Transport> transport_;
  Mailboxes* mailboxes_;
  const std::atomic<bool>* stop_;
  std::unique_ptr<TransportOutbox> outbox_;
  dht::PingResponder responder_;
  RateLimiter limiter_;
  ReflectionGuard guard_;
  class GuardCheck : public room::SourceCheck {
   public:
    explicit GuardCheck(const ReflectionGuard* g) : g_(g) {}
    bool Proved(const base::Endpoint& a, int64_t now_us) const noexcept override {
      return g_->IsProved(a, now_us);
    }

   private:
    const ReflectionGuard* g_;
  };
  GuardCheck guard_check_{&guard_};
  wire::Encoder probe_encoder_;
  int64_t now_us_ = 0;  // the loop iteration's clock, for sends (TransportOutbox)
  base::Rng rng_;
  std::unique_ptr<dht::Overlay> overlay_;  // owner shard only
  wire::Encoder room_encoder_;
  std::unique_ptr<room::RoomHost> rooms_;
  std::vector<uint8_t> pending_publish_;   // per target shard: items pushed, not published
  struct SeenEntry {
    uint64_t key = 0;
    int64_t last_us = 0;
  };
  std::unique_ptr<SeenEntry[]> ping_seen_;
  std::atomic<ControlCommand*> command_request_{nullptr};
  ControlCommand* command_ = nullptr;  // claimed, in progress
  uint32_t command_handle_ = 0;        // the lookup serving it
  int64_t command_deadline_us_ = 0;
  std::unique_ptr<Events> events_;
  std::optional<dht::SizeEstimate> size_density_, size_walks_;
  int64_t last_commit_us_ = 0;  // see kGroupCommitUs
  int64_t storage_retry_at_us_ = 0;   // while commits fail: not before this
  int64_t storage_backoff_us_ = 0;    // 0: the last commit worked
  mutable std::mutex storage_mu_;     // guards storage_error_ (shard writes, control reads)
  std::string storage_error_;
  bool commit_deferred_ = false;
  struct RoomLookup {
    wire::Hash256 room{};
    uint32_t handle = 0;  // 0: free
  };
  RoomLookup room_lookups_[kRoomLookupsMax];  // owner: provider lookups in flight
  RoomLookup* starting_room_lookup_ = nullptr;
  struct RoomPeerFound {
    wire::Hash256 room{};
    base::Endpoint peer;
  };
  std::vector<RoomPeerFound> room_peers_found_;  // reserved: filled inside overlay calls
  int64_t next_size_estimate_us_ = 0;
  ShardCounters counters_;
  ring::TransportStats last_stats_{};
};

}  // namespace ringpeer::shard
