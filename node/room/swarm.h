// Swarm: one room on the network, sans-I/O (issue 5). It wraps a room::Room and speaks the
// room messages of wire/schemas/room_net.fbs with the room's other members and relays.
//
// Input: (now, from, verified wire::Message) through OnMessage, and Tick(now). Output:
// datagrams written to a base::Outbox, writes staged in a RoomStorage, and events to a
// SwarmListener. No sockets, clocks, threads or globals; randomness comes from an
// injected base::Rng. What it does:
//  - keeps a bounded table of swarm peers, refreshed by their RoomHeads (sent every
//    heads_interval_us, which is also the keepalive); the silent are dropped;
//  - floods each new update once to every peer but the one it came from, forwarding the
//    received datagram byte for byte; a bounded seen-set drops duplicates before any
//    signature check;
//  - acknowledges an update (RoomAck) only after the storage made it durable: acks queue
//    until the shard's Commit() succeeds and it calls ReleaseAcks();
//  - repairs gaps with RoomSync (the heads it has) answered by a windowed, rate-limited
//    stream of missing records, or "take the checkpoint" when that is cheaper;
//  - fetches checkpoints in hash-checked 1 KiB pieces from every peer that advertises
//    them, resumes after loss, keeps a matching cached state (Room::NeedsBlob);
//  - limits publishing per peer and per room, and sheds the fastest sender first,
//    telling it with RoomSlowDown.
//
// Shard-local; not thread-safe. Owning type: not copyable.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "base/endpoint.h"
#include "base/rng.h"
#include "base/token_bucket.h"
#include "base/outbox.h"
#include "base/seen_set.h"
#include "node/room/room.h"
#include "node/room/storage.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace ringpeer::room {

struct SwarmConfig {
  wire::NodeId self{};
  // A relay stores the log (it needs a storage) and fetches every new checkpoint, so it
  // can serve joiners. Members fetch every new checkpoint too (not only to join): the
  // checkpoint in effect is a barrier in the log's order, so members agree on the state
  // only once they hold the same one.
  bool relay = false;
  // Peers in one room's table. A relay fans out to each, so this bounds the work one
  // update costs it; a full table refuses new peers (they try another provider).
  uint32_t peers_max = 64;
  // Head announcement (and keepalive) period; a peer silent for peer_silent_us (five
  // periods: five lost datagrams in a row at 10% loss is 1 in 100,000) is dropped.
  int64_t heads_interval_us = 2'000'000;
  int64_t peer_silent_us = 10'000'000;
  // Records one RoomSync asks for; the stream is ack-clocked by the next RoomSync.
  uint16_t sync_window = 512;
  // No answer to a RoomSync or a piece request in this long: ask again (maybe elsewhere).
  int64_t retry_us = 200'000;
  // Datagrams a peer may draw from our sync and checkpoint serving, per second and burst:
  // enough for a 5 MB checkpoint in well under a second, bounded so a peer cannot make us
  // a traffic amplifier.
  uint32_t serve_per_s = 200'000;
  uint32_t serve_burst = 8192;
  // Fresh updates per second from one member (a relay peer forwards many authors: x16).
  // A shed member is told this rate (RoomSlowDown) and paces itself below it; `ringpeer
  // serve --room-publish-rate` sets it (burst: twice the rate).
  uint32_t peer_publish_per_s = 100;
  uint32_t peer_publish_burst = 200;
  uint32_t relay_publish_factor = 16;
  // Fresh updates per second for the whole room: past this, the fastest sender is shed.
  uint32_t room_publish_per_s = 1000;
  uint32_t room_publish_burst = 2000;
  // Piece requests in flight to one peer during a checkpoint fetch.
  uint32_t pieces_inflight_per_peer = 128;  // four ranges of 32
  // Leaves of a fetched checkpoint hashed per tick when its tree is rebuilt from its bytes
  // (CheckObjectTree): 2,048 (~2 MiB, ~3.5 ms) bounds the shard's pause; a 5 MB object
  // takes three ticks, the 64 MiB cap 32.
  uint32_t tree_leaves_per_tick = 2048;
  // A member with write access that publishes when this many updates have entered the log
  // since the newest checkpoint makes a new one (relays fetch it and serve it to joiners,
  // who then download the state instead of the whole log). 0: never.
  uint32_t checkpoint_every = 1000;
  // Retention: the log behind a checkpoint is kept this long after the checkpoint came
  // into effect here, then pruned from memory and storage (Room::PruneCovered,
  // RoomStorage::Prune), so a relay's memory and disk per room stay bounded. Members
  // that fall further behind take the checkpoint instead of the log. 0: never (the
  // library's default; `ringpeer serve --room-retention-s` sets it, 600 s by default).
  int64_t retention_us = 0;
};

// Checkpoints remembered for pruning (swarm_prune.cc): spaced at least retention / 16
// apart, so that they span several retentions however often checkpoints come.
inline constexpr size_t kPruneMarksMax = 64;

