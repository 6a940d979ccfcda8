// Goal: the overlay works as a network: lookups converge on the true nearest nodes, hello
// reaches its target, providers are found, forged tokens are refused, routed messages
// stop at their ttl, gossip floods everyone once, a restarted node rejoins from its saved
// table, and the whole simulation replays exactly from its seed. Method: short runs of
// the simulator (300-500 nodes, virtual time), each asserting on what the nodes reported.
// A failing run prints its seed; `ringpeer-sim --seed S ...` replays it.
#include "tests/sim/sim.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "tests/net/memory_network.h"
#include "tests/sim/heap.h"
#include "wire/encode.h"

namespace ringpeer::sim {
namespace {

// Builds a settled network of n nodes (static peers first, then joiners).
void Build(Simulator& s, uint32_t n) {
  for (uint32_t i = 0; i < 8 && i < n; ++i) {
    s.AddNode(i > 0, /*is_static=*/true);
    s.RunUntil(s.now() + 100'000);
  }
  for (uint32_t i = 8; i < n; ++i) {
    s.AddNode(true);
    s.RunUntil(s.now() + 10'000);
  }
  s.RunUntil(s.now() + 30'000'000);
}

base::Endpoint Port(uint16_t port) {
  base::Endpoint e;
  e.family = base::Endpoint::Family::kV4;
  e.ip = {10, 0, 0, 1};
  e.port = port;
  return e;
}

// Issue 14, item 6: the network holds what is in flight, not its peak. 5,000 datagrams
// sent at once from 50 senders (as 10,000 nodes joining do) hold ~6 MB of packet buffers;
// once delivered, at most kSparePacketsMax buffers stay, every datagram arrived once and
// whole, and destroying the network frees the rest.
TEST(MemoryNetwork, AfterABurstHoldsOnlyItsSpares) {
  std::vector<std::pair<uint32_t, uint32_t>> got;  // (receiver, first word)
  got.reserve(5000);
  const int64_t heap_before = heap::Total();
  {
    testing::NetworkConfig nc;
    nc.seed = 3;
    testing::MemoryNetwork net(
        nc, [](const base::Endpoint& e) { return static_cast<int>(e.port) - 1000; },
        [&](uint32_t to, const base::Endpoint&, std::span<const uint8_t> bytes) {
          uint32_t w;
          ASSERT_EQ(bytes.size(), 1000u);
          std::memcpy(&w, bytes.data(), 4);
          EXPECT_EQ(bytes[999], static_cast<uint8_t>(w));
          got.emplace_back(to, w);
        });
    std::vector<std::unique_ptr<testing::MemoryNetwork::Sender>> senders;
    for (uint16_t i = 0; i < 50; ++i) {
      senders.push_back(std::make_unique<testing::MemoryNetwork::Sender>(
          &net, Port(static_cast<uint16_t>(1000 + i))));
    }
    const int64_t idle = heap::Total();
    for (uint32_t w = 0; w < 5000; ++w) {
      testing::MemoryNetwork::Sender& from = *senders[w % 50];
      std::span<uint8_t> buf = from.Buffer();
      ASSERT_GE(buf.size(), 1000u);
      std::fill(buf.begin(), buf.begin() + 1000, static_cast<uint8_t>(w));
      std::memcpy(buf.data(), &w, 4);
      from.Commit(1000, Port(static_cast<uint16_t>(1000 + (w * 7) % 50)));
    }
    EXPECT_EQ(net.in_flight(), 5000u);
    EXPECT_GE(heap::Total() - idle, int64_t{5000} * 1000);
    net.DeliverDue(net.now() + 1'000'000);  // delays are at most 3 ms
    EXPECT_EQ(net.in_flight(), 0u);
    EXPECT_EQ(net.SparePackets(), testing::MemoryNetwork::kSparePacketsMax);
    EXPECT_LE(heap::Total() - idle,
              static_cast<int64_t>(testing::MemoryNetwork::kSparePacketsMax) *
                  static_cast<int64_t>(wire::kDatagramBytesMax + 64) + 16384);
  }
  EXPECT_EQ(heap::Total(), heap_before);
  ASSERT_EQ(got.size(), 5000u);
  for (uint32_t w = 0; w < 5000; ++w) {
    EXPECT_EQ(std::count(got.begin(), got.end(), std::make_pair((w * 7) % 50, w)), 1) << w;
  }
}

// Senders share the network's staging buffer: another sender's Buffer() between a
// sender's Buffer() and Commit() would overwrite what it wrote, and is refused.
TEST(MemoryNetworkDeathTest, InterleavedSendersAreRefused) {
  testing::MemoryNetwork net(
      testing::NetworkConfig{}, [](const base::Endpoint&) { return 0; },
      [](uint32_t, const base::Endpoint&, std::span<const uint8_t>) {});
  testing::MemoryNetwork::Sender a(&net, Port(1));
  testing::MemoryNetwork::Sender b(&net, Port(2));
  a.Buffer()[0] = 1;
  a.Commit(1, b.self());  // its own Buffer(): fine
  a.Buffer()[0] = 2;
  b.Buffer()[0] = 3;
  EXPECT_DEATH(a.Commit(1, b.self()), "");
}

std::vector<dht::NodeId> SortedIds(Simulator& s, const dht::NodeId& target, size_t skip) {
  std::vector<dht::NodeId> v;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.alive(i) && i != skip) v.push_back(s.overlay(i).id());
  }
  std::sort(v.begin(), v.end(),
            [&](const dht::NodeId& a, const dht::NodeId& b) { return dht::CloserTo(target, a, b); });
  return v;
}

TEST(Sim, LookupsFindTheTrueNearestNodes) {
  ASSERT_TRUE(wire::InitCrypto());
  SimConfig c;
  c.nodes = 300;
  c.seed = 11;
  c.loss = 0.05;
  Simulator s(c);
  Build(s, c.nodes);
  base::Rng rng(5);
  int missing = 0, lookups = 0;
  for (int t = 0; t < 30; ++t) {
    const dht::NodeId target = dht::RandomId(rng);
    const size_t node = rng.Uniform(s.size());
    ASSERT_NE(s.overlay(node).FindNode(s.now(), target, s.outbox(node)), 0u)
        << "seed " << c.seed << " node " << node << " table " << s.overlay(node).table().size()
        << " verified " << s.overlay(node).VerifiedPeers() << " t " << s.now();
    s.Kick(node);
    s.RunUntil(s.now() + 10'000'000);
    ASSERT_FALSE(s.log(node).lookup_closest.empty());
    const auto& found = s.log(node).lookup_closest.back();
    const auto truth = SortedIds(s, target, node);
    // k, or more when near names were silent (loss: 1 lookup in 60 here) or lied: each
    // widens the result by 2 (LookupParams::silent_extra, liar_extra), within 8.
    EXPECT_GE(found.size(), 20u);
    EXPECT_LE(found.size(), 28u);
    EXPECT_EQ(found.front().id, truth.front()) << "seed " << c.seed << " lookup " << t;
    for (size_t k = 0; k < 20; ++k) {
      missing += std::none_of(found.begin(), found.end(),
                              [&](const dht::Contact& x) { return x.id == truth[k]; });
    }
    ++lookups;
  }
  // Loss may cost a far result now and then, never the nearest.
  EXPECT_LE(missing, lookups * 20 / 50) << "seed " << c.seed;
}

}  // namespace
}  // namespace ringpeer::sim

