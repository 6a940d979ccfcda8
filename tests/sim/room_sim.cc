#include "tests/sim/room_sim.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/assert.h"
#include "dht/table_file.h"
#include "node/room/planted.h"
#include "node/room/reducer.h"
#include "tests/sim/heap.h"
#include "tests/sim/seeded_random.h"
#include "tests/sim/sim.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace ringpeer::sim {
namespace {

constexpr int64_t kWakeResolutionUs = 1'000;
constexpr size_t kCapturedMax = 64;

std::string Hex(const room::Hash256& h) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 4; ++i) {
    s += d[h[i] >> 4];
    s += d[h[i] & 15];
  }
  return s;
}

room::Hash256 HeadsKey(const room::Hash256& room_id, const room::Hash256& checkpoint,
                       const std::vector<room::Hash256>& heads) {
  wire::Hasher h;
  h.Update(room_id).Update(checkpoint);
  for (const room::Hash256& x : heads) h.Update(x);
  return h.Final();
}

}  // namespace

// A member's place in a room: its key, granted at creation (or never: the evicted one
// loses it at the rotation).
struct RoomSimulator::Slot {
  uint32_t index = 0;
  uint32_t room = 0;
  uint32_t node = 0;
  wire::KeyPair key;
  bool late = false;     // joins in the middle of the run (takes a checkpoint)
  bool joined = false;   // its node was told to join (it rejoins after each restart)
  bool evicted = false;  // since the rotation: posts nothing; must read nothing new
};

struct RoomSimulator::SimRoom {
  uint32_t index = 0;
  wire::KeyPair admin;
  std::vector<uint8_t> genesis;
  room::Hash256 id{};
  std::vector<std::vector<uint8_t>> epochs;
  std::vector<room::ContentKey> content_keys;
  std::vector<room::WriteSeed> write_seeds;
  std::vector<uint32_t> slots;
  std::vector<base::Endpoint> relays;  // the invite's relays (bootstrap of every member)
  // The rotation that evicts a member: epoch, the heads it was made at, who.
  uint32_t rotated_epoch = 0;  // 0: none yet
  std::vector<room::Hash256> rotation_heads;
  int evicted_slot = -1;
};

struct RoomSimulator::Node {
  uint32_t index = 0;
  bool relay = false;
  base::Endpoint addr;
  wire::KeyPair keys;
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Tap> out;
  std::unique_ptr<room::MemoryRoomStorage> disk;  // relays: survives crashes
  std::unique_ptr<Disk> storage;                  // what the core writes through
  std::unique_ptr<core::NodeCore> core;
  bool alive = true;
  int64_t wake_at = INT64_MAX;
  uint64_t incarnation = 0;
  std::vector<uint8_t> saved_table;
  std::vector<uint32_t> slots;  // member slots this node holds
  bool disk_fault = false;
  int64_t commit_done_us = 0;  // writer_us: when the batch in flight becomes durable
  // Updates this relay acknowledged: (room, update).
  std::vector<std::pair<room::Hash256, room::Hash256>> acked;
  absl::flat_hash_set<room::Hash256, room::IdHash> acked_set;  // hash of the pair
  // Per room served: the state hash last checked (CheckState).
  absl::flat_hash_map<room::Hash256, room::Hash256, room::IdHash> checked;
};

// Tap: a node's sink. Every datagram the core sends passes here on its way into the
// network: acks are checked against the relay's storage, publishes are kept for forgery.
class RoomSimulator::Tap final : public base::Outbox {
 public:
  Tap(RoomSimulator* sim, Node* node) : sim_(sim), node_(node), out_(sim->net_.get(), node->addr) {}
  std::span<uint8_t> Buffer() noexcept override { return out_.Buffer(); }
  void Commit(size_t size, const base::Endpoint& to) noexcept override {
    const std::span<uint8_t> d = out_.Buffer().first(size);
    if (size >= wire::kHeaderBytes) {
      const uint8_t type = d[offsetof(wire::Header, type)];
      if (type == static_cast<uint8_t>(wire::MessageType::kRoomAck) ||
          type == static_cast<uint8_t>(wire::MessageType::kRoomPublish)) {
        heap::Scope scope(heap::kShared);
        wire::Message msg;
        if (wire::Decode(d.data(), size, &msg) == wire::Verdict::kOk) {
          if (msg.type() == wire::MessageType::kRoomAck) {
            const auto* ack = msg.room_ack();
            const room::Hash256 room_id = wire::FromWireId(*ack->room());
            sim_->OnAckSent(*node_, room_id, wire::FromWireId(*ack->update()));
            if (ack->more() != nullptr) {  // packed acks: each is a promise
              for (const auto* u : *ack->more()) sim_->OnAckSent(*node_, room_id, wire::FromWireId(*u));
            }
          } else {
            sim_->OnPublishSeen(d);
          }
        }
      }
    }
    out_.Commit(size, to);
  }

  // Bursts (floods, checkpoint ranges) are cut here, each datagram through Commit.
  std::span<uint8_t> BurstBuffer() noexcept override { return splitter_.Buffer(); }
  size_t CommitBurst(size_t size, size_t segment,
                     std::span<const base::Endpoint> to) noexcept override {
    return splitter_.Split(*this, size, segment, to);
  }

 private:
  base::BurstSplitter splitter_;
  RoomSimulator* sim_;
  Node* node_;
  testing::MemoryNetwork::Sender out_;  // the network
};

// Disk: the relay's storage as its core sees it. The bytes stored are the node's disk,
// not its heap: they are charged to heap::kDisk.
class RoomSimulator::Disk final : public room::RoomStorage {
 public:
  explicit Disk(room::MemoryRoomStorage* d) : d_(d) {}
  absl::Status PutGenesis(const room::Hash256& r, room::Bytes g) override {
    heap::Scope s(heap::kDisk);
    return d_->PutGenesis(r, g);
  }
  absl::Status PutKeyEpoch(const room::Hash256& r, uint32_t e, room::Bytes b) override {
    heap::Scope s(heap::kDisk);
    return d_->PutKeyEpoch(r, e, b);
  }
  absl::Status Append(const room::Hash256& r, const room::Hash256& id, room::Bytes b) override {
    heap::Scope s(heap::kDisk);
    return d_->Append(r, id, b);
  }
  absl::Status PutCheckpoint(const room::Hash256& r, room::Bytes rec, room::Bytes blob) override {
    heap::Scope s(heap::kDisk);
    return d_->PutCheckpoint(r, rec, blob);
  }
  absl::Status Commit() override {
    heap::Scope s(heap::kDisk);
    return d_->Commit();
  }
  void CommitStart() override {
    heap::Scope s(heap::kDisk);
    d_->CommitStart();
  }
  bool CommitInFlight() const noexcept override { return d_->CommitInFlight(); }
  std::optional<absl::Status> CommitPoll() override { return d_->CommitPoll(); }
  void CommitWait() override {
    heap::Scope s(heap::kDisk);
    d_->CommitWait();
  }
  std::vector<room::Hash256> Rooms() override { return d_->Rooms(); }
  absl::StatusOr<room::LoadedRoom> Load(const room::Hash256& r) override { return d_->Load(r); }
  absl::Status Forget(const room::Hash256& r) override {
    heap::Scope s(heap::kDisk);
    return d_->Forget(r);
  }