// Sync streams pack records up to kSyncInlineRecordBytesMax bytes into RoomSyncData
// datagrams, kSyncDataRecordBytes of records (each with ~kSyncRecordFramingBytes of
// framing) per datagram, which leaves room for the header, the fixed fields and a
// checkpoint reference.
inline constexpr size_t kSyncInlineRecordBytesMax = 920;
inline constexpr size_t kSyncDataRecordBytes = 944;
inline constexpr size_t kSyncRecordFramingBytes = 24;

// Forwarded update ids remembered (the flood's loop guard), and rejected ones (so that a
// replayed bad update is not verified again). At least the last N are remembered.
inline constexpr uint32_t kSeenIdsMax = 8192;
inline constexpr uint32_t kRejectedIdsMax = 1024;
// Acks waiting for the next commit; past this, new ones are dropped (publishers retry).
inline constexpr size_t kAcksQueuedMax = 4096;
// Own updates waiting for a relay's ack, retried every retry interval x 4 up to 8 times.
inline constexpr size_t kUnackedMax = 512;
inline constexpr uint32_t kPublishRetriesMax = 8;
// Checkpoint ids this node tried and failed (bad root, stale): not fetched again.
inline constexpr size_t kTriedCheckpointsMax = 8;
// A sync that gets no answer this many times in a row is abandoned (next heads retry it).
inline constexpr uint32_t kSyncAttemptsMax = 8;
// Updates larger than one datagram arrive as RoomUpdatePiece datagrams and are reassembled
// here, verified once whole. Memory held for incomplete ones is bounded per sending peer
// and per room; a piece that would pass either bound is dropped and counted (its sender
// resends). A partial update silent for retry_us asks its sender for the missing pieces,
// up to kPartialAsksMax times, then is dropped (a later resend starts it again).
// Key epochs larger than a datagram come the same way (RoomUpdatePiece with key_epoch):
// one of the largest (192 KiB) and an update fit a peer's share.
inline constexpr size_t kPartialBytesPerPeerMax = 4 * kUpdateBytesMax;    // 264 KiB
static_assert(kPartialBytesPerPeerMax >= kKeyEpochBytesMax + kUpdateBytesMax);
inline constexpr size_t kPartialBytesPerRoomMax = 16 * kUpdateBytesMax;   // ~1 MiB
inline constexpr uint32_t kPartialAsksMax = 5;
// Key epochs that arrived before their predecessor (pieces of a large one complete after
// a small later one): held, bounded, and applied in order once the gap is filled, so a
// member that missed several rotations catches up through every epoch.
inline constexpr size_t kFutureEpochsMax = 8;
// Key epoch bytes sent to one peer at a time when it is behind (its heads name an older
// epoch): at least one whole epoch, then up to this; the peer's next heads (sent at once
// when it applies one) ask for the rest, so a joiner's memory bound is never passed.
inline constexpr size_t kEpochBurstBytesMax = kKeyEpochBytesMax;
// Peers that sent a key epoch or genesis the admin did not sign (a lying relay): dropped
// and not admitted again. Honest nodes forward only records they verified.
inline constexpr size_t kRefusedPeersMax = 16;
// How long a shed publisher is told to wait.
inline constexpr uint32_t kSlowDownRetryMs = 1000;
// Publish's refusals that only mean "not now" start with this: a relay asked us to slow
// down, we pace ourselves at the rate it named, or every own update in flight waits for
// an ack. The caller waits and publishes the same payload again (node/client does); any
// other error is final.
inline constexpr char kPublishBusyPrefix[] = "busy: ";
inline bool IsPublishBusy(std::string_view error) noexcept {
  return error.substr(0, sizeof(kPublishBusyPrefix) - 1) == kPublishBusyPrefix;
}
// The longest wait between join attempts to peers that do not answer (backoff from
// 4 x retry_us, doubling).
inline constexpr int64_t kJoinRetryMaxUs = 6'400'000;

enum class SwarmEvent : uint8_t {
  kUpdateApplied,     // id: an update entered the log (from a peer or Publish)
  kStateChanged,      // the state hash changed
  kPeerJoined,        // peer: added to the table
  kPeerLeft,          // peer: dropped (silent, left)
  kConnected,         // the first peer is heard from
  kDisconnected,      // the last peer was dropped
  kCheckpointLoaded,  // id: a fetched checkpoint was put in effect
  kAcked,             // id: a relay acknowledged our update durably
  kSlowedDown,        // id: our update was shed; wait before publishing again
};

struct SwarmEventInfo {
  SwarmEvent kind;
  Hash256 id{};
  base::Endpoint peer;
  // kUpdateApplied only: a re-issue (or original) of a message already announced
  // (Room::Echo); an application that lists messages as they come skips it.
  bool echo = false;
};

