// NodeCore: the whole node of one shard, without I/O (DESIGN.md sections 1, 2 and 4).
//
// It owns what a shard does apart from the socket, the thread and the mailboxes' rings:
// the per-address rate limit, ping answers, the reflection guard, the overlay (on the
// owner shard), the rooms of its partition, the storage seam (room::RoomStorage) with
// acks released only after a commit made them true, and mail for other shards as intents.
// It reads no clock (every call carries `now_us`), opens no socket and starts no thread:
//
//   datagram in   Receive(now, from, bytes)  -> a Verdict (kOk, or why it was dropped)
//                 ReceiveBatch(now, batch)   -> the same, pings first
//   mail in       OnMail(now, item)
//   time          Tick(now)                  (timers, lookups, rooms; every kTickUs or so)
//   durability    Commit(now)                (one storage commit, then its acks)
//   out           the sink Outbox (datagrams, through the reflection guard) and the
//                 MailSink (items for other shards); both given at construction.
//
// The shard (node/shard) drives one per core from its io_uring loop; the simulator
// (tests/sim) drives thousands on a virtual clock over an in-memory network; the fuzzers
// (tests/fuzz) drive one or two with state. They all run this one dispatch.
//
// A datagram is checked in order of cost: size and header, the sender's token bucket, the
// FlatBuffers Verifier, then the handler (signatures last). Verdicts keep their reason:
// a room refusing a record (stale epoch, behind its checkpoint) is kRoomRefused, not
// kBadSignature; our own full queues (send slots, a mailbox) are counted as ours.
//
// Thread-compatible: one thread calls everything except counters(), StorageError() and
// what ControlCommand documents.
#pragma once

#include <atomic>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/endpoint.h"
#include "base/outbox.h"
#include "base/rng.h"
#include "dht/overlay.h"
#include "dht/ping_responder.h"
#include "dht/table_file.h"
#include "node/core/mail.h"
#include "node/core/rate_limiter.h"
#include "node/core/reflection_guard.h"
#include "node/room/room_host.h"
#include "node/room/storage.h"
#include "wire/crypto.h"
#include "wire/encode.h"
#include "wire/header.h"
#include "wire/message.h"
#include "wire/verdict.h"