namespace ringpeer::sim {
namespace {

SimConfig Small(uint64_t seed, double loss = 0.0) {
  SimConfig c;
  c.nodes = 300;
  c.seed = seed;
  c.loss = loss;
  return c;
}

TEST(Sim, HelloReachesItsTargetAndBothEndsVerifyEachOther) {
  SimConfig c = Small(21, 0.05);
  Simulator s(c);
  Build(s, c.nodes);
  base::Rng rng(1);
  int delivered = 0, mutual = 0;
  for (int t = 0; t < 40; ++t) {
    const size_t a = 8 + rng.Uniform(s.size() - 8), b = 8 + rng.Uniform(s.size() - 8);
    if (a == b) continue;
    const dht::NodeId target = s.overlay(b).id();
    ASSERT_NE(s.overlay(a).Hello(s.now(), target, s.outbox(a)), 0u);
    s.Kick(a);
    s.RunUntil(s.now() + 20'000'000);
    ASSERT_FALSE(s.log(a).routes.empty());
    const dht::RouteResult& r = s.log(a).routes.back();
    if (!r.delivered) continue;
    ++delivered;
    EXPECT_EQ(r.responder.id, target);
    EXPECT_EQ(r.responder.addr, s.addr(b));
    EXPECT_EQ(r.observed, s.addr(a));  // a learned its own address as the network sees it
    EXPECT_LE(r.hops, 9);               // log2(300)
    // The direct pings made each a verified peer of the other.
    bool a_knows_b = false, b_knows_a = false;
    for (const auto& p : s.overlay(a).Snapshot(s.now())) a_knows_b |= p.verified && p.addr == s.addr(b);
    for (const auto& p : s.overlay(b).Snapshot(s.now())) b_knows_a |= p.verified && p.addr == s.addr(a);
    a_knows_b |= s.overlay(a).table().Find(target) != nullptr;
    b_knows_a |= s.overlay(b).table().Find(s.overlay(a).id()) != nullptr;
    mutual += a_knows_b && b_knows_a;
  }
  EXPECT_GE(delivered, 39) << "seed " << c.seed;
  // The small contacts table may already have let one of them go again; most remain.
  EXPECT_GE(mutual, delivered * 3 / 4) << "seed " << c.seed;
}

TEST(Sim, HelloGoesAroundDeadHopsOnItsFirstAttempt) {
  // A third of the nodes crash at once and nobody has noticed yet: their entries are still
  // in every table. Hop-by-hop acks send each hello around the dead hops within the same
  // attempt, so it arrives, and the silent hops are counted as failed.
  SimConfig c = Small(23, 0.05);
  Simulator s(c);
  Build(s, c.nodes);
  base::Rng rng(3);
  for (size_t i = 8; i < s.size(); ++i) {
    if (rng.Uniform(3) == 0) s.Crash(i);
  }
  int delivered = 0, first_attempt = 0, tries = 0;
  for (int t = 0; t < 60; ++t) {
    const size_t a = 8 + rng.Uniform(s.size() - 8), b = 8 + rng.Uniform(s.size() - 8);
    if (a == b || !s.alive(a) || !s.alive(b)) continue;
    ++tries;
    ASSERT_NE(s.overlay(a).Hello(s.now(), s.overlay(b).id(), s.outbox(a)), 0u);
    s.Kick(a);
    s.RunUntil(s.now() + 20'000'000);
    ASSERT_FALSE(s.log(a).routes.empty());
    const dht::RouteResult& r = s.log(a).routes.back();
    if (!r.delivered) continue;
    ++delivered;
    first_attempt += r.attempts == 1;
  }
  uint64_t resent = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.alive(i)) resent += s.overlay(i).counters().route_hops_resent;
  }
  ASSERT_GE(tries, 15);
  EXPECT_EQ(delivered, tries) << "seed " << c.seed;
  EXPECT_GE(first_attempt, tries * 3 / 4) << "seed " << c.seed;
  EXPECT_GT(resent, 0u) << "seed " << c.seed;
}

