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
#include "wire/header.h"
#include "wire/overlay_generated.h"

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

class Encoder {
 public:
  Encoder() : fbb_(kBodyBytesMax) {}
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  // Each Encode* writes one datagram into `out` and returns its length, or 0 when it does
  // not fit (a programming error for our fixed-size messages, so callers may assert).
  size_t Ping(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid, const NodeId& sender,
              const Hash256* challenge) noexcept;
  // Pong: `proof_key`/`proof_sig` are both set (answering a challenge) or both null.
  size_t Pong(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid, const NodeId& responder,
              const base::Endpoint& observed, const PublicKey* proof_key,
              const Signature* proof_sig) noexcept;
  size_t Peers(std::span<uint8_t> out, uint32_t shard_hint, uint64_t txid, const NodeId& sender,
               std::span<const PeerInfo> peers) noexcept;

 private:
  // Finish: writes the header and copies the finished body after it.
  size_t Finish(std::span<uint8_t> out, MessageType type, uint32_t shard_hint) noexcept;

  flatbuffers::FlatBufferBuilder fbb_;
};

}  // namespace ringpeer::wire
