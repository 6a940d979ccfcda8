#include "wire/encode.h"

#include <algorithm>
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
                     const NodeId& sender, const Hash256* challenge, bool client) noexcept {
  fbb_.Clear();
  fb::Id256 s = ToWireId(sender);
  fb::Id256 c;
  if (challenge != nullptr) c = ToWireId(*challenge);
  auto off = fb::CreatePing(fbb_, txid, &s, challenge != nullptr ? &c : nullptr, client);
  fbb_.Finish(off);
  return Finish(out, MessageType::kPing, shard_hint);
}

size_t Encoder::Pong(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                     const NodeId& responder, const base::Endpoint& observed,
                     const PublicKey* proof_key, const Signature* proof_sig,
                     bool client) noexcept {
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
                            proof_sig ? &s : nullptr, client);
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

flatbuffers::Offset<flatbuffers::Vector<uint8_t>> Encoder::PadVector(
    size_t pad_bytes) noexcept {
  if (pad_bytes == 0) return {};
  uint8_t* p = nullptr;
  auto pad = fbb_.CreateUninitializedVector(pad_bytes, &p);
  std::memset(p, 0, pad_bytes);
  return pad;
}

size_t Encoder::FindNode(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                         const NodeId& sender, const NodeId& target, uint8_t count,
                         size_t pad_bytes) noexcept {
  RP_ASSERT(count <= kNodesPerMessageMax);
  fbb_.Clear();
  const auto pad = PadVector(pad_bytes);
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
  const auto pad = PadVector(pad_bytes);
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
                     const NodeId& sender, const NodeId* prev) noexcept {
  fbb_.Clear();
  fb::Id256 s = ToWireId(sender);
  fb::Id256 p = prev != nullptr ? ToWireId(*prev) : fb::Id256{};
  fbb_.Finish(fb::CreateWalk(fbb_, txid, &s, prev != nullptr ? &p : nullptr));
  return Finish(out, MessageType::kWalk, shard_hint);
}

