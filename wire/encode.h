// Encoder: builds datagrams (header + FlatBuffers body) straight into a caller's buffer.
//
// One Encoder per shard, reused for every message: its FlatBufferBuilder keeps its memory
// across Clear(), so after the first few messages encoding allocates nothing.
// Shard-local; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/endpoint.h"
#include "flatbuffers/flatbuffers.h"
#include "wire/crypto.h"
#include "wire/dht_generated.h"
#include "wire/header.h"
#include "wire/overlay_generated.h"
#include "wire/room_net_generated.h"

namespace ringpeer::wire {

// Conversions between the wire's Addr struct and base::Endpoint.
fb::Addr ToWireAddr(const base::Endpoint& e) noexcept;
base::Endpoint FromWireAddr(const fb::Addr& a) noexcept;
fb::Id256 ToWireId(const Hash256& id) noexcept;
Hash256 FromWireId(const fb::Id256& id) noexcept;
Signature FromWireSig(const fb::Sig512& sig) noexcept;

struct PeerInfo {
  NodeId id;
  base::Endpoint addr;
};

using Token = std::array<uint8_t, 16>;

// RouteFields: what a Route carries besides its id; `origin_addr` is invalid until the
// first hop fills it.
struct RouteFields {
  uint64_t route_id = 0;
  NodeId origin{};
  NodeId target{};
  base::Endpoint origin_addr;
  uint8_t ttl = 0;
  uint8_t hops = 0;
  uint8_t attempt = 0;
  uint8_t kind = 0;
};

// A checkpoint as a fetchable object (RoomCheckpointRef in room_net.fbs); id zero: none.
struct RoomCheckpointInfo {
  Hash256 id{};
  Hash256 root{};
  uint64_t object_bytes = 0;
  uint32_t record_bytes = 0;
  uint8_t levels = 0;
  // The record's `covered` (its rank). Not in RoomCheckpointRef: RoomHeads carries it
  // beside the ref; 0 where not known.
  uint64_t covered = 0;
  bool valid() const noexcept { return object_bytes > 0; }
  friend bool operator==(const RoomCheckpointInfo&, const RoomCheckpointInfo&) = default;
};
fb::RoomCheckpointRef ToWireCheckpoint(const RoomCheckpointInfo& c) noexcept;
RoomCheckpointInfo FromWireCheckpoint(const fb::RoomCheckpointRef* c) noexcept;

// RoomHeadsFields: what a RoomHeads carries; `heads` is sent only when it has at most
// kRoomHeadsListMax entries (the digest always).
struct RoomHeadsFields {
  Hash256 room{};
  NodeId sender{};
  bool relay = false;
  uint32_t epoch = 0;
  uint64_t log_size = 0;
  Hash256 heads_digest{};
  std::span<const Hash256> heads;
  RoomCheckpointInfo checkpoint;
  bool no_epoch = false;  // the sender holds no key epoch yet (epoch 0 would be ambiguous)
};

class Encoder {
 public:
  Encoder() : fbb_(kBodyBytesMax) {}
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  // Each Encode* writes one datagram into `out` and returns its length, or 0 when it does
  // not fit (a programming error for our fixed-size messages, so callers may assert).
  size_t Ping(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid, const NodeId& sender,
              const Hash256* challenge, bool client = false) noexcept;
  // Pong: `proof_key`/`proof_sig` are both set (answering a challenge) or both null.
  size_t Pong(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid, const NodeId& responder,
              const base::Endpoint& observed, const PublicKey* proof_key,
              const Signature* proof_sig, bool client = false) noexcept;
  size_t Peers(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid, const NodeId& sender,
               std::span<const PeerInfo> peers) noexcept;

  // DHT messages (wire/schemas/dht.fbs). `pad_bytes` adds that many zero bytes to a
  // request (see FindNode in dht.fbs). Each returns 0 when the result would not fit.
  size_t FindNode(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                  const NodeId& sender, const NodeId& target, uint8_t count,
                  size_t pad_bytes) noexcept;
  // Nodes: `chunks` is 0 for a find_node answer, the chunk count for a table dump.
  size_t Nodes(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid, const NodeId& sender,
               std::span<const PeerInfo> nodes, uint8_t chunk = 0, uint8_t chunks = 0) noexcept;
  size_t GetProviders(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                      const NodeId& sender, const NodeId& key, uint8_t count,
                      size_t pad_bytes) noexcept;
  size_t Providers(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                   const NodeId& sender, const Token& token, std::span<const PeerInfo> providers,
                   std::span<const PeerInfo> nodes) noexcept;
  size_t Announce(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                  const NodeId& sender, const NodeId& key, const Token& token) noexcept;
  size_t Ack(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
             const NodeId& sender) noexcept;
  size_t Route(std::span<uint8_t> out, const RouteFields& f,
               std::span<const uint8_t> payload) noexcept;
  size_t RouteReply(std::span<uint8_t> out, uint64_t route_id, const NodeId& responder,
                    const base::Endpoint& origin_addr, uint8_t hops, bool delivered,
                    uint8_t kind) noexcept;
  // Walk: `prev` (may be null) is the node the walk would move from (see dht.fbs).
  size_t Walk(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
              const NodeId& sender, const NodeId* prev = nullptr) noexcept;
  size_t WalkReply(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                   const NodeId& sender, uint16_t degree, std::span<const PeerInfo> next,
                   bool prev_held = false) noexcept;
  size_t Gossip(std::span<uint8_t> out, uint64_t msg_id, const NodeId& origin,
                std::span<const uint8_t> payload) noexcept;
  size_t DumpRequest(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid,
                     const NodeId& sender) noexcept;