class Swarm;
class SwarmListener {
 public:
  virtual ~SwarmListener() = default;
  virtual void OnSwarmEvent(Swarm& swarm, const SwarmEventInfo& event) = 0;
  // Mark: a position in the listener's event stream, taken where a room's state is read
  // (node/client: events before the mark are in that state, events after it are not).
  virtual uint64_t Mark() { return 0; }
  // OnLoopEnd: the shard ends a loop iteration (after the events it raised), so a listener
  // that wakes a consumer can do so once per iteration rather than once per event. Only
  // node/shard calls it (not the simulator or the swarm tests), and a node with a
  // listener has one shard (Node::Create).
  virtual void OnLoopEnd() {}
  // MakeAppReducer: a fresh reducer for an app room (ReducerKind::kOpaque) this node
  // opens, or null when it does not run that app. A relay then carries the room unread
  // (Room::OpenApp); a member's join fails. node/client asks ClientOptions::app_reducer.
  // Called on the shard thread while the room opens.
  virtual std::unique_ptr<Reducer> MakeAppReducer(const Genesis& genesis) {
    (void)genesis;
    return nullptr;
  }
};

struct SwarmCounters {
  uint64_t published = 0;        // own updates
  // Own updates written again because a checkpoint refused them (room.h, "Re-issue");
  // also counted in published.
  uint64_t reissued = 0;
  uint64_t accepted = 0;         // updates from peers that entered the log (or pending)
  uint64_t duplicates = 0;       // dropped before verification
  uint64_t rejected = 0;         // failed the room's checks
  uint64_t forwarded = 0;        // records sent by the flood (one per record and peer)
  uint64_t flood_datagrams = 0;  // datagrams they took (packed floods share one)
  uint64_t flood_bursts = 0;     // sends of several flood datagrams at once (UDP GSO)
  uint64_t flood_padding = 0;    // bytes of zeros that made a burst's datagrams one size
  uint64_t ack_datagrams = 0;    // datagrams acks_sent took (packed acks share one)
  uint64_t shed = 0;             // publishes dropped by the limits
  uint64_t slowdowns_sent = 0;
  uint64_t acks_sent = 0;
  uint64_t acks_received = 0;
  uint64_t syncs_sent = 0;       // RoomSync requests (each window counts)
  uint64_t syncs_served = 0;
  uint64_t sync_records_received = 0;
  uint64_t pieces_served = 0;
  uint64_t pieces_received = 0;
  uint64_t pieces_bad = 0;       // failed their hash: the sender is struck
  uint64_t checkpoints_loaded = 0;
  uint64_t checkpoints_made = 0;  // by this writer, every checkpoint_every updates
  uint64_t log_resets = 0;        // member logs dropped to start from a checkpoint
  // Checkpoints whose state our own replay did not reach (a member then starts over from
  // the checkpoint, so that it agrees with every member that did).
  uint64_t checkpoint_mismatches = 0;
  // Started over from a fetched checkpoint whose heads never came (StopAwaiting).
  uint64_t checkpoint_waits = 0;
  // Better checkpoints that did not cover the one this node started from (made on a
  // branch it never held): it started over from them.
  uint64_t checkpoint_forks = 0;
  uint64_t storage_errors = 0;
  uint64_t update_pieces_sent = 0;      // RoomUpdatePiece datagrams (first sends and resends)
  uint64_t update_pieces_received = 0;
  uint64_t update_pieces_dropped = 0;   // past a partial-memory bound, or a bad piece
  uint64_t update_pieces_asked = 0;     // RoomUpdatePieceGet sent for lost pieces
  uint64_t partials_expired = 0;        // incomplete updates given up
  uint64_t epochs_received = 0;         // key epochs from peers that the room took
  uint64_t epochs_refused = 0;          // key epochs that failed the room's checks (forged)
  uint64_t epochs_held = 0;             // key epochs held until their predecessor came
  uint64_t peers_refused = 0;           // peers dropped for a forged key epoch
  uint64_t pruned = 0;  // updates pruned behind a checkpoint after the retention
  uint64_t prunes = 0;  // prunes that dropped something
};

// FloodQueue: the floods of one receive batch, sent packed at its end (issue 15). The
// shard's RoomHost owns one and opens it around a receive batch (NodeCore::ReceiveBatch).
// While it is open a swarm copies each record it would flood here instead of sending it;
// Flush then sends, per swarm and peer, the records that peer did not send us, as few
// RoomPublish datagrams as the packing budget allows. Peers that sent none of them get the
// same datagrams: each is encoded once and copied into their send slots.
// Fixed memory (kBytes of records, kEntriesMax entries), allocated at the first flood
// (never again); a full queue is flushed early. Shard-local; not thread-safe.
class FloodQueue {
 public:
  static constexpr size_t kBytes = 64 * 1024;
  static constexpr size_t kEntriesMax = 256;
  struct Entry {
    Swarm* swarm = nullptr;  // null: sent, or its swarm closed
    uint32_t offset = 0;
    uint32_t size = 0;
    base::Endpoint except;  // the peer it came from
  };
  FloodQueue() = default;
  FloodQueue(const FloodQueue&) = delete;
  FloodQueue& operator=(const FloodQueue&) = delete;

