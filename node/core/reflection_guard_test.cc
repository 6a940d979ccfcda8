// Goal: ReflectionGuard sends an unproved address at most 3x what it received from it,
// summed over time (not per request), lets our own small requests through, asks for a
// probe, and serves a proved address without limit until the proof expires.
#include "node/core/reflection_guard.h"

#include <gtest/gtest.h>

namespace ringpeer::core {
namespace {

constexpr uint8_t kReply = static_cast<uint8_t>(wire::MessageType::kRoomSyncData);
constexpr uint8_t kJoin = static_cast<uint8_t>(wire::MessageType::kRoomJoin);

base::Endpoint Addr(const char* text) { return *base::Endpoint::Parse(text); }

TEST(ReflectionGuard, UnprovedGetsAtMostThreeTimesOverTime) {
  ReflectionGuard g(64);
  const base::Endpoint v = Addr("127.0.5.5:9");
  bool probe = false;
  uint64_t sent = 0, received = 0;
  // Many small requests, each answered with as much as the guard lets through.
  for (int i = 0; i < 100; ++i) {
    g.OnReceive(v, 100, i);
    received += 100;
    while (g.Allow(v, 250, kReply, i, &probe)) sent += 250;
  }
  EXPECT_LE(sent, 3 * received);
  EXPECT_GE(sent, 3 * received - 250);  // the credit is used, not lost
  EXPECT_GT(g.counters().refused, 0u);
}

TEST(ReflectionGuard, PortIgnoredAndCreditCapped) {
  ReflectionGuard g(64);
  bool probe = false;
  g.OnReceive(Addr("127.0.5.5:1"), 1000, 0);
  EXPECT_TRUE(g.Allow(Addr("127.0.5.5:2"), 3000, kReply, 0, &probe));  // same host
  EXPECT_FALSE(g.Allow(Addr("127.0.5.5:2"), 1, kReply, 0, &probe));
  // Banking: a long quiet stream cannot save up more than kCreditMax.
  for (int i = 0; i < 1000; ++i) g.OnReceive(Addr("127.0.5.6:1"), 1000, i);
  int64_t sent = 0;
  while (sent <= kCreditMax && g.Allow(Addr("127.0.5.6:1"), 1000, kReply, 1000, &probe)) {
    sent += 1000;
  }
  EXPECT_EQ(sent, kCreditMax / 1000 * 1000);
}

TEST(ReflectionGuard, OwnRequestsPassAndAskForAProbe) {
  ReflectionGuard g(64);
  const base::Endpoint relay = Addr("127.0.0.9:7700");
  bool probe = false;
  EXPECT_TRUE(g.Allow(relay, 400, kJoin, 0, &probe));
  EXPECT_TRUE(probe);
  const uint64_t txid = g.Probe(relay, 0xABCDEF00ull, 3, 0);
  EXPECT_EQ(txid & 0xFF, 3u);
  // Not probed again within the interval.
  EXPECT_TRUE(g.Allow(relay, 400, kJoin, 1, &probe));
  EXPECT_FALSE(probe);
  EXPECT_FALSE(g.Allow(relay, 400, kReply, 1, &probe));
}

TEST(ReflectionGuard, EchoedProbeProves) {
  ReflectionGuard g(64);
  const base::Endpoint a = Addr("127.0.7.7:1");
  g.OnReceive(a, 200, 0);
  EXPECT_TRUE(g.ShouldProbe(a, 0));
  const uint64_t txid = g.Probe(a, 0x1234500ull, 0, 0);
  EXPECT_FALSE(g.ShouldProbe(a, 10));
  EXPECT_FALSE(g.OnPong(Addr("127.0.7.8:1"), txid, 10));  // from elsewhere: no
  EXPECT_FALSE(g.OnPong(a, txid ^ 0x100, 10));           // wrong token: no
  EXPECT_FALSE(g.IsProved(a, 10));
  EXPECT_TRUE(g.OnPong(a, txid, 10));
  EXPECT_TRUE(g.IsProved(a, 10));
  EXPECT_FALSE(g.OnPong(a, txid, 11));  // used once
  bool probe = false;
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(g.Allow(a, 1200, kReply, 20, &probe));
  EXPECT_EQ(g.counters().proved, 1u);
  // The proof expires; traffic after half its life asks for a fresh probe.
  EXPECT_TRUE(g.ShouldProbe(a, 10 + kProofTtlUs / 2 + kProbeIntervalUs));
  EXPECT_FALSE(g.IsProved(a, 10 + kProofTtlUs));
}

TEST(ReflectionGuard, ProbeNeedsCreditWhenTriggeredByTraffic) {
  ReflectionGuard g(64);
  const base::Endpoint a = Addr("127.0.8.8:1");
  g.OnReceive(a, 20, 0);  // 60 bytes of credit: less than a probe
  EXPECT_FALSE(g.ShouldProbe(a, 0));
  g.OnReceive(a, 40, 0);
  EXPECT_TRUE(g.ShouldProbe(a, 0));
}

TEST(ReflectionGuard, SprayedSourcesEvictUnprovedFirst) {
  ReflectionGuard g(4);  // one set of four
  const base::Endpoint peer = Addr("127.0.9.1:1");
  g.Prove(peer, 0);
  for (int i = 0; i < 100; ++i) {
    base::Endpoint e = Addr("127.0.10.1:1");
    e.ip[3] = static_cast<uint8_t>(i);
    g.OnReceive(e, 100, i + 1);
  }
  EXPECT_TRUE(g.IsProved(peer, 200));
}

// A proof source (the routing table) vouches for the hosts it holds: the guard asks it
// only where it would refuse or probe, sends on, and remembers the proof; a host the
// source does not vouch for is refused as before.
TEST(ReflectionGuard, ProofSourceVouchesWhereTheGuardWouldRefuse) {
  struct Table : ProofSource {
    bool Vouches(const base::Endpoint& a, int64_t) const noexcept override {
      ++asked;
      return a.ip[2] == 11;  // 127.0.11.x: "in the table", any port
    }
    mutable int asked = 0;
  } table;
  ReflectionGuard g(4);
  g.set_proof_source(&table);
  bool probe = false;
  const base::Endpoint peer = Addr("127.0.11.1:5"), stranger = Addr("127.0.12.1:5");
  EXPECT_TRUE(g.IsProved(Addr("127.0.11.1:6"), 0));
  EXPECT_TRUE(g.Allow(peer, 1200, kReply, 0, &probe));  // no credit, but vouched for
  EXPECT_FALSE(probe);
  const int asked = table.asked;
  EXPECT_TRUE(g.Allow(peer, 1200, kReply, 1, &probe));  // remembered: not asked again
  EXPECT_EQ(table.asked, asked);
  g.OnReceive(peer, 200, 2);
  EXPECT_FALSE(g.ShouldProbe(peer, 2));
  EXPECT_FALSE(g.Allow(stranger, 1200, kReply, 3, &probe));
  EXPECT_EQ(g.counters().refused, 1u);
  g.OnReceive(stranger, 200, 4);
  EXPECT_TRUE(g.ShouldProbe(stranger, 4));
}

// Own requests whose reply proves the address (a FindNode's nodes) go without a probe; a
// room join, whose answers do not, still asks for one.
TEST(ReflectionGuard, NoProbeAlongsideRequestsWhoseReplyProves) {
  ReflectionGuard g(64);
  bool probe = true;
  const uint8_t find_node = static_cast<uint8_t>(wire::MessageType::kFindNode);
  EXPECT_TRUE(g.Allow(Addr("127.0.13.1:1"), 400, find_node, 0, &probe));
  EXPECT_FALSE(probe);
  EXPECT_TRUE(g.Allow(Addr("127.0.13.2:1"), 400, kJoin, 0, &probe));
  EXPECT_TRUE(probe);
}

}  // namespace
}  // namespace ringpeer::core
