// Goal: the routing table keeps Kademlia's rules: buckets split only along our own id,
// hold at most k, keep spares in a replacement cache, evict the least-recently-seen entry
// only after it fails a probe, limit entries per /24 and /48, never evict pinned peers,
// and answer Closest in XOR order. Method: hand-built ids with chosen prefixes against a
// table whose own id is all zeros; and the table file's round trip and corruptions.
#include "dht/routing_table.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "dht/snapshot.h"
#include "dht/table_file.h"

namespace ringpeer::dht {
namespace {

// IdWithPrefix: an id sharing exactly `cpl` leading bits with all-zeros, made unique by `n`.
NodeId IdWithPrefix(int cpl, uint32_t n) {
  NodeId id{};
  id[cpl / 8] = static_cast<uint8_t>(0x80 >> (cpl % 8));
  id[28] = static_cast<uint8_t>(n >> 24);
  id[29] = static_cast<uint8_t>(n >> 16);
  id[30] = static_cast<uint8_t>(n >> 8);
  id[31] = static_cast<uint8_t>(n);
  return id;
}

// Addr: a distinct public /24 per n unless `subnet` is given (44/8 is public; private
// ranges are exempt from the subnet limits).
base::Endpoint Addr(uint32_t n, int subnet = -1) {
  base::Endpoint e;
  e.family = base::Endpoint::Family::kV4;
  e.ip[0] = 44;
  e.ip[1] = static_cast<uint8_t>(subnet >= 0 ? subnet >> 8 : n >> 8);
  e.ip[2] = static_cast<uint8_t>(subnet >= 0 ? subnet : n);
  e.ip[3] = static_cast<uint8_t>(n);
  e.port = 7700;
  return e;
}

const NodeId kSelf{};

TEST(RoutingTable, LastBucketSplitsOthersDoNot) {
  RoutingTable t(kSelf, RoutingConfig{});
  for (uint32_t i = 0; i < 20; ++i) {
    ASSERT_EQ(t.Add(IdWithPrefix(0, i), Addr(i), 0, false).result, AddResult::kInserted);
  }
  EXPECT_EQ(t.depth(), 1u);
  // The 21st far id splits the last bucket, but all 20 stay in bucket 0: it is still full.
  EXPECT_EQ(t.Add(IdWithPrefix(0, 99), Addr(99), 0, false).result, AddResult::kCached);
  EXPECT_EQ(t.depth(), 2u);
  EXPECT_EQ(t.BucketSize(0), 20u);
  EXPECT_EQ(t.ReplacementCount(0), 1u);
  // Nearer ids land in the new last bucket, which splits again when it fills.
  for (uint32_t i = 0; i < 20; ++i) {
    ASSERT_EQ(t.Add(IdWithPrefix(3, 100 + i), Addr(100 + i), 0, false).result,
              AddResult::kInserted);
  }
  EXPECT_EQ(t.Add(IdWithPrefix(5, 200), Addr(200), 0, false).result, AddResult::kInserted);
  EXPECT_GE(t.depth(), 4u);
  EXPECT_EQ(t.BucketOf(IdWithPrefix(3, 100)), 3u);
  EXPECT_EQ(t.size(), 41u);
  size_t sum = 0;
  for (uint32_t b = 0; b < t.depth(); ++b) {
    EXPECT_LE(t.BucketSize(b), 20u);
    sum += t.BucketSize(b);
  }
  EXPECT_EQ(sum, t.size());
}

TEST(RoutingTable, DepthIsBoundedByBucketsMax) {
  RoutingConfig c;
  c.bucket_size = 2;
  c.buckets_max = 3;
  RoutingTable t(kSelf, c);
  for (uint32_t i = 0; i < 10; ++i) t.Add(IdWithPrefix(10, i), Addr(i), 0, false);
  EXPECT_EQ(t.depth(), 3u);
  EXPECT_EQ(t.BucketSize(2), 2u);
  EXPECT_EQ(t.size(), 2u);
}

TEST(RoutingTable, SubnetLimitsPerBucketAndPerTable) {
  RoutingConfig c;
  c.bucket_size = 2;  // small buckets split early, so one /24 can spread over many
  RoutingTable t(kSelf, c);
  EXPECT_EQ(t.Add(IdWithPrefix(0, 1), Addr(1, 7), 0, false).result, AddResult::kInserted);
  EXPECT_EQ(t.Add(IdWithPrefix(0, 2), Addr(2, 7), 0, false).result, AddResult::kInserted);
  EXPECT_FALSE(t.Wants(IdWithPrefix(0, 3), Addr(3, 7)));
  EXPECT_EQ(t.Add(IdWithPrefix(0, 3), Addr(3, 7), 0, false).result, AddResult::kSubnetLimit);
  // Another bucket may take two more from the same /24, up to 10 in the whole table.
  uint32_t inserted = 2;
  for (int cpl = 1; cpl < 12; ++cpl) {
    for (uint32_t j = 0; j < 3; ++j) {
      if (t.Add(IdWithPrefix(cpl, 10 * cpl + j), Addr(10 * cpl + j, 7), 0, false).result ==
          AddResult::kInserted) {
        ++inserted;
      }
    }
  }
  EXPECT_EQ(inserted, 10u);
  EXPECT_EQ(t.Add(IdWithPrefix(40, 1), Addr(41, 7), 0, false).result, AddResult::kSubnetLimit);
  // Pinned static peers and loopback addresses are exempt.
  EXPECT_EQ(t.Add(IdWithPrefix(40, 2), Addr(42, 7), 0, true).result, AddResult::kInserted);
  base::Endpoint lo = *base::Endpoint::Parse("127.0.0.1:1");
  EXPECT_EQ(t.Add(IdWithPrefix(41, 5), lo, 0, false).result, AddResult::kInserted);
  EXPECT_NE(t.Add(IdWithPrefix(41, 6), lo, 0, false).result, AddResult::kSubnetLimit);
}

TEST(RoutingTable, NonPublicAddressesAreExemptUnlessConfigured) {
  // Twelve hosts of one private /24 (a container network) all fit in one bucket...
  RoutingTable t(kSelf, RoutingConfig{});
  for (uint32_t i = 1; i <= 12; ++i) {
    base::Endpoint e = *base::Endpoint::Parse("172.18.0.2:7700");
    e.ip[3] = static_cast<uint8_t>(i);
    EXPECT_EQ(t.Add(IdWithPrefix(0, i), e, 0, false).result, AddResult::kInserted) << i;
  }
  // ...unless the operator asks for the limits on private addresses too.
  RoutingConfig strict;
  strict.subnet_limit_private = true;
  RoutingTable u(kSelf, strict);
  uint32_t in = 0;
  for (uint32_t i = 1; i <= 12; ++i) {
    base::Endpoint e = *base::Endpoint::Parse("172.18.0.2:7700");
    e.ip[3] = static_cast<uint8_t>(i);
    in += u.Add(IdWithPrefix(0, i), e, 0, false).result == AddResult::kInserted;
  }
  EXPECT_EQ(in, strict.subnet_per_bucket_max);
}

TEST(RoutingTable, NonPublicRanges) {
  for (const char* a : {"127.0.0.1:1", "10.0.0.1:1", "10.255.255.255:1", "172.16.0.1:1",
                        "172.31.255.1:1", "192.168.1.1:1", "100.64.0.1:1", "100.127.255.1:1",
                        "169.254.1.1:1", "[::1]:1", "[fc00::1]:1", "[fd12:3456::1]:1",
                        "[fe80::1]:1", "[febf::1]:1"}) {
    EXPECT_TRUE(IsNonPublic(*base::Endpoint::Parse(a))) << a;
  }
  for (const char* a : {"8.8.8.8:1", "172.15.0.1:1", "172.32.0.1:1", "192.169.0.1:1",
                        "100.63.0.1:1", "100.128.0.1:1", "11.0.0.1:1", "[2001:db8::1]:1",
                        "[fec0::1]:1", "[fe00::1]:1", "[::2]:1"}) {
    EXPECT_FALSE(IsNonPublic(*base::Endpoint::Parse(a))) << a;
  }
  EXPECT_FALSE(IsNonPublic(base::Endpoint{}));
}

TEST(RoutingTable, SubnetSizesAreSlash24AndSlash48) {
  base::Endpoint a = *base::Endpoint::Parse("1.2.3.4:1");
  EXPECT_TRUE(SameSubnet(a, *base::Endpoint::Parse("1.2.3.200:9")));
  EXPECT_FALSE(SameSubnet(a, *base::Endpoint::Parse("1.2.4.4:1")));
  base::Endpoint b = *base::Endpoint::Parse("[2001:db8:1::1]:1");
  EXPECT_TRUE(SameSubnet(b, *base::Endpoint::Parse("[2001:db8:1:ffff::2]:1")));
  EXPECT_FALSE(SameSubnet(b, *base::Endpoint::Parse("[2001:db8:2::1]:1")));
}

// Fills bucket 0 with 20 peers seen at times 1..20 (peer 0 is the least recently seen).
void FillBucket0(RoutingTable& t) {
  for (uint32_t i = 0; i < 20; ++i) t.Add(IdWithPrefix(0, i), Addr(i), 1 + i, false);
  t.Add(IdWithPrefix(1, 500), Addr(500), 1, false);  // makes bucket 0 a non-last bucket
}

TEST(RoutingTable, FullBucketEvictsOnlyAfterFailedProbe) {
  RoutingTable t(kSelf, RoutingConfig{});
  FillBucket0(t);
  // Its oldest entry was heard from moments ago: no probe.
  EXPECT_FALSE(t.Add(IdWithPrefix(0, 70), Addr(70), 100, false).probe);
  const int64_t later = kProbeSilenceUs + 100;
  AddOutcome o = t.Add(IdWithPrefix(0, 77), Addr(77), later, false);
  EXPECT_EQ(o.result, AddResult::kCached);
  ASSERT_TRUE(o.probe);
  EXPECT_EQ(o.probe_target.id, IdWithPrefix(0, 0));  // least recently seen
  EXPECT_NE(t.Find(IdWithPrefix(0, 0)), nullptr);     // not evicted yet
  EXPECT_EQ(t.Find(IdWithPrefix(0, 77)), nullptr);
  // While the probe is out, another newcomer does not probe the same entry again.
  EXPECT_FALSE(t.Add(IdWithPrefix(0, 78), Addr(78), later + 1, false).probe);
  t.ProbeFailed(IdWithPrefix(0, 0), later + 1);
  EXPECT_EQ(t.Find(IdWithPrefix(0, 0)), nullptr);
  EXPECT_NE(t.Find(IdWithPrefix(0, 78)), nullptr);  // the newest spare took its place
  EXPECT_EQ(t.BucketSize(0), 20u);
}

TEST(RoutingTable, AnsweredProbeKeepsTheOldEntry) {
  RoutingTable t(kSelf, RoutingConfig{});
  FillBucket0(t);
  const int64_t later = kProbeSilenceUs + 100;
  AddOutcome o = t.Add(IdWithPrefix(0, 77), Addr(77), later, false);
  ASSERT_TRUE(o.probe);
  EXPECT_TRUE(t.Touch(o.probe_target.id, o.probe_target.addr, later + 1));
  EXPECT_NE(t.Find(IdWithPrefix(0, 0)), nullptr);
  EXPECT_EQ(t.Find(IdWithPrefix(0, 77)), nullptr);
  EXPECT_EQ(t.ReplacementCount(0), 1u);
}

TEST(RoutingTable, PinnedPeersAreNeverEvicted) {
  RoutingTable t(kSelf, RoutingConfig{});
  t.Add(IdWithPrefix(0, 0), Addr(0), 1, /*pinned=*/true);
  for (uint32_t i = 1; i < 20; ++i) t.Add(IdWithPrefix(0, i), Addr(i), 1 + i, false);
  t.Add(IdWithPrefix(1, 500), Addr(500), 1, false);
  AddOutcome o = t.Add(IdWithPrefix(0, 77), Addr(77), kProbeSilenceUs + 100, false);
  ASSERT_TRUE(o.probe);
  EXPECT_NE(o.probe_target.id, IdWithPrefix(0, 0));  // the pinned one is not even probed
  t.ProbeFailed(IdWithPrefix(0, 0), kProbeSilenceUs + 200);
  EXPECT_NE(t.Find(IdWithPrefix(0, 0)), nullptr);
  EXPECT_TRUE(t.Find(IdWithPrefix(0, 0))->pinned);
}

TEST(RoutingTable, FailuresMakeEntriesStaleAndProbed) {
  RoutingTable t(kSelf, RoutingConfig{});
  t.Add(IdWithPrefix(0, 1), Addr(1), 1, false);
  t.Add(IdWithPrefix(0, 2), Addr(2), 1, false);
  EXPECT_FALSE(t.Failed(IdWithPrefix(0, 1)));
  EXPECT_TRUE(t.Failed(IdWithPrefix(0, 1)));  // second failure: stale, probe it
  EXPECT_FALSE(t.Failed(IdWithPrefix(0, 1)));  // already being probed
  Contact out[4];
  ASSERT_EQ(t.Closest(IdWithPrefix(0, 1), out), 1u);
  EXPECT_EQ(out[0].id, IdWithPrefix(0, 2));
  // Hearing from it again makes it usable.
  EXPECT_TRUE(t.Touch(IdWithPrefix(0, 1), Addr(1), 5));
  EXPECT_EQ(t.Closest(IdWithPrefix(0, 1), out), 2u);
  // Touch from another address is not proof of anything.
  EXPECT_FALSE(t.Touch(IdWithPrefix(0, 1), Addr(9), 6));
}

TEST(RoutingTable, ClosestIsInXorOrder) {
  RoutingTable t(kSelf, RoutingConfig{});
  base::Rng rng(7);
  std::vector<NodeId> ids;
  for (uint32_t i = 0; i < 300; ++i) {
    NodeId id = RandomId(rng);
    if (t.Add(id, Addr(i), 1, false).result == AddResult::kInserted) ids.push_back(id);
  }
  ASSERT_EQ(ids.size(), t.size());
  const NodeId target = RandomId(rng);
  std::sort(ids.begin(), ids.end(),
            [&](const NodeId& a, const NodeId& b) { return CloserTo(target, a, b); });
  Contact out[20];
  ASSERT_EQ(t.Closest(target, out), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(out[i].id, ids[i]) << i;
}

// FullTable: every bucket down to `buckets` holds k entries (20 x buckets in all).
void FillTable(RoutingTable& t, uint32_t buckets) {
  for (uint32_t b = 0; b < buckets; ++b) {
    for (uint32_t i = 0; i < 20; ++i) {
      const uint32_t n = b * 100 + i;
      ASSERT_EQ(t.Add(IdWithPrefix(static_cast<int>(b), n), Addr(n), 1, false).result,
                AddResult::kInserted);
    }
  }
  ASSERT_EQ(t.size(), 20u * buckets);
}

// Regression (issue 10): a FindNode with count 0 reached Closest with an empty span, and
// the first entry met n == cap at once: keys[n - 1] and out[n - 1] were read and written at
// index SIZE_MAX (one element before the array). A guard element just before the empty
// span catches that write; the sizes 1, k, 64 (Closest's own cap) and past it are the
// other boundaries.
TEST(RoutingTable, ClosestHandlesEmptyOneFullAndOversizedOutputs) {
  RoutingTable t(kSelf, RoutingConfig{});
  FillTable(t, 15);  // 300 entries
  base::Rng rng(11);
  const Contact guard{IdWithPrefix(200, 7), Addr(4000)};
  for (int round = 0; round < 20; ++round) {
    const NodeId target = round == 0 ? kSelf : RandomId(rng);
    Contact buf[2] = {guard, guard};
    EXPECT_EQ(t.Closest(target, std::span(buf + 1, 0)), 0u);
    EXPECT_EQ(buf[0].id, guard.id);
    EXPECT_EQ(buf[1].id, guard.id);
    Contact one[1];
    ASSERT_EQ(t.Closest(target, one), 1u);
    Contact all[80];
    ASSERT_EQ(t.Closest(target, all), 64u);  // capped at 64 however large `out` is
    EXPECT_EQ(one[0].id, all[0].id);
    for (size_t i = 1; i < 64; ++i) EXPECT_TRUE(CloserTo(target, all[i - 1].id, all[i].id));
  }
}

// The same insertion pattern in TableSnapshot::Closest (other shards' find_node answers).
TEST(TableSnapshot, ClosestHandlesEmptyOneAndFullOutputs) {
  base::Rng rng(12);
  TableSnapshot snap(400);
  snap.Clear(0);
  for (uint32_t i = 0; i < 400; ++i) ASSERT_TRUE(snap.Push(Contact{RandomId(rng), Addr(i)}));
  EXPECT_FALSE(snap.Push(Contact{RandomId(rng), Addr(401)}));  // full
  const Contact guard{IdWithPrefix(200, 7), Addr(4000)};
  for (int round = 0; round < 20; ++round) {
    const NodeId target = RandomId(rng);
    Contact buf[2] = {guard, guard};
    EXPECT_EQ(snap.Closest(target, std::span(buf + 1, 0)), 0u);
    EXPECT_EQ(buf[0].id, guard.id);
    EXPECT_EQ(buf[1].id, guard.id);
    Contact one[1];
    ASSERT_EQ(snap.Closest(target, one), 1u);
    Contact k[wire::kNodesPerMessageMax];
    ASSERT_EQ(snap.Closest(target, k), wire::kNodesPerMessageMax);
    EXPECT_EQ(one[0].id, k[0].id);
    for (size_t i = 1; i < std::size(k); ++i) EXPECT_TRUE(CloserTo(target, k[i - 1].id, k[i].id));
  }
  // An empty snapshot answers nothing at every size.
  TableSnapshot empty(4);
  Contact k[wire::kNodesPerMessageMax];
  EXPECT_EQ(empty.Closest(RandomId(rng), k), 0u);
  EXPECT_EQ(empty.Closest(RandomId(rng), std::span(k, 0)), 0u);
}

// A sealed snapshot narrows to the range sharing the target's prefix before it sorts
// (issue 14: 8.9 us -> see bench/README.md). It must return exactly what the plain scan
// returns: random tables, tables clustered like a real one (dense near one id), targets
// inside the table, beside it and far away, at every output size.
TEST(TableSnapshot, SealedClosestEqualsTheFullScan) {
  base::Rng rng(21);
  for (int shape = 0; shape < 3; ++shape) {
    for (uint32_t size : {1u, 19u, 20u, 21u, 64u, 640u}) {
      TableSnapshot plain(size), sealed(size);
      plain.Clear(0);
      sealed.Clear(0);
      const NodeId self = RandomId(rng);
      for (uint32_t i = 0; i < size; ++i) {
        // shape 0: uniform; 1: a Kademlia table's shape (about half share 1+ bits with
        // self, a quarter 2+, ...); 2: all share 40 bits (one deep cluster).
        NodeId id = shape == 0 ? RandomId(rng)
                    : shape == 1 ? RandomIdWithPrefix(self, static_cast<int>(i % 24), rng)
                                 : RandomIdWithPrefix(self, 40, rng);
        ASSERT_TRUE(plain.Push(Contact{id, Addr(i)}));
        ASSERT_TRUE(sealed.Push(Contact{id, Addr(i)}));
      }
      sealed.Seal();
      for (int round = 0; round < 50; ++round) {
        NodeId target = round % 3 == 0   ? RandomId(rng)
                        : round % 3 == 1 ? RandomIdWithPrefix(self, round % 48, rng)
                                         : plain.entries()[rng.Uniform(size)].id;
        for (size_t want : {size_t{1}, size_t{8}, size_t{20}}) {
          Contact a[20], b[20];
          const size_t na = plain.Closest(target, std::span(a, want));
          const size_t nb = sealed.Closest(target, std::span(b, want));
          ASSERT_EQ(na, nb);
          for (size_t i = 0; i < na; ++i) {
            ASSERT_EQ(a[i].id, b[i].id) << "shape " << shape << " size " << size << " want "
                                        << want << " at " << i;
          }
        }
      }
      // Contains and HoldsId agree with the entries after sealing.
      const Contact& c = plain.entries()[size / 2];
      EXPECT_TRUE(sealed.Contains(c.id, c.addr));
      EXPECT_TRUE(sealed.HoldsId(c.id));
      EXPECT_FALSE(sealed.Contains(c.id, Addr(size + 5)));
    }
  }
}

TEST(RoutingTable, RandomIdWithPrefixHasThatPrefix) {
  base::Rng rng(3);
  NodeId base = RandomId(rng);
  for (int bits : {0, 1, 7, 8, 9, 100, 255}) {
    EXPECT_EQ(CommonPrefixBits(base, RandomIdWithPrefix(base, bits, rng)), bits);
  }
}

TEST(TableFile, RoundTripAndCorruption) {
  std::vector<SavedContact> in = {{Contact{IdWithPrefix(0, 1), Addr(1)}, false},
                                  {Contact{IdWithPrefix(4, 2),
                                           *base::Endpoint::Parse("[2001:db8::5]:9")},
                                   true}};
  std::vector<uint8_t> bytes = SerializeTable(in);
  auto out = ParseTable(bytes);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].contact, in[0].contact);
  EXPECT_EQ((*out)[1].contact, in[1].contact);
  EXPECT_TRUE((*out)[1].pinned);
  for (size_t i = 0; i < bytes.size(); i += 7) {
    std::vector<uint8_t> bad = bytes;
    bad[i] ^= 0x40;
    EXPECT_FALSE(ParseTable(bad).ok()) << "flip at " << i;
  }
  std::vector<uint8_t> truncated(bytes.begin(), bytes.end() - 1);
  EXPECT_EQ(ParseTable(truncated).status().code(), absl::StatusCode::kDataLoss);
  std::vector<uint8_t> bad_sum = bytes;
  bad_sum.back() ^= 1;
  EXPECT_NE(ParseTable(bad_sum).status().message().find("checksum"), std::string::npos);
  EXPECT_FALSE(ParseTable({}).ok());
}

TEST(TableFile, SaveAndLoadAtomically) {
  char dir[] = "/tmp/rp_table_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/routing.table";
  EXPECT_EQ(LoadTableFile(path).status().code(), absl::StatusCode::kNotFound);
  RoutingTable t(kSelf, RoutingConfig{});
  for (uint32_t i = 0; i < 30; ++i) t.Add(IdWithPrefix(static_cast<int>(i % 5), i), Addr(i), 1, i == 3);
  ASSERT_TRUE(SaveTableFile(path, SerializeTable(TableEntries(t))).ok());
  auto loaded = LoadTableFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->size(), t.size());
  EXPECT_EQ(access((path + ".tmp").c_str(), F_OK), -1);  // no temporary left behind
  std::remove(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace ringpeer::dht
