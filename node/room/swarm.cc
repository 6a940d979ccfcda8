// Swarm: the peer table, heads, the flood, acks and publish limits. Sync is in
// swarm_sync.cc, checkpoint pieces in swarm_checkpoint.cc.
#include "node/room/swarm.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/assert.h"
#include "node/room/swarm_internal.h"

namespace ringpeer::room {
namespace {

// Permanent: the same bytes will fail again, so they are remembered and not re-verified.
bool IsPermanentReject(Verdict v) noexcept {
  switch (v) {
    case Verdict::kTooShort:
    case Verdict::kTooLong:
    case Verdict::kVerifyFailed:
    case Verdict::kBadField:
    case Verdict::kWrongRoom:
    case Verdict::kBadSignature:
    case Verdict::kStaleEpoch: return true;
    default: return false;
  }
}

// WireVerdict: what a refused update counts as on the node's drop counters. Only a
// signature that does not verify is kBadSignature; a record that cannot be read is
// kBadField; what the room's rules refuse (stale epoch, behind the checkpoint, unknown
// epoch, a full pending set) is kRoomRefused.
wire::Verdict WireVerdict(Verdict v) noexcept {
  switch (v) {
    case Verdict::kOk:
    case Verdict::kDuplicate: return wire::Verdict::kOk;
    case Verdict::kBadSignature: return wire::Verdict::kBadSignature;
    case Verdict::kTooShort:
    case Verdict::kTooLong:
    case Verdict::kVerifyFailed:
    case Verdict::kBadField:
    case Verdict::kWrongRoom: return wire::Verdict::kBadField;
    default: return wire::Verdict::kRoomRefused;
  }
}

}  // namespace

Swarm::Swarm(std::unique_ptr<Room> room, std::vector<std::vector<uint8_t>> epoch_records,
             const SwarmConfig& config, RoomStorage* storage, wire::Encoder* encoder,
             base::Rng* rng, SwarmListener* listener)
    : room_(std::move(room)), config_(config), storage_(storage), encoder_(encoder),
      rng_(rng), listener_(listener), epochs_(std::move(epoch_records)),
      peers_(config.peers_max), seen_(kSeenIdsMax), rejected_(kRejectedIdsMax),
      room_bucket_(config.room_publish_per_s, config.room_publish_burst, 0),
      room_hard_bucket_(config.room_publish_per_s * 2, config.room_publish_burst * 2, 0) {
  RP_ASSERT(room_ != nullptr);
  RP_ASSERT(encoder_ != nullptr);
  RP_ASSERT(rng_ != nullptr);
  RP_ASSERT(config.peers_max > 0);
  acks_.reserve(kAcksQueuedMax);
  peer_slots_.reserve(config.peers_max);  // never grows: at most peers_max entries
  // From the system, not rng_: the key never changes what happens, only who can predict
  // it, and a seeded simulation's draws stay as they were.
  wire::RandomBytes(std::span<uint8_t>(reject_key_, sizeof(reject_key_)));
  scratch_.resize((kUpdateBytesMax + 7) / 8);
  for (const auto& e : epochs_) epoch_ids_.push_back(wire::Blake2b256(e));
}

Swarm::~Swarm() {
  if (floods_ != nullptr) floods_->Forget(this);
}

// ---- peers ----

// FindPeer: through peer_slots_ (kept by AdmitPeer and DropPeer).
Swarm::Peer* Swarm::FindPeer(const base::Endpoint& addr) noexcept {
  auto it = peer_slots_.find(addr);
  if (it == peer_slots_.end()) return nullptr;
  Peer& p = peers_[it->second];
  RP_ASSERT(p.used && p.addr == addr);
  return &p;
}

uint32_t Swarm::SlotOf(const Peer* p) const noexcept {
  RP_ASSERT(p >= peers_.data());
  RP_ASSERT(p < peers_.data() + peers_.size());
  return static_cast<uint32_t>(p - peers_.data());
}

size_t Swarm::peers_count() const noexcept { return peers_used_; }

bool Swarm::CaughtUp() noexcept {
  const Hash256& mine = HeadsDigest();
  for (const Peer& p : peers_) {
    if (p.used && p.heard_heads && p.digest == mine && p.epoch <= room_->epoch()) return true;
  }
  return false;
}

Swarm::Peer* Swarm::AdmitPeer(int64_t now_us, const base::Endpoint& addr,
                              const wire::NodeId& id, bool relay) noexcept {
  Peer* p = FindPeer(addr);
  if (p == nullptr) {
    if (Refused(addr)) return nullptr;  // it served a forged key epoch
    for (Peer& slot : peers_) {
      if (!slot.used) {
        p = &slot;
        break;
      }
    }
    if (p == nullptr) return nullptr;  // table full: the newcomer tries another provider
    *p = Peer{};
    p->used = true;
    p->addr = addr;
    p->generation = ++generations_;
    peer_slots_.emplace(addr, SlotOf(p));
    const uint32_t factor = relay ? config_.relay_publish_factor : 1;
    p->publish = base::TokenBucket(config_.peer_publish_per_s * factor,
                                   config_.peer_publish_burst * factor, now_us);
    p->serve = base::TokenBucket(config_.serve_per_s, config_.serve_burst, now_us);
    ++peers_used_;
    std::erase(joining_, addr);
    join_interval_us_ = 0;
    Emit(SwarmEvent::kPeerJoined, {}, addr);
    if (peers_used_ == 1) Emit(SwarmEvent::kConnected, {}, addr);
  }
  p->id = id;
  p->relay = relay;
  p->last_heard_us = now_us;
  return p;
}

void Swarm::DropPeer(Peer* p) noexcept {
  RP_ASSERT(p->used);
  const base::Endpoint addr = p->addr;
  const uint32_t slot = SlotOf(p);
  p->used = false;
  peer_slots_.erase(addr);
  --peers_used_;
  if (sync_.active && sync_.peer == slot) sync_.active = false;
  Emit(SwarmEvent::kPeerLeft, {}, addr);
  if (peers_used_ == 0) Emit(SwarmEvent::kDisconnected, {}, addr);
}

void Swarm::Emit(SwarmEvent kind, const Hash256& id, const base::Endpoint& peer) {
  if (listener_ == nullptr) return;
  const bool echo = kind == SwarmEvent::kUpdateApplied && room_->Echo(id);
  listener_->OnSwarmEvent(*this, SwarmEventInfo{kind, id, peer, echo});
}

std::span<uint8_t> Swarm::Buffer(base::Outbox& out) noexcept { return out.Buffer(); }

void Swarm::Send(const base::Endpoint& to, size_t size, base::Outbox& out) noexcept {
  RP_ASSERT(size <= wire::kDatagramBytesMax);
  if (size > 0) out.Commit(size, to);
}

void Swarm::Connect(int64_t now_us, const base::Endpoint& peer, base::Outbox& out,
                    bool retry) noexcept {
  if (retry && FindPeer(peer) == nullptr &&
      std::find(joining_.begin(), joining_.end(), peer) == joining_.end()) {
    if (joining_.size() < config_.peers_max) joining_.push_back(peer);
  }
  std::span<uint8_t> buf = Buffer(out);
  if (buf.empty()) return;
  Send(peer, encoder_->RoomJoin(buf, id(), config_.self, config_.relay, genesis_record_), out);
  // The first join is retried soon; later Connects do not cut the backoff short.
  if (retry) next_join_us_ = std::max(next_join_us_, now_us + config_.retry_us * 4);
}

void Swarm::Leave(base::Outbox& out) noexcept {
  for (Peer& p : peers_) {
    if (!p.used) continue;
    std::span<uint8_t> buf = Buffer(out);
    if (!buf.empty()) Send(p.addr, encoder_->RoomLeave(buf, id(), config_.self), out);
    DropPeer(&p);
  }
  joining_.clear();
}

// ---- heads ----

const Hash256& Swarm::HeadsDigest() noexcept {
  if (!digest_dirty_) return digest_;
  heads_cache_ = room_->heads();
  wire::Hasher h;
  for (const Hash256& head : heads_cache_) h.Update(head);
  digest_ = h.Final();
  digest_dirty_ = false;
  return digest_;
}

void Swarm::SendHeads(int64_t /*now_us*/, Peer& p, base::Outbox& out) noexcept {
  std::span<uint8_t> buf = Buffer(out);
  if (buf.empty()) return;
  wire::RoomHeadsFields f;
  f.room = id();
  f.sender = config_.self;
  f.relay = config_.relay;
  f.epoch = room_->epoch() < 0 ? 0 : static_cast<uint32_t>(room_->epoch());
  f.no_epoch = room_->epoch() < 0;
  f.log_size = room_->log_size();
  f.heads_digest = HeadsDigest();
  f.heads = heads_cache_;
  f.checkpoint = checkpoint_info();
  Send(p.addr, encoder_->RoomHeads(buf, f), out);
}

wire::Verdict Swarm::OnJoin(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                            base::Outbox& out) noexcept {
  const wire::fb::RoomJoin* m = msg.room_join();
  Peer* p = AdmitPeer(now_us, from, wire::FromWireId(*m->sender()), m->relay());
  if (p == nullptr) return Refused(from) ? wire::Verdict::kRoomRefused : wire::Verdict::kTableFull;
  p->packs = m->packs();
  p->range = RangeOf(m->ranges(), m->range_max());
  // A joiner that knows only the room id (a short invite) gets the genesis first; it
  // checks that the record hashes to the room id, so nothing here can be forged.
  if (m->want_genesis() && !genesis_record_.empty()) {
    std::span<uint8_t> buf = Buffer(out);
    if (!buf.empty()) Send(from, encoder_->RoomEpoch(buf, id(), genesis_record_, true), out);
  }
  SendHeads(now_us, *p, out);  // the answer: our heads, epoch and checkpoint
  return wire::Verdict::kOk;
}

wire::Verdict Swarm::OnHeads(int64_t now_us, const base::Endpoint& from,
                             const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::RoomHeads* m = msg.room_heads();
  const bool known = FindPeer(from) != nullptr;
  Peer* p = AdmitPeer(now_us, from, wire::FromWireId(*m->sender()), m->relay());
  if (p == nullptr) return wire::Verdict::kTableFull;
  if (!known) SendHeads(now_us, *p, out);  // a new peer learns our state at once
  p->packs = m->packs();
  p->range = RangeOf(m->ranges(), m->range_max());
  p->log_size = m->log_size();
  p->epoch = m->no_epoch() ? -1 : int64_t{m->epoch()};
  p->digest = wire::FromWireId(*m->heads_digest());
  p->heard_heads = true;
  p->checkpoint = wire::FromWireCheckpoint(m->checkpoint());
  p->checkpoint.covered = m->checkpoint_covered();
  // Another writer's checkpoint that we have not seen: the count towards ours restarts, so
  // that W writers make about one checkpoint per checkpoint_every updates, not W.
  if (p->checkpoint.valid() && p->checkpoint.id != last_peer_checkpoint_ &&
      (object_ == nullptr || object_->info.id != p->checkpoint.id)) {
    last_peer_checkpoint_ = p->checkpoint.id;
    since_checkpoint_ = 0;
  }
  const int64_t my_epoch = room_->epoch();
  if (my_epoch >= 0 && m->no_epoch()) {
    SendEpochsFrom(0, from, out);  // a relay serving from a join's genesis: all of them
  } else if (my_epoch >= 0 && m->epoch() < my_epoch) {
    SendEpochsFrom(m->epoch() + 1, from, out);
  }
  if (p->checkpoint.valid()) MaybeFetch(now_us, p->checkpoint, out);
  if (fetch_ != nullptr || sync_.active) return wire::Verdict::kOk;
  // One sync per peer per heads period, unless its log grew since we last synced from it
  // (a relay announcing what it just synced itself: its members follow at once).
  // A pruning node does not sync from a peer whose checkpoint ranks below its own: the
  // peer is behind, and its old log, which the pruned ids no longer all name, would come
  // back as new roots (found by the pruning long-run test: a member back from a long
  // absence). Only with a retention, so that nothing changes for the others.
  const bool behind = config_.retention_us > 0 && object_ != nullptr &&
                      (!p->checkpoint.valid() || p->checkpoint.covered < object_->info.covered);
  if (!behind && p->digest != HeadsDigest() && p->log_size > 0 &&
      (now_us >= p->next_sync_us || p->log_size > p->synced_log_size)) {
    p->next_sync_us = now_us + config_.heads_interval_us;
    p->synced_log_size = p->log_size;
    StartSync(now_us, SlotOf(p), out);
  }
  return wire::Verdict::kOk;
}

// ---- flood, acks, limits ----

void Swarm::Flood(Bytes datagram, const base::Endpoint& except, base::Outbox& out) noexcept {
  for (Peer& p : peers_) {
    if (!p.used || p.addr == except) continue;
    std::span<uint8_t> buf = Buffer(out);
    if (buf.empty()) return;  // send queue full: the rest repair through sync
    std::memcpy(buf.data(), datagram.data(), datagram.size());
    Send(p.addr, datagram.size(), out);
    ++counters_.forwarded;
    ++counters_.flood_datagrams;
  }
}

// The id covers the signed bytes, not the signature: a copy of a genuine update with its
// signature spoiled has the genuine id. Refusing that id would let anyone who sees an
// update get it refused here for good by sending such a copy first, so a refusal for the
// signature is keyed by the id and a keyed hash of the signature (the key is ours and
// random: nobody can make two signatures collide on purpose). Other permanent refusals
// are about the signed bytes, and keyed by the id alone.
uint64_t Swarm::SignatureRejectKey(const Hash256& update, const Signature& sig) const noexcept {
  uint64_t h = 0;
  crypto_shorthash(reinterpret_cast<unsigned char*>(&h), sig.data(), sig.size(), reject_key_);
  return IdPrefix64(update) ^ h;
}

uint64_t Swarm::RejectKey(Verdict v, const Hash256& update, Bytes record) const noexcept {
  if (v != Verdict::kBadSignature && v != Verdict::kVerifyFailed) return IdPrefix64(update);
  UpdateView view;
  if (DecodeUpdate(record, id(), &view) != Verdict::kOk) return IdPrefix64(update);
  return SignatureRejectKey(update, view.signature);
}

// ---- packed floods (issue 15) ----

void FloodQueue::Close(base::Outbox& out) noexcept {
  Flush(out);
  open_ = false;
}

void FloodQueue::Add(Swarm* swarm, Bytes record, const base::Endpoint& except,
                     base::Outbox& out) noexcept {
  RP_ASSERT(swarm != nullptr);
  RP_ASSERT(!record.empty() && record.size() <= kPackedRecordBytesMax);
  if (bytes_.empty()) {
    // Once, at the first flood: a node that serves no room (most of a DHT simulation's
    // thousands) never pays the ~80 KB.
    bytes_.resize(kBytes);
    scratch_.resize(wire::kDatagramBytesMax);
    entries_.reserve(kEntriesMax);
  }
  if (entries_.size() == kEntriesMax || used_ + record.size() > bytes_.size()) Flush(out);
  std::memcpy(bytes_.data() + used_, record.data(), record.size());
  entries_.push_back(Entry{swarm, static_cast<uint32_t>(used_),
                           static_cast<uint32_t>(record.size()), except});
  used_ += record.size();
}

void FloodQueue::Flush(base::Outbox& out) noexcept {
  // In the order the rooms first queued a record; each swarm sends all of its own at once.
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].swarm != nullptr) entries_[i].swarm->SendQueuedFloods(*this, i, out);
  }
  entries_.clear();
  used_ = 0;
}