 private:
  room::MemoryRoomStorage* d_;
};

class RoomSimulator::Listener final : public room::SwarmListener {
 public:
  Listener(RoomSimulator* sim, Node* node) : sim_(sim), node_(node) {}
  void OnSwarmEvent(room::Swarm& swarm, const room::SwarmEventInfo& e) override {
    heap::Scope scope(heap::kShared);
    switch (e.kind) {
      case room::SwarmEvent::kUpdateApplied: sim_->OnApplied(*node_, swarm, e.id); break;
      case room::SwarmEvent::kAcked: ++sim_->report_.acks_received; break;
      case room::SwarmEvent::kCheckpointLoaded: ++sim_->report_.checkpoints_loaded; break;
      default: break;
    }
  }

 private:
  RoomSimulator* sim_;
  Node* node_;
};

// ---------------------------------------------------------------------------------------

namespace {
int g_live_simulators = 0;  // heap accounting is per process: one room simulator at a time
}  // namespace

RoomSimulator::RoomSimulator(const RoomSimConfig& config)
    : config_(config),
      rng_(config.seed * 0x9E3779B97F4A7C15ull + 13),
      writer_rng_(config.seed * 0xD1B54A32D192ED03ull + 29) {
  RP_ASSERT(++g_live_simulators == 1);
  if (config_.relays == 0) config_.relays = std::max<uint32_t>(3, config_.nodes / 6);
  RP_ASSERT(config_.nodes > config_.relays && config_.nodes < 60000);
  RP_ASSERT(config_.nodes < static_cast<uint32_t>(heap::kOwnersMax));
#ifdef RINGPEER_PLANTED_BUGS
  planted::g_bug = static_cast<planted::Bug>(config_.planted);
#else
  RP_ASSERT(config_.planted == 0);
#endif
  heap::Scope scope(heap::kShared);
  UseSeededRandomBytes(config_.seed);  // key epochs seal with libsodium's randomness
  testing::NetworkConfig nc;
  nc.seed = config_.seed * 2 + 1;
  nc.loss = config_.loss;
  nc.duplicate = config_.duplicate;
  nc.delay_min_us = config_.delay_min_us;
  nc.delay_max_us = config_.delay_max_us;
  net_ = std::make_unique<testing::MemoryNetwork>(
      nc, [this](const base::Endpoint& e) { return NodeAt(e); },
      [this](uint32_t to, const base::Endpoint& from, std::span<const uint8_t> bytes) {
        Deliver(to, from, bytes);
      });
  net_->set_blocked([this](const base::Endpoint& from, uint32_t to) {
    if (!partitioned_) return false;
    const int f = NodeAt(from);
    return f >= 0 && side_[static_cast<size_t>(f)] != side_[to];
  });
  proof_ = std::make_unique<SimProof>();
  report_.seed = config_.seed;
  report_.nodes = config_.nodes;
  report_.relays = config_.relays;
  report_.rooms = config_.rooms;
}

RoomSimulator::~RoomSimulator() {
  --g_live_simulators;
  heap::Scope scope(heap::kShared);
  for (auto& n : nodes_) {
    heap::Scope s(static_cast<int>(n->index));
    n->core.reset();
  }
#ifdef RINGPEER_PLANTED_BUGS
  planted::g_bug = planted::Bug::kNone;
#endif
}

base::Endpoint RoomSimulator::AddrOf(uint32_t index) const {
  base::Endpoint e;
  e.family = base::Endpoint::Family::kV4;
  e.ip = {10, static_cast<uint8_t>(index >> 8), static_cast<uint8_t>(index), 2};
  e.port = 7700;
  return e;
}

int RoomSimulator::NodeAt(const base::Endpoint& e) const {
  if (!e.is_v4() || e.ip[0] != 10 || e.ip[3] != 2 || e.port != 7700) return -1;
  const uint32_t i = uint32_t{e.ip[1]} << 8 | e.ip[2];
  return i < nodes_.size() ? static_cast<int>(i) : -1;
}

int64_t RoomSimulator::Exp(int64_t mean_us) {
  // Exponential with the given mean, from a uniform in (0, 1].
  const double u = (static_cast<double>(rng_.Next() >> 11) + 1) * 0x1p-53;
  return std::max<int64_t>(1, static_cast<int64_t>(-std::log(u) * static_cast<double>(mean_us)));
}

int64_t RoomSimulator::Between(int64_t lo, int64_t hi) {
  return hi <= lo ? lo : lo + static_cast<int64_t>(rng_.Uniform(static_cast<uint64_t>(hi - lo)));
}

void RoomSimulator::Plan(int64_t at_us, Act act, uint32_t arg) {
  work_.push(Work{at_us, seq_++, act, arg});
}

std::unique_ptr<core::NodeCore> RoomSimulator::MakeCore(Node& n) {
  heap::Scope scope(static_cast<int>(n.index));
  dht::OverlayConfig c;
  for (const base::Endpoint& b : statics_) {
    if (!(b == n.addr)) c.bootstrap.push_back(b);
  }
  c.peers_max = 16;
  c.routing.buckets_max = 10;
  c.routing.replacements_per_bucket = 2;
  c.rpcs_max = 32;
  c.lookups_max = 8;
  c.lookup_candidates_max = 32;
  c.providers.records_max = 256;
  c.providers.per_key_max = 16;
  c.providers.per_source_max = 64;
  c.announces_max = 16;
  c.routes_max = 2;
  c.seen_max = 64;
  c.proof = proof_.get();
  core::CoreConfig cc;
  cc.overlay = c;
  cc.rate_limit_entries = 256;
  cc.reflection_entries = 256;
  cc.ping_seen_entries = 64;
  cc.size_estimate_interval_us = 0;
  cc.size_estimate_first_us = INT64_MAX / 4;
  cc.rooms_max = n.relay ? config_.rooms + 4 : 8;
  cc.room_relay = n.relay;
  cc.room_storage = n.relay ? n.storage.get() : nullptr;
  cc.room_listener = n.listener.get();
  bool checkpointer = false;
  for (uint32_t si : n.slots) {
    const Slot& slot = *slots_[si];
    const auto& in_room = rooms_[slot.room]->slots;
    const size_t rank = static_cast<size_t>(
        std::find(in_room.begin(), in_room.end(), si) - in_room.begin());
    checkpointer |= rank < config_.checkpointers;
  }
  cc.room_swarm.checkpoint_every = checkpointer ? config_.checkpoint_every : 0;
  cc.rng_seed = (config_.seed * 0x2545F4914F6CDD1Dull ^ (uint64_t{n.index} << 20) ^
                 (n.incarnation << 52)) | 1;
  cc.start_us = now_;
  auto core = std::make_unique<core::NodeCore>(cc, n.keys, n.out.get(), nullptr);
  if (!n.saved_table.empty()) {
    auto saved = dht::ParseTable(n.saved_table);
    if (saved.ok()) core->overlay()->Restore(now_, *saved);
  }
  return core;
}

