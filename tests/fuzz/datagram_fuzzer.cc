// libFuzzer target: the whole path of one untrusted datagram — header check, Verifier,
// semantic checks, then the handlers a shard would run (PingResponder, Overlay).
// Invariants checked: nothing crashes or reads out of bounds (ASan/UBSan), an accepted
// message re-encodes to something Decode accepts again, and nothing a datagram says can
// make the overlay send more than a bounded number of replies.
#include <cstdint>
#include <cstring>
#include <vector>

#include "base/assert.h"
#include "base/rng.h"
#include "dht/overlay.h"
#include "dht/ping_responder.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace {

using namespace ringpeer;

class CountingOutbox : public base::Outbox {
 public:
  std::span<uint8_t> Buffer() noexcept override { return buf_; }
  void Commit(size_t size, const base::Endpoint&) noexcept override {
    RP_ASSERT(size <= wire::kDatagramBytesMax);
    wire::Message m;
    // Everything we send must be something we would accept.
    RP_ASSERT(wire::Decode(buf_, size, &m) == wire::Verdict::kOk);
    ++sent;
  }
  alignas(8) uint8_t buf_[wire::kDatagramBytesMax];
  int sent = 0;
};

dht::OverlayConfig FuzzConfig() {
  dht::OverlayConfig c;
  c.peers_max = 64;
  c.bootstrap = {*base::Endpoint::Parse("127.0.0.2:7700")};
  return c;
}

struct World {
  World()
      : keys(wire::KeyPair::FromSeed({1})),
        rng(1),
        overlay(keys, FuzzConfig(), &rng, 1'000'000),
        responder(keys, 1'000'000) {
    RP_ASSERT(wire::InitCrypto());
    overlay.Tick(1'000'000, out);  // a challenge is outstanding to the bootstrap peer
  }
  wire::KeyPair keys;
  base::Rng rng;
  dht::Overlay overlay;
  dht::PingResponder responder;
  CountingOutbox out;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();
  static int64_t now = 2'000'000;
  now += 1000;
  // Copy into an aligned buffer, as the receive ring and mailboxes provide.
  alignas(8) static uint8_t buf[wire::kDatagramBytesMax + 16];
  if (size > sizeof(buf)) return 0;
  std::memcpy(buf, data, size);
  wire::Message msg;
  if (wire::Decode(buf, size, &msg) != wire::Verdict::kOk) return 0;
  const base::Endpoint from = *base::Endpoint::Parse("127.0.0.2:7700");
  const int before = world->out.sent;
  if (msg.type() == wire::MessageType::kPing) {
    world->responder.Answer(now, from, msg, world->out);
    world->overlay.OnPingSeen(now, from, wire::FromWireId(*msg.ping()->sender()), world->out);
  } else {
    world->overlay.OnMessage(now, from, msg, world->out);
  }
  // One datagram may cause a pong, a challenge, and a Peers message per new peer at most.
  RP_ASSERT(world->out.sent - before <= 2 + int(wire::kPeersPerMessageMax));
  return 0;
}
