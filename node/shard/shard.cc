#include "node/shard/shard.h"

#include <time.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "base/assert.h"
#include "wire/message.h"

namespace ringpeer::shard {
namespace {

// IsPing: the header names a ping (checked properly by HandleDatagram).
bool IsPing(const ring::RecvDatagram& d) noexcept {
  return d.size > offsetof(wire::Header, type) &&
         d.data[offsetof(wire::Header, type)] == static_cast<uint8_t>(wire::MessageType::kPing);
}

int64_t MonotonicUs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

uint64_t SeedFromSystem() noexcept {
  uint64_t seed;
  wire::RandomBytes({reinterpret_cast<uint8_t*>(&seed), sizeof(seed)});
  return seed;
}

}  // namespace

Mailboxes::Mailboxes(uint32_t shards, uint32_t capacity)
    : shards_(shards), wakes_(shards) {
  rings_.reserve(size_t{shards} * shards);
  for (uint32_t i = 0; i < shards * shards; ++i) {
    // The diagonal (a shard to itself) is never used; it costs only two slots.
    const bool diagonal = i / shards == i % shards;
    rings_.push_back(std::make_unique<SpscRing<MailItem>>(diagonal ? 2 : capacity));
  }
}

// TransportOutbox: the overlay's and the rooms' Outbox over the transport's send slots (no
// copy). Every datagram the shard sends passes the ReflectionGuard here: one to an address
// that has not proved it receives, beyond 3x what that address sent, is not sent.
class Shard::TransportOutbox : public base::Outbox {
 public:
  explicit TransportOutbox(Shard* shard) : s_(shard) {}
  std::span<uint8_t> Buffer() noexcept override {
    std::span<uint8_t> b = s_->transport_->SendBuffer();
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
    if (!s_->guard_.Allow(to, size, type, s_->now_us_, &probe)) {
      // The slot is not committed: the next Buffer() hands it out again.
      if (probe) s_->SendProbe(to, s_->now_us_, hint);
      return;
    }
    s_->transport_->CommitSend(size, to);
    ShardCounters::Add(s_->counters_.sent, 1);
    if (probe && type != static_cast<uint8_t>(wire::MessageType::kPing)) {
      s_->SendProbe(to, s_->now_us_, hint);
    }
  }

 private:
  Shard* s_;
  const uint8_t* last_ = nullptr;
};

// Events: the overlay's results, matched against the command in progress. Called from
// inside Overlay calls, so it only records; it never calls back into the overlay.
class Shard::Events : public dht::OverlayEvents {
 public:
  explicit Events(Shard* shard) : shard_(shard) {}
  void OnLookupStarted(uint32_t handle, dht::LookupKind kind) override {
    ShardCounters::Add(shard_->counters_.lookups_started, 1);
    // A room's provider lookup learns its handle here: it may end inside the same call.
    Shard::RoomLookup* l = shard_->starting_room_lookup_;
    if (l != nullptr && kind == dht::LookupKind::kGetProviders) {
      l->handle = handle;
      shard_->starting_room_lookup_ = nullptr;
    }
  }
  void OnLookupDone(const dht::LookupResult& r) override {
    CountLookup(r);
    if (r.kind == dht::LookupKind::kGetProviders) NoteRoomProviders(r);
    ControlCommand* cmd = shard_->command_;
    if (cmd == nullptr || r.handle != shard_->command_handle_) return;
    cmd->closest.assign(r.closest.begin(), r.closest.end());
    cmd->providers.assign(r.providers.begin(), r.providers.end());
    cmd->rounds = r.rounds;
    cmd->requests = r.requests;
    cmd->ok = true;
    finished_ = true;
  }
  void OnAnnounced(const dht::NodeId& key, uint32_t acks) override {
    ControlCommand* cmd = shard_->command_;
    if (cmd == nullptr || cmd->kind != ControlCommand::Kind::kAnnounce || key != cmd->target) {
      return;
    }
    cmd->acks = acks;
    cmd->ok = acks > 0;
    if (acks == 0) cmd->error = "no node acknowledged the announcement";
    finished_ = true;
  }
  void OnSizeEstimate(const dht::SizeEstimate& e) override {
    if (!e.ok) return;
    (e.method == dht::SizeMethod::kDensity ? shard_->size_density_ : shard_->size_walks_) = e;
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
    for (Shard::RoomLookup& l : shard_->room_lookups_) {
      if (l.handle == 0 || l.handle != r.handle) continue;
      l.handle = 0;
      size_t taken = 0;
      const wire::NodeId self = shard_->overlay_->id();
      for (const dht::Contact& c : r.providers) {
        if (taken == kRoomProvidersJoinMax) break;
        if (c.id == self || !c.addr.valid()) continue;
        if (shard_->room_peers_found_.size() == kRoomPeersFoundMax) break;
        shard_->room_peers_found_.push_back(Shard::RoomPeerFound{l.room, c.addr});
        ++taken;
      }
    }
  }
  // CountLookup: the outcome and duration of every finished lookup, for /metrics.
  void CountLookup(const dht::LookupResult& r) noexcept {
    ShardCounters& c = shard_->counters_;
    ShardCounters::Add(r.closest.empty() ? c.lookups_failed : c.lookups_succeeded, 1);
    const int64_t d = std::max<int64_t>(0, r.duration_us);
    size_t b = 0;
    while (b < std::size(kLookupDurationBoundsUs) && d > kLookupDurationBoundsUs[b]) ++b;
    ShardCounters::Add(c.lookup_duration_buckets[b], 1);
    ShardCounters::Add(c.lookup_duration_sum_us, static_cast<uint64_t>(d));
  }