void FloodQueue::Forget(const Swarm* swarm) noexcept {
  for (Entry& e : entries_) {
    if (e.swarm == swarm) e.swarm = nullptr;
  }
}

void Swarm::SendQueuedFloods(FloodQueue& q, size_t first, base::Outbox& out) noexcept {
  const std::span<FloodQueue::Entry> all = q.entries();
  // Mark the peers that sent us one of these records: they get their own packing, without
  // it. Every other peer gets the same datagrams, encoded once.
  const base::Endpoint* last = nullptr;
  for (size_t j = first; j < all.size(); ++j) {
    if (all[j].swarm != this || (last != nullptr && all[j].except == *last)) continue;
    last = &all[j].except;
    if (Peer* p = FindPeer(all[j].except)) p->flood_sender = true;
  }
  // A peer that does not read packed datagrams gets each record alone, like a sender.
  for (Peer& p : peers_) {
    if (p.used && !p.packs) p.flood_sender = true;
  }
  // Pack: the records of this swarm (those `skip` did not send), in order, cut into groups
  // of at most `most` that fit one RoomPublish; calls emit(group) until it returns false.
  Bytes group[wire::kRoomPublishRecordsMax];
  auto pack = [&](const base::Endpoint* skip, size_t most, auto&& emit) {
    size_t k = 0, bytes = wire::kRoomPublishFixedBytes;
    for (size_t j = first; j < all.size(); ++j) {
      if (all[j].swarm != this || (skip != nullptr && all[j].except == *skip)) continue;
      const Bytes r = q.bytes(all[j]);
      const size_t cost = r.size() + wire::kRoomPublishRecordFramingBytes;
      if (k > 0 && (k == most || bytes + cost > wire::kBodyBytesMax)) {
        if (!emit(std::span<const Bytes>(group, k))) return;
        k = 0;
        bytes = wire::kRoomPublishFixedBytes;
      }
      group[k++] = r;
      bytes += cost;
    }
    if (k > 0) emit(std::span<const Bytes>(group, k));
  };
  // Shared datagrams first: one encoding for every peer that sent none of them.
  // Copies `size` bytes at `src` into each such peer's send slot; false when the queue is
  // full (the rest repair through sync).
  auto copy_to_each = [&](const uint8_t* src, size_t size, size_t records) {
    for (Peer& p : peers_) {
      if (!p.used || p.flood_sender) continue;
      const std::span<uint8_t> buf = Buffer(out);
      if (buf.empty()) return false;
      std::memcpy(buf.data(), src, size);
      Send(p.addr, size, out);
      counters_.forwarded += records;
      ++counters_.flood_datagrams;
    }
    return true;
  };
  // As a burst where the outbox has them (issue 15): the datagrams back to back, each but
  // the last padded to the longest one's size (UDP GSO cuts equal segments), handed to
  // the kernel once per peer without a copy per peer. Up to kBurstPeersMax peers.
  base::Endpoint shared[base::kBurstPeersMax];
  size_t shared_count = 0;
  for (const Peer& p : peers_) {
    if (!p.used || p.flood_sender) continue;
    if (shared_count == base::kBurstPeersMax) {
      shared_count = 0;  // more than one burst can name: copies, as before
      break;
    }
    shared[shared_count++] = p.addr;
  }
  constexpr size_t kStride = wire::kDatagramBytesMax;
  constexpr size_t kBurstDatagrams = base::kBurstBytesMax / kStride;
  std::span<uint8_t> burst = shared_count > 0 ? out.BurstBuffer() : std::span<uint8_t>();
  auto room_for = [&]() { return std::min(burst.size() / kStride, kBurstDatagrams); };
  if (room_for() < 2) burst = {};
  size_t sizes[kBurstDatagrams];
  size_t burst_records = 0, k = 0;
  // Sends what the burst holds; a lone datagram goes by copies (no gain from a burst).
  auto send_burst = [&]() {
    if (k == 1) copy_to_each(burst.data(), sizes[0], burst_records);
    if (k >= 2) {
      size_t segment = 0, encoded = 0;
      for (size_t i = 0; i < k; ++i) encoded += sizes[i];
      const size_t size = wire::PackBurst(burst.data(), sizes, k, &segment);
      counters_.flood_padding += size - encoded;  // per burst, not per peer
      const size_t queued =
          out.CommitBurst(size, segment, std::span<const base::Endpoint>(shared, shared_count));
      const size_t peers = queued / k;  // those the guard and the send queue let through
      counters_.forwarded += burst_records * peers;
      counters_.flood_datagrams += queued;
      counters_.flood_bursts += peers;
    }
    k = 0;
    burst_records = 0;
  };
  pack(nullptr, wire::kRoomPublishRecordsMax, [&](std::span<const Bytes> g) {
    if (!burst.empty() && k == room_for()) {
      send_burst();
      burst = out.BurstBuffer();
      if (room_for() < 2) burst = {};
    }
    // The budget fits (RoomWire.PublishPackingBudgetFits); were it ever short, the group
    // is skipped (sync repairs it) rather than the node stopped.
    if (!burst.empty()) {
      const size_t size =
          encoder_->RoomPublishPacked(burst.subspan(k * kStride, kStride), id(), g);
      if (size == 0) return true;
      sizes[k++] = size;
      burst_records += g.size();
      return true;
    }
    const size_t size = encoder_->RoomPublishPacked(q.scratch(), id(), g);
    if (size == 0) return true;
    return copy_to_each(q.scratch().data(), size, g.size());
  });
  if (!burst.empty()) send_burst();
  for (Peer& p : peers_) {
    if (!p.used || !p.flood_sender) continue;
    p.flood_sender = false;
    pack(&p.addr, p.packs ? wire::kRoomPublishRecordsMax : 1, [&](std::span<const Bytes> g) {
      const std::span<uint8_t> buf = Buffer(out);
      if (buf.empty()) return false;
      const size_t size = encoder_->RoomPublishPacked(buf, id(), g);
      if (size == 0) return true;
      Send(p.addr, size, out);
      counters_.forwarded += g.size();
      ++counters_.flood_datagrams;
      return true;
    });
  }
  for (size_t j = first; j < all.size(); ++j) {
    if (all[j].swarm == this) all[j].swarm = nullptr;
  }
}