  void Open() noexcept { open_ = true; }
  bool open() const noexcept { return open_; }
  // Close: Flush, and floods go out at once again.
  void Close(base::Outbox& out) noexcept;
  // Add: queues a copy of `record` (at most kPackedRecordBytesMax) for `swarm`'s peers but
  // `except`; flushes first when full.
  void Add(Swarm* swarm, Bytes record, const base::Endpoint& except, base::Outbox& out) noexcept;
  void Flush(base::Outbox& out) noexcept;
  // Forget: drops a closing swarm's entries.
  void Forget(const Swarm* swarm) noexcept;

  std::span<Entry> entries() noexcept { return entries_; }
  Bytes bytes(const Entry& e) const noexcept { return Bytes(bytes_.data() + e.offset, e.size); }
  std::span<uint8_t> scratch() noexcept { return scratch_; }

 private:
  bool open_ = false;
  std::vector<uint8_t> bytes_;
  size_t used_ = 0;
  std::vector<Entry> entries_;
  std::vector<uint8_t> scratch_;  // one encoded datagram, copied to several peers
};

// Records up to this size are packed with others into one RoomPublish (it is every record
// that fits a datagram, kUpdateInlineBytesMax); a larger one goes as pieces.
inline constexpr size_t kPackedRecordBytesMax =
    wire::kBodyBytesMax - wire::kRoomPublishFixedBytes - wire::kRoomPublishRecordFramingBytes;

class Swarm {
 public:
  // `room` is opened with `epoch_records` applied (kept to hand to peers that lack them).
  // `storage` (may be null for a member without persistence) receives every accepted
  // record; it must already hold the genesis and those epochs. `encoder` and `rng` are
  // the shard's and outlive the swarm; `listener` may be null.
  Swarm(std::unique_ptr<Room> room, std::vector<std::vector<uint8_t>> epoch_records,
        const SwarmConfig& config, RoomStorage* storage, wire::Encoder* encoder,
        base::Rng* rng, SwarmListener* listener);
  Swarm(const Swarm&) = delete;
  Swarm& operator=(const Swarm&) = delete;
  ~Swarm();

  // Connect: sends a RoomJoin to `peer` (a provider from the DHT or an invite's address).
  // It enters the table when it answers; Tick repeats the join until then.
  // `retry`: keep asking until it answers (bootstrap relays); false: one join datagram (a
  // provider found in the DHT, which may be long gone: the next discovery asks again).
  void Connect(int64_t now_us, const base::Endpoint& peer, base::Outbox& out,
               bool retry = true) noexcept;
  // Leave: tells every peer and empties the table.
  void Leave(base::Outbox& out) noexcept;
  // OnMessage: one verified room message about this room. kOk or why it was dropped.
  wire::Verdict OnMessage(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                          base::Outbox& out) noexcept;
  // Tick: heads announcements, dropping the silent, retries. Call every ~10-50 ms.
  void Tick(int64_t now_us, base::Outbox& out) noexcept;

  // Publish: writes, signs and floods an update; retried to relays until acked. Refused
  // with a kPublishBusyPrefix message (nothing written) while a relay asked us to slow
  // down, while pacing at its rate, or while kUnackedMax own updates wait for an ack.
  absl::StatusOr<Hash256> Publish(int64_t now_us, Bytes payload, base::Outbox& out);
  // MakeCheckpoint: makes a checkpoint of the current state, puts it in effect and
  // advertises it in the next heads. Needs write access.
  absl::Status MakeCheckpoint();
  // AddKeyEpoch: applies a key epoch (the admin's rotation) and floods it.
  Verdict AddKeyEpoch(Bytes record, base::Outbox& out) noexcept;
  // SetCachedState: a state kept from an earlier session, offered before joining; when a
  // fetched checkpoint has this state hash, its blob is not fetched.
  void SetCachedState(const Hash256& state_hash, std::vector<uint8_t> state);
  // Restore: refills an empty room from storage after a restart (order in storage.h).
  // Nothing is written back: it is already stored.
  void Restore(const LoadedRoom& loaded);
  // RequestSync: asks a peer for what this node lacks now (after a restart, say).
  void RequestSync(int64_t now_us, base::Outbox& out) noexcept;

  // set_flood_queue: the host's queue of a receive batch's floods (null: flood at once).
  void set_flood_queue(FloodQueue* q) noexcept { floods_ = q; }
  // SendQueuedFloods: FloodQueue::Flush's part for this swarm: its entries from `first` on,
  // packed per peer; marks them sent.
  void SendQueuedFloods(FloodQueue& q, size_t first, base::Outbox& out) noexcept;

