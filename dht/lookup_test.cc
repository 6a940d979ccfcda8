// Goal: the pure pieces of the DHT behave on their own: a Lookup converges on the true
// nearest ids of a synthetic network (with and without disjoint paths, with silent
// nodes), provider tokens bind to the address and reject forgeries, the provider store
// keeps its per-key, per-address and total bounds, the seen-set stays bounded, and the
// size estimators are unbiased on synthetic id sets. Method: a Lookup driven against an
// in-memory "network" (every node knows its 20 nearest plus random others), fixed seeds.
#include "dht/lookup.h"

#include <gtest/gtest.h>

#include <map>

#include <algorithm>
#include <cmath>
#include <set>

#include "dht/providers.h"
#include "dht/size_estimate.h"
#include "dht/snapshot.h"
#include "wire/encode.h"

namespace ringpeer::dht {
namespace {

base::Endpoint AddrOf(uint32_t i) {
  base::Endpoint e;
  e.family = base::Endpoint::Family::kV4;
  e.ip[0] = 10;
  e.ip[1] = static_cast<uint8_t>(i >> 8);
  e.ip[2] = static_cast<uint8_t>(i);
  e.ip[3] = 1;
  e.port = 7700;
  return e;
}

// A synthetic network: node i answers with the 20 ids nearest the target among what it
// knows (its 30 nearest neighbours and 60 random nodes).
struct Synthetic {
  explicit Synthetic(uint32_t n, uint64_t seed) : rng(seed) {
    for (uint32_t i = 0; i < n; ++i) ids.push_back(RandomId(rng));
    for (uint32_t i = 0; i < n; ++i) {
      std::vector<uint32_t> all(n);
      for (uint32_t j = 0; j < n; ++j) all[j] = j;
      std::partial_sort(all.begin(), all.begin() + 31, all.end(), [&](uint32_t a, uint32_t b) {
        return CloserTo(ids[i], ids[a], ids[b]);
      });
      std::vector<uint32_t> k(all.begin() + 1, all.begin() + 31);
      for (int r = 0; r < 60; ++r) k.push_back(static_cast<uint32_t>(rng.Uniform(n)));
      knows.push_back(k);
    }
  }
  std::vector<Contact> Answer(uint32_t node, const NodeId& target) const {
    std::vector<uint32_t> k = knows[node];
    std::sort(k.begin(), k.end(), [&](uint32_t a, uint32_t b) { return CloserTo(target, ids[a], ids[b]); });
    k.erase(std::unique(k.begin(), k.end()), k.end());
    std::vector<Contact> out;
    for (size_t i = 0; i < k.size() && out.size() < 20; ++i) out.push_back(Contact{ids[k[i]], AddrOf(k[i])});
    return out;
  }
  uint32_t IndexOf(const Contact& c) const { return uint32_t{c.addr.ip[1]} << 8 | c.addr.ip[2]; }
  base::Rng rng;
  std::vector<NodeId> ids;
  std::vector<std::vector<uint32_t>> knows;
};

// Drives `l` to completion; nodes in `silent` never answer. Returns rounds of requests.
int Drive(Lookup& l, const Synthetic& net, const std::set<uint32_t>& silent) {
  int waves = 0;
  while (!l.Done() && waves < 100) {
    ++waves;
    std::vector<int> sent;
    for (int c = l.Next(); c >= 0; c = l.Next()) sent.push_back(c);
    for (int c : sent) {
      const uint32_t node = net.IndexOf(l.candidate(c).contact);
      if (silent.count(node)) {
        while (l.OnTimeout(c)) {}
        continue;
      }
      std::vector<Contact> a = net.Answer(node, l.target());
      l.OnReply(c, a);
    }
  }
  return waves;
}

std::vector<NodeId> TrueNearest(const Synthetic& net, const NodeId& target, size_t k,
                                const std::set<uint32_t>& silent) {
  std::vector<uint32_t> idx;
  for (uint32_t i = 0; i < net.ids.size(); ++i) {
    if (!silent.count(i)) idx.push_back(i);
  }
  std::sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return CloserTo(target, net.ids[a], net.ids[b]); });
  std::vector<NodeId> out;
  for (size_t i = 0; i < k; ++i) out.push_back(net.ids[idx[i]]);
  return out;
}

