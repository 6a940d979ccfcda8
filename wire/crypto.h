// Signing and hashing helpers over libsodium (ed25519, BLAKE2b-256).
//
// Pure functions plus a key-pair value type; thread-safe once InitCrypto() has run
// (call it once at start-up, before any thread uses these).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ringpeer::wire {

using Hash256 = std::array<uint8_t, 32>;
using NodeId = Hash256;  // BLAKE2b-256 of the node's ed25519 public key
using PublicKey = std::array<uint8_t, 32>;
using SecretKey = std::array<uint8_t, 64>;  // libsodium's seed ‖ public key form
using Signature = std::array<uint8_t, 64>;
using Bytes = std::span<const uint8_t>;

// InitCrypto: initialises libsodium. Returns false if it cannot (no entropy source).
bool InitCrypto() noexcept;

// Blake2b256: the hash of `data`.
Hash256 Blake2b256(Bytes data) noexcept;

// Hasher: incremental BLAKE2b-256 for hashing several pieces without concatenating them.
class Hasher {
 public:
  Hasher() noexcept;
  Hasher& Update(Bytes data) noexcept;
  Hash256 Final() noexcept;

 private:
  alignas(64) unsigned char state_[384];
};

struct KeyPair {
  PublicKey public_key{};
  SecretKey secret_key{};

  // Generate: a fresh key pair from the system's entropy.
  static KeyPair Generate() noexcept;
  // FromSeed: the deterministic key pair for a 32-byte seed (tests and the simulator).
  static KeyPair FromSeed(const std::array<uint8_t, 32>& seed) noexcept;
};

// NodeIdOf: node id = BLAKE2b-256(public key).
NodeId NodeIdOf(const PublicKey& key) noexcept;

// Sign: detached ed25519 signature of `message`.
Signature Sign(const SecretKey& key, Bytes message) noexcept;

// VerifySignature: true when `signature` is `key`'s signature of `message`. ~43 µs; call
// it last, after every cheaper check.
bool VerifySignature(const PublicKey& key, Bytes message, const Signature& signature) noexcept;

// RandomBytes: fills `out` from the system's CSPRNG.
void RandomBytes(std::span<uint8_t> out) noexcept;

// Hex: lower-case hex of `data`; ParseHex32 reads 64 hex digits into `out`.
std::string Hex(Bytes data);
bool ParseHex32(std::string_view text, std::array<uint8_t, 32>* out) noexcept;

// Domain-separated bytes a pong signature covers: "ringpeer-pong-v1" ‖ challenge.
inline constexpr size_t kPongSigningBytes = 16 + 32;
std::array<uint8_t, kPongSigningBytes> PongSigningBytes(const Hash256& challenge) noexcept;

}  // namespace ringpeer::wire