void RoomSimulator::Build() {
  heap::Scope scope(heap::kShared);
  const uint32_t statics = std::min<uint32_t>(3, config_.relays);
  for (uint32_t i = 0; i < statics; ++i) statics_.push_back(AddrOf(i));
  side_.assign(config_.nodes, 0);
  for (uint32_t i = 0; i < config_.nodes; ++i) {
    auto n = std::make_unique<Node>();
    n->index = i;
    n->relay = i < config_.relays;
    n->addr = AddrOf(i);
    std::array<uint8_t, 32> seed{};
    const uint64_t s = config_.seed * 0x9E3779B97F4A7C15ull + i;
    std::memcpy(seed.data(), &s, 8);
    seed[31] = 0x52;
    n->keys = wire::KeyPair::FromSeed(seed);
    n->listener = std::make_unique<Listener>(this, n.get());
    n->out = std::make_unique<Tap>(this, n.get());
    if (n->relay) {
      n->disk = std::make_unique<room::MemoryRoomStorage>();
      n->disk->SetDeferCommits(config_.writer_us > 0);
      n->storage = std::make_unique<Disk>(n->disk.get());
    }
    nodes_.push_back(std::move(n));
  }
  // Rooms: an admin each, members on the member nodes in turn, two relays each.
  uint32_t next_member = config_.relays;
  for (uint32_t r = 0; r < config_.rooms; ++r) {
    auto room = std::make_unique<SimRoom>();
    room->index = r;
    std::array<uint8_t, 32> seed;
    rng_.Fill(seed);
    room->admin = wire::KeyPair::FromSeed(seed);
    room::Hash256 salt;
    rng_.Fill(salt);
    room->genesis = room::MakeGenesis(room->admin, absl::StrCat("room ", r),
                                      room::ReducerKind::kChat, room::kStateBytesMaxDefault, salt);
    room::Genesis g;
    RP_ASSERT(room::ParseGenesis(room->genesis, &g) == room::Verdict::kOk);
    room->id = g.room_id;
    room->relays.push_back(AddrOf((2 * r) % config_.relays));
    room->relays.push_back(AddrOf((2 * r + 1) % config_.relays));
    std::vector<room::MemberGrantSpec> grants;
    for (uint32_t m = 0; m < config_.members_per_room; ++m) {
      auto slot = std::make_unique<Slot>();
      slot->index = static_cast<uint32_t>(slots_.size());
      slot->room = r;
      slot->node = next_member;
      next_member = next_member + 1 < config_.nodes ? next_member + 1 : config_.relays;
      rng_.Fill(seed);
      slot->key = wire::KeyPair::FromSeed(seed);
      slot->late = m + 1 == config_.members_per_room && config_.members_per_room > 2;
      grants.push_back({slot->key.public_key, true});
      room->slots.push_back(slot->index);
      nodes_[slot->node]->slots.push_back(slot->index);
      slots_.push_back(std::move(slot));
    }
    room::KeyEpochSpec spec;
    spec.room_id = room->id;
    spec.epoch = 0;
    rng_.Fill(spec.write_seed);
    rng_.Fill(spec.content_key);
    spec.members = grants;
    room->write_seeds.push_back(spec.write_seed);
    room->content_keys.push_back(spec.content_key);
    room->epochs.push_back(room::MakeKeyEpoch(room->admin, spec,
                                              [this](std::span<uint8_t> b) { rng_.Fill(b); }));
    rooms_.push_back(std::move(room));
  }
  for (auto& n : nodes_) {
    n->core = MakeCore(*n);
    Schedule(n->index);
  }
  // The plan: joins, posts, faults, rotations.
  const int64_t T = config_.run_us;
  for (auto& s : slots_) {
    const int64_t at = s->late ? Between(T / 4, T / 2) : Between(1'000'000, 10'000'000);
    Plan(at, Act::kJoin, s->index);
  }
  Plan(Exp(config_.crash_mean_us), Act::kCrash);
  Plan(Exp(config_.partition_mean_us), Act::kPartition);
  Plan(Exp(config_.disk_fault_mean_us), Act::kDiskFault);
  Plan(Between(10'000'000, 20'000'000), Act::kForge);
  if (config_.rotations) {
    for (auto& r : rooms_) {
      if (r->slots.size() >= 3) Plan(Between(T / 4, 3 * T / 4), Act::kRotate, r->index);
    }
  }
  Plan(T, Act::kEnd);
}

void RoomSimulator::Schedule(uint32_t index) {
  Node& n = *nodes_[index];
  if (!n.alive) return;
  int64_t w = n.core->NextWakeUs(now_);
  // The writer's doorbell: a batch in flight wakes its relay when it is durable.
  if (n.disk && n.disk->CommitInFlight()) w = std::min(w, n.commit_done_us);
  w = std::max(w, now_ + kWakeResolutionUs);
  if (w < n.wake_at) {
    n.wake_at = w;
    wakes_.push(Wake{w, seq_++, index});
  }
}

void RoomSimulator::Deliver(uint32_t to, const base::Endpoint& from,
                            std::span<const uint8_t> bytes) {
  now_ = std::max(now_, net_->now());
  ++report_.deliveries;
  ++report_.steps;
  if (getenv("RINGPEER_SIM_TRACE") != nullptr) {
    uint64_t h = 1469598103934665603ull;
    for (uint8_t b : bytes) h = (h ^ b) * 1099511628211ull;
    std::fprintf(stderr, "d %llu %lld %d->%u t%u %zu %016llx\n", (unsigned long long)report_.steps,
                 (long long)now_, NodeAt(from), to, bytes.size() > 5 ? bytes[5] : 0, bytes.size(), (unsigned long long)h);
  }
  Node& n = *nodes_[to];
  if (!n.alive) return;
  {
    heap::Scope scope(static_cast<int>(to));
    // A receive batch of one, as a shard's loop runs it (NodeCore::ReceiveBatch): the
    // room floods go through the flood queue, packed at the batch's end.
    n.core->BeginRoomBatch();
    n.core->Receive(now_, from, bytes);
    n.core->EndRoomBatch();
    CommitStep(n);
  }
  AfterStep(to);
  Schedule(to);
}

void RoomSimulator::TickNode(uint32_t index) {
  Node& n = *nodes_[index];
  ++report_.ticks;
  ++report_.steps;
  {
    heap::Scope scope(static_cast<int>(index));
    n.core->Tick(now_);
    CommitStep(n);
  }
  AfterStep(index);
  Schedule(index);
}

void RoomSimulator::CommitStep(Node& n) {
  if (!n.relay) return;
  if (config_.writer_us == 0) {
    if (n.core->StorageDue(now_)) n.core->Commit(now_);
    return;
  }
  // In Shard::Run's order: poll; the writer may finish right after the poll (here: when
  // its time has come); then a new batch starts if none is in flight (CommitStart takes
  // the one that just finished first).
  n.core->CommitPoll(now_);
  if (n.disk->CommitInFlight() && now_ >= n.commit_done_us) {
    heap::Scope scope(heap::kDisk);
    n.disk->FinishCommit();
  }
  if (!n.core->CommitInFlight() && n.core->StorageDue(now_)) {
    n.core->CommitStart(now_);
    n.commit_done_us = now_ + 500 +
                       static_cast<int64_t>(writer_rng_.Uniform(
                           static_cast<uint64_t>(std::max<int64_t>(config_.writer_us - 500, 1))));
  }
}

