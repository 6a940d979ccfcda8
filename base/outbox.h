// Outbox: where sans-I/O code writes the datagrams it wants sent.
//
// The overlay never sends; it asks the Outbox for a buffer, encodes into it, and commits
// it with a destination. The shard's Outbox hands out transport send slots (no copy); the
// simulator's copies into its in-memory network. When the outbox is full, Buffer()
// returns an empty span and the caller drops the message (UDP promises no more).
// Single-threaded; owned by the caller of the overlay.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/endpoint.h"

namespace ringpeer::base {

class Outbox {
 public:
  virtual ~Outbox() = default;
  // Buffer: room for one datagram of up to wire::kDatagramBytesMax bytes, or empty.
  virtual std::span<uint8_t> Buffer() noexcept = 0;
  // Commit: sends the first `size` bytes of the last Buffer() to `to`.
  virtual void Commit(size_t size, const base::Endpoint& to) noexcept = 0;
};

}  // namespace ringpeer::base
