// Decode(): the one door from untrusted bytes to readable messages.
//
// Decode checks, in order of cost, the header (length, magic, version, type, reserved
// bits), then runs the FlatBuffers Verifier over the body, then the semantic checks
// FlatBuffers cannot express. Only then does it build a Message, a view that reads the
// fields in place from the receive buffer: nothing is copied or deserialized. Message's
// constructor is private to Decode, so holding one proves the bytes were verified.
// Signatures are not checked here: that is the caller's last, most expensive step.
//
// A Message borrows the datagram's bytes; it is valid while they are. Thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "base/assert.h"
#include "wire/crypto.h"
#include "wire/dht_generated.h"
#include "wire/header.h"
#include "wire/overlay_generated.h"
#include "wire/room_net_generated.h"
#include "wire/verdict.h"

namespace ringpeer::wire {

// Most peers one Peers message may list; keeps it far below kDatagramBytesMax.
inline constexpr size_t kPeersPerMessageMax = 16;
// Most nodes in one Nodes message: k = 20 entries of 52 bytes still fit in 1200 bytes.
inline constexpr size_t kNodesPerMessageMax = 20;
// Most providers and closer nodes in one Providers message (together they must fit).
inline constexpr size_t kProvidersPerMessageMax = 8;
inline constexpr size_t kProviderNodesPerMessageMax = 10;
// Longest routed path a Route may ask for: far above log2 of any network we expect.
inline constexpr uint8_t kRouteTtlMax = 32;
// Largest payload a routed message or a gossip message carries (the rest of a datagram
// is headers and ids).
inline constexpr size_t kRoutePayloadBytesMax = 512;
inline constexpr size_t kGossipPayloadBytesMax = 900;
// Most next-hop suggestions in a WalkReply.
inline constexpr size_t kWalkNextMax = 4;
// Room messages (wire/schemas/room_net.fbs). A record carried whole in one datagram (an
// update, a small key epoch) is at most room::kUpdateBytesMax (1100), leaving 84 bytes for
// the header and the framing.
inline constexpr size_t kRoomRecordBytesMax = 1100;
// Heads listed in a RoomHeads (16 x 32 bytes); with more, only their digest is sent.
inline constexpr size_t kRoomHeadsListMax = 16;
// Heads a RoomSync may name (24 x 32 bytes); a node with more sends the first 24 and
// receives a few updates it already has.
inline constexpr size_t kRoomSyncHeadsMax = 24;
// Records in one RoomSyncData (small updates share a datagram).
inline constexpr size_t kRoomSyncRecordsMax = 16;
// Records in one packed RoomPublish (`record` and `more` together), and updates one RoomAck
// acknowledges (`update` and `more`): floods and acks queued for one peer in one batch
// share a datagram (issue 15).
inline constexpr size_t kRoomPublishRecordsMax = 16;
inline constexpr size_t kRoomAckIdsMax = 32;
// Packing budget of a RoomPublish: kRoomPublishFixedBytes for the room id and the framing
// around the first record, plus each record's bytes and kRoomPublishRecordFramingBytes
// (a RoomRecord table, its vector's length and padding, and its offset in `more`) must fit
// kBodyBytesMax. RoomWire.PublishPackingBudgetFits checks the worst case.
inline constexpr size_t kRoomPublishFixedBytes = 64;
inline constexpr size_t kRoomPublishRecordFramingBytes = 20;
// Checkpoint piece size and tree shape (see RoomCheckpointRef): 1024-byte pieces, 32 hashes
// per node; 6 levels above the leaves address 32^6 KiB, far past any state cap.
inline constexpr size_t kRoomPieceBytes = 1024;
inline constexpr size_t kRoomPieceFanout = kRoomPieceBytes / 32;
// The most pieces one RoomCheckpointGet asks for (its `count`), answered as one burst of
// ~36 KB (under a burst buffer's 48,000 B and UDP GSO's 64 KiB). A peer says what it
// answers (RoomJoin/RoomHeads `range_max`); one that says `ranges` and no `range_max`
// answers kRoomPieceRangeMaxV1 (the first builds with ranges: a larger `count` is a
// malformed datagram there). A join of 5 MB asks ~150 times instead of ~300.
inline constexpr uint32_t kRoomPieceRangeMax = 32;
inline constexpr uint32_t kRoomPieceRangeMaxV1 = 16;
inline constexpr uint8_t kRoomPieceLevelsMax = 6;
// Largest update record (room::kUpdateBytesMax: a 64 KiB payload and its framing); one
// larger than kRoomRecordBytesMax travels as RoomUpdatePiece datagrams of kRoomPieceBytes.
inline constexpr size_t kRoomUpdateBytesMax = 66 * 1024;
inline constexpr size_t kRoomUpdatePiecesMax =
    (kRoomUpdateBytesMax + kRoomPieceBytes - 1) / kRoomPieceBytes;
// Largest key epoch record (room::kKeyEpochBytesMax: 1024 write grants of 160 bytes and the
// fixed part, with margin); one larger than kRoomRecordBytesMax travels as RoomUpdatePiece
// datagrams with `key_epoch` set.
inline constexpr size_t kRoomKeyEpochBytesMax = 192 * 1024;
inline constexpr size_t kRoomKeyEpochPiecesMax =
    (kRoomKeyEpochBytesMax + kRoomPieceBytes - 1) / kRoomPieceBytes;
static_assert(kRoomKeyEpochPiecesMax >= kRoomUpdatePiecesMax);
static_assert(kRoomKeyEpochPiecesMax <= UINT16_MAX);  // RoomUpdatePiece.index is a ushort

class Message {
 public:
  Message() = default;