  Shard* shard_;
  bool finished_ = false;
};

Shard::Shard(const ShardConfig& config, const wire::KeyPair& identity,
             std::unique_ptr<ring::Transport> transport, Mailboxes* mailboxes,
             const std::atomic<bool>* stop)
    : config_(config),
      identity_(identity),
      transport_(std::move(transport)),
      mailboxes_(mailboxes),
      stop_(stop),
      outbox_(std::make_unique<TransportOutbox>(this)),
      responder_(identity, config.start_us >= 0 ? config.start_us : MonotonicUs(), nullptr,
                 config.overlay.client),
      limiter_(config.rate_limit_entries, config.rate_limit_per_s, config.rate_limit_burst),
      guard_(config.reflection_entries),
      now_us_(config.start_us >= 0 ? config.start_us : MonotonicUs()),
      rng_(config.rng_seed != 0 ? config.rng_seed : SeedFromSystem()),
      pending_publish_(config.shards, 0),
      ping_seen_(std::make_unique<SeenEntry[]>(kPingSeenCacheEntries)) {
  RP_ASSERT(config_.index < config_.shards);
  RP_ASSERT(config_.owner < config_.shards);
  RP_ASSERT(mailboxes_->shards() == config_.shards);
  room::RoomHostConfig rc;
  rc.identity = &identity_;
  rc.rooms_max = config_.rooms_max;
  rc.swarm = config_.room_swarm;
  rc.swarm.self = wire::NodeIdOf(identity_.public_key);
  rc.swarm.relay = config_.room_storage != nullptr && config_.room_relay;
  rc.admission = config_.room_admission;
  rc.admission.sources = &guard_check_;
  rooms_ = std::make_unique<room::RoomHost>(rc, config_.room_storage, &room_encoder_, &rng_,
                                            config_.room_listener);
  room_peers_found_.reserve(kRoomPeersFoundMax);
  if (config_.index == config_.owner) {
    const int64_t now = config_.start_us >= 0 ? config_.start_us : MonotonicUs();
    events_ = std::make_unique<Events>(this);
    dht::OverlayConfig oc = config_.overlay;
    oc.shard_index = static_cast<uint8_t>(config_.index);
    // Every room of every shard is announced from here, besides the node's own keys.
    oc.announces_max = std::max<uint32_t>(oc.announces_max,
                                          config_.rooms_max * config_.shards + 16);
    oc.events = events_.get();
    overlay_ = std::make_unique<dht::Overlay>(identity_, oc, &rng_, now);
    if (!config_.restore.empty()) overlay_->Restore(now, config_.restore);
    next_size_estimate_us_ = now + kSizeEstimateFirstUs;
  }
}

Shard::~Shard() = default;

void Shard::Commit() noexcept { CommitStorage(now_us_); }
base::Outbox& Shard::outbox() noexcept { return *outbox_; }

bool Shard::Withdraw(ControlCommand* cmd) noexcept {
  ControlCommand* expected = cmd;
  return command_request_.compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel);
}

