// Overlay: lookups, announcements, routed messages, size estimates, gossip and the DHT's
// timers (see overlay.h for the contract).
#include <algorithm>
#include <cstring>

#include "base/assert.h"
#include "dht/entries.h"
#include "dht/overlay.h"
#include "flatbuffers/flatbuffers.h"

namespace ringpeer::dht {
namespace {

constexpr uint32_t kSizeLookupsConcurrent = 2;
constexpr uint64_t kGossipSalt = 0x9E3779B97F4A7C15ull;
constexpr uint16_t kNoAnnounce = 0xFFFF;
constexpr uint64_t kHopAckSalt = 0xA5C3E1F00F1E3C5Aull;

// HopAckKey: the txid of the Ack a hop sends for a routed datagram, the same at both ends:
// one key per attempt of a route, unguessable to anyone who did not see the route id.
uint64_t HopAckKey(uint64_t route_id, uint8_t attempt) noexcept {
  const uint64_t k = route_id ^ (uint64_t{attempt} << 56) ^ kHopAckSalt;
  return k == 0 ? 1 : k;
}
// Expected answer sizes: header + table overhead + entries. Requests are padded to a
// third of these, so that even a responder without a round trip with us answers fully.
constexpr size_t kReplyOverheadBytes = 96;
constexpr size_t kNodesReplyBytes = kReplyOverheadBytes + kLookupReplyNodes * kPeerEntryBytes;
constexpr size_t kProvidersReplyBytes =
    kReplyOverheadBytes + 16 +
    (wire::kProvidersPerMessageMax + wire::kProviderNodesPerMessageMax) * kPeerEntryBytes;
static_assert(kProvidersReplyBytes <= wire::kDatagramBytesMax);


// PadFor: zero bytes to add to a request of `bytes` so that 3x it covers `reply_bytes`
// (the pad vector's own length word and alignment only make it larger).
size_t PadFor(size_t bytes, size_t reply_bytes) noexcept {
  const size_t need = (reply_bytes + kAmplificationMax - 1) / kAmplificationMax;
  return need > bytes ? need - bytes : 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Lookups.

uint32_t Overlay::StartLookup(int64_t now_us, const NodeId& target, LookupKind kind,
                              uint8_t paths, base::Outbox& out) noexcept {
  // An idle slot that still has its storage first, else one to allocate.
  uint32_t li = static_cast<uint32_t>(lookups_.size());
  for (uint32_t i = 0; i < lookups_.size(); ++i) {
    const LookupSlot* l = Slot(i);
    if (l != nullptr && !l->active) {
      li = i;
      break;
    }
    if (l == nullptr && li == lookups_.size()) li = i;
  }
  if (li == lookups_.size()) return 0;
  Contact seeds[64];
  const size_t cap = std::min<size_t>(64, config_.lookup_candidates_max);
  size_t n = table_.Closest(target, std::span(seeds, cap));
  // A table the subnet rules kept empty still has verified contacts (bootstrap peers).
  for (uint32_t i = 0; i < peers_.size() && n < config_.lookup.alpha; ++i) {
    if (peers_[i].state == State::kVerified) seeds[n++] = Contact{peers_[i].id, peers_[i].addr};
  }
  if (n == 0) return 0;
  LookupParams params = config_.lookup;
  if (paths > 0) params.paths = std::min<uint8_t>(paths, Lookup::kPathsMax);
  // Out of memory here aborts, as at construction.
  if (lookups_[li] == nullptr) {
    lookups_[li] = std::make_unique<LookupSlot>(config_.lookup_candidates_max);
  }
  LookupSlot& l = *lookups_[li];
  l.lookup.Start(target, kind, params, std::span(seeds, n));
  l.active = true;
  l.handle = next_handle_++;
  if (next_handle_ == 0) next_handle_ = 1;
  l.started_us = now_us;
  l.announce = kNoAnnounce;
  l.providers_count = 0;
  const uint32_t handle = l.handle;
  if (config_.events != nullptr) config_.events->OnLookupStarted(handle, kind);
  PumpLookup(now_us, li, out);
  return handle;
}

void Overlay::SendLookupRequest(int64_t now_us, uint32_t li, int c, base::Outbox& out) noexcept {
  LookupSlot& l = *lookups_[li];
  const Contact to = l.lookup.candidate(c).contact;
  const int r = AllocRpc(now_us, RpcKind::kLookup, to, static_cast<uint16_t>(li),
                         static_cast<int16_t>(c));
  if (r < 0) return l.lookup.Abandon(c);
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return;  // times out and is retried like a lost datagram
  const uint64_t txid = rpcs_[r].txid;
  const NodeId& target = l.lookup.target();
  size_t n = 0;
  if (l.lookup.kind() == LookupKind::kGetProviders || l.lookup.kind() == LookupKind::kAnnounce) {
    const uint8_t count = wire::kProvidersPerMessageMax;
    n = encoder_.GetProviders(buf, wire::kNoShardHint, txid, id_, target, count, 0);
    n = encoder_.GetProviders(buf, wire::kNoShardHint, txid, id_, target, count,
                              PadFor(n, kProvidersReplyBytes));
  } else {
    n = encoder_.FindNode(buf, wire::kNoShardHint, txid, id_, target, kLookupReplyNodes, 0);
    n = encoder_.FindNode(buf, wire::kNoShardHint, txid, id_, target, kLookupReplyNodes,
                          PadFor(n, kNodesReplyBytes));
  }
  RP_ASSERT(n > 0);
  out.Commit(n, to.addr);
}

void Overlay::PumpLookup(int64_t now_us, uint32_t li, base::Outbox& out) noexcept {
  LookupSlot* slot = Slot(li);
  if (slot == nullptr || !slot->active) return;
  LookupSlot& l = *slot;
  for (int c = l.lookup.Next(); c >= 0; c = l.lookup.Next()) {
    SendLookupRequest(now_us, li, c, out);
  }
  if (l.lookup.Done()) FinishLookup(now_us, li, out);
}

void Overlay::OnLookupReply(int64_t now_us, Rpc& rpc, const wire::Message& msg,
                            base::Outbox& out) noexcept {
  const uint16_t li = rpc.owner;
  const int c = rpc.candidate;
  FreeRpc(rpc);
  LookupSlot* slot = Slot(li);
  if (slot == nullptr || !slot->active) return;
  LookupSlot& l = *slot;
  Contact nodes[wire::kNodesPerMessageMax];
  size_t n = 0;
  if (msg.type() == wire::MessageType::kNodes) {
    n = ReadEntries(msg.nodes()->nodes(), id_, nodes);
  } else {
    const wire::fb::Providers* p = msg.providers();
    n = ReadEntries(p->nodes(), id_, nodes);
    l.lookup.SetToken(c, std::span<const uint8_t, 16>(p->token()->b()->Data(), 16));
    Contact prov[wire::kProvidersPerMessageMax];
    const size_t np = ReadEntries(p->providers(), NodeId{}, prov);
    for (size_t i = 0; i < np && l.providers_count < std::size(l.providers); ++i) {
      const bool known = std::any_of(l.providers, l.providers + l.providers_count,
                                     [&](const Contact& x) { return x.id == prov[i].id; });
      if (!known) l.providers[l.providers_count++] = prov[i];
    }
  }
  l.lookup.OnReply(c, std::span(nodes, n));
  PumpLookup(now_us, li, out);
}

void Overlay::ExpireLookup(int64_t now_us, uint32_t li, base::Outbox& out) noexcept {
  for (Rpc& r : rpcs_) {
    if (r.kind == RpcKind::kLookup && r.owner == li) FreeRpc(r);
  }
  ++counters_.lookups_expired;
  FinishLookup(now_us, li, out, /*expired=*/true);
}

void Overlay::FinishLookup(int64_t now_us, uint32_t li, base::Outbox& out,
                           bool expired) noexcept {
  LookupSlot& l = *lookups_[li];
  Contact closest[255];
  int idx[255];
  const size_t n = l.lookup.ResultIndices(idx);
  for (size_t i = 0; i < n; ++i) closest[i] = l.lookup.candidate(idx[i]).contact;
  LookupResult res;
  res.handle = l.handle;
  res.kind = l.lookup.kind();
  res.target = l.lookup.target();
  res.closest = std::span(closest, n);
  res.providers = std::span(l.providers, l.providers_count);
  res.rounds = l.lookup.rounds();
  res.requests = l.lookup.requests_sent();
  res.replies = l.lookup.replies_received();
  res.duration_us = now_us - l.started_us;
  res.expired = expired;
  if (res.kind == LookupKind::kAnnounce && l.announce != kNoAnnounce) {
    for (size_t i = 0; i < n; ++i) {
      const Lookup::Candidate& cand = l.lookup.candidate(idx[i]);
      const Lookup::Token* token = l.lookup.token(idx[i]);
      if (token == nullptr) continue;
      const int r = AllocRpc(now_us, RpcKind::kAnnounce, cand.contact, l.announce, -1);
      if (r < 0) break;
      std::span<uint8_t> buf = out.Buffer();
      if (buf.empty()) break;
      const size_t bytes = encoder_.Announce(buf, wire::kNoShardHint, rpcs_[r].txid, id_,
                                             res.target, *token);
      RP_ASSERT(bytes > 0);
      out.Commit(bytes, cand.contact.addr);
    }
  }
  // Free the slot before anything below starts another lookup in it.
  l.active = false;
  l.idle_since_us = now_us;
  if (config_.events != nullptr) config_.events->OnLookupDone(res);
  if (res.kind == LookupKind::kSizeSample) {
    double d[256];
    size_t m = 0;
    const double self_d = DistanceFraction(id_, res.target);
    bool self_in = false;
    for (size_t i = 0; i < n; ++i) {
      const double di = DistanceFraction(closest[i].id, res.target);
      if (!self_in && self_d < di) d[m++] = self_d, self_in = true;
      d[m++] = di;
    }
    size_messages_ += res.requests + res.replies;
    const double sample = DensitySample(std::span(d, std::min<size_t>(m, n)));
    if (sample > 0) size_samples_.push_back(sample);
    --size_pending_;
    ContinueSizeEstimate(now_us, out);
  }
  if (res.kind == LookupKind::kRefresh && res.handle == refresh_handle_) StartRefresh(now_us, out);
}

uint32_t Overlay::FindNode(int64_t now_us, const NodeId& target, base::Outbox& out,
                           uint8_t paths) noexcept {
  return StartLookup(now_us, target, LookupKind::kFindNode, paths, out);
}

uint32_t Overlay::GetProviders(int64_t now_us, const NodeId& key, base::Outbox& out) noexcept {
  return StartLookup(now_us, key, LookupKind::kGetProviders, 0, out);
}

bool Overlay::Announce(int64_t now_us, const NodeId& key, base::Outbox& out) noexcept {
  uint32_t slot = static_cast<uint32_t>(announces_.size());
  for (uint32_t i = 0; i < announces_.size(); ++i) {
    if (announces_[i].active && announces_[i].key == key) slot = i;
  }
  for (uint32_t i = 0; i < announces_.size() && slot == announces_.size(); ++i) {
    if (!announces_[i].active) slot = i;
  }
  if (slot == announces_.size()) return false;
  AnnounceSlot& a = announces_[slot];
  a.key = key;
  a.active = true;
  a.acks = 0;
  a.next_us = now_us;  // DhtTick starts the lookup (and retries it if no slot is free)
  Wake(now_us);
  DhtTick(now_us, out);
  return true;
}

void Overlay::Unannounce(const NodeId& key) noexcept {
  for (AnnounceSlot& a : announces_) {
    if (a.active && a.key == key) a.active = false;
  }
}

// ---------------------------------------------------------------------------------------
// Size estimates.

bool Overlay::EstimateSize(int64_t now_us, base::Outbox& out) noexcept {
  if (size_pending_ > 0 || size_to_start_ > 0) return false;
  size_samples_.clear();
  size_messages_ = 0;
  size_to_start_ = config_.size_lookups;
  ContinueSizeEstimate(now_us, out);
  return true;
}

void Overlay::ContinueSizeEstimate(int64_t now_us, base::Outbox& out) noexcept {
  while (size_to_start_ > 0 && size_pending_ < kSizeLookupsConcurrent) {
    --size_to_start_;
    ++size_pending_;
    if (StartLookup(now_us, RandomId(*rng_), LookupKind::kSizeSample, 1, out) == 0) {
      --size_pending_;  // no slot or no peers: this sample is skipped
      break;
    }
  }
  if (size_pending_ > 0) return;
  if (size_to_start_ > 0) {
    size_retry_ = true;  // DhtTick retries when a lookup slot frees up
    Wake(now_us + kSecondUs / 10);
    return;
  }
  if (size_samples_.empty() && size_messages_ == 0) return;
  SizeEstimate e = DensityEstimate(size_samples_);
  e.messages = size_messages_;
  size_samples_.clear();
  size_messages_ = 0;
  if (config_.events != nullptr) config_.events->OnSizeEstimate(e);
}

bool Overlay::EstimateSizeByWalks(int64_t now_us, base::Outbox& out) {
  if (walks_running_ || config_.size_walks == 0) return false;
  const uint32_t degree = static_cast<uint32_t>(table_.LiveSize());
  if (degree == 0) return false;
  // The walks' state lives only while an estimate runs (~300 bytes a walk).
  walks_.assign(config_.size_walks, WalkSlot{});
  // Sized for the whole estimate, so that no reply reallocates them: every step is at
  // most one visit, and every reply (two messages of the budget) up to kWalkNextMax ids.
  walk_visits_.clear();
  walk_visits_.reserve(walks_.size() * (size_t{config_.size_walk_steps} + kWalkBurnInSteps));
  walk_seen_.clear();
  walk_seen_.reserve((config_.size_walk_messages_max / 2 + walks_.size()) * wire::kWalkNextMax);
  walk_messages_ = 0;
  walk_segments_ = 0;
  for (WalkSlot& w : walks_) {
    w = WalkSlot{};
    w.at = Contact{id_, base::Endpoint{}};
    w.degree = degree;
    w.segment = walk_segments_++;
    w.active = true;
  }
  walks_running_ = true;
  for (uint32_t i = 0; i < walks_.size(); ++i) StepWalk(now_us, i, out);
  return true;
}

void Overlay::StepWalk(int64_t now_us, uint32_t wi, base::Outbox& out) noexcept {
  WalkSlot& w = walks_[wi];
  // Each pass takes a step or refills proposals at us (after which a step follows), so
  // the loop ends within two passes per step.
  const uint32_t passes_max = 2 * (config_.size_walk_steps + kWalkBurnInSteps) + 2;
  for (uint32_t pass = 0; w.active; ++pass) {
    RP_ASSERT(pass <= passes_max);
    RP_ASSERT(w.wait == WalkWait::kNothing);
    if (w.steps >= kWalkBurnInSteps + config_.size_walk_steps) return EndWalk(now_us, wi);
    if (w.next_count == 0) {
      if (w.at.id == id_) {
        // At us: our own proposals, no message.
        w.degree = static_cast<uint32_t>(table_.LiveSize());
        for (Contact& c : w.next) w.next_count += table_.RandomContact(*rng_, &c);
        if (w.next_count == 0) return EndWalk(now_us, wi);
        continue;
      }
      if (!SendWalk(now_us, wi, w.at, nullptr, out)) return EndWalk(now_us, wi);
      return;
    }
    w.proposed = w.next[--w.next_count];
    if (w.proposed.id == id_) {
      // We are the proposal: answer it ourselves.
      ResolveProposal(wi, true, table_.HoldsLive(w.at.id),
                      static_cast<uint32_t>(table_.LiveSize()));
      continue;
    }
    const NodeId prev = w.at.id;
    if (!SendWalk(now_us, wi, w.proposed, &prev, out)) return EndWalk(now_us, wi);
    return;
  }
}

bool Overlay::SendWalk(int64_t now_us, uint32_t wi, const Contact& to, const NodeId* prev,
                       base::Outbox& out) noexcept {
  // The budget holds this request and every reply still awaited, this one's included.
  uint64_t awaited = 0;
  for (const WalkSlot& w : walks_) awaited += w.wait != WalkWait::kNothing;
  if (walk_messages_ + awaited + 2 > config_.size_walk_messages_max) return false;
  const int r = AllocRpc(now_us, RpcKind::kWalk, to, static_cast<uint16_t>(wi), -1);
  if (r < 0) return false;
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) {
    FreeRpc(rpcs_[r]);
    return false;
  }
  const size_t n = encoder_.Walk(buf, wire::kNoShardHint, rpcs_[r].txid, id_, prev);
  RP_ASSERT(n > 0);
  out.Commit(n, to.addr);
  ++walk_messages_;
  walks_[wi].wait = prev != nullptr ? WalkWait::kProposal : WalkWait::kRefill;
  return true;
}

bool Overlay::ResolveProposal(uint32_t wi, bool answered, bool held, uint32_t degree) noexcept {
  WalkSlot& w = walks_[wi];
  RP_ASSERT(w.active);
  // Metropolis-Hastings over mutual links: move with probability min(1, deg(at)/deg(v)).
  const bool move = answered && WalkMoves(w.degree, degree, held, *rng_);
  if (move) {
    w.at = w.proposed;
    w.degree = degree;
    w.next_count = 0;
  }
  // Staying is a step too: the walk's position after it is a sample either way.
  ++w.steps;
  if (w.steps > kWalkBurnInSteps && walk_visits_.size() < walk_visits_.capacity()) {
    uint64_t fp;
    std::memcpy(&fp, w.at.id.data(), 8);
    walk_visits_.push_back(WalkSample{fp, w.segment});
  }
  return move;
}

void Overlay::RecordSightings(uint32_t wi, std::span<const Contact> ids) noexcept {
  const WalkSlot& w = walks_[wi];
  if (w.steps < kWalkBurnInSteps) return;  // near our own neighbourhood still
  for (const Contact& c : ids) {
    if (walk_seen_.size() == walk_seen_.capacity()) return;
    uint64_t fp;
    std::memcpy(&fp, c.id.data(), 8);
    walk_seen_.push_back(WalkSample{fp, w.segment});
  }
}

void Overlay::OnWalkReply(int64_t now_us, Rpc& rpc, const wire::Message& msg,
                          base::Outbox& out) noexcept {
  const uint16_t wi = rpc.owner;
  FreeRpc(rpc);
  if (wi >= walks_.size()) return;
  WalkSlot& w = walks_[wi];
  if (!w.active || w.wait == WalkWait::kNothing) return;
  ++walk_messages_;
  const wire::fb::WalkReply* m = msg.walk_reply();
  // Our own id may be among the proposals: we are a node of the walk's graph too.
  Contact next[wire::kWalkNextMax];
  const size_t n = ReadEntries(m->next(), NodeId{}, next);
  RecordSightings(wi, std::span(next, n));
  const WalkWait waited = w.wait;
  w.wait = WalkWait::kNothing;
  w.retries = 0;
  const bool moved = waited == WalkWait::kRefill ||
                     ResolveProposal(wi, true, m->prev_held(), m->degree());
  if (waited == WalkWait::kRefill) w.degree = m->degree();
  if (moved) {
    std::copy(next, next + n, w.next);
    w.next_count = static_cast<uint8_t>(n);
  }
  StepWalk(now_us, wi, out);
}

void Overlay::EndWalk(int64_t now_us, uint32_t wi) noexcept {
  walks_[wi].active = false;
  walks_[wi].wait = WalkWait::kNothing;
  FinishWalks(now_us);
}

void Overlay::FinishWalks(int64_t now_us) noexcept {
  if (!walks_running_) return;
  for (const WalkSlot& w : walks_) {
    if (w.active) return;
  }
  walks_running_ = false;
  SizeEstimate e = CollisionEstimate(walk_visits_, walk_seen_);
  e.messages = walk_messages_;
  walk_visits_ = {};
  walk_seen_ = {};
  walks_ = {};
  if (config_.events != nullptr) config_.events->OnSizeEstimate(e);
}

// ---------------------------------------------------------------------------------------
// Routed messages.

bool Overlay::NextHop(const NodeId& target, const base::Endpoint& not_to, uint8_t attempt,
                      Contact* out, std::span<const NodeId> avoid) noexcept {
  Contact c[4 + kRouteHopTriesMax];
  const size_t n = table_.Closest(target, c);
  Contact ok[std::size(c)];
  size_t m = 0;
  for (size_t i = 0; i < n; ++i) {
    // Strictly nearer than us: the distance falls at every hop, so no route can loop.
    if (!CloserTo(target, c[i].id, id_) || c[i].addr == not_to) continue;
    if (std::find(avoid.begin(), avoid.end(), c[i].id) != avoid.end()) continue;
    ok[m++] = c[i];
  }
  if (m == 0) return false;
  const size_t choices = std::min<size_t>(m, size_t{attempt} + 1);
  *out = ok[attempt == 0 ? 0 : rng_->Uniform(choices)];
  return true;
}

void Overlay::SendTracked(int64_t now_us, std::span<const uint8_t> bytes, const Contact& to,
                          const base::Endpoint& prev, const NodeId& target, uint8_t attempt,
                          uint64_t key, base::Outbox& out) noexcept {
  RP_ASSERT(bytes.size() <= wire::kDatagramBytesMax);
  RP_ASSERT(key != 0);
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return;  // lost, as a datagram may be; the origin tries again
  std::memcpy(buf.data(), bytes.data(), bytes.size());
  out.Commit(bytes.size(), to.addr);
  if (bytes.size() > kRouteDatagramBytesMax) {
    ++counters_.route_hops_untracked;  // larger than a hop slot (never, as we encode)
    return;
  }
  // The slot already tracking this message (a resend), else a free one.
  uint32_t slot = static_cast<uint32_t>(hops_.size());
  for (uint32_t i = 0; i < hops_.size() && slot == hops_.size(); ++i) {
    if (hops_[i].key == key) slot = i;
  }
  for (uint32_t i = 0; i < hops_.size() && slot == hops_.size(); ++i) {
    if (hops_[i].key == 0) {
      // Out of memory here aborts, as at construction.
      if (hop_bytes_.empty()) hop_bytes_.resize(hops_.size() * kRouteDatagramBytesMax);
      HopSlot& h = hops_[i];
      h = HopSlot{};
      h.key = key;
      h.prev = prev;
      h.target = target;
      h.attempt = attempt;
      h.bytes = static_cast<uint16_t>(bytes.size());
      std::memcpy(hop_bytes_.data() + size_t{i} * kRouteDatagramBytesMax, bytes.data(),
                  bytes.size());
      slot = i;
    }
  }
  if (slot == hops_.size()) {
    ++counters_.route_hops_untracked;  // every slot busy: sent, but not resent by us
    return;
  }
  HopSlot& h = hops_[slot];
  h.to = to;
  h.sent_us = now_us;
  if (h.tries < kRouteHopTriesMax) h.tried[h.tries] = to.id;
  ++h.tries;
  Wake(now_us + config_.route_hop_timeout_us);
}

bool Overlay::OnHopAck(int64_t now_us, const base::Endpoint& from,
                       const wire::Message& msg) noexcept {
  const uint64_t key = msg.ack()->txid();
  if (key == 0) return false;
  for (HopSlot& h : hops_) {
    if (h.key != key || !(h.to.addr == from)) continue;
    if (wire::FromWireId(*msg.ack()->sender()) != h.to.id) return false;
    h.key = 0;
    table_.Touch(h.to.id, from, now_us);
    return true;
  }
  return false;
}

void Overlay::HopTick(int64_t now_us, base::Outbox& out) noexcept {
  for (uint32_t i = 0; i < hops_.size(); ++i) {
    HopSlot& h = hops_[i];
    if (h.key == 0) continue;
    if (now_us - h.sent_us < config_.route_hop_timeout_us) {
      Wake(h.sent_us + config_.route_hop_timeout_us);
      continue;
    }
    // Silent: count it against the hop (two such failures make it stale and probed) and
    // hand the message to the next-nearest node we have not tried.
    ++counters_.route_hops_failed;
    if (table_.Failed(h.to.id)) SendProbe(now_us, h.to, out);
    Contact next;
    const size_t tried = std::min<size_t>(h.tries, kRouteHopTriesMax);
    if (h.tries >= kRouteHopTriesMax ||
        !NextHop(h.target, h.prev, h.attempt, &next, std::span(h.tried, tried))) {
      h.key = 0;  // nobody left to try: the origin's next attempt takes over
      continue;
    }
    const std::span<const uint8_t> bytes(hop_bytes_.data() + size_t{i} * kRouteDatagramBytesMax,
                                         h.bytes);
    ++counters_.route_hops_resent;
    // SendTracked finds this slot by its key and records the new hop.
    SendTracked(now_us, bytes, next, h.prev, h.target, h.attempt, h.key, out);
  }
}

uint64_t Overlay::Route(int64_t now_us, const NodeId& target, RouteKind kind,
                        std::span<const uint8_t> payload, base::Outbox& out) noexcept {
  RP_ASSERT(payload.size() <= wire::kRoutePayloadBytesMax);
  for (uint32_t i = 0; i < routes_.size(); ++i) {
    RouteSlot& r = routes_[i];
    if (r.route_id != 0) continue;
    r.route_id = rng_->Next() | 1;
    r.target = target;
    r.kind = kind;
    r.attempts = 0;
    r.payload_bytes = static_cast<uint16_t>(payload.size());
    r.payload_offset = i * static_cast<uint32_t>(wire::kRoutePayloadBytesMax);
    if (route_payloads_.empty()) {
      route_payloads_.resize(routes_.size() * wire::kRoutePayloadBytesMax);
    }
    std::copy(payload.begin(), payload.end(), route_payloads_.begin() + r.payload_offset);
    const uint64_t id = r.route_id;
    SendRoute(now_us, r, out);
    return id;
  }
  return 0;
}

void Overlay::SendRoute(int64_t now_us, RouteSlot& r, base::Outbox& out) noexcept {
  r.deadline_us = now_us + kRouteTimeoutUs;
  Wake(r.deadline_us);
  Contact next;
  if (r.target == id_ || !NextHop(r.target, base::Endpoint{}, r.attempts, &next)) {
    // We are the nearest node we know: the route ends here.
    RouteResult res;
    res.route_id = r.route_id;
    res.target = r.target;
    res.kind = r.kind;
    res.replied = true;
    res.delivered = r.target == id_;
    res.attempts = static_cast<uint8_t>(r.attempts + 1);
    res.responder = Contact{id_, observed_};
    r.route_id = 0;
    if (config_.events != nullptr) config_.events->OnRouteDone(res);
    return;
  }
  wire::RouteFields f;
  f.route_id = r.route_id;
  f.origin = id_;
  f.target = r.target;
  f.ttl = kRouteTtlDefault;
  f.attempt = r.attempts;
  f.kind = static_cast<uint8_t>(r.kind);
  ++r.attempts;
  alignas(8) uint8_t bytes[wire::kDatagramBytesMax];
  const size_t n = encoder_.Route(
      std::span(bytes), f, std::span(route_payloads_.data() + r.payload_offset, r.payload_bytes));
  RP_ASSERT(n > 0);
  SendTracked(now_us, std::span(bytes, n), next, base::Endpoint{}, r.target, f.attempt,
              HopAckKey(r.route_id, f.attempt), out);
}

wire::Verdict Overlay::OnRoute(int64_t now_us, const base::Endpoint& from,
                               const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::Route* m = msg.route();
  const wire::fb::RouteState* st = m->state();
  const NodeId origin = wire::FromWireId(*m->origin());
  const NodeId target = wire::FromWireId(*m->target());
  if (origin == id_) return wire::Verdict::kBadField;
  // Acknowledge the hop, duplicates included (our first ack may have been lost): the
  // sender then stops resending it elsewhere. The ack is smaller than the route.
  if (std::span<uint8_t> ack = out.Buffer(); !ack.empty()) {
    const size_t n = encoder_.Ack(ack, wire::kNoShardHint,
                                  HopAckKey(m->route_id(), st->attempt()), id_);
    RP_ASSERT(n > 0);
    if (n <= msg.bytes().size()) out.Commit(n, from);
  }
  // Loop guard: each attempt of a route passes a node once.
  if (!seen_.Insert(m->route_id() ^ (uint64_t{st->attempt()} << 56))) {
    ++counters_.routes_duplicate;
    return wire::Verdict::kOk;
  }
  const bool first_hop = st->origin_addr().family() == 0;
  const base::Endpoint origin_addr = first_hop ? from : wire::FromWireAddr(st->origin_addr());
  Contact next;
  if (target != id_ && st->ttl() > 0 && NextHop(target, from, st->attempt(), &next)) {
    // Forward the bytes received; only the hop state changes, in place.
    alignas(8) uint8_t bytes[wire::kDatagramBytesMax];
    std::memcpy(bytes, msg.bytes().data(), msg.bytes().size());
    auto* fwd = flatbuffers::GetMutableRoot<wire::fb::Route>(bytes + wire::kHeaderBytes);
    wire::fb::RouteState* ms = fwd->mutable_state();
    ms->mutate_ttl(static_cast<uint8_t>(st->ttl() - 1));
    ms->mutate_hops(static_cast<uint8_t>(std::min(st->hops() + 1, 255)));
    if (first_hop) ms->mutable_origin_addr() = wire::ToWireAddr(from);
    SendTracked(now_us, std::span(bytes, msg.bytes().size()), next, from, target,
                st->attempt(), HopAckKey(m->route_id(), st->attempt()), out);
    ++counters_.routes_forwarded;
    return wire::Verdict::kOk;
  }
  const bool exact = target == id_;
  const RouteKind kind = static_cast<RouteKind>(m->kind());
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return wire::Verdict::kSendQueueFull;
  const uint8_t hops = static_cast<uint8_t>(std::min(st->hops() + 1, 255));
  const size_t n = encoder_.RouteReply(buf, m->route_id(), id_, origin_addr, hops, exact,
                                       m->kind());
  RP_ASSERT(n > 0);
  if (n <= kAmplificationMax * msg.bytes().size() || RoundTripped(origin, origin_addr)) {
    out.Commit(n, origin_addr);
  }
  ++counters_.routes_answered;
  if (config_.events != nullptr) {
    std::span<const uint8_t> payload;
    if (m->payload() != nullptr) payload = std::span(m->payload()->data(), m->payload()->size());
    config_.events->OnRouted(origin, origin_addr, kind, exact, payload);
  }
  // Hello: ping the origin directly; its answer to our challenge makes it a verified peer.
  if (kind == RouteKind::kHello && exact) AddCandidate(now_us, origin_addr, origin, out);
  return wire::Verdict::kOk;
}

wire::Verdict Overlay::OnRouteReply(int64_t now_us, const base::Endpoint& from,
                                    const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::RouteReply* m = msg.route_reply();
  for (RouteSlot& r : routes_) {
    if (r.route_id == 0 || r.route_id != m->route_id()) continue;
    RouteResult res;
    res.route_id = r.route_id;
    res.target = r.target;
    res.kind = r.kind;
    res.replied = true;
    res.delivered = m->delivered();
    res.hops = m->hops();
    res.attempts = r.attempts;
    res.responder = Contact{wire::FromWireId(*m->responder()), from};
    res.observed = wire::FromWireAddr(*m->origin_addr());
    r.route_id = 0;
    if (config_.events != nullptr) config_.events->OnRouteDone(res);
    if (res.kind == RouteKind::kHello && res.delivered) {
      AddCandidate(now_us, from, res.responder.id, out);
    }
    return wire::Verdict::kOk;
  }
  return wire::Verdict::kUnexpectedReply;
}

// ---------------------------------------------------------------------------------------
// Flood gossip.

void Overlay::FloodTo(std::span<const uint8_t> bytes, const base::Endpoint& not_to,
                      base::Outbox& out) noexcept {
  Contact sent[32];
  size_t n = 0;
  const size_t fanout = std::min<size_t>(config_.gossip_fanout, std::size(sent));
  // Random distinct peers; a few extra draws make up for repeats.
  for (size_t tries = 0; n < fanout && tries < fanout * 3; ++tries) {
    Contact c;
    if (!table_.RandomContact(*rng_, &c)) break;
    if (c.addr == not_to) continue;
    if (std::any_of(sent, sent + n, [&](const Contact& s) { return s.id == c.id; })) continue;
    sent[n++] = c;
    std::span<uint8_t> buf = out.Buffer();
    if (buf.empty()) return;
    std::memcpy(buf.data(), bytes.data(), bytes.size());
    out.Commit(bytes.size(), c.addr);
    ++counters_.gossip_sent;
  }
}

uint64_t Overlay::Broadcast(int64_t now_us, std::span<const uint8_t> payload,
                            base::Outbox& out) noexcept {
  RP_ASSERT(payload.size() <= wire::kGossipPayloadBytesMax);
  const uint64_t msg_id = rng_->Next() | 1;
  seen_.Insert(msg_id ^ kGossipSalt);
  alignas(8) uint8_t bytes[wire::kDatagramBytesMax];
  const size_t n = encoder_.Gossip(std::span(bytes), msg_id, id_, payload);
  RP_ASSERT(n > 0);
  FloodTo(std::span(bytes, n), base::Endpoint{}, out);
  return msg_id;
}

wire::Verdict Overlay::OnGossip(int64_t now_us, const base::Endpoint& from,
                                const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::Gossip* g = msg.gossip();
  if (!seen_.Insert(g->msg_id() ^ kGossipSalt)) {
    ++counters_.gossip_duplicate;
    return wire::Verdict::kOk;
  }
  ++counters_.gossip_delivered;
  if (config_.events != nullptr) {
    std::span<const uint8_t> payload;
    if (g->payload() != nullptr) payload = std::span(g->payload()->data(), g->payload()->size());
    config_.events->OnGossip(wire::FromWireId(*g->origin()), g->msg_id(), payload);
  }
  FloodTo(msg.bytes(), from, out);  // the bytes received, untouched
  return wire::Verdict::kOk;
}

// ---------------------------------------------------------------------------------------
// Timers.

void Overlay::DhtTick(int64_t now_us, base::Outbox& out) noexcept {
  const int64_t slow_us = SlowMarkUs();
  for (uint32_t i = 0; i < rpcs_.size(); ++i) {
    const Rpc& r = rpcs_[i];
    if (r.kind == RpcKind::kFree) continue;
    const int64_t timeout_us = RpcTimeoutUs(r);
    if (now_us - r.sent_us >= timeout_us) {
      OnRpcTimeout(now_us, i, out);
      continue;
    }
    Wake(r.sent_us + timeout_us);
    if (r.kind != RpcKind::kLookup || r.candidate < 0) continue;
    // A first try past the slow mark leaves its alpha slot (LookupParams::slow_frees_slot).
    LookupSlot* l = Slot(r.owner);
    if (l == nullptr || !l->active || !l->lookup.params().slow_frees_slot) continue;
    const Lookup::Candidate& c = l->lookup.candidate(r.candidate);
    if (c.beside || c.attempts != 1) continue;
    if (now_us - r.sent_us < slow_us) {
      Wake(r.sent_us + slow_us);
    } else if (l->lookup.OnSlow(r.candidate)) {
      ++counters_.lookup_slow_moves;
      PumpLookup(now_us, r.owner, out);  // sends the next candidate in its place
    }
  }
  // Lookups past their deadline end with what answered.
  for (uint32_t li = 0; li < lookups_.size(); ++li) {
    const LookupSlot* l = Slot(li);
    if (l == nullptr || !l->active) continue;
    const int64_t deadline_us = l->started_us + config_.lookup_duration_max_us;
    if (now_us >= deadline_us) {
      ExpireLookup(now_us, li, out);
    } else {
      Wake(deadline_us);
    }
  }
  HopTick(now_us, out);
  for (RouteSlot& r : routes_) {
    if (r.route_id == 0) continue;
    if (now_us < r.deadline_us) {
      Wake(r.deadline_us);
    } else if (r.attempts < kRouteAttemptsMax) {
      SendRoute(now_us, r, out);
    } else {
      RouteResult res;
      res.route_id = r.route_id;
      res.target = r.target;
      res.kind = r.kind;
      res.attempts = r.attempts;
      r.route_id = 0;
      if (config_.events != nullptr) config_.events->OnRouteDone(res);
    }
  }
  for (uint32_t i = 0; i < announces_.size(); ++i) {
    AnnounceSlot& a = announces_[i];
    if (!a.active) continue;
    if (now_us >= a.next_us) {
      const uint32_t h = StartLookup(now_us, a.key, LookupKind::kAnnounce, 0, out);
      for (const auto& l : lookups_) {
        if (l != nullptr && l->active && l->handle == h) l->announce = static_cast<uint16_t>(i);
      }
      a.next_us = now_us + (h != 0 ? kRepublishUs : kSecondUs);
    }
    Wake(a.next_us);
  }
  if (now_us >= next_housekeeping_us_) {
    store_.Expire(now_us);
    tokens_.MaybeRotate(*rng_, now_us);
    // Route and hop storage goes back when no route or hop is in use.
    if (std::all_of(routes_.begin(), routes_.end(),
                    [](const RouteSlot& r) { return r.route_id == 0; })) {
      std::vector<uint8_t>().swap(route_payloads_);
    }
    if (std::all_of(hops_.begin(), hops_.end(), [](const HopSlot& h) { return h.key == 0; })) {
      std::vector<uint8_t>().swap(hop_bytes_);
    }
    // Lookup slots idle for a housekeeping period give their storage back.
    for (auto& l : lookups_) {
      if (l != nullptr && !l->active && now_us - l->idle_since_us >= kHousekeepingUs) l.reset();
    }
    next_housekeeping_us_ = now_us + kHousekeepingUs;
  }
  Wake(next_housekeeping_us_);
  if (joined_ && now_us >= next_refresh_us_) {
    next_refresh_us_ = now_us + config_.refresh_interval_us;
    if (refresh_handle_ == 0) {
      refresh_next_bucket_ = 0;
      refresh_remaining_ = kRefreshLookupsMax;
      StartRefresh(now_us, out);
    }
  }
  if (joined_) Wake(next_refresh_us_);
  if (size_retry_) {
    size_retry_ = false;
    ContinueSizeEstimate(now_us, out);
  }
}

}  // namespace ringpeer::dht
