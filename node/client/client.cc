#include "node/client/client.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/assert.h"
#include "base/futex.h"

namespace ringpeer::client {

bool ParseChat(wire::Bytes payload, ChatLine* out) {
  if (payload.size() < 1 + 32) return false;
  const uint8_t op = payload[0];
  if (op < static_cast<uint8_t>(room::ChatOp::kJoin) ||
      op > static_cast<uint8_t>(room::ChatOp::kMessage)) {
    return false;
  }
  out->op = static_cast<room::ChatOp>(op);
  std::memcpy(out->author.data(), payload.data() + 1, 32);
  out->text.assign(reinterpret_cast<const char*>(payload.data()) + 33, payload.size() - 33);
  return true;
}

absl::StatusOr<NewRoom> CreateRoom(std::string_view name,
                                   const std::vector<base::Endpoint>& bootstrap,
                                   size_t writers, room::ReducerKind kind) {
  if (writers < 1 || writers > kWritersMax) {
    return absl::InvalidArgumentError(absl::StrCat("writers: 1 to ", kWritersMax));
  }
  if (bootstrap.size() > room::kInviteAddressesMax) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", room::kInviteAddressesMax,
                                                   " bootstrap addresses fit in an invite"));
  }
  auto random32 = [] {
    std::array<uint8_t, 32> a;
    wire::RandomBytes(a);
    return a;
  };
  NewRoom r;
  r.admin = wire::KeyPair::FromSeed(random32());
  const std::array<uint8_t, 32> writer_seed = random32(), reader_seed = random32();
  const wire::KeyPair writer = wire::KeyPair::FromSeed(writer_seed);
  const wire::KeyPair reader = wire::KeyPair::FromSeed(reader_seed);
  std::vector<uint8_t> genesis = room::MakeGenesis(r.admin, name, kind,
                                                   room::kStateBytesMaxDefault, random32());
  room::Genesis g;
  if (room::ParseGenesis(genesis, &g) != room::Verdict::kOk) {
    return absl::InvalidArgumentError("room name too long for a genesis record");
  }
  r.room_id = g.room_id;
  room::KeyEpochSpec spec;
  spec.room_id = g.room_id;
  spec.epoch = 0;
  spec.write_seed = random32();
  spec.content_key = random32();
  spec.members = {{writer.public_key, true}, {reader.public_key, false}};
  std::vector<std::array<uint8_t, 32>> more_seeds;
  for (size_t i = 1; i < writers; ++i) {
    more_seeds.push_back(random32());
    spec.members.push_back({wire::KeyPair::FromSeed(more_seeds.back()).public_key, true});
  }
  std::vector<uint8_t> epoch =
      room::MakeKeyEpoch(r.admin, spec, [](std::span<uint8_t> out) { wire::RandomBytes(out); });
  if (genesis.size() > room::kInviteRecordBytesMax || epoch.size() > room::kInviteRecordBytesMax) {
    return absl::InvalidArgumentError("room records too large for an invite (shorter name?)");
  }
  r.writer.room_id = g.room_id;
  r.writer.member_seed = writer_seed;
  r.writer.genesis = genesis;
  r.writer.epochs = {epoch};
  r.writer.bootstrap = bootstrap;
  r.reader = r.writer;
  r.reader.member_seed = reader_seed;
  for (const auto& seed : more_seeds) {
    r.more_writers.push_back(r.writer);
    r.more_writers.back().member_seed = seed;
  }
  return r;
}

