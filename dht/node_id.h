// XOR-metric helpers over 256-bit node ids (Kademlia distance).
//
// Pure functions on values; thread-safe.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "base/rng.h"
#include "wire/crypto.h"

namespace ringpeer::dht {

using wire::NodeId;
inline constexpr int kIdBits = 256;

// CommonPrefixBits: how many leading bits `a` and `b` share (256 when equal).
inline int CommonPrefixBits(const NodeId& a, const NodeId& b) noexcept {
  for (int i = 0; i < 32; ++i) {
    const uint8_t x = a[i] ^ b[i];
    if (x != 0) return i * 8 + std::countl_zero(x);
  }
  return kIdBits;
}

// CloserTo: whether `a` is strictly closer to `target` than `b` in the XOR metric.
inline bool CloserTo(const NodeId& target, const NodeId& a, const NodeId& b) noexcept {
  for (int i = 0; i < 32; ++i) {
    const uint8_t x = a[i] ^ target[i];
    const uint8_t y = b[i] ^ target[i];
    if (x != y) return x < y;
  }
  return false;
}

// DistanceKey: the top 64 bits of a XOR b, as a number. Orders ids by distance exactly
// unless two distances share 64 leading bits (then CloserTo breaks the tie).
inline uint64_t DistanceKey(const NodeId& a, const NodeId& b) noexcept {
  uint64_t x = 0;
  for (int i = 0; i < 8; ++i) x = (x << 8) | uint8_t(a[i] ^ b[i]);
  return x;
}

// DistanceFraction: a XOR b as a fraction of the id space, in [0, 1). Size estimates use it:
// the ids within XOR distance d of any point cover exactly a fraction d of the space.
inline double DistanceFraction(const NodeId& a, const NodeId& b) noexcept {
  return static_cast<double>(DistanceKey(a, b)) * 0x1p-64;
}

// RandomId: a uniformly random id.
inline NodeId RandomId(base::Rng& rng) noexcept {
  NodeId id;
  rng.Fill(id);
  return id;
}

// RandomIdWithPrefix: a random id sharing exactly `bits` leading bits with `base`
// (for refreshing the bucket at that depth). REQUIRES: 0 <= bits < 256.
inline NodeId RandomIdWithPrefix(const NodeId& base, int bits, base::Rng& rng) noexcept {
  NodeId id = RandomId(rng);
  const int byte = bits / 8;
  std::memcpy(id.data(), base.data(), static_cast<size_t>(byte));
  const uint8_t keep = static_cast<uint8_t>(0xFF00 >> (bits % 8));  // bits copied from base
  const uint8_t flip = static_cast<uint8_t>(0x80 >> (bits % 8));    // the first differing bit
  id[byte] = static_cast<uint8_t>((base[byte] & keep) | (id[byte] & ~keep & 0xFF));
  id[byte] = static_cast<uint8_t>((id[byte] & ~flip) | (~base[byte] & flip));
  return id;
}

}  // namespace ringpeer::dht