  // Acks wait for durability (storage.h's CommitStart/CommitPoll). MarkAcks: the storage
  // starts a batch; the acks queued so far are the ones it makes true. ReleaseAcks: that
  // batch is durable: sends the marked acks (those a full send queue holds back go at the
  // next release). DropAcks: a batch failed: forgets every queued ack (publishers
  // retransmit).
  void MarkAcks() noexcept { acks_marked_ = acks_.size(); }
  void ReleaseAcks(base::Outbox& out) noexcept;
  void DropAcks() noexcept {
    acks_.clear();
    acks_marked_ = 0;
  }

  const Room& room() const noexcept { return *room_; }
  // set_genesis_record: the room's signed genesis, carried in our RoomJoins so that a
  // relay that does not serve the room yet can start to (RoomHost sets it).
  void set_genesis_record(std::vector<uint8_t> record) { genesis_record_ = std::move(record); }
  const Hash256& id() const noexcept { return room_->id(); }
  const SwarmCounters& counters() const noexcept { return counters_; }
  size_t peers_count() const noexcept;
  // HasPeer: `addr` is in the room's peer table (heard from, not yet dropped).
  bool HasPeer(const base::Endpoint& addr) noexcept { return FindPeer(addr) != nullptr; }
  // Discovery: the shard's bookkeeping for finding this room's providers in the DHT
  // (node/shard): whether it asked for the announcement, and when it looks up next.
  struct Discovery {
    bool announced = false;
    int64_t next_lookup_us = 0;  // 0: at the next tick
    int64_t interval_us = 0;     // doubles from kDiscoveryFirstUs to kDiscoveryMaxUs
  };
  Discovery& discovery() noexcept { return discovery_; }
  // Updates reloaded from storage when the room was opened (Restore), not fetched.
  uint64_t restored_updates() const noexcept { return restored_updates_; }
  // LastMessageUs: when a room message last reached this swarm (RoomHost's idle rooms).
  int64_t last_message_us() const noexcept { return last_message_us_; }
  size_t unacked_count() const noexcept { return unacked_.size(); }
  // Bytes held for updates whose pieces have not all arrived (bounded, see above).
  size_t partial_bytes() const noexcept { return partial_bytes_; }
  size_t acks_queued() const noexcept { return acks_.size(); }
  size_t acks_marked() const noexcept { return acks_marked_; }  // queued before the batch
  bool fetching() const noexcept { return fetch_ != nullptr; }
  bool syncing() const noexcept { return sync_.active; }
  // CaughtUp: our heads equal those a peer last announced (a reader that just joined is
  // caught up with that peer's history). False with no peers.
  // A peer that announced a later key epoch than ours does not count until we have it.
  bool CaughtUp() noexcept;
  // Refused: a peer was dropped for serving a record the admin did not sign.
  bool Refused(const base::Endpoint& addr) const noexcept {
    return std::find(refused_.begin(), refused_.end(), addr) != refused_.end();
  }
  const wire::RoomCheckpointInfo& checkpoint_info() const noexcept;
  // DebugCheckpoints: the fetched checkpoint awaiting its heads, the fetch, and the
  // checkpoint (updates covered) each peer advertises (the simulator's --verbose).
  std::string DebugCheckpoints() const;

 public:
  // Internal types (swarm_internal.h); public only so that free helpers can name them.
  struct Peer;
  struct Object;
  struct Fetch;

 private:
  struct SyncClient {
    bool active = false;
    uint32_t peer = 0;        // slot
    uint64_t txid = 0;
    uint16_t expected = 0;    // datagrams in the current window (0: not known yet)
    uint16_t received = 0;
    bool more = false;
    uint32_t attempts = 0;
    int64_t deadline_us = 0;
    uint32_t brought = 0;     // updates it added to our log
  };
  struct Unacked {
    Hash256 id{};
    std::vector<uint8_t> record;
    int64_t next_us = 0;
    uint32_t retries = 0;
  };
  struct PendingAck {
    base::Endpoint to;
    Hash256 id{};
    bool refused = false;
    bool sent = false;  // packed into an earlier ack of this release
  };
  // An update arriving in pieces from one peer.
  struct Partial {
    base::Endpoint from;
    Hash256 id{};
    bool key_epoch = false;      // a key epoch record (id: its hash), not an update
    std::vector<uint8_t> bytes;  // record_bytes long
    uint64_t have[(wire::kRoomKeyEpochPiecesMax + 63) / 64] = {};
    uint16_t pieces = 0;
    uint16_t got = 0;
    int64_t last_us = 0;  // last piece, or last ask
    uint32_t asks = 0;
  };

