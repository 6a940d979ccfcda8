// RoutingTable: Kademlia k-buckets over the 256-bit XOR metric, with a replacement cache.
//
// Only peers that answered a signed challenge are offered to it (the Overlay enforces
// that); the table itself is a pure data structure with no I/O. Its rules:
//  - Buckets split: bucket i < depth-1 holds ids sharing exactly i leading bits with ours;
//    the last bucket holds the rest and splits when it is full, up to buckets_max.
//  - A full bucket keeps newcomers in its replacement cache and asks the caller to probe
//    its least-recently-seen entry; that entry is evicted only when the probe fails.
//  - At most subnet_per_bucket_max entries per /24 (IPv4) or /48 (IPv6) in a bucket and
//    subnet_per_table_max in the table, so that one network cannot fill a table. Pinned
//    (configured static) peers are exempt, and so, unless subnet_limit_private is set, are
//    addresses that are not public (IsNonPublic: loopback, RFC 1918, CGNAT, link-local,
//    ULA): containers and private networks put every node in one /24, and whoever can
//    place many hosts there already controls the network.
//  - Pinned entries are never evicted.
// A bucket's entries (bucket_size of them) are allocated when the table first splits into
// it, and its replacements when it first keeps one (it is full): at most 2 x buckets_max
// allocations in a table's life, the only ones after construction. A node holds the buckets its network fills (about
// log2(N / k) + 2), not buckets_max of them (at 10,000 nodes: ~11 of the simulator's 12,
// 16 of the default 32).
// Owner-shard-local; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/endpoint.h"
#include "base/rng.h"
#include "dht/node_id.h"

namespace ringpeer::dht {

// A node and where to reach it.
struct Contact {
  NodeId id{};
  base::Endpoint addr;
  friend bool operator==(const Contact&, const Contact&) = default;
};

struct RoutingConfig {
  uint32_t bucket_size = 20;             // k: Kademlia's replication parameter
  uint32_t buckets_max = 32;             // 2^32 x k nodes before the last bucket stops splitting
  uint32_t replacements_per_bucket = 8;  // verified spares per bucket
  uint32_t subnet_per_bucket_max = 2;    // entries per /24 or /48 in one bucket
  uint32_t subnet_per_table_max = 10;    // entries per /24 or /48 in the whole table
  // True: the limits above apply to non-public addresses too (loopback stays exempt).
  bool subnet_limit_private = false;
};

// Consecutive request failures after which an entry is stale: lookups skip it and the
// caller probes it (one lost datagram is not enough to distrust a peer).
inline constexpr uint8_t kStaleFailures = 2;
// A full bucket probes its least-recently-seen entry only if it has been silent this long;
// a peer heard from moments ago is alive, and probing it again would be waste.
inline constexpr int64_t kProbeSilenceUs = 60'000'000;

// The small fields sit in the padding after the 20-byte address: 64 bytes, not 72 (the
// table is most of a node's memory: 640 entries by default, ~200 at 10,000 nodes).
struct RoutingEntry {
  NodeId id{};
  base::Endpoint addr;
  uint8_t failures = 0;
  bool pinned = false;
  bool probing = false;
  int64_t last_seen_us = 0;
};
static_assert(sizeof(RoutingEntry) == 64);

enum class AddResult : uint8_t {
  kInserted,     // now in a bucket
  kUpdated,      // was there; refreshed (and its address updated)
  kCached,       // bucket full: kept in the replacement cache
  kSubnetLimit,  // too many entries from its /24 or /48
  kSelf,         // our own id
  kInvalid,      // no usable address
};

struct AddOutcome {
  AddResult result = AddResult::kInvalid;
  bool probe = false;  // the caller should ping `probe_target` (a full bucket's oldest)
  Contact probe_target;
};

class RoutingTable {
 public:
  RoutingTable(const NodeId& self, const RoutingConfig& config);
  RoutingTable(const RoutingTable&) = delete;
  RoutingTable& operator=(const RoutingTable&) = delete;

  // Wants: whether verifying this peer could get it a place (cheap; called before spending
  // a challenge on a stranger). False for known ids, full buckets without stale entries,
  // and subnets at their limit.
  bool Wants(const NodeId& id, const base::Endpoint& addr) const noexcept;
  // Add: a peer that answered our signed challenge. REQUIRES: it did.
  AddOutcome Add(const NodeId& id, const base::Endpoint& addr, int64_t now_us,
                 bool pinned) noexcept;
  // Touch: we heard from `id` at `addr`; clears its failures. False if not in the table
  // (or known at another address, which only a new challenge may change).
  bool Touch(const NodeId& id, const base::Endpoint& addr, int64_t now_us) noexcept;
  // Failed: a request to `id` went unanswered. True when the entry just became stale and
  // the caller should probe it.
  bool Failed(const NodeId& id) noexcept;
  // ProbeFailed: `id` did not answer a probe: evicted unless pinned, and the newest
  // replacement that fits takes its place.
  void ProbeFailed(const NodeId& id, int64_t now_us) noexcept;
  // CancelProbe: the caller could not send the probe it was asked for; ask again later.
  void CancelProbe(const NodeId& id) noexcept;

