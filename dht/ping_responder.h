// PingResponder: answers pings with pongs, on any shard, keeping no per-peer state.
//
// A liveness ping costs one encode. A ping with a challenge costs an ed25519 signature
// (~20 µs), so signing is rate-limited per shard by a token bucket: a flood of challenges
// can take at most kSignaturesPerSecondMax x ~20 µs of a shard each second (~4%); above
// that the challenge is dropped and counted, and the honest peer retries later.
// Shard-local; not thread-safe (one per shard, sharing the immutable identity).
#pragma once

#include <cstdint>

#include "base/endpoint.h"
#include "base/token_bucket.h"
#include "base/outbox.h"
#include "dht/proof.h"
#include "wire/crypto.h"
#include "wire/encode.h"
#include "wire/message.h"
#include "wire/verdict.h"

namespace ringpeer::dht {

// Signatures per second a shard spends answering challenges, and the burst it may take.
inline constexpr uint32_t kSignaturesPerSecondMax = 2000;
inline constexpr uint32_t kSignatureBurstMax = 200;

class PingResponder {
 public:
  // REQUIRES: `identity` (and `proof`, if given) outlive the responder. A null `proof`
  // means ed25519 (production); the simulator passes its cheap stand-in.
  // `client`: we are a DHT client (OverlayConfig::client); our pongs say so.
  // `encoder`: one to share (the node core's; it must outlive the responder), or null for
  // its own. An encoder holds nothing between calls, so one thread's parts can share one.
  PingResponder(const wire::KeyPair& identity, int64_t now_us,
                const ProofScheme* proof = nullptr, bool client = false,
                wire::Encoder* encoder = nullptr) noexcept;
  PingResponder(const PingResponder&) = delete;
  PingResponder& operator=(const PingResponder&) = delete;

  // Answer: writes a pong for `ping` (received from `from`) into `out`. Returns kOk, or
  // kChallengeLimited when a challenge found no signing budget, or kSendQueueFull.
  wire::Verdict Answer(int64_t now_us, const base::Endpoint& from, const wire::Message& ping,
                       base::Outbox& out) noexcept;

  const wire::NodeId& id() const noexcept { return id_; }

 private:
  const wire::KeyPair& identity_;
  Ed25519Proof ed25519_;
  const ProofScheme* proof_;
  wire::NodeId id_;
  base::TokenBucket signatures_;
  wire::Encoder own_encoder_;  // its buffer is allocated at first use: none when shared
  wire::Encoder& encoder_;
  bool client_;
};

}  // namespace ringpeer::dht