TEST(Sim, ProvidersAreFoundAndForgedTokensRefused) {
  SimConfig c = Small(31);
  Simulator s(c);
  Build(s, c.nodes);
  base::Rng rng(2);
  const dht::NodeId key = dht::RandomId(rng);
  ASSERT_TRUE(s.overlay(20).Announce(s.now(), key, s.outbox(20)));
  s.Kick(20);
  s.RunUntil(s.now() + 10'000'000);
  EXPECT_GE(s.log(20).announce_acks, 15u);
  ASSERT_NE(s.overlay(200).GetProviders(s.now(), key, s.outbox(200)), 0u);
  s.Kick(200);
  s.RunUntil(s.now() + 10'000'000);
  ASSERT_FALSE(s.log(200).lookup_providers.empty());
  const auto& prov = s.log(200).lookup_providers.back();
  ASSERT_EQ(prov.size(), 1u);
  EXPECT_EQ(prov[0].id, s.overlay(20).id());
  EXPECT_EQ(prov[0].addr, s.addr(20));
  // A forged token (the right shape, made up bytes) is refused and stores nothing.
  size_t stored_before = 0;
  for (size_t i = 0; i < s.size(); ++i) stored_before += s.overlay(i).provider_store().size();
  wire::Encoder enc;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  wire::Token forged{};
  forged[0] = 1;
  const size_t n = enc.Announce(buf, 0, 77, s.overlay(9).id(), dht::RandomId(rng), forged);
  s.Inject(s.addr(9), 100, std::span(buf, n));
  EXPECT_EQ(s.overlay(100).counters().tokens_rejected, 1u);
  // A real token minted for another address is refused too.
  size_t stored_after = 0;
  for (size_t i = 0; i < s.size(); ++i) stored_after += s.overlay(i).provider_store().size();
  EXPECT_EQ(stored_after, stored_before);
}