void Swarm::QueueAck(const base::Endpoint& to, const Hash256& update) noexcept {
  // Only relays acknowledge, once durable: a member's storage is its own cache, and a
  // publisher that took a member's ack for a relay's would stop retransmitting too soon.
  if (storage_ == nullptr || !config_.relay) return;
  if (acks_.size() >= kAcksQueuedMax) return;
  acks_.push_back(PendingAck{to, update, room_->Refused(update)});
}

void Swarm::ReleaseAcks(base::Outbox& out) noexcept {
  // Packed (issue 15): the acks for one peer share a datagram, up to kRoomAckIdsMax, found
  // among the next kAckPackScan queued ones (a bound on the work, not on correctness: an
  // ack not found goes in a later datagram). A refused ack goes alone (its flag is per ack).
  constexpr size_t kAckPackScan = 128;
  Hash256 ids[wire::kRoomAckIdsMax];
  const size_t durable = acks_marked_;  // only these: the rest wait for the next batch
  for (size_t i = 0; i < durable; ++i) {
    PendingAck& a = acks_[i];
    if (a.sent) continue;
    std::span<uint8_t> buf = Buffer(out);
    if (buf.empty()) break;
    a.sent = true;
    size_t k = 0;
    ids[k++] = a.id;
    const Peer* to = a.refused ? nullptr : FindPeer(a.to);
    if (to == nullptr || !to->packs) {
      Send(a.to, encoder_->RoomAck(buf, id(), a.id, a.refused), out);
    } else {
      const size_t end = std::min(durable, i + 1 + kAckPackScan);
      for (size_t j = i + 1; j < end && k < wire::kRoomAckIdsMax; ++j) {
        PendingAck& b = acks_[j];
        if (b.sent || b.refused || !(b.to == a.to)) continue;
        b.sent = true;
        ids[k++] = b.id;
      }
      Send(a.to, encoder_->RoomAckPacked(buf, id(), std::span<const Hash256>(ids, k)), out);
    }
    counters_.acks_sent += k;
    ++counters_.ack_datagrams;
  }
  // A full send queue keeps the rest for the next release: they are durable already, and
  // dropping them would make their publishers retransmit (the loopback benchmark lost 256
  // acks at a time that way: one full queue, one whole batch).
  // Every sent ack lies below acks_marked_, so it moves down by as many.
  acks_marked_ -= std::erase_if(acks_, [](const PendingAck& a) { return a.sent; });
}