  // Peers (swarm.cc).
  Peer* FindPeer(const base::Endpoint& addr) noexcept;
  Peer* AdmitPeer(int64_t now_us, const base::Endpoint& addr, const wire::NodeId& id,
                  bool relay) noexcept;
  void DropPeer(Peer* p) noexcept;
  uint32_t SlotOf(const Peer* p) const noexcept;
  void Emit(SwarmEvent kind, const Hash256& id, const base::Endpoint& peer);
  void Send(const base::Endpoint& to, size_t size, base::Outbox& out) noexcept;
  std::span<uint8_t> Buffer(base::Outbox& out) noexcept;
  void SendHeads(int64_t now_us, Peer& p, base::Outbox& out) noexcept;
  const Hash256& HeadsDigest() noexcept;
  wire::Verdict OnJoin(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                       base::Outbox& out) noexcept;
  wire::Verdict OnHeads(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                        base::Outbox& out) noexcept;
  // Key epochs (swarm_epoch.cc). SendEpochsFrom: records `first` and later, up to
  // kEpochBurstBytesMax (at least one), each as one RoomEpoch or as pieces.
  void SendEpochsFrom(uint32_t first, const base::Endpoint& to, base::Outbox& out) noexcept;
  void SendEpoch(size_t index, const base::Endpoint& to, base::Outbox& out) noexcept;
  wire::Verdict OnEpoch(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                        base::Outbox& out) noexcept;
  // OnEpochRecord: a whole key epoch from a peer (one RoomEpoch, or reassembled pieces):
  // checked by the room, held when it comes before its predecessor, flooded when new.
  // `datagram`: the RoomEpoch to forward byte for byte (empty: forward as pieces).
  wire::Verdict OnEpochRecord(int64_t now_us, const base::Endpoint& from, Bytes record,
                              Bytes datagram, base::Outbox& out) noexcept;
  // TakeEpoch: an epoch the room just applied: kept, stored, its placed updates announced,
  // flooded to every peer but `except`.
  void TakeEpoch(std::vector<uint8_t> record, const Hash256& hash, const base::Endpoint& except,
                 Bytes datagram, base::Outbox& out) noexcept;
  void ApplyHeldEpochs(base::Outbox& out) noexcept;
  void RefusePeer(const base::Endpoint& addr) noexcept;
  wire::Verdict OnEpochPieceGet(int64_t now_us, Peer& p, const Hash256& hash,
                                const wire::Message& msg, base::Outbox& out) noexcept;

  // Flood, acks, limits (swarm.cc).
  wire::Verdict OnPublish(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                          base::Outbox& out) noexcept;
  bool AdmitRate(int64_t now_us, Peer& p, const Hash256& id, base::Outbox& out) noexcept;
  // Accept: a record from a peer through the room; stores it and queues its ack. Returns
  // the room's verdict; `accepted` says whether it entered the log or the pending set.
  // `view`: DecodeUpdate's view of the record as copied into the scratch (null: decode).
  Verdict Accept(Bytes record, const Hash256& id, const base::Endpoint& from, bool ack,
                 bool* accepted, const UpdateView* view = nullptr) noexcept;
  bool ResetLog();
  // The key of a permanent refusal in rejected_ (swarm.cc says why signatures differ).
  uint64_t SignatureRejectKey(const Hash256& update, const Signature& sig) const noexcept;
  uint64_t RejectKey(Verdict v, const Hash256& update, Bytes record) const noexcept;
  void AckDuplicate(const base::Endpoint& to, const Hash256& update) noexcept;
  void StorePlaced(const Hash256* skip) noexcept;
  void QueueAck(const base::Endpoint& to, const Hash256& id) noexcept;
  void Flood(Bytes datagram, const base::Endpoint& except, base::Outbox& out) noexcept;
  // Long updates (swarm.cc): a record goes as one RoomPublish when it fits, else as pieces.
  void SendRecord(const base::Endpoint& to, const Hash256& update, Bytes record,
                  base::Outbox& out) noexcept;
  void FloodRecord(const Hash256& update, Bytes record, const base::Endpoint& except,
                   base::Outbox& out) noexcept;
  // OnRecord: an update record from a peer, whole (a RoomPublish, or reassembled pieces
  // with the id they claimed): the checks, the log, the flood. `datagram`: the RoomPublish
  // to forward byte for byte (empty: forward as pieces).
  // `packed`: one of a packed RoomPublish's records (never a sync stream's).
  wire::Verdict OnRecord(int64_t now_us, const base::Endpoint& from, Bytes record,
                         const Hash256* claimed, Bytes datagram, base::Outbox& out,
                         bool packed = false) noexcept;
  wire::Verdict OnUpdatePiece(int64_t now_us, const base::Endpoint& from,
                              const wire::Message& msg, base::Outbox& out) noexcept;
  wire::Verdict OnUpdatePieceGet(int64_t now_us, const base::Endpoint& from,
                                 const wire::Message& msg, base::Outbox& out) noexcept;
  void PartialTick(int64_t now_us, base::Outbox& out) noexcept;
  uint8_t* Scratch() noexcept { return reinterpret_cast<uint8_t*>(scratch_.data()); }
  void RetryUnacked(int64_t now_us, base::Outbox& out) noexcept;
  void NoteStateChange(const Hash256& before);