size_t Encoder::WalkReply(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                          const NodeId& sender, uint16_t degree,
                          std::span<const PeerInfo> next, bool prev_held) noexcept {
  RP_ASSERT(next.size() <= kWalkNextMax);
  fbb_.Clear();
  auto nv = EntryVector(next);
  fb::Id256 s = ToWireId(sender);
  fbb_.Finish(fb::CreateWalkReply(fbb_, txid, &s, degree, nv, prev_held));
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

// ---- room messages ----

fb::RoomCheckpointRef ToWireCheckpoint(const RoomCheckpointInfo& c) noexcept {
  return fb::RoomCheckpointRef(ToWireId(c.id), ToWireId(c.root), c.object_bytes, c.record_bytes,
                               c.levels);
}

RoomCheckpointInfo FromWireCheckpoint(const fb::RoomCheckpointRef* c) noexcept {
  RoomCheckpointInfo info;
  if (c == nullptr) return info;
  info.id = FromWireId(c->id());
  info.root = FromWireId(c->root());
  info.object_bytes = c->object_bytes();
  info.record_bytes = c->record_bytes();
  info.levels = c->levels();
  return info;
}

size_t Encoder::RoomJoin(std::span<uint8_t> out, const Hash256& room, const NodeId& sender,
                         bool relay, std::span<const uint8_t> genesis,
                         bool want_genesis) noexcept {
  fbb_.Clear();
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> g;
  if (!genesis.empty()) g = fbb_.CreateVector(genesis.data(), genesis.size());
  fb::Id256 r = ToWireId(room);
  fb::Id256 s = ToWireId(sender);
  fbb_.Finish(fb::CreateRoomJoin(fbb_, &r, &s, relay, g, want_genesis, /*packs=*/true,
                                 /*ranges=*/true, static_cast<uint8_t>(kRoomPieceRangeMax)));
  return Finish(out, MessageType::kRoomJoin, RoomShardHint(room.data()));
}

size_t Encoder::RoomLeave(std::span<uint8_t> out, const Hash256& room,
                          const NodeId& sender) noexcept {
  fbb_.Clear();
  fb::Id256 r = ToWireId(room);
  fb::Id256 s = ToWireId(sender);
  fbb_.Finish(fb::CreateRoomLeave(fbb_, &r, &s));
  return Finish(out, MessageType::kRoomLeave, RoomShardHint(room.data()));
}

// IdVector: a vector of Id256 structs built in place (no temporary array).
static flatbuffers::Offset<flatbuffers::Vector<const fb::Id256*>> IdVector(
    flatbuffers::FlatBufferBuilder& fbb, std::span<const Hash256> ids) noexcept {
  fb::Id256* p = nullptr;
  auto off = fbb.CreateUninitializedVectorOfStructs(ids.size(), &p);
  for (size_t i = 0; i < ids.size(); ++i) p[i] = ToWireId(ids[i]);
  return off;
}

size_t Encoder::RoomHeads(std::span<uint8_t> out, const RoomHeadsFields& f) noexcept {
  fbb_.Clear();
  flatbuffers::Offset<flatbuffers::Vector<const fb::Id256*>> heads;
  if (f.heads.size() <= kRoomHeadsListMax) heads = IdVector(fbb_, f.heads);
  fb::Id256 r = ToWireId(f.room);
  fb::Id256 s = ToWireId(f.sender);
  fb::Id256 d = ToWireId(f.heads_digest);
  fb::RoomCheckpointRef cp = ToWireCheckpoint(f.checkpoint);
  fbb_.Finish(fb::CreateRoomHeads(fbb_, &r, &s, f.relay, f.epoch, f.log_size, &d, heads,
                                  f.checkpoint.valid() ? &cp : nullptr, f.no_epoch,
                                  f.checkpoint.valid() ? f.checkpoint.covered : 0,
                                  /*packs=*/true, /*ranges=*/true,
                                  static_cast<uint8_t>(kRoomPieceRangeMax)));
  return Finish(out, MessageType::kRoomHeads, RoomShardHint(f.room.data()));
}

size_t Encoder::RoomPublish(std::span<uint8_t> out, const Hash256& room, Bytes record) noexcept {
  RP_ASSERT(!record.empty());
  RP_ASSERT(record.size() <= kRoomRecordBytesMax);
  fbb_.Clear();
  auto rec = fbb_.CreateVector(record.data(), record.size());
  fb::Id256 r = ToWireId(room);
  fbb_.Finish(fb::CreateRoomPublish(fbb_, &r, rec));
  return Finish(out, MessageType::kRoomPublish, RoomShardHint(room.data()));
}

size_t Encoder::RoomAck(std::span<uint8_t> out, const Hash256& room, const Hash256& update,
                        bool refused) noexcept {
  fbb_.Clear();
  fb::Id256 r = ToWireId(room);
  fb::Id256 u = ToWireId(update);
  fbb_.Finish(fb::CreateRoomAck(fbb_, &r, &u, refused));
  return Finish(out, MessageType::kRoomAck, RoomShardHint(room.data()));
}

size_t Encoder::RoomPublishPacked(std::span<uint8_t> out, const Hash256& room,
                                  std::span<const Bytes> records) noexcept {
  RP_ASSERT(!records.empty() && records.size() <= kRoomPublishRecordsMax);
  fbb_.Clear();
  flatbuffers::Offset<fb::RoomRecord> recs[kRoomPublishRecordsMax];
  for (size_t i = 1; i < records.size(); ++i) {
    RP_ASSERT(!records[i].empty() && records[i].size() <= kRoomRecordBytesMax);
    auto bytes = fbb_.CreateVector(records[i].data(), records[i].size());
    recs[i - 1] = fb::CreateRoomRecord(fbb_, bytes);
  }
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::RoomRecord>>> more;
  if (records.size() > 1) more = fbb_.CreateVector(recs, records.size() - 1);
  RP_ASSERT(!records[0].empty() && records[0].size() <= kRoomRecordBytesMax);
  auto first = fbb_.CreateVector(records[0].data(), records[0].size());
  fb::Id256 r = ToWireId(room);
  fbb_.Finish(fb::CreateRoomPublish(fbb_, &r, first, more));
  return Finish(out, MessageType::kRoomPublish, RoomShardHint(room.data()));
}

size_t Encoder::RoomAckPacked(std::span<uint8_t> out, const Hash256& room,
                              std::span<const Hash256> updates) noexcept {
  RP_ASSERT(!updates.empty() && updates.size() <= kRoomAckIdsMax);
  fbb_.Clear();
  flatbuffers::Offset<flatbuffers::Vector<const fb::Id256*>> more;
  if (updates.size() > 1) more = IdVector(fbb_, updates.subspan(1));
  fb::Id256 r = ToWireId(room);
  fb::Id256 u = ToWireId(updates[0]);
  fbb_.Finish(fb::CreateRoomAck(fbb_, &r, &u, false, more));
  return Finish(out, MessageType::kRoomAck, RoomShardHint(room.data()));
}

size_t Encoder::RoomSync(std::span<uint8_t> out, const Hash256& room, uint64_t txid,
                         uint16_t window, std::span<const Hash256> heads,
                         const Hash256* checkpoint) noexcept {
  RP_ASSERT(heads.size() <= kRoomSyncHeadsMax);
  fbb_.Clear();
  auto hv = IdVector(fbb_, heads);
  fb::Id256 r = ToWireId(room);
  fb::Id256 cp = checkpoint != nullptr ? ToWireId(*checkpoint) : fb::Id256{};
  fbb_.Finish(fb::CreateRoomSync(fbb_, &r, txid, window, hv, checkpoint != nullptr ? &cp : nullptr));
  return Finish(out, MessageType::kRoomSync, RoomShardHint(room.data()));
}

size_t Encoder::RoomSyncData(std::span<uint8_t> out, const Hash256& room, uint64_t txid,
                             uint16_t seq, uint16_t count, bool more, bool take_checkpoint,
                             const RoomCheckpointInfo& checkpoint,
                             std::span<const Bytes> records) noexcept {
  RP_ASSERT(seq < count);
  RP_ASSERT(records.size() <= kRoomSyncRecordsMax);
  RP_ASSERT(!take_checkpoint || checkpoint.valid());
  fbb_.Clear();
  flatbuffers::Offset<fb::RoomRecord> recs[kRoomSyncRecordsMax];
  for (size_t i = 0; i < records.size(); ++i) {
    auto bytes = fbb_.CreateVector(records[i].data(), records[i].size());
    recs[i] = fb::CreateRoomRecord(fbb_, bytes);
  }
  auto rv = fbb_.CreateVector(recs, records.size());
  fb::Id256 r = ToWireId(room);
  fb::RoomCheckpointRef cp = ToWireCheckpoint(checkpoint);
  fbb_.Finish(fb::CreateRoomSyncData(fbb_, &r, txid, seq, count, more, take_checkpoint,
                                     checkpoint.valid() ? &cp : nullptr, rv));
  return Finish(out, MessageType::kRoomSyncData, RoomShardHint(room.data()));
}

size_t Encoder::RoomCheckpointGet(std::span<uint8_t> out, const Hash256& room,
                                  const Hash256& checkpoint, uint8_t level, uint32_t index,
                                  uint32_t count) noexcept {
  RP_ASSERT(level <= kRoomPieceLevelsMax);
  RP_ASSERT(count >= 1 && count <= kRoomPieceRangeMax);
  fbb_.Clear();
  fb::Id256 r = ToWireId(room);
  fb::Id256 c = ToWireId(checkpoint);
  // One piece leaves `count` out (0, the default), as an older node wrote it.
  fbb_.Finish(fb::CreateRoomCheckpointGet(fbb_, &r, &c, level, index,
                                          static_cast<uint8_t>(count > 1 ? count : 0)));
  return Finish(out, MessageType::kRoomCheckpointGet, RoomShardHint(room.data()));
}

size_t Encoder::RoomCheckpointChunk(std::span<uint8_t> out, const Hash256& room,
                                    const Hash256& checkpoint, uint8_t level, uint32_t index,
                                    Bytes bytes) noexcept {
  RP_ASSERT(level <= kRoomPieceLevelsMax);
  RP_ASSERT(bytes.size() <= kRoomPieceBytes);
  fbb_.Clear();
  auto bv = fbb_.CreateVector(bytes.data(), bytes.size());
  fb::Id256 r = ToWireId(room);
  fb::Id256 c = ToWireId(checkpoint);
  fbb_.Finish(fb::CreateRoomCheckpointChunk(fbb_, &r, &c, level, index, bv));
  return Finish(out, MessageType::kRoomCheckpointChunk, RoomShardHint(room.data()));
}

size_t Encoder::RoomSlowDown(std::span<uint8_t> out, const Hash256& room, const Hash256& update,
                             uint32_t retry_after_ms, uint32_t publish_per_s) noexcept {
  fbb_.Clear();
  fb::Id256 r = ToWireId(room);
  fb::Id256 u = ToWireId(update);
  fbb_.Finish(fb::CreateRoomSlowDown(fbb_, &r, &u, retry_after_ms, publish_per_s));
  return Finish(out, MessageType::kRoomSlowDown, RoomShardHint(room.data()));
}

size_t Encoder::RoomEpoch(std::span<uint8_t> out, const Hash256& room, Bytes record,
                          bool genesis) noexcept {
  RP_ASSERT(!record.empty());
  fbb_.Clear();
  if (record.size() > kRoomRecordBytesMax) return 0;
  auto rec = fbb_.CreateVector(record.data(), record.size());
  fb::Id256 r = ToWireId(room);
  fbb_.Finish(fb::CreateRoomEpoch(fbb_, &r, rec, genesis));
  return Finish(out, MessageType::kRoomEpoch, RoomShardHint(room.data()));
}

size_t Encoder::RoomUpdatePiece(std::span<uint8_t> out, const Hash256& room,
                                const Hash256& update, Bytes record, uint16_t index,
                                bool key_epoch) noexcept {
  RP_ASSERT(record.size() > kRoomRecordBytesMax);
  RP_ASSERT(record.size() <= (key_epoch ? kRoomKeyEpochBytesMax : kRoomUpdateBytesMax));
  const size_t first = size_t{index} * kRoomPieceBytes;
  RP_ASSERT(first < record.size());
  const size_t n = std::min(kRoomPieceBytes, record.size() - first);
  fbb_.Clear();
  auto bv = fbb_.CreateVector(record.data() + first, n);
  fb::Id256 r = ToWireId(room);
  fb::Id256 u = ToWireId(update);
  fbb_.Finish(fb::CreateRoomUpdatePiece(fbb_, &r, &u, static_cast<uint32_t>(record.size()),
                                        index, bv, key_epoch));
  return Finish(out, MessageType::kRoomUpdatePiece, RoomShardHint(room.data()));
}

size_t Encoder::RoomUpdatePieceGet(std::span<uint8_t> out, const Hash256& room,
                                   const Hash256& update, Bytes missing,
                                   bool key_epoch) noexcept {
  RP_ASSERT(!missing.empty());
  RP_ASSERT(missing.size() <=
            ((key_epoch ? kRoomKeyEpochPiecesMax : kRoomUpdatePiecesMax) + 7) / 8);
  fbb_.Clear();
  auto mv = fbb_.CreateVector(missing.data(), missing.size());
  fb::Id256 r = ToWireId(room);
  fb::Id256 u = ToWireId(update);
  fbb_.Finish(fb::CreateRoomUpdatePieceGet(fbb_, &r, &u, mv, key_epoch));
  return Finish(out, MessageType::kRoomUpdatePieceGet, RoomShardHint(room.data()));
}

}  // namespace ringpeer::wire