absl::StatusOr<Rotation> MakeRotation(const wire::KeyPair& admin,
                                      const std::vector<room::Invite>& stay,
                                      const std::vector<wire::Hash256>& heads) {
  if (stay.empty()) return absl::InvalidArgumentError("no member would stay in the room");
  // MakeKeyEpoch asserts these bounds; the heads come from the network (any writer can
  // branch the log), so too many is an error to report, not a crash of `room evict`.
  if (heads.size() > room::kCheckpointHeadsMax) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the room has ", heads.size(), " heads (a key epoch names at most ",
        room::kCheckpointHeadsMax, "); write a merge first"));
  }
  if (stay.size() > room::kMembersMax) {
    return absl::InvalidArgumentError(absl::StrCat(
        stay.size(), " members would stay (a key epoch grants at most ", room::kMembersMax, ")"));
  }
  const room::Invite& first = stay[0];
  if (first.genesis.empty() || first.epochs.empty()) {
    return absl::InvalidArgumentError("invite: carries no room records");
  }
  room::Genesis g;
  if (room::ParseGenesis(first.genesis, &g) != room::Verdict::kOk ||
      g.admin != admin.public_key) {
    return absl::InvalidArgumentError("the admin key is not this room's admin");
  }
  const uint32_t last = static_cast<uint32_t>(first.epochs.size() - 1);
  if (first.epochs.size() + 1 > room::kInviteEpochsMax) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "an invite carries at most ", room::kInviteEpochsMax, " key epochs; this room has ",
        first.epochs.size()));
  }
  auto random32 = [] {
    std::array<uint8_t, 32> a;
    wire::RandomBytes(a);
    return a;
  };
  room::KeyEpochSpec spec;
  spec.room_id = g.room_id;
  spec.epoch = last + 1;
  spec.write_seed = random32();
  spec.content_key = random32();
  spec.rotation_heads = heads;
  for (const room::Invite& inv : stay) {
    if (inv.room_id != g.room_id || !inv.member_seed) {
      return absl::InvalidArgumentError("invite: not a self-contained invite of this room");
    }
    if (inv.epochs.size() != first.epochs.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invite: made at epoch ", inv.epochs.size() - 1, ", the others at ", last,
          " (use the invites of the latest rotation)"));
    }
    const wire::KeyPair me = wire::KeyPair::FromSeed(*inv.member_seed);
    room::KeyEpoch e;
    if (room::ParseKeyEpoch(inv.epochs[last], g.room_id, admin.public_key, &me, &e) !=
            room::Verdict::kOk ||
        !e.content_key) {
      return absl::InvalidArgumentError(
          absl::StrCat("invite: epoch ", last, " grants its member nothing (evicted?)"));
    }
    if (!spec.previous_key) spec.previous_key = *e.content_key;
    for (const room::MemberGrantSpec& m : spec.members) {
      if (m.member == me.public_key) {
        return absl::InvalidArgumentError("invite: the same member twice");
      }
    }
    spec.members.push_back({me.public_key, e.write_seed.has_value()});
  }
  Rotation r;
  r.epoch = spec.epoch;
  r.record = room::MakeKeyEpoch(admin, spec, [](std::span<uint8_t> out) { wire::RandomBytes(out); });
  if (r.record.size() > room::kInviteRecordBytesMax) {
    return absl::ResourceExhaustedError("key epoch too large for an invite (too many members)");
  }
  for (const room::Invite& inv : stay) {
    room::Invite n = inv;
    n.epoch = spec.epoch;
    n.epochs.push_back(r.record);
    r.invites.push_back(std::move(n));
  }
  return r;
}

// OnSwarmEvent: on the shard thread, inside a swarm call. Copies what the application
// needs into a ring slot (decrypting an update's payload here, where the room is) and
// publishes it at once, so the application sees it within its next poll.
void Client::Listener::OnSwarmEvent(room::Swarm& swarm, const room::SwarmEventInfo& e) {
  if (e.echo) return;  // a message re-issued over a checkpoint, shown already
  const uint64_t seq = pushed++;
  Event* slot = ring.BeginPush();
  if (slot == nullptr) {
    dropped.store(dropped.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return;
  }
  slot->kind = e.kind;
  slot->seq = seq;
  slot->room = swarm.id();
  slot->id = e.id;
  slot->peer = e.peer;
  slot->own = e.kind == room::SwarmEvent::kUpdateApplied && !e.peer.valid();
  slot->readable = false;
  slot->payload_bytes = 0;
  slot->payload_inline = true;
  if (e.kind == room::SwarmEvent::kUpdateApplied && swarm.room().Payload(e.id, &scratch)) {
    if (scratch.size() <= sizeof(slot->payload)) {
      std::memcpy(slot->payload, scratch.data(), scratch.size());
    } else {
      slot->big.assign(scratch.begin(), scratch.end());
      slot->payload_inline = false;
    }
    slot->payload_bytes = static_cast<uint32_t>(scratch.size());
    slot->readable = true;
  }
  ring.CommitPush();
  ring.Publish();
  published = true;
}

// OnLoopEnd: wakes the application if it sleeps in Poll, once per loop iteration that
// published events (a wake per event made a 10,000-update catch-up 30% slower: the
// application, on the shard's CPU, woke to drain one event at a time). Published, then
// look for a sleeper (Poll sets `sleeping`, then looks at the ring): the fences on both
// sides make sure one of the two sees the other.
void Client::Listener::OnLoopEnd() {
  if (!published) return;
  published = false;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sleeping.load(std::memory_order_relaxed) != 0 &&
      sleeping.exchange(0, std::memory_order_acq_rel) != 0) {
    base::FutexWake(&sleeping);
  }
}