  MessageType type() const noexcept { return static_cast<MessageType>(header_.type); }
  const Header& header() const noexcept { return header_; }
  // The whole datagram, header included (for forwarding the bytes received).
  std::span<const uint8_t> bytes() const noexcept { return {data_, size_}; }

  const fb::Ping* ping() const noexcept {
    RP_ASSERT(type() == MessageType::kPing);
    return static_cast<const fb::Ping*>(table_);
  }
  const fb::Pong* pong() const noexcept {
    RP_ASSERT(type() == MessageType::kPong);
    return static_cast<const fb::Pong*>(table_);
  }
  const fb::Peers* peers() const noexcept {
    RP_ASSERT(type() == MessageType::kPeers);
    return static_cast<const fb::Peers*>(table_);
  }
  // DHT messages (wire/schemas/dht.fbs).
  const fb::FindNode* find_node() const noexcept {
    RP_ASSERT(type() == MessageType::kFindNode);
    return static_cast<const fb::FindNode*>(table_);
  }
  const fb::Nodes* nodes() const noexcept {
    RP_ASSERT(type() == MessageType::kNodes);
    return static_cast<const fb::Nodes*>(table_);
  }
  const fb::GetProviders* get_providers() const noexcept {
    RP_ASSERT(type() == MessageType::kGetProviders);
    return static_cast<const fb::GetProviders*>(table_);
  }
  const fb::Providers* providers() const noexcept {
    RP_ASSERT(type() == MessageType::kProviders);
    return static_cast<const fb::Providers*>(table_);
  }
  const fb::Announce* announce() const noexcept {
    RP_ASSERT(type() == MessageType::kAnnounce);
    return static_cast<const fb::Announce*>(table_);
  }
  const fb::Ack* ack() const noexcept {
    RP_ASSERT(type() == MessageType::kAck);
    return static_cast<const fb::Ack*>(table_);
  }
  const fb::Route* route() const noexcept {
    RP_ASSERT(type() == MessageType::kRoute);
    return static_cast<const fb::Route*>(table_);
  }
  const fb::RouteReply* route_reply() const noexcept {
    RP_ASSERT(type() == MessageType::kRouteReply);
    return static_cast<const fb::RouteReply*>(table_);
  }
  const fb::Walk* walk() const noexcept {
    RP_ASSERT(type() == MessageType::kWalk);
    return static_cast<const fb::Walk*>(table_);
  }
  const fb::WalkReply* walk_reply() const noexcept {
    RP_ASSERT(type() == MessageType::kWalkReply);
    return static_cast<const fb::WalkReply*>(table_);
  }
  const fb::Gossip* gossip() const noexcept {
    RP_ASSERT(type() == MessageType::kGossip);
    return static_cast<const fb::Gossip*>(table_);
  }
  const fb::DumpRequest* dump_request() const noexcept {
    RP_ASSERT(type() == MessageType::kDumpRequest);
    return static_cast<const fb::DumpRequest*>(table_);
  }
  // Room messages (wire/schemas/room_net.fbs).
  const fb::RoomJoin* room_join() const noexcept {
    return As<fb::RoomJoin>(MessageType::kRoomJoin);
  }
  const fb::RoomLeave* room_leave() const noexcept {
    return As<fb::RoomLeave>(MessageType::kRoomLeave);
  }
  const fb::RoomHeads* room_heads() const noexcept {
    return As<fb::RoomHeads>(MessageType::kRoomHeads);
  }
  const fb::RoomPublish* room_publish() const noexcept {
    return As<fb::RoomPublish>(MessageType::kRoomPublish);
  }
  const fb::RoomAck* room_ack() const noexcept { return As<fb::RoomAck>(MessageType::kRoomAck); }
  const fb::RoomSync* room_sync() const noexcept {
    return As<fb::RoomSync>(MessageType::kRoomSync);
  }
  const fb::RoomSyncData* room_sync_data() const noexcept {
    return As<fb::RoomSyncData>(MessageType::kRoomSyncData);
  }
  const fb::RoomCheckpointGet* room_checkpoint_get() const noexcept {
    return As<fb::RoomCheckpointGet>(MessageType::kRoomCheckpointGet);
  }
  const fb::RoomCheckpointChunk* room_checkpoint_chunk() const noexcept {
    return As<fb::RoomCheckpointChunk>(MessageType::kRoomCheckpointChunk);
  }
  const fb::RoomSlowDown* room_slow_down() const noexcept {
    return As<fb::RoomSlowDown>(MessageType::kRoomSlowDown);
  }
  const fb::RoomEpoch* room_epoch() const noexcept {
    return As<fb::RoomEpoch>(MessageType::kRoomEpoch);
  }
  const fb::RoomUpdatePiece* room_update_piece() const noexcept {
    return As<fb::RoomUpdatePiece>(MessageType::kRoomUpdatePiece);
  }
  const fb::RoomUpdatePieceGet* room_update_piece_get() const noexcept {
    return As<fb::RoomUpdatePieceGet>(MessageType::kRoomUpdatePieceGet);
  }
  // IsRoom: a room message (types 64..127); its room() is the room it is about.
  bool is_room() const noexcept { return header_.type >= kRoomTypeFirst; }