// AdmitRate: per-peer then per-room limits for a fresh update. Over the room's soft limit
// only the fastest sender of this period is shed; over the hard limit (2x) everyone is.
bool Swarm::AdmitRate(int64_t now_us, Peer& p, const Hash256& update,
                      base::Outbox& out) noexcept {
  bool shed = !p.publish.TryTake(now_us);
  if (!shed && !room_bucket_.TryTake(now_us)) {
    uint32_t fastest = 0;
    for (const Peer& q : peers_) {
      if (q.used) fastest = std::max(fastest, q.recent_publishes);
    }
    shed = p.recent_publishes * 4 >= fastest * 3 || !room_hard_bucket_.TryTake(now_us);
  }
  if (!shed) {
    ++p.recent_publishes;
    return true;
  }
  ++counters_.shed;
  if (now_us - p.slowdown_sent_us >= 1'000'000 || p.slowdown_sent_us == 0) {
    p.slowdown_sent_us = now_us;
    std::span<uint8_t> buf = Buffer(out);
    if (!buf.empty()) {
      const uint32_t rate = config_.peer_publish_per_s * (p.relay ? config_.relay_publish_factor : 1);
      Send(p.addr, encoder_->RoomSlowDown(buf, id(), update, kSlowDownRetryMs, rate), out);
      ++counters_.slowdowns_sent;
    }
  }
  return false;
}

