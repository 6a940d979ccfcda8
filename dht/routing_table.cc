#include "dht/routing_table.h"

#include <algorithm>

#include "base/assert.h"

namespace ringpeer::dht {

// Counts are stored in bytes; keep the configured sizes inside them.
static constexpr uint32_t kPerBucketMax = 255;

uint32_t BucketsFor(uint64_t nodes, uint32_t bucket_size) noexcept {
  const uint64_t last_max = std::max<uint32_t>(1, bucket_size / 4);
  uint32_t buckets = 1;
  // last_max << 61 exceeds any uint64_t node count, so the shift never overflows.
  while (buckets < 62 && (last_max << (buckets - 1)) < nodes) ++buckets;
  return buckets;
}

bool SameSubnet(const base::Endpoint& a, const base::Endpoint& b) noexcept {
  if (a.family != b.family) return false;
  const size_t bytes = a.is_v4() ? 3 : 6;  // /24 or /48
  return std::equal(a.ip.begin(), a.ip.begin() + bytes, b.ip.begin());
}

bool IsLoopback(const base::Endpoint& a) noexcept {
  if (a.is_v4()) return a.ip[0] == 127;
  if (a.family != base::Endpoint::Family::kV6) return false;
  for (int i = 0; i < 15; ++i) {
    if (a.ip[i] != 0) return false;
  }
  return a.ip[15] == 1;
}

bool IsNonPublic(const base::Endpoint& a) noexcept {
  if (IsLoopback(a)) return true;
  const auto& ip = a.ip;
  if (a.is_v4()) {
    return ip[0] == 10 || (ip[0] == 172 && (ip[1] & 0xF0) == 16) ||
           (ip[0] == 192 && ip[1] == 168) || (ip[0] == 100 && (ip[1] & 0xC0) == 64) ||
           (ip[0] == 169 && ip[1] == 254);
  }
  if (a.family != base::Endpoint::Family::kV6) return false;
  return (ip[0] & 0xFE) == 0xFC || (ip[0] == 0xFE && (ip[1] & 0xC0) == 0x80);
}

RoutingTable::RoutingTable(const NodeId& self, const RoutingConfig& config)
    : self_(self), config_(config), k_(config.bucket_size) {
  RP_ASSERT(config_.bucket_size > 0);
  RP_ASSERT(config_.bucket_size <= kPerBucketMax);
  RP_ASSERT(config_.replacements_per_bucket <= kPerBucketMax);
  RP_ASSERT(config_.buckets_max >= 1);
  RP_ASSERT(config_.buckets_max <= static_cast<uint32_t>(kIdBits));
  buckets_.resize(config_.buckets_max);
  counts_.assign(config_.buckets_max, 0);
  repl_counts_.assign(config_.buckets_max, 0);
  Allocate(0);
}

void RoutingTable::Allocate(uint32_t b) {
  buckets_[b].entries = std::make_unique<RoutingEntry[]>(k_);
}

RoutingTable::Spare* RoutingTable::Spares(uint32_t b) {
  // A bucket's spares are allocated when it first keeps one (it is full): the last few
  // buckets of a table rarely fill, and hold none.
  if (!buckets_[b].spares) {
    buckets_[b].spares = std::make_unique<Spare[]>(config_.replacements_per_bucket);
  }
  return buckets_[b].spares.get();
}

uint32_t RoutingTable::BucketOf(const NodeId& id) const noexcept {
  const int cpl = CommonPrefixBits(self_, id);
  return std::min<uint32_t>(static_cast<uint32_t>(cpl), depth_ - 1);
}

int RoutingTable::IndexIn(uint32_t b, const NodeId& id) const noexcept {
  for (uint32_t i = 0; i < counts_[b]; ++i) {
    if (At(b, i).id == id) return static_cast<int>(i);
  }
  return -1;
}

bool RoutingTable::SubnetAllows(uint32_t b, const base::Endpoint& addr,
                                const NodeId* ignore) const noexcept {
  if (IsLoopback(addr)) return true;
  if (!config_.subnet_limit_private && IsNonPublic(addr)) return true;
  uint32_t in_bucket = 0, in_table = 0;
  for (uint32_t bb = 0; bb < depth_; ++bb) {
    for (uint32_t i = 0; i < counts_[bb]; ++i) {
      const RoutingEntry& e = At(bb, i);
      if (e.pinned || (ignore != nullptr && e.id == *ignore)) continue;
      if (!SameSubnet(e.addr, addr)) continue;
      ++in_table;
      if (bb == b) ++in_bucket;
    }
  }
  return in_bucket < config_.subnet_per_bucket_max && in_table < config_.subnet_per_table_max;
}

bool RoutingTable::Wants(const NodeId& id, const base::Endpoint& addr) const noexcept {
  if (id == self_ || !addr.valid()) return false;
  const uint32_t b = BucketOf(id);
  if (IndexIn(b, id) >= 0) return false;
  if (!SubnetAllows(b, addr, nullptr)) return false;
  if (counts_[b] < k_) return true;
  if (b == depth_ - 1 && depth_ < config_.buckets_max) return true;  // it would split
  for (uint32_t i = 0; i < counts_[b]; ++i) {
    if (IsStale(At(b, i))) return true;  // a spare would soon be promoted
  }
  return repl_counts_[b] < config_.replacements_per_bucket / 2;
}

void RoutingTable::Split() noexcept {
  RP_ASSERT(depth_ < config_.buckets_max);
  const uint32_t last = depth_ - 1;
  // The new bucket's storage, allocated now: a table splits at most buckets_max - 1 times
  // in its life (a node's first minutes), so this is no per-message allocation, and a
  // node holds only the buckets its network fills. Running out of memory here aborts, as
  // at construction.
  Allocate(last + 1);
  ++depth_;
  // Entries of the old last bucket that share more than `last` bits move down one bucket.
  for (uint32_t i = 0; i < counts_[last];) {
    RoutingEntry& e = *Slot(last, i);
    if (static_cast<uint32_t>(CommonPrefixBits(self_, e.id)) > last) {
      *Slot(last + 1, counts_[last + 1]++) = e;
      *Slot(last, i) = *Slot(last, counts_[last] - 1);
      --counts_[last];
    } else {
      ++i;
    }
  }
  for (uint32_t i = 0; i < repl_counts_[last];) {
    Spare& s = buckets_[last].spares[i];
    if (static_cast<uint32_t>(CommonPrefixBits(self_, s.contact.id)) > last) {
      Spares(last + 1)[repl_counts_[last + 1]++] = s;
      s = buckets_[last].spares[repl_counts_[last] - 1];
      --repl_counts_[last];
    } else {
      ++i;
    }
  }
}

void RoutingTable::Cache(uint32_t b, const Contact& c, int64_t now_us) noexcept {
  const uint32_t r = config_.replacements_per_bucket;
  if (r == 0) return;
  Spare* spares = Spares(b);
  uint32_t oldest = 0;
  for (uint32_t i = 0; i < repl_counts_[b]; ++i) {
    if (spares[i].contact.id == c.id) {
      spares[i] = Spare{c, now_us};
      return;
    }
    if (spares[i].last_seen_us < spares[oldest].last_seen_us) oldest = i;
  }
  if (repl_counts_[b] < r) {
    spares[repl_counts_[b]++] = Spare{c, now_us};
  } else {
    spares[oldest] = Spare{c, now_us};  // the newest verified spares are the likeliest alive
  }
}

AddOutcome RoutingTable::Add(const NodeId& id, const base::Endpoint& addr, int64_t now_us,
                             bool pinned) noexcept {
  AddOutcome out;
  if (id == self_) return out.result = AddResult::kSelf, out;
  if (!addr.valid()) return out.result = AddResult::kInvalid, out;
  uint32_t b = BucketOf(id);
  const int at = IndexIn(b, id);
  if (at >= 0) {
    RoutingEntry& e = *Slot(b, static_cast<uint32_t>(at));
    // A new address for a known id: the caller verified it there, so believe it.
    if (!(e.addr == addr) && !pinned && !e.pinned && !SubnetAllows(b, addr, &id)) {
      return out.result = AddResult::kSubnetLimit, out;
    }
    e.addr = addr;
    e.last_seen_us = now_us;
    e.failures = 0;
    e.pinned = e.pinned || pinned;
    return out.result = AddResult::kUpdated, out;
  }
  // Split the last bucket while it is the full one (each split moves about half out).
  while (counts_[b] >= k_ && b == depth_ - 1 && depth_ < config_.buckets_max) {
    Split();
    b = BucketOf(id);
  }
  if (!pinned && !SubnetAllows(b, addr, nullptr)) return out.result = AddResult::kSubnetLimit, out;
  if (counts_[b] < k_) {
    *Slot(b, counts_[b]++) = RoutingEntry{.id = id, .addr = addr, .pinned = pinned,
                                          .last_seen_us = now_us};
    ++size_;
    return out.result = AddResult::kInserted, out;
  }
  Cache(b, Contact{id, addr}, now_us);
  out.result = AddResult::kCached;
  // Probe the least-recently-seen unpinned entry, if it has been quiet long enough.
  RoutingEntry* oldest = nullptr;
  for (uint32_t i = 0; i < counts_[b]; ++i) {
    RoutingEntry* e = Slot(b, i);
    if (e->pinned) continue;
    if (oldest == nullptr || e->last_seen_us < oldest->last_seen_us) oldest = e;
  }
  if (oldest != nullptr && !oldest->probing &&
      (now_us - oldest->last_seen_us >= kProbeSilenceUs || IsStale(*oldest))) {
    oldest->probing = true;
    out.probe = true;
    out.probe_target = Contact{oldest->id, oldest->addr};
  }
  return out;
}

bool RoutingTable::Touch(const NodeId& id, const base::Endpoint& addr, int64_t now_us) noexcept {
  const uint32_t b = BucketOf(id);
  const int at = IndexIn(b, id);
  if (at < 0) return false;
  RoutingEntry& e = *Slot(b, static_cast<uint32_t>(at));
  if (!(e.addr == addr)) return false;
  e.last_seen_us = now_us;
  e.failures = 0;
  e.probing = false;
  return true;
}

bool RoutingTable::Failed(const NodeId& id) noexcept {
  const uint32_t b = BucketOf(id);
  const int at = IndexIn(b, id);
  if (at < 0) return false;
  RoutingEntry& e = *Slot(b, static_cast<uint32_t>(at));
  if (e.failures < 255) ++e.failures;
  if (e.failures < kStaleFailures || e.probing) return false;
  e.probing = true;
  return true;
}

void RoutingTable::RemoveAt(uint32_t b, uint32_t i) noexcept {
  RP_ASSERT(i < counts_[b]);
  *Slot(b, i) = *Slot(b, counts_[b] - 1);
  --counts_[b];
  --size_;
}

void RoutingTable::Promote(uint32_t b) noexcept {
  Spare* spares = buckets_[b].spares.get();
  // Newest first: it was verified most recently.
  while (repl_counts_[b] > 0 && counts_[b] < k_) {
    uint32_t newest = 0;
    for (uint32_t i = 1; i < repl_counts_[b]; ++i) {
      if (spares[i].last_seen_us > spares[newest].last_seen_us) newest = i;
    }
    const Spare s = spares[newest];
    spares[newest] = spares[repl_counts_[b] - 1];
    --repl_counts_[b];
    if (IndexIn(b, s.contact.id) >= 0 || !SubnetAllows(b, s.contact.addr, nullptr)) continue;
    *Slot(b, counts_[b]++) =
        RoutingEntry{.id = s.contact.id, .addr = s.contact.addr, .last_seen_us = s.last_seen_us};
    ++size_;
    return;
  }
}

void RoutingTable::ProbeFailed(const NodeId& id, int64_t now_us) noexcept {
  const uint32_t b = BucketOf(id);
  const int at = IndexIn(b, id);
  if (at < 0) return;
  RoutingEntry& e = *Slot(b, static_cast<uint32_t>(at));
  e.probing = false;
  if (e.pinned) {
    if (e.failures < 255) ++e.failures;
    return;
  }
  RemoveAt(b, static_cast<uint32_t>(at));
  Promote(b);
}

void RoutingTable::CancelProbe(const NodeId& id) noexcept {
  const uint32_t b = BucketOf(id);
  const int at = IndexIn(b, id);
  if (at >= 0) Slot(b, static_cast<uint32_t>(at))->probing = false;
}

size_t RoutingTable::Closest(const NodeId& target, std::span<Contact> out) const noexcept {
  // Insertion into a small sorted array: n <= ~32, the table holds a few hundred entries.
  size_t n = 0;
  uint64_t keys[64];
  const size_t cap = std::min<size_t>(out.size(), 64);
  // An empty span (a FindNode asking for 0 nodes) wants nothing: without this, the first
  // entry meets n == cap at once and reads and writes index n - 1, SIZE_MAX.
  if (cap == 0) return 0;
  for (uint32_t b = 0; b < depth_; ++b) {
    for (uint32_t i = 0; i < counts_[b]; ++i) {
      const RoutingEntry& e = At(b, i);
      if (IsStale(e)) continue;
      const uint64_t key = DistanceKey(e.id, target);
      if (n == cap && !(key < keys[n - 1] ||
                        (key == keys[n - 1] && CloserTo(target, e.id, out[n - 1].id)))) {
        continue;
      }
      size_t j = n < cap ? n++ : n - 1;
      while (j > 0 && (keys[j - 1] > key ||
                       (keys[j - 1] == key && CloserTo(target, e.id, out[j - 1].id)))) {
        keys[j] = keys[j - 1];
        out[j] = out[j - 1];
        --j;
      }
      keys[j] = key;
      out[j] = Contact{e.id, e.addr};
    }
  }
  return n;
}

bool RoutingTable::RandomContact(base::Rng& rng, Contact* out) const noexcept {
  if (size_ == 0) return false;
  // A few tries at a uniform pick; stale entries are rare, so this almost always succeeds.
  for (int attempt = 0; attempt < 4; ++attempt) {
    uint64_t r = rng.Uniform(size_);
    for (uint32_t b = 0; b < depth_; ++b) {
      if (r < counts_[b]) {
        const RoutingEntry& e = At(b, static_cast<uint32_t>(r));
        if (IsStale(e)) break;
        *out = Contact{e.id, e.addr};
        return true;
      }
      r -= counts_[b];
    }
  }
  return false;
}

size_t RoutingTable::LiveSize() const noexcept {
  size_t n = 0;
  ForEach([&](const RoutingEntry& e) { n += !IsStale(e); });
  RP_ASSERT(n <= size_);
  return n;
}

bool RoutingTable::HeardAtHost(const base::Endpoint& addr, int64_t now_us,
                               int64_t window_us) const noexcept {
  for (uint32_t b = 0; b < depth_; ++b) {
    for (uint32_t i = 0; i < counts_[b]; ++i) {
      const RoutingEntry& e = At(b, i);
      if (e.addr.family == addr.family && e.addr.ip == addr.ip && !IsStale(e) &&
          now_us - e.last_seen_us < window_us) {
        return true;
      }
    }
  }
  return false;
}

const RoutingEntry* RoutingTable::Find(const NodeId& id) const noexcept {
  const uint32_t b = BucketOf(id);
  const int at = IndexIn(b, id);
  return at < 0 ? nullptr : &At(b, static_cast<uint32_t>(at));
}

}  // namespace ringpeer::dht
