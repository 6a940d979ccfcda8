#include "wire/crypto.h"

#include <sodium.h>

#include <cstring>

#include "base/assert.h"

namespace ringpeer::wire {

static_assert(crypto_sign_PUBLICKEYBYTES == 32);
static_assert(crypto_sign_SECRETKEYBYTES == 64);
static_assert(crypto_sign_BYTES == 64);
static_assert(sizeof(crypto_generichash_state) <= 384);

bool InitCrypto() noexcept { return sodium_init() >= 0; }

Hash256 Blake2b256(Bytes data) noexcept {
  Hash256 out;
  crypto_generichash(out.data(), out.size(), data.data(), data.size(), nullptr, 0);
  return out;
}

Hasher::Hasher() noexcept {
  crypto_generichash_init(reinterpret_cast<crypto_generichash_state*>(state_), nullptr, 0, 32);
}

Hasher& Hasher::Update(Bytes data) noexcept {
  crypto_generichash_update(reinterpret_cast<crypto_generichash_state*>(state_), data.data(),
                            data.size());
  return *this;
}

Hash256 Hasher::Final() noexcept {
  Hash256 out;
  crypto_generichash_final(reinterpret_cast<crypto_generichash_state*>(state_), out.data(),
                           out.size());
  return out;
}

KeyPair KeyPair::Generate() noexcept {
  KeyPair kp;
  crypto_sign_keypair(kp.public_key.data(), kp.secret_key.data());
  return kp;
}

KeyPair KeyPair::FromSeed(const std::array<uint8_t, 32>& seed) noexcept {
  KeyPair kp;
  crypto_sign_seed_keypair(kp.public_key.data(), kp.secret_key.data(), seed.data());
  return kp;
}

NodeId NodeIdOf(const PublicKey& key) noexcept { return Blake2b256(key); }

Signature Sign(const SecretKey& key, Bytes message) noexcept {
  Signature sig;
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), key.data());
  return sig;
}

bool VerifySignature(const PublicKey& key, Bytes message, const Signature& signature) noexcept {
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                     key.data()) == 0;
}

void RandomBytes(std::span<uint8_t> out) noexcept { randombytes_buf(out.data(), out.size()); }

std::string Hex(Bytes data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.resize(data.size() * 2);
  for (size_t i = 0; i < data.size(); ++i) {
    s[2 * i] = kDigits[data[i] >> 4];
    s[2 * i + 1] = kDigits[data[i] & 15];
  }
  return s;
}

bool ParseHex32(std::string_view text, std::array<uint8_t, 32>* out) noexcept {
  if (text.size() != 64) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(text[2 * i]);
    int lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

std::array<uint8_t, kPongSigningBytes> PongSigningBytes(const Hash256& challenge) noexcept {
  static constexpr char kDomain[16] = {'r', 'i', 'n', 'g', 'p', 'e', 'e', 'r',
                                       '-', 'p', 'o', 'n', 'g', '-', 'v', '1'};
  std::array<uint8_t, kPongSigningBytes> out;
  std::memcpy(out.data(), kDomain, 16);
  std::memcpy(out.data() + 16, challenge.data(), 32);
  return out;
}

}  // namespace ringpeer::wire