namespace ringpeer::core {

// A ping from an address the owner has heard about within this window is not reported
// to the owner again (each report costs a mailbox slot or a table lookup).
inline constexpr int64_t kPingSeenIntervalUs = 2'000'000;

struct CoreConfig {
  uint32_t index = 0;
  uint32_t shards = 1;
  uint32_t owner = 0;  // the shard that owns the overlay's peer table
  uint32_t rate_limit_per_s = 5000;
  uint32_t rate_limit_burst = 10000;
  uint32_t rate_limit_entries = 16384;
  // Addresses whose reflection credit and proof the core tracks (ReflectionGuard).
  uint32_t reflection_entries = 16384;
  // Senders whose pings were reported to the owner recently (power of two).
  uint32_t ping_seen_entries = 4096;
  // The overlay's configuration (owner only). Its `events`, if set, is told everything
  // the core's own listener is (the simulator's measurements).
  dht::OverlayConfig overlay;
  std::vector<dht::SavedContact> restore;  // the saved routing table (owner only)
  // Rooms: this core serves the rooms whose id's first byte is its index modulo shards.
  // With a storage it is a relay for them (stores logs, acks durably, serves joiners);
  // without one it only relays live traffic and never acks. Owned by the caller.
  room::RoomStorage* room_storage = nullptr;
  // True: a relay (stores every room its members bring, acks once durable, reloads its
  // rooms at start). False with a storage: a member whose storage is its room cache.
  bool room_relay = true;
  uint32_t rooms_max = 256;
  // Keys the node announces itself, besides its rooms' ids: the overlay gets at least
  // rooms_max x shards + own_announces announcement slots (56 bytes each).
  uint32_t own_announces = 16;
  // Which rooms a relay serves (open or listed; per-source limits; idle unloading). The
  // core sets `sources` (its ReflectionGuard).
  room::AdmissionConfig room_admission;
  // Limits and timers of every room's swarm (publish limits, keepalive, sync windows);
  // `relay` and `self` are set by the core.
  room::SwarmConfig room_swarm;
  // Told about every room event on the core's thread (an embedded client's event ring,
  // node/client); may be null. Owned by the caller; outlives the core.
  room::SwarmListener* room_listener = nullptr;
  // Network size estimates: the first this long after start, then at this period (0: the
  // core never starts one by itself; the simulator schedules its own).
  int64_t size_estimate_first_us = 20'000'000;
  int64_t size_estimate_interval_us = 300'000'000;
  // The core's randomness and clock start, both from its caller (it reads neither): the
  // shard passes a random seed and the monotonic clock (or the fixed ones a test set);
  // tests, fuzzers and simulators pass fixed ones, which make a core reproducible.
  // REQUIRES (NodeCore): rng_seed != 0, start_us >= 0. The Shard fills in 0 / -1.
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

// Counters published for status and metrics. Written only by the core's thread; read
// from any thread (relaxed atomics).
struct Counters {
  std::atomic<uint64_t> received{0};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> pings_answered{0};
  std::atomic<uint64_t> mailbox_out{0};
  std::atomic<uint64_t> mailbox_in{0};
  std::atomic<uint64_t> loop_iterations{0};
  std::atomic<uint64_t> send_errors{0};
  std::atomic<uint64_t> recv_no_buffers{0};
  // UDP GRO (ring::TransportConfig::recv_gro): receives that carried a burst, and
  // datagrams of such bursts dropped (more than a Poll's batch could take).
  std::atomic<uint64_t> recv_coalesced{0};
  std::atomic<uint64_t> recv_coalesced_dropped{0};
  // The transport's own work (ring::TransportStats): system calls, and completions reaped
  // (io_uring only), for the per-datagram cost of each transport.
  std::atomic<uint64_t> transport_syscalls{0};
  std::atomic<uint64_t> transport_completions{0};
  std::atomic<uint64_t> rooms{0};            // rooms this shard serves
  // Of those, by the reducer kind their genesis names (index: room::ReducerKind, 0
  // unused); a relay carries app rooms (kOpaque) unread. Set every tick.
  std::atomic<uint64_t> rooms_by_reducer[4] = {};
  std::atomic<uint64_t> rooms_checkpointed{0};  // rooms holding a checkpoint
  std::atomic<uint64_t> room_messages{0};    // verified room messages handled here
  std::atomic<uint64_t> storage_errors{0};   // failed commits (acks withheld; retried)
  std::atomic<uint64_t> storage_failing{0};  // 1 while the last commit failed
  std::atomic<uint64_t> storage_recoveries{0};  // commits that worked after failing ones
  // The store's figures (RoomStorage::commit_figures), published after each batch: the
  // batches made durable and the time they took.
  std::atomic<uint64_t> storage_commits{0};
  std::atomic<uint64_t> storage_commit_us{0};
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
  // DHT reads answered on this shard (issue 14): by the overlay on the owner, from the
  // owner's published snapshot elsewhere.
  std::atomic<uint64_t> find_node_answered{0};
  std::atomic<uint64_t> get_providers_answered{0};
  std::atomic<uint64_t> walks_answered{0};
  // Overlay datagrams this shard forwarded to the owner: all of them, and the reads among
  // them (FindNode, GetProviders, Walk: only before the first snapshot arrives). The rest
  // are writes: replies to the owner's requests, Announce, routed and gossip messages.
  std::atomic<uint64_t> overlay_forwarded{0};
  std::atomic<uint64_t> overlay_forwarded_reads{0};
  std::atomic<uint64_t> dht_snapshots{0};  // snapshots published (owner) or taken (others)
  std::atomic<uint64_t> dropped[wire::kVerdictCount]{};