void ExpectConverges(uint8_t paths, const std::set<uint32_t>& silent, size_t hits_min) {
  Synthetic net(2000, 42);
  Lookup l(48);
  for (int t = 0; t < 20; ++t) {
    const NodeId target = RandomId(net.rng);
    const uint32_t start = static_cast<uint32_t>(net.rng.Uniform(2000));
    std::vector<Contact> seeds = net.Answer(start, target);
    LookupParams p;
    p.paths = paths;
    l.Start(target, LookupKind::kFindNode, p, seeds);
    Drive(l, net, silent);
    ASSERT_TRUE(l.Done());
    Contact out[20];
    const size_t n = l.Results(out);
    const auto truth = TrueNearest(net, target, 20, silent);
    ASSERT_GE(n, 1u);
    EXPECT_EQ(out[0].id, truth[0]) << "lookup " << t << " paths " << int(paths);
    size_t hits = 0;
    for (size_t i = 0; i < n; ++i) hits += std::count(truth.begin(), truth.end(), out[i].id);
    EXPECT_GE(hits, hits_min) << "lookup " << t;
    EXPECT_GE(l.rounds(), 1);
    EXPECT_LE(l.rounds(), 8);
    EXPECT_GE(l.requests_sent(), 20u);
  }
}

TEST(Lookup, ConvergesOnTheNearestIds) { ExpectConverges(1, {}, 18); }
TEST(Lookup, DisjointPathsConvergeToo) { ExpectConverges(3, {}, 18); }
TEST(Lookup, SilentNodesAreRetriedThenSkipped) {
  std::set<uint32_t> silent;
  for (uint32_t i = 0; i < 2000; i += 10) silent.insert(i);  // 10% dead
  // Silent nodes take what only they knew with them: a few far results may go too.
  ExpectConverges(1, silent, 16);
}

TEST(Lookup, DisjointPathsNeverShareANode) {
  Synthetic net(500, 7);
  Lookup l(64);
  const NodeId target = RandomId(net.rng);
  LookupParams p;
  p.paths = 4;
  l.Start(target, LookupKind::kFindNode, p, net.Answer(0, target));
  std::set<uint32_t> queried[4];
  while (!l.Done()) {
    std::vector<int> sent;
    for (int c = l.Next(); c >= 0; c = l.Next()) sent.push_back(c);
    ASSERT_FALSE(sent.empty());
    for (int c : sent) {
      const uint32_t node = net.IndexOf(l.candidate(c).contact);
      queried[l.candidate(c).path].insert(node);
      l.OnReply(c, net.Answer(node, target));
    }
  }
  for (int a = 0; a < 4; ++a) {
    EXPECT_FALSE(queried[a].empty());
    for (int b = a + 1; b < 4; ++b) {
      for (uint32_t x : queried[a]) EXPECT_EQ(queried[b].count(x), 0u);
    }
  }
}

TEST(Lookup, KeepsAlphaInFlight) {
  Synthetic net(300, 9);
  Lookup l(32);
  const NodeId target = RandomId(net.rng);
  l.Start(target, LookupKind::kFindNode, LookupParams{}, net.Answer(0, target));
  int in_flight = 0;
  while (l.Next() >= 0) ++in_flight;
  EXPECT_EQ(in_flight, 3);
}

