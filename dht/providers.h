// Provider records and the round-trip tokens that guard announcements.
//
// ProviderStore keeps "node X at address A provides key K" records with an expiry, in a
// fixed pool: at most records_max in all, per_key_max per key and per_source_max per
// source IP address, so that one address cannot fill the store. Lookups scan the pool:
// O(records_max), fine up to a few thousand records on the owner shard.
//
// TokenMint issues the token a GetProviders answer carries: a keyed BLAKE2b of the
// requester's address under a secret that rotates every kTokenRotateUs. An Announce is
// accepted only with a token minted for the address it comes from, under the current or
// the previous secret, which proves that the announcer received our earlier answer there
// (no announcing on behalf of a spoofed address).
// Owner-shard-local; not thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "base/rng.h"
#include "dht/routing_table.h"

namespace ringpeer::dht {

inline constexpr int64_t kProviderTtlUs = 30 * 60 * 1'000'000ll;     // record lifetime
inline constexpr int64_t kRepublishUs = 20 * 60 * 1'000'000ll;       // announcer refresh
inline constexpr int64_t kTokenRotateUs = 5 * 60 * 1'000'000ll;      // secret lifetime

struct ProviderLimits {
  uint32_t records_max = 4096;  // total records on this node
  uint32_t per_key_max = 20;    // providers kept per key (k: enough to find one alive)
  uint32_t per_source_max = 16; // records one IP address may hold here
};

using Token = std::array<uint8_t, 16>;

class ProviderStore {
 public:
  explicit ProviderStore(const ProviderLimits& limits);
  ProviderStore(const ProviderStore&) = delete;
  ProviderStore& operator=(const ProviderStore&) = delete;

  // Add: records (or refreshes) `provider` for `key` until now + kProviderTtlUs. False when
  // a limit refused it (expired records are reclaimed first).
  bool Add(const NodeId& key, const Contact& provider, int64_t now_us) noexcept;
  // Get: up to out.size() live providers of `key`. Returns how many were written.
  size_t Get(const NodeId& key, int64_t now_us, std::span<Contact> out) const noexcept;
  // Expire: frees records past their expiry.
  void Expire(int64_t now_us) noexcept;
  size_t size() const noexcept { return used_; }

 private:
  struct Record {
    NodeId key{};
    Contact provider;
    int64_t expires_us = 0;  // 0: free slot
  };
  std::vector<Record> records_;
  const ProviderLimits limits_;
  size_t used_ = 0;
};

class TokenMint {
 public:
  TokenMint(base::Rng& rng, int64_t now_us) noexcept;
  // Rotate: starts a new secret when the current one is kTokenRotateUs old.
  void MaybeRotate(base::Rng& rng, int64_t now_us) noexcept;
  Token Make(const base::Endpoint& addr) const noexcept;
  // Check: whether `token` was minted for `addr` under the current or previous secret.
  bool Check(const base::Endpoint& addr, const Token& token) const noexcept;

 private:
  static Token MakeWith(const std::array<uint8_t, 32>& secret,
                        const base::Endpoint& addr) noexcept;
  std::array<uint8_t, 32> secret_{};
  std::array<uint8_t, 32> previous_{};
  int64_t rotated_us_ = 0;
};

}  // namespace ringpeer::dht