TEST(Sim, RoutedMessagesStopAtTtlAndDuplicatesAreDropped) {
  SimConfig c = Small(41);
  Simulator s(c);
  Build(s, c.nodes);
  base::Rng rng(3);
  // A route with ttl 0 is answered by the first node it reaches, never forwarded.
  wire::Encoder enc;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  wire::RouteFields f;
  f.route_id = 1234;
  f.origin = s.overlay(9).id();
  f.target = dht::RandomId(rng);
  f.ttl = 0;
  size_t n = enc.Route(buf, f, {});
  const uint64_t fwd_before = s.overlay(50).counters().routes_forwarded;
  s.Inject(s.addr(9), 50, std::span(buf, n));
  EXPECT_EQ(s.overlay(50).counters().routes_forwarded, fwd_before);
  EXPECT_EQ(s.overlay(50).counters().routes_answered, 1u);
  // The same route again (a loop or a duplicate) is dropped by the seen-set.
  s.Inject(s.addr(9), 50, std::span(buf, n));
  EXPECT_EQ(s.overlay(50).counters().routes_duplicate, 1u);
  EXPECT_EQ(s.overlay(50).counters().routes_answered, 1u);
  // With ttl left, it is forwarded towards the target; every hop gets strictly closer, so
  // the total forwarding is bounded by the hop count.
  f.route_id = 999;
  f.ttl = 20;
  n = enc.Route(buf, f, {});
  s.Inject(s.addr(9), 50, std::span(buf, n));
  s.RunUntil(s.now() + 5'000'000);
  uint64_t forwarded = 0, answered = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    forwarded += s.overlay(i).counters().routes_forwarded;
    answered += s.overlay(i).counters().routes_answered;
  }
  EXPECT_GE(forwarded, 1u);
  EXPECT_LE(forwarded, 9u);
  EXPECT_EQ(answered, 2u);  // the ttl-0 one and this one, once each
}

TEST(Sim, GossipFloodsEveryoneOnce) {
  SimConfig c = Small(51);
  Simulator s(c);
  Build(s, c.nodes);
  const uint8_t payload[] = {1, 2, 3};
  s.overlay(5).Broadcast(s.now(), payload, s.outbox(5));
  s.Kick(5);
  s.RunUntil(s.now() + 10'000'000);
  size_t reached = 0;
  uint64_t dups = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 5) continue;
    reached += s.log(i).gossip_received == 1;
    EXPECT_LE(s.log(i).gossip_received, 1u);  // delivered once, whatever the duplicates
    dups += s.overlay(i).counters().gossip_duplicate;
  }
  EXPECT_GE(reached, s.size() - 3) << "seed " << c.seed;
  EXPECT_GT(dups, 0u);  // there were duplicates, and the seen-set stopped them
}