// A candidate that timed out twice leaves its slot to the next one while its further
// tries go on (retry_frees_slot); one that timed out once still holds it; and the lookup
// is not done while a freed candidate is still being tried.
TEST(Lookup, ACandidateSilentTwiceFreesItsSlot) {
  Synthetic net(300, 9);
  for (const bool frees : {true, false}) {
    Lookup l(32);
    const NodeId target = RandomId(net.rng);
    LookupParams p;
    p.alpha = 1;
    p.retry_frees_slot = frees;
    l.Start(target, LookupKind::kFindNode, p, net.Answer(0, target));
    const int first = l.Next();
    ASSERT_GE(first, 0);
    EXPECT_LT(l.Next(), 0);                 // alpha 1: one in flight
    ASSERT_TRUE(l.OnTimeout(first));        // second try
    EXPECT_LT(l.Next(), 0) << frees;        // silent once: still holds the slot
    ASSERT_TRUE(l.OnTimeout(first));        // third try
    const int second = l.Next();
    if (!frees) {
      EXPECT_LT(second, 0);
      continue;
    }
    ASSERT_GE(second, 0);                   // silent twice: the next one goes out
    EXPECT_NE(second, first);
    EXPECT_LT(l.Next(), 0);                 // and only one: alpha still holds for first tries
    l.OnReply(second, {});
    EXPECT_FALSE(l.Done());                 // `first` is still being tried
    while (l.OnTimeout(first)) {
    }
    for (int c = l.Next(); c >= 0; c = l.Next()) l.OnReply(c, {});
    EXPECT_TRUE(l.Done());
  }
}

// A first try past the slow mark leaves its slot to the next candidate (slow_frees_slot),
// once, and at most alpha sit beside a path; the lookup still waits for it, and its late
// answer counts as any other. Without slow_frees_slot it keeps the slot.
TEST(Lookup, ASlowFirstTryLeavesItsSlotAndItsAnswerStillCounts) {
  Synthetic net(300, 9);
  for (const bool frees : {true, false}) {
    Lookup l(32);
    const NodeId target = RandomId(net.rng);
    LookupParams p;
    p.alpha = 1;
    p.slow_frees_slot = frees;
    l.Start(target, LookupKind::kFindNode, p, net.Answer(0, target));
    const int slow = l.Next();
    ASSERT_GE(slow, 0);
    EXPECT_LT(l.Next(), 0);
    EXPECT_EQ(l.OnSlow(slow), frees);
    if (!frees) {
      EXPECT_LT(l.Next(), 0) << "without slow_frees_slot it keeps its slot";
      continue;
    }
    EXPECT_FALSE(l.OnSlow(slow));  // once only
    const int next = l.Next();
    ASSERT_GE(next, 0);
    EXPECT_NE(next, slow);
    EXPECT_LT(l.Next(), 0);         // one slot, one first try in it
    EXPECT_FALSE(l.OnSlow(next));   // alpha (1) already beside: it keeps its slot
    auto answer = [&](int c) {
      l.OnReply(c, net.Answer(net.IndexOf(l.candidate(c).contact), target));
    };
    answer(next);
    for (int guard = 0; guard < 300; ++guard) {
      const int c = l.Next();
      if (c < 0) break;
      answer(c);
    }
    EXPECT_FALSE(l.Done());  // the slow one is still in flight
    EXPECT_EQ(l.candidate(slow).state, Lookup::State::kInFlight);
    const uint32_t before = l.replies_received();
    answer(slow);
    EXPECT_EQ(l.candidate(slow).state, Lookup::State::kAnswered);
    EXPECT_EQ(l.replies_received(), before + 1);
    for (int guard = 0; guard < 300 && !l.Done(); ++guard) {
      const int c = l.Next();
      ASSERT_GE(c, 0);
      answer(c);
    }
    EXPECT_TRUE(l.Done());
    // It was the nearest seed; its answer stands in the result like any other.
    int idx[64];
    const size_t n = l.ResultIndices(idx);
    EXPECT_EQ(n, 20u);
    const auto truth = TrueNearest(net, target, 20, {});
    if (std::count(truth.begin(), truth.end(), l.candidate(slow).contact.id) > 0) {
      EXPECT_NE(std::find(idx, idx + n, slow), idx + n);
    }
  }
}