Verdict Swarm::Accept(Bytes record, const Hash256& update, const base::Endpoint& from, bool ack,
                      bool* accepted, const UpdateView* view) noexcept {
  RP_ASSERT(record.size() <= kUpdateBytesMax);
  // The room reads 8-byte aligned (a no-op copy when the record is the scratch already).
  if (record.data() != Scratch()) std::memmove(Scratch(), record.data(), record.size());
  Bytes aligned(Scratch(), record.size());
  const Hash256 before = room_->state_hash();
  // `view` decoded these bytes in the scratch: the room need not decode them again.
  const Verdict v = view != nullptr ? room_->Receive(aligned, *view) : room_->Receive(aligned);
  *accepted = InLogVerdict(v);
  if (v == Verdict::kDuplicate) {
    ++counters_.duplicates;
    // A retransmission (its first ack may have been lost), or one whose first Append
    // failed: stored again (a no-op when it is stored), acked only if that works.
    if (ack) AckDuplicate(from, update);
    return v;
  }
  if (!*accepted) {
    ++counters_.rejected;
    if (IsPermanentReject(v)) rejected_.Insert(RejectKey(v, update, aligned));
    return v;
  }
  digest_dirty_ = true;
  // seen_ means "in the log and, on a node with a storage, staged": OnPublish acks what it
  // holds without asking the storage.
  if (storage_ == nullptr) {
    seen_.Insert(IdPrefix64(update));
  } else if (storage_->Append(id(), update, aligned).ok()) {
    seen_.Insert(IdPrefix64(update));
    if (ack) QueueAck(from, update);  // sync records are not publishes: no ack
  } else {
    ++counters_.storage_errors;  // no ack: the publisher retries
  }
  StorePlaced(&update);
  AdoptRoomCheckpoint();
  since_checkpoint_ += room_->placed().size();
  // An update that went pending is announced when it is placed, with the pending updates
  // that a later arrival releases: only then can the application read its payload.
  for (const Hash256& placed : room_->placed()) Emit(SwarmEvent::kUpdateApplied, placed, from);
  NoteStateChange(before);
  return v;
}

// StorePlaced: appends what the room just placed besides `skip` (stored by the caller).
// An old-key update set aside until a rotation names it as an ancestor was not stored
// when it arrived (it was not in the log); it is now. Pending updates were stored on
// arrival: appending them again is a no-op (Append is idempotent by id).
void Swarm::StorePlaced(const Hash256* skip) noexcept {
  if (storage_ == nullptr) return;
  for (const Hash256& placed : room_->placed()) {
    if (skip != nullptr && placed == *skip) continue;
    const Bytes record = room_->RecordOf(placed);
    if (record.empty()) continue;
    if (storage_->Append(id(), placed, record).ok()) {
      seen_.Insert(IdPrefix64(placed));
    } else {
      ++counters_.storage_errors;
    }
  }
}

// AckDuplicate: a publish of an update the log already holds. Acked once it is staged
// again from the log's own (verified) record: a no-op for the storage when it was stored,
// a second chance when its first Append failed. Pending updates are not acked yet.
void Swarm::AckDuplicate(const base::Endpoint& to, const Hash256& update) noexcept {
  if (storage_ == nullptr || !config_.relay) return;
  const Bytes record = room_->RecordOf(update);
  if (record.empty()) {
    // Pruned behind a checkpoint after it was stored: the stored checkpoint covers it.
    if (room_->WasPruned(update)) QueueAck(to, update);
    return;
  }
  if (!storage_->Append(id(), update, record).ok()) {
    ++counters_.storage_errors;
    return;
  }
  seen_.Insert(IdPrefix64(update));
  QueueAck(to, update);
}

void Swarm::NoteStateChange(const Hash256& before) {
  if (room_->state_hash() != before) Emit(SwarmEvent::kStateChanged, room_->state_hash(), {});
}

wire::Verdict Swarm::OnPublish(int64_t now_us, const base::Endpoint& from,
                               const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::RoomPublish* m = msg.room_publish();
  const auto* rec = m->record();
  const auto* more = m->more();
  if (more == nullptr || more->size() == 0) {
    return OnRecord(now_us, from, Bytes(rec->data(), rec->size()), nullptr, msg.bytes(), out);
  }
  // Packed: each record as if it came alone (Decode bounded their count and sizes). The
  // datagram is never forwarded whole: a peer gets only the records this node took.
  // Sync never packs RoomPublish, so these are never a sync stream's (which skips the rate
  // limit): each is admitted like any flood.
  wire::Verdict first_bad = OnRecord(now_us, from, Bytes(rec->data(), rec->size()), nullptr,
                                     Bytes{}, out, /*packed=*/true);
  for (const wire::fb::RoomRecord* r : *more) {
    const wire::Verdict v = OnRecord(now_us, from, Bytes(r->bytes()->data(), r->bytes()->size()),
                                     nullptr, Bytes{}, out, /*packed=*/true);
    if (first_bad == wire::Verdict::kOk) first_bad = v;
  }
  return first_bad;
}

wire::Verdict Swarm::OnRecord(int64_t now_us, const base::Endpoint& from, Bytes record,
                              const Hash256* claimed, Bytes datagram, base::Outbox& out,
                              bool packed) noexcept {
  Peer* p = FindPeer(from);
  if (p == nullptr) return wire::Verdict::kUnverifiedSender;  // join first
  p->last_heard_us = now_us;
  UpdateView view;
  if (record.size() > kUpdateBytesMax) {
    ++counters_.rejected;
    return wire::Verdict::kBadField;
  }
  if (record.data() != Scratch()) std::memmove(Scratch(), record.data(), record.size());
  const Bytes aligned(Scratch(), record.size());
  if (DecodeUpdate(aligned, id(), &view) != Verdict::kOk ||
      (claimed != nullptr && view.id != *claimed)) {
    ++counters_.rejected;  // pieces that do not make the update they named: dropped
    return wire::Verdict::kBadField;
  }
  const Hash256 update = view.id;
  // Cheapest first: duplicates and known-bad ids cost a hash, never a signature.
  if (seen_.Contains(IdPrefix64(update))) {
    ++counters_.duplicates;
    QueueAck(from, update);
    return wire::Verdict::kOk;
  }
  // Refused before, for a reason that will not change (its first refusal was counted
  // under that reason): its signed bytes, or these signed bytes with this signature.
  if (rejected_.Contains(IdPrefix64(update)) ||
      rejected_.Contains(SignatureRejectKey(update, view.signature))) {
    return wire::Verdict::kRoomRefused;
  }
  // While a joiner loads its checkpoint the room must stay empty; sync fills in after.
  if (fetch_ != nullptr && room_->log_size() == 0) return wire::Verdict::kOk;
  // A large record of a sync stream comes as a RoomPublish (or pieces) from the peer we asked.
  const bool from_sync = !packed && sync_.active && peers_[sync_.peer].addr == from;
  if (!from_sync && !AdmitRate(now_us, *p, update, out)) return wire::Verdict::kRateLimited;
  bool accepted = false;
  const Verdict v = Accept(aligned, update, from, /*ack=*/from.valid(), &accepted, &view);
  if (!accepted) return WireVerdict(v);
  ++counters_.accepted;
  // `record` is the caller's bytes (the received datagram's, or reassembled pieces),
  // stable for this call, unless it is the scratch (reused): then the log's copy. A
  // pending update is not in the log yet, but its caller's bytes are.
  const Bytes src = record.data() != Scratch() ? record : room_->RecordOf(update);
  if (floods_ != nullptr && floods_->open() && !src.empty() &&
      src.size() <= kPackedRecordBytesMax) {
    // Inside a receive batch: queued, and packed with the batch's other floods at its end.
    floods_->Add(this, src, from, out);
  } else if (!datagram.empty()) {
    Flood(datagram, from, out);  // the bytes received: signatures cover them
  } else if (!src.empty()) {
    FloodRecord(update, src, from, out);
  }
  return wire::Verdict::kOk;
}