void RoomSimulator::AfterStep(uint32_t index) {
  Node& n = *nodes_[index];
  const int64_t bytes = heap::Bytes(static_cast<int>(index));
  int64_t& peak = n.relay ? report_.relay_bytes_peak : report_.member_bytes_peak;
  peak = std::max(peak, bytes);
  const int64_t limit = n.relay ? config_.relay_bytes_max : config_.member_bytes_max;
  if (bytes > limit) {
    ++report_.memory_over;
    Fail(absl::StrCat("memory: node ", index, (n.relay ? " (relay)" : " (member)"), " holds ",
                      bytes, " bytes, over its limit of ", limit));
    return;
  }
  if (n.alive && !n.relay) CheckState(n);
  if (n.alive && getenv("RINGPEER_SIM_CPCHECK") != nullptr) {
    heap::Scope scope(heap::kShared);
    for (uint32_t si : n.slots) {
      SimRoom& r = *rooms_[slots_[si]->room];
      room::Swarm* sw = SwarmOf(n, r);
      if (sw == nullptr) continue;
      const auto& rec = sw->room().checkpoint_record();
      const room::Hash256 want = rec.empty() ? room::Hash256{} : wire::Blake2b256(rec);
      if (want != sw->checkpoint_info().id && sw->checkpoint_info().valid()) {
        Fail(absl::StrCat("cpcheck: node ", index, " room ", r.index, " room cp ", Hex(want),
                          " swarm object ", Hex(sw->checkpoint_info().id), " ",
                          sw->room().DebugCheckpoint()));
        return;
      }
    }
  }
}

room::Swarm* RoomSimulator::SwarmOf(Node& n, const SimRoom& r) {
  if (!n.alive) return nullptr;
  return n.core->rooms().Find(r.id);
}

// CheckState: a member whose state changed must agree with every member that held the
// same heads before it.
void RoomSimulator::CheckState(Node& n) {
  heap::Scope scope(heap::kShared);
  for (uint32_t si : n.slots) {
    const Slot& s = *slots_[si];
    if (!s.joined || s.evicted) continue;
    SimRoom& r = *rooms_[s.room];
    room::Swarm* sw = SwarmOf(n, r);
    if (sw == nullptr || !sw->room().can_read()) continue;
    // A member whose own replay disagrees with the checkpoint in effect knows its state is
    // not the room's, and starts over from the checkpoint at its next tick: not compared.
    if (sw->room().checkpoint_mismatch()) continue;
    const room::Hash256 state = sw->room().state_hash();
    auto [it, fresh] = n.checked.try_emplace(r.id, state);
    if (!fresh) {
      if (it->second == state) continue;
      it->second = state;
    }
    // Same heads and the same checkpoint in effect (the order's barrier): same state.
    const room::Hash256 cp = sw->checkpoint_info().id;
    const room::Hash256 key = HeadsKey(r.id, cp, sw->room().heads());
    auto [st, added] = states_.try_emplace(key, HeldState{state, cp, n.index});
    if (!added && st->second.state != state) {
      ++report_.diverged;
      if (getenv("RINGPEER_SIM_DUMP") != nullptr) {
        for (uint32_t who : {n.index, st->second.node}) {
          room::Swarm* o = SwarmOf(*nodes_[who], r);
          if (o == nullptr) continue;
          std::fprintf(stderr, "node %u mismatch=%d epoch=%lld base=%s\n", who,
                       o->room().checkpoint_mismatch() ? 1 : 0,
                       static_cast<long long>(o->room().epoch()), Hex(o->room().state_hash()).c_str());
          std::fprintf(stderr, "node %u %s\n", who, o->room().DebugCheckpoint().c_str());
          std::fprintf(stderr, "node %u order:", who);
          for (const auto& x : o->room().order()) std::fprintf(stderr, " %s", Hex(x).c_str());
          std::fprintf(stderr, "\n");
        }
      }
      Fail(absl::StrCat("diverged: room ", r.index, ": node ", n.index, " (log ",
                        sw->room().log_size(), ", checkpoint ", Hex(cp), ") has state ",
                        Hex(state), "; node ", st->second.node, " (checkpoint ",
                        Hex(st->second.checkpoint), ") had state ", Hex(st->second.state),
                        " at the same heads"));
      return;
    }
  }
}

void RoomSimulator::OnApplied(Node& n, room::Swarm& swarm, const room::Hash256& id) {
  if (forged_.contains(id)) {
    ++report_.forged_accepted;
    Fail(absl::StrCat("forged_accepted: node ", n.index, " took forged update ", Hex(id),
                      " into its log"));
    return;
  }
  if (attacker_.contains(id)) {
    // A node that has not heard of the rotation yet cannot tell this update from a
    // member's: it takes it, and must drop it once the rotation reaches it (checked at the
    // end). One that knows the rotation must refuse it.
    const SimRoom* r = nullptr;
    for (const auto& x : rooms_) {
      if (x->id == swarm.id()) r = x.get();
    }
    if (r != nullptr && swarm.room().epoch() < static_cast<int64_t>(r->rotated_epoch)) {
      ++report_.evicted_writes_before_rotation_known;
      return;
    }
    ++report_.evicted_writes_accepted;
    Fail(absl::StrCat("evicted_writes_accepted: node ", n.index, " took update ", Hex(id),
                      ", written with an evicted member's old key after the rotation"));
    return;
  }
  // The evicted member's own node must not read what the new epochs carry.
  for (uint32_t si : n.slots) {
    const Slot& s = *slots_[si];
    const SimRoom& r = *rooms_[s.room];
    if (!s.evicted || r.id != swarm.id()) continue;
    room::UpdateView u;
    const room::Bytes record = swarm.room().RecordOf(id);
    if (record.empty() || room::DecodeUpdate(record, r.id, &u) != room::Verdict::kOk) continue;
    std::vector<uint8_t> plain;
    if (u.epoch >= r.rotated_epoch && swarm.room().Payload(id, &plain)) {
      ++report_.evicted_reads;
      Fail(absl::StrCat("evicted_reads: the evicted member on node ", n.index, " read update ",
                        Hex(id), " of epoch ", u.epoch));
      return;
    }
  }
}

void RoomSimulator::OnAckSent(Node& n, const room::Hash256& room_id,
                              const room::Hash256& update) {
  ++report_.acks_sent;
  if (n.disk == nullptr) return;  // only storages ack; a member never does
  if (!n.disk->DurableHas(room_id, update)) {
    ++report_.acked_lost;
    Fail(absl::StrCat("acked_lost: relay ", n.index, " acked update ", Hex(update),
                      " before its storage made it durable"));
    return;
  }
  wire::Hasher h;
  h.Update(room_id).Update(update);
  if (n.acked_set.insert(h.Final()).second) n.acked.emplace_back(room_id, update);
}

