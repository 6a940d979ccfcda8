#include "dht/ping_responder.h"

namespace ringpeer::dht {

PingResponder::PingResponder(const wire::KeyPair& identity, int64_t now_us,
                             const ProofScheme* proof, bool client,
                             wire::Encoder* encoder) noexcept
    : identity_(identity),
      proof_(proof != nullptr ? proof : &ed25519_),
      id_(wire::NodeIdOf(identity.public_key)),
      signatures_(kSignaturesPerSecondMax, kSignatureBurstMax, now_us),
      encoder_(encoder != nullptr ? *encoder : own_encoder_),
      client_(client) {}

wire::Verdict PingResponder::Answer(int64_t now_us, const base::Endpoint& from,
                                    const wire::Message& ping, base::Outbox& out) noexcept {
  const wire::fb::Ping* p = ping.ping();
  // The reply goes back to the sender's shard: the low byte of its txid names it.
  const uint32_t hint = static_cast<uint32_t>(p->txid() & 0xFF);
  const wire::fb::Id256* challenge = p->challenge();
  wire::Signature sig;
  if (challenge != nullptr) {
    if (!signatures_.TryTake(now_us)) return wire::Verdict::kChallengeLimited;
    sig = proof_->Sign(identity_, wire::FromWireId(*challenge));
  }
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return wire::Verdict::kSendQueueFull;
  const size_t n = encoder_.Pong(buf, hint, p->txid(), id_, from,
                                 challenge ? &identity_.public_key : nullptr,
                                 challenge ? &sig : nullptr, client_);
  RP_ASSERT(n > 0);
  out.Commit(n, from);
  return wire::Verdict::kOk;
}

}  // namespace ringpeer::dht