// ---- long updates: pieces ----

void Swarm::SendRecord(const base::Endpoint& to, const Hash256& update, Bytes record,
                       base::Outbox& out) noexcept {
  if (record.size() <= kUpdateInlineBytesMax) {
    std::span<uint8_t> buf = Buffer(out);
    if (!buf.empty()) Send(to, encoder_->RoomPublish(buf, id(), record), out);
    return;
  }
  const size_t pieces = (record.size() + wire::kRoomPieceBytes - 1) / wire::kRoomPieceBytes;
  for (size_t i = 0; i < pieces; ++i) {
    std::span<uint8_t> buf = Buffer(out);
    if (buf.empty()) return;  // send queue full: the receiver asks for what it lacks
    Send(to, encoder_->RoomUpdatePiece(buf, id(), update, record, static_cast<uint16_t>(i)), out);
    ++counters_.update_pieces_sent;
  }
}

void Swarm::FloodRecord(const Hash256& update, Bytes record, const base::Endpoint& except,
                        base::Outbox& out) noexcept {
  for (Peer& p : peers_) {
    if (!p.used || p.addr == except) continue;
    SendRecord(p.addr, update, record, out);
    ++counters_.forwarded;
    ++counters_.flood_datagrams;  // pieces of a long one count as one
  }
}

wire::Verdict Swarm::OnUpdatePiece(int64_t now_us, const base::Endpoint& from,
                                   const wire::Message& msg, base::Outbox& out) noexcept {
  Peer* p = FindPeer(from);
  if (p == nullptr) return wire::Verdict::kUnverifiedSender;
  const wire::fb::RoomUpdatePiece* m = msg.room_update_piece();
  const Hash256 update = wire::FromWireId(*m->update());
  const bool key_epoch = m->key_epoch();
  ++counters_.update_pieces_received;
  if (seen_.Contains(IdPrefix64(update))) {  // already whole here: just the ack (an update)
    if (!key_epoch) QueueAck(from, update);
    return wire::Verdict::kOk;
  }
  if (rejected_.Contains(IdPrefix64(update))) return wire::Verdict::kBadSignature;
  const size_t total = m->record_bytes();  // Decode checked its range and the piece's size
  Partial* part = nullptr;
  size_t from_peer = 0;
  for (Partial& q : partials_) {
    if (q.from == from) {
      if (q.id == update && q.key_epoch == key_epoch) part = &q;
      from_peer += q.bytes.size();
    }
  }
  if (part != nullptr && part->bytes.size() != total) {
    ++counters_.update_pieces_dropped;  // the same id with another size: a liar's piece
    return wire::Verdict::kBadField;
  }
  if (part == nullptr) {
    if (from_peer + total > kPartialBytesPerPeerMax ||
        partial_bytes_ + total > kPartialBytesPerRoomMax) {
      ++counters_.update_pieces_dropped;
      return wire::Verdict::kRateLimited;
    }
    partials_.push_back(Partial{});
    part = &partials_.back();
    part->from = from;
    part->id = update;
    part->key_epoch = key_epoch;
    part->bytes.resize(total);
    part->pieces = static_cast<uint16_t>((total + wire::kRoomPieceBytes - 1) / wire::kRoomPieceBytes);
    partial_bytes_ += total;
  }
  const uint16_t i = m->index();
  part->last_us = now_us;
  const uint64_t bit = uint64_t{1} << (i % 64);
  if (part->have[i / 64] & bit) return wire::Verdict::kOk;  // a duplicate piece
  part->have[i / 64] |= bit;
  ++part->got;
  std::memcpy(part->bytes.data() + size_t{i} * wire::kRoomPieceBytes, m->bytes()->data(),
              m->bytes()->size());
  if (part->got < part->pieces) return wire::Verdict::kOk;
  // Whole: out of the table, then checked and handled like a RoomPublish.
  std::vector<uint8_t> record = std::move(part->bytes);
  partial_bytes_ -= total;
  partials_.erase(partials_.begin() + (part - partials_.data()));
  if (key_epoch) {
    // The id a key epoch's pieces name is the hash of the whole record.
    if (wire::Blake2b256(record) != update) {
      ++counters_.update_pieces_dropped;
      return wire::Verdict::kBadField;
    }
    return OnEpochRecord(now_us, from, record, {}, out);
  }
  return OnRecord(now_us, from, record, &update, {}, out);
}

wire::Verdict Swarm::OnUpdatePieceGet(int64_t now_us, const base::Endpoint& from,
                                      const wire::Message& msg, base::Outbox& out) noexcept {
  Peer* p = FindPeer(from);
  if (p == nullptr) return wire::Verdict::kUnverifiedSender;
  const wire::fb::RoomUpdatePieceGet* m = msg.room_update_piece_get();
  const Hash256 update = wire::FromWireId(*m->update());
  if (m->key_epoch()) return OnEpochPieceGet(now_us, *p, update, msg, out);
  Bytes record = room_->RecordOf(update);
  if (record.empty()) {
    for (const Unacked& u : unacked_) {
      if (u.id == update) record = u.record;
    }
  }
  if (record.size() <= kUpdateInlineBytesMax) return wire::Verdict::kUnexpectedReply;
  const size_t pieces = (record.size() + wire::kRoomPieceBytes - 1) / wire::kRoomPieceBytes;
  const auto* missing = m->missing();
  for (size_t i = 0; i < pieces && i / 8 < missing->size(); ++i) {
    if ((missing->Get(static_cast<flatbuffers::uoffset_t>(i / 8)) & (1u << (i % 8))) == 0) continue;
    if (!p->serve.TryTake(now_us)) return wire::Verdict::kRateLimited;
    std::span<uint8_t> buf = Buffer(out);
    if (buf.empty()) return wire::Verdict::kSendQueueFull;
    Send(from, encoder_->RoomUpdatePiece(buf, id(), update, record, static_cast<uint16_t>(i)),
         out);
    ++counters_.update_pieces_sent;
  }
  return wire::Verdict::kOk;
}

