// libFuzzer target: cutting a UDP GRO receive into its datagrams in place
// (ring::UringTransport::SplitCoalesced). The kernel coalesces a sender's GSO burst into one
// receive and reports the sender's segment size, so another host chooses the segment size,
// the burst's length and its last datagram's length; with an odd segment the datagrams are
// moved onto 8-byte boundaries inside the receive buffer, the last first.
//
// Input: 2 bytes segment size, 3 bytes payload length, 1 byte batch room (1-256: past
// kGroSegmentsMax, which the shard's batch of 64 never reaches but Poll's callers may),
// 1 byte buffer slack, 1 byte seeding the payload's bytes; the rest is ignored. The buffer
// is laid out as the transport's (kGroBufferBytes, the payload at 72 B), or shorter by the
// slack byte to reach the edge, and sized exactly (and `out` too), so that ASan sees a
// write one byte past either.
//
// Invariants checked: nothing is read or written outside the buffer (ASan); each datagram
// handed out starts at a multiple of 8 from the payload, ends inside the buffer, has the
// length of its segment (the last may be shorter) and holds exactly that segment's bytes
// as received; the datagrams are in order and do not overlap, and an odd segment's lies at
// the first 8-byte boundary after the one before (packed as tightly as alignment allows);
// how many are handed out is all of them (bounded by the batch room) for a multiple of 8,
// and for odd segments stops only at kGroSegmentsMax, the batch room or the buffer's end.
#include <algorithm>
#include <memory>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/endpoint.h"
#include "ring/uring_transport.h"

namespace {

using ringpeer::ring::RecvDatagram;
using ringpeer::ring::UringTransport;

// Where the payload starts in the transport's GRO buffers: after the recvmsg header, the
// source address and the UDP_GRO control message (72 B).
constexpr size_t kPayloadAt = UringTransport::kRecvPayloadOffset + UringTransport::kGroControlBytes;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "gro_split_fuzzer: %s\n", what);
  std::abort();
}

uint8_t Pattern(size_t i, uint8_t seed) { return static_cast<uint8_t>(i * 131 + (i >> 8) * 7 + seed); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 7) return 0;
  const uint32_t segment = data[0] | (uint32_t{data[1]} << 8);
  uint32_t stored = data[2] | (uint32_t{data[3]} << 8) | (uint32_t{data[4]} << 16);
  const size_t batch = size_t{1} + data[5];
  const size_t slack = data[6];
  const uint8_t seed = size > 7 ? data[7] : 0;
  const size_t buffer_bytes = UringTransport::kGroBufferBytes - slack;
  const size_t room = buffer_bytes - kPayloadAt;
  if (segment == 0) return 0;  // a lone datagram: never split
  stored %= room + 1;          // what a receive into this buffer can hold
  // Exactly buffer_bytes (new[] aligns to 16, as the transport's page-aligned ring).
  std::unique_ptr<uint8_t[]> owned(new uint8_t[buffer_bytes]);
  uint8_t* buffer = owned.get();
  uint8_t* payload = buffer + kPayloadAt;
  for (size_t i = 0; i < stored; ++i) payload[i] = Pattern(i, seed);

  std::vector<RecvDatagram> out(batch);
  const auto from = *ringpeer::base::Endpoint::Parse("127.0.0.1:7");
  const size_t handed = UringTransport::SplitCoalesced(payload, room, stored, segment, 3, from,
                                                       std::span(out.data(), batch));
  const size_t count = (stored + segment - 1) / segment;
  if (handed > count || handed > batch) Fail("more datagrams than the burst holds");
  const uint8_t* previous_end = payload;
  for (size_t i = 0; i < handed; ++i) {
    const RecvDatagram& d = out[i];
    const size_t expect = std::min<size_t>(segment, stored - i * segment);
    if (d.size != expect) Fail("wrong length");
    if (d.data < previous_end) Fail("overlap or out of order");
    if (segment % 8 == 0 && d.data != payload + i * segment) Fail("an aligned datagram moved");
    if (segment % 8 != 0 &&
        static_cast<size_t>(d.data - payload) !=
            ((static_cast<size_t>(previous_end - payload) + 7) & ~size_t{7})) {
      Fail("an odd datagram is not at the first boundary after the one before");
    }
    if ((d.data - payload) % 8 != 0) Fail("not 8-byte aligned");
    if (d.data + d.size > payload + room) Fail("past the buffer");
    if (d.socket_index != 3 || d.truncated || !(d.from == from)) Fail("wrong metadata");
    for (size_t b = 0; b < d.size; ++b) {
      if (d.data[b] != Pattern(i * segment + b, seed)) Fail("bytes not as received");
    }
    previous_end = d.data + d.size;
  }
  const size_t want = std::min(count, batch);
  if (segment % 8 == 0) {
    if (handed != want) Fail("an aligned burst lost datagrams");
  } else if (handed < std::min<size_t>(want, UringTransport::kGroSegmentsMax)) {
    // Only the buffer's end may stop it: the next datagram, moved up, would not fit.
    const size_t at = (static_cast<size_t>(previous_end - payload) + 7) & ~size_t{7};
    const size_t next = std::min<size_t>(segment, stored - handed * segment);
    if (at + next <= room) Fail("an odd burst stopped early");
  }
  return 0;
}
