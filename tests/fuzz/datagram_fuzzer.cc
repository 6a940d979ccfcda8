// libFuzzer target: the whole path of one untrusted datagram through a one-shard node
// core: header check, rate limit, Verifier, semantic checks, then the handlers the core
// dispatches to (ping answers, the reflection guard, the overlay, the rooms).
// Invariants checked: nothing crashes or reads out of bounds (ASan/UBSan), everything the
// core sends decodes as a message we accept (CaptureSink), and nothing a datagram says can
// make the core send more than a bounded number of datagrams.
// (node_fuzzer drives two cores with much more state; this one is the fast, wide target.)
#include <cstdint>
#include <cstring>
#include <memory>

#include "base/assert.h"
#include "node/core/node_core.h"
#include "node/core/testing.h"
#include "wire/message.h"

namespace {

using namespace ringpeer;

struct World {
  World() {
    RP_ASSERT(wire::InitCrypto());
    core::CoreConfig c;
    c.overlay.peers_max = 64;
    c.overlay.bootstrap = {*base::Endpoint::Parse("127.0.0.2:7700")};
    c.rate_limit_entries = 64;
    c.reflection_entries = 64;
    c.ping_seen_entries = 64;
    c.rooms_max = 4;
    c.rng_seed = 1;
    c.start_us = 1'000'000;
    node = std::make_unique<core::NodeCore>(c, keys, &out, nullptr);
    node->Tick(1'000'000);  // a challenge is outstanding to the bootstrap peer
  }
  wire::KeyPair keys = wire::KeyPair::FromSeed({1});
  core::testing::CaptureSink out;
  std::unique_ptr<core::NodeCore> node;
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
  const base::Endpoint from = *base::Endpoint::Parse("127.0.0.2:7700");
  const int before = world->out.sent;
  world->node->Receive(now, from, std::span<const uint8_t>(buf, size));
  // One datagram may cause a pong, a challenge, a probe, and a Peers message per new peer.
  RP_ASSERT(world->out.sent - before <= 3 + int(wire::kPeersPerMessageMax));
  return 0;
}