absl::StatusOr<std::unique_ptr<Client>> Client::Start(const ClientOptions& options) {
  if (!wire::InitCrypto()) return absl::InternalError("libsodium failed to start");
  std::unique_ptr<Client> c(new Client());
  auto dir = store::DataDir::Open(options.data_dir);
  if (!dir.ok()) return dir.status();
  c->data_dir_ = std::make_unique<store::DataDir>(std::move(*dir));
  auto key = c->data_dir_->LoadOrCreateNodeKey();
  if (!key.ok()) return key.status();
  c->identity_ = *key;
  c->bootstrap_ = options.bootstrap;
  c->publish_timeout_ms_ = options.publish_timeout_ms;
  c->listener_ = std::make_unique<Listener>();
  c->listener_->app_reducer = options.app_reducer;
  shard::NodeConfig config;
  config.listen = {options.listen};
  config.shards = 1;  // room commands go to the owner shard, which then hosts every room
  config.transport = options.transport;
  // A client fetches checkpoints: their ranges arrive as bursts, received whole (UDP GRO,
  // ring::TransportConfig::recv_gro) and cut in place, one receive per range.
  config.transport_config.recv_gro = options.recv_gro;
  // Test only: the link delay of `ringpeer serve --test-delay-ms` (ring/delay_transport.h),
  // so that room traffic in tests/netns is delayed both ways.
  if (const char* d = std::getenv("RINGPEER_TEST_DELAY_MS"); d != nullptr && *d != '\0') {
    char* end = nullptr;
    const long ms = std::strtol(d, &end, 10);
    if (*end != '\0' || ms < 0 || ms > 10'000) {
      return absl::InvalidArgumentError(
          absl::StrCat("RINGPEER_TEST_DELAY_MS: '", d, "' is not a whole number in [0, 10000]"));
    }
    config.transport_config.send_delay_us = int64_t{ms} * 1000;
  }
  config.bootstrap = options.bootstrap;
  config.room_listener = c->listener_.get();
  if (options.checkpoint_every != 0) config.room_swarm.checkpoint_every = options.checkpoint_every;
  // The room cache: the rooms this client joined, kept in its data directory (LMDB, like
  // a relay's store) so that joining again fetches only what happened since. A member
  // never acks (relays do, once durable) and reopens a room only when it joins it again.
  config.room_store_dir = options.data_dir;
  config.room_relay = false;
  config.dht_client = true;  // short-lived: never a routing-table entry of others
  if (!options.cache) config.room_store_dir.clear();
  auto node = shard::Node::Create(config, c->identity_);
  if (!node.ok()) return node.status();
  c->node_ = std::move(*node);
  absl::Status started = c->node_->Start();
  if (!started.ok()) return started;
  return c;
}

Client::~Client() {
  if (node_) node_->Stop();
}

std::string Client::StatusJson() { return node_->StatusJson(); }

base::Endpoint Client::local_address() const {
  return node_->addresses().empty() ? base::Endpoint{} : node_->addresses()[0];
}

std::unique_ptr<shard::ControlCommand> Client::Request(
    std::unique_ptr<shard::ControlCommand> cmd) {
  return node_->Submit(std::move(cmd), kRequestTimeoutMs);
}