  static void Add(std::atomic<uint64_t>& c, uint64_t n) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

// ControlCommand: a request from the control thread to the owner core (the one with the
// overlay), and its answer. The control thread posts it with Shard::Post(); the owner
// shard claims it at its next loop iteration and hands it to its core (StartCommand),
// which works on it (a lookup takes a few round trips), fills the answer and sets `done`
// (release). Control path: allocating is fine here.
struct ControlCommand {
  enum class Kind : uint8_t {
    kSnapshot, kLookup, kProviders, kAnnounce, kSaveTable,
    // Rooms (an embedded client, node/client); `target` is the room id. Answered at once.
    kRoomJoin,     // open the room from `genesis` + `epochs` as `member`, join `bootstrap`
                   // (no genesis: by room id, from the relays: RoomHost::JoinById)
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
    bool joining = false;        // a join by id still waits for the room's genesis
    uint64_t epochs_refused = 0;   // key epochs peers sent that the admin did not sign
    uint64_t genesis_refused = 0;  // genesis records that were not the room's (any room)
    uint64_t entries_held = 0;   // log entries kept (Room::entries_held)
    uint64_t pruned = 0;         // updates pruned behind a checkpoint
    uint64_t held_bytes = 0;     // Room::HeldBytes
  } room;                      // kRoomState
  std::vector<uint8_t> state;  // kRoomState: Room::SerializeState
  std::vector<wire::Hash256> heads;  // kRoomState: the log's current heads (sorted)
  std::atomic<uint32_t> done{0};  // 1 when answered; a futex word (Shard::PollCommand)
};

// How long the owner works on one command before answering "timed out". Past a lookup's
// own deadline (it then ends with what answered), so that `ringpeer lookup` among slow or
// hostile nodes gets the answer rather than "timed out": most lookups take a few seconds,
// but among a quarter of hostile nodes the slowest took ~45 s in the simulator.
inline constexpr int64_t kCommandDeadlineUs = dht::kLookupDurationMaxUs + 5'000'000;
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
// While rooms are served, their timers want a tick at least this often.
inline constexpr int64_t kRoomTickUs = 50'000;

// IsDhtRead: the overlay requests any shard answers from the owner's snapshot.
inline bool IsDhtRead(wire::MessageType t) noexcept {
  return t == wire::MessageType::kFindNode || t == wire::MessageType::kGetProviders ||
         t == wire::MessageType::kWalk;
}

// IsPing: whether a received datagram's header names a ping (checked properly later).
inline bool IsPing(const uint8_t* data, size_t size) noexcept {
  return size > offsetof(wire::Header, type) &&
         data[offsetof(wire::Header, type)] == static_cast<uint8_t>(wire::MessageType::kPing);
}

class NodeCore {
 public:
  // REQUIRES: identity, sink and mail outlive the core. `mail` may be null on a one-shard
  // node (nothing is ever forwarded there). `sink` gets every datagram the core sends,
  // after the reflection guard allowed it; its Buffer() may hand out a transport's slot.
  NodeCore(const CoreConfig& config, const wire::KeyPair& identity, base::Outbox* sink,
           MailSink* mail);
  ~NodeCore();
  NodeCore(const NodeCore&) = delete;
  NodeCore& operator=(const NodeCore&) = delete;

  // Receive: one datagram from the network, through every check in order of cost.
  // `bytes` must be 8-byte aligned (the receive ring's buffers are). `truncated`: the
  // transport cut it (longer than any datagram of ours). Returns kOk or why it was
  // dropped (already counted).
  wire::Verdict Receive(int64_t now_us, const base::Endpoint& from,
                        std::span<const uint8_t> bytes, bool truncated = false) noexcept;
  // ReceiveBatch: a batch (anything with data, size, from, truncated), pings first: their
  // answers and the pongs to return-routability probes leave before the requests that the
  // batch's other datagrams trigger, so a peer proves itself before its requests arrive.
  // The rooms' floods of the batch leave packed at its end (RoomHost::BeginBatch).
  template <typename Datagram>
  void ReceiveBatch(int64_t now_us, std::span<const Datagram> batch) noexcept {
    for (const Datagram& d : batch) {
      if (IsPing(d.data, d.size)) Receive(now_us, d.from, {d.data, d.size}, d.truncated);
    }
    BeginRoomBatch();
    for (const Datagram& d : batch) {
      if (!IsPing(d.data, d.size)) Receive(now_us, d.from, {d.data, d.size}, d.truncated);
    }
    EndRoomBatch();
  }
  void BeginRoomBatch() noexcept;
  void EndRoomBatch() noexcept;
  // OnMail: one item another shard's core sent this one.
  void OnMail(int64_t now_us, const MailItem& item) noexcept;
  // Tick: the periodic work (timeouts, pings, lookups, room timers, counters).
  void Tick(int64_t now_us) noexcept;
  // Durability in two halves (RoomHost::CommitStart/CommitPoll): CommitStart hands what
  // the rooms staged to the storage as one batch (REQUIRES: !CommitInFlight()); CommitPoll,
  // called every loop iteration, takes a finished batch's result: OK sends the acks it made
  // true, a failure is counted, published (StorageError) and backed off (StorageDue says
  // when to try again). True when a result was taken. Commit does both and waits, also for
  // a batch already in flight (tests, the simulator, a shard's exit).
  void CommitStart(int64_t now_us) noexcept;
  bool CommitPoll(int64_t now_us) noexcept;
  bool CommitInFlight() const noexcept;
  void Commit(int64_t now_us) noexcept;
  bool StorageDue(int64_t now_us) const noexcept {
    return storage_backoff_us_ == 0 || now_us >= storage_retry_at_us_;
  }

