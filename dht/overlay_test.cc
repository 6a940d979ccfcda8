// Goal: the overlay forms a verified peer set through ping/challenge/peers, and refuses
// what it should: forged proofs, replies to nothing, lists from unverified peers.
// Method: a few Overlay + PingResponder pairs on an in-memory network driven by a virtual
// clock; datagrams pass through the real encoder and wire::Decode.
#include "dht/overlay.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <memory>

#include "dht/ping_responder.h"
#include "dht/snapshot.h"
#include "flatbuffers/flatbuffers.h"

namespace ringpeer::dht {
namespace {

struct Packet {
  base::Endpoint from, to;
  std::vector<uint8_t> bytes;
};

class VecOutbox : public base::Outbox {
 public:
  VecOutbox(base::Endpoint self, std::deque<Packet>* q) : self_(self), q_(q) {}
  std::span<uint8_t> Buffer() noexcept override { return buf_; }
  void Commit(size_t size, const base::Endpoint& to) noexcept override {
    q_->push_back(Packet{self_, to, std::vector<uint8_t>(buf_.begin(), buf_.begin() + size)});
  }

 private:
  base::Endpoint self_;
  std::deque<Packet>* q_;
  alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> buf_{};
};

// BadProof: a forger's proof scheme: it answers every challenge with a signature over
// nothing, under the right key (so the id check passes and the signature check fails).
class BadProof final : public ProofScheme {
 public:
  wire::Signature Sign(const wire::KeyPair&, const wire::Hash256&) const noexcept override {
    return wire::Signature{};
  }
  bool Verify(const wire::PublicKey&, const wire::Hash256&,
              const wire::Signature&) const noexcept override {
    return true;  // the forger believes everyone
  }
};

struct TestNode {
  TestNode(uint8_t n, std::vector<base::Endpoint> bootstrap, std::deque<Packet>* q, int64_t now,
           const ProofScheme* responder_proof = nullptr, OverlayEvents* events = nullptr,
           bool client = false, int64_t lookup_duration_max_us = 0)
      : addr(*base::Endpoint::Parse("127.0.0." + std::to_string(n) + ":7700")),
        keys(wire::KeyPair::FromSeed(Seed(n))),
        rng(n),
        overlay(keys, Config(std::move(bootstrap), events, client, lookup_duration_max_us),
                &rng, now),
        responder(keys, now, responder_proof, client),
        out(addr, q) {}
  static OverlayConfig Config(std::vector<base::Endpoint> bootstrap, OverlayEvents* events,
                              bool client, int64_t lookup_duration_max_us) {
    OverlayConfig c;
    if (lookup_duration_max_us > 0) c.lookup_duration_max_us = lookup_duration_max_us;
    c.client = client;
    c.peers_max = 64;
    c.bootstrap = std::move(bootstrap);
    c.events = events;
    return c;
  }
  static std::array<uint8_t, 32> Seed(uint8_t n) {
    std::array<uint8_t, 32> s{};
    s[0] = n;
    return s;
  }
  base::Endpoint addr;
  wire::KeyPair keys;
  base::Rng rng;
  Overlay overlay;
  PingResponder responder;
  VecOutbox out;
  std::map<wire::Verdict, int> verdicts;
  bool down = false;
};

class Net {
 public:
  TestNode* Add(uint8_t n, std::vector<base::Endpoint> bootstrap = {},
                const ProofScheme* responder_proof = nullptr, OverlayEvents* events = nullptr,
                bool client = false, int64_t lookup_duration_max_us = 0) {
    nodes_.push_back(std::make_unique<TestNode>(n, std::move(bootstrap), &q_, now_,
                                                responder_proof, events, client,
                                                lookup_duration_max_us));
    return nodes_.back().get();
  }
  TestNode* At(const base::Endpoint& e) {
    for (auto& n : nodes_)
      if (n->addr == e) return n.get();
    return nullptr;
  }
  void Deliver(const Packet& p) {
    TestNode* n = At(p.to);
    if (n == nullptr || n->down) return;
    alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> buf;
    std::copy(p.bytes.begin(), p.bytes.end(), buf.begin());
    wire::Message m;
    wire::Verdict v = wire::Decode(buf.data(), p.bytes.size(), &m);
    if (v == wire::Verdict::kOk) {
      switch (m.type()) {
        case wire::MessageType::kPing:
          v = n->responder.Answer(now_, p.from, m, n->out);
          n->overlay.OnPingSeen(now_, p.from, wire::FromWireId(*m.ping()->sender()), n->out,
                                m.ping()->client());
          break;
        default:
          v = n->overlay.OnMessage(now_, p.from, m, n->out);
          break;
      }
    }
    n->verdicts[v]++;
  }
  // Run: advances virtual time in 100 ms ticks, delivering everything in between.
  void Run(int64_t duration_us) {
    const int64_t end = now_ + duration_us;
    for (int guard = 0; now_ < end && guard < 100000; ++guard) {
      for (int k = 0; k < 10000 && !q_.empty(); ++k) {
        Packet p = std::move(q_.front());
        q_.pop_front();
        Deliver(p);
      }
      now_ += 100'000;
      for (auto& n : nodes_)
        if (!n->down) n->overlay.Tick(now_, n->out);
    }
  }
  std::deque<Packet>& queue() { return q_; }
  int64_t now() const { return now_; }