  // Sync (swarm_sync.cc).
  void StartSync(int64_t now_us, uint32_t slot, base::Outbox& out) noexcept;
  void SendSyncRequest(int64_t now_us, base::Outbox& out) noexcept;
  wire::Verdict OnSync(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                       base::Outbox& out) noexcept;
  wire::Verdict OnSyncData(int64_t now_us, const base::Endpoint& from,
                           const wire::Message& msg, base::Outbox& out) noexcept;
  void SyncTick(int64_t now_us, base::Outbox& out) noexcept;

  // Checkpoints (swarm_checkpoint.cc).
  void AdoptObject(Bytes record, Bytes blob);
  void MaybeFetch(int64_t now_us, const wire::RoomCheckpointInfo& cp, base::Outbox& out);
  wire::Verdict OnPieceGet(int64_t now_us, const base::Endpoint& from,
                           const wire::Message& msg, base::Outbox& out) noexcept;
  wire::Verdict OnPiece(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                        base::Outbox& out) noexcept;
  void StartLevel(uint8_t level);
  void RequestPieces(int64_t now_us, base::Outbox& out) noexcept;
  void FetchTick(int64_t now_us, base::Outbox& out) noexcept;
  void FinishFetch(int64_t now_us, base::Outbox& out);
  // HashBlobPrefix: feeds the blob's leaves that came, in order, to the fetch's hasher.
  // StrikeBadLeaves: when the whole blob failed its signed hash: the leaves that fail the
  // tree are asked again and their senders struck; false when none does.
  void HashBlobPrefix() noexcept;
  bool StrikeBadLeaves(int64_t now_us, base::Outbox& out);
  // CheckObjectTree: a fetched object's tree, rebuilt from its bytes (Object::tree_checked).
  void CheckObjectTree() noexcept;
  bool TryCachedLoad();
  bool Outranks();
  uint64_t CoveredOf(Bytes record) const;
  void AbandonFetch() noexcept;
  void TryAwaitedCheckpoint();
  void AdoptRoomCheckpoint();
  // Own: stores, floods and retries (until a relay acks) an update this node wrote.
  void Own(int64_t now_us, const Hash256& before, std::vector<uint8_t> record,
           base::Outbox& out);
  // Reissue: writes again the own updates a checkpoint refused (Room::Reissues).
  void Reissue(int64_t now_us, base::Outbox& out);
  // FollowCheckpoint: a member whose replay disagrees with the checkpoint in effect starts
  // over from the checkpoint (its state) and syncs the log after it.
  void FollowCheckpoint(int64_t now_us, base::Outbox& out);
  // StopAwaiting: a node (member or relay) whose fetched checkpoint has waited for its
  // heads for five heads periods starts over from it: its log cannot reach them (they
  // branch from updates it never held, behind a checkpoint it started from), and syncing
  // cannot bring them, so it would wait for good (the room simulator found such nodes).
  // Only for a trusted checkpoint (TrustedCheckpoint); a relay keeps its store.
  void StopAwaiting(int64_t now_us, base::Outbox& out);
  // StartOverFromAwaited: starts over from the fetched checkpoint awaiting its heads, if
  // trusted; true when it did.
  bool StartOverFromAwaited(int64_t now_us, base::Outbox& out);
  // TrustedCheckpoint: a checkpoint this node may start over from without holding its
  // heads: signed with the current epoch's key; or with an old one, when a later rotation
  // point names its heads (through the updates held here), or when most of the peers that
  // advertise a checkpoint (at least two) have this one in effect. An evicted member keeps
  // its old write key.
  bool TrustedCheckpoint(Bytes record) const;
  void Restarted(int64_t now_us, Bytes record, Bytes blob, const Hash256& before,
                 base::Outbox& out);
  // Pruning (swarm_prune.cc): notes each checkpoint put in effect, and prunes behind
  // the newest noted one that has been in effect for the retention.
  void PruneTick(int64_t now_us);
  // StoredAncestors: the ids of stored updates that `heads` reach (a checkpoint's: what
  // it covers). For Restore; allocates.
  absl::flat_hash_set<Hash256, IdHash> StoredAncestors(const LoadedRoom& r,
                                                       const std::vector<Hash256>& heads);
  // StartOverFrom: a member's log dropped and started again from a checkpoint its replay
  // disagreed with (counted in checkpoint_mismatches). The room's verdict.
  // `why`: kCheckpointMismatch or kCheckpointFork (counted apart). The updates the
  // checkpoint does not cover are kept.
  Verdict StartOverFrom(Bytes record, Bytes blob, Verdict why);
  void ReplayOwn();
  // OnAck: a relay made `update` durable; false when it is not one we wait for.
  bool OnAck(const Hash256& update, bool refused, const base::Endpoint& from);
  // OnRefusedAck: a relay stored our update but its checkpoint refuses it.
  void OnRefusedAck(const Hash256& update);
  void ReissueUnplaced(const Hash256& update);

