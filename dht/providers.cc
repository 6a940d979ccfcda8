#include "dht/providers.h"

#include <sodium.h>

#include <algorithm>

#include "base/assert.h"

namespace ringpeer::dht {

ProviderStore::ProviderStore(const ProviderLimits& limits) : limits_(limits) {
  RP_ASSERT(limits.records_max > 0);
  RP_ASSERT(limits.per_key_max > 0);
  records_.resize(limits.records_max);
}

bool ProviderStore::Add(const NodeId& key, const Contact& provider, int64_t now_us) noexcept {
  uint32_t per_key = 0, per_source = 0;
  Record* free_slot = nullptr;
  Record* oldest_of_key = nullptr;
  for (Record& r : records_) {
    if (r.expires_us != 0 && r.expires_us <= now_us) {  // reclaim on the way
      r = Record{};
      --used_;
    }
    if (r.expires_us == 0) {
      if (free_slot == nullptr) free_slot = &r;
      continue;
    }
    if (r.key == key && r.provider.id == provider.id) {
      r.provider = provider;  // a provider that moved: its latest address wins
      r.expires_us = now_us + kProviderTtlUs;
      return true;
    }
    if (r.key == key) {
      ++per_key;
      if (oldest_of_key == nullptr || r.expires_us < oldest_of_key->expires_us) oldest_of_key = &r;
    }
    if (r.provider.addr.HashAddressOnly() == provider.addr.HashAddressOnly() &&
        r.provider.addr.family == provider.addr.family &&
        std::equal(r.provider.addr.ip.begin(), r.provider.addr.ip.end(),
                   provider.addr.ip.begin())) {
      ++per_source;
    }
  }
  if (per_source >= limits_.per_source_max) return false;
  Record* slot = free_slot;
  if (per_key >= limits_.per_key_max) {
    slot = oldest_of_key;  // a key's freshest announcers are the likeliest alive
  } else if (slot == nullptr) {
    return false;
  } else {
    ++used_;
  }
  RP_ASSERT(slot != nullptr);
  *slot = Record{key, provider, now_us + kProviderTtlUs};
  return true;
}

size_t ProviderStore::Get(const NodeId& key, int64_t now_us,
                          std::span<Contact> out) const noexcept {
  size_t n = 0;
  for (const Record& r : records_) {
    if (n == out.size()) break;
    if (r.expires_us > now_us && r.key == key) out[n++] = r.provider;
  }
  return n;
}

void ProviderStore::Expire(int64_t now_us) noexcept {
  for (Record& r : records_) {
    if (r.expires_us != 0 && r.expires_us <= now_us) {
      r = Record{};
      --used_;
    }
  }
}

TokenMint::TokenMint(base::Rng& rng, int64_t now_us) noexcept : rotated_us_(now_us) {
  rng.Fill(secret_);
  rng.Fill(previous_);
}

void TokenMint::MaybeRotate(base::Rng& rng, int64_t now_us) noexcept {
  if (now_us - rotated_us_ < kTokenRotateUs) return;
  previous_ = secret_;
  rng.Fill(secret_);
  rotated_us_ = now_us;
}

Token TokenMint::MakeWith(const std::array<uint8_t, 32>& secret,
                          const base::Endpoint& addr) noexcept {
  uint8_t msg[19];
  std::copy(addr.ip.begin(), addr.ip.end(), msg);
  msg[16] = static_cast<uint8_t>(addr.port);
  msg[17] = static_cast<uint8_t>(addr.port >> 8);
  msg[18] = static_cast<uint8_t>(addr.family);
  Token t;
  crypto_generichash(t.data(), t.size(), msg, sizeof(msg), secret.data(), secret.size());
  return t;
}

Token TokenMint::Make(const base::Endpoint& addr) const noexcept {
  return MakeWith(secret_, addr);
}

bool TokenMint::Check(const base::Endpoint& addr, const Token& token) const noexcept {
  // Constant-time compares: a token is a MAC, and timing must not reveal its bytes.
  const Token a = MakeWith(secret_, addr);
  if (sodium_memcmp(a.data(), token.data(), token.size()) == 0) return true;
  const Token b = MakeWith(previous_, addr);
  return sodium_memcmp(b.data(), token.data(), token.size()) == 0;
}

}  // namespace ringpeer::dht