absl::StatusOr<RoomRef> Client::Join(std::string_view invite_text) {
  auto invite = room::ParseInvite(invite_text);
  if (!invite.ok()) return invite.status();
  if (!invite->member_seed) {
    return absl::InvalidArgumentError(
        "invite: names no member key (made by an older ringpeer? ask for a new one)");
  }
  // A short invite carries no records: the shard asks its bootstrap relays for the
  // genesis and the key epochs and checks them against the room id and the admin key.
  auto cmd = std::make_unique<shard::ControlCommand>();
  cmd->kind = shard::ControlCommand::Kind::kRoomJoin;
  cmd->target = invite->room_id;
  cmd->genesis = std::move(invite->genesis);
  cmd->epochs = std::move(invite->epochs);
  cmd->member = wire::KeyPair::FromSeed(*invite->member_seed);
  cmd->bootstrap = invite->bootstrap;
  for (const base::Endpoint& e : bootstrap_) {  // a relay named twice is joined once
    if (std::find(cmd->bootstrap.begin(), cmd->bootstrap.end(), e) == cmd->bootstrap.end()) {
      cmd->bootstrap.push_back(e);
    }
  }
  if (cmd->bootstrap.empty()) {
    return absl::InvalidArgumentError(
        "no peer to join through: the invite has no addresses; pass --bootstrap HOST:PORT");
  }
  cmd = Request(std::move(cmd));
  if (!cmd->ok) return absl::UnavailableError(absl::StrCat("join: ", cmd->error));
  return RoomRef{invite->room_id};
}

// Publish: hands the shard what is left to write; the shard writes until the room says
// "busy" (room::IsPublishBusy), and this waits a little, polling so that acks and other
// events arrive, and hands it the rest. Progress (an update written or acknowledged)
// restarts the timeout.
absl::StatusOr<std::vector<wire::Hash256>> Client::Publish(
    const RoomRef& room, std::vector<std::vector<uint8_t>> payloads) {
  const size_t total = payloads.size();
  std::vector<wire::Hash256> ids;
  ids.reserve(total);
  size_t next = 0;
  auto last_progress = std::chrono::steady_clock::now();
  uint64_t acks_then = acks_seen_;
  std::string last_busy;
  for (;;) {
    auto cmd = std::make_unique<shard::ControlCommand>();
    cmd->kind = shard::ControlCommand::Kind::kRoomPublish;
    cmd->target = room.id;
    cmd->payloads.assign(std::make_move_iterator(payloads.begin() + static_cast<std::ptrdiff_t>(next)),
                         std::make_move_iterator(payloads.end()));
    cmd = Request(std::move(cmd));
    const size_t written = cmd->published.size();
    for (const wire::Hash256& id : cmd->published) ids.push_back(id);
    if (cmd->ok) return ids;
    // Put back what the shard did not write (it keeps the payloads it was handed).
    for (size_t i = written; i < cmd->payloads.size(); ++i) {
      payloads[next + i] = std::move(cmd->payloads[i]);
    }
    next += written;
    if (!room::IsPublishBusy(cmd->error)) {
      return absl::FailedPreconditionError(
          absl::StrCat("publish: ", cmd->error, " (", next, " of ", total, " written)"));
    }
    last_busy = cmd->error.substr(sizeof(room::kPublishBusyPrefix) - 1);
    const auto now = std::chrono::steady_clock::now();
    if (written > 0 || acks_seen_ != acks_then) {
      last_progress = now;
      acks_then = acks_seen_;
    } else if (now - last_progress >= std::chrono::milliseconds(publish_timeout_ms_)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "publish: nothing written or acknowledged for ", publish_timeout_ms_ / 1000, " s (",
          last_busy, "; ", next, " of ", total, " written)"));
    }
    Poll(10);
  }
}

absl::StatusOr<wire::Hash256> Client::Publish(const RoomRef& room, wire::Bytes payload) {
  std::vector<std::vector<uint8_t>> one;
  one.emplace_back(payload.begin(), payload.end());
  auto ids = Publish(room, std::move(one));
  if (!ids.ok()) return ids.status();
  RP_ASSERT(ids->size() == 1);
  return (*ids)[0];
}

absl::Status Client::Leave(const RoomRef& room) {
  auto cmd = std::make_unique<shard::ControlCommand>();
  cmd->kind = shard::ControlCommand::Kind::kRoomLeave;
  cmd->target = room.id;
  cmd = Request(std::move(cmd));
  if (!cmd->ok) return absl::UnavailableError(absl::StrCat("leave: ", cmd->error));
  return absl::OkStatus();
}

