// ProofScheme: how a node proves its id when it answers a ping's challenge.
//
// Production uses Ed25519Proof (a real ed25519 signature over PongSigningBytes, ~20 µs to
// sign and ~43 µs to verify). The simulator injects a cheap stand-in so that ten thousand
// nodes verifying each other take seconds rather than minutes; that stand-in is not
// secure and lives in tests/sim only. Implementations are stateless: thread-safe.
#pragma once

#include "wire/crypto.h"

namespace ringpeer::dht {

class ProofScheme {
 public:
  virtual ~ProofScheme() = default;
  // Sign: the proof that `identity` received `challenge`.
  virtual wire::Signature Sign(const wire::KeyPair& identity,
                               const wire::Hash256& challenge) const noexcept = 0;
  // Verify: whether `sig` proves that the holder of `key` received `challenge`.
  virtual bool Verify(const wire::PublicKey& key, const wire::Hash256& challenge,
                      const wire::Signature& sig) const noexcept = 0;
};

class Ed25519Proof final : public ProofScheme {
 public:
  wire::Signature Sign(const wire::KeyPair& identity,
                       const wire::Hash256& challenge) const noexcept override {
    return wire::Sign(identity.secret_key, wire::PongSigningBytes(challenge));
  }
  bool Verify(const wire::PublicKey& key, const wire::Hash256& challenge,
              const wire::Signature& sig) const noexcept override {
    return wire::VerifySignature(key, wire::PongSigningBytes(challenge), sig);
  }
};

}  // namespace ringpeer::dht
