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

}  // namespace ringpeer::wire