  // Room messages (wire/schemas/room_net.fbs). The shard hint is always the room id's
  // prefix (RoomShardHint). Each returns 0 when the result would not fit a datagram.
  // RoomJoin: `genesis` (may be empty) lets a relay that does not serve the room start.
  // `want_genesis`: the sender knows only the room id; the answer carries the genesis.
  size_t RoomJoin(std::span<uint8_t> out, const Hash256& room, const NodeId& sender,
                  bool relay, std::span<const uint8_t> genesis = {},
                  bool want_genesis = false) noexcept;
  size_t RoomLeave(std::span<uint8_t> out, const Hash256& room, const NodeId& sender) noexcept;
  size_t RoomHeads(std::span<uint8_t> out, const RoomHeadsFields& f) noexcept;
  size_t RoomPublish(std::span<uint8_t> out, const Hash256& room, Bytes record) noexcept;
  size_t RoomAck(std::span<uint8_t> out, const Hash256& room, const Hash256& update,
                 bool refused = false) noexcept;
  // Packed (issue 15): records[0] as `record`, the rest as `more` (1..kRoomPublishRecordsMax
  // records); updates[0] as `update`, the rest as `more`, none refused (1..kRoomAckIdsMax).
  size_t RoomPublishPacked(std::span<uint8_t> out, const Hash256& room,
                           std::span<const Bytes> records) noexcept;
  size_t RoomAckPacked(std::span<uint8_t> out, const Hash256& room,
                       std::span<const Hash256> updates) noexcept;
  // `checkpoint`: the id of the checkpoint the requester has in effect, or null.
  size_t RoomSync(std::span<uint8_t> out, const Hash256& room, uint64_t txid, uint16_t window,
                  std::span<const Hash256> heads, const Hash256* checkpoint = nullptr) noexcept;
  // RoomSyncData: `checkpoint` is sent when valid (with take_checkpoint, or as a hint).
  size_t RoomSyncData(std::span<uint8_t> out, const Hash256& room, uint64_t txid, uint16_t seq,
                      uint16_t count, bool more, bool take_checkpoint,
                      const RoomCheckpointInfo& checkpoint,
                      std::span<const Bytes> records) noexcept;
  // RoomCheckpointGet: pieces index .. index + count - 1 (1 <= count <= kRoomPieceRangeMax).
  size_t RoomCheckpointGet(std::span<uint8_t> out, const Hash256& room, const Hash256& checkpoint,
                           uint8_t level, uint32_t index, uint32_t count = 1) noexcept;
  size_t RoomCheckpointChunk(std::span<uint8_t> out, const Hash256& room,
                             const Hash256& checkpoint, uint8_t level, uint32_t index,
                             Bytes bytes) noexcept;
  size_t RoomSlowDown(std::span<uint8_t> out, const Hash256& room, const Hash256& update,
                      uint32_t retry_after_ms, uint32_t publish_per_s = 0) noexcept;
  // RoomEpoch: a key epoch record (or, with `genesis`, the room's genesis record).
  size_t RoomEpoch(std::span<uint8_t> out, const Hash256& room, Bytes record,
                   bool genesis = false) noexcept;
  // RoomUpdatePiece: piece `index` of `record` (larger than kRoomRecordBytesMax). With
  // `key_epoch`, the record is a key epoch (up to kRoomKeyEpochBytesMax) and `update` its
  // hash.
  size_t RoomUpdatePiece(std::span<uint8_t> out, const Hash256& room, const Hash256& update,
                         Bytes record, uint16_t index, bool key_epoch = false) noexcept;
  size_t RoomUpdatePieceGet(std::span<uint8_t> out, const Hash256& room, const Hash256& update,
                            Bytes missing, bool key_epoch = false) noexcept;

 private:
  // PadVector: `pad_bytes` zero bytes (requests padded against reply amplification).
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> PadVector(size_t pad_bytes) noexcept;
  flatbuffers::Offset<flatbuffers::Vector<const fb::PeerEntry*>> EntryVector(
      std::span<const PeerInfo> list) noexcept;

  // Finish: writes the header and copies the finished body after it.
  size_t Finish(std::span<uint8_t> out, MessageType type, uint32_t shard_hint) noexcept;

  flatbuffers::FlatBufferBuilder fbb_;
};

}  // namespace ringpeer::wire