// PartialTick: a partial update silent for retry_us asks its sender for what is missing;
// after kPartialAsksMax asks it is dropped.
void Swarm::PartialTick(int64_t now_us, base::Outbox& out) noexcept {
  for (size_t i = 0; i < partials_.size();) {
    Partial& q = partials_[i];
    if (now_us - q.last_us < config_.retry_us) {
      ++i;
      continue;
    }
    if (q.asks >= kPartialAsksMax || FindPeer(q.from) == nullptr) {
      partial_bytes_ -= q.bytes.size();
      partials_.erase(partials_.begin() + static_cast<std::ptrdiff_t>(i));
      ++counters_.partials_expired;
      continue;
    }
    uint8_t missing[(wire::kRoomKeyEpochPiecesMax + 7) / 8] = {};
    for (uint16_t k = 0; k < q.pieces; ++k) {
      if ((q.have[k / 64] & (uint64_t{1} << (k % 64))) == 0) missing[k / 8] |= uint8_t(1u << (k % 8));
    }
    q.last_us = now_us;
    ++q.asks;
    std::span<uint8_t> buf = Buffer(out);
    if (!buf.empty()) {
      Send(q.from, encoder_->RoomUpdatePieceGet(buf, id(), q.id,
                                                Bytes(missing, (q.pieces + 7u) / 8u),
                                                q.key_epoch), out);
      ++counters_.update_pieces_asked;
    }
    ++i;
  }
}

absl::StatusOr<Hash256> Swarm::Publish(int64_t now_us, Bytes payload, base::Outbox& out) {
  if (now_us < slowed_until_us_) {
    return absl::ResourceExhaustedError(absl::StrCat(kPublishBusyPrefix, "slowed down by a relay"));
  }
  if (unacked_.size() >= kUnackedMax) {
    return absl::ResourceExhaustedError(
        absl::StrCat(kPublishBusyPrefix, kUnackedMax, " updates wait for a relay's ack"));
  }
  if (pace_per_s_ != 0 && !pace_.TryTake(now_us)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        kPublishBusyPrefix, "pacing at ", pace_per_s_, " updates/s (a relay's limit)"));
  }
  const Hash256 before = room_->state_hash();
  auto record = room_->Write(payload, [this](std::span<uint8_t> b) { rng_->Fill(b); });
  if (!record.ok()) return record.status();
  UpdateView view;
  const Verdict decoded = DecodeUpdate(*record, id(), &view);
  RP_ASSERT(decoded == Verdict::kOk);
  const Hash256 update = view.id;
  Own(now_us, before, std::move(*record), out);
  if (config_.checkpoint_every != 0 && since_checkpoint_ >= config_.checkpoint_every &&
      fetch_ == nullptr) {
    if (MakeCheckpoint().ok()) ++counters_.checkpoints_made;  // relays fetch it from our heads
    since_checkpoint_ = 0;  // also after a failure: not retried (5 MB of work) per publish
  }
  return update;
}

void Swarm::Own(int64_t now_us, const Hash256& before, std::vector<uint8_t> record,
                base::Outbox& out) {
  UpdateView view;
  const Verdict decoded = DecodeUpdate(record, id(), &view);
  RP_ASSERT(decoded == Verdict::kOk);
  const Hash256 update = view.id;
  ++counters_.published;
  seen_.Insert(IdPrefix64(update));
  digest_dirty_ = true;
  if (storage_ != nullptr && !storage_->Append(id(), update, record).ok()) {
    ++counters_.storage_errors;
  }
  Emit(SwarmEvent::kUpdateApplied, update, {});
  NoteStateChange(before);
  FloodRecord(update, record, base::Endpoint{}, out);
  unacked_.push_back(Unacked{update, std::move(record), now_us + config_.retry_us * 4, 0});
  ++since_checkpoint_;
}

bool Swarm::OnAck(const Hash256& update, bool refused, const base::Endpoint& from) {
  const size_t before = unacked_.size();
  std::erase_if(unacked_, [&](const Unacked& u) { return u.id == update; });
  if (unacked_.size() == before) return false;
  ++counters_.acks_received;
  if (refused) OnRefusedAck(update);
  Emit(SwarmEvent::kAcked, update, from);
  return true;
}

void Swarm::OnRefusedAck(const Hash256& update) {
  // In our log: the room re-issues it once our checkpoint refuses it too (Reissue).
  if (room_->RecordOf(update).size() != 0) return;
  if (own_unplaced_.contains(update)) {
    ReissueUnplaced(update);
  } else if (refused_own_.size() < kAuthoredMax) {
    refused_own_.insert(update);  // for ReplayOwn, after a checkpoint loads
  }
}

void Swarm::ReissueUnplaced(const Hash256& update) {
  auto it = own_unplaced_.find(update);
  if (it == own_unplaced_.end()) return;
  std::vector<uint8_t> original = std::move(it->second);
  own_unplaced_.erase(it);
  refused_own_.erase(update);
  const Hash256 before = room_->state_hash();
  auto record = room_->ReissueRecord(original, [this](std::span<uint8_t> b) { rng_->Fill(b); });
  if (!record.ok()) return;
  ++counters_.reissued;
  reissue_now_.emplace_back(before, std::move(*record));
}

void Swarm::Reissue(int64_t now_us, base::Outbox& out) {
  for (auto& [was, record] : reissue_now_) Own(now_us, was, std::move(record), out);
  reissue_now_.clear();
  if (!room_->reissues_due()) return;
  const Hash256 before = room_->state_hash();
  std::vector<std::vector<uint8_t>> records =
      room_->Reissues([this](std::span<uint8_t> b) { rng_->Fill(b); });
  for (std::vector<uint8_t>& record : records) {
    ++counters_.reissued;
    // Bypasses the publish pace and the unacked bound: a re-issue replaces a write the
    // caller already made, and there is one per refused update.
    Own(now_us, before, std::move(record), out);
  }
}

