#include "node/core/node_core.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>

#include "base/assert.h"

namespace ringpeer::core {

// GuardedOutbox: the overlay's and the rooms' Outbox over the caller's sink (a transport's
// send slots: no copy). Every datagram the core sends passes the ReflectionGuard here: one
// to an address that has not proved it receives, beyond 3x what that address sent, is not
// sent.
class NodeCore::GuardedOutbox : public base::Outbox {
 public:
  explicit GuardedOutbox(NodeCore* core) : c_(core) {}
  std::span<uint8_t> Buffer() noexcept override {
    std::span<uint8_t> b = c_->sink_->Buffer();
    last_ = b.data();
    return b.size() > wire::kDatagramBytesMax ? b.first(wire::kDatagramBytesMax) : b;
  }
  void Commit(size_t size, const base::Endpoint& to) noexcept override {
    uint8_t type = 0;
    uint32_t hint = wire::kNoShardHint;
    if (size >= wire::kHeaderBytes && last_ != nullptr) {
      const wire::Header h = wire::LoadHeader(last_);
      type = h.type;
      hint = h.shard_hint;  // our probe goes to the shard there that this datagram goes to
    }
    bool probe = false;
    if (!c_->guard_.Allow(to, size, type, c_->now_us_, &probe)) {
      // The slot is not committed: the next Buffer() hands it out again.
      if (probe) c_->SendProbe(to, c_->now_us_, hint);
      return;
    }
    c_->sink_->Commit(size, to);
    Counters::Add(c_->counters_.sent, 1);
    if (probe && type != static_cast<uint8_t>(wire::MessageType::kPing)) {
      c_->SendProbe(to, c_->now_us_, hint);
    }
  }
  // Bursts: the sink's (a transport's GSO buffers), or none (a kernel without GSO, the
  // delay shim): then the rooms send datagram by datagram, unpadded, as before.
  std::span<uint8_t> BurstBuffer() noexcept override {
    std::span<uint8_t> b = c_->sink_->BurstBuffer();
    burst_ = b.data();
    return b.size() > base::kBurstBytesMax ? b.first(base::kBurstBytesMax) : b;
  }
  size_t CommitBurst(size_t size, size_t segment,
                     std::span<const base::Endpoint> to) noexcept override {
    RP_ASSERT(burst_ != nullptr && size >= wire::kHeaderBytes && segment > 0 &&
              to.size() <= base::kBurstPeersMax);
    const wire::Header h = wire::LoadHeader(burst_);
    burst_ = nullptr;
    // The guard sees each peer as it sees a datagram (the burst's bytes, its first type).
    base::Endpoint allowed[base::kBurstPeersMax];
    base::Endpoint probes[base::kBurstPeersMax];
    size_t n = 0, p = 0;
    for (const base::Endpoint& peer : to) {
      bool probe = false;
      if (c_->guard_.Allow(peer, size, h.type, c_->now_us_, &probe)) allowed[n++] = peer;
      if (probe) probes[p++] = peer;
    }
    // Committed even with no peer left: it hands the buffer back.
    const size_t queued = c_->sink_->CommitBurst(size, segment, {allowed, n});
    Counters::Add(c_->counters_.sent, queued);
    for (size_t i = 0; i < p; ++i) c_->SendProbe(probes[i], c_->now_us_, h.shard_hint);
    return queued;
  }

 private:
  NodeCore* c_;
  const uint8_t* last_ = nullptr;
  const uint8_t* burst_ = nullptr;
};

// Events: the overlay's results, matched against the command in progress, then passed
// on to the caller's own listener if it gave one. Called from
// inside Overlay calls, so it only records; it never calls back into the overlay.
class NodeCore::Events : public dht::OverlayEvents {
 public:
  Events(NodeCore* core, dht::OverlayEvents* also) : core_(core), also_(also) {}
  void OnLookupStarted(uint32_t handle, dht::LookupKind kind) override {
    if (also_ != nullptr) also_->OnLookupStarted(handle, kind);
    Counters::Add(core_->counters_.lookups_started, 1);
    // A room's provider lookup learns its handle here: it may end inside the same call.
    NodeCore::RoomLookup* l = core_->starting_room_lookup_;
    if (l != nullptr && kind == dht::LookupKind::kGetProviders) {
      l->handle = handle;
      core_->starting_room_lookup_ = nullptr;
    }
  }
  void OnLookupDone(const dht::LookupResult& r) override {
    if (also_ != nullptr) also_->OnLookupDone(r);
    CountLookup(r);
    if (r.kind == dht::LookupKind::kGetProviders) NoteRoomProviders(r);
    ControlCommand* cmd = core_->command_;
    if (cmd == nullptr || r.handle != core_->command_handle_) return;
    cmd->closest.assign(r.closest.begin(), r.closest.end());
    cmd->providers.assign(r.providers.begin(), r.providers.end());
    cmd->rounds = r.rounds;
    cmd->requests = r.requests;
    cmd->ok = true;
    finished_ = true;
  }
  void OnAnnounced(const dht::NodeId& key, uint32_t acks) override {
    if (also_ != nullptr) also_->OnAnnounced(key, acks);
    ControlCommand* cmd = core_->command_;
    if (cmd == nullptr || cmd->kind != ControlCommand::Kind::kAnnounce || key != cmd->target) {
      return;
    }
    cmd->acks = acks;
    cmd->ok = acks > 0;
    if (acks == 0) cmd->error = "no node acknowledged the announcement";
    finished_ = true;
  }
  void OnSizeEstimate(const dht::SizeEstimate& e) override {
    if (also_ != nullptr) also_->OnSizeEstimate(e);
    if (!e.ok) return;
    (e.method == dht::SizeMethod::kDensity ? core_->size_density_ : core_->size_walks_) = e;
  }
  void OnRouteDone(const dht::RouteResult& r) override {
    if (also_ != nullptr) also_->OnRouteDone(r);
  }
  void OnRouted(const dht::NodeId& origin, const base::Endpoint& origin_addr,
                dht::RouteKind kind, bool exact, std::span<const uint8_t> payload) override {
    if (also_ != nullptr) also_->OnRouted(origin, origin_addr, kind, exact, payload);
  }
  void OnGossip(const dht::NodeId& origin, uint64_t msg_id,
                std::span<const uint8_t> payload) override {
    if (also_ != nullptr) also_->OnGossip(origin, msg_id, payload);
  }
  void OnDumpChunk(const base::Endpoint& from, std::span<const dht::Contact> nodes) override {
    if (also_ != nullptr) also_->OnDumpChunk(from, nodes);
  }
  // TakeFinished: whether the command in progress got its answer since the last call.
  bool TakeFinished() noexcept {
    const bool f = finished_;
    finished_ = false;
    return f;
  }