void RoomSimulator::OnPublishSeen(std::span<const uint8_t> datagram) {
  if (captured_.size() < kCapturedMax) {
    captured_.emplace_back(datagram.begin(), datagram.end());
  } else {
    captured_[captured_next_].assign(datagram.begin(), datagram.end());
    captured_next_ = (captured_next_ + 1) % kCapturedMax;
  }
}

void RoomSimulator::CheckAcked(Node& n, const char* when) {
  for (const auto& [room_id, update] : n.acked) {
    if (!n.disk->DurableHas(room_id, update)) {
      ++report_.acked_lost;
      Fail(absl::StrCat("acked_lost: relay ", n.index, " lost acked update ", Hex(update),
                        " ", when));
      return;
    }
  }
}

void RoomSimulator::Fail(std::string what) {
  if (failed()) return;
  report_.failure = absl::StrCat("t=", now_ / 1000, " ms: ", what);
  report_.failed_step = report_.steps;
}

// ---------------------------------------------------------------------------------------
// Actions.

bool RoomSimulator::RoomCommand(Node& n, core::ControlCommand& cmd) {
  heap::Scope scope(static_cast<int>(n.index));
  n.core->StartCommand(now_, &cmd);
  if (!cmd.done.load()) n.core->CheckCommand(now_);
  Schedule(n.index);
  return cmd.done.load() && cmd.ok;
}

void RoomSimulator::JoinSlot(Slot& s) {
  Node& n = *nodes_[s.node];
  s.joined = true;
  if (!n.alive) return;  // it joins when it restarts
  SimRoom& r = *rooms_[s.room];
  core::ControlCommand cmd;
  {
    heap::Scope scope(static_cast<int>(n.index));
    cmd.kind = core::ControlCommand::Kind::kRoomJoin;
    cmd.target = r.id;
    cmd.genesis = r.genesis;
    cmd.epochs = r.epochs;
    cmd.member = s.key;
    cmd.bootstrap = r.relays;
  }
  RoomCommand(n, cmd);
}

void RoomSimulator::Post(Slot& s) {
  Node& n = *nodes_[s.node];
  if (!n.alive || !s.joined || s.evicted) return;
  SimRoom& r = *rooms_[s.room];
  core::ControlCommand cmd;
  {
    heap::Scope scope(static_cast<int>(n.index));
    cmd.kind = core::ControlCommand::Kind::kRoomPublish;
    cmd.target = r.id;
    const std::string text = absl::StrCat("slot ", s.index, " says ", report_.posts, " at ", now_);
    cmd.payloads.push_back(room::ChatPayload(room::ChatOp::kMessage, s.key.public_key, text));
  }
  if (RoomCommand(n, cmd)) {
    ++report_.posts;
  } else {
    ++report_.posts_busy;
  }
}

void RoomSimulator::Crash(uint32_t index) {
  Node& n = *nodes_[index];
  if (!n.alive) return;
  ++report_.crashes;
  {
    heap::Scope scope(static_cast<int>(index));
    n.saved_table = n.core->SavedTableBytes();
    n.core.reset();  // its memory goes back, as a crashed process's would
  }
  n.alive = false;
  n.wake_at = INT64_MAX;
  n.checked.clear();
  if (n.disk) {
    heap::Scope scope(heap::kDisk);
    n.disk->Crash();  // writes no commit covered are gone
  }
}

void RoomSimulator::Restart(uint32_t index) {
  Node& n = *nodes_[index];
  if (n.alive) return;
  ++n.incarnation;
  n.alive = true;
  n.core = MakeCore(n);
  if (n.relay) {
    {
      heap::Scope scope(static_cast<int>(index));
      const absl::Status s = n.core->RestoreRooms();
      if (!s.ok()) Fail(absl::StrCat("relay ", index, " could not restore: ", s.message()));
    }
    CheckAcked(n, "after a crash and restart");
  }
  Schedule(index);
  for (uint32_t si : n.slots) {
    Slot& s = *slots_[si];
    if (s.joined && !s.evicted) JoinSlot(s);
  }
}

void RoomSimulator::StartPartition() {
  ++report_.partitions;
  partitioned_ = true;
  for (auto& s : side_) s = static_cast<uint8_t>(rng_.Uniform(2));
}

void RoomSimulator::StartDiskFault() {
  const uint32_t i = static_cast<uint32_t>(rng_.Uniform(config_.relays));
  Node& n = *nodes_[i];
  if (n.disk_fault) return;
  ++report_.disk_faults;
  n.disk_fault = true;
  switch (rng_.Uniform(3)) {
    case 0: n.disk->SetFailWrites(true); break;
    case 1: n.disk->SetFailCommits(true); break;
    default: n.disk->SetCapacity(n.disk->staged_bytes()); break;  // full from now on
  }
  Plan(now_ + Between(config_.disk_fault_min_us, config_.disk_fault_max_us), Act::kDiskClear, i);
}

std::vector<uint32_t> RoomSimulator::Serving(const SimRoom& r) {
  std::vector<uint32_t> out;
  for (auto& n : nodes_) {
    if (SwarmOf(*n, r) != nullptr) out.push_back(n->index);
  }
  return out;
}