 private:
  int64_t now_ = 1'000'000;
  std::deque<Packet> q_;
  std::vector<std::unique_ptr<TestNode>> nodes_;
};

bool HasVerified(const TestNode& n, const TestNode& peer, int64_t now) {
  for (const PeerStatus& s : n.overlay.Snapshot(now)) {
    if (s.addr == peer.addr && s.verified && s.live &&
        s.id == wire::NodeIdOf(peer.keys.public_key)) {
      return true;
    }
  }
  return false;
}

TEST(Overlay, ThreeNodesVerifyEachOther) {
  ASSERT_TRUE(wire::InitCrypto());
  Net net;
  TestNode* a = net.Add(1);
  TestNode* b = net.Add(2, {a->addr});
  TestNode* c = net.Add(3, {a->addr});
  net.Run(3 * kSecondUs);
  for (TestNode* x : {a, b, c}) {
    for (TestNode* y : {a, b, c}) {
      if (x == y) continue;
      EXPECT_TRUE(HasVerified(*x, *y, net.now()))
          << int(x->addr.ip[3]) << "->" << int(y->addr.ip[3]);
    }
    EXPECT_EQ(x->overlay.VerifiedPeers(), 2u);
    EXPECT_EQ(x->verdicts[wire::Verdict::kBadSignature], 0);
  }
  EXPECT_EQ(b->overlay.observed_address(), b->addr);
}

// A DHT client verifies the nodes it joins through and can look up, but no node takes it
// into its table (nor tells others of it), so its going away leaves nothing to time out.
TEST(Overlay, ClientsAreAnsweredButNeverTabled) {
  ASSERT_TRUE(wire::InitCrypto());
  Net net;
  TestNode* a = net.Add(1);
  TestNode* b = net.Add(2, {a->addr});
  TestNode* c = net.Add(3, {a->addr}, nullptr, nullptr, /*client=*/true);
  net.Run(3 * kSecondUs);
  EXPECT_TRUE(HasVerified(*c, *a, net.now()));  // the client knows its way in
  EXPECT_TRUE(HasVerified(*c, *b, net.now()));  // and learns of others by peer exchange
  const wire::NodeId client_id = wire::NodeIdOf(c->keys.public_key);
  for (TestNode* x : {a, b}) {
    Contact all[64];
    const size_t n = x->overlay.table().Closest(client_id, all);
    for (size_t i = 0; i < n; ++i) EXPECT_NE(all[i].id, client_id) << int(x->addr.ip[3]);
    EXPECT_EQ(n, 1u);  // only the other server
  }
  // b met the client only by its own lookups' traffic, never through a's peer lists.
  bool b_heard_of_c_from_a = false;
  for (const PeerStatus& s : b->overlay.Snapshot(net.now())) {
    b_heard_of_c_from_a |= s.addr == c->addr && !s.verified;
  }
  EXPECT_FALSE(b_heard_of_c_from_a);
  EXPECT_TRUE(HasVerified(*a, *b, net.now()));  // servers still table each other
}

TEST(Overlay, SilentPeersAreForgottenButBootstrapIsPinned) {
  Net net;
  TestNode* a = net.Add(1);
  TestNode* b = net.Add(2, {a->addr});
  TestNode* c = net.Add(3, {a->addr});
  net.Run(3 * kSecondUs);
  ASSERT_TRUE(HasVerified(*a, *c, net.now()));
  c->down = true;
  a->down = true;  // b's bootstrap goes away too
  net.Run(kLiveWindowUs + kPingIntervalUs + 4 * kRequestTimeoutUs);
  bool c_known = false, a_known = false;
  for (const PeerStatus& s : b->overlay.Snapshot(net.now())) {
    if (s.addr == c->addr) c_known = true;
    if (s.addr == a->addr) {
      a_known = true;
      EXPECT_FALSE(s.live);
      EXPECT_TRUE(s.bootstrap);
    }
  }
  EXPECT_FALSE(c_known);
  EXPECT_TRUE(a_known);
  EXPECT_EQ(b->overlay.LivePeers(net.now()), 0u);
  // The bootstrap comes back: b re-verifies it by itself.
  a->down = false;
  net.Run(kBootstrapRetryMaxUs + 3 * kSecondUs);
  EXPECT_TRUE(HasVerified(*b, *a, net.now()));
}

TEST(Overlay, ForgedProofIsRejected) {
  Net net;
  TestNode* a = net.Add(1);
  TestNode* b = net.Add(2, {a->addr});
  // b's first tick challenges a. Intercept the ping and answer it with a forgery: a valid
  // key whose id matches, but a signature over the wrong challenge.
  b->overlay.Tick(net.now(), b->out);
  ASSERT_EQ(net.queue().size(), 1u);
  Packet ping = net.queue().front();
  net.queue().clear();
  alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> buf;
  std::copy(ping.bytes.begin(), ping.bytes.end(), buf.begin());
  wire::Message m;
  ASSERT_EQ(wire::Decode(buf.data(), ping.bytes.size(), &m), wire::Verdict::kOk);
  wire::Hash256 wrong{};
  wire::Signature sig = wire::Sign(a->keys.secret_key, wire::PongSigningBytes(wrong));
  wire::Encoder enc;
  VecOutbox forged_out(a->addr, &net.queue());
  std::span<uint8_t> fb = forged_out.Buffer();
  size_t n = enc.Pong(fb, 0, m.ping()->txid(), wire::NodeIdOf(a->keys.public_key), b->addr,
                      &a->keys.public_key, &sig);
  forged_out.Commit(n, b->addr);
  net.Deliver(net.queue().front());
  net.queue().pop_front();
  EXPECT_EQ(b->verdicts[wire::Verdict::kBadSignature], 1);
  EXPECT_EQ(b->overlay.VerifiedPeers(), 0u);
  // A replay of the same pong is now a reply to nothing.
  forged_out.Commit(n, b->addr);
  net.Deliver(net.queue().front());
  net.queue().pop_front();
  EXPECT_EQ(b->verdicts[wire::Verdict::kUnexpectedReply], 1);
}

TEST(Overlay, ForgerIsBackedOffNotChallengedEveryTick) {
  // A forger that pings us and answers each of our challenges with a bad signature must
  // not cost us a verification per tick: a few failures back it off, then it is forgotten.
  BadProof bad;
  Net net;
  TestNode* a = net.Add(1);
  TestNode* forger = net.Add(2, {a->addr}, &bad);
  net.Run(60 * kSecondUs);
  const int bad_proofs = a->verdicts[wire::Verdict::kBadSignature];
  EXPECT_GE(bad_proofs, 1);  // it was challenged, and caught
  // 60 s of 100 ms ticks would be ~600 verifications without the back-off. With it: up to
  // kFailuresMax per ping that brings the forger back (it pings every kPingIntervalUs).
  EXPECT_LE(bad_proofs, 20);
  EXPECT_EQ(a->overlay.counters().proofs_failed, static_cast<uint64_t>(bad_proofs));
  EXPECT_EQ(a->overlay.VerifiedPeers(), 0u);
  for (const PeerStatus& s : a->overlay.Snapshot(net.now())) EXPECT_FALSE(s.verified);
  // The forger itself verified a (a's proofs are honest).
  EXPECT_TRUE(HasVerified(*forger, *a, net.now()));
}

TEST(Overlay, PeersFromUnverifiedSenderAreRefused) {
  Net net;
  TestNode* a = net.Add(1);
  TestNode* b = net.Add(2);
  wire::Encoder enc;
  std::array<wire::PeerInfo, 1> list{wire::PeerInfo{wire::NodeId{}, *base::Endpoint::Parse("127.0.0.9:1")}};
  size_t n = enc.Peers(b->out.Buffer(), 0, 1, wire::NodeIdOf(b->keys.public_key), list);
  b->out.Commit(n, a->addr);
  net.Deliver(net.queue().front());
  net.queue().pop_front();
  EXPECT_EQ(a->verdicts[wire::Verdict::kUnverifiedSender], 1);
  EXPECT_EQ(a->overlay.Snapshot(net.now()).size(), 0u);
}

TEST(Overlay, SelfBootstrapIsDropped) {
  Net net;
  TestNode* a = net.Add(1);
  TestNode* b = net.Add(2, {a->addr, *base::Endpoint::Parse("127.0.0.2:7700")});
  net.Run(3 * kSecondUs);
  auto snap = b->overlay.Snapshot(net.now());
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_EQ(snap[0].addr, a->addr);
  EXPECT_TRUE(snap[0].verified);
}

// LookupLog: the lookup events one node reports, with the virtual time of each.
struct LookupLog : OverlayEvents {
  struct Done {
    uint32_t handle;
    LookupKind kind;
    size_t answered;
    int64_t duration_us;
    int64_t at_us;
    bool expired;
  };
  void OnLookupStarted(uint32_t handle, LookupKind kind) override {
    started.push_back({handle, kind});
  }
  void OnLookupDone(const LookupResult& r) override {
    done.push_back({r.handle, r.kind, r.closest.size(), r.duration_us, net->now(), r.expired});
  }
  const Net* net = nullptr;
  std::vector<std::pair<uint32_t, LookupKind>> started;
  std::vector<Done> done;
};

// Goal: what /metrics counts and times (node/shard): every lookup the overlay runs, of any
// kind, is reported started and then done under the same handle, with the time it took
// on the caller's clock; a lookup that cannot start is not reported at all.
TEST(Overlay, LookupsAreReportedStartedThenDoneWithTheirDuration) {
  ASSERT_TRUE(wire::InitCrypto());
  Net net;
  LookupLog log;
  log.net = &net;
  TestNode* a = net.Add(1);
  TestNode* b = net.Add(2, {a->addr});
  TestNode* c = net.Add(3, {a->addr}, nullptr, &log);
  base::Rng rng(7);
  EXPECT_EQ(c->overlay.FindNode(net.now(), RandomId(rng), c->out), 0u);  // no peers yet
  EXPECT_TRUE(log.started.empty());
  net.Run(3 * kSecondUs);
  ASSERT_EQ(c->overlay.VerifiedPeers(), 2u);
  // Joining ran refresh lookups; each one started has ended by now, in a single report.
  ASSERT_FALSE(log.started.empty());
  ASSERT_EQ(log.done.size(), log.started.size());
  for (size_t i = 0; i < log.started.size(); ++i) {
    EXPECT_EQ(std::count_if(log.done.begin(), log.done.end(),
                            [&](const LookupLog::Done& d) {
                              return d.handle == log.started[i].first &&
                                     d.kind == log.started[i].second;
                            }),
              1);
  }

  // A lookup while one of the two peers is down: the live one answers at once, the other
  // times out (its retries included), so the lookup takes at least one request timeout.
  b->down = true;
  const size_t before = log.started.size();
  const int64_t t0 = net.now();
  const uint32_t h = c->overlay.FindNode(t0, RandomId(rng), c->out);
  ASSERT_NE(h, 0u);
  ASSERT_EQ(log.started.size(), before + 1);
  EXPECT_EQ(log.started.back().first, h);
  EXPECT_EQ(log.started.back().second, LookupKind::kFindNode);
  net.Run(20 * kSecondUs);
  auto it = std::find_if(log.done.begin(), log.done.end(),
                         [&](const LookupLog::Done& d) { return d.handle == h; });
  ASSERT_NE(it, log.done.end());
  EXPECT_EQ(it->kind, LookupKind::kFindNode);
  EXPECT_EQ(it->answered, 1u);  // a answered, b did not
  EXPECT_EQ(it->duration_us, it->at_us - t0);
  EXPECT_GE(it->duration_us, kDhtRequestTimeoutUs);
  EXPECT_FALSE(it->expired);
}

// Goal: a lookup cannot hold its slot for ever (issue 14, item 5: among liars lookups ran
// for minutes). One still running at lookup_duration_max_us ends then with what answered,
// marked expired and counted; a lookup that finishes in time is not marked.
TEST(Overlay, ALookupPastItsDeadlineEndsWithWhatAnswered) {
  ASSERT_TRUE(wire::InitCrypto());
  Net net;
  LookupLog log;
  log.net = &net;
  constexpr int64_t kDeadlineUs = 1'500'000;  // b's tries (1 s, then retries) take longer
  TestNode* a = net.Add(1);
  TestNode* b = net.Add(2, {a->addr});
  TestNode* c = net.Add(3, {a->addr}, nullptr, &log, false, kDeadlineUs);
  net.Run(3 * kSecondUs);
  ASSERT_EQ(c->overlay.VerifiedPeers(), 2u);
  base::Rng rng(5);
  // Both answer: done in time, not expired.
  const uint32_t h1 = c->overlay.FindNode(net.now(), RandomId(rng), c->out);
  ASSERT_NE(h1, 0u);
  auto of = [&](uint32_t h) {
    return std::find_if(log.done.begin(), log.done.end(),
                        [&](const LookupLog::Done& d) { return d.handle == h; });
  };
  net.Run(kSecondUs);
  ASSERT_NE(of(h1), log.done.end());
  EXPECT_EQ(of(h1)->answered, 2u);
  EXPECT_FALSE(of(h1)->expired);
  EXPECT_EQ(c->overlay.counters().lookups_expired, 0u);

  b->down = true;
  const int64_t t0 = net.now();
  const uint32_t h2 = c->overlay.FindNode(t0, RandomId(rng), c->out);
  ASSERT_NE(h2, 0u);
  net.Run(kDeadlineUs - 200'000);
  EXPECT_EQ(of(h2), log.done.end());  // b is still being tried
  net.Run(5 * kSecondUs);
  auto it = of(h2);
  ASSERT_NE(it, log.done.end());
  EXPECT_TRUE(it->expired);
  EXPECT_EQ(it->answered, 1u);  // a's answer stands
  EXPECT_GE(it->duration_us, kDeadlineUs);
  EXPECT_LT(it->duration_us, kDeadlineUs + 200'000);  // the next tick after the deadline
  EXPECT_EQ(c->overlay.counters().lookups_expired, 1u);
  EXPECT_EQ(std::count_if(log.done.begin(), log.done.end(),
                          [&](const LookupLog::Done& d) { return d.handle == h2; }),
            1);  // reported once: its requests were given back with it
}

// Issue 14, item 6: a lookup slot holds its storage (the candidates, ~3.7 KB by default)
// while a lookup runs in it and for a housekeeping period after, then gives it back; a
// lookup started later gets a slot again and completes as before.
TEST(Overlay, LookupSlotsHoldStorageOnlyWhileInUse) {
  ASSERT_TRUE(wire::InitCrypto());
  Net net;
  LookupLog log;
  log.net = &net;
  TestNode* a = net.Add(1);
  TestNode* b = net.Add(2, {a->addr});
  TestNode* c = net.Add(3, {a->addr}, nullptr, &log);
  EXPECT_EQ(c->overlay.LookupSlotsHeld(), 0u);  // none before its first lookup
  net.Run(3 * kSecondUs);
  ASSERT_EQ(c->overlay.VerifiedPeers(), 2u);
  ASSERT_FALSE(log.done.empty());  // joining ran refresh lookups
  net.Run(3 * kHousekeepingUs);
  EXPECT_EQ(c->overlay.LookupSlotsHeld(), 0u);

  // A lookup that waits on a silent peer holds one slot until it ends, and after it
  // ends, until housekeeping has seen it idle for a period.
  b->down = true;
  base::Rng rng(11);
  const uint32_t h = c->overlay.FindNode(net.now(), RandomId(rng), c->out);
  ASSERT_NE(h, 0u);
  EXPECT_EQ(c->overlay.LookupSlotsHeld(), 1u);
  const size_t done_before = log.done.size();
  net.Run(kDhtRequestTimeoutUs / 2);
  EXPECT_EQ(log.done.size(), done_before);  // b's request has not timed out yet
  EXPECT_EQ(c->overlay.LookupSlotsHeld(), 1u);
  net.Run(20 * kSecondUs);
  ASSERT_EQ(log.done.size(), done_before + 1);
  EXPECT_EQ(log.done.back().handle, h);
  EXPECT_EQ(log.done.back().answered, 1u);
  net.Run(3 * kHousekeepingUs);
  EXPECT_EQ(c->overlay.LookupSlotsHeld(), 0u);

  // Slots come back for new lookups, and those complete.
  b->down = false;
  net.Run(kSecondUs);
  const uint32_t h2 = c->overlay.FindNode(net.now(), RandomId(rng), c->out);
  ASSERT_NE(h2, 0u);
  EXPECT_EQ(c->overlay.LookupSlotsHeld(), 1u);
  net.Run(5 * kSecondUs);
  ASSERT_EQ(log.done.back().handle, h2);
  EXPECT_EQ(log.done.back().answered, 2u);
}

// ---------------------------------------------------------------------------------------
// Issue 10: the counts of FindNode and GetProviders at 0, 1, the maximum and past it,
// against a node whose routing table is full. A FindNode with count 0 once reached
// RoutingTable::Closest with an empty span and wrote one element before the stack array.

// AcceptAllProof: believes every proof, so that the test can table ids it grinds for
// their prefixes (an id is still the hash of the key the pong names).
class AcceptAllProof final : public ProofScheme {
 public:
  wire::Signature Sign(const wire::KeyPair&, const wire::Hash256&) const noexcept override {
    return wire::Signature{};
  }
  bool Verify(const wire::PublicKey&, const wire::Hash256&,
              const wire::Signature&) const noexcept override {
    return true;
  }
};

struct FakePeer {
  wire::PublicKey key{};
  NodeId id{};
  base::Endpoint addr;
};

// FullTableNode: an Overlay whose routing table holds k = 20 entries in each of its first
// `buckets` buckets, all verified through the real ping/challenge/pong path.
class FullTableNode {
 public:
  static constexpr uint32_t kBuckets = 14;  // 280 entries

  FullTableNode()
      : addr_(*base::Endpoint::Parse("127.0.0.1:7700")),
        keys_(wire::KeyPair::FromSeed(std::array<uint8_t, 32>{77})),
        rng_(77),
        overlay_(keys_, Config(&trust_), &rng_, now_),
        out_(addr_, &q_) {}

  static OverlayConfig Config(const ProofScheme* proof) {
    OverlayConfig c;
    c.peers_max = 1024;
    c.proof = proof;
    c.peers_interval_us = 0;                   // no peer exchange to sort out
    c.ping_interval_us = 3600 * kSecondUs;     // nor liveness pings
    c.request_timeout_us = 3600 * kSecondUs;   // unanswered lookups never mark entries failed
    return c;
  }

  // Fill: grinds 20 keys per bucket and has each verified; true when all are tabled.
  bool Fill() {
    const NodeId self = wire::NodeIdOf(keys_.public_key);
    base::Rng grind(78);
    for (uint32_t b = 0; b < kBuckets; ++b) {
      for (int i = 0; i < 20; ++i) {
        FakePeer f;
        // Expected 2^(b+1) tries; bounded far above that.
        for (uint64_t tries = 0; tries < (uint64_t{1} << (b + 8)); ++tries) {
          grind.Fill(f.key);
          f.id = wire::NodeIdOf(f.key);
          if (CommonPrefixBits(self, f.id) == static_cast<int>(b)) break;
        }
        if (CommonPrefixBits(self, f.id) != static_cast<int>(b)) return false;
        f.addr = *base::Endpoint::Parse("127.0.0.2:" + std::to_string(10000 + fakes_.size()));
        fakes_.push_back(f);
        overlay_.OnPingSeen(now_, f.addr, f.id, out_, /*client=*/false);
      }
    }
    // The challenge budget spreads the challenges over a few seconds of ticks.
    for (int round = 0; round < 200 && overlay_.table().size() < fakes_.size(); ++round) {
      AnswerChallenges();
      now_ += 100'000;
      overlay_.Tick(now_, out_);
    }
    AnswerChallenges();
    return overlay_.table().size() == fakes_.size();
  }

  // Deliver: `bytes` from `from` through Decode into the overlay. Returns Decode's verdict
  // when it refuses, else the handler's.
  wire::Verdict Deliver(const base::Endpoint& from, std::span<const uint8_t> bytes) {
    alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> buf;
    std::copy(bytes.begin(), bytes.end(), buf.begin());
    wire::Message m;
    const wire::Verdict v = wire::Decode(buf.data(), bytes.size(), &m);
    if (v != wire::Verdict::kOk) return v;
    return overlay_.OnMessage(now_, from, m, out_);
  }

  // TakeReplies: the datagrams of `type` sent to `to` since the last call (the rest, such
  // as the challenge a new requester gets, are dropped).
  std::vector<std::vector<uint8_t>> TakeReplies(const base::Endpoint& to,
                                                wire::MessageType type) {
    std::vector<std::vector<uint8_t>> r;
    for (Packet& p : q_) {
      if (p.to == to && p.bytes.size() >= wire::kHeaderBytes &&
          wire::LoadHeader(p.bytes.data()).type == static_cast<uint8_t>(type)) {
        r.push_back(std::move(p.bytes));
      }
    }
    q_.clear();
    return r;
  }

  Overlay& overlay() { return overlay_; }
  NodeId id() const { return wire::NodeIdOf(keys_.public_key); }
  const base::Endpoint& addr() const { return addr_; }

 private:
  void AnswerChallenges() {
    std::deque<Packet> q;
    q.swap(q_);
    wire::Encoder enc;
    for (const Packet& p : q) {
      auto it = std::find_if(fakes_.begin(), fakes_.end(),
                             [&](const FakePeer& f) { return f.addr == p.to; });
      if (it == fakes_.end()) continue;
      alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> buf;
      std::copy(p.bytes.begin(), p.bytes.end(), buf.begin());
      wire::Message m;
      if (wire::Decode(buf.data(), p.bytes.size(), &m) != wire::Verdict::kOk) continue;
      if (m.type() != wire::MessageType::kPing) continue;  // lookups go unanswered
      alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> pong;
      const wire::Signature sig{};
      const size_t n = enc.Pong(pong, 0, m.ping()->txid(), it->id, addr_, &it->key, &sig);
      EXPECT_EQ(Deliver(it->addr, std::span(pong.data(), n)), wire::Verdict::kOk);
    }
  }

  AcceptAllProof trust_;
  base::Endpoint addr_;
  wire::KeyPair keys_;
  base::Rng rng_;
  int64_t now_ = 1'000'000;
  Overlay overlay_;
  std::deque<Packet> q_;
  VecOutbox out_;
  std::vector<FakePeer> fakes_;
};

// SetCount: rewrites the count byte of an encoded FindNode or GetProviders in place (the
// encoder refuses to write a count past the maximum, so a hostile one is made this way).
template <typename T>
void SetCount(std::span<uint8_t> datagram, uint8_t count) {
  auto* root = flatbuffers::GetMutableRoot<T>(datagram.data() + wire::kHeaderBytes);
  ASSERT_TRUE(root->mutate_count(count));  // present: it was encoded non-zero
}

// Count 0 is a request for nothing, answered with an empty list (never a crash, never a
// drop: it still proves liveness and our id); 1 and the maximum are answered with exactly
// that many nodes; past the maximum (21, 255) is dropped by Decode as kBadField.
TEST(Overlay, FindNodeCountBoundariesAgainstAFullTable) {
  ASSERT_TRUE(wire::InitCrypto());
  FullTableNode a;
  ASSERT_TRUE(a.Fill());
  ASSERT_GE(a.overlay().table().size(), 280u);
  const base::Endpoint from = *base::Endpoint::Parse("127.0.0.3:9000");
  base::Rng rng(5);
  wire::Encoder enc;
  for (const NodeId target : {a.id(), RandomId(rng), RandomId(rng)}) {
    Contact expect[wire::kNodesPerMessageMax];
    ASSERT_EQ(a.overlay().table().Closest(target, expect), wire::kNodesPerMessageMax);
    for (uint8_t count : {uint8_t{0}, uint8_t{1}, uint8_t{2},
                          static_cast<uint8_t>(wire::kNodesPerMessageMax)}) {
      alignas(8) uint8_t req[wire::kDatagramBytesMax];
      // Padded so that the answer is not trimmed for a stranger: its length is the count's.
      const size_t n = enc.FindNode(req, 0, 1000 + count, RandomId(rng), target, count, 400);
      ASSERT_EQ(a.Deliver(from, std::span(req, n)), wire::Verdict::kOk) << int{count};
      auto replies = a.TakeReplies(from, wire::MessageType::kNodes);
      ASSERT_EQ(replies.size(), 1u) << int{count};
      alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> buf;
      std::copy(replies[0].begin(), replies[0].end(), buf.begin());
      wire::Message m;
      ASSERT_EQ(wire::Decode(buf.data(), replies[0].size(), &m), wire::Verdict::kOk);
      ASSERT_EQ(m.type(), wire::MessageType::kNodes);
      EXPECT_EQ(m.nodes()->txid(), 1000u + count);
      const size_t got = m.nodes()->nodes() == nullptr ? 0 : m.nodes()->nodes()->size();
      ASSERT_EQ(got, count);
      for (size_t i = 0; i < got; ++i) {
        EXPECT_EQ(wire::FromWireId(m.nodes()->nodes()->Get(i)->id()), expect[i].id) << i;
      }
    }
    for (int count : {static_cast<int>(wire::kNodesPerMessageMax) + 1, 255}) {
      alignas(8) uint8_t req[wire::kDatagramBytesMax];
      const size_t n = enc.FindNode(req, 0, 7, RandomId(rng), target,
                                    static_cast<uint8_t>(wire::kNodesPerMessageMax), 400);
      SetCount<wire::fb::FindNode>(std::span(req, n), static_cast<uint8_t>(count));
      EXPECT_EQ(a.Deliver(from, std::span(req, n)), wire::Verdict::kBadField) << count;
      EXPECT_TRUE(a.TakeReplies(from, wire::MessageType::kNodes).empty());
    }
  }
}

// GetProviders' count bounds the providers listed: 0 lists none, 1 one, the maximum (8)
// eight of the 12 stored, past it (9, 255) is dropped by Decode. The closer nodes that let
// a lookup go on are not what count asks about: up to kProviderNodesPerMessageMax always.
TEST(Overlay, GetProvidersCountBoundariesAgainstAFullTable) {
  ASSERT_TRUE(wire::InitCrypto());
  FullTableNode a;
  ASSERT_TRUE(a.Fill());
  base::Rng rng(6);
  wire::Encoder enc;
  const NodeId key = RandomId(rng);
  // 12 providers announce `key`, each with the token of a GetProviders answer.
  for (int i = 0; i < 12; ++i) {
    const base::Endpoint p = *base::Endpoint::Parse("127.0.1." + std::to_string(i + 1) + ":5000");
    const NodeId pid = RandomId(rng);
    alignas(8) uint8_t req[wire::kDatagramBytesMax];
    size_t n = enc.GetProviders(req, 0, 50 + i, pid, key,
                                static_cast<uint8_t>(wire::kProvidersPerMessageMax), 400);
    ASSERT_EQ(a.Deliver(p, std::span(req, n)), wire::Verdict::kOk);
    auto replies = a.TakeReplies(p, wire::MessageType::kProviders);
    ASSERT_EQ(replies.size(), 1u);
    alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> buf;
    std::copy(replies[0].begin(), replies[0].end(), buf.begin());
    wire::Message m;
    ASSERT_EQ(wire::Decode(buf.data(), replies[0].size(), &m), wire::Verdict::kOk);
    ASSERT_EQ(m.type(), wire::MessageType::kProviders);
    wire::Token token;
    std::memcpy(token.data(), m.providers()->token()->b()->Data(), token.size());
    n = enc.Announce(req, 0, 80 + i, pid, key, token);
    ASSERT_EQ(a.Deliver(p, std::span(req, n)), wire::Verdict::kOk);
    EXPECT_EQ(a.TakeReplies(p, wire::MessageType::kAck).size(), 1u);
  }
  const base::Endpoint from = *base::Endpoint::Parse("127.0.0.3:9000");
  for (uint8_t count : {uint8_t{0}, uint8_t{1}, static_cast<uint8_t>(wire::kProvidersPerMessageMax)}) {
    alignas(8) uint8_t req[wire::kDatagramBytesMax];
    const size_t n = enc.GetProviders(req, 0, 2000 + count, RandomId(rng), key, count, 400);
    ASSERT_EQ(a.Deliver(from, std::span(req, n)), wire::Verdict::kOk) << int{count};
    auto replies = a.TakeReplies(from, wire::MessageType::kProviders);
    ASSERT_EQ(replies.size(), 1u) << int{count};
    alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> buf;
    std::copy(replies[0].begin(), replies[0].end(), buf.begin());
    wire::Message m;
    ASSERT_EQ(wire::Decode(buf.data(), replies[0].size(), &m), wire::Verdict::kOk);
    ASSERT_EQ(m.type(), wire::MessageType::kProviders);
    const auto* prov = m.providers()->providers();
    EXPECT_EQ(prov == nullptr ? 0 : prov->size(), count);
    const auto* nodes = m.providers()->nodes();
    EXPECT_EQ(nodes == nullptr ? 0 : nodes->size(), wire::kProviderNodesPerMessageMax);
  }
  for (int count : {static_cast<int>(wire::kProvidersPerMessageMax) + 1, 255}) {
    alignas(8) uint8_t req[wire::kDatagramBytesMax];
    const size_t n = enc.GetProviders(req, 0, 7, RandomId(rng), key,
                                      static_cast<uint8_t>(wire::kProvidersPerMessageMax), 400);
    SetCount<wire::fb::GetProviders>(std::span(req, n), static_cast<uint8_t>(count));
    EXPECT_EQ(a.Deliver(from, std::span(req, n)), wire::Verdict::kBadField) << count;
    EXPECT_TRUE(a.TakeReplies(from, wire::MessageType::kProviders).empty());
  }
}

// The snapshot path (find_node answered on a shard that does not own the table): the same
// counts against a full snapshot.
TEST(Snapshot, FindNodeCountBoundariesAgainstAFullSnapshot) {
  ASSERT_TRUE(wire::InitCrypto());
  base::Rng rng(9);
  TableSnapshot snap(400);
  snap.Clear(0);
  for (uint32_t i = 0; i < 400; ++i) {
    ASSERT_TRUE(snap.Push(Contact{RandomId(rng), *base::Endpoint::Parse(
                                                     "127.0.2.1:" + std::to_string(1000 + i))}));
  }
  SnapshotResponder responder(RandomId(rng));
  std::deque<Packet> q;
  const base::Endpoint from = *base::Endpoint::Parse("127.0.0.3:9000");
  VecOutbox out(*base::Endpoint::Parse("127.0.0.1:7700"), &q);
  wire::Encoder enc;
  for (uint8_t count : {uint8_t{0}, uint8_t{1}, static_cast<uint8_t>(wire::kNodesPerMessageMax)}) {
    alignas(8) uint8_t req[wire::kDatagramBytesMax];
    const size_t n = enc.FindNode(req, 0, 3, RandomId(rng), RandomId(rng), count, 400);
    wire::Message m;
    ASSERT_EQ(wire::Decode(req, n, &m), wire::Verdict::kOk);
    q.clear();
    ASSERT_EQ(responder.Answer(from, m, snap, out), wire::Verdict::kOk);
    ASSERT_EQ(q.size(), 1u);
    alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> buf;
    std::copy(q[0].bytes.begin(), q[0].bytes.end(), buf.begin());
    wire::Message reply;
    ASSERT_EQ(wire::Decode(buf.data(), q[0].bytes.size(), &reply), wire::Verdict::kOk);
    const size_t got = reply.nodes()->nodes() == nullptr ? 0 : reply.nodes()->nodes()->size();
    EXPECT_EQ(got, count);
  }
}

// Every list and length of the DHT messages at 0, 1, its maximum and past it, at Decode
// (datagrams built by hand: the encoder asserts these bounds).
size_t RawDht(flatbuffers::FlatBufferBuilder& fbb, wire::MessageType type, uint8_t* out) {
  if (fbb.GetSize() > wire::kDatagramBytesMax - wire::kHeaderBytes) {
    ADD_FAILURE() << "test datagram too large: " << fbb.GetSize();
    return 0;
  }
  const wire::Header h{wire::kMagic, wire::kVersion, static_cast<uint8_t>(type), wire::kFlagNone,
                       0, static_cast<uint16_t>(fbb.GetSize()), 0};
  wire::StoreHeader(out, h);
  std::memcpy(out + wire::kHeaderBytes, fbb.GetBufferPointer(), fbb.GetSize());
  return wire::kHeaderBytes + fbb.GetSize();
}

TEST(Wire, DhtListsAndLengthsAtTheirBoundaries) {
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  const wire::fb::Id256 id = wire::ToWireId(NodeId{1});
  const wire::fb::PeerEntry entry(id, wire::ToWireAddr(*base::Endpoint::Parse("127.0.0.9:7")));
  auto decode = [&](flatbuffers::FlatBufferBuilder& fbb, wire::MessageType type) {
    wire::Message m;
    return wire::Decode(buf, RawDht(fbb, type, buf), &m);
  };
  auto entries = [&](flatbuffers::FlatBufferBuilder& fbb, size_t n) {
    return fbb.CreateVectorOfStructs(std::vector<wire::fb::PeerEntry>(n, entry));
  };
  auto peers = [&](size_t n) {
    flatbuffers::FlatBufferBuilder fbb;
    auto v = entries(fbb, n);
    fbb.Finish(wire::fb::CreatePeers(fbb, 1, &id, v));
    return decode(fbb, wire::MessageType::kPeers);
  };
  auto nodes = [&](size_t n, uint8_t chunk, uint8_t chunks) {
    flatbuffers::FlatBufferBuilder fbb;
    auto v = entries(fbb, n);
    fbb.Finish(wire::fb::CreateNodes(fbb, 1, &id, v, chunk, chunks));
    return decode(fbb, wire::MessageType::kNodes);
  };
  auto providers = [&](size_t np, size_t nn) {
    flatbuffers::FlatBufferBuilder fbb;
    auto p = entries(fbb, np);
    auto n = entries(fbb, nn);
    const wire::fb::Token128 token;
    fbb.Finish(wire::fb::CreateProviders(fbb, 1, &id, &token, p, n));
    return decode(fbb, wire::MessageType::kProviders);
  };
  auto walk_reply = [&](size_t n) {
    flatbuffers::FlatBufferBuilder fbb;
    auto v = entries(fbb, n);
    fbb.Finish(wire::fb::CreateWalkReply(fbb, 1, &id, 65535, v));
    return decode(fbb, wire::MessageType::kWalkReply);
  };
  auto route = [&](uint8_t ttl, size_t payload) {
    flatbuffers::FlatBufferBuilder fbb;
    auto v = fbb.CreateVector(std::vector<uint8_t>(payload, 3));
    const wire::fb::RouteState st(wire::fb::Addr{}, ttl, 255, 255);
    fbb.Finish(wire::fb::CreateRoute(fbb, 1, &id, &id, &st, 255, v));
    return decode(fbb, wire::MessageType::kRoute);
  };
  auto gossip = [&](size_t payload) {
    flatbuffers::FlatBufferBuilder fbb;
    auto v = fbb.CreateVector(std::vector<uint8_t>(payload, 3));
    fbb.Finish(wire::fb::CreateGossip(fbb, 1, &id, v));
    return decode(fbb, wire::MessageType::kGossip);
  };
  for (size_t n : {size_t{0}, size_t{1}, wire::kPeersPerMessageMax}) {
    EXPECT_EQ(peers(n), wire::Verdict::kOk) << n;
  }
  EXPECT_EQ(peers(wire::kPeersPerMessageMax + 1), wire::Verdict::kBadField);
  for (size_t n : {size_t{0}, size_t{1}, wire::kNodesPerMessageMax}) {
    EXPECT_EQ(nodes(n, 0, 0), wire::Verdict::kOk) << n;
  }
  EXPECT_EQ(nodes(wire::kNodesPerMessageMax + 1, 0, 0), wire::Verdict::kBadField);
  EXPECT_EQ(nodes(1, 5, 0), wire::Verdict::kOk);  // chunks 0: a find_node answer
  EXPECT_EQ(nodes(1, 0, 1), wire::Verdict::kOk);
  EXPECT_EQ(nodes(1, 254, 255), wire::Verdict::kOk);
  EXPECT_EQ(nodes(1, 1, 1), wire::Verdict::kBadField);
  EXPECT_EQ(nodes(1, 255, 255), wire::Verdict::kBadField);
  EXPECT_EQ(providers(0, 0), wire::Verdict::kOk);
  EXPECT_EQ(providers(wire::kProvidersPerMessageMax, wire::kProviderNodesPerMessageMax),
            wire::Verdict::kOk);
  EXPECT_EQ(providers(wire::kProvidersPerMessageMax + 1, 0), wire::Verdict::kBadField);
  EXPECT_EQ(providers(0, wire::kProviderNodesPerMessageMax + 1), wire::Verdict::kBadField);
  EXPECT_EQ(walk_reply(0), wire::Verdict::kOk);
  EXPECT_EQ(walk_reply(wire::kWalkNextMax), wire::Verdict::kOk);
  EXPECT_EQ(walk_reply(wire::kWalkNextMax + 1), wire::Verdict::kBadField);
  EXPECT_EQ(route(0, 0), wire::Verdict::kOk);
  EXPECT_EQ(route(wire::kRouteTtlMax, wire::kRoutePayloadBytesMax), wire::Verdict::kOk);
  EXPECT_EQ(route(wire::kRouteTtlMax + 1, 0), wire::Verdict::kBadField);
  EXPECT_EQ(route(255, 0), wire::Verdict::kBadField);
  EXPECT_EQ(route(0, wire::kRoutePayloadBytesMax + 1), wire::Verdict::kBadField);
  EXPECT_EQ(gossip(0), wire::Verdict::kOk);
  EXPECT_EQ(gossip(wire::kGossipPayloadBytesMax), wire::Verdict::kOk);
  EXPECT_EQ(gossip(wire::kGossipPayloadBytesMax + 1), wire::Verdict::kBadField);
}

// A hop slot keeps a routed datagram as the overlay encodes it; the largest one (an IPv6
// origin address, the largest ttl and payload) must fit, or routes with large payloads
// would go untracked.
TEST(Overlay, LargestRouteFitsAHopSlot) {
  wire::Encoder enc;
  wire::RouteFields f;
  f.route_id = ~uint64_t{0};
  f.origin.fill(0xFF);
  f.target.fill(0xFF);
  f.origin_addr = *base::Endpoint::Parse("[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
  f.ttl = wire::kRouteTtlMax;
  f.hops = 255;
  f.attempt = 255;
  f.kind = 255;
  const std::vector<uint8_t> payload(wire::kRoutePayloadBytesMax, 0xAB);
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  const size_t n = enc.Route(buf, f, payload);
  ASSERT_GT(n, 0u);
  EXPECT_LE(n, kRouteDatagramBytesMax);
  EXPECT_GE(n + 64, kRouteDatagramBytesMax);  // and the slot is not much larger
}

}  // namespace
}  // namespace ringpeer::dht