 private:
  // NoteRoomProviders: a room's provider lookup finished: its providers (not us) are
  // queued for the room's swarm (handed over after the overlay call returns).
  void NoteRoomProviders(const dht::LookupResult& r) noexcept {
    for (NodeCore::RoomLookup& l : core_->room_lookups_) {
      if (l.handle == 0 || l.handle != r.handle) continue;
      l.handle = 0;
      size_t taken = 0;
      const wire::NodeId self = core_->overlay_->id();
      for (const dht::Contact& c : r.providers) {
        if (taken == kRoomProvidersJoinMax) break;
        if (c.id == self || !c.addr.valid()) continue;
        if (core_->room_peers_found_.size() == core_->room_peers_found_.capacity()) break;
        core_->room_peers_found_.push_back(NodeCore::RoomPeerFound{l.room, c.addr});
        ++taken;
      }
    }
  }
  // CountLookup: the outcome and duration of every finished lookup, for /metrics.
  void CountLookup(const dht::LookupResult& r) noexcept {
    Counters& c = core_->counters_;
    Counters::Add(r.closest.empty() ? c.lookups_failed : c.lookups_succeeded, 1);
    const int64_t d = std::max<int64_t>(0, r.duration_us);
    size_t b = 0;
    while (b < std::size(kLookupDurationBoundsUs) && d > kLookupDurationBoundsUs[b]) ++b;
    Counters::Add(c.lookup_duration_buckets[b], 1);
    Counters::Add(c.lookup_duration_sum_us, static_cast<uint64_t>(d));
  }

