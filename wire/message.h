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
#include <span>

#include "base/assert.h"
#include "wire/header.h"
#include "wire/overlay_generated.h"
#include "wire/verdict.h"

namespace ringpeer::wire {

// Most peers one Peers message may list; keeps it far below kDatagramBytesMax.
inline constexpr size_t kPeersPerMessageMax = 16;

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

 private:
  friend Verdict Decode(const uint8_t* data, size_t size, Message* out) noexcept;

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

}  // namespace ringpeer::wire