 private:
  friend Verdict Decode(const uint8_t* data, size_t size, Message* out) noexcept;

// DecodeDhtBody: Decode's step for the DHT types (16..63): Verifier and semantic checks.
// On kOk sets out's table. Called only by Decode, after the header checks.
Verdict DecodeDhtBody(const Header& h, const uint8_t* body, size_t size, Message* out) noexcept;

// RequestTxid: the txid of any DHT request or reply (for steering replies to the shard that
// sent the request: its low byte). Route and Gossip, which have none, give 0.
uint64_t RequestTxid(const Message& msg) noexcept;
  friend Verdict DecodeDhtBody(const Header& h, const uint8_t* body, size_t size,
                               Message* out) noexcept;
  friend Verdict DecodeRoomBody(const Header& h, const uint8_t* body, size_t size,
                                Message* out) noexcept;

  template <typename T>
  const T* As(MessageType t) const noexcept {
    RP_ASSERT(type() == t);
    return static_cast<const T*>(table_);
  }

  Header header_{};
  const void* table_ = nullptr;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// CheckHeader: only the fixed-header checks (the cheapest step). Fills `out` on kOk.
Verdict CheckHeader(const uint8_t* data, size_t size, Header* out) noexcept;

// Decode: header checks, Verifier and semantic checks. On kOk, `out` is a view into
// `data`. REQUIRES: `data` is 8-byte aligned at data + kHeaderBytes, as receive buffers
// and mailbox slots are (the Verifier checks alignment and rejects otherwise).
Verdict Decode(const uint8_t* data, size_t size, Message* out) noexcept;

// DecodeDhtBody: Decode's step for the DHT types (16..63): Verifier and semantic checks.
// On kOk sets out's table. Called only by Decode, after the header checks.
Verdict DecodeDhtBody(const Header& h, const uint8_t* body, size_t size, Message* out) noexcept;

// RequestTxid: the txid of any DHT request or reply (for steering replies to the shard that
// sent the request: its low byte). Route and Gossip, which have none, give 0.
uint64_t RequestTxid(const Message& msg) noexcept;

// DecodeRoomBody: Decode's step for the room types (64..127): Verifier and semantic checks,
// including that the header's shard hint is the room id's first 4 bytes.
Verdict DecodeRoomBody(const Header& h, const uint8_t* body, size_t size, Message* out) noexcept;

// RoomOf: the room id of a room message. REQUIRES: msg.is_room().
Hash256 RoomOf(const Message& msg) noexcept;

// RoomShardHint: the shard hint of every message about `room_id` (its first 4 bytes, LE).
inline uint32_t RoomShardHint(const uint8_t* room_id) noexcept {
  uint32_t hint;
  std::memcpy(&hint, room_id, sizeof(hint));
  return hint;
}

}  // namespace ringpeer::wire