bool Shard::Post(ControlCommand* cmd) noexcept {
  ControlCommand* expected = nullptr;
  return command_request_.compare_exchange_strong(expected, cmd, std::memory_order_acq_rel);
}

void Shard::Run() noexcept {
  ring::RecvDatagram batch[kRecvBatchMax];
  int64_t now = MonotonicUs();
  int64_t next_tick = now;
  // The one intentionally unbounded loop: it runs until the node stops.
  while (!stop_->load(std::memory_order_relaxed)) {
    int64_t timeout = std::max<int64_t>(0, next_tick - now);
    // A deferred group commit is due within kGroupCommitUs, even if the burst has ended.
    if (commit_deferred_) {
      timeout = std::min(timeout, std::max<int64_t>(0, last_commit_us_ + kGroupCommitUs - now));
    }
    bool woken = false;
    const size_t n = transport_->Poll(timeout, batch, &woken);
    now = MonotonicUs();
    now_us_ = now;
    // Pings first: their answers (and the pongs to return-routability probes) leave before
    // the requests that other datagrams of the batch trigger, so a peer proves itself to
    // us before its requests arrive (ReflectionGuard).
    for (size_t i = 0; i < n; ++i) {
      if (IsPing(batch[i])) HandleDatagram(batch[i], now);
    }
    for (size_t i = 0; i < n; ++i) {
      if (!IsPing(batch[i])) HandleDatagram(batch[i], now);
    }
    transport_->ReleaseReceived();
    DrainMailboxes(now);
    // One storage transaction, then the acks it made true (DESIGN.md 8): every iteration
    // when traffic is light, every kGroupCommitUs while full batches keep coming.
    if (n < kRecvBatchMax || now - last_commit_us_ >= kGroupCommitUs) {
      // While commits fail, the next try waits for its backoff (nothing is acked meanwhile:
      // the acks stay queued until a commit makes their updates durable).
      if (storage_backoff_us_ == 0 || now >= storage_retry_at_us_) CommitStorage(now);
      last_commit_us_ = now;
      commit_deferred_ = false;
    } else {
      commit_deferred_ = true;
    }
    if (overlay_) PollCommand(now);
    if (now >= next_tick) {
      OnTick(now);
      next_tick = now + kTickUs;
    }
    PublishMailboxes();
    transport_->Flush();
    ShardCounters::Add(counters_.received, n);
    ShardCounters::Add(counters_.loop_iterations, 1);
  }
  // What a deferred group commit still holds becomes durable (and acked) before exit.
  CommitStorage(now);
  transport_->Flush();
  bool woken = false;
  transport_->Poll(0, std::span(batch, 0), &woken);  // submit the last sends
  // Release the port on this thread (io_uring's single issuer) before Run returns, so a
  // node restarted as soon as this process exits can bind it.
  transport_->Shutdown();
  PublishTransportStats();
}

void Shard::CommitStorage(int64_t now_us) noexcept {
  const absl::Status s = rooms_->CommitAndRelease(*outbox_);
  if (s.ok()) {
    if (storage_backoff_us_ != 0) {
      storage_backoff_us_ = 0;
      counters_.storage_failing.store(0, std::memory_order_relaxed);
      ShardCounters::Add(counters_.storage_recoveries, 1);
      std::lock_guard<std::mutex> lock(storage_mu_);
      storage_error_.clear();
    }
    return;
  }
  ShardCounters::Add(counters_.storage_errors, 1);
  counters_.storage_failing.store(1, std::memory_order_relaxed);
  storage_backoff_us_ = storage_backoff_us_ == 0
                            ? kStorageRetryFirstUs
                            : std::min(storage_backoff_us_ * 2, kStorageRetryMaxUs);
  storage_retry_at_us_ = now_us + storage_backoff_us_;
  // Error path only (at most a few times a second): the copy may allocate.
  std::lock_guard<std::mutex> lock(storage_mu_);
  if (storage_error_ != s.message()) storage_error_ = std::string(s.message());
}