// A candidate among the nearest that fails every try widens the set that must answer, and
// the result, by silent_extra each (within liar_extra_max), and counts once however often
// it leaves the full shortlist and is named again: with the 4 nearest silent, 4 silent and
// 28 results. The wider result holds at least as many of the 20 nearest live nodes as the
// k-sized one, and 16 of them each time. Off: silence widens nothing.
TEST(Lookup, SilentCandidatesWidenTheResult) {
  Synthetic net(2000, 42);
  size_t held[2] = {0, 0};  // of the 20 nearest live, over the lookups: widened, not
  for (const uint8_t extra : {uint8_t{2}, uint8_t{0}}) {
    base::Rng rng(3);
    for (int t = 0; t < 5; ++t) {
      const NodeId target = RandomId(rng);
      std::vector<uint32_t> all(2000);
      for (uint32_t i = 0; i < 2000; ++i) all[i] = i;
      std::partial_sort(all.begin(), all.begin() + 4, all.end(), [&](uint32_t a, uint32_t b) {
        return CloserTo(target, net.ids[a], net.ids[b]);
      });
      const std::set<uint32_t> silent(all.begin(), all.begin() + 4);
      LookupParams p;
      p.silent_extra = extra;
      Lookup l(64);
      l.Start(target, LookupKind::kFindNode, p, net.Answer(all[1000], target));
      Drive(l, net, silent);
      ASSERT_TRUE(l.Done());
      int idx[64];
      const size_t n = l.ResultIndices(idx);
      const auto truth = TrueNearest(net, target, 20, silent);
      size_t hits = 0;
      for (size_t i = 0; i < n; ++i) {
        hits += std::count(truth.begin(), truth.end(), l.candidate(idx[i]).contact.id);
      }
      held[extra == 0] += hits;
      if (extra == 0) {
        EXPECT_EQ(l.silent(), 0u) << "lookup " << t;
        continue;
      }
      EXPECT_EQ(l.silent(), 4u) << "lookup " << t;
      EXPECT_EQ(n, 28u) << "lookup " << t;  // 20 + min(4 x 2, liar_extra_max 8)
      EXPECT_GE(hits, 16u) << "lookup " << t;
    }
  }
  EXPECT_GE(held[0], held[1]);
}

// A name only one answer gave that is silent twice counts against that answer's sender
// at once (early_strike), not after its last try; its late answer takes the strike back;
// and a second such name then distrusts the sender while the first is still being tried.
// Without early_strike the sender is struck only when a name failed every try.
TEST(Lookup, ANameSilentTwiceStrikesItsSourceEarly) {
  Synthetic net(300, 9);
  for (const bool early : {true, false}) {
    const NodeId target = RandomId(net.rng);
    LookupParams p;
    p.alpha = 1;
    p.audit_factor = 0;
    p.early_strike = early;
    Lookup l(32);
    const std::vector<Contact> seed{Contact{net.ids[1], AddrOf(1)}};
    l.Start(target, LookupKind::kFindNode, p, seed);
    const int liar = l.Next();
    ASSERT_GE(liar, 0);
    // Two made-up ids next to the target: nearer than anything, named by the liar only.
    std::vector<Contact> fake;
    for (uint8_t i = 1; i <= 2; ++i) {
      NodeId id = target;
      id[id.size() - 1] ^= i;
      fake.push_back(Contact{id, AddrOf(200 + i)});
    }
    l.OnReply(liar, fake);
    const int f1 = l.Next();
    ASSERT_GE(f1, 0);
    ASSERT_EQ(l.candidate(f1).contact.id, fake[0].id);
    ASSERT_TRUE(l.OnTimeout(f1));                       // silent once: tried again
    EXPECT_EQ(l.candidate(liar).strikes, 0) << early;
    ASSERT_TRUE(l.OnTimeout(f1));                       // silent twice: third try
    EXPECT_EQ(l.candidate(liar).strikes, early ? 1 : 0);
    // Its late answer takes the strike back.
    l.OnReply(f1, {});
    EXPECT_EQ(l.candidate(liar).strikes, 0) << early;
    EXPECT_FALSE(l.candidate(liar).distrusted);

    // Again from the start; this time the first name stays silent and a second one is.
    l.Start(target, LookupKind::kFindNode, p, seed);
    const int liar2 = l.Next();
    ASSERT_GE(liar2, 0);
    l.OnReply(liar2, fake);
    const int g1 = l.Next();
    ASSERT_GE(g1, 0);
    ASSERT_TRUE(l.OnTimeout(g1));
    ASSERT_TRUE(l.OnTimeout(g1));                       // frees its slot, tried a third time
    const int g2 = l.Next();
    ASSERT_GE(g2, 0);
    ASSERT_EQ(l.candidate(g2).contact.id, fake[1].id);
    if (early) {
      // The liar has a strike: its other unvouched name gets one try, and fails.
      EXPECT_FALSE(l.OnTimeout(g2));
      EXPECT_TRUE(l.candidate(liar2).distrusted);       // while g1 is still in flight
      EXPECT_EQ(l.candidate(g1).state, Lookup::State::kInFlight);
      EXPECT_FALSE(l.OnTimeout(g1));                    // its last try: no third strike
      EXPECT_EQ(l.candidate(liar2).strikes, 2);
    } else {
      EXPECT_TRUE(l.OnTimeout(g2));                     // no strike yet: 3 tries each
      EXPECT_FALSE(l.candidate(liar2).distrusted);
      EXPECT_FALSE(l.OnTimeout(g1));                    // all 3 failed: the first strike
      EXPECT_EQ(l.candidate(liar2).strikes, 1);
      EXPECT_FALSE(l.candidate(liar2).distrusted);
    }
  }
}

