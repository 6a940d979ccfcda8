// Provider records and the round-trip tokens that guard announcements.
//
// ProviderStore keeps "node X at address A provides key K" records with an expiry, in a
// fixed pool: at most records_max in all, per_key_max per key and per_source_max per
// source IP address, so that one address cannot fill the store. Records are threaded on
// two intrusive lists, one per key and one per source address, whose heads sit in two
// open-addressed tables hashed with a secret SipHash key (announcers choose the keys, so
// they must not be able to aim them at one probe chain). Add and Get cost
// O(per_key_max + per_source_max), not O(records_max); only Expire scans the pool.
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
  // `seed` keys the index hash (the Overlay passes a random one).
  explicit ProviderStore(const ProviderLimits& limits, uint64_t seed = 0);
  ProviderStore(const ProviderStore&) = delete;
  ProviderStore& operator=(const ProviderStore&) = delete;

  // Add: records (or refreshes) `provider` for `key` until now + kProviderTtlUs. False when
  // a limit refused it (expired records of the key are reclaimed first, and the whole pool
  // when it is full).
  bool Add(const NodeId& key, const Contact& provider, int64_t now_us) noexcept;
  // Get: up to out.size() live providers of `key`. Returns how many were written.
  size_t Get(const NodeId& key, int64_t now_us, std::span<Contact> out) const noexcept;
  // Expire: frees records past their expiry. O(records_max): housekeeping, every ~10 s.
  void Expire(int64_t now_us) noexcept;
  size_t size() const noexcept { return used_; }
  // CopyFrom: becomes a copy of `other` (the owner shard's store, for a DhtSnapshot the
  // other shards read). No allocation. REQUIRES: both were made with the same limits.
  void CopyFrom(const ProviderStore& other) noexcept;

 private:
  static constexpr uint32_t kNone = 0xFFFFFFFFu;
  enum class Chain : uint8_t { kKey = 0, kSource = 1 };
  struct Links {
    uint32_t prev = kNone;
    uint32_t next = kNone;
  };
  struct Record {
    NodeId key{};
    Contact provider;
    int64_t expires_us = 0;  // 0: free slot
    Links links[2];          // by Chain
  };

  // HashOf: the index hash of record r's key or source (r need not be linked yet).
  uint64_t HashOf(const Record& r, Chain chain) const noexcept;
  static bool SameSource(const Record& a, const Record& b) noexcept;
  // Head: the slot in the chain's table holding the list `probe` belongs to, or the empty
  // slot where its list would go.
  uint32_t HeadSlot(const Record& probe, Chain chain) const noexcept;
  void Link(uint32_t r, Chain chain) noexcept;
  void Unlink(uint32_t r, Chain chain) noexcept;
  void EraseSlot(uint32_t slot, Chain chain) noexcept;
  void Free(uint32_t r) noexcept;
  uint32_t SourceCount(const Record& probe) const noexcept;

  std::vector<Record> records_;
  std::vector<uint32_t> free_;
  std::vector<uint32_t> heads_[2];  // by Chain: open-addressed, linear probing, kNone empty
  uint64_t mask_ = 0;
  std::array<uint8_t, 16> hash_key_{};
  const ProviderLimits limits_;
  size_t used_ = 0;
};

class TokenMint {
 public:
  TokenMint(base::Rng& rng, int64_t now_us) noexcept;
  // A mint with all-zero secrets, to be assigned a real one (a DhtSnapshot's copy of the
  // owner's mint: any shard then makes tokens the owner's Check accepts).
  TokenMint() = default;
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
