#include "wire/encode.h"

#include <cstring>

#include "base/assert.h"
#include "wire/message.h"

namespace ringpeer::wire {

fb::Addr ToWireAddr(const base::Endpoint& e) noexcept {
  fb::Addr a;
  std::memcpy(a.mutable_ip()->Data(), e.ip.data(), 16);
  a.mutate_port(e.port);
  a.mutate_family(static_cast<uint8_t>(e.family));
  return a;
}

base::Endpoint FromWireAddr(const fb::Addr& a) noexcept {
  base::Endpoint e;
  if (a.family() != 4 && a.family() != 6) return e;
  e.family = static_cast<base::Endpoint::Family>(a.family());
  e.port = a.port();
  std::memcpy(e.ip.data(), a.ip()->Data(), 16);
  if (e.is_v4()) std::memset(e.ip.data() + 4, 0, 12);
  return e;
}

fb::Id256 ToWireId(const Hash256& id) noexcept {
  fb::Id256 w;
  std::memcpy(w.mutable_b()->Data(), id.data(), 32);
  return w;
}

Hash256 FromWireId(const fb::Id256& id) noexcept {
  Hash256 h;
  std::memcpy(h.data(), id.b()->Data(), 32);
  return h;
}

Signature FromWireSig(const fb::Sig512& sig) noexcept {
  Signature s;
  std::memcpy(s.data(), sig.b()->Data(), 64);
  return s;
}

size_t Encoder::Finish(std::span<uint8_t> out, MessageType type, uint32_t shard_hint) noexcept {
  const size_t body = fbb_.GetSize();
  if (body > kBodyBytesMax || out.size() < kHeaderBytes + body) return 0;
  Header h{kMagic, kVersion, static_cast<uint8_t>(type), kFlagNone, shard_hint,
           static_cast<uint16_t>(body), 0};
  StoreHeader(out.data(), h);
  std::memcpy(out.data() + kHeaderBytes, fbb_.GetBufferPointer(), body);
  return kHeaderBytes + body;
}

size_t Encoder::Ping(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                     const NodeId& sender, const Hash256* challenge) noexcept {
  fbb_.Clear();
  fb::Id256 s = ToWireId(sender);
  fb::Id256 c;
  if (challenge != nullptr) c = ToWireId(*challenge);
  auto off = fb::CreatePing(fbb_, txid, &s, challenge != nullptr ? &c : nullptr);
  fbb_.Finish(off);
  return Finish(out, MessageType::kPing, shard_hint);
}

size_t Encoder::Pong(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                     const NodeId& responder, const base::Endpoint& observed,
                     const PublicKey* proof_key, const Signature* proof_sig) noexcept {
  RP_ASSERT((proof_key == nullptr) == (proof_sig == nullptr));
  fbb_.Clear();
  fb::Id256 r = ToWireId(responder);
  fb::Addr a = ToWireAddr(observed);
  fb::Id256 k;
  fb::Sig512 s;
  if (proof_key != nullptr) {
    k = ToWireId(*proof_key);
    std::memcpy(s.mutable_b()->Data(), proof_sig->data(), 64);
  }
  auto off = fb::CreatePong(fbb_, txid, &r, &a, proof_key ? &k : nullptr,
                            proof_sig ? &s : nullptr);
  fbb_.Finish(off);
  return Finish(out, MessageType::kPong, shard_hint);
}

size_t Encoder::Peers(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                      const NodeId& sender, std::span<const PeerInfo> peers) noexcept {
  RP_ASSERT(peers.size() <= kPeersPerMessageMax);
  fbb_.Clear();
  fb::PeerEntry entries[kPeersPerMessageMax];
  for (size_t i = 0; i < peers.size(); ++i) {
    entries[i] = fb::PeerEntry(ToWireId(peers[i].id), ToWireAddr(peers[i].addr));
  }
  auto vec = fbb_.CreateVectorOfStructs(entries, peers.size());
  fb::Id256 s = ToWireId(sender);
  auto off = fb::CreatePeers(fbb_, txid, &s, vec);
  fbb_.Finish(off);
  return Finish(out, MessageType::kPeers, shard_hint);
}

flatbuffers::Offset<flatbuffers::Vector<const fb::PeerEntry*>> Encoder::EntryVector(
    std::span<const PeerInfo> list) noexcept {
  RP_ASSERT(list.size() <= kNodesPerMessageMax);
  fb::PeerEntry entries[kNodesPerMessageMax];
  for (size_t i = 0; i < list.size(); ++i) {
    entries[i] = fb::PeerEntry(ToWireId(list[i].id), ToWireAddr(list[i].addr));
  }
  return fbb_.CreateVectorOfStructs(entries, list.size());
}

size_t Encoder::FindNode(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                         const NodeId& sender, const NodeId& target, uint8_t count,
                         size_t pad_bytes) noexcept {
  RP_ASSERT(count <= kNodesPerMessageMax);
  fbb_.Clear();
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> pad;
  if (pad_bytes > 0) {
    uint8_t* p = nullptr;
    pad = fbb_.CreateUninitializedVector(pad_bytes, &p);
    std::memset(p, 0, pad_bytes);
  }
  fb::Id256 s = ToWireId(sender);
  fb::Id256 t = ToWireId(target);
  fbb_.Finish(fb::CreateFindNode(fbb_, txid, &s, &t, count, pad));
  return Finish(out, MessageType::kFindNode, shard_hint);
}

size_t Encoder::Nodes(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                      const NodeId& sender, std::span<const PeerInfo> nodes, uint8_t chunk,
                      uint8_t chunks) noexcept {
  RP_ASSERT(chunks == 0 || chunk < chunks);
  fbb_.Clear();
  auto vec = EntryVector(nodes);
  fb::Id256 s = ToWireId(sender);
  fbb_.Finish(fb::CreateNodes(fbb_, txid, &s, vec, chunk, chunks));
  return Finish(out, MessageType::kNodes, shard_hint);
}

size_t Encoder::GetProviders(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                             const NodeId& sender, const NodeId& key, uint8_t count,
                             size_t pad_bytes) noexcept {
  RP_ASSERT(count <= kProvidersPerMessageMax);
  fbb_.Clear();
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> pad;
  if (pad_bytes > 0) {
    uint8_t* p = nullptr;
    pad = fbb_.CreateUninitializedVector(pad_bytes, &p);
    std::memset(p, 0, pad_bytes);
  }
  fb::Id256 s = ToWireId(sender);
  fb::Id256 k = ToWireId(key);
  fbb_.Finish(fb::CreateGetProviders(fbb_, txid, &s, &k, count, pad));
  return Finish(out, MessageType::kGetProviders, shard_hint);
}

size_t Encoder::Providers(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                          const NodeId& sender, const Token& token,
                          std::span<const PeerInfo> providers,
                          std::span<const PeerInfo> nodes) noexcept {
  RP_ASSERT(providers.size() <= kProvidersPerMessageMax);
  RP_ASSERT(nodes.size() <= kProviderNodesPerMessageMax);
  fbb_.Clear();
  auto pv = EntryVector(providers);
  auto nv = EntryVector(nodes);
  fb::Id256 s = ToWireId(sender);
  fb::Token128 t;
  std::memcpy(t.mutable_b()->Data(), token.data(), token.size());
  fbb_.Finish(fb::CreateProviders(fbb_, txid, &s, &t, pv, nv));
  return Finish(out, MessageType::kProviders, shard_hint);
}

size_t Encoder::Announce(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                         const NodeId& sender, const NodeId& key, const Token& token) noexcept {
  fbb_.Clear();
  fb::Id256 s = ToWireId(sender);
  fb::Id256 k = ToWireId(key);
  fb::Token128 t;
  std::memcpy(t.mutable_b()->Data(), token.data(), token.size());
  fbb_.Finish(fb::CreateAnnounce(fbb_, txid, &s, &k, &t));
  return Finish(out, MessageType::kAnnounce, shard_hint);
}

size_t Encoder::Ack(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                    const NodeId& sender) noexcept {
  fbb_.Clear();
  fb::Id256 s = ToWireId(sender);
  fbb_.Finish(fb::CreateAck(fbb_, txid, &s));
  return Finish(out, MessageType::kAck, shard_hint);
}

size_t Encoder::Route(std::span<uint8_t> out, const RouteFields& f,
                      std::span<const uint8_t> payload) noexcept {
  RP_ASSERT(f.ttl <= kRouteTtlMax);
  RP_ASSERT(payload.size() <= kRoutePayloadBytesMax);
  fbb_.Clear();
  auto pv = fbb_.CreateVector(payload.data(), payload.size());
  fb::Id256 o = ToWireId(f.origin);
  fb::Id256 t = ToWireId(f.target);
  fb::Addr a;  // family 0 (unset) unless the caller knows it
  if (f.origin_addr.valid()) a = ToWireAddr(f.origin_addr);
  fb::RouteState st(a, f.ttl, f.hops, f.attempt);
  fbb_.Finish(fb::CreateRoute(fbb_, f.route_id, &o, &t, &st, f.kind, pv));
  return Finish(out, MessageType::kRoute, kNoShardHint);
}

size_t Encoder::RouteReply(std::span<uint8_t> out, uint64_t route_id, const NodeId& responder,
                           const base::Endpoint& origin_addr, uint8_t hops, bool delivered,
                           uint8_t kind) noexcept {
  RP_ASSERT(origin_addr.valid());
  fbb_.Clear();
  fb::Id256 r = ToWireId(responder);
  fb::Addr a = ToWireAddr(origin_addr);
  fbb_.Finish(fb::CreateRouteReply(fbb_, route_id, &r, &a, hops, delivered, kind));
  return Finish(out, MessageType::kRouteReply, kNoShardHint);
}

size_t Encoder::Walk(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                     const NodeId& sender) noexcept {
  fbb_.Clear();
  fb::Id256 s = ToWireId(sender);
  fbb_.Finish(fb::CreateWalk(fbb_, txid, &s));
  return Finish(out, MessageType::kWalk, shard_hint);
}

size_t Encoder::WalkReply(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                          const NodeId& sender, uint16_t degree,
                          std::span<const PeerInfo> next) noexcept {
  RP_ASSERT(next.size() <= kWalkNextMax);
  fbb_.Clear();
  auto nv = EntryVector(next);
  fb::Id256 s = ToWireId(sender);
  fbb_.Finish(fb::CreateWalkReply(fbb_, txid, &s, degree, nv));
  return Finish(out, MessageType::kWalkReply, shard_hint);
}

size_t Encoder::Gossip(std::span<uint8_t> out, uint64_t msg_id, const NodeId& origin,
                       std::span<const uint8_t> payload) noexcept {
  RP_ASSERT(payload.size() <= kGossipPayloadBytesMax);
  fbb_.Clear();
  auto pv = fbb_.CreateVector(payload.data(), payload.size());
  fb::Id256 o = ToWireId(origin);
  fbb_.Finish(fb::CreateGossip(fbb_, msg_id, &o, pv));
  return Finish(out, MessageType::kGossip, kNoShardHint);
}

size_t Encoder::DumpRequest(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                            const NodeId& sender) noexcept {
  fbb_.Clear();
  fb::Id256 s = ToWireId(sender);
  fbb_.Finish(fb::CreateDumpRequest(fbb_, txid, &s));
  return Finish(out, MessageType::kDumpRequest, shard_hint);
}

}  // namespace ringpeer::wire