TEST(Providers, TokensBindToTheAddressAndRotate) {
  base::Rng rng(1);
  TokenMint mint(rng, 0);
  const base::Endpoint a = AddrOf(1), b = AddrOf(2);
  const Token t = mint.Make(a);
  EXPECT_TRUE(mint.Check(a, t));
  EXPECT_FALSE(mint.Check(b, t));  // another address cannot use it
  Token forged = t;
  forged[3] ^= 1;
  EXPECT_FALSE(mint.Check(a, forged));
  EXPECT_FALSE(mint.Check(a, Token{}));
  mint.MaybeRotate(rng, kTokenRotateUs);  // one rotation: the previous secret still counts
  EXPECT_TRUE(mint.Check(a, t));
  mint.MaybeRotate(rng, 2 * kTokenRotateUs);
  EXPECT_FALSE(mint.Check(a, t));  // two: expired
}

TEST(Providers, StoreKeepsItsBounds) {
  ProviderLimits lim;
  lim.records_max = 10;
  lim.per_key_max = 4;
  lim.per_source_max = 3;
  ProviderStore store(lim);
  base::Rng rng(2);
  const NodeId key = RandomId(rng);
  // One address: at most 3 records, whatever ids it claims.
  for (int i = 0; i < 5; ++i) {
    const bool ok = store.Add(RandomId(rng), Contact{RandomId(rng), AddrOf(1)}, 0);
    EXPECT_EQ(ok, i < 3);
  }
  // One key: the 4 freshest providers are kept.
  for (uint32_t i = 0; i < 6; ++i) EXPECT_TRUE(store.Add(key, Contact{RandomId(rng), AddrOf(10 + i)}, i));
  Contact out[8];
  EXPECT_EQ(store.Get(key, 10, out), 4u);
  // In all: at most records_max.
  for (uint32_t i = 0; i < 10; ++i) store.Add(RandomId(rng), Contact{RandomId(rng), AddrOf(50 + i)}, 10);
  EXPECT_LE(store.size(), 10u);
  // Expiry frees records.
  store.Expire(kProviderTtlUs + 100);
  EXPECT_EQ(store.size(), 0u);
  EXPECT_EQ(store.Get(key, kProviderTtlUs + 100, out), 0u);
}