void Shard::HandleDatagram(const ring::RecvDatagram& d, int64_t now_us) noexcept {
  if (d.truncated) return Drop(wire::Verdict::kTooLong);
  wire::Header header;
  wire::Verdict v = wire::CheckHeader(d.data, d.size, &header);
  if (v != wire::Verdict::kOk) return Drop(v);
  if (!limiter_.Allow(d.from, now_us)) return Drop(wire::Verdict::kRateLimited);
  wire::Message msg;
  v = wire::Decode(d.data, d.size, &msg);
  if (v != wire::Verdict::kOk) return Drop(v);
  HandleVerified(d.from, msg, /*from_mailbox=*/false, now_us);
}

void Shard::HandleVerified(const base::Endpoint& from, const wire::Message& msg,
                           bool from_mailbox, int64_t now_us) noexcept {
  if (msg.type() == wire::MessageType::kPing) {
    Received(from, msg, now_us);
    return HandlePing(from, msg, now_us);
  }
  if (msg.is_room()) return HandleRoom(from, msg, now_us);
  // A pong to a probe comes back to the shard that sent it (the txid's low byte, which the
  // responder puts in the shard hint); the overlay's own pongs name the owner.
  if (msg.type() == wire::MessageType::kPong) {
    const uint64_t txid = msg.pong()->txid();
    const uint32_t to = static_cast<uint32_t>(txid & 0xFF) % config_.shards;
    if (to != config_.index) return Forward(to, MailItem::Kind::kDatagram, from, msg.bytes());
    Received(from, msg, now_us);
    if (guard_.OnPong(from, txid, now_us)) return PublishReflectionCounters();
    if (!overlay_) return Drop(wire::Verdict::kUnexpectedReply);
  }
  // Everything else is overlay state, which lives on the owner shard. Replies belong
  // there too: only the owner sends requests, so every txid it makes names it.
  if (!overlay_) {
    RP_ASSERT(!from_mailbox);  // mail for the overlay only ever goes to the owner
    return Forward(config_.owner, MailItem::Kind::kDatagram, from, msg.bytes());
  }
  if (msg.type() != wire::MessageType::kPong) Received(from, msg, now_us);
  const wire::Verdict v = overlay_->OnMessage(now_us, from, msg, *outbox_);
  if (v != wire::Verdict::kOk) {
    MaybeProbe(from, now_us);
    return Drop(v);
  }
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
}

void Shard::SendProbe(const base::Endpoint& to, int64_t now_us, uint32_t hint) noexcept {
  std::span<uint8_t> buf = outbox_->Buffer();
  if (buf.empty()) return;
  const uint64_t txid =
      guard_.Probe(to, rng_.Next(), static_cast<uint8_t>(config_.index), now_us);
  const size_t n = probe_encoder_.Ping(buf, hint, txid, responder_.id(), nullptr,
                                       config_.overlay.client);
  if (n > 0) outbox_->Commit(n, to);  // charged to the credit; never refused (a ping)
}