  NodeCore* core_;
  dht::OverlayEvents* also_;  // the caller's listener (CoreConfig::overlay.events), or null
  bool finished_ = false;
};

NodeCore::NodeCore(const CoreConfig& config, const wire::KeyPair& identity,
                   base::Outbox* sink, MailSink* mail)
    : config_(config),
      identity_(identity),
      sink_(sink),
      mail_(mail),
      outbox_(std::make_unique<GuardedOutbox>(this)),
      responder_(identity, config.start_us, config.overlay.proof, config.overlay.client,
                 &encoder_),
      limiter_(config.rate_limit_entries, config.rate_limit_per_s, config.rate_limit_burst),
      guard_(config.reflection_entries),
      now_us_(config.start_us),
      rng_(config.rng_seed),
      ping_seen_(std::make_unique<SeenEntry[]>(config.ping_seen_entries)) {
  RP_ASSERT(config_.index < config_.shards);
  RP_ASSERT(config_.owner < config_.shards);
  RP_ASSERT(config_.start_us >= 0 && config_.rng_seed != 0);  // the caller's clock and seed
  RP_ASSERT(sink_ != nullptr);
  RP_ASSERT(mail_ != nullptr || config_.shards == 1);
  RP_ASSERT(config_.ping_seen_entries > 0 &&
            (config_.ping_seen_entries & (config_.ping_seen_entries - 1)) == 0);
  room::RoomHostConfig rc;
  rc.identity = &identity_;
  rc.rooms_max = config_.rooms_max;
  rc.swarm = config_.room_swarm;
  rc.swarm.self = wire::NodeIdOf(identity_.public_key);
  rc.swarm.relay = config_.room_storage != nullptr && config_.room_relay;
  rc.admission = config_.room_admission;
  rc.admission.sources = &guard_check_;
  rooms_ = std::make_unique<room::RoomHost>(rc, config_.room_storage, &encoder_, &rng_,
                                            config_.room_listener);
  // Found providers wait here until the overlay call returns: at most a full lookup's
  // worth per room served, up to kRoomPeersFoundMax (the capacity is the bound).
  room_peers_found_.reserve(std::min<size_t>(
      kRoomPeersFoundMax, std::max<size_t>(1, size_t{config_.rooms_max} * config_.shards) *
                              kRoomProvidersJoinMax));
  if (config_.index == config_.owner) {
    const int64_t now = now_us_;
    events_ = std::make_unique<Events>(this, config_.overlay.events);
    dht::OverlayConfig oc = config_.overlay;
    oc.shard_index = static_cast<uint8_t>(config_.index);
    // Every room of every shard is announced from here, besides the node's own keys.
    oc.announces_max = std::max<uint32_t>(
        oc.announces_max, config_.rooms_max * config_.shards + config_.own_announces);
    oc.events = events_.get();
    oc.encoder = &encoder_;
    overlay_ = std::make_unique<dht::Overlay>(identity_, oc, &rng_, now);
    guard_.set_proof_source(&table_proofs_);
    if (!config_.restore.empty()) overlay_->Restore(now, config_.restore);
    next_size_estimate_us_ = now + config_.size_estimate_first_us;
    if (config_.shards > 1) {
      // Two snapshots per other shard, allocated here once (~0.5 MB each with the default
      // 640-entry table and 4,096 provider records); the first go out at the first tick.
      const uint32_t capacity = oc.routing.buckets_max * oc.routing.bucket_size;
      snapshots_.resize(size_t{2} * config_.shards);
      snapshot_free_.assign(config_.shards, 0);
      for (uint32_t s = 0; s < config_.shards; ++s) {
        if (s == config_.index) continue;
        for (uint32_t k = 0; k < 2; ++k) {
          snapshots_[2 * s + k] = std::make_unique<dht::DhtSnapshot>(capacity, oc.providers);
        }
        snapshot_free_[s] = 0b11;
      }
      next_snapshot_us_ = now;
    }
  } else {
    snapshot_responder_ =
        std::make_unique<dht::SnapshotResponder>(wire::NodeIdOf(identity_.public_key));
  }
}

NodeCore::~NodeCore() = default;

base::Outbox& NodeCore::outbox() noexcept { return *outbox_; }

int64_t NodeCore::NextWakeUs(int64_t now_us) const noexcept {
  int64_t w = overlay_ ? overlay_->NextWakeUs() : INT64_MAX;
  if (!snapshots_.empty()) w = std::min(w, next_snapshot_us_);
  if (snapshot_return_ != nullptr) w = std::min(w, now_us + kRoomTickUs);
  if (rooms_->rooms_count() > 0 || rooms_->joins_pending() > 0) {
    w = std::min(w, now_us + kRoomTickUs);
  }
  return w;
}

wire::Verdict NodeCore::Receive(int64_t now_us, const base::Endpoint& from,
                                std::span<const uint8_t> bytes, bool truncated) noexcept {
  now_us_ = now_us;
  if (truncated) return Drop(wire::Verdict::kTooLong);
  wire::Header header;
  wire::Verdict v = wire::CheckHeader(bytes.data(), bytes.size(), &header);
  if (v != wire::Verdict::kOk) return Drop(v);
  if (!limiter_.Allow(from, now_us)) return Drop(wire::Verdict::kRateLimited);
  wire::Message msg;
  v = wire::Decode(bytes.data(), bytes.size(), &msg);
  if (v != wire::Verdict::kOk) return Drop(v);
  return Dispatch(from, msg, /*from_mailbox=*/false, now_us);
}

void NodeCore::BeginRoomBatch() noexcept { rooms_->BeginBatch(); }
void NodeCore::EndRoomBatch() noexcept { rooms_->EndBatch(*outbox_); }

wire::Verdict NodeCore::Dispatch(const base::Endpoint& from, const wire::Message& msg,
                                 bool from_mailbox, int64_t now_us) noexcept {
  if (msg.type() == wire::MessageType::kPing) {
    Received(from, msg, now_us);
    return HandlePing(from, msg, now_us);
  }
  if (msg.is_room()) return HandleRoom(from, msg, now_us);
  // A pong to a probe comes back to the core that sent it (the txid's low byte, which the
  // responder puts in the shard hint); the overlay's own pongs name the owner.
  if (msg.type() == wire::MessageType::kPong) {
    const uint64_t txid = msg.pong()->txid();
    const uint32_t to = static_cast<uint32_t>(txid & 0xFF) % config_.shards;
    if (to != config_.index) return Forward(to, MailItem::Kind::kDatagram, from, msg.bytes());
    Received(from, msg, now_us);
    if (guard_.OnPong(from, txid, now_us)) {
      PublishReflectionCounters();
      return wire::Verdict::kOk;
    }
    if (!overlay_) return Drop(wire::Verdict::kUnexpectedReply);
  }
  // Everything else is overlay state, which lives on the owner. Replies belong there too:
  // only the owner sends requests, so every txid it makes names it.
  // The DHT reads are answered here from the owner's snapshot (issue 14); what goes on to
  // the owner is a write, or a read that came before the first snapshot.
  if (!overlay_) {
    RP_ASSERT(!from_mailbox);  // mail for the overlay only ever goes to the owner
    wire::Verdict answered = wire::Verdict::kOk;
    if (AnswerFromSnapshot(from, msg, now_us, &answered)) return answered;
    const wire::Verdict f = Forward(config_.owner, MailItem::Kind::kDatagram, from, msg.bytes());
    if (f == wire::Verdict::kOk) {
      Counters::Add(counters_.overlay_forwarded, 1);
      if (IsDhtRead(msg.type())) Counters::Add(counters_.overlay_forwarded_reads, 1);
    }
    return f;
  }
  if (msg.type() != wire::MessageType::kPong) Received(from, msg, now_us);
  const wire::Verdict v = overlay_->OnMessage(now_us, from, msg, *outbox_);
  if (v != wire::Verdict::kOk) {
    MaybeProbe(from, now_us);
    return Drop(v);
  }
  CountAnswered(msg.type());
  // A reply that matched one of our requests' txids, from where we sent it: the address
  // receives what we send it.
  switch (msg.type()) {
    case wire::MessageType::kPong:
    case wire::MessageType::kNodes:
    case wire::MessageType::kProviders:
    case wire::MessageType::kAck:
    case wire::MessageType::kWalkReply:
      guard_.Prove(from, now_us);
      break;
    default:
      MaybeProbe(from, now_us);
      break;
  }
  return wire::Verdict::kOk;
}

void NodeCore::CountAnswered(wire::MessageType type) noexcept {
  switch (type) {
    case wire::MessageType::kFindNode: Counters::Add(counters_.find_node_answered, 1); break;
    case wire::MessageType::kGetProviders:
      Counters::Add(counters_.get_providers_answered, 1);
      break;
    case wire::MessageType::kWalk: Counters::Add(counters_.walks_answered, 1); break;
    default: break;
  }
}

bool NodeCore::AnswerFromSnapshot(const base::Endpoint& from, const wire::Message& msg,
                                  int64_t now_us, wire::Verdict* verdict) noexcept {
  if (snapshot_ == nullptr || !IsDhtRead(msg.type())) return false;
  wire::NodeId sender{};
  switch (msg.type()) {
    case wire::MessageType::kFindNode: sender = wire::FromWireId(*msg.find_node()->sender()); break;
    case wire::MessageType::kGetProviders:
      sender = wire::FromWireId(*msg.get_providers()->sender());
      break;
    default: sender = wire::FromWireId(*msg.walk()->sender()); break;
  }
  if (sender == responder_.id()) {  // as the owner's overlay: our own id is a lie
    *verdict = Drop(wire::Verdict::kBadField);
    return true;
  }
  Received(from, msg, now_us);
  const bool proven = guard_.IsProved(from, now_us);
  wire::Verdict v = wire::Verdict::kOk;
  switch (msg.type()) {
    case wire::MessageType::kFindNode:
      v = snapshot_responder_->Answer(from, msg, snapshot_->table, proven, *outbox_);
      break;
    case wire::MessageType::kGetProviders:
      v = snapshot_responder_->AnswerGetProviders(now_us, from, msg, *snapshot_, proven,
                                                  *outbox_);
      break;
    default:
      v = snapshot_responder_->AnswerWalk(from, msg, snapshot_->table, proven, rng_, *outbox_);
      break;
  }
  MaybeProbe(from, now_us);
  if (v != wire::Verdict::kOk) {
    *verdict = Drop(v);
    return true;
  }
  CountAnswered(msg.type());
  // The sender, to the owner (a write: it may refresh or challenge it), at most once per
  // kPingSeenIntervalUs per address, and not for the table's own entries (the owner's
  // traffic with them keeps them fresh).
  if (!snapshot_->table.Contains(sender, from) && !PingSeenRecently(from, now_us)) {
    Forward(config_.owner, MailItem::Kind::kPeerSeen, from, sender);
  }
  *verdict = wire::Verdict::kOk;
  return true;
}

void NodeCore::PublishSnapshots(int64_t now_us) noexcept {
  next_snapshot_us_ = now_us + dht::kSnapshotIntervalUs;
  for (uint32_t s = 0; s < config_.shards; ++s) {
    if (s == config_.index) continue;
    uint8_t& free = snapshot_free_[s];
    // Both out: the reader has not handed the older one back yet; it keeps answering from
    // the newer one, and gets the next after it does.
    if (free == 0) continue;
    const uint32_t k = (free & 1) ? 0 : 1;
    dht::DhtSnapshot* snap = snapshots_[2 * s + k].get();
    overlay_->PublishSnapshot(now_us, snap);
    uint8_t ptr[sizeof(snap)];
    std::memcpy(ptr, &snap, sizeof(snap));
    if (Forward(s, MailItem::Kind::kDhtSnapshot, base::Endpoint{}, ptr) != wire::Verdict::kOk) {
      continue;  // mailbox full (counted): it stays ours; the next round tries again
    }
    free = static_cast<uint8_t>(free & ~(1u << k));
    Counters::Add(counters_.dht_snapshots, 1);
  }
}

void NodeCore::ReturnSnapshot(dht::DhtSnapshot* old) noexcept {
  uint8_t ptr[sizeof(old)];
  std::memcpy(ptr, &old, sizeof(old));
  const bool sent = Forward(config_.owner, MailItem::Kind::kDhtSnapshotDone, base::Endpoint{},
                            ptr) == wire::Verdict::kOk;
  snapshot_return_ = sent ? nullptr : old;
}

void NodeCore::SendProbe(const base::Endpoint& to, int64_t now_us, uint32_t hint) noexcept {
  std::span<uint8_t> buf = outbox_->Buffer();
  if (buf.empty()) return;
  const uint64_t txid =
      guard_.Probe(to, rng_.Next(), static_cast<uint8_t>(config_.index), now_us);
  const size_t n = encoder_.Ping(buf, hint, txid, responder_.id(), nullptr,
                                       config_.overlay.client);
  if (n > 0) outbox_->Commit(n, to);  // charged to the credit; never refused (a ping)
}

void NodeCore::PublishAdmission() noexcept {
  const room::AdmissionCounters& a = rooms_->admission();
  auto set = [](std::atomic<uint64_t>& c, uint64_t v) { c.store(v, std::memory_order_relaxed); };
  set(counters_.rooms_opened, a.opened);
  set(counters_.rooms_reloaded, a.reloaded);
  set(counters_.rooms_refused_policy, a.refused_policy);
  set(counters_.rooms_refused_unproved, a.refused_unproved);
  set(counters_.rooms_refused_rate, a.refused_rate);
  set(counters_.rooms_refused_full, a.refused_full);
  set(counters_.rooms_dropped_unwritten, a.dropped_unwritten);
  set(counters_.rooms_unloaded_idle, a.unloaded_idle);
  const std::array<uint64_t, 4> kinds = rooms_->rooms_by_reducer();
  for (size_t k = 0; k < kinds.size(); ++k) set(counters_.rooms_by_reducer[k], kinds[k]);
  set(counters_.rooms_checkpointed, rooms_->rooms_with_checkpoint());
  std::vector<wire::Hash256>& dropped = rooms_->dropped();
  if (overlay_) {
    for (const wire::Hash256& r : dropped) {
      if (rooms_->Find(r) == nullptr) overlay_->Unannounce(r);
    }
  }
  dropped.clear();  // keeps its capacity
}

void NodeCore::PublishReflectionCounters() noexcept {
  const ReflectionCounters& c = guard_.counters();
  counters_.reflection_refused.store(c.refused, std::memory_order_relaxed);
  counters_.reflection_refused_bytes.store(c.refused_bytes, std::memory_order_relaxed);
  counters_.reflection_probes.store(c.probes_sent, std::memory_order_relaxed);
  counters_.reflection_proved.store(c.proved, std::memory_order_relaxed);
}

wire::Verdict NodeCore::HandleRoom(const base::Endpoint& from, const wire::Message& msg,
                                   int64_t now_us) noexcept {
  // A room belongs to shard room_id[0] % shards: the low byte of its shard hint, which the
  // reuseport program steers by. What the kernel put elsewhere (hint byte 0xFF, or
  // steering off) crosses the mailbox.
  const uint32_t owner = wire::RoomOf(msg)[0] % config_.shards;
  if (owner != config_.index) return Forward(owner, MailItem::Kind::kDatagram, from, msg.bytes());
  Counters::Add(counters_.room_messages, 1);
  Received(from, msg, now_us);
  wire::Verdict v = rooms_->OnMessage(now_us, from, msg, *outbox_);
  if (v != wire::Verdict::kOk) Drop(v);
  MaybeProbe(from, now_us);  // after the answer, which has first call on the credit
  counters_.room_updates_accepted.store(rooms_->updates_accepted(), std::memory_order_relaxed);
  counters_.room_updates_rejected.store(rooms_->updates_rejected(), std::memory_order_relaxed);
  return v;
}

wire::Verdict NodeCore::HandlePing(const base::Endpoint& from, const wire::Message& msg,
                                   int64_t now_us) noexcept {
  const wire::Verdict v = responder_.Answer(now_us, from, msg, *outbox_);
  if (v != wire::Verdict::kOk) {
    Drop(v);
  } else {
    Counters::Add(counters_.pings_answered, 1);
  }
  // A pinger that has not proved its address is probed back: a member's node pings a relay
  // as it joins, so by the time its requests come, the probe's pong is there.
  MaybeProbe(from, now_us, wire::kNoShardHint);
  if (PingSeenRecently(from, now_us)) return v;
  if (overlay_) {
    overlay_->OnPingSeen(now_us, from, wire::FromWireId(*msg.ping()->sender()), *outbox_,
                         msg.ping()->client());
  } else {
    Forward(config_.owner, MailItem::Kind::kPingSeen, from, msg.bytes());
  }
  return v;
}

bool NodeCore::PingSeenRecently(const base::Endpoint& from, int64_t now_us) noexcept {
  const uint64_t key = from.Hash() | 1;
  SeenEntry& e = ping_seen_[key & (config_.ping_seen_entries - 1)];
  if (e.key == key && now_us - e.last_us < kPingSeenIntervalUs) return true;
  e.key = key;
  e.last_us = now_us;
  return false;
}

wire::Verdict NodeCore::Forward(uint32_t to, MailItem::Kind kind, const base::Endpoint& from,
                                std::span<const uint8_t> bytes) noexcept {
  RP_ASSERT(to != config_.index);
  RP_ASSERT(bytes.size() <= wire::kDatagramBytesMax);
  MailItem* item = mail_ != nullptr ? mail_->Slot(to) : nullptr;
  if (item == nullptr) return Drop(wire::Verdict::kMailboxFull);
  item->from = from;
  item->kind = kind;
  item->size = static_cast<uint16_t>(bytes.size());
  std::memcpy(item->bytes, bytes.data(), bytes.size());
  mail_->Push(to);
  Counters::Add(counters_.mailbox_out, 1);
  return wire::Verdict::kOk;
}

void NodeCore::OnMail(int64_t now_us, const MailItem& item) noexcept {
  now_us_ = now_us;
  Counters::Add(counters_.mailbox_in, 1);
  if (item.kind == MailItem::Kind::kRoomProviders || item.kind == MailItem::Kind::kRoomPeer) {
    wire::Hash256 room{};
    if (item.size < room.size()) return;
    std::memcpy(room.data(), item.bytes, room.size());
    if (item.kind == MailItem::Kind::kRoomProviders) {
      // (Busy lookup slots: this round is skipped; the room's next one asks again.)
      if (overlay_) ProvideRoom(room, item.size > room.size() && item.bytes[32] != 0, now_us);
    } else {
      ConnectRoomPeer(room, item.from, now_us);
    }
    return;
  }
  if (item.kind == MailItem::Kind::kDhtSnapshot ||
      item.kind == MailItem::Kind::kDhtSnapshotDone) {
    dht::DhtSnapshot* snap = nullptr;
    if (item.size != sizeof(snap)) return;
    std::memcpy(&snap, item.bytes, sizeof(snap));
    if (item.kind == MailItem::Kind::kDhtSnapshot) {
      // The owner sends a new one only after the older of its two came back, so at most
      // one is ever waiting to go back.
      RP_ASSERT(snapshot_return_ == nullptr);
      dht::DhtSnapshot* old = const_cast<dht::DhtSnapshot*>(snapshot_);
      snapshot_ = snap;
      Counters::Add(counters_.dht_snapshots, 1);
      if (old != nullptr) ReturnSnapshot(old);
      return;
    }
    for (size_t i = 0; i < snapshots_.size(); ++i) {
      if (snapshots_[i].get() == snap) {
        snapshot_free_[i / 2] = static_cast<uint8_t>(snapshot_free_[i / 2] | (1u << (i % 2)));
      }
    }
    return;
  }
  if (item.kind == MailItem::Kind::kPeerSeen) {
    wire::NodeId id{};
    if (item.size != id.size() || !overlay_) return;
    std::memcpy(id.data(), item.bytes, id.size());
    overlay_->LearnFromShard(now_us, id, item.from, *outbox_);
    return;
  }
  // The sending core verified it; verifying again keeps Message's guarantee local and
  // costs ~100 ns.
  wire::Message msg;
  if (wire::Decode(item.bytes, item.size, &msg) != wire::Verdict::kOk) return;
  if (item.kind == MailItem::Kind::kPingSeen) {
    if (overlay_ && msg.type() == wire::MessageType::kPing) {
      overlay_->OnPingSeen(now_us, item.from, wire::FromWireId(*msg.ping()->sender()),
                           *outbox_, msg.ping()->client());
    }
    return;
  }
  Dispatch(item.from, msg, /*from_mailbox=*/true, now_us);
}

void NodeCore::Tick(int64_t now_us) noexcept {
  now_us_ = now_us;
  PublishReflectionCounters();
  PublishAdmission();
  rooms_->Tick(now_us, *outbox_);
  counters_.rooms.store(rooms_->rooms_count(), std::memory_order_relaxed);
  RoomDiscoveryTick(now_us);
  if (overlay_) {
    overlay_->Tick(now_us, *outbox_);
    MaybeEstimateSize(now_us);
    if (!snapshots_.empty() && now_us >= next_snapshot_us_) PublishSnapshots(now_us);
  }
  if (snapshot_return_ != nullptr) ReturnSnapshot(snapshot_return_);
  DeliverRoomPeers(now_us);
}

void NodeCore::CommitStart(int64_t now_us) noexcept {
  now_us_ = now_us;
  const std::optional<absl::Status> earlier = rooms_->CommitStart(*outbox_);
  if (earlier.has_value()) OnCommitResult(now_us, *earlier);
}

bool NodeCore::CommitInFlight() const noexcept { return rooms_->CommitInFlight(); }

void NodeCore::Commit(int64_t now_us) noexcept {
  now_us_ = now_us;
  const absl::Status s = rooms_->CommitAndRelease(*outbox_);
  OnCommitResult(now_us, s);
}

bool NodeCore::CommitPoll(int64_t now_us) noexcept {
  const std::optional<absl::Status> s = rooms_->CommitPoll(*outbox_);
  if (!s.has_value()) return false;
  now_us_ = now_us;
  OnCommitResult(now_us, *s);
  return true;
}

void NodeCore::OnCommitResult(int64_t now_us, const absl::Status& s) noexcept {
  if (config_.room_storage != nullptr) {
    const room::RoomStorage::CommitFigures f = config_.room_storage->commit_figures();
    counters_.storage_commits.store(f.commits, std::memory_order_relaxed);
    counters_.storage_commit_us.store(f.commit_us, std::memory_order_relaxed);
  }
  if (s.ok()) {
    if (storage_backoff_us_ != 0) {
      storage_backoff_us_ = 0;
      counters_.storage_failing.store(0, std::memory_order_relaxed);
      Counters::Add(counters_.storage_recoveries, 1);
      std::lock_guard<std::mutex> lock(storage_mu_);
      storage_error_.clear();
    }
    return;
  }
  Counters::Add(counters_.storage_errors, 1);
  counters_.storage_failing.store(1, std::memory_order_relaxed);
  storage_backoff_us_ = storage_backoff_us_ == 0
                            ? kStorageRetryFirstUs
                            : std::min(storage_backoff_us_ * 2, kStorageRetryMaxUs);
  storage_retry_at_us_ = now_us + storage_backoff_us_;
  // Error path only (at most a few times a second): the copy may allocate.
  std::lock_guard<std::mutex> lock(storage_mu_);
  if (storage_error_ != s.message()) storage_error_ = std::string(s.message());
}

void NodeCore::RoomDiscoveryTick(int64_t now_us) noexcept {
  rooms_->ForEach([&](room::Swarm& s) {
    room::Swarm::Discovery& d = s.discovery();
    if (now_us < d.next_lookup_us) return;
    const bool announce = !d.announced;
    if (config_.index == config_.owner) {
      // While every lookup slot is busy the room waits its turn at the next tick (it is
      // not pushed back a whole interval, which would starve the rooms that lose often).
      if (!ProvideRoom(s.id(), announce, now_us)) return;
    } else {
      uint8_t item[33];
      std::memcpy(item, s.id().data(), 32);
      item[32] = announce ? 1 : 0;
      // A full mailbox: counted; the room asks again at its next round.
      Forward(config_.owner, MailItem::Kind::kRoomProviders, base::Endpoint{}, item);
    }
    d.announced = true;
    d.interval_us = d.interval_us == 0 ? kRoomDiscoveryFirstUs
                                       : std::min(d.interval_us * 2, kRoomDiscoveryMaxUs);
    // Jitter (x0.75 to x1.25): rooms opened together do not stay in step.
    d.next_lookup_us = now_us + d.interval_us * 3 / 4 +
                       static_cast<int64_t>(rng_.Uniform(d.interval_us / 2 + 1));
  });
}

// ProvideRoom (owner shard): announces us as a provider of `room` the first time (the
// overlay then republishes it) and starts a lookup of its providers. False when every
// lookup slot of ours is busy. A lookup the overlay refuses (no verified peer yet, its
// pool full) ends at once with nothing: the room's next discovery round asks again.
bool NodeCore::ProvideRoom(const wire::Hash256& room, bool announce, int64_t now_us) noexcept {
  RP_ASSERT(overlay_ != nullptr);
  if (announce) overlay_->Announce(now_us, room, *outbox_);
  bool started = false;
  for (RoomLookup& l : room_lookups_) {
    if (l.handle != 0) continue;
    l.room = room;
    starting_room_lookup_ = &l;  // OnLookupStarted sets l.handle; OnLookupDone clears it
    overlay_->GetProviders(now_us, room, *outbox_);
    starting_room_lookup_ = nullptr;
    started = true;
    break;
  }
  DeliverRoomPeers(now_us);
  return started;
}

void NodeCore::DeliverRoomPeers(int64_t now_us) noexcept {
  for (const RoomPeerFound& f : room_peers_found_) {
    const uint32_t owner = f.room[0] % config_.shards;
    if (owner == config_.index) {
      ConnectRoomPeer(f.room, f.peer, now_us);
    } else {
      Forward(owner, MailItem::Kind::kRoomPeer, f.peer, f.room);
    }
  }
  room_peers_found_.clear();
}

void NodeCore::ConnectRoomPeer(const wire::Hash256& room, const base::Endpoint& peer,
                            int64_t now_us) noexcept {
  room::Swarm* s = rooms_->Find(room);
  if (s == nullptr || s->HasPeer(peer)) return;
  s->Connect(now_us, peer, *outbox_, /*retry=*/false);
}

void NodeCore::MaybeEstimateSize(int64_t now_us) noexcept {
  if (config_.size_estimate_interval_us <= 0) return;
  if (now_us < next_size_estimate_us_ || overlay_->VerifiedPeers() == 0) return;
  next_size_estimate_us_ = now_us + config_.size_estimate_interval_us;
  overlay_->EstimateSize(now_us, *outbox_);
  // The walk estimate allocates its sample buffer: once per interval, off the packet path.
  overlay_->EstimateSizeByWalks(now_us, *outbox_);
}

void NodeCore::CheckCommand(int64_t now_us) noexcept {
  if (command_ == nullptr) return;
  if (events_->TakeFinished()) return FinishCommand();
  if (now_us >= command_deadline_us_) {
    command_->error = "timed out";
    FinishCommand();
  }
}

void NodeCore::StartCommand(int64_t now_us, ControlCommand* cmd) noexcept {
  RP_ASSERT(command_ == nullptr);
  RP_ASSERT(overlay_ != nullptr);
  now_us_ = now_us;
  command_ = cmd;
  command_deadline_us_ = now_us + kCommandDeadlineUs;
  cmd->now_us = now_us;
  switch (cmd->kind) {
    case ControlCommand::Kind::kSnapshot:
      // Control path: allocating here is fine (once per `ringpeer status`).
      cmd->peers = overlay_->Snapshot(now_us);
      cmd->observed = overlay_->observed_address();
      cmd->overlay = overlay_->counters();
      cmd->table_size = overlay_->table().size();
      cmd->size_density = size_density_;
      cmd->size_walks = size_walks_;
      cmd->ok = true;
      return FinishCommand();
    case ControlCommand::Kind::kSaveTable:
      cmd->table_bytes = dht::SerializeTable(overlay_->SavedTable());
      cmd->ok = true;
      return FinishCommand();
    case ControlCommand::Kind::kLookup:
    case ControlCommand::Kind::kProviders:
      command_handle_ = cmd->kind == ControlCommand::Kind::kLookup
                            ? overlay_->FindNode(now_us, cmd->target, *outbox_)
                            : overlay_->GetProviders(now_us, cmd->target, *outbox_);
      if (command_handle_ == 0) {
        cmd->error = "no verified peers to ask yet, or too many lookups in flight";
        return FinishCommand();
      }
      return;
    case ControlCommand::Kind::kAnnounce:
      if (!overlay_->Announce(now_us, cmd->target, *outbox_)) {
        cmd->error = "no verified peers to announce to yet, or too many announcements";
        return FinishCommand();
      }
      return;
    case ControlCommand::Kind::kRoomJoin:
    case ControlCommand::Kind::kRoomPublish:
    case ControlCommand::Kind::kRoomLeave:
    case ControlCommand::Kind::kRoomState:
    case ControlCommand::Kind::kRoomEpoch:
      StartRoomCommand(cmd, now_us);
      return FinishCommand();
  }
}

// StartRoomCommand: an embedded client's request about one of its rooms. Control path:
// allocating is fine. Only the owner shard takes commands, so this serves rooms only on a
// one-shard node (node/client runs one); on more shards a room owned elsewhere is refused.
void NodeCore::StartRoomCommand(ControlCommand* cmd, int64_t now_us) noexcept {
  if (cmd->target[0] % config_.shards != config_.index) {
    cmd->error = "the room belongs to another shard (room commands need a one-shard node)";
    return;
  }
  room::Swarm* swarm = rooms_->Find(cmd->target);
  if (cmd->kind == ControlCommand::Kind::kRoomJoin) {
    // The invite's relays are also a way into the DHT, where the room's other providers
    // are found (a client may have been started without --bootstrap).
    if (overlay_) {
      for (const base::Endpoint& e : cmd->bootstrap) overlay_->AddBootstrap(now_us, e);
    }
    if (swarm == nullptr && cmd->genesis.empty()) {
      // A short invite: the room id only; the genesis and epochs come from the relays.
      auto joined = rooms_->JoinById(now_us, cmd->target, cmd->bootstrap, *outbox_,
                                     cmd->member ? &*cmd->member : nullptr);
      if (!joined.ok()) {
        cmd->error = std::string(joined.status().message());
        return;
      }
      counters_.rooms.store(rooms_->rooms_count(), std::memory_order_relaxed);
    } else if (swarm == nullptr) {
      auto joined = rooms_->Join(now_us, cmd->genesis, cmd->epochs, cmd->bootstrap, *outbox_,
                                 cmd->member ? &*cmd->member : nullptr);
      if (!joined.ok()) {
        cmd->error = std::string(joined.status().message());
        return;
      }
      counters_.rooms.store(rooms_->rooms_count(), std::memory_order_relaxed);
    } else {
      for (const base::Endpoint& e : cmd->bootstrap) swarm->Connect(now_us, e, *outbox_);
    }
    cmd->ok = true;
    return;
  }
  if (swarm == nullptr && rooms_->Joining(cmd->target)) {
    if (cmd->kind == ControlCommand::Kind::kRoomLeave) {
      rooms_->Close(cmd->target, *outbox_);
    } else if (cmd->kind != ControlCommand::Kind::kRoomState) {
      cmd->error = "not joined yet: no relay has sent the room's genesis";
      return;
    }
    cmd->room.joining = true;  // the figures stay empty until the genesis comes
    cmd->room.genesis_refused = rooms_->genesis_refused();
    cmd->ok = true;
    return;
  }
  if (swarm == nullptr) {
    cmd->error = "not in this room";
    return;
  }
  switch (cmd->kind) {
    case ControlCommand::Kind::kRoomPublish:
      for (const std::vector<uint8_t>& p : cmd->payloads) {
        auto id = swarm->Publish(now_us, p, *outbox_);
        if (!id.ok()) {
          cmd->error = std::string(id.status().message());
          return;  // `published` says how many went out before this one
        }
        cmd->published.push_back(*id);
      }
      break;
    case ControlCommand::Kind::kRoomEpoch: {
      if (cmd->epochs.size() != 1) {
        cmd->error = "needs one key epoch record";
        return;
      }
      const room::Verdict v = swarm->AddKeyEpoch(cmd->epochs[0], *outbox_);
      if (v != room::Verdict::kOk) {
        cmd->error = std::string("key epoch refused: ") + room::VerdictName(v);
        return;
      }
      break;
    }
    case ControlCommand::Kind::kRoomLeave:
      rooms_->Close(cmd->target, *outbox_);
      if (overlay_) overlay_->Unannounce(cmd->target);
      counters_.rooms.store(rooms_->rooms_count(), std::memory_order_relaxed);
      break;
    default: {
      const room::Room& r = swarm->room();
      cmd->room.log_size = r.log_size();
      cmd->room.peers = static_cast<uint32_t>(swarm->peers_count());
      cmd->room.unacked = static_cast<uint32_t>(swarm->unacked_count());
      cmd->room.syncing = swarm->syncing() || swarm->fetching();
      cmd->room.caught_up = swarm->CaughtUp();
      cmd->room.can_write = r.can_write();
      cmd->room.epoch = r.epoch();
      cmd->room.state_hash = r.state_hash();
      cmd->room.restored = swarm->restored_updates();
      cmd->room.epochs_refused = swarm->counters().epochs_refused;
      cmd->room.genesis_refused = rooms_->genesis_refused();
      cmd->room.entries_held = r.entries_held();
      cmd->room.pruned = r.pruned_count();
      cmd->room.held_bytes = r.HeldBytes();
      if (config_.room_listener != nullptr) cmd->room.event_mark = config_.room_listener->Mark();
      r.SerializeState(&cmd->state);
      cmd->heads = r.heads();
      break;
    }
  }
  cmd->ok = true;
}

void NodeCore::FinishCommand() noexcept {
  ControlCommand* cmd = command_;
  command_ = nullptr;
  command_handle_ = 0;
  events_->TakeFinished();
  cmd->done.store(1, std::memory_order_release);  // the shard wakes a sleeper (PollCommand)
}

}  // namespace ringpeer::core