// Forge: a datagram no member wrote, sent to a node that serves the room: an update signed
// by a key the room never granted (well formed, with real parents, readable), or a
// captured publish with bytes flipped.
void RoomSimulator::Forge() {
  heap::Scope scope(heap::kShared);
  SimRoom& r = *rooms_[rng_.Uniform(rooms_.size())];
  const std::vector<uint32_t> serving = Serving(r);
  if (serving.empty()) return;
  Node& target = *nodes_[serving[rng_.Uniform(serving.size())]];
  const base::Endpoint from = AddrOf(static_cast<uint32_t>(
      config_.relays + rng_.Uniform(config_.nodes - config_.relays)));
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  size_t size = 0;
  if (rng_.Uniform(2) == 0 || captured_.empty()) {
    room::Swarm* sw = SwarmOf(target, r);
    std::array<uint8_t, 32> seed;
    rng_.Fill(seed);
    const wire::KeyPair liar = wire::KeyPair::FromSeed(seed);
    const uint32_t epoch = static_cast<uint32_t>(r.epochs.size() - 1);
    room::Nonce nonce;
    rng_.Fill(nonce);
    std::vector<room::Hash256> parents = sw->room().heads();
    if (parents.size() > room::kParentsMax) parents.resize(room::kParentsMax);
    const std::vector<uint8_t> text =
        room::ChatPayload(room::ChatOp::kMessage, liar.public_key, "forged");
    const std::vector<uint8_t> record = room::MakeUpdate(
        r.id, epoch, liar, r.content_keys[epoch], parents, text, nonce);
    room::UpdateView u;
    if (record.empty() || room::DecodeUpdate(record, r.id, &u) != room::Verdict::kOk) return;
    forged_.insert(u.id);
    wire::Encoder enc;
    size = enc.RoomPublish(buf, r.id, record);
  } else {
    const std::vector<uint8_t>& c = captured_[rng_.Uniform(captured_.size())];
    std::memcpy(buf, c.data(), c.size());
    size = c.size();
    // The ids of the records a publish carries (`record`, and `more` when packed).
    auto ids_of = [](const uint8_t* d, size_t n, std::vector<room::Hash256>* ids) {
      wire::Message m;
      if (wire::Decode(d, n, &m) != wire::Verdict::kOk ||
          m.type() != wire::MessageType::kRoomPublish) {
        return;
      }
      const room::Hash256 room_id = wire::FromWireId(*m.room_publish()->room());
      auto add = [&](const flatbuffers::Vector<uint8_t>* rec) {
        room::UpdateView u;
        if (room::DecodeUpdate({rec->data(), rec->size()}, room_id, &u) == room::Verdict::kOk) {
          ids->push_back(u.id);
        }
      };
      add(m.room_publish()->record());
      if (const auto* more = m.room_publish()->more()) {
        for (const auto* r : *more) add(r->bytes());
      }
    };
    std::vector<room::Hash256> before;
    ids_of(buf, size, &before);
    const uint32_t flips = 1 + static_cast<uint32_t>(rng_.Uniform(3));
    for (uint32_t k = 0; k < flips && size > wire::kHeaderBytes; ++k) {
      const size_t at = wire::kHeaderBytes + rng_.Uniform(size - wire::kHeaderBytes);
      buf[at] ^= static_cast<uint8_t>(1 + rng_.Uniform(255));
    }
    // If a mutated record still decodes under a new id, that id is a forgery. (A flip in
    // the signature keeps the id: it is the genuine update's, whose signature fails here.)
    std::vector<room::Hash256> after;
    ids_of(buf, size, &after);
    for (const room::Hash256& id : after) {
      if (std::find(before.begin(), before.end(), id) == before.end()) forged_.insert(id);
    }
  }
  if (size == 0) return;
  ++report_.forged_sent;
  net_->Send(from, target.addr, std::span<const uint8_t>(buf, size));
}

// Rotate: the admin evicts one member: a new key epoch granting everyone else, made at the
// heads of the room's first live relay, handed to a live member to flood.
void RoomSimulator::Rotate(SimRoom& r) {
  heap::Scope scope(heap::kShared);
  room::Swarm* ref = nullptr;
  for (const base::Endpoint& e : r.relays) {
    const int i = NodeAt(e);
    if (i >= 0 && (ref = SwarmOf(*nodes_[i], r)) != nullptr) break;
  }
  Node* carrier = nullptr;
  int victim = -1;
  for (uint32_t si : r.slots) {
    const Slot& s = *slots_[si];
    if (!s.joined || s.late) continue;
    if (victim < 0) {
      victim = static_cast<int>(si);
      continue;
    }
    Node& n = *nodes_[s.node];
    if (carrier == nullptr && SwarmOf(n, r) != nullptr && n.slots.size() == 1) carrier = &n;
  }
  if (ref == nullptr || carrier == nullptr || victim < 0) {
    Plan(now_ + 5'000'000, Act::kRotate, r.index);  // not now: try again
    return;
  }
  room::KeyEpochSpec spec;
  spec.room_id = r.id;
  spec.epoch = static_cast<uint32_t>(r.epochs.size());
  rng_.Fill(spec.write_seed);
  rng_.Fill(spec.content_key);
  spec.previous_key = r.content_keys.back();
  spec.rotation_heads = ref->room().heads();
  for (uint32_t si : r.slots) {
    if (static_cast<int>(si) != victim) spec.members.push_back({slots_[si]->key.public_key, true});
  }
  r.write_seeds.push_back(spec.write_seed);
  r.content_keys.push_back(spec.content_key);
  r.epochs.push_back(room::MakeKeyEpoch(r.admin, spec, [this](std::span<uint8_t> b) { rng_.Fill(b); }));
  r.rotated_epoch = spec.epoch;
  r.rotation_heads = spec.rotation_heads;
  r.evicted_slot = victim;
  slots_[static_cast<size_t>(victim)]->evicted = true;
  ++report_.rotations;
  core::ControlCommand cmd;
  cmd.kind = core::ControlCommand::Kind::kRoomEpoch;
  cmd.target = r.id;
  cmd.epochs.push_back(r.epochs.back());
  if (!RoomCommand(*carrier, cmd)) {
    Fail(absl::StrCat("room ", r.index, ": member node ", carrier->index,
                      " refused the admin's rotation: ", cmd.error));
    return;
  }
  Plan(now_ + Exp(config_.attack_mean_us), Act::kAttack, r.index);
}

// Attack: the evicted member writes with the write key it still holds, on top of the
// rotation point, and sends it from its own address to a node that serves the room.
void RoomSimulator::Attack(SimRoom& r) {
  heap::Scope scope(heap::kShared);
  const std::vector<uint32_t> serving = Serving(r);
  if (!serving.empty() && r.evicted_slot >= 0) {
    const uint32_t old = r.rotated_epoch - 1;
    const wire::KeyPair write = wire::KeyPair::FromSeed(r.write_seeds[old]);
    const Slot& victim = *slots_[static_cast<size_t>(r.evicted_slot)];
    room::Nonce nonce;
    rng_.Fill(nonce);
    const std::vector<uint8_t> text =
        room::ChatPayload(room::ChatOp::kMessage, victim.key.public_key, "still here");
    std::span<const room::Hash256> parents = r.rotation_heads;
    if (parents.size() > room::kParentsMax) parents = parents.first(room::kParentsMax);
    const std::vector<uint8_t> record = room::MakeUpdate(
        r.id, old, write, r.content_keys[old], parents, text, nonce);
    room::UpdateView u;
    if (!record.empty() && room::DecodeUpdate(record, r.id, &u) == room::Verdict::kOk) {
      attacker_.insert(u.id);
      alignas(8) uint8_t buf[wire::kDatagramBytesMax];
      wire::Encoder enc;
      const size_t size = enc.RoomPublish(buf, r.id, record);
      const Node& to = *nodes_[serving[rng_.Uniform(serving.size())]];
      ++report_.evicted_writes_sent;
      net_->Send(nodes_[victim.node]->addr, to.addr, std::span<const uint8_t>(buf, size));
    }
  }
  if (posting_on_) Plan(now_ + Exp(config_.attack_mean_us), Act::kAttack, r.index);
}

void RoomSimulator::ClearDiskFault(Node& n) {
  n.disk->SetFailWrites(false);
  n.disk->SetFailCommits(false);
  n.disk->SetCapacity(UINT64_MAX);
  n.disk_fault = false;
}

void RoomSimulator::EndFaults() {
  faults_on_ = false;
  posting_on_ = false;
  partitioned_ = false;
  for (auto& n : nodes_) {
    if (n->disk) ClearDiskFault(*n);
  }
  for (auto& n : nodes_) {
    if (!n->alive) Restart(n->index);
  }
}