void Swarm::RetryUnacked(int64_t now_us, base::Outbox& out) noexcept {
  bool any_relay = false;
  for (const Peer& p : peers_) any_relay |= p.used && p.relay;
  if (!any_relay) {
    unacked_.clear();  // nobody acks in a swarm without relays; sync repairs loss
    return;
  }
  // A relay asked us to wait: resending now would only be shed again, and count a try.
  if (now_us < slowed_until_us_) return;
  for (size_t i = 0; i < unacked_.size();) {
    Unacked& u = unacked_[i];
    if (u.retries >= kPublishRetriesMax) {
      unacked_.erase(unacked_.begin() + static_cast<std::ptrdiff_t>(i));  // keeps the order
      continue;
    }
    if (now_us >= u.next_us) {
      // Resends draw from the pace too; what finds it empty goes at a later tick, untried.
      if (pace_per_s_ != 0 && !pace_.TryTake(now_us)) return;
      u.next_us = now_us + config_.retry_us * 4;
      ++u.retries;
      for (Peer& p : peers_) {
        if (!p.used || !p.relay) continue;
        if (Buffer(out).empty()) return;
        SendRecord(p.addr, u.id, u.record, out);
      }
    }
    ++i;
  }
}

// ---- dispatch and time ----

wire::Verdict Swarm::OnMessage(int64_t now_us, const base::Endpoint& from,
                               const wire::Message& msg, base::Outbox& out) noexcept {
  RP_ASSERT(msg.is_room());
  last_message_us_ = now_us;
  if (Peer* p = FindPeer(from)) p->last_heard_us = now_us;
  switch (msg.type()) {
    case wire::MessageType::kRoomJoin: return OnJoin(now_us, from, msg, out);
    case wire::MessageType::kRoomLeave:
      if (Peer* p = FindPeer(from)) DropPeer(p);
      return wire::Verdict::kOk;
    case wire::MessageType::kRoomHeads: return OnHeads(now_us, from, msg, out);
    case wire::MessageType::kRoomPublish: return OnPublish(now_us, from, msg, out);
    case wire::MessageType::kRoomAck: {
      const wire::fb::RoomAck* m = msg.room_ack();
      bool any = OnAck(wire::FromWireId(*m->update()), m->refused(), from);
      if (const auto* more = m->more()) {
        for (const wire::fb::Id256* u : *more) any |= OnAck(wire::FromWireId(*u), false, from);
      }
      return any ? wire::Verdict::kOk : wire::Verdict::kUnexpectedReply;
    }
    case wire::MessageType::kRoomSync: return OnSync(now_us, from, msg, out);
    case wire::MessageType::kRoomSyncData: return OnSyncData(now_us, from, msg, out);
    case wire::MessageType::kRoomCheckpointGet: return OnPieceGet(now_us, from, msg, out);
    case wire::MessageType::kRoomCheckpointChunk: return OnPiece(now_us, from, msg, out);
    case wire::MessageType::kRoomSlowDown: {
      if (FindPeer(from) == nullptr) return wire::Verdict::kUnverifiedSender;
      const int64_t wait_us = int64_t{msg.room_slow_down()->retry_after_ms()} * 1000;
      slowed_until_us_ = now_us + std::min<int64_t>(wait_us, 10'000'000);
      // Pace below the rate the relay named from now on (9/10 of it, burst a quarter
      // second), so that a long stream is not shed over and over. The shed update and
      // those after it are resent once the wait is over, in the order they were written.
      if (const uint32_t rate = msg.room_slow_down()->publish_per_s(); rate != 0) {
        const uint32_t paced = std::max<uint32_t>(1, rate - rate / 10);
        if (pace_per_s_ == 0 || paced < pace_per_s_) {
          pace_per_s_ = paced;
          pace_ = base::TokenBucket(paced, std::max<uint32_t>(1, paced / 4), slowed_until_us_);
        }
      }
      for (Unacked& u : unacked_) u.next_us = std::max(u.next_us, slowed_until_us_);
      Emit(SwarmEvent::kSlowedDown, wire::FromWireId(*msg.room_slow_down()->update()), from);
      return wire::Verdict::kOk;
    }
    case wire::MessageType::kRoomEpoch: return OnEpoch(now_us, from, msg, out);
    case wire::MessageType::kRoomUpdatePiece: return OnUpdatePiece(now_us, from, msg, out);
    case wire::MessageType::kRoomUpdatePieceGet: return OnUpdatePieceGet(now_us, from, msg, out);
    default: break;
  }
  return wire::Verdict::kUnknownType;
}

void Swarm::Tick(int64_t now_us, base::Outbox& out) noexcept {
  CheckObjectTree();
  TryAwaitedCheckpoint();
  Reissue(now_us, out);
  FollowCheckpoint(now_us, out);
  StopAwaiting(now_us, out);
  if (!joining_.empty() && now_us >= next_join_us_) {
    const std::vector<base::Endpoint> again = joining_;
    for (const base::Endpoint& e : again) Connect(now_us, e, out);
    // Backs off while nobody answers (a relay that is down): 0.8 s, 1.6 s, ... 6.4 s.
    join_interval_us_ = std::min<int64_t>(
        join_interval_us_ == 0 ? config_.retry_us * 4 : join_interval_us_ * 2, kJoinRetryMaxUs);
    next_join_us_ = now_us + join_interval_us_;
  }
  if (now_us >= next_heads_us_) {
    // Jitter keeps the swarm's announcements from lining up.
    next_heads_us_ = now_us + config_.heads_interval_us -
                     static_cast<int64_t>(rng_->Uniform(config_.heads_interval_us / 4 + 1));
    for (Peer& p : peers_) {
      if (!p.used) continue;
      if (now_us - p.last_heard_us > config_.peer_silent_us) {
        // A member keeps asking a relay that went silent (restarting, or a network
        // that came back) until it answers; relays wait for members to come back.
        const bool rejoin = !config_.relay && p.relay && joining_.size() < config_.peers_max;
        const base::Endpoint addr = p.addr;
        DropPeer(&p);
        if (rejoin && std::find(joining_.begin(), joining_.end(), addr) == joining_.end()) {
          joining_.push_back(addr);
        }
        continue;
      }
      p.recent_publishes /= 2;
      SendHeads(now_us, p, out);
    }
  }
  RetryUnacked(now_us, out);
  PartialTick(now_us, out);
  SyncTick(now_us, out);
  FetchTick(now_us, out);
  PruneTick(now_us);
}

}  // namespace ringpeer::room
