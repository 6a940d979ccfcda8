#include "dht/providers.h"

#include <sodium.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "base/assert.h"

namespace ringpeer::dht {

ProviderStore::ProviderStore(const ProviderLimits& limits, uint64_t seed) : limits_(limits) {
  RP_ASSERT(limits.records_max > 0);
  RP_ASSERT(limits.records_max < kNone / 2);
  RP_ASSERT(limits.per_key_max > 0);
  records_.resize(limits.records_max);
  free_.reserve(limits.records_max);
  for (uint32_t i = limits.records_max; i > 0; --i) free_.push_back(i - 1);
  // At most records_max lists per chain, so the tables stay at most half full.
  const uint64_t slots = std::bit_ceil(uint64_t{limits.records_max} * 2);
  mask_ = slots - 1;
  heads_[0].assign(slots, kNone);
  heads_[1].assign(slots, kNone);
  std::memcpy(hash_key_.data(), &seed, sizeof(seed));
  hash_key_[15] = 0x5A;
}

void ProviderStore::CopyFrom(const ProviderStore& other) noexcept {
  RP_ASSERT(records_.size() == other.records_.size() && mask_ == other.mask_);
  RP_ASSERT(free_.capacity() >= other.free_.size());
  std::copy(other.records_.begin(), other.records_.end(), records_.begin());
  free_.assign(other.free_.begin(), other.free_.end());  // within capacity: no allocation
  for (int c = 0; c < 2; ++c) {
    std::copy(other.heads_[c].begin(), other.heads_[c].end(), heads_[c].begin());
  }
  hash_key_ = other.hash_key_;
  used_ = other.used_;
}

uint64_t ProviderStore::HashOf(const Record& r, Chain chain) const noexcept {
  uint8_t h[crypto_shorthash_BYTES];
  if (chain == Chain::kKey) {
    crypto_shorthash(h, r.key.data(), r.key.size(), hash_key_.data());
  } else {
    uint8_t src[17];
    std::copy(r.provider.addr.ip.begin(), r.provider.addr.ip.end(), src);
    src[16] = static_cast<uint8_t>(r.provider.addr.family);
    crypto_shorthash(h, src, sizeof(src), hash_key_.data());
  }
  uint64_t v;
  std::memcpy(&v, h, sizeof(v));
  return v;
}

bool ProviderStore::SameSource(const Record& a, const Record& b) noexcept {
  return a.provider.addr.family == b.provider.addr.family &&
         a.provider.addr.ip == b.provider.addr.ip;
}

uint32_t ProviderStore::HeadSlot(const Record& probe, Chain chain) const noexcept {
  const std::vector<uint32_t>& t = heads_[static_cast<int>(chain)];
  // Terminates: the table is at most half full, so an empty slot is always reached.
  for (uint64_t i = HashOf(probe, chain) & mask_;; i = (i + 1) & mask_) {
    const uint32_t head = t[i];
    if (head == kNone) return static_cast<uint32_t>(i);
    const Record& r = records_[head];
    if (chain == Chain::kKey ? r.key == probe.key : SameSource(r, probe)) {
      return static_cast<uint32_t>(i);
    }
  }
}

void ProviderStore::Link(uint32_t ri, Chain chain) noexcept {
  const int c = static_cast<int>(chain);
  const uint32_t slot = HeadSlot(records_[ri], chain);
  uint32_t& head = heads_[c][slot];
  Links& l = records_[ri].links[c];
  l.prev = kNone;
  l.next = head;
  if (head != kNone) records_[head].links[c].prev = ri;
  head = ri;
}

void ProviderStore::Unlink(uint32_t ri, Chain chain) noexcept {
  const int c = static_cast<int>(chain);
  Links& l = records_[ri].links[c];
  if (l.next != kNone) records_[l.next].links[c].prev = l.prev;
  if (l.prev != kNone) {
    records_[l.prev].links[c].next = l.next;
  } else {
    const uint32_t slot = HeadSlot(records_[ri], chain);
    RP_ASSERT(heads_[c][slot] == ri);
    if (l.next != kNone) {
      heads_[c][slot] = l.next;
    } else {
      EraseSlot(slot, chain);
    }
  }
  l = Links{};
}

void ProviderStore::EraseSlot(uint32_t slot, Chain chain) noexcept {
  // Backward-shift deletion: no tombstones, so probe chains never grow with churn.
  std::vector<uint32_t>& t = heads_[static_cast<int>(chain)];
  uint64_t hole = slot;
  for (uint64_t j = (hole + 1) & mask_; t[j] != kNone; j = (j + 1) & mask_) {
    const uint64_t home = HashOf(records_[t[j]], chain) & mask_;
    // Move t[j] into the hole unless its home lies cyclically in (hole, j].
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    t[hole] = t[j];
    hole = j;
  }
  t[hole] = kNone;
}

void ProviderStore::Free(uint32_t ri) noexcept {
  Unlink(ri, Chain::kKey);
  Unlink(ri, Chain::kSource);
  records_[ri] = Record{};
  free_.push_back(ri);
  RP_ASSERT(used_ > 0);
  --used_;
}

uint32_t ProviderStore::SourceCount(const Record& probe) const noexcept {
  uint32_t n = 0;
  for (uint32_t r = heads_[1][HeadSlot(probe, Chain::kSource)]; r != kNone;
       r = records_[r].links[1].next) {
    ++n;
  }
  return n;
}

bool ProviderStore::Add(const NodeId& key, const Contact& provider, int64_t now_us) noexcept {
  Record probe;
  probe.key = key;
  probe.provider = provider;
  uint32_t per_key = 0;
  uint32_t oldest_of_key = kNone;
  for (uint32_t r = heads_[0][HeadSlot(probe, Chain::kKey)]; r != kNone;) {
    Record& rec = records_[r];
    const uint32_t next = rec.links[0].next;
    if (rec.expires_us <= now_us) {  // reclaim on the way
      Free(r);
    } else if (rec.provider.id == provider.id) {
      if (!(rec.provider.addr == provider.addr)) {
        // A provider that moved: its latest address wins, and counts against its source.
        const bool same_source = SameSource(rec, probe);
        if (!same_source && SourceCount(probe) >= limits_.per_source_max) return false;
        if (!same_source) Unlink(r, Chain::kSource);
        rec.provider = provider;
        if (!same_source) Link(r, Chain::kSource);
      }
      rec.expires_us = now_us + kProviderTtlUs;
      return true;
    } else {
      ++per_key;
      if (oldest_of_key == kNone || rec.expires_us < records_[oldest_of_key].expires_us) {
        oldest_of_key = r;
      }
    }
    r = next;
  }
  if (SourceCount(probe) >= limits_.per_source_max) return false;
  uint32_t slot = kNone;
  if (per_key >= limits_.per_key_max) {
    slot = oldest_of_key;  // a key's freshest announcers are the likeliest alive
    Free(slot);
    free_.pop_back();  // the slot Free just returned
  } else {
    if (free_.empty()) Expire(now_us);  // full: O(records_max), and only then
    if (free_.empty()) return false;
    slot = free_.back();
    free_.pop_back();
  }
  RP_ASSERT(slot != kNone);
  records_[slot] = Record{key, provider, now_us + kProviderTtlUs, {}};
  Link(slot, Chain::kKey);
  Link(slot, Chain::kSource);
  ++used_;
  return true;
}

size_t ProviderStore::Get(const NodeId& key, int64_t now_us,
                          std::span<Contact> out) const noexcept {
  Record probe;
  probe.key = key;
  size_t n = 0;
  for (uint32_t r = heads_[0][HeadSlot(probe, Chain::kKey)]; r != kNone && n < out.size();
       r = records_[r].links[0].next) {
    if (records_[r].expires_us > now_us) out[n++] = records_[r].provider;
  }
  return n;
}

void ProviderStore::Expire(int64_t now_us) noexcept {
  for (uint32_t r = 0; r < records_.size(); ++r) {
    if (records_[r].expires_us != 0 && records_[r].expires_us <= now_us) Free(r);
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