TEST(Providers, IndexedStoreMatchesItsLimitsUnderRandomWork) {
  // The store is indexed by key and by source; after every step of a random mix of adds,
  // refreshes, moves and expiry, what Get returns must agree with the limits and with
  // what was accepted.
  ProviderLimits lim;
  lim.records_max = 48;
  lim.per_key_max = 4;
  lim.per_source_max = 5;
  ProviderStore store(lim, 99);
  base::Rng rng(7);
  std::vector<NodeId> keys, ids;
  for (int i = 0; i < 24; ++i) keys.push_back(RandomId(rng));
  for (int i = 0; i < 40; ++i) ids.push_back(RandomId(rng));
  int64_t now = 0;
  for (int step = 0; step < 20000; ++step) {
    now += static_cast<int64_t>(rng.Uniform(kProviderTtlUs / 500));
    const NodeId& key = keys[rng.Uniform(keys.size())];
    const Contact who{ids[rng.Uniform(ids.size())], AddrOf(static_cast<uint32_t>(rng.Uniform(16)))};
    if (rng.Uniform(100) == 0) store.Expire(now);
    if (store.Add(key, who, now)) {
      Contact out[8];
      const size_t n = store.Get(key, now, out);
      ASSERT_TRUE(std::any_of(out, out + n, [&](const Contact& c) { return c == who; }))
          << "step " << step;
    }
    ASSERT_LE(store.size(), lim.records_max);
    if (step % 97 != 0) continue;
    size_t live = 0;
    std::map<uint32_t, uint32_t> per_source;
    for (const NodeId& k : keys) {
      Contact out[8];
      const size_t n = store.Get(k, now, out);
      ASSERT_LE(n, lim.per_key_max);
      live += n;
      for (size_t i = 0; i < n; ++i) {
        ++per_source[out[i].addr.ip[2]];
        for (size_t j = i + 1; j < n; ++j) ASSERT_NE(out[i].id, out[j].id);
      }
    }
    for (const auto& [src, count] : per_source) ASSERT_LE(count, lim.per_source_max);
    ASSERT_LE(live, store.size());  // expired records may wait for Expire
  }
  store.Expire(now + kProviderTtlUs);
  EXPECT_EQ(store.size(), 0u);
  // Every slot and index entry came back: the pool fills again from empty.
  for (uint32_t i = 0; i < lim.records_max; ++i) {
    EXPECT_TRUE(store.Add(RandomId(rng), Contact{RandomId(rng), AddrOf(100 + i)}, now + kProviderTtlUs));
  }
  EXPECT_EQ(store.size(), lim.records_max);
}

TEST(SizeEstimate, DensityIsUnbiasedOnSyntheticIds) {
  base::Rng rng(3);
  const uint32_t n = 5000;
  std::vector<NodeId> ids;
  for (uint32_t i = 0; i < n; ++i) ids.push_back(RandomId(rng));
  std::vector<double> samples;
  for (int t = 0; t < 200; ++t) {
    const NodeId target = RandomId(rng);
    std::vector<double> d;
    for (const NodeId& id : ids) d.push_back(DistanceFraction(id, target));
    std::partial_sort(d.begin(), d.begin() + 20, d.end());
    samples.push_back(DensitySample(std::span(d.data(), 20)));
  }
  const SizeEstimate e = DensityEstimate(samples);
  ASSERT_TRUE(e.ok);
  EXPECT_NEAR(e.estimate, n, 0.05 * n);
  EXPECT_LT(e.low, n);
  EXPECT_GT(e.high, n);
}

TEST(SizeEstimate, CollisionsOnUniformSamples) {
  // Visits uniform over n nodes; sightings from a skewed distribution (a tenth of the
  // nodes named ten times as often): visit-sighting pairs of different walks still match
  // with probability 1/n.
  base::Rng rng(4);
  const uint32_t n = 10000;
  std::vector<WalkSample> visits, seen;
  for (uint16_t w = 0; w < 5; ++w) {
    for (int i = 0; i < 250; ++i) visits.push_back(WalkSample{rng.Uniform(n) + 1, w});
    for (int i = 0; i < 1000; ++i) {
      const uint64_t node = rng.Uniform(2) == 0 ? rng.Uniform(n / 10) : rng.Uniform(n);
      seen.push_back(WalkSample{node + 1, w});
    }
  }
  const SizeEstimate e = CollisionEstimate(visits, seen);
  ASSERT_TRUE(e.ok);
  EXPECT_EQ(e.method, SizeMethod::kCollision);
  EXPECT_NEAR(e.estimate, n, 0.3 * n);
  EXPECT_LT(e.low, e.estimate);
  EXPECT_GT(e.high, e.estimate);
  // Matches within one walk do not count; none left: nothing to say.
  std::vector<WalkSample> v1 = {{1, 0}, {2, 1}};
  std::vector<WalkSample> s1 = {{1, 0}, {3, 1}};
  EXPECT_FALSE(CollisionEstimate(v1, s1).ok);
}

