// Mail between shards: what one node core hands to another (DESIGN.md section 4).
//
// A core never touches a mailbox itself: it asks its MailSink for a slot towards another
// shard, fills it and pushes it (an intent). The shard implements the sink over its SPSC
// rings (node/shard), a test or the simulator over plain queues. Mail in is one call,
// NodeCore::OnMail, per item.
#pragma once

#include <cstdint>

#include "base/endpoint.h"
#include "wire/header.h"

namespace ringpeer::core {

// MailItem: one datagram or request handed to another shard. The payload is 8-byte
// aligned so that the FlatBuffers body at bytes + 16 is aligned for the Verifier.
struct MailItem {
  // kDatagram, kPingSeen: a verified datagram (bytes) from `from`.
  // kRoomProviders: to the owner shard: look up the providers of the room whose id is
  // bytes[0..32] (and announce us as one when bytes[32] is 1). kRoomPeer: from the owner:
  // `from` is a provider of room bytes[0..32]; the room's shard connects its swarm to it.
  // kDhtSnapshot: from the owner: bytes hold a dht::DhtSnapshot* the receiver now reads
  // its DHT answers from; kDhtSnapshotDone: the receiver hands its previous one back
  // (bytes hold that pointer; the owner may refill it). kPeerSeen: to the owner: a DHT
  // request from `from`, claiming the id in bytes[0..32], was answered elsewhere (the
  // owner refreshes or challenges it, as for a request it answered itself).
  enum class Kind : uint8_t {
    kDatagram, kPingSeen, kRoomProviders, kRoomPeer, kDhtSnapshot, kDhtSnapshotDone, kPeerSeen
  };
  base::Endpoint from;
  Kind kind = Kind::kDatagram;
  uint16_t size = 0;
  alignas(8) uint8_t bytes[wire::kDatagramBytesMax];
};

// MailSink: the mailboxes towards the other shards, as a core sees them. Slot() returns a
// free slot towards shard `to` (never the core's own index), or null when that mailbox is
// full (the core drops and counts); Push() hands over the slot that Slot() returned last
// for `to`. Both are called on the core's thread only.
class MailSink {
 public:
  virtual ~MailSink() = default;
  virtual MailItem* Slot(uint32_t to) noexcept = 0;
  virtual void Push(uint32_t to) noexcept = 0;
};

}  // namespace ringpeer::core