  // Commands (owner only): StartCommand takes one; CheckCommand, called every loop
  // iteration, answers it (sets done) once its lookup ended or its deadline passed.
  bool command_busy() const noexcept { return command_ != nullptr; }
  void StartCommand(int64_t now_us, ControlCommand* cmd) noexcept;
  void CheckCommand(int64_t now_us) noexcept;

  const CoreConfig& config() const noexcept { return config_; }
  dht::Overlay* overlay() noexcept { return overlay_.get(); }
  // outbox: the core's own Outbox (through the reflection guard), for tests and tools
  // that call the overlay or the rooms directly.
  base::Outbox& outbox() noexcept;
  room::RoomHost& rooms() noexcept { return *rooms_; }
  ReflectionGuard& guard() noexcept { return guard_; }
  const Counters& counters() const noexcept { return counters_; }
  Counters& counters() noexcept { return counters_; }
  // StorageError: why the last storage commit failed while commits are failing (path and
  // error); empty when the last one worked. Any thread.
  std::string StorageError() const {
    std::lock_guard<std::mutex> lock(storage_mu_);
    return storage_error_;
  }
  // RestoreRooms: reloads the rooms in the storage (start-up).
  absl::Status RestoreRooms() { return rooms_->Restore(); }
  // SavedTableBytes: the owner's routing table as a file's bytes (empty on other cores).
  std::vector<uint8_t> SavedTableBytes() const {
    return overlay_ ? dht::SerializeTable(overlay_->SavedTable()) : std::vector<uint8_t>{};
  }
  // NextWakeUs: the earliest time after `now_us` that Tick has work: the overlay's
  // timers, and every kRoomTickUs while rooms are served (their timers are checked at
  // every tick). The shard ticks every kTickUs anyway; a simulator sleeps until then.
  int64_t NextWakeUs(int64_t now_us) const noexcept;

 private:
  class GuardedOutbox;
  class Events;

  wire::Verdict Dispatch(const base::Endpoint& from, const wire::Message& msg,
                         bool from_mailbox, int64_t now_us) noexcept;
  wire::Verdict HandlePing(const base::Endpoint& from, const wire::Message& msg,
                           int64_t now_us) noexcept;
  wire::Verdict HandleRoom(const base::Endpoint& from, const wire::Message& msg,
                           int64_t now_us) noexcept;
  // Forward: copies a datagram into the mailbox towards `to` (kOk, or kMailboxFull).
  wire::Verdict Forward(uint32_t to, MailItem::Kind kind, const base::Endpoint& from,
                        std::span<const uint8_t> bytes) noexcept;
  void RoomDiscoveryTick(int64_t now_us) noexcept;
  // OnCommitResult: counters, the published error and the backoff for one batch's result.
  void OnCommitResult(int64_t now_us, const absl::Status& s) noexcept;
  bool ProvideRoom(const wire::Hash256& room, bool announce, int64_t now_us) noexcept;
  void DeliverRoomPeers(int64_t now_us) noexcept;
  void ConnectRoomPeer(const wire::Hash256& room, const base::Endpoint& peer,
                       int64_t now_us) noexcept;
  void StartRoomCommand(ControlCommand* cmd, int64_t now_us) noexcept;
  void FinishCommand() noexcept;
  void MaybeEstimateSize(int64_t now_us) noexcept;
  bool PingSeenRecently(const base::Endpoint& from, int64_t now_us) noexcept;
  void Received(const base::Endpoint& from, const wire::Message& msg, int64_t now_us) noexcept {
    guard_.OnReceive(from, msg.bytes().size(), now_us);
  }
  void MaybeProbe(const base::Endpoint& from, int64_t now_us,
                  uint32_t hint = wire::kNoShardHint) noexcept {
    if (guard_.ShouldProbe(from, now_us)) SendProbe(from, now_us, hint);
  }
  // AnswerFromSnapshot: a DHT read (FindNode, GetProviders, Walk) answered from the
  // owner's snapshot on a shard without the overlay; false when it is not one of those or
  // no snapshot has arrived yet (the caller forwards it to the owner).
  bool AnswerFromSnapshot(const base::Endpoint& from, const wire::Message& msg,
                          int64_t now_us, wire::Verdict* verdict) noexcept;
  // PublishSnapshots (owner): a fresh DhtSnapshot to each other shard whose previous one
  // came back, every dht::kSnapshotIntervalUs.
  void PublishSnapshots(int64_t now_us) noexcept;
  // ReturnSnapshot (readers): hands a used snapshot back to the owner, or keeps it to
  // retry at the next tick while that mailbox is full.
  void ReturnSnapshot(dht::DhtSnapshot* old) noexcept;
  // CountAnswered: a DHT read answered here (either path).
  void CountAnswered(wire::MessageType type) noexcept;
  // SendProbe: a ping with a fresh txid to `to`, with shard hint `hint` (which of its
  // shards answers); the pong proves the address.
  void SendProbe(const base::Endpoint& to, int64_t now_us, uint32_t hint) noexcept;
  void PublishReflectionCounters() noexcept;
  // PublishAdmission: the room host's admission counters, and the rooms it stopped serving
  // withdrawn from the DHT (owner; elsewhere their announcements expire).
  void PublishAdmission() noexcept;
  // Drop: counts a datagram dropped for `v` (our own full send queue is counted by the
  // transport, so it is not counted again here) and returns `v`.
  wire::Verdict Drop(wire::Verdict v) noexcept {
    if (v != wire::Verdict::kSendQueueFull) Counters::Add(counters_.dropped[int(v)], 1);
    return v;
  }