void RoomSimulator::Do(const Work& w) {
  switch (w.act) {
    case Act::kJoin:
      if (slots_[w.arg]->late) ++report_.late_joins;
      JoinSlot(*slots_[w.arg]);
      Plan(now_ + Exp(config_.post_mean_us), Act::kPost, w.arg);
      return;
    case Act::kPost:
      if (!posting_on_) return;
      Post(*slots_[w.arg]);
      Plan(now_ + Exp(config_.post_mean_us), Act::kPost, w.arg);
      return;
    case Act::kCrash: {
      if (!faults_on_) return;
      Plan(now_ + Exp(config_.crash_mean_us), Act::kCrash);
      const uint32_t i = static_cast<uint32_t>(rng_.Uniform(nodes_.size()));
      if (!nodes_[i]->alive) return;
      ++report_.steps;
      Crash(i);
      Plan(now_ + Between(config_.down_min_us, config_.down_max_us), Act::kRestart, i);
      return;
    }
    case Act::kRestart:
      if (!faults_on_) return;
      ++report_.steps;
      Restart(w.arg);
      return;
    case Act::kPartition:
      if (!faults_on_) return;
      ++report_.steps;
      StartPartition();
      Plan(now_ + Between(config_.partition_min_us, config_.partition_max_us), Act::kHeal);
      return;
    case Act::kHeal:
      if (!faults_on_) return;
      ++report_.steps;
      partitioned_ = false;
      Plan(now_ + Exp(config_.partition_mean_us), Act::kPartition);
      return;
    case Act::kDiskFault:
      if (!faults_on_) return;
      ++report_.steps;
      StartDiskFault();
      Plan(now_ + Exp(config_.disk_fault_mean_us), Act::kDiskFault);
      return;
    case Act::kDiskClear:
      if (!faults_on_) return;
      ++report_.steps;
      ClearDiskFault(*nodes_[w.arg]);
      return;
    case Act::kForge:
      if (!faults_on_) return;
      ++report_.steps;
      Forge();
      Plan(now_ + Exp(config_.forgery_mean_us), Act::kForge);
      return;
    case Act::kRotate:
      if (!faults_on_) return;
      Rotate(*rooms_[w.arg]);
      return;
    case Act::kAttack:
      if (!posting_on_) return;
      ++report_.steps;
      Attack(*rooms_[w.arg]);
      return;
    case Act::kEnd:
      EndFaults();
      return;
  }
}

void RoomSimulator::DumpRoom(const SimRoom& r) {
  std::fprintf(stderr, "room %u (epochs %zu, rotated at %u):\n", r.index, r.epochs.size(),
               r.rotated_epoch);
  for (auto& n : nodes_) {
    room::Swarm* sw = SwarmOf(*n, r);
    if (sw == nullptr) continue;
    const room::Room& rm = sw->room();
    const room::SwarmCounters& c = sw->counters();
    std::fprintf(stderr,
                 "  node %u %s: log %zu pending %zu quarantine %zu heads %zu epoch %lld read %d "
                 "peers %zu syncing %d fetching %d cp %s state %s syncs %llu cps %llu resets "
                 "%llu rejected %llu served %llu sync_records %llu\n",
                 n->index, n->relay ? "relay " : "member", rm.log_size(), rm.pending_size(),
                 rm.quarantine_size(), rm.heads().size(), static_cast<long long>(rm.epoch()),
                 rm.can_read(), sw->peers_count(), sw->syncing(), sw->fetching(),
                 Hex(sw->checkpoint_info().id).c_str(), Hex(rm.state_hash()).c_str(),
                 static_cast<unsigned long long>(c.syncs_sent),
                 static_cast<unsigned long long>(c.checkpoints_loaded),
                 static_cast<unsigned long long>(c.log_resets),
                 static_cast<unsigned long long>(c.rejected),
                 static_cast<unsigned long long>(c.syncs_served),
                 static_cast<unsigned long long>(c.sync_records_received));
    std::fprintf(stderr, "    checkpoints: %s\n    rotation heads:%s\n",
                 sw->DebugCheckpoints().c_str(), rm.DebugRotationHeads().c_str());
    std::fprintf(stderr, "    missing parents:");
    std::vector<bool> quarantined;
    const std::vector<room::Hash256> missing = rm.MissingParents(6, &quarantined);
    for (size_t k = 0; k < missing.size(); ++k) {
      const room::Hash256& h = missing[k];
      std::fprintf(stderr, " %s%s", Hex(h).c_str(), quarantined[k] ? "[quarantined here]" : "");
      for (auto& o : nodes_) {  // where it is placed, and its epoch
        room::Swarm* osw = SwarmOf(*o, r);
        if (osw == nullptr) continue;
        const room::Bytes rec = osw->room().RecordOf(h);
        room::UpdateView u;
        if (!rec.empty() && room::DecodeUpdate(rec, r.id, &u) == room::Verdict::kOk) {
          std::fprintf(stderr, "(at %u, epoch %u: %s)", o->index, u.epoch,
                       osw->room().DebugEntry(h).c_str());
          break;
        }
      }
    }
    std::fprintf(stderr, "\n");
    std::fprintf(stderr, "    heads:");
    for (const room::Hash256& h : rm.heads()) std::fprintf(stderr, " %s", Hex(h).c_str());
    std::fprintf(stderr, " verdicts:");
    for (int v = 0; v < room::kVerdictCount; ++v) {
      if (rm.verdict_count(static_cast<room::Verdict>(v)) != 0) {
        std::fprintf(stderr, " %s=%llu", room::VerdictName(static_cast<room::Verdict>(v)),
                     static_cast<unsigned long long>(rm.verdict_count(static_cast<room::Verdict>(v))));
      }
    }
    std::fprintf(stderr, "\n");
  }
}