TEST(Sim, TableDumpIsAnsweredOnlyForVerifiedPeers) {
  SimConfig c = Small(61);
  Simulator s(c);
  Build(s, 100);
  // Node 20 asks a verified contact (its bootstrap) for its table.
  base::Endpoint peer;
  for (const auto& p : s.overlay(20).Snapshot(s.now())) {
    if (p.verified && p.bootstrap) peer = p.addr;
  }
  ASSERT_TRUE(peer.valid());
  ASSERT_TRUE(s.overlay(20).RequestDump(s.now(), peer, s.outbox(20)));
  s.Kick(20);
  s.RunUntil(s.now() + 2'000'000);
  const size_t peer_index = peer.ip[2];
  EXPECT_EQ(s.overlay(peer_index).counters().dumps_answered, 1u);
  // A stranger's request is refused.
  wire::Encoder enc;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  base::Endpoint stranger = *base::Endpoint::Parse("192.0.2.1:9");
  const size_t n = enc.DumpRequest(buf, 0, 5, dht::NodeId{1});
  s.Inject(stranger, peer_index, std::span(buf, n));
  EXPECT_EQ(s.overlay(peer_index).counters().dumps_refused, 1u);
}

TEST(Sim, RestartedNodeRejoinsFromItsSavedTable) {
  SimConfig c = Small(71);
  Simulator s(c);
  Build(s, 200);
  const size_t victim = 100;
  const size_t table_before = s.overlay(victim).table().size();
  ASSERT_GT(table_before, 20u);
  s.Crash(victim);
  s.RunUntil(s.now() + 5'000'000);
  s.Restart(victim);  // no bootstrap peers: only the saved table
  s.RunUntil(s.now() + 20'000'000);
  EXPECT_GE(s.overlay(victim).table().size(), table_before / 3);
  EXPECT_TRUE(s.overlay(victim).joined());
  // Others can find it again.
  ASSERT_NE(s.overlay(7).FindNode(s.now(), s.overlay(victim).id(), s.outbox(7)), 0u);
  s.Kick(7);
  s.RunUntil(s.now() + 10'000'000);
  EXPECT_EQ(s.log(7).lookup_closest.back().front().id, s.overlay(victim).id());
}

TEST(Sim, PartitionHealsAndLookupsRecover) {
  SimConfig c = Small(81);
  c.partition_start_us = 40'000'000;  // after Build (~34 s)
  c.partition_end_us = 70'000'000;
  Simulator s(c);
  Build(s, c.nodes);
  auto lookup_finds = [&](size_t from, size_t target) {
    s.overlay(from).FindNode(s.now(), s.overlay(target).id(), s.outbox(from));
    s.Kick(from);
    s.RunUntil(s.now() + 10'000'000);
    return !s.log(from).lookup_closest.empty() &&
           !s.log(from).lookup_closest.back().empty() &&
           s.log(from).lookup_closest.back().front().id == s.overlay(target).id();
  };
  s.RunUntil(45'000'000);
  // Across the partition (even and odd indices), nothing is found.
  EXPECT_FALSE(lookup_finds(10, 101));
  s.RunUntil(75'000'000);
  // Healed: lookups across the old cut work again (pinned static peers bridge it even if
  // entries across it were evicted meanwhile).
  int found = 0;
  for (size_t i = 0; i < 10; ++i) found += lookup_finds(20 + 2 * i, 101 + 2 * i);
  EXPECT_GE(found, 9) << "seed " << c.seed;
}

TEST(Sim, WalkEstimatesFindTheNetworkSizeWithinBudget) {
  SimConfig c;
  c.seed = 13;
  c.loss = 0.05;
  Simulator s(c);
  Build(s, 400);
  s.log(20).sizes.clear();
  const size_t origins[] = {20, 150, 333};
  for (size_t o : origins) {
    ASSERT_TRUE(s.overlay(o).EstimateSizeByWalks(s.now(), s.outbox(o)));
    EXPECT_FALSE(s.overlay(o).EstimateSizeByWalks(s.now(), s.outbox(o)));  // one at a time
    s.Kick(o);
  }
  s.RunUntil(s.now() + 120'000'000);
  double sum = 0;
  for (size_t o : origins) {
    const auto& sizes = s.log(o).sizes;
    auto it = std::find_if(sizes.begin(), sizes.end(), [](const dht::SizeEstimate& e) {
      return e.method == dht::SizeMethod::kCollision;
    });
    ASSERT_NE(it, sizes.end()) << "seed " << c.seed << " origin " << o;
    ASSERT_TRUE(it->ok) << "seed " << c.seed;
    EXPECT_LE(it->messages, 2900u);
    EXPECT_NEAR(it->estimate, 400, 0.3 * 400) << "seed " << c.seed << " origin " << o;
    EXPECT_LT(it->low, it->estimate);
    EXPECT_GT(it->high, it->estimate);
    sum += it->estimate;
  }
  EXPECT_NEAR(sum / std::size(origins), 400, 0.15 * 400) << "seed " << c.seed;
}