absl::StatusOr<RoomState> Client::State(const RoomRef& room) {
  auto cmd = std::make_unique<shard::ControlCommand>();
  cmd->kind = shard::ControlCommand::Kind::kRoomState;
  cmd->target = room.id;
  cmd = Request(std::move(cmd));
  if (!cmd->ok) return absl::UnavailableError(absl::StrCat("state: ", cmd->error));
  RoomState s;
  s.log_size = cmd->room.log_size;
  s.peers = cmd->room.peers;
  s.unacked = cmd->room.unacked;
  s.syncing = cmd->room.syncing;
  s.caught_up = cmd->room.caught_up;
  s.can_write = cmd->room.can_write;
  s.epoch = cmd->room.epoch;
  s.state = std::move(cmd->state);
  s.heads = std::move(cmd->heads);
  s.state_hash = cmd->room.state_hash;
  s.event_mark = cmd->room.event_mark;
  s.restored = cmd->room.restored;
  s.joining = cmd->room.joining;
  s.epochs_refused = cmd->room.epochs_refused;
  s.genesis_refused = cmd->room.genesis_refused;
  s.entries_held = cmd->room.entries_held;
  s.pruned = cmd->room.pruned;
  s.held_bytes = cmd->room.held_bytes;
  return s;
}

absl::Status Client::AddKeyEpoch(const RoomRef& room, wire::Bytes record) {
  auto cmd = std::make_unique<shard::ControlCommand>();
  cmd->kind = shard::ControlCommand::Kind::kRoomEpoch;
  cmd->target = room.id;
  cmd->epochs.emplace_back(record.begin(), record.end());
  cmd = Request(std::move(cmd));
  if (!cmd->ok) return absl::FailedPreconditionError(absl::StrCat("key epoch: ", cmd->error));
  return absl::OkStatus();
}

void Client::Dispatch(const Event& e) {
  const RoomRef room{e.room};
  switch (e.kind) {
    case room::SwarmEvent::kUpdateApplied:
      if (on_update_) {
        UpdateEvent u;
        u.room = room;
        u.id = e.id;
        u.own = e.own;
        u.seq = e.seq;
        if (e.readable && e.payload_inline) {
          u.payload.assign(e.payload, e.payload + e.payload_bytes);
        } else if (e.readable) {
          u.payload = e.big;
        }
        on_update_(u);
      }
      return;
    case room::SwarmEvent::kStateChanged:
      if (on_state_) on_state_(room, e.id);
      return;
    case room::SwarmEvent::kPeerJoined:
    case room::SwarmEvent::kPeerLeft:
      if (on_members_) on_members_(room, e.peer, e.kind == room::SwarmEvent::kPeerJoined);
      return;
    case room::SwarmEvent::kConnected:
    case room::SwarmEvent::kDisconnected:
      if (on_connection_) on_connection_(room, e.kind == room::SwarmEvent::kConnected);
      return;
    case room::SwarmEvent::kAcked:
      ++acks_seen_;
      if (on_acked_) on_acked_(room, e.id);
      return;
    case room::SwarmEvent::kCheckpointLoaded:
      if (on_checkpoint_) on_checkpoint_(room);
      return;
    case room::SwarmEvent::kSlowedDown:
      return;  // State() shows their effect
  }
}

// Poll: drains the ring; when it is empty, sleeps on the listener's `sleeping` word until
// the shard publishes an event (it wakes a sleeper only: no system call per event while
// the application keeps up) or the timeout passes.
size_t Client::Poll(int timeout_ms) {
  size_t n = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    while (Event* e = listener_->ring.Front()) {
      Dispatch(*e);
      listener_->ring.Pop();
      ++n;
    }
    if (n > 0) listener_->ring.Release();
    const auto now = std::chrono::steady_clock::now();
    if (n > 0 || now >= deadline) return n;
    listener_->sleeping.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // see Listener::OnLoopEnd
    if (listener_->ring.Front() == nullptr) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
      base::FutexWait(&listener_->sleeping, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    }
    listener_->sleeping.store(0, std::memory_order_relaxed);
  }
}

}  // namespace ringpeer::client