void RoomSimulator::CheckConvergence() {
  heap::Scope scope(heap::kShared);
  report_.converged = 1;
  for (auto& rp : rooms_) {
    SimRoom& r = *rp;
    std::vector<room::Hash256> heads;
    room::Hash256 state{};
    int heads_from = -1, state_from = -1;
    for (auto& n : nodes_) {
      room::Swarm* sw = SwarmOf(*n, r);
      if (sw == nullptr) continue;
      bool reader = !n->relay;
      for (uint32_t si : n->slots) {
        if (slots_[si]->room == r.index && slots_[si]->evicted) reader = false;
      }
      if (!n->relay && !reader) continue;  // the evicted member: it may stop anywhere
      const std::vector<room::Hash256> h = sw->room().heads();
      if (heads_from < 0) {
        heads = h;
        heads_from = static_cast<int>(n->index);
      } else if (h != heads) {
        report_.converged = 0;
        if (config_.verbose) {
          DumpRoom(r);
          room::Swarm* first = SwarmOf(*nodes_[static_cast<size_t>(heads_from)], r);
          const auto hs = sw->room().heads();
          const room::SyncPlan plan = first->room().PlanSync(hs, false, true);
          std::fprintf(stderr, "  node %d would send node %u %zu updates (take the checkpoint: %d);"
                       " node %u's heads:", heads_from, n->index, plan.updates.size(),
                       plan.take_checkpoint, n->index);
          for (const auto& x : hs) {
            std::fprintf(stderr, " %s (known to node %d: %d)", Hex(x).c_str(), heads_from,
                         !first->room().RecordOf(x).empty());
          }
          std::fprintf(stderr, "\n");
          std::fprintf(stderr, "  node %d %s\n  node %u %s\n", heads_from,
                       first->room().DebugCheckpoint().c_str(), n->index,
                       sw->room().DebugCheckpoint().c_str());
          // Updates one node places after its checkpoint barrier and the other before
          // one (or not at all): where two orders part.
          for (int way = 0; way < 2; ++way) {
            const room::Room& a = (way == 0 ? first : sw)->room();
            const room::Room& b = (way == 0 ? sw : first)->room();
            const int a_index = way == 0 ? heads_from : static_cast<int>(n->index);
            const int b_index = way == 0 ? static_cast<int>(n->index) : heads_from;
            int listed = 0;
            for (const auto& x : a.order()) {
              if (listed >= 6) break;
              const std::string at_a = a.DebugEntry(x), at_b = b.DebugEntry(x);
              const std::string tail = "seg=" + std::to_string(UINT32_MAX) + " ";
              if (at_a.find(tail) == std::string::npos || at_b.find(tail) != std::string::npos) {
                continue;
              }
              ++listed;
              std::fprintf(stderr, "  after the barrier at node %d only: %s\n    node %d: %s\n"
                           "    node %d: %s\n", a_index, Hex(x).c_str(), a_index, at_a.c_str(),
                           b_index, at_b.c_str());
            }
          }
          int shown = 0;
          for (const auto& x : first->room().order()) {
            if (shown >= 3) break;
            const std::string mine = sw->room().DebugEntry(x);
            if (mine.find("ref=0") != std::string::npos && mine.find("pos=4294967295") == std::string::npos) continue;
            ++shown;
            std::fprintf(stderr, "  %s at node %d: %s\n  %s at node %u: %s\n", Hex(x).c_str(),
                         heads_from, first->room().DebugEntry(x).c_str(), Hex(x).c_str(),
                         n->index, mine.c_str());
          }
        }
        Fail(absl::StrCat("not converged: room ", r.index, ": node ", n->index, " holds ",
                          h.size(), " heads (log ", sw->room().log_size(), ", pending ",
                          sw->room().pending_size(), "), node ", heads_from, " others"));
        return;
      }
      if (reader) {
        if (state_from < 0) {
          state = sw->room().state_hash();
          state_from = static_cast<int>(n->index);
        } else if (sw->room().state_hash() != state) {
          report_.converged = 0;
          Fail(absl::StrCat("not converged: room ", r.index, ": members ", state_from, " and ",
                            n->index, " hold the same heads with different states"));
          return;
        }
      }
    }
  }
  for (auto& n : nodes_) {
    if (n->relay) CheckAcked(*n, "at the end");
  }
  // Whoever took an evicted writer's update before the rotation reached it has dropped it.
  for (auto& n : nodes_) {
    if (!n->alive) continue;
    for (auto& r : rooms_) {
      room::Swarm* sw = SwarmOf(*n, *r);
      if (sw == nullptr) continue;
      for (const room::Hash256& id : sw->room().order()) {
        if (attacker_.contains(id)) {
          ++report_.evicted_writes_accepted;
          Fail(absl::StrCat("evicted_writes_accepted: node ", n->index, " still holds update ",
                            Hex(id), " of the evicted member after the rotation reached it"));
          return;
        }
      }
    }
  }
}

RoomSimReport RoomSimulator::Run() {
  Build();
  const int64_t end_us = config_.run_us + config_.heal_us;
  while (!failed()) {
    const int64_t net_at = net_->NextAt();
    const int64_t wake_at = wakes_.empty() ? INT64_MAX : wakes_.top().at_us;
    const int64_t work_at = work_.empty() ? INT64_MAX : work_.top().at_us;
    const int64_t next = std::min({net_at, wake_at, work_at});
    if (next > end_us) break;
    if (net_at == next) {
      net_->DeliverNext();
      continue;
    }
    if (wake_at == next) {
      const Wake w = wakes_.top();
      wakes_.pop();
      now_ = w.at_us;
      net_->set_now(now_);
      Node& n = *nodes_[w.node];
      if (!n.alive || n.wake_at != w.at_us) continue;  // superseded
      n.wake_at = INT64_MAX;
      TickNode(w.node);
      continue;
    }
    const Work w = work_.top();
    work_.pop();
    now_ = w.at_us;
    net_->set_now(now_);
    Do(w);
  }
  if (!failed()) {
    now_ = std::max(now_, end_us);
    CheckConvergence();
  }
  report_.seconds_simulated = static_cast<double>(now_) / 1e6;
  report_.datagrams = net_->sent();
  for (auto& n : nodes_) {
    if (!n->alive) continue;
    n->core->rooms().ForEach([&](room::Swarm& s) { report_.syncs += s.counters().syncs_sent; });
  }
  return report_;
}

std::string RoomSimReport::Text() const {
  std::string s = absl::StrCat(
      "rooms: seed ", seed, ", ", nodes, " nodes (", relays, " relays), ", rooms, " rooms, ",
      seconds_simulated, " s simulated, ", steps, " steps (", deliveries, " datagrams delivered, ",
      ticks, " ticks)\n");
  absl::StrAppend(&s, "faults: ", crashes, " crashes, ", partitions, " partitions, ", disk_faults,
                  " disk faults, ", forged_sent, " forged datagrams, ", evicted_writes_sent,
                  " evicted writes sent (", evicted_writes_before_rotation_known,
                  " taken by nodes the rotation had not reached yet)\n");
  absl::StrAppend(&s, "work: ", posts, " posts (", posts_busy, " refused as busy), ", acks_sent,
                  " acks sent, ", acks_received, " received, ", rotations, " rotations, ",
                  late_joins, " late joins, ", checkpoints_loaded, " checkpoints loaded\n");
  absl::StrAppend(&s, "memory peak: relay ", relay_bytes_peak, " bytes, member ",
                  member_bytes_peak, " bytes\n");
  if (failure.empty()) {
    absl::StrAppend(&s, "every checker held\n");
  } else {
    absl::StrAppend(&s, "FAILED at step ", failed_step, ": ", failure, "\n");
  }
  return s;
}

std::string RoomSimReport::KeyValues() const {
  return absl::StrCat(
      "nodes=", nodes, " rooms=", rooms, " seconds_simulated=", seconds_simulated,
      " steps=", steps, " crashes=", crashes, " partitions=", partitions,
      " disk_faults=", disk_faults, " posts=", posts, " acked_lost=", acked_lost,
      " converged=", converged, " diverged=", diverged, " forged_sent=", forged_sent,
      " forged_accepted=", forged_accepted, " evicted_writes_sent=", evicted_writes_sent,
      " evicted_writes_accepted=", evicted_writes_accepted, " evicted_reads=", evicted_reads,
      " relay_bytes_peak=", relay_bytes_peak, " member_bytes_peak=", member_bytes_peak,
      " failed_step=", failed_step, " seed=", seed);
}

}  // namespace ringpeer::sim