// A synthetic overlay with known N: one-way links of varied out-degree that favour a few
// popular nodes (as early nodes are in many more tables), about half of them mutual. The
// walks below run Overlay's step rule (WalkMoves over "the next node holds the previous
// one") and CollisionEstimate must find N; a walk that ignores the rule must not.
struct SyntheticOverlay {
  explicit SyntheticOverlay(uint32_t n, base::Rng& rng) : out(n) {
    for (uint32_t u = 0; u < n; ++u) {
      const uint32_t degree = 20 + static_cast<uint32_t>(rng.Uniform(60));
      while (out[u].size() < degree) {
        const bool popular = rng.Uniform(2) == 0;
        const uint32_t v = static_cast<uint32_t>(popular ? rng.Uniform(n / 20) : rng.Uniform(n));
        if (v == u || Holds(u, v)) continue;
        out[u].push_back(v);
        if (rng.Uniform(2) == 0 && !Holds(v, u)) out[v].push_back(u);
      }
    }
  }
  bool Holds(uint32_t u, uint32_t v) const {
    return std::find(out[u].begin(), out[u].end(), v) != out[u].end();
  }
  uint32_t Pick(uint32_t u, base::Rng& rng) const {
    return out[u][rng.Uniform(out[u].size())];
  }
  // Estimate: `walks` walks from `origin`, each proposal one reply of kWalkNextMax picks.
  SizeEstimate Estimate(uint32_t origin, bool follow_rule, base::Rng& rng) const {
    std::vector<WalkSample> visits, seen;
    for (uint16_t w = 0; w < 10; ++w) {
      uint32_t at = origin;
      for (uint32_t step = 1; step <= kWalkBurnInSteps + 115; ++step) {
        const uint32_t v = Pick(at, rng);
        const bool moves = follow_rule ? WalkMoves(static_cast<uint32_t>(out[at].size()),
                                                   static_cast<uint32_t>(out[v].size()),
                                                   Holds(v, at), rng)
                                       : true;
        if (step > kWalkBurnInSteps) {
          for (size_t k = 0; k < wire::kWalkNextMax; ++k) seen.push_back({Pick(v, rng), w});
        }
        if (moves) at = v;
        if (step > kWalkBurnInSteps) visits.push_back(WalkSample{at, w});
      }
    }
    return CollisionEstimate(visits, seen);
  }
  std::vector<std::vector<uint32_t>> out;
};

TEST(SizeEstimate, WalksFindTheSizeOfAnAsymmetricGraph) {
  base::Rng rng(11);
  const uint32_t n = 4000;
  const SyntheticOverlay g(n, rng);
  double sum = 0, naive_sum = 0, covered = 0;
  constexpr int kEstimates = 12;
  for (int i = 0; i < kEstimates; ++i) {
    const uint32_t origin = static_cast<uint32_t>(rng.Uniform(n));
    const SizeEstimate e = g.Estimate(origin, /*follow_rule=*/true, rng);
    ASSERT_TRUE(e.ok);
    sum += e.estimate;
    covered += e.low <= n && n <= e.high;
    naive_sum += g.Estimate(origin, /*follow_rule=*/false, rng).estimate;
  }
  EXPECT_NEAR(sum / kEstimates, n, 0.08 * n);
  EXPECT_GE(covered, kEstimates - 2);
  // Following one-way links over-samples the popular nodes: far too few.
  EXPECT_LT(naive_sum / kEstimates, 0.7 * n);
}

