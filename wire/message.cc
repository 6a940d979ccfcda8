#include "wire/message.h"

#include <cstring>

#include "flatbuffers/flatbuffers.h"

namespace ringpeer::wire {
namespace {

// Verifier limits: our tables are flat; anything deeper or wider is hostile.
constexpr flatbuffers::uoffset_t kVerifierDepthMax = 8;
constexpr flatbuffers::uoffset_t kVerifierTablesMax = 64;

bool AddrOk(const fb::Addr* a) noexcept {
  return a->family() == 4 || a->family() == 6;
}

template <typename T>
const T* VerifyRoot(const uint8_t* body, size_t size) noexcept {
  flatbuffers::Verifier verifier(body, size, kVerifierDepthMax, kVerifierTablesMax);
  if (!verifier.VerifyBuffer<T>(nullptr)) return nullptr;
  return flatbuffers::GetRoot<T>(body);
}

Verdict CheckPong(const fb::Pong* pong) noexcept {
  if (!AddrOk(pong->observed())) return Verdict::kBadField;
  // A proof is a public key and a signature together, or neither.
  if ((pong->public_key() == nullptr) != (pong->signature() == nullptr)) {
    return Verdict::kBadField;
  }
  return Verdict::kOk;
}

Verdict CheckPeers(const fb::Peers* peers) noexcept {
  const auto* list = peers->peers();
  if (list == nullptr) return Verdict::kOk;
  if (list->size() > kPeersPerMessageMax) return Verdict::kBadField;
  for (const fb::PeerEntry* e : *list) {
    if (!AddrOk(&e->addr())) return Verdict::kBadField;
  }
  return Verdict::kOk;
}

// EntriesOk: a list of at most `max` peer entries, each with a real address family.
bool EntriesOk(const flatbuffers::Vector<const fb::PeerEntry*>* list, size_t max) noexcept {
  if (list == nullptr) return true;
  if (list->size() > max) return false;
  for (const fb::PeerEntry* e : *list) {
    if (!AddrOk(&e->addr())) return false;
  }
  return true;
}

// Check: the semantic checks per DHT type, after the Verifier (FlatBuffers cannot express
// list bounds or enumerated address families).
Verdict Check(const fb::FindNode* m) noexcept {
  return m->count() <= kNodesPerMessageMax ? Verdict::kOk : Verdict::kBadField;
}
Verdict Check(const fb::Nodes* m) noexcept {
  if (!EntriesOk(m->nodes(), kNodesPerMessageMax)) return Verdict::kBadField;
  if (m->chunks() > 0 && m->chunk() >= m->chunks()) return Verdict::kBadField;
  return Verdict::kOk;
}
Verdict Check(const fb::GetProviders* m) noexcept {
  return m->count() <= kProvidersPerMessageMax ? Verdict::kOk : Verdict::kBadField;
}
Verdict Check(const fb::Providers* m) noexcept {
  if (!EntriesOk(m->providers(), kProvidersPerMessageMax)) return Verdict::kBadField;
  if (!EntriesOk(m->nodes(), kProviderNodesPerMessageMax)) return Verdict::kBadField;
  return Verdict::kOk;
}
Verdict Check(const fb::Announce*) noexcept { return Verdict::kOk; }
Verdict Check(const fb::Ack*) noexcept { return Verdict::kOk; }
Verdict Check(const fb::Route* m) noexcept {
  const fb::RouteState* st = m->state();
  if (st->ttl() > kRouteTtlMax) return Verdict::kBadField;
  // family 0: not yet filled by the first hop.
  const uint8_t family = st->origin_addr().family();
  if (family != 0 && family != 4 && family != 6) return Verdict::kBadField;
  if (m->payload() != nullptr && m->payload()->size() > kRoutePayloadBytesMax) {
    return Verdict::kBadField;
  }
  return Verdict::kOk;
}
Verdict Check(const fb::RouteReply* m) noexcept {
  return AddrOk(m->origin_addr()) ? Verdict::kOk : Verdict::kBadField;
}
Verdict Check(const fb::Walk*) noexcept { return Verdict::kOk; }
Verdict Check(const fb::WalkReply* m) noexcept {
  return EntriesOk(m->next(), kWalkNextMax) ? Verdict::kOk : Verdict::kBadField;
}
Verdict Check(const fb::Gossip* m) noexcept {
  if (m->payload() != nullptr && m->payload()->size() > kGossipPayloadBytesMax) {
    return Verdict::kBadField;
  }
  return Verdict::kOk;
}
Verdict Check(const fb::DumpRequest*) noexcept { return Verdict::kOk; }

template <typename T>
Verdict VerifyAndCheck(const uint8_t* body, size_t size, const void** table) noexcept {
  const T* root = VerifyRoot<T>(body, size);
  if (root == nullptr) return Verdict::kVerifyFailed;
  const Verdict v = Check(root);
  if (v == Verdict::kOk) *table = root;
  return v;
}

}  // namespace

Verdict DecodeDhtBody(const Header& h, const uint8_t* body, size_t size,
                      Message* out) noexcept {
  const void* table = nullptr;
  Verdict v = Verdict::kUnknownType;
  switch (static_cast<MessageType>(h.type)) {
    case MessageType::kFindNode: v = VerifyAndCheck<fb::FindNode>(body, size, &table); break;
    case MessageType::kNodes: v = VerifyAndCheck<fb::Nodes>(body, size, &table); break;
    case MessageType::kGetProviders:
      v = VerifyAndCheck<fb::GetProviders>(body, size, &table);
      break;
    case MessageType::kProviders: v = VerifyAndCheck<fb::Providers>(body, size, &table); break;
    case MessageType::kAnnounce: v = VerifyAndCheck<fb::Announce>(body, size, &table); break;
    case MessageType::kAck: v = VerifyAndCheck<fb::Ack>(body, size, &table); break;
    case MessageType::kRoute: v = VerifyAndCheck<fb::Route>(body, size, &table); break;
    case MessageType::kRouteReply: v = VerifyAndCheck<fb::RouteReply>(body, size, &table); break;
    case MessageType::kWalk: v = VerifyAndCheck<fb::Walk>(body, size, &table); break;
    case MessageType::kWalkReply: v = VerifyAndCheck<fb::WalkReply>(body, size, &table); break;
    case MessageType::kGossip: v = VerifyAndCheck<fb::Gossip>(body, size, &table); break;
    case MessageType::kDumpRequest:
      v = VerifyAndCheck<fb::DumpRequest>(body, size, &table);
      break;
    default: break;
  }
  if (v == Verdict::kOk) out->table_ = table;
  return v;
}

uint64_t RequestTxid(const Message& msg) noexcept {
  switch (msg.type()) {
    case MessageType::kPing: return msg.ping()->txid();
    case MessageType::kPong: return msg.pong()->txid();
    case MessageType::kPeers: return msg.peers()->txid();
    case MessageType::kFindNode: return msg.find_node()->txid();
    case MessageType::kNodes: return msg.nodes()->txid();
    case MessageType::kGetProviders: return msg.get_providers()->txid();
    case MessageType::kProviders: return msg.providers()->txid();
    case MessageType::kAnnounce: return msg.announce()->txid();
    case MessageType::kAck: return msg.ack()->txid();
    case MessageType::kWalk: return msg.walk()->txid();
    case MessageType::kWalkReply: return msg.walk_reply()->txid();
    case MessageType::kDumpRequest: return msg.dump_request()->txid();
    case MessageType::kRoute:
    case MessageType::kRouteReply:
    case MessageType::kGossip: break;
    case MessageType::kRoomSync: return msg.room_sync()->txid();
    case MessageType::kRoomSyncData: return msg.room_sync_data()->txid();
    case MessageType::kRoomJoin:
    case MessageType::kRoomLeave:
    case MessageType::kRoomHeads:
    case MessageType::kRoomPublish:
    case MessageType::kRoomAck:
    case MessageType::kRoomCheckpointGet:
    case MessageType::kRoomCheckpointChunk:
    case MessageType::kRoomSlowDown:
    case MessageType::kRoomEpoch:
    case MessageType::kRoomUpdatePiece:
    case MessageType::kRoomUpdatePieceGet: break;
  }
  return 0;
}

Verdict CheckHeader(const uint8_t* data, size_t size, Header* out) noexcept {
  if (size < kHeaderBytes) return Verdict::kTooShort;
  if (size > kDatagramBytesMax) return Verdict::kTooLong;
  Header h = LoadHeader(data);
  if (h.magic != kMagic) return Verdict::kBadMagic;
  if (h.version != kVersion) return Verdict::kBadVersion;
  if (h.body_bytes != size - kHeaderBytes) return Verdict::kBadLength;
  if (h.reserved != 0) return Verdict::kBadReserved;
  if (!IsKnownType(h.type)) return Verdict::kUnknownType;
  *out = h;
  return Verdict::kOk;
}

Verdict Decode(const uint8_t* data, size_t size, Message* out) noexcept {
  Header h;
  Verdict v = CheckHeader(data, size, &h);
  if (v != Verdict::kOk) return v;
  const uint8_t* body = data + kHeaderBytes;
  const size_t body_size = size - kHeaderBytes;
  const void* table = nullptr;
  if (h.type >= kDhtTypeFirst) {
    v = h.type >= kRoomTypeFirst ? DecodeRoomBody(h, body, body_size, out)
                                 : DecodeDhtBody(h, body, body_size, out);
    if (v != Verdict::kOk) return v;
    out->header_ = h;
    out->data_ = data;
    out->size_ = size;
    return Verdict::kOk;
  }
  switch (static_cast<MessageType>(h.type)) {
    case MessageType::kPing: {
      table = VerifyRoot<fb::Ping>(body, body_size);
      break;
    }
    case MessageType::kPong: {
      const auto* pong = VerifyRoot<fb::Pong>(body, body_size);
      if (pong != nullptr && (v = CheckPong(pong)) != Verdict::kOk) return v;
      table = pong;
      break;
    }
    case MessageType::kPeers: {
      const auto* peers = VerifyRoot<fb::Peers>(body, body_size);
      if (peers != nullptr && (v = CheckPeers(peers)) != Verdict::kOk) return v;
      table = peers;
      break;
    }
    default:
      return Verdict::kUnknownType;  // CheckHeader let it through: a DHT type, above
  }
  if (table == nullptr) return Verdict::kVerifyFailed;
  out->header_ = h;
  out->table_ = table;
  out->data_ = data;
  out->size_ = size;
  return Verdict::kOk;
}

// ---- room messages (wire/schemas/room_net.fbs) ----

namespace {

bool HeadsOk(const flatbuffers::Vector<const fb::Id256*>* heads, size_t max) noexcept {
  return heads == nullptr || heads->size() <= max;
}
bool RefOk(const fb::RoomCheckpointRef* ref) noexcept {
  if (ref == nullptr) return true;
  if (ref->levels() > kRoomPieceLevelsMax) return false;
  return ref->record_bytes() <= ref->object_bytes();
}
bool RecordOk(const flatbuffers::Vector<uint8_t>* record) noexcept {
  return record->size() > 0 && record->size() <= kRoomRecordBytesMax;
}

Verdict Check(const fb::RoomJoin*) noexcept { return Verdict::kOk; }
Verdict Check(const fb::RoomLeave*) noexcept { return Verdict::kOk; }
Verdict Check(const fb::RoomHeads* m) noexcept {
  if (!HeadsOk(m->heads(), kRoomHeadsListMax)) return Verdict::kBadField;
  return RefOk(m->checkpoint()) ? Verdict::kOk : Verdict::kBadField;
}
Verdict Check(const fb::RoomPublish* m) noexcept {
  if (!RecordOk(m->record())) return Verdict::kBadField;
  const auto* more = m->more();
  if (more == nullptr) return Verdict::kOk;
  if (more->size() + 1 > kRoomPublishRecordsMax) return Verdict::kBadField;
  for (const fb::RoomRecord* r : *more) {
    if (!RecordOk(r->bytes())) return Verdict::kBadField;
  }
  return Verdict::kOk;
}
Verdict Check(const fb::RoomAck* m) noexcept {
  const auto* more = m->more();
  return more == nullptr || more->size() + 1 <= kRoomAckIdsMax ? Verdict::kOk : Verdict::kBadField;
}
Verdict Check(const fb::RoomSync* m) noexcept {
  return HeadsOk(m->heads(), kRoomSyncHeadsMax) ? Verdict::kOk : Verdict::kBadField;
}
Verdict Check(const fb::RoomSyncData* m) noexcept {
  if (m->count() == 0 || m->seq() >= m->count()) return Verdict::kBadField;
  if (!RefOk(m->checkpoint())) return Verdict::kBadField;
  if (m->take_checkpoint() && m->checkpoint() == nullptr) return Verdict::kBadField;
  const auto* records = m->records();
  if (records == nullptr) return Verdict::kOk;
  if (records->size() > kRoomSyncRecordsMax) return Verdict::kBadField;
  for (const fb::RoomRecord* r : *records) {
    if (!RecordOk(r->bytes())) return Verdict::kBadField;
  }
  return Verdict::kOk;
}
Verdict Check(const fb::RoomCheckpointGet* m) noexcept {
  return m->level() <= kRoomPieceLevelsMax && m->count() <= kRoomPieceRangeMax
             ? Verdict::kOk
             : Verdict::kBadField;
}
Verdict Check(const fb::RoomCheckpointChunk* m) noexcept {
  if (m->level() > kRoomPieceLevelsMax) return Verdict::kBadField;
  return m->bytes()->size() <= kRoomPieceBytes ? Verdict::kOk : Verdict::kBadField;
}
Verdict Check(const fb::RoomSlowDown*) noexcept { return Verdict::kOk; }
Verdict Check(const fb::RoomEpoch* m) noexcept {
  return RecordOk(m->record()) ? Verdict::kOk : Verdict::kBadField;
}
// A piece of a record that does not fit one datagram: its size names the piece count,
// every piece but the last is whole, the last holds the rest.
// A key epoch's pieces may make a larger record than an update's.
Verdict Check(const fb::RoomUpdatePiece* m) noexcept {
  const size_t total = m->record_bytes();
  const size_t max = m->key_epoch() ? kRoomKeyEpochBytesMax : kRoomUpdateBytesMax;
  if (total <= kRoomRecordBytesMax || total > max) return Verdict::kBadField;
  const size_t pieces = (total + kRoomPieceBytes - 1) / kRoomPieceBytes;
  if (m->index() >= pieces) return Verdict::kBadField;
  const size_t want = size_t{m->index()} + 1 < pieces ? kRoomPieceBytes
                                              : total - (pieces - 1) * kRoomPieceBytes;
  return m->bytes()->size() == want ? Verdict::kOk : Verdict::kBadField;
}
Verdict Check(const fb::RoomUpdatePieceGet* m) noexcept {
  const size_t n = m->missing()->size();
  const size_t pieces = m->key_epoch() ? kRoomKeyEpochPiecesMax : kRoomUpdatePiecesMax;
  return n >= 1 && n <= (pieces + 7) / 8 ? Verdict::kOk : Verdict::kBadField;
}

// VerifyRoom: Verifier, semantic checks, and the steering rule: a room message whose shard
// hint is not its room's prefix would land on a shard that does not own the room.
template <typename T>
Verdict VerifyRoom(const Header& h, const uint8_t* body, size_t size,
                   const void** table) noexcept {
  const T* root = VerifyRoot<T>(body, size);
  if (root == nullptr) return Verdict::kVerifyFailed;
  if (RoomShardHint(root->room()->b()->Data()) != h.shard_hint) return Verdict::kBadField;
  const Verdict v = Check(root);
  if (v == Verdict::kOk) *table = root;
  return v;
}

}  // namespace

Verdict DecodeRoomBody(const Header& h, const uint8_t* body, size_t size,
                       Message* out) noexcept {
  const void* t = nullptr;
  Verdict v = Verdict::kUnknownType;
  switch (static_cast<MessageType>(h.type)) {
    case MessageType::kRoomJoin: v = VerifyRoom<fb::RoomJoin>(h, body, size, &t); break;
    case MessageType::kRoomLeave: v = VerifyRoom<fb::RoomLeave>(h, body, size, &t); break;
    case MessageType::kRoomHeads: v = VerifyRoom<fb::RoomHeads>(h, body, size, &t); break;
    case MessageType::kRoomPublish: v = VerifyRoom<fb::RoomPublish>(h, body, size, &t); break;
    case MessageType::kRoomAck: v = VerifyRoom<fb::RoomAck>(h, body, size, &t); break;
    case MessageType::kRoomSync: v = VerifyRoom<fb::RoomSync>(h, body, size, &t); break;
    case MessageType::kRoomSyncData: v = VerifyRoom<fb::RoomSyncData>(h, body, size, &t); break;
    case MessageType::kRoomCheckpointGet:
      v = VerifyRoom<fb::RoomCheckpointGet>(h, body, size, &t);
      break;
    case MessageType::kRoomCheckpointChunk:
      v = VerifyRoom<fb::RoomCheckpointChunk>(h, body, size, &t);
      break;
    case MessageType::kRoomSlowDown: v = VerifyRoom<fb::RoomSlowDown>(h, body, size, &t); break;
    case MessageType::kRoomEpoch: v = VerifyRoom<fb::RoomEpoch>(h, body, size, &t); break;
    case MessageType::kRoomUpdatePiece:
      v = VerifyRoom<fb::RoomUpdatePiece>(h, body, size, &t);
      break;
    case MessageType::kRoomUpdatePieceGet:
      v = VerifyRoom<fb::RoomUpdatePieceGet>(h, body, size, &t);
      break;
    default: break;
  }
  if (v == Verdict::kOk) out->table_ = t;
  return v;
}

Hash256 RoomOf(const Message& msg) noexcept {
  RP_ASSERT(msg.is_room());
  const fb::Id256* room = nullptr;
  switch (msg.type()) {
    case MessageType::kRoomJoin: room = msg.room_join()->room(); break;
    case MessageType::kRoomLeave: room = msg.room_leave()->room(); break;
    case MessageType::kRoomHeads: room = msg.room_heads()->room(); break;
    case MessageType::kRoomPublish: room = msg.room_publish()->room(); break;
    case MessageType::kRoomAck: room = msg.room_ack()->room(); break;
    case MessageType::kRoomSync: room = msg.room_sync()->room(); break;
    case MessageType::kRoomSyncData: room = msg.room_sync_data()->room(); break;
    case MessageType::kRoomCheckpointGet: room = msg.room_checkpoint_get()->room(); break;
    case MessageType::kRoomCheckpointChunk: room = msg.room_checkpoint_chunk()->room(); break;
    case MessageType::kRoomSlowDown: room = msg.room_slow_down()->room(); break;
    case MessageType::kRoomEpoch: room = msg.room_epoch()->room(); break;
    case MessageType::kRoomUpdatePiece: room = msg.room_update_piece()->room(); break;
    case MessageType::kRoomUpdatePieceGet: room = msg.room_update_piece_get()->room(); break;
    default: RP_ASSERT(false);
  }
  Hash256 id;
  std::memcpy(id.data(), room->b()->Data(), id.size());
  return id;
}

}  // namespace ringpeer::wire