  std::unique_ptr<Room> room_;
  FloodQueue* floods_ = nullptr;
  std::vector<uint8_t> genesis_record_;
  SwarmConfig config_;
  RoomStorage* storage_;
  wire::Encoder* encoder_;
  base::Rng* rng_;
  SwarmListener* listener_;
  SwarmCounters counters_;

  std::vector<std::vector<uint8_t>> epochs_;  // key epoch records, by epoch
  std::vector<Hash256> epoch_ids_;            // their hashes (the pieces' ids)
  std::vector<std::vector<uint8_t>> future_epochs_;  // held: kFutureEpochsMax
  std::vector<base::Endpoint> refused_;              // kRefusedPeersMax
  std::vector<Peer> peers_;  // fixed slots, sized at construction
  // The used slots by address (FindPeer is O(1); issue 15). Reserved for peers_max.
  absl::flat_hash_map<base::Endpoint, uint32_t, base::EndpointHash> peer_slots_;
  size_t peers_used_ = 0;
  uint32_t generations_ = 0;  // admissions so far (Peer::generation)
  base::SeenSet seen_;
  base::SeenSet rejected_;
  uint8_t reject_key_[16] = {};  // SignatureRejectKey's SipHash key, random per swarm
  base::TokenBucket room_bucket_;
  base::TokenBucket room_hard_bucket_;  // 2x: past it even the slower senders are dropped
  std::vector<PendingAck> acks_;
  size_t acks_marked_ = 0;  // acks_[0, acks_marked_) were queued before the batch in flight
  std::vector<Unacked> unacked_;
  std::vector<base::Endpoint> joining_;  // Connect()ed, not yet heard from
  int64_t next_join_us_ = 0;
  uint64_t restored_updates_ = 0;  // the log Restore reloaded (a cache or a relay restart)
  int64_t last_message_us_ = 0;
  uint64_t since_checkpoint_ = 0;  // updates placed since the newest checkpoint (approx.)
  Discovery discovery_;
  Hash256 last_peer_checkpoint_{};  // the newest checkpoint id a peer advertised to us
  int64_t join_interval_us_ = 0;  // the join retry backoff; 0 once a peer answers
  int64_t next_heads_us_ = 0;
  int64_t slowed_until_us_ = 0;
  // Own publishing paced below the rate a relay's RoomSlowDown named (0: none named yet,
  // publish freely; the first shed update teaches us the relay's rate).
  uint32_t pace_per_s_ = 0;
  base::TokenBucket pace_;

  Hash256 digest_{};
  bool digest_dirty_ = true;
  std::vector<Hash256> heads_cache_;

  SyncClient sync_;
  uint64_t sync_seen_[8] = {};  // datagrams of the current window received (512 bits)
  std::unique_ptr<Object> object_;  // the checkpoint in effect, as a servable object
  std::unique_ptr<Fetch> fetch_;
  std::vector<uint8_t> awaited_record_;  // fetched, waiting for its heads
  std::vector<uint8_t> awaited_blob_;
  int64_t awaited_since_us_ = 0;  // when awaited_record_ was set (StopAwaiting)
  // A peer told this member to take checkpoint start_over_for_: it starts over from it
  // once fetched, if trusted (FinishFetch).
  bool start_over_ = false;
  Hash256 start_over_for_{};
  uint64_t adopted_changes_ = 0;  // room_->checkpoint_changes() when object_ last followed it
  // Own updates a member held when it dropped its log (ResetLog), put back once it has
  // loaded a checkpoint (ReplayOwn): those the checkpoint refuses are re-issued.
  std::vector<std::vector<uint8_t>> own_kept_;
  // Own updates the checkpoint-started log could not place (parents inside it), asked of
  // the relays again; and own updates a relay acked as refused. Both bounded.
  absl::flat_hash_map<Hash256, std::vector<uint8_t>, IdHash> own_unplaced_;
  absl::flat_hash_set<Hash256, IdHash> refused_own_;
  // Re-issues written outside a tick (state hash before, record): flooded at the next.
  std::vector<std::pair<Hash256, std::vector<uint8_t>>> reissue_now_;
  std::vector<Hash256> tried_;           // checkpoint ids that failed
  Hash256 cached_hash_{};
  std::vector<uint8_t> cached_state_;
  std::vector<uint64_t> scratch_;  // an 8-byte aligned copy of a record (kUpdateBytesMax)
  std::vector<Partial> partials_;
  size_t partial_bytes_ = 0;
  // A checkpoint put in effect here, and when (pruning waits a retention after it).
  struct PruneMark {
    int64_t at_us = 0;
    std::vector<Hash256> heads;
  };
  std::deque<PruneMark> prune_marks_;
  uint64_t prune_changes_ = 0;  // room_->checkpoint_changes() when last noted
  int64_t next_prune_us_ = 0;
};

}  // namespace ringpeer::room