  const CoreConfig config_;
  const wire::KeyPair& identity_;
  base::Outbox* sink_;
  MailSink* mail_;
  std::unique_ptr<GuardedOutbox> outbox_;
  // The one encoder of this core's thread: probes, the ping responder, the overlay and
  // the rooms all encode with it (each call finishes its datagram before it returns, so
  // nothing is shared across calls; one buffer instead of four, ~1.2 KB each).
  wire::Encoder encoder_;
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
  // TableProofs: the owner's overlay vouches for its verified peers (the routing table
  // and the verified contacts), so the guard does not have to remember each of them.
  class TableProofs : public ProofSource {
   public:
    explicit TableProofs(const NodeCore* core) : core_(core) {}
    bool Vouches(const base::Endpoint& addr, int64_t now_us) const noexcept override {
      return core_->overlay_ != nullptr && core_->overlay_->ProvedHost(addr, now_us, kProofTtlUs);
    }

   private:
    const NodeCore* core_;
  };
  TableProofs table_proofs_{this};
  int64_t now_us_ = 0;  // the current call's clock, for sends (GuardedOutbox)
  base::Rng rng_;
  std::unique_ptr<Events> events_;
  std::unique_ptr<dht::Overlay> overlay_;  // owner only
  std::unique_ptr<room::RoomHost> rooms_;
  struct SeenEntry {
    uint64_t key = 0;
    int64_t last_us = 0;
  };
  std::unique_ptr<SeenEntry[]> ping_seen_;
  ControlCommand* command_ = nullptr;  // claimed, in progress
  uint32_t command_handle_ = 0;        // the lookup serving it
  int64_t command_deadline_us_ = 0;
  std::optional<dht::SizeEstimate> size_density_, size_walks_;
  int64_t storage_retry_at_us_ = 0;   // while commits fail: not before this
  int64_t storage_backoff_us_ = 0;    // 0: the last commit worked
  mutable std::mutex storage_mu_;     // guards storage_error_ (core writes, control reads)
  std::string storage_error_;
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
  // DHT snapshots (issue 14). Owner: two per shard (index 2 * shard + k; none for its
  // own), and which of them are back (bit k of snapshot_free_[shard]). Readers: the one
  // answers come from, and one waiting to go back while the mailbox is full.
  std::vector<std::unique_ptr<dht::DhtSnapshot>> snapshots_;
  std::vector<uint8_t> snapshot_free_;
  int64_t next_snapshot_us_ = 0;
  const dht::DhtSnapshot* snapshot_ = nullptr;
  dht::DhtSnapshot* snapshot_return_ = nullptr;
  std::unique_ptr<dht::SnapshotResponder> snapshot_responder_;
  Counters counters_;
};

}  // namespace ringpeer::core
