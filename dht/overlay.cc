#include "dht/overlay.h"

#include <algorithm>

#include "base/assert.h"

namespace ringpeer::dht {
namespace {

// Txid layout: random high 32 bits (unguessable), slot in bits 8..31, shard in bits 0..7.
constexpr uint32_t kSlotsMax = 1u << 24;
// A timed-out ping is retried this much later (the shard's tick period).
constexpr int64_t kRetryDelayUs = 100'000;

uint32_t SlotOfTxid(uint64_t txid) noexcept { return static_cast<uint32_t>(txid >> 8) & 0xFFFFFF; }

}  // namespace

Overlay::Overlay(const wire::KeyPair& identity, const OverlayConfig& config, base::Rng* rng,
                 int64_t now_us)
    : identity_(identity),
      id_(wire::NodeIdOf(identity.public_key)),
      config_(config),
      rng_(rng),
      proof_(config.proof != nullptr ? config.proof : &ed25519_),
      table_(id_, config.routing),
      store_(config.providers, rng->Next()),
      tokens_(*rng, now_us),
      seen_(config.seen_max),
      dumps_(kDumpsPerSecond, kDumpsPerSecond, now_us),
      new_peer_challenges_(kNewPeerChallengesPerSecond, kNewPeerChallengeBurst, now_us),
      encoder_(config.encoder != nullptr ? *config.encoder : own_encoder_) {
  RP_ASSERT(config_.peers_max > 0);
  RP_ASSERT(config_.peers_max < kRpcSlotBase);
  RP_ASSERT(config_.rpcs_max > 0);
  RP_ASSERT(config_.rpcs_max < kSlotsMax - kRpcSlotBase);
  RP_ASSERT(config_.lookups_max > 0);
  RP_ASSERT(config_.lookups_max < 0xFFFF);
  RP_ASSERT(config_.announces_max < 0xFFFF);
  rpcs_.resize(config_.rpcs_max);
  lookups_.resize(config_.lookups_max);  // the slots' storage comes with their lookups
  announces_.resize(config_.announces_max);
  routes_.resize(config_.routes_max);
  // route_payloads_ and hop_bytes_ are allocated when the first route or hop needs them.
  hops_.resize(config_.route_hops_max);
  size_samples_.reserve(config_.size_lookups);
  next_refresh_us_ = now_us + config_.refresh_interval_us;
  next_housekeeping_us_ = now_us + kHousekeepingUs;
  next_wake_us_ = now_us;
  RP_ASSERT(config_.bootstrap.size() <= config_.peers_max);
  peers_.resize(config_.peers_max);
  free_.reserve(config_.peers_max);
  for (uint32_t i = config_.peers_max; i > 0; --i) free_.push_back(i - 1);
  // Reserved up front so that inserts never rehash into new memory on the hot path.
  by_addr_.reserve(config_.peers_max);
  for (const base::Endpoint& b : config_.bootstrap) {
    int slot = FindOrAdd(b, now_us);
    RP_ASSERT(slot >= 0);
    peers_[slot].bootstrap = true;
    peers_[slot].next_ping_us = now_us;  // first Tick pings it
  }
}

bool Overlay::AddBootstrap(int64_t now_us, const base::Endpoint& addr) noexcept {
  if (Find(addr) >= 0) return true;
  // Pinned for good, so bounded: invites name a few relays each, and a crafted one must
  // not fill the table with addresses we would ping forever.
  if (added_bootstraps_ >= kAddedBootstrapsMax) return false;
  ++added_bootstraps_;
  const int slot = FindOrAdd(addr, now_us);
  if (slot < 0) return false;
  peers_[slot].bootstrap = true;
  peers_[slot].next_ping_us = now_us;
  Wake(now_us);
  return true;
}

int Overlay::Find(const base::Endpoint& addr) const noexcept {
  auto it = by_addr_.find(addr);
  return it == by_addr_.end() ? -1 : static_cast<int>(it->second);
}

int Overlay::FindOrAdd(const base::Endpoint& addr, int64_t now_us) noexcept {
  int slot = Find(addr);
  if (slot >= 0) return slot;
  if (free_.empty()) {
    // Full: make room by forgetting the verified contact heard from least recently (it
    // keeps its place in the routing table; the contacts table is only for sessions).
    int victim = -1;
    for (uint32_t i = 0; i < peers_.size(); ++i) {
      const Peer& p = peers_[i];
      if (p.state != State::kVerified || p.bootstrap || p.pending_txid != 0) continue;
      if (victim < 0 || p.last_heard_us < peers_[victim].last_heard_us) victim = int(i);
    }
    if (victim < 0) return -1;
    Forget(static_cast<uint32_t>(victim));
  }
  const uint32_t s = free_.back();
  free_.pop_back();
  Peer& p = peers_[s];
  RP_ASSERT(p.state == State::kEmpty);
  p = Peer{};
  p.state = State::kCandidate;
  p.addr = addr;
  p.next_ping_us = now_us;
  by_addr_.emplace(addr, s);
  return static_cast<int>(s);
}

void Overlay::Forget(uint32_t slot) noexcept {
  Peer& p = peers_[slot];
  RP_ASSERT(p.state != State::kEmpty);
  if (p.bootstrap) {
    // Pinned: demote and keep retrying with back-off.
    p.state = State::kCandidate;
    p.pending_txid = 0;
    p.failures = 0;
    p.next_ping_us = p.pending_sent_us + p.retry_us;
    p.retry_us = std::min(p.retry_us * 2, kBootstrapRetryMaxUs);
    return;
  }
  by_addr_.erase(p.addr);
  p = Peer{};
  free_.push_back(slot);
  ++counters_.peers_forgotten;
}

void Overlay::SendPing(uint32_t slot, bool challenge, int64_t now_us, base::Outbox& out) noexcept {
  Peer& p = peers_[slot];
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return;  // retried on a later tick
  const uint64_t txid = (rng_->Next() & 0xFFFFFFFF00000000ull) | (uint64_t{slot} << 8) |
                        config_.shard_index;
  p.has_challenge = challenge;
  if (challenge) rng_->Fill(p.challenge);
  const size_t n = encoder_.Ping(buf, wire::kNoShardHint, txid, id_,
                                 challenge ? &p.challenge : nullptr, config_.client);
  RP_ASSERT(n > 0);
  out.Commit(n, p.addr);
  p.pending_txid = txid;
  p.pending_sent_us = now_us;
  Wake(now_us + kRequestTimeoutUs);
  ++counters_.pings_sent;
  if (challenge) ++counters_.challenges_sent;
}

void Overlay::MaybeChallenge(uint32_t slot, int64_t now_us, base::Outbox& out) noexcept {
  Peer& p = peers_[slot];
  if (p.pending_txid != 0 || now_us < p.next_ping_us) return;
  if (!p.bootstrap && !new_peer_challenges_.TryTake(now_us)) {
    ++counters_.new_peers_deferred;
    Wake(now_us + kSecondUs / kNewPeerChallengesPerSecond);
    return;
  }
  SendPing(slot, /*challenge=*/true, now_us, out);
}

void Overlay::OnPingSeen(int64_t now_us, const base::Endpoint& from, const wire::NodeId& claimed,
                         base::Outbox& out, bool client) noexcept {
  if (claimed == id_) return;  // our own ping reflected back, or a liar; either way ignore
  if (client) return;          // answered (the pong), never taken into the table
  if (table_.Touch(claimed, from, now_us)) return;  // a routing-table peer, already proven
  // A stranger costs us a challenge only if the routing table would take it.
  if (Find(from) < 0 && !table_.Wants(claimed, from)) return;
  const int slot = FindOrAdd(from, now_us);
  if (slot < 0) return;
  Peer& p = peers_[slot];
  if (p.state == State::kVerified) {
    if (p.id == claimed) {
      p.last_heard_us = now_us;
      return;
    }
    // Same address, another identity (a restarted node): prove it again.
    p.state = State::kCandidate;
    p.pending_txid = 0;
  }
  if (p.state == State::kCandidate) {
    p.id = claimed;
    MaybeChallenge(static_cast<uint32_t>(slot), now_us, out);
  }
}

void Overlay::OnVerified(uint32_t slot, const wire::NodeId& id, int64_t now_us,
                         base::Outbox& out) noexcept {
  Peer& p = peers_[slot];
  const bool first = p.state != State::kVerified;
  // One id, one entry: an id verified at a new address replaces its old entry.
  if (first) {
    for (uint32_t i = 0; i < peers_.size(); ++i) {
      if (i != slot && peers_[i].state == State::kVerified && peers_[i].id == id &&
          !peers_[i].bootstrap) {
        Forget(i);
      }
    }
  }
  p.state = State::kVerified;
  p.id = id;
  p.failures = 0;
  p.retry_us = kBootstrapRetryUs;
  p.last_heard_us = now_us;
  p.next_ping_us = now_us + config_.ping_interval_us;
  Wake(p.next_ping_us);
  if (first) {
    ++counters_.peers_verified;
    if (config_.peers_interval_us > 0) SendPeers(slot, now_us, out);
    if (!p.client) OfferVerified(now_us, id, p.addr, p.bootstrap, out);
  }
}

bool Overlay::AdmitVerifiedForTesting(int64_t now_us, const NodeId& id,
                                      const base::Endpoint& addr, base::Outbox& out) noexcept {
  if (id == id_ || !addr.valid()) return false;
  const int slot = FindOrAdd(addr, now_us);
  if (slot < 0) return false;
  OnVerified(static_cast<uint32_t>(slot), id, now_us, out);
  return true;
}

wire::Verdict Overlay::OnPong(int64_t now_us, const base::Endpoint& from,
                              const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::Pong* pong = msg.pong();
  const uint32_t slot = SlotOfTxid(pong->txid());
  if (slot >= kRpcSlotBase) return OnReply(now_us, from, msg, out);  // a probe's pong
  // Cheap checks first: is this the answer to a request of ours, from where we sent it?
  if (slot >= peers_.size()) return wire::Verdict::kUnexpectedReply;
  Peer& p = peers_[slot];
  if (p.state == State::kEmpty || p.pending_txid != pong->txid() || !(p.addr == from)) {
    return wire::Verdict::kUnexpectedReply;
  }
  const wire::NodeId responder = wire::FromWireId(*pong->responder());
  p.pending_txid = 0;
  if (p.has_challenge) {
    if (pong->public_key() == nullptr) {
      OnFailedProof(slot, now_us);
      return wire::Verdict::kBadField;
    }
    const wire::PublicKey key = wire::FromWireId(*pong->public_key());
    if (wire::NodeIdOf(key) != responder) {
      OnFailedProof(slot, now_us);
      return wire::Verdict::kBadSignature;
    }
    // The expensive step, last.
    if (!proof_->Verify(key, p.challenge, wire::FromWireSig(*pong->signature()))) {
      OnFailedProof(slot, now_us);
      return wire::Verdict::kBadSignature;
    }
    if (responder == id_) {  // we bootstrapped from ourselves
      p.bootstrap = false;
      Forget(slot);
      return wire::Verdict::kOk;
    }
    p.client = pong->client();
    OnVerified(slot, responder, now_us, out);
  } else {
    if (p.state != State::kVerified || p.id != responder) return wire::Verdict::kBadField;
    p.failures = 0;
    p.last_heard_us = now_us;
    p.next_ping_us = now_us + config_.ping_interval_us;
    table_.Touch(responder, from, now_us);
  }
  observed_ = wire::FromWireAddr(*pong->observed());
  return wire::Verdict::kOk;
}

wire::Verdict Overlay::OnPeers(int64_t now_us, const base::Endpoint& from,
                               const wire::Message& msg, base::Outbox& out) noexcept {
  const int slot = Find(from);
  if (slot < 0 || peers_[slot].state != State::kVerified) {
    return wire::Verdict::kUnverifiedSender;
  }
  Peer& sender = peers_[slot];
  if (wire::FromWireId(*msg.peers()->sender()) != sender.id) return wire::Verdict::kBadField;
  sender.last_heard_us = now_us;
  const auto* list = msg.peers()->peers();
  if (list == nullptr) return wire::Verdict::kOk;
  for (const wire::fb::PeerEntry* e : *list) {
    const wire::NodeId id = wire::FromWireId(e->id());
    const base::Endpoint addr = wire::FromWireAddr(e->addr());
    if (id == id_ || !addr.valid() || addr.port == 0) continue;
    if (Find(addr) >= 0 || !table_.Wants(id, addr)) continue;
    const int s = FindOrAdd(addr, now_us);
    if (s < 0) return wire::Verdict::kTableFull;
    peers_[s].id = id;
    MaybeChallenge(static_cast<uint32_t>(s), now_us, out);
  }
  return wire::Verdict::kOk;
}

wire::Verdict Overlay::OnMessage(int64_t now_us, const base::Endpoint& from,
                                 const wire::Message& msg, base::Outbox& out) noexcept {
  switch (msg.type()) {
    case wire::MessageType::kPong:
      return OnPong(now_us, from, msg, out);
    case wire::MessageType::kPeers:
      return OnPeers(now_us, from, msg, out);
    case wire::MessageType::kPing:
      break;  // answered by PingResponder; reported through OnPingSeen
    default:
      return OnDhtMessage(now_us, from, msg, out);
  }
  return wire::Verdict::kUnknownType;
}

void Overlay::SendPeers(uint32_t slot, int64_t now_us, base::Outbox& out) noexcept {
  Peer& to = peers_[slot];
  to.next_peers_us = now_us + config_.peers_interval_us;
  wire::PeerInfo list[wire::kPeersPerMessageMax];
  size_t n = 0;
  // Start at a random slot so that, over time, every live peer gets advertised.
  const size_t size = peers_.size();
  const size_t start = rng_->Uniform(size);
  for (size_t k = 0; k < size && n < wire::kPeersPerMessageMax; ++k) {
    const size_t i = (start + k) % size;
    const Peer& p = peers_[i];
    if (i == slot || p.client || !IsLive(p, now_us)) continue;
    list[n++] = wire::PeerInfo{p.id, p.addr};
  }
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return;
  const size_t bytes = encoder_.Peers(buf, wire::kNoShardHint,
                                      (rng_->Next() & ~0xFFull) | config_.shard_index, id_,
                                      std::span(list, n));
  RP_ASSERT(bytes > 0);
  out.Commit(bytes, to.addr);
  ++counters_.peers_messages_sent;
}

void Overlay::OnFailedProof(uint32_t slot, int64_t now_us) noexcept {
  Peer& p = peers_[slot];
  ++counters_.proofs_failed;
  if (p.state == State::kVerified) {
    // A verified peer's address now answers for another key: it is not that peer any
    // more. Prove it again from scratch, with the back-off below.
    p.state = State::kCandidate;
  }
  // An honest node never fails a proof, so this is a forger (or a corrupted datagram).
  // Back off exponentially and forget it after kFailuresMax: without this, a forger
  // answering every challenge would cost us a verification per tick, forever.
  ++p.failures;
  if (p.failures >= kFailuresMax) {
    p.pending_sent_us = now_us;  // a pinned peer's back-off starts now
    Forget(slot);
    return;
  }
  p.next_ping_us = now_us + p.retry_us;
  p.retry_us = std::min(p.retry_us * 2, kBootstrapRetryMaxUs);
  Wake(p.next_ping_us);
}

void Overlay::OnTimeout(uint32_t slot, int64_t now_us) noexcept {
  Peer& p = peers_[slot];
  p.pending_txid = 0;
  ++p.failures;
  if (p.failures >= kFailuresMax) {
    Forget(slot);
    return;
  }
  // Retry soon; a candidate retries through the challenge budget.
  p.next_ping_us = now_us;
}

void Overlay::Tick(int64_t now_us, base::Outbox& out) noexcept {
  if (now_us < next_wake_us_) return;  // nothing is due (callers may tick on a period)
  next_wake_us_ = now_us + kHousekeepingUs;
  for (uint32_t i = 0; i < peers_.size(); ++i) {
    Peer& p = peers_[i];
    if (p.state == State::kEmpty) continue;
    if (p.pending_txid != 0) {
      if (now_us - p.pending_sent_us >= kRequestTimeoutUs) {
        OnTimeout(i, now_us);
        Wake(now_us + kRetryDelayUs);  // retried on a later tick, not in this one
      } else {
        Wake(p.pending_sent_us + kRequestTimeoutUs);
      }
      continue;
    }
    if (p.state == State::kCandidate) {
      MaybeChallenge(i, now_us, out);
      if (p.pending_txid == 0) Wake(std::max(p.next_ping_us, now_us + 1000));
      continue;
    }
    if (now_us >= p.next_ping_us) {
      SendPing(i, /*challenge=*/false, now_us, out);
    } else if (config_.peers_interval_us > 0 && now_us >= p.next_peers_us) {
      SendPeers(i, now_us, out);
    }
    Wake(p.next_ping_us);
    if (config_.peers_interval_us > 0) Wake(p.next_peers_us);
  }
  DhtTick(now_us, out);
}

std::vector<PeerStatus> Overlay::Snapshot(int64_t now_us) const {
  std::vector<PeerStatus> out;
  for (const Peer& p : peers_) {
    if (p.state == State::kEmpty) continue;
    const RoutingEntry* e = p.state == State::kVerified ? table_.Find(p.id) : nullptr;
    out.push_back(PeerStatus{p.id, p.addr, p.state == State::kVerified, IsLive(p, now_us),
                             p.bootstrap, p.last_heard_us, e != nullptr && e->addr == p.addr});
  }
  return out;
}

size_t Overlay::LivePeers(int64_t now_us) const noexcept {
  return static_cast<size_t>(
      std::count_if(peers_.begin(), peers_.end(), [&](const Peer& p) { return IsLive(p, now_us); }));
}

bool Overlay::ProvedHost(const base::Endpoint& addr, int64_t now_us,
                         int64_t window_us) const noexcept {
  const int slot = Find(addr);
  if (slot >= 0) {
    const Peer& p = peers_[static_cast<uint32_t>(slot)];
    if (p.state == State::kVerified && now_us - p.last_heard_us < window_us) return true;
  }
  return table_.HeardAtHost(addr, now_us, window_us);
}

size_t Overlay::VerifiedPeers() const noexcept {
  return static_cast<size_t>(std::count_if(peers_.begin(), peers_.end(), [](const Peer& p) {
    return p.state == State::kVerified;
  }));
}

}  // namespace ringpeer::dht