void Shard::PublishAdmission() noexcept {
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

void Shard::PublishReflectionCounters() noexcept {
  const ReflectionCounters& c = guard_.counters();
  counters_.reflection_refused.store(c.refused, std::memory_order_relaxed);
  counters_.reflection_refused_bytes.store(c.refused_bytes, std::memory_order_relaxed);
  counters_.reflection_probes.store(c.probes_sent, std::memory_order_relaxed);
  counters_.reflection_proved.store(c.proved, std::memory_order_relaxed);
}

void Shard::HandleRoom(const base::Endpoint& from, const wire::Message& msg,
                       int64_t now_us) noexcept {
  // A room belongs to shard room_id[0] % shards: the low byte of its shard hint, which the
  // reuseport program steers by. What the kernel put elsewhere (hint byte 0xFF, or
  // steering off) crosses the mailbox.
  const uint32_t owner = wire::RoomOf(msg)[0] % config_.shards;
  if (owner != config_.index) return Forward(owner, MailItem::Kind::kDatagram, from, msg.bytes());
  ShardCounters::Add(counters_.room_messages, 1);
  Received(from, msg, now_us);
  const wire::Verdict v = rooms_->OnMessage(now_us, from, msg, *outbox_);
  if (v != wire::Verdict::kOk) Drop(v);
  MaybeProbe(from, now_us);  // after the answer, which has first call on the credit
  counters_.room_updates_accepted.store(rooms_->updates_accepted(), std::memory_order_relaxed);
  counters_.room_updates_rejected.store(rooms_->updates_rejected(), std::memory_order_relaxed);
}

void Shard::HandlePing(const base::Endpoint& from, const wire::Message& msg,
                       int64_t now_us) noexcept {
  const wire::Verdict v = responder_.Answer(now_us, from, msg, *outbox_);
  if (v != wire::Verdict::kOk) {
    // A full send queue is counted by the transport (send_slots_full); count it once.
    if (v != wire::Verdict::kSendQueueFull) Drop(v);
  } else {
    ShardCounters::Add(counters_.pings_answered, 1);
  }
  // A pinger that has not proved its address is probed back: a member's node pings a relay
  // as it joins, so by the time its requests come, the probe's pong is there.
  MaybeProbe(from, now_us, wire::kNoShardHint);
  if (PingSeenRecently(from, now_us)) return;
  if (overlay_) {
    overlay_->OnPingSeen(now_us, from, wire::FromWireId(*msg.ping()->sender()), *outbox_,
                         msg.ping()->client());
  } else {
    Forward(config_.owner, MailItem::Kind::kPingSeen, from, msg.bytes());
  }
}

bool Shard::PingSeenRecently(const base::Endpoint& from, int64_t now_us) noexcept {
  const uint64_t key = from.Hash() | 1;
  SeenEntry& e = ping_seen_[key & (kPingSeenCacheEntries - 1)];
  if (e.key == key && now_us - e.last_us < kPingSeenIntervalUs) return true;
  e.key = key;
  e.last_us = now_us;
  return false;
}

void Shard::Forward(uint32_t to, MailItem::Kind kind, const base::Endpoint& from,
                    std::span<const uint8_t> bytes) noexcept {
  RP_ASSERT(to != config_.index);
  RP_ASSERT(bytes.size() <= wire::kDatagramBytesMax);
  SpscRing<MailItem>& ring = mailboxes_->Ring(config_.index, to);
  MailItem* item = ring.BeginPush();
  if (item == nullptr) return Drop(wire::Verdict::kMailboxFull);
  item->from = from;
  item->kind = kind;
  item->size = static_cast<uint16_t>(bytes.size());
  std::memcpy(item->bytes, bytes.data(), bytes.size());
  ring.CommitPush();
  pending_publish_[to] = 1;
  ShardCounters::Add(counters_.mailbox_out, 1);
}

void Shard::PublishMailboxes() noexcept {
  for (uint32_t to = 0; to < config_.shards; ++to) {
    if (!pending_publish_[to]) continue;
    pending_publish_[to] = 0;
    if (mailboxes_->Ring(config_.index, to).Publish() > 0) {
      transport_->QueueWake(mailboxes_->Wake(to));  // one doorbell per batch
    }
  }
}

void Shard::DrainMailboxes(int64_t now_us) noexcept {
  for (uint32_t from = 0; from < config_.shards; ++from) {
    if (from == config_.index) continue;
    SpscRing<MailItem>& ring = mailboxes_->Ring(from, config_.index);
    size_t taken = 0;
    for (; taken < kMailboxBatchMax; ++taken) {
      MailItem* item = ring.Front();
      if (item == nullptr) break;
      wire::Hash256 room{};
      if (item->kind == MailItem::Kind::kRoomProviders ||
          item->kind == MailItem::Kind::kRoomPeer) {
        if (item->size >= room.size()) {
          std::memcpy(room.data(), item->bytes, room.size());
          if (item->kind == MailItem::Kind::kRoomProviders) {
            // (Busy lookup slots: this round is skipped; the room's next one asks again.)
            ProvideRoom(room, item->size > room.size() && item->bytes[32] != 0, now_us);
          } else {
            ConnectRoomPeer(room, item->from, now_us);
          }
        }
        ring.Pop();
        continue;
      }
      // The sending shard verified it; verifying again keeps Message's guarantee local
      // and costs ~100 ns.
      wire::Message msg;
      if (wire::Decode(item->bytes, item->size, &msg) == wire::Verdict::kOk) {
        if (item->kind == MailItem::Kind::kPingSeen) {
          if (overlay_) {
            overlay_->OnPingSeen(now_us, item->from, wire::FromWireId(*msg.ping()->sender()),
                                 *outbox_, msg.ping()->client());
          }
        } else {
          HandleVerified(item->from, msg, /*from_mailbox=*/true, now_us);
        }
      }
      ring.Pop();
    }
    if (taken > 0) {
      ring.Release();
      ShardCounters::Add(counters_.mailbox_in, taken);
    }
  }
}

void Shard::OnTick(int64_t now_us) noexcept {
  PublishReflectionCounters();
  PublishAdmission();
  rooms_->Tick(now_us, *outbox_);
  counters_.rooms.store(rooms_->rooms_count(), std::memory_order_relaxed);
  RoomDiscoveryTick(now_us);
  if (overlay_) {
    overlay_->Tick(now_us, *outbox_);
    MaybeEstimateSize(now_us);
  }
  DeliverRoomPeers(now_us);
  PublishTransportStats();
}

void Shard::RoomDiscoveryTick(int64_t now_us) noexcept {
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
bool Shard::ProvideRoom(const wire::Hash256& room, bool announce, int64_t now_us) noexcept {
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

void Shard::DeliverRoomPeers(int64_t now_us) noexcept {
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

void Shard::ConnectRoomPeer(const wire::Hash256& room, const base::Endpoint& peer,
                            int64_t now_us) noexcept {
  room::Swarm* s = rooms_->Find(room);
  if (s == nullptr || s->HasPeer(peer)) return;
  s->Connect(now_us, peer, *outbox_, /*retry=*/false);
}

void Shard::MaybeEstimateSize(int64_t now_us) noexcept {
  if (now_us < next_size_estimate_us_ || overlay_->VerifiedPeers() == 0) return;
  next_size_estimate_us_ = now_us + kSizeEstimateIntervalUs;
  overlay_->EstimateSize(now_us, *outbox_);
  // The walk estimate allocates its sample buffer: once per interval, off the packet path.
  overlay_->EstimateSizeByWalks(now_us, *outbox_);
}

void Shard::PollCommand(int64_t now_us) noexcept {
  if (command_ != nullptr) {
    if (events_->TakeFinished()) return FinishCommand();
    if (now_us >= command_deadline_us_) {
      command_->error = "timed out";
      return FinishCommand();
    }
    return;
  }
  // A relaxed look first: the exchange (a locked instruction) only when there is work.
  if (command_request_.load(std::memory_order_relaxed) == nullptr) return;
  ControlCommand* cmd = command_request_.exchange(nullptr, std::memory_order_acq_rel);
  if (cmd != nullptr) StartCommand(cmd, now_us);
}

void Shard::StartCommand(ControlCommand* cmd, int64_t now_us) noexcept {
  RP_ASSERT(command_ == nullptr);
  RP_ASSERT(overlay_ != nullptr);
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
void Shard::StartRoomCommand(ControlCommand* cmd, int64_t now_us) noexcept {
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
    if (swarm == nullptr) {
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
      if (config_.room_listener != nullptr) cmd->room.event_mark = config_.room_listener->Mark();
      r.SerializeState(&cmd->state);
      cmd->heads = r.heads();
      break;
    }
  }
  cmd->ok = true;
}

void Shard::FinishCommand() noexcept {
  ControlCommand* cmd = command_;
  command_ = nullptr;
  command_handle_ = 0;
  events_->TakeFinished();
  cmd->done.store(true, std::memory_order_release);
}

void Shard::PublishTransportStats() noexcept {
  const ring::TransportStats& s = transport_->stats();
  ShardCounters::Add(counters_.send_errors, s.send_errors - last_stats_.send_errors);
  ShardCounters::Add(counters_.recv_no_buffers, s.recv_no_buffers - last_stats_.recv_no_buffers);
  ShardCounters::Add(counters_.dropped[int(wire::Verdict::kSendQueueFull)],
                     s.send_slots_full - last_stats_.send_slots_full);
  last_stats_ = s;
}

}  // namespace ringpeer::shard
