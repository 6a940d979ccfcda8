// The DHT half of Overlay: requests in flight, lookups, providers, routed messages, size
// estimates, gossip and table dumps. The contacts/challenge half is in overlay.cc.
#include <algorithm>
#include <cstring>

#include "base/assert.h"
#include "dht/entries.h"
#include "dht/overlay.h"
#include "flatbuffers/flatbuffers.h"

namespace ringpeer::dht {
namespace {

uint32_t SlotOfTxid(uint64_t txid) noexcept { return static_cast<uint32_t>(txid >> 8) & 0xFFFFFF; }

// Retries of one walk step before the walk jumps to a random peer of ours.
constexpr uint8_t kWalkRetriesMax = 1;


}  // namespace

// ---------------------------------------------------------------------------------------
// Dispatch and replies.

wire::Verdict Overlay::OnDhtMessage(int64_t now_us, const base::Endpoint& from,
                                    const wire::Message& msg, base::Outbox& out) noexcept {
  switch (msg.type()) {
    case wire::MessageType::kFindNode: return OnFindNode(now_us, from, msg, out);
    case wire::MessageType::kGetProviders: return OnGetProviders(now_us, from, msg, out);
    case wire::MessageType::kAnnounce: return OnAnnounceMsg(now_us, from, msg, out);
    case wire::MessageType::kAck:
      if (OnHopAck(now_us, from, msg)) return wire::Verdict::kOk;
      return OnReply(now_us, from, msg, out);
    case wire::MessageType::kNodes:
    case wire::MessageType::kProviders:
    case wire::MessageType::kWalkReply: return OnReply(now_us, from, msg, out);
    case wire::MessageType::kRoute: return OnRoute(now_us, from, msg, out);
    case wire::MessageType::kRouteReply: return OnRouteReply(now_us, from, msg, out);
    case wire::MessageType::kWalk: return OnWalk(now_us, from, msg, out);
    case wire::MessageType::kGossip: return OnGossip(now_us, from, msg, out);
    case wire::MessageType::kDumpRequest: return OnDumpRequest(now_us, from, msg, out);
    default: break;
  }
  return wire::Verdict::kUnknownType;
}

wire::Verdict Overlay::OnReply(int64_t now_us, const base::Endpoint& from,
                               const wire::Message& msg, base::Outbox& out) noexcept {
  const uint64_t txid = wire::RequestTxid(msg);
  const uint32_t slot = SlotOfTxid(txid);
  // Cheap checks first: a request of ours, answered from where we sent it.
  if (slot < kRpcSlotBase || slot - kRpcSlotBase >= rpcs_.size()) {
    return wire::Verdict::kUnexpectedReply;
  }
  Rpc& rpc = rpcs_[slot - kRpcSlotBase];
  if (rpc.kind == RpcKind::kFree || rpc.txid != txid || !(rpc.to.addr == from)) {
    return wire::Verdict::kUnexpectedReply;
  }
  NodeId sender{};
  RpcKind expect = RpcKind::kFree;
  switch (msg.type()) {
    case wire::MessageType::kPong:
      sender = wire::FromWireId(*msg.pong()->responder());
      expect = RpcKind::kProbe;
      break;
    case wire::MessageType::kNodes:
      sender = wire::FromWireId(*msg.nodes()->sender());
      expect = msg.nodes()->chunks() > 0 ? RpcKind::kDump : RpcKind::kLookup;
      break;
    case wire::MessageType::kProviders:
      sender = wire::FromWireId(*msg.providers()->sender());
      expect = RpcKind::kLookup;
      break;
    case wire::MessageType::kAck:
      sender = wire::FromWireId(*msg.ack()->sender());
      expect = RpcKind::kAnnounce;
      break;
    case wire::MessageType::kWalkReply:
      sender = wire::FromWireId(*msg.walk_reply()->sender());
      expect = RpcKind::kWalk;
      break;
    default: return wire::Verdict::kUnexpectedReply;
  }
  // Another node at that address (a restart) does not answer for the one we asked.
  if (rpc.kind != expect || sender != rpc.to.id) return wire::Verdict::kBadField;
  // Each try has its own txid, so the sample is the round trip of the try that answered.
  if (rpc.kind == RpcKind::kLookup || rpc.kind == RpcKind::kProbe) SampleRtt(now_us - rpc.sent_us);
  switch (rpc.kind) {
    case RpcKind::kProbe: FreeRpc(rpc); break;
    case RpcKind::kLookup: OnLookupReply(now_us, rpc, msg, out); break;
    case RpcKind::kAnnounce: {
      AnnounceSlot& a = announces_[rpc.owner];
      FreeRpc(rpc);
      if (a.active && config_.events != nullptr) config_.events->OnAnnounced(a.key, ++a.acks);
      break;
    }
    case RpcKind::kWalk: OnWalkReply(now_us, rpc, msg, out); break;
    case RpcKind::kDump: OnDumpChunk(now_us, from, msg, out); break;
    case RpcKind::kFree: break;
  }
  Learn(now_us, sender, from, out);
  return wire::Verdict::kOk;
}

int Overlay::AllocRpc(int64_t now_us, RpcKind kind, const Contact& to, uint16_t owner,
                      int16_t candidate) noexcept {
  const uint32_t n = static_cast<uint32_t>(rpcs_.size());
  for (uint32_t k = 0; k < n; ++k) {
    const uint32_t i = (rpc_hint_ + k) % n;
    Rpc& r = rpcs_[i];
    if (r.kind != RpcKind::kFree) continue;
    rpc_hint_ = (i + 1) % n;
    r.txid = NewTxid(kRpcSlotBase + i);
    r.sent_us = now_us;
    r.to = to;
    r.kind = kind;
    r.owner = owner;
    r.candidate = candidate;
    Wake(now_us + config_.request_timeout_us);
    ++counters_.requests_sent;
    return static_cast<int>(i);
  }
  ++counters_.rpc_slots_full;
  return -1;
}

void Overlay::SampleRtt(int64_t rtt_us) noexcept {
  rtt_us = std::max<int64_t>(rtt_us, 0);
  if (srtt_us_ == 0) {
    srtt_us_ = std::max<int64_t>(rtt_us, 1);
    rttvar_us_ = rtt_us / 2;
    return;
  }
  // RFC 6298: RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R|, then SRTT <- 7/8 SRTT + 1/8 R.
  const int64_t err = srtt_us_ > rtt_us ? srtt_us_ - rtt_us : rtt_us - srtt_us_;
  rttvar_us_ += (err - rttvar_us_) / 4;
  srtt_us_ = std::max<int64_t>(srtt_us_ + (rtt_us - srtt_us_) / 8, 1);
}

int64_t Overlay::SlowMarkUs() const noexcept {
  const int64_t hi = std::max<int64_t>(config_.request_timeout_us / 2, 1);
  const int64_t lo = std::min(config_.lookup_slow_min_us, hi);
  if (srtt_us_ == 0) return hi;  // nothing measured yet: half the timeout
  return std::clamp(srtt_us_ + 4 * rttvar_us_, lo, hi);
}

int64_t Overlay::RpcTimeoutUs(const Rpc& r) const noexcept {
  if (r.kind != RpcKind::kLookup) return config_.request_timeout_us;
  const LookupSlot* l = Slot(r.owner);
  if (l == nullptr || !l->active || r.candidate < 0) return config_.request_timeout_us;
  const Lookup::Candidate& c = l->lookup.candidate(r.candidate);
  if (c.attempts < 2 || !l->lookup.params().slow_frees_slot) return config_.request_timeout_us;
  return std::min(config_.request_timeout_us, 2 * SlowMarkUs());
}

void Overlay::OnRpcTimeout(int64_t now_us, uint32_t slot, base::Outbox& out) noexcept {
  const Rpc rpc = rpcs_[slot];
  FreeRpc(rpcs_[slot]);
  ++counters_.requests_timed_out;
  switch (rpc.kind) {
    case RpcKind::kProbe:
      table_.ProbeFailed(rpc.to.id, now_us);
      if (table_.Find(rpc.to.id) == nullptr) ++counters_.evictions;
      break;
    case RpcKind::kLookup: {
      LookupSlot* slot = Slot(rpc.owner);
      if (slot == nullptr || !slot->active) break;
      LookupSlot& l = *slot;
      if (l.lookup.OnTimeout(rpc.candidate)) {
        SendLookupRequest(now_us, rpc.owner, rpc.candidate, out);
      } else if (table_.Failed(rpc.to.id)) {
        SendProbe(now_us, rpc.to, out);
      }
      PumpLookup(now_us, rpc.owner, out);
      break;
    }
    case RpcKind::kWalk: {
      if (rpc.owner >= walks_.size() || !walks_[rpc.owner].active) break;
      WalkSlot& w = walks_[rpc.owner];
      const bool proposal = w.wait == WalkWait::kProposal;
      if (++w.retries <= kWalkRetriesMax) {
        const Contact to = proposal ? w.proposed : w.at;
        const NodeId prev = w.at.id;
        if (SendWalk(now_us, rpc.owner, to, proposal ? &prev : nullptr, out)) break;
      }
      // Given up on: a silent proposal is a rejection (loss is the same both ways, so
      // this keeps the walk reversible); a silent current node strands the walk, which
      // starts again at us with a new burn-in.
      if (proposal) {
        ResolveProposal(rpc.owner, /*answered=*/false, false, 0);
      } else {
        w.at = Contact{id_, base::Endpoint{}};
        w.degree = static_cast<uint32_t>(table_.LiveSize());
        w.next_count = 0;
        w.steps = 0;
        w.segment = walk_segments_++;
      }
      w.wait = WalkWait::kNothing;
      w.retries = 0;
      StepWalk(now_us, rpc.owner, out);
      break;
    }
    case RpcKind::kAnnounce:
    case RpcKind::kDump:
    case RpcKind::kFree: break;
  }
}

void Overlay::SendProbe(int64_t now_us, const Contact& c, base::Outbox& out) noexcept {
  const int r = AllocRpc(now_us, RpcKind::kProbe, c, 0, -1);
  if (r < 0) return table_.CancelProbe(c.id);
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return;  // counted as lost: the probe times out like a lost datagram
  const size_t n =
      encoder_.Ping(buf, wire::kNoShardHint, rpcs_[r].txid, id_, nullptr, config_.client);
  RP_ASSERT(n > 0);
  out.Commit(n, c.addr);
  ++counters_.probes_sent;
}

// ---------------------------------------------------------------------------------------
// Learning peers.

bool Overlay::RoundTripped(const NodeId& id, const base::Endpoint& addr) const noexcept {
  const int s = Find(addr);
  if (s >= 0 && peers_[s].state == State::kVerified) return true;
  const RoutingEntry* e = table_.Find(id);
  return e != nullptr && e->addr == addr;
}

void Overlay::Learn(int64_t now_us, const NodeId& id, const base::Endpoint& addr,
                    base::Outbox& out) noexcept {
  if (id == id_ || table_.Touch(id, addr, now_us)) return;
  if (Find(addr) >= 0 || !table_.Wants(id, addr)) return;
  AddCandidate(now_us, addr, id, out);
}

void Overlay::AddCandidate(int64_t now_us, const base::Endpoint& addr, const NodeId& id,
                           base::Outbox& out) noexcept {
  if (id == id_ || !addr.valid()) return;
  const int slot = FindOrAdd(addr, now_us);
  if (slot < 0) return;
  Peer& p = peers_[slot];
  if (p.state == State::kCandidate) {
    p.id = id;
    MaybeChallenge(static_cast<uint32_t>(slot), now_us, out);
    if (p.pending_txid == 0) Wake(now_us);
  } else if (p.state == State::kVerified && p.id == id) {
    OfferVerified(now_us, id, addr, p.bootstrap, out);
  }
}

void Overlay::OfferVerified(int64_t now_us, const NodeId& id, const base::Endpoint& addr,
                            bool pinned, base::Outbox& out) noexcept {
  const AddOutcome o = table_.Add(id, addr, now_us, pinned);
  if (o.probe) SendProbe(now_us, o.probe_target, out);
  if (!joined_ && table_.size() > 0) {
    // Join: look ourselves up (fills the near buckets and tells our neighbours about us),
    // then refresh the sparse far buckets one lookup at a time.
    joined_ = true;
    refresh_next_bucket_ = 0;
    refresh_remaining_ = kRefreshLookupsMax;
    refresh_handle_ = StartLookup(now_us, id_, LookupKind::kRefresh, 1, out);
  }
}

void Overlay::StartRefresh(int64_t now_us, base::Outbox& out) noexcept {
  refresh_handle_ = 0;
  while (refresh_remaining_ > 0 && refresh_next_bucket_ + 1 < table_.depth()) {
    const uint32_t b = refresh_next_bucket_++;
    if (table_.BucketSize(b) >= table_.config().bucket_size) continue;
    --refresh_remaining_;
    const NodeId target = RandomIdWithPrefix(id_, static_cast<int>(b), *rng_);
    const uint32_t h = StartLookup(now_us, target, LookupKind::kRefresh, 1, out);
    // A lookup that finished at once (no peers) does not continue the chain.
    if (h != 0) {
      for (const auto& l : lookups_) {
        if (l != nullptr && l->active && l->handle == h) refresh_handle_ = h;
      }
      if (refresh_handle_ != 0) return;
    }
  }
}

void Overlay::Restore(int64_t now_us, std::span<const SavedContact> saved) noexcept {
  for (const SavedContact& s : saved) {
    if (s.contact.id == id_ || !s.contact.addr.valid()) continue;
    const int slot = FindOrAdd(s.contact.addr, now_us);
    if (slot < 0) break;  // the contacts table is full of candidates: enough to rejoin
    if (peers_[slot].state == State::kCandidate) peers_[slot].id = s.contact.id;
  }
  next_wake_us_ = now_us;
}

void Overlay::PublishSnapshot(int64_t now_us, TableSnapshot* out) const noexcept {
  out->Clear(now_us);
  table_.ForEach([&](const RoutingEntry& e) {
    if (e.failures < kStaleFailures) out->Push(Contact{e.id, e.addr});
  });
}

void Overlay::PublishSnapshot(int64_t now_us, DhtSnapshot* out) const noexcept {
  PublishSnapshot(now_us, &out->table);
  out->table.Seal();
  out->providers.CopyFrom(store_);
  out->tokens = tokens_;
}

// ---------------------------------------------------------------------------------------
// Answering requests.

wire::Verdict Overlay::OnFindNode(int64_t now_us, const base::Endpoint& from,
                                  const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::FindNode* req = msg.find_node();
  const NodeId sender = wire::FromWireId(*req->sender());
  if (sender == id_) return wire::Verdict::kBadField;
  Contact closest[wire::kNodesPerMessageMax];
  // `count` is at most kNodesPerMessageMax (Decode drops more as kBadField); 0 is a valid
  // request for nothing and gets a Nodes answer with no entries (it still proves we are
  // alive and lets the requester learn our id), never a drop.
  const size_t want = std::min<size_t>(req->count(), wire::kNodesPerMessageMax);
  const size_t n = table_.Closest(wire::FromWireId(*req->target()), std::span(closest, want));
  bool trimmed = false;
  const wire::Verdict v = AnswerFindNode(id_, from, msg, std::span(closest, n),
                                         RoundTripped(sender, from), encoder_, out, &trimmed);
  if (v != wire::Verdict::kOk) return v;
  ++counters_.requests_answered;
  if (trimmed) ++counters_.replies_trimmed;
  Learn(now_us, sender, from, out);
  return wire::Verdict::kOk;
}

wire::Verdict Overlay::OnGetProviders(int64_t now_us, const base::Endpoint& from,
                                      const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::GetProviders* req = msg.get_providers();
  const NodeId sender = wire::FromWireId(*req->sender());
  if (sender == id_) return wire::Verdict::kBadField;
  const NodeId key = wire::FromWireId(*req->key());
  // `count` bounds the providers listed (at most kProvidersPerMessageMax: Decode drops more
  // as kBadField); 0 asks for none. The closer nodes are not what `count` asks about: they
  // let the requester's lookup go on, so they are always up to kProviderNodesPerMessageMax.
  Contact prov[wire::kProvidersPerMessageMax];
  Contact near[wire::kProviderNodesPerMessageMax];
  const size_t np = store_.Get(
      key, now_us, std::span(prov, std::min<size_t>(req->count(), std::size(prov))));
  const size_t nn = table_.Closest(key, near);
  bool trimmed = false;
  const wire::Verdict v =
      AnswerProviders(id_, from, msg, std::span(prov, np), std::span(near, nn),
                      tokens_.Make(from), RoundTripped(sender, from), encoder_, out, &trimmed);
  if (v != wire::Verdict::kOk) return v;
  if (trimmed) ++counters_.replies_trimmed;
  ++counters_.requests_answered;
  Learn(now_us, sender, from, out);
  return wire::Verdict::kOk;
}

wire::Verdict Overlay::OnAnnounceMsg(int64_t now_us, const base::Endpoint& from,
                                     const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::Announce* a = msg.announce();
  const NodeId sender = wire::FromWireId(*a->sender());
  wire::Token token;
  std::memcpy(token.data(), a->token()->b()->Data(), token.size());
  if (!tokens_.Check(from, token)) {
    ++counters_.tokens_rejected;
    return wire::Verdict::kBadField;
  }
  if (!store_.Add(wire::FromWireId(*a->key()), Contact{sender, from}, now_us)) {
    ++counters_.announces_refused;
    return wire::Verdict::kTableFull;
  }
  ++counters_.announces_stored;
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return wire::Verdict::kSendQueueFull;
  const size_t n = encoder_.Ack(buf, static_cast<uint32_t>(a->txid() & 0xFF), a->txid(), id_);
  RP_ASSERT(n > 0);
  RP_ASSERT(n <= msg.bytes().size() * kAmplificationMax);
  out.Commit(n, from);
  Learn(now_us, sender, from, out);
  return wire::Verdict::kOk;
}

wire::Verdict Overlay::OnWalk(int64_t now_us, const base::Endpoint& from,
                              const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::Walk* w = msg.walk();
  const NodeId sender = wire::FromWireId(*w->sender());
  if (sender == id_) return wire::Verdict::kBadField;
  // Independent uniform picks (with repetition): the walk proposes them one by one.
  wire::PeerInfo next[wire::kWalkNextMax];
  size_t n = 0;
  Contact c;
  for (size_t k = 0; k < std::size(next); ++k) {
    if (table_.RandomContact(*rng_, &c)) next[n++] = wire::PeerInfo{c.id, c.addr};
  }
  const bool held = w->prev() != nullptr && table_.HoldsLive(wire::FromWireId(*w->prev()));
  const uint16_t degree = static_cast<uint16_t>(std::min<size_t>(table_.LiveSize(), 0xFFFF));
  bool trimmed = false;
  const wire::Verdict v = AnswerWalk(id_, from, msg, std::span(next, n), degree, held,
                                     RoundTripped(sender, from), encoder_, out, &trimmed);
  if (v != wire::Verdict::kOk) return v;
  if (trimmed) {
    ++counters_.replies_trimmed;
    return wire::Verdict::kOk;
  }
  ++counters_.requests_answered;
  Learn(now_us, sender, from, out);
  return wire::Verdict::kOk;
}

wire::Verdict Overlay::OnDumpRequest(int64_t now_us, const base::Endpoint& from,
                                     const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::DumpRequest* d = msg.dump_request();
  // A dump is ~30 datagrams: only for peers with a round trip, and only a few a second.
  if (!RoundTripped(wire::FromWireId(*d->sender()), from)) {
    ++counters_.dumps_refused;
    return wire::Verdict::kUnverifiedSender;
  }
  if (!dumps_.TryTake(now_us)) {
    ++counters_.dumps_refused;
    return wire::Verdict::kRateLimited;
  }
  const size_t per = wire::kNodesPerMessageMax;
  const size_t chunks = std::min<size_t>(255, std::max<size_t>(1, (table_.size() + per - 1) / per));
  wire::PeerInfo list[wire::kNodesPerMessageMax];
  size_t n = 0, chunk = 0;
  const uint32_t hint = static_cast<uint32_t>(d->txid() & 0xFF);
  auto flush = [&] {
    if (chunk >= chunks) return;
    std::span<uint8_t> buf = out.Buffer();
    if (!buf.empty()) {
      const size_t bytes = encoder_.Nodes(buf, hint, d->txid(), id_, std::span(list, n),
                                          static_cast<uint8_t>(chunk),
                                          static_cast<uint8_t>(chunks));
      RP_ASSERT(bytes > 0);
      out.Commit(bytes, from);
    }
    ++chunk;
    n = 0;
  };
  table_.ForEach([&](const RoutingEntry& e) {
    list[n++] = wire::PeerInfo{e.id, e.addr};
    if (n == per) flush();
  });
  if (n > 0 || chunk == 0) flush();
  ++counters_.dumps_answered;
  return wire::Verdict::kOk;
}

void Overlay::OnDumpChunk(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                          base::Outbox& out) noexcept {
  const wire::fb::Nodes* m = msg.nodes();
  const uint32_t slot = SlotOfTxid(m->txid()) - kRpcSlotBase;
  // More chunks may follow: keep the request open until the last one.
  if (m->chunk() + 1 >= m->chunks()) {
    FreeRpc(rpcs_[slot]);
  } else {
    rpcs_[slot].sent_us = now_us;
  }
  Contact nodes[wire::kNodesPerMessageMax];
  const size_t n = ReadEntries(m->nodes(), id_, nodes);
  if (config_.events != nullptr) config_.events->OnDumpChunk(from, std::span(nodes, n));
  // Second-hand entries: each must still answer our challenge before it enters the table.
  for (size_t i = 0; i < n; ++i) {
    if (Find(nodes[i].addr) < 0 && table_.Wants(nodes[i].id, nodes[i].addr)) {
      AddCandidate(now_us, nodes[i].addr, nodes[i].id, out);
    }
  }
}

bool Overlay::RequestDump(int64_t now_us, const base::Endpoint& addr, base::Outbox& out) noexcept {
  const int s = Find(addr);
  if (s < 0 || peers_[s].state != State::kVerified) return false;
  const int r = AllocRpc(now_us, RpcKind::kDump, Contact{peers_[s].id, addr}, 0, -1);
  if (r < 0) return false;
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return true;  // times out like a lost datagram
  const size_t n = encoder_.DumpRequest(buf, wire::kNoShardHint, rpcs_[r].txid, id_);
  RP_ASSERT(n > 0);
  out.Commit(n, addr);
  return true;
}

}  // namespace ringpeer::dht