TEST(SizeEstimate, DensityIntervalUsesStudentT) {
  // Two samples: t with 1 degree of freedom is 12.7, not 1.96.
  const double s[] = {90, 110};
  const SizeEstimate e = DensityEstimate(s);
  ASSERT_TRUE(e.ok);
  EXPECT_NEAR(e.estimate, 100, 1e-9);
  EXPECT_GT(e.high - e.estimate, 5 * 1.96 * 10 / std::sqrt(2.0) * 0.9);
}

TEST(Snapshot, AnswersFindNodeWithinTheAmplificationLimit) {
  ASSERT_TRUE(wire::InitCrypto());
  base::Rng rng(6);
  TableSnapshot snap(64);
  snap.Clear(0);
  for (uint32_t i = 0; i < 40; ++i) snap.Push(Contact{RandomId(rng), AddrOf(i)});
  struct CaptureOutbox : base::Outbox {
    std::span<uint8_t> Buffer() noexcept override { return buf; }
    void Commit(size_t size, const base::Endpoint&) noexcept override { sent = size; }
    alignas(8) uint8_t buf[wire::kDatagramBytesMax];
    size_t sent = 0;
  } out;
  wire::Encoder enc;
  alignas(8) uint8_t req[wire::kDatagramBytesMax];
  SnapshotResponder responder(RandomId(rng));
  for (size_t pad : {size_t{0}, size_t{400}}) {
    const size_t n = enc.FindNode(req, 0, 7, RandomId(rng), RandomId(rng), 20, pad);
    wire::Message m;
    ASSERT_EQ(wire::Decode(req, n, &m), wire::Verdict::kOk);
    out.sent = 0;
    ASSERT_EQ(responder.Answer(AddrOf(999), m, snap, out), wire::Verdict::kOk);
    ASSERT_GT(out.sent, 0u);
    EXPECT_LE(out.sent, kAmplificationMax * n);  // a stranger gets at most 3x its request
    wire::Message reply;
    ASSERT_EQ(wire::Decode(out.buf, out.sent, &reply), wire::Verdict::kOk);
    const size_t entries = reply.nodes()->nodes()->size();
    if (pad == 0) {
      EXPECT_LT(entries, 20u);  // trimmed
    } else {
      EXPECT_EQ(entries, 20u);  // a padded request earns a full answer
    }
  }
}

TEST(Wire, DhtMessagesRoundTripAndBoundsAreChecked) {
  wire::Encoder enc;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  base::Rng rng(8);
  std::vector<wire::PeerInfo> list(20, wire::PeerInfo{RandomId(rng), AddrOf(3)});
  size_t n = enc.Nodes(buf, 0, 5, RandomId(rng), list);
  ASSERT_GT(n, 0u);  // k = 20 entries fit one datagram
  wire::Message m;
  ASSERT_EQ(wire::Decode(buf, n, &m), wire::Verdict::kOk);
  EXPECT_EQ(m.nodes()->nodes()->size(), 20u);
  EXPECT_EQ(wire::RequestTxid(m), 5u);
  wire::RouteFields f;
  f.route_id = 9;
  f.ttl = wire::kRouteTtlMax;
  n = enc.Route(buf, f, {});
  ASSERT_EQ(wire::Decode(buf, n, &m), wire::Verdict::kOk);
  EXPECT_EQ(m.route()->state()->origin_addr().family(), 0);
  // A ttl above the maximum is refused.
  auto* st = flatbuffers::GetMutableRoot<wire::fb::Route>(buf + wire::kHeaderBytes)->mutable_state();
  st->mutate_ttl(wire::kRouteTtlMax + 1);
  EXPECT_EQ(wire::Decode(buf, n, &m), wire::Verdict::kBadField);
  // A bad address family in a list is refused.
  n = enc.Nodes(buf, 0, 5, RandomId(rng), std::span(list.data(), 1));
  for (size_t i = wire::kHeaderBytes; i < n; ++i) {
    if (buf[i] == 4 && buf[i - 1] == 0x1E && buf[i - 2] == 0x14) buf[i] = 5;  // port 7700
  }
  EXPECT_EQ(wire::Decode(buf, n, &m), wire::Verdict::kBadField);
}

}  // namespace
}  // namespace ringpeer::dht
