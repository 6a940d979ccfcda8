// Client: the embedding API (DESIGN.md section 2, node/client). An application links this
// library, calls Client::Start, joins rooms with the invite text a person pasted, publishes
// bytes, and gets callbacks for updates, state changes, swarm peers and the connection.
//
// Inside, the client runs a one-shard Node on an ephemeral UDP port with its own data
// directory (node key). The application thread never touches the shard: requests go to
// the shard through the Node's ControlCommand mechanism (Join, Publish, Leave, State ring
// the shard's doorbell and sleep until it answers), and the shard reports room events into
// an SPSC ring of fixed slots that Poll() drains on the application's thread, where the
// callbacks run (Poll sleeps until the shard ends a loop iteration that published some).
// The ring never blocks the shard: when it is full an event is dropped and
// counted (events_dropped()); State() still gives the whole room.
//
// Thread-safety: one application thread calls everything (Start, Join, Publish, Poll...);
// callbacks run inside Poll() on that thread. Owning type: not copyable.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/endpoint.h"
#include "node/room/invite.h"
#include "node/room/reducer.h"
#include "node/room/swarm.h"
#include "node/shard/node.h"
#include "node/shard/spsc_ring.h"
#include "node/store/data_dir.h"

namespace ringpeer::client {

// Events the shard may queue before the application polls: a join's sync arrives at up to
// 512 updates a window, so this holds several windows. 4096 x ~1.2 KiB = 5 MiB, plus
// the long updates' payloads (up to 64 KiB each) in the slots that carried one.
inline constexpr uint32_t kEventRingSlots = 4096;
// How long a request to the shard may take (Post rings the shard: it is claimed at once).
inline constexpr int kRequestTimeoutMs = 5000;

struct ClientOptions {
  // Holds the client's node key (created with mode 0600 on first use) and its room
  // cache. Created (0700) if missing; one client per directory (it is locked).
  std::string data_dir;
  // The UDP address to bind; port 0 picks a free one.
  base::Endpoint listen = *base::Endpoint::Parse("0.0.0.0:0");
  // Peers to join the overlay and every room through, besides an invite's own addresses.
  std::vector<base::Endpoint> bootstrap;
  ring::TransportKind transport = ring::TransportKind::kAuto;
  // Receive bursts whole (UDP GRO; ring::TransportConfig::recv_gro): a checkpoint's
  // ranges cost one receive each instead of one per piece. Off: datagram by datagram.
  bool recv_gro = true;
  // Keep joined rooms in data_dir (shard-0/, LMDB) and reopen them from there on the next
  // join, so that a returning client fetches only what it missed. Off: every join starts
  // empty and downloads the room again.
  bool cache = true;
  // App rooms (room::ReducerKind::kOpaque, node/room/REDUCERS.md): a fresh reducer for
  // the room `genesis` names, or null when this application does not run it (joining it
  // then fails). Called on the client's shard thread when a room opens (join, reopen from
  // the cache), so it must not touch state the application thread changes. Empty: this
  // client joins no app rooms.
  std::function<std::unique_ptr<room::Reducer>(const room::Genesis&)> app_reducer;
  // Own updates after which this member makes a checkpoint (relays fetch it and hand it
  // to joiners); 0 keeps room::SwarmConfig's default (1000).
  uint32_t checkpoint_every = 0;
  // Publish waits while relays ask it to slow down (or while its own updates wait for
  // acks), and fails only when no update of it was written or acknowledged for this long.
  int publish_timeout_ms = 15000;
};

// A room this client has joined: its id (64 hex digits in ToString()).
struct RoomRef {
  wire::Hash256 id{};
  friend bool operator==(const RoomRef&, const RoomRef&) = default;
};

struct UpdateEvent {
  RoomRef room;
  wire::Hash256 id{};
  std::vector<uint8_t> payload;  // decrypted; empty when this member cannot read it
  bool own = false;              // written by this client
  // Position in this client's event stream: an update with seq >= a RoomState's
  // event_mark is not in that state yet (print the state, then only such updates).
  uint64_t seq = 0;
};

// What State() reports about a room.
struct RoomState {
  uint64_t log_size = 0;
  uint32_t peers = 0;
  uint32_t unacked = 0;     // own updates no relay has made durable yet
  bool syncing = false;
  bool caught_up = false;   // our heads equal a peer's last announced heads
  bool can_write = false;
  int64_t epoch = -1;
  std::vector<uint8_t> state;  // the reducer's serialized state (ChatReducer::Load reads it)
  std::vector<wire::Hash256> heads;  // the log's current heads (what a rotation names)
  wire::Hash256 state_hash{};  // equal on every member that holds the same log
  uint64_t event_mark = 0;     // UpdateEvent::seq of the first update not in `state`
  uint64_t restored = 0;       // updates this join took from the cache, not the network
  // A join by a short invite waits for a relay to send the room's genesis (nothing else
  // above is filled in until then).
  bool joining = false;
  uint64_t epochs_refused = 0;   // key epochs relays sent that the admin did not sign
  uint64_t genesis_refused = 0;  // genesis records that were not the invite's room
  // What the room keeps (issue 16): log entries held, updates pruned behind a
  // checkpoint, and the bytes the log takes in memory (Room::HeldBytes).
  uint64_t entries_held = 0;
  uint64_t pruned = 0;
  uint64_t held_bytes = 0;
};

// A new room, made offline by its admin: the admin key (signs the genesis and every key
// epoch; keep it to evict later), and two self-contained invites whose member keys epoch 0
// grants: one with write access, one read-only.
struct NewRoom {
  wire::KeyPair admin;
  wire::Hash256 room_id{};
  room::Invite writer;
  room::Invite reader;
  std::vector<room::Invite> more_writers;  // writers after the first (CreateRoom's `writers`)
};
// CreateRoom: a chat room named `name` whose invites carry `bootstrap` (at most
// room::kInviteAddressesMax). Randomness from libsodium. REQUIRES: wire::InitCrypto().
// `writers` (1..kWritersMax) is how many writer invites, each its own member key.
inline constexpr size_t kWritersMax = 4;
// `kind` picks the reducer (chat, or kv for key-value state).
absl::StatusOr<NewRoom> CreateRoom(std::string_view name,
                                   const std::vector<base::Endpoint>& bootstrap,
                                   size_t writers = 1,
                                   room::ReducerKind kind = room::ReducerKind::kChat);

// A key rotation that leaves members out (eviction, node/room/README.md "Eviction"): key
// epoch N+1, signed by the admin at `heads` (the log's current heads), grants a fresh
// write key and content key to the members of `stay` only, each with the access its
// invite had (write, or read-only), and seals the old content key under the new one so
// that history stays readable. `stay` are self-contained invites of this room, all made
// after epoch N (`room create`'s, or an earlier rotation's). Returns the record to publish
// (Client::AddKeyEpoch) and each member's re-issued invite (epochs 0..N+1), in order.
// Errors: no member stays, an invite of another room or an older epoch, too many epochs
// for an invite. REQUIRES: wire::InitCrypto().
struct Rotation {
  uint32_t epoch = 0;
  std::vector<uint8_t> record;
  std::vector<room::Invite> invites;
};
absl::StatusOr<Rotation> MakeRotation(const wire::KeyPair& admin,
                                      const std::vector<room::Invite>& stay,
                                      const std::vector<wire::Hash256>& heads);

// One chat line decoded from an update payload (room::ChatPayload's form).
struct ChatLine {
  room::ChatOp op = room::ChatOp::kMessage;
  wire::PublicKey author{};
  std::string text;
};
// ParseChat: false when `payload` is not a chat payload.
bool ParseChat(wire::Bytes payload, ChatLine* out);

class Client {
 public:
  // Start: opens the data directory, loads or makes the node key, binds and starts the
  // one-shard node. Errors: the directory (in use, not writable), the address.
  static absl::StatusOr<std::unique_ptr<Client>> Start(const ClientOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Join: opens the room an invite names and connects to its bootstrap addresses (and
  // the options' bootstrap). A self-contained invite opens the room at once; a short one
  // (room id and member key) asks the relays for the genesis and key epochs, checked
  // against the room id and the admin key (State().joining until the genesis comes).
  // Joining a room already joined connects again and succeeds.
  absl::StatusOr<RoomRef> Join(std::string_view invite_text);
  // Publish: writes updates (each at most room::UpdatePayloadBytesMax bytes) over the
  // room's current heads, in order. Returns their ids; relays acknowledge them later
  // (OnAcked). When a relay asks this client to slow down (or too many of its updates
  // wait for an ack), Publish waits, running Poll() (so callbacks run inside it), and
  // goes on; it fails only when nothing was written or acknowledged for
  // publish_timeout_ms (the message says how many were written), or without write access.
  absl::StatusOr<std::vector<wire::Hash256>> Publish(const RoomRef& room,
                                                     std::vector<std::vector<uint8_t>> payloads);
  absl::StatusOr<wire::Hash256> Publish(const RoomRef& room, wire::Bytes payload);
  absl::Status Leave(const RoomRef& room);
  absl::StatusOr<RoomState> State(const RoomRef& room);
  // AddKeyEpoch: applies the admin's next key epoch record (MakeRotation) to the joined
  // room and floods it to the room's peers; relays store it and pass it on to members
  // who join later. Errors: the room refused it (its verdict name), not joined.
  absl::Status AddKeyEpoch(const RoomRef& room, wire::Bytes record);

  // Callbacks, run by Poll() on the application's thread. Set before joining.
  void OnUpdate(std::function<void(const UpdateEvent&)> f) { on_update_ = std::move(f); }
  void OnState(std::function<void(const RoomRef&, const wire::Hash256&)> f) {
    on_state_ = std::move(f);
  }
  // OnMembers: a swarm peer (relay or member node) entered (true) or left the room.
  void OnMembers(std::function<void(const RoomRef&, const base::Endpoint&, bool)> f) {
    on_members_ = std::move(f);
  }
  // OnConnection: the room's first peer was heard (true) or its last one dropped (false).
  void OnConnection(std::function<void(const RoomRef&, bool)> f) {
    on_connection_ = std::move(f);
  }
  // OnAcked: a relay made one of our updates durable.
  void OnAcked(std::function<void(const RoomRef&, const wire::Hash256&)> f) {
    on_acked_ = std::move(f);
  }
  // OnCheckpoint: the room started over from a checkpoint (a join far behind, or told to
  // take one): its state jumped, so read it again with State() instead of folding updates.
  void OnCheckpoint(std::function<void(const RoomRef&)> f) { on_checkpoint_ = std::move(f); }

  // Poll: runs the callbacks for every queued event; waits up to `timeout_ms` for the
  // first one. Returns how many it dispatched.
  size_t Poll(int timeout_ms);

  const wire::KeyPair& identity() const { return identity_; }
  base::Endpoint local_address() const;
  // StatusJson: this client's node as `ringpeer status --json` shows a node (its
  // transport and counters among them), for logs and tests.
  std::string StatusJson();
  uint64_t events_dropped() const { return listener_->dropped.load(std::memory_order_relaxed); }

 private:
  // One queued room event: fixed size, written in place by the shard thread.
  struct Event {
    room::SwarmEvent kind = room::SwarmEvent::kUpdateApplied;
    bool own = false;
    uint32_t payload_bytes = 0;
    bool readable = false;
    bool payload_inline = true;  // in `payload`; false: in `big` (a long update)
    uint64_t seq = 0;
    wire::Hash256 room{};
    wire::Hash256 id{};
    base::Endpoint peer;
    uint8_t payload[room::kUpdateInlineBytesMax];
    // A payload longer than `payload` (up to room::kUpdatePayloadBytesMax). Its capacity
    // stays with the slot, so a stream of long updates allocates once per slot.
    std::vector<uint8_t> big;
  };
  // Listener: the shard's side. Runs on the shard thread only; the one producer.
  struct Listener final : room::SwarmListener {
    Listener() : ring(kEventRingSlots) {}
    void OnSwarmEvent(room::Swarm& swarm, const room::SwarmEventInfo& e) override;
    void OnLoopEnd() override;
    uint64_t Mark() override { return pushed; }
    std::unique_ptr<room::Reducer> MakeAppReducer(const room::Genesis& g) override {
      return app_reducer ? app_reducer(g) : nullptr;
    }
    std::function<std::unique_ptr<room::Reducer>(const room::Genesis&)> app_reducer;
    shard::SpscRing<Event> ring;
    uint64_t pushed = 0;           // events offered, dropped ones included (shard thread)
    std::vector<uint8_t> scratch;  // decrypted payload (shard thread)
    std::atomic<uint64_t> dropped{0};
    // 1 while the application sleeps in Poll (a futex word, base/futex.h): the shard wakes
    // it after publishing an event, one system call per sleep, none while it is awake.
    std::atomic<uint32_t> sleeping{0};
    bool published = false;  // events pushed this loop iteration (shard thread)
  };

  Client() = default;
  std::unique_ptr<shard::ControlCommand> Request(std::unique_ptr<shard::ControlCommand> cmd);
  void Dispatch(const Event& e);

  std::unique_ptr<Listener> listener_;  // outlives node_ (declared first, destroyed last)
  int publish_timeout_ms_ = 15000;
  uint64_t acks_seen_ = 0;  // kAcked events dispatched: Publish's sign of progress
  std::unique_ptr<shard::Node> node_;
  wire::KeyPair identity_;
  std::vector<base::Endpoint> bootstrap_;
  std::function<void(const UpdateEvent&)> on_update_;
  std::function<void(const RoomRef&, const wire::Hash256&)> on_state_;
  std::function<void(const RoomRef&, const base::Endpoint&, bool)> on_members_;
  std::function<void(const RoomRef&, bool)> on_connection_;
  std::function<void(const RoomRef&, const wire::Hash256&)> on_acked_;
  std::function<void(const RoomRef&)> on_checkpoint_;
  std::unique_ptr<store::DataDir> data_dir_;  // held for its lock
};

}  // namespace ringpeer::client