  // Closest: up to out.size() entries nearest `target`, nearest first, skipping stale ones.
  // Returns how many were written (0 for an empty `out`).
  size_t Closest(const NodeId& target, std::span<Contact> out) const noexcept;
  // RandomContact: a uniformly random non-stale entry; false when there is none.
  bool RandomContact(base::Rng& rng, Contact* out) const noexcept;
  const RoutingEntry* Find(const NodeId& id) const noexcept;
  // LiveSize: the entries that are not stale, among which RandomContact picks: a walk's
  // degree (O(size), fine for a few hundred entries once per walk request).
  size_t LiveSize() const noexcept;
  // HoldsLive: `id` is an entry and not stale.
  bool HoldsLive(const NodeId& id) const noexcept {
    const RoutingEntry* e = Find(id);
    return e != nullptr && !IsStale(*e);
  }

  // HeardAtHost: a non-stale entry at `addr`'s host (any port), heard from within
  // `window_us`. Each entry answered a signed challenge at its address before it was
  // added, so this vouches that the host receives what we send it (the reflection guard
  // asks it; see node/core/reflection_guard.h). O(size): off the common path only.
  bool HeardAtHost(const base::Endpoint& addr, int64_t now_us, int64_t window_us) const noexcept;

  size_t size() const noexcept { return size_; }
  uint32_t depth() const noexcept { return depth_; }
  size_t BucketSize(uint32_t b) const noexcept { return counts_[b]; }
  size_t ReplacementCount(uint32_t b) const noexcept { return repl_counts_[b]; }
  // BucketOf: which bucket `id` falls into now.
  uint32_t BucketOf(const NodeId& id) const noexcept;
  const NodeId& self() const noexcept { return self_; }
  const RoutingConfig& config() const noexcept { return config_; }

  // ForEach: calls f(const RoutingEntry&) for every entry (persistence, snapshots).
  template <typename F>
  void ForEach(F&& f) const {
    for (uint32_t b = 0; b < depth_; ++b) {
      for (uint32_t i = 0; i < counts_[b]; ++i) f(buckets_[b].entries[i]);
    }
  }

 private:
  struct Spare {
    Contact contact;
    int64_t last_seen_us = 0;
  };
  struct Bucket {
    std::unique_ptr<RoutingEntry[]> entries;  // k of them
    std::unique_ptr<Spare[]> spares;          // replacements_per_bucket of them
  };

  RoutingEntry* Slot(uint32_t b, uint32_t i) noexcept { return &buckets_[b].entries[i]; }
  const RoutingEntry& At(uint32_t b, uint32_t i) const noexcept { return buckets_[b].entries[i]; }
  // Allocate: gives bucket b its entries (construction, and splits).
  void Allocate(uint32_t b);
  // Spares: bucket b's replacement cache, allocated at its first use (a full bucket).
  Spare* Spares(uint32_t b);
  int IndexIn(uint32_t b, const NodeId& id) const noexcept;
  bool SubnetAllows(uint32_t b, const base::Endpoint& addr, const NodeId* ignore) const noexcept;
  void Split() noexcept;
  void Cache(uint32_t b, const Contact& c, int64_t now_us) noexcept;
  void RemoveAt(uint32_t b, uint32_t i) noexcept;
  void Promote(uint32_t b) noexcept;
  bool IsStale(const RoutingEntry& e) const noexcept { return e.failures >= kStaleFailures; }

  const NodeId self_;
  const RoutingConfig config_;
  const uint32_t k_;
  uint32_t depth_ = 1;
  size_t size_ = 0;
  std::vector<Bucket> buckets_;  // buckets_max; those below depth_ allocated
  std::vector<uint8_t> counts_;
  std::vector<uint8_t> repl_counts_;
};

// BucketsFor: a buckets_max that a network of about `nodes` nodes never outgrows. The
// last bucket holds the ids sharing at least depth - 1 bits with ours, about
// nodes / 2^(depth - 1) of them; with this many buckets that is at most k / 4, so the last
// bucket is full (and would want to split further) with a probability below 1e-6 (a
// Poisson of mean 5 above 20 at k = 20), and the table holds what an unbounded one would.
uint32_t BucketsFor(uint64_t nodes, uint32_t bucket_size) noexcept;

// SameSubnet: both in one /24 (IPv4) or /48 (IPv6).
bool SameSubnet(const base::Endpoint& a, const base::Endpoint& b) noexcept;
// IsLoopback: 127.0.0.0/8 or ::1 (exempt from subnet limits: local test networks).
bool IsLoopback(const base::Endpoint& a) noexcept;
// IsNonPublic: loopback, 10/8, 172.16/12, 192.168/16 (RFC 1918), 100.64/10 (CGNAT),
// 169.254/16 and fe80::/10 (link-local), fc00::/7 (ULA, RFC 4193).
bool IsNonPublic(const base::Endpoint& a) noexcept;

}  // namespace ringpeer::dht
