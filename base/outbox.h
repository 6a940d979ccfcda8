// Outbox: where sans-I/O code writes the datagrams it wants sent.
//
// The overlay never sends; it asks the Outbox for a buffer, encodes into it, and commits
// it with a destination. The shard's Outbox hands out transport send slots (no copy); the
// simulator's copies into its in-memory network. When the outbox is full, Buffer()
// returns an empty span and the caller drops the message (UDP promises no more).
// Single-threaded; owned by the caller of the overlay.
//
// Bursts (issue 15): several datagrams back to back in one buffer, all but the last
// exactly `segment` bytes long, sent to each of several peers. The shard hands the buffer
// to the kernel once per peer (UDP GSO: the kernel cuts it into datagrams), without a
// copy per peer; an outbox without bursts (the default) returns an empty BurstBuffer()
// and the caller sends datagram by datagram. BurstSplitter gives an outbox bursts that it
// cuts itself, so that the simulators and tests run the same code as a shard.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "base/assert.h"
#include "base/endpoint.h"

namespace ringpeer::base {

// A burst holds at most this many bytes, and is sent to at most kBurstPeersMax peers at
// once. 40 datagrams of 1,200 bytes: under the kernel's segment limit (64 before Linux
// 6.6) and under IPv4's 64 KiB.
inline constexpr size_t kBurstBytesMax = 48'000;
inline constexpr size_t kBurstPeersMax = 64;
inline constexpr size_t kBurstDatagramsMax = 64;  // the kernel's UDP_MAX_SEGMENTS before 6.6

class Outbox {
 public:
  virtual ~Outbox() = default;
  // Buffer: room for one datagram of up to wire::kDatagramBytesMax bytes, or empty.
  virtual std::span<uint8_t> Buffer() noexcept = 0;
  // Commit: sends the first `size` bytes of the last Buffer() to `to`.
  virtual void Commit(size_t size, const base::Endpoint& to) noexcept = 0;
  // BurstBuffer: room for a burst of up to kBurstBytesMax bytes, or empty (no bursts
  // here, or none free now): then the caller sends datagram by datagram.
  virtual std::span<uint8_t> BurstBuffer() noexcept { return {}; }
  // CommitBurst: sends the first `size` bytes of the last BurstBuffer() to each of `to`
  // (at most kBurstPeersMax), as datagrams of `segment` bytes (the last may be shorter;
  // at most kBurstDatagramsMax of them). Returns how many datagrams it queued in all (a
  // full send queue skips peers).
  virtual size_t CommitBurst(size_t /*size*/, size_t /*segment*/,
                             std::span<const base::Endpoint> /*to*/) noexcept {
    return 0;
  }
};

// BurstSplitter: bursts for a test's or a simulator's outbox, which has no kernel to cut
// them (a shard without GSO has no bursts at all: its floods go unpadded, datagram by
// datagram). Buffer() is memory of its own (allocated at the first burst); Split() sends
// the burst's datagrams through `out`'s Buffer()/Commit(), peer by peer, as the kernel
// would deliver them. Returns how many datagrams went out (a full outbox drops the rest,
// as UDP may).
class BurstSplitter {
 public:
  std::span<uint8_t> Buffer() {
    if (bytes_.empty()) bytes_.resize(kBurstBytesMax);
    return bytes_;
  }
  size_t Split(Outbox& out, size_t size, size_t segment,
               std::span<const base::Endpoint> to) noexcept {
    RP_ASSERT(size <= bytes_.size() && segment > 0 && to.size() <= kBurstPeersMax &&
              (size + segment - 1) / segment <= kBurstDatagramsMax);
    size_t sent = 0;
    for (const base::Endpoint& peer : to) {
      for (size_t at = 0; at < size; at += segment) {
        const size_t n = std::min(segment, size - at);
        const std::span<uint8_t> buf = out.Buffer();
        if (buf.size() < n) return sent;
        std::memcpy(buf.data(), bytes_.data() + at, n);
        out.Commit(n, peer);
        ++sent;
      }
    }
    return sent;
  }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace ringpeer::base