TEST(Sim, ShortRunMeetsItsTargets) {
  SimConfig c;
  c.nodes = 500;
  c.seed = 7;
  c.loss = 0.05;
  c.churn = 0.2;
  c.lookups = 300;
  c.hellos = 150;
  c.size_estimates = 8;
  Simulator s(c);
  const SimReport r = s.Run();
  // 20% churn in a 500-node network is harsh; the 10,000-node figures are in README.md.
  EXPECT_GE(r.lookup_success, 0.97) << "seed " << c.seed << "\n" << r.Text();
  EXPECT_LE(r.rounds.p50, 4) << r.Text();
  EXPECT_GE(r.hello_delivery, 0.97) << r.Text();
  EXPECT_LE(r.hello_hops.max, 9) << r.Text();
  EXPECT_LE(std::abs(r.size_error_mean), 0.15) << r.Text();
  EXPECT_EQ(r.nodes_replaced, 100u);
}

// Hostile nodes (issue 14, item 5): a quarter of the nodes drop requests, make up ids
// near the target, or name only each other. With the lookup's defences most lookups still
// return 16 of the 20 honest nodes nearest the target; without them far fewer do.
SimReport HostileRun(bool defences) {
  SimConfig c;
  c.nodes = 600;
  c.seed = 3;
  c.loss = 0.05;
  c.hostile = 0.25;
  c.lookup_defences = defences;
  c.lookups = 150;
  c.hellos = 0;
  c.size_estimates = 0;
  c.walk_estimates = false;
  c.settle_us = 20'000'000;
  c.measure_us = 15'000'000;
  c.drain_us = 60'000'000;
  Simulator s(c);
  return s.Run();
}

TEST(Sim, LookupsHoldTheHonestNearestAgainstHostileNodes) {
  ASSERT_TRUE(wire::InitCrypto());
  const SimReport with = HostileRun(true);
  const SimReport without = HostileRun(false);
  // Every behaviour was at work.
  EXPECT_GT(with.hostile_dropped, 0u);
  EXPECT_GT(with.hostile_faked, 0u);
  EXPECT_GT(with.hostile_colluded, 0u);
  EXPECT_GT(with.lookups_done + with.lookups_unfinished, 100u);
  // Measured: 0.980 with, 0.593 without (64-entry shortlists, slow marks, silent
  // widening, 60 s deadline; 0.987 / 0.627 with 48 entries and early strikes only; 0.947 /
  // 0.587 before the early strike; with 32 entries, without was 0.26).
  EXPECT_GE(with.honest_success, 0.9) << with.Text();
  EXPECT_LT(without.honest_success, 0.7) << without.Text();
  EXPECT_GE(with.honest_success - without.honest_success, 0.25);
  std::printf("hostile 0.25, 600 nodes: success %.3f with the defences, %.3f without\n",
              with.honest_success, without.honest_success);
}

TEST(Sim, ASeedReplaysExactly) {
  SimConfig c;
  c.nodes = 200;
  c.seed = 99;
  c.loss = 0.1;
  c.duplicate = 0.05;
  c.churn = 0.1;
  c.lookups = 100;
  c.hellos = 50;
  c.size_estimates = 2;
  c.measure_us = 20'000'000;
  Simulator a(c);
  const SimReport ra = a.Run();
  const uint64_t da = a.datagrams();
  Simulator b(c);
  const SimReport rb = b.Run();
  EXPECT_EQ(da, b.datagrams());
  EXPECT_EQ(ra.KeyValues(), rb.KeyValues());
  EXPECT_EQ(ra.Text(), rb.Text());
}

}  // namespace
}  // namespace ringpeer::sim
