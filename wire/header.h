// The fixed datagram header (DESIGN.md section 3).
//
// Every datagram is this 16-byte plain header followed by a FlatBuffers body. The header
// is read before anything else, so that length, version and type are checked at the cost
// of a few loads. All fields are little-endian on the wire; we only build for
// little-endian hosts (static_assert below) and read the header with memcpy, so no
// alignment is assumed. A value type; thread-compatible.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace ringpeer::wire {

static_assert(std::endian::native == std::endian::little,
              "ringpeer's wire header is little-endian and read in place");

// Largest datagram we send or accept: passes any IPv6 path without fragmentation.
inline constexpr size_t kDatagramBytesMax = 1200;

// "rpr1" read as a little-endian word.
inline constexpr uint32_t kMagic = 0x31727072u;
inline constexpr uint8_t kVersion = 1;

// Message types. Values are stable on the wire; new ones are only appended. Unknown types
// are counted and dropped, so old nodes survive new ones.
enum class MessageType : uint8_t {
  kPing = 1,
  kPong = 2,
  kPeers = 3,
  // 16..63: the DHT (issue 3); 64..127: rooms (issue 5).
  kFindNode = 16,
  kNodes = 17,
  kGetProviders = 18,
  kProviders = 19,
  kAnnounce = 20,
  kAck = 21,
  kRoute = 22,
  kRouteReply = 23,
  kWalk = 24,
  kWalkReply = 25,
  kGossip = 26,
  kDumpRequest = 27,
  // Rooms (wire/schemas/room_net.fbs). shard_hint = the room id's first 4 bytes (LE).
  kRoomJoin = 64,
  kRoomLeave = 65,
  kRoomHeads = 66,
  kRoomPublish = 67,
  kRoomAck = 68,
  kRoomSync = 69,
  kRoomSyncData = 70,
  kRoomCheckpointGet = 71,
  kRoomCheckpointChunk = 72,
  kRoomSlowDown = 73,
  kRoomEpoch = 74,
  kRoomUpdatePiece = 75,
  kRoomUpdatePieceGet = 76,
};
inline constexpr uint8_t kMessageTypeMax = 27;
// The overlay's original types end here; the DHT range starts at kDhtTypeFirst.
inline constexpr uint8_t kOverlayTypeLast = 3;
inline constexpr uint8_t kDhtTypeFirst = 16;
inline constexpr uint8_t kDhtTypeLast = 27;
// The room range (64..127); this version speaks kRoomTypeFirst..kRoomTypeLast.
inline constexpr uint8_t kRoomTypeFirst = 64;
inline constexpr uint8_t kRoomTypeLast = 76;

// IsKnownType: whether `type` is a message type this version speaks.
constexpr bool IsKnownType(uint8_t type) noexcept {
  return (type >= 1 && type <= kOverlayTypeLast) ||
         (type >= kDhtTypeFirst && type <= kDhtTypeLast) ||
         (type >= kRoomTypeFirst && type <= kRoomTypeLast);
}

// Header flags.
enum HeaderFlags : uint16_t {
  kFlagNone = 0,
};

// Shard hint meaning "no preference": the receiving kernel may pick any shard.
inline constexpr uint32_t kNoShardHint = 0xFFFFFFFFu;

struct Header {
  uint32_t magic;       // kMagic
  uint8_t version;      // kVersion
  uint8_t type;         // MessageType
  uint16_t flags;       // HeaderFlags
  uint32_t shard_hint;  // room-id prefix, or the shard bits of a reply's txid
  uint16_t body_bytes;  // must equal datagram length - sizeof(Header)
  uint16_t reserved;    // zero; a non-zero value is a malformed datagram in version 1
};
static_assert(sizeof(Header) == 16);
static_assert(offsetof(Header, magic) == 0);
static_assert(offsetof(Header, version) == 4);
static_assert(offsetof(Header, type) == 5);
static_assert(offsetof(Header, flags) == 6);
static_assert(offsetof(Header, shard_hint) == 8);
static_assert(offsetof(Header, body_bytes) == 12);
static_assert(offsetof(Header, reserved) == 14);
inline constexpr size_t kHeaderBytes = sizeof(Header);
inline constexpr size_t kBodyBytesMax = kDatagramBytesMax - kHeaderBytes;

inline Header LoadHeader(const uint8_t* p) noexcept {
  Header h;
  std::memcpy(&h, p, sizeof(h));
  return h;
}

// PadDatagram: grows the datagram at `d` from `size` to `to` bytes with zeros after its
// body, and makes its header count them. A burst's datagrams (base/outbox.h) are all one
// size but the last; a FlatBuffers body ignores bytes past what its offsets reach, so a
// padded datagram decodes as the unpadded one (RoomWire.PublishPackingBudgetFits).
// REQUIRES: kHeaderBytes <= size <= to <= kDatagramBytesMax.
inline void PadDatagram(uint8_t* d, size_t size, size_t to) noexcept {
  std::memset(d + size, 0, to - size);
  const auto body = static_cast<uint16_t>(to - kHeaderBytes);
  std::memcpy(d + offsetof(Header, body_bytes), &body, sizeof(body));
}

// PackBurst: datagram i was encoded at burst + i * kDatagramBytesMax, sizes[i] long; moves
// them together into one burst, each but the last padded to the longest one's size,
// rounded up to a multiple of 8: a receiver with UDP GRO gets the burst whole and hands
// out each datagram where it lies, so every one must start 8-byte aligned as a lone
// datagram does (ring/transport.h, RecvDatagram).
// Returns the burst's length; *segment is that size. REQUIRES: sizes is not empty.
static_assert(kDatagramBytesMax % 8 == 0, "a rounded segment stays within a datagram");
inline size_t PackBurst(uint8_t* burst, const size_t* sizes, size_t count,
                        size_t* segment) noexcept {
  size_t seg = 0;
  for (size_t i = 0; i < count; ++i) seg = sizes[i] > seg ? sizes[i] : seg;
  seg = (seg + 7) & ~size_t{7};
  for (size_t i = 0; i < count; ++i) {
    // Forward, to a lower or the same place: never over a datagram not yet moved.
    if (i > 0) std::memmove(burst + i * seg, burst + i * kDatagramBytesMax, sizes[i]);
    if (i + 1 < count) PadDatagram(burst + i * seg, sizes[i], seg);
  }
  *segment = seg;
  return (count - 1) * seg + sizes[count - 1];
}

inline void StoreHeader(uint8_t* p, const Header& h) noexcept { std::memcpy(p, &h, sizeof(h)); }

}  // namespace ringpeer::wire
