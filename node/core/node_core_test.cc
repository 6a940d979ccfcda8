// Unit tests of the node core: the order of its checks, its limits, the mail it hands to
// other shards, and acks released only after the storage made them durable.
#include "node/core/node_core.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "node/core/testing.h"
#include "node/room/reducer.h"
#include "node/room/records.h"
#include "node/room/room.h"
#include "node/room/storage.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace ringpeer::core {
namespace {

constexpr int64_t kStart = 1'000'000'000;

base::Endpoint Ep(const char* s) { return *base::Endpoint::Parse(s); }

CoreConfig Config(uint32_t index, uint32_t shards) {
  CoreConfig c;
  c.index = index;
  c.shards = shards;
  c.rate_limit_entries = 64;
  c.rate_limit_per_s = 1;  // a burst, then (almost) nothing for the rest of a test
  c.rate_limit_burst = 4;
  c.reflection_entries = 64;
  c.ping_seen_entries = 64;
  c.rooms_max = 4;
  c.rng_seed = 7 + index;
  c.start_us = kStart;
  return c;
}

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(wire::InitCrypto()); }

  std::vector<uint8_t> Ping(uint64_t txid) {
    std::vector<uint8_t> b(wire::kDatagramBytesMax);
    b.resize(enc_.Ping(b, wire::kNoShardHint, txid, stranger_, nullptr));
    return b;
  }
  std::vector<uint8_t> FindNode(uint64_t txid) {
    std::vector<uint8_t> b(wire::kDatagramBytesMax);
    b.resize(enc_.FindNode(b, wire::kNoShardHint, txid, stranger_, stranger_, 20, 0));
    return b;
  }
  // LastOfType: the last datagram of type `t` the sink captured (empty if none).
  static std::vector<uint8_t> LastOfType(const testing::CaptureSink& s, wire::MessageType t) {
    for (auto it = s.captured.rbegin(); it != s.captured.rend(); ++it) {
      if (it->bytes[offsetof(wire::Header, type)] == uint8_t(t)) return it->bytes;
    }
    return {};
  }
  static size_t CountType(const testing::CaptureSink& s, wire::MessageType t) {
    size_t n = 0;
    for (const auto& d : s.captured) n += d.bytes[offsetof(wire::Header, type)] == uint8_t(t);
    return n;
  }

  wire::KeyPair identity_ = wire::KeyPair::FromSeed({3});
  wire::NodeId stranger_ = wire::NodeIdOf(wire::KeyPair::FromSeed({4}).public_key);
  wire::Encoder enc_;
  base::Endpoint peer_ = Ep("127.0.0.9:7700");
};

TEST_F(CoreTest, AHeaderCheckFailureCostsNoRateLimitToken) {
  testing::CaptureSink sink;
  NodeCore core(Config(0, 1), identity_, &sink, nullptr);
  std::vector<uint8_t> bad = Ping(1);
  bad[0] ^= 0xFF;  // not our magic
  for (int i = 0; i < 10; ++i) EXPECT_EQ(core.Receive(kStart, peer_, bad), wire::Verdict::kBadMagic);
  // The four tokens of the burst are all still there: the header is checked first.
  for (uint64_t t = 1; t <= 4; ++t) EXPECT_EQ(core.Receive(kStart, peer_, Ping(t)), wire::Verdict::kOk);
  EXPECT_EQ(core.Receive(kStart, peer_, Ping(5)), wire::Verdict::kRateLimited);
  EXPECT_EQ(core.counters().dropped[int(wire::Verdict::kBadMagic)].load(), 10u);
  EXPECT_EQ(core.counters().dropped[int(wire::Verdict::kRateLimited)].load(), 1u);
  EXPECT_EQ(core.counters().pings_answered.load(), 4u);
  // Another address has its own bucket.
  EXPECT_EQ(core.Receive(kStart, Ep("127.0.0.10:7700"), Ping(6)), wire::Verdict::kOk);
}

TEST_F(CoreTest, TheRateLimitComesBeforeTheVerifier) {
  testing::CaptureSink sink;
  NodeCore core(Config(0, 1), identity_, &sink, nullptr);
  for (uint64_t t = 1; t <= 4; ++t) ASSERT_EQ(core.Receive(kStart, peer_, Ping(t)), wire::Verdict::kOk);
  std::vector<uint8_t> garbage = Ping(9);
  for (size_t i = wire::kHeaderBytes; i < garbage.size(); ++i) garbage[i] = 0xEE;
  // Out of tokens: the body is never verified (it would fail the Verifier).
  EXPECT_EQ(core.Receive(kStart, peer_, garbage), wire::Verdict::kRateLimited);
  // With a token again (one per second), the Verifier refuses it.
  EXPECT_EQ(core.Receive(kStart + 1'100'000, peer_, garbage), wire::Verdict::kVerifyFailed);
  // A datagram the transport cut is refused before anything else.
  EXPECT_EQ(core.Receive(kStart + 1'100'000, peer_, Ping(10), /*truncated=*/true),
            wire::Verdict::kTooLong);
}

TEST_F(CoreTest, EveryShardAnswersPingsAndTellsTheOwnerOnce) {
  testing::LocalNode node({Config(0, 2), Config(1, 2)}, identity_);
  node.sink(1).log = true;
  EXPECT_EQ(node.core(1).Receive(kStart, peer_, Ping(1)), wire::Verdict::kOk);
  // Answered where it landed: a pong from core 1's sink, nothing from the owner's.
  EXPECT_EQ(CountType(node.sink(1), wire::MessageType::kPong), 1u);
  EXPECT_EQ(node.core(1).counters().pings_answered.load(), 1u);
  // ... and reported to the owner as mail (an intent), once per kPingSeenIntervalUs.
  EXPECT_EQ(node.mail().queued(), 1u);
  EXPECT_EQ(node.core(1).Receive(kStart + 1000, peer_, Ping(2)), wire::Verdict::kOk);
  EXPECT_EQ(node.mail().queued(), 1u);
  EXPECT_EQ(node.core(1).Receive(kStart + kPingSeenIntervalUs + 1, peer_, Ping(3)),
            wire::Verdict::kOk);
  EXPECT_EQ(node.mail().queued(), 2u);
  EXPECT_EQ(node.mail().Deliver(0, node.core(0), kStart), 2u);
  EXPECT_EQ(node.core(0).counters().mailbox_in.load(), 2u);
}

// Issue 14: a shard without the overlay answers FindNode, GetProviders and Walk from the
// snapshot the owner publishes every second; what it forwards is a write (the sender's
// id, an Announce), and an Announce carrying the token another shard minted is accepted.
TEST_F(CoreTest, EveryShardAnswersDhtReadsFromTheOwnersSnapshot) {
  std::vector<CoreConfig> configs{Config(0, 2), Config(1, 2)};
  for (CoreConfig& c : configs) c.rate_limit_burst = 100;  // one peer sends them all
  testing::LocalNode node(configs, identity_);
  node.sink(0).log = true;
  node.sink(1).log = true;
  NodeCore& owner = node.core(0);
  NodeCore& other = node.core(1);
  // The owner's table: 30 verified peers (no signatures needed here).
  for (uint32_t i = 0; i < 30; ++i) {
    const wire::NodeId id = wire::NodeIdOf(wire::KeyPair::FromSeed({uint8_t(100 + i)}).public_key);
    const base::Endpoint a = Ep(("127.0.1." + std::to_string(i + 1) + ":7700").c_str());
    ASSERT_TRUE(owner.overlay()->AdmitVerifiedForTesting(kStart, id, a, owner.outbox()));
  }
  const size_t table = owner.overlay()->table().size();
  ASSERT_GE(table, 20u);
  int64_t now = kStart;
  node.Step(now, /*tick=*/true);  // the first tick publishes; the mail is delivered
  EXPECT_EQ(owner.counters().dht_snapshots.load(), 1u);
  EXPECT_EQ(other.counters().dht_snapshots.load(), 1u);

  // FindNode on shard 1: answered there, with 20 entries (a padded request earns them).
  std::vector<uint8_t> find(wire::kDatagramBytesMax);
  find.resize(enc_.FindNode(find, wire::kNoShardHint, 0x51, stranger_, stranger_, 20, 400));
  const int owner_sent = node.sink(0).sent;
  ASSERT_EQ(node.Receive(1, now, peer_, find), wire::Verdict::kOk);
  ASSERT_EQ(CountType(node.sink(1), wire::MessageType::kNodes), 1u);
  {
    alignas(8) uint8_t buf[wire::kDatagramBytesMax];
    const std::vector<uint8_t> b = LastOfType(node.sink(1), wire::MessageType::kNodes);
    std::memcpy(buf, b.data(), b.size());
    wire::Message m;
    ASSERT_EQ(wire::Decode(buf, b.size(), &m), wire::Verdict::kOk);
    ASSERT_EQ(m.type(), wire::MessageType::kNodes);
    EXPECT_EQ(m.nodes()->nodes()->size(), 20u);
  }
  EXPECT_EQ(other.counters().find_node_answered.load(), 1u);
  EXPECT_EQ(owner.counters().find_node_answered.load(), 0u);
  EXPECT_EQ(other.counters().overlay_forwarded.load(), 0u);
  // The stranger was reported to the owner, which challenges it (a write), once.
  EXPECT_GT(node.sink(0).sent, owner_sent);
  size_t challenges = 0;
  for (const auto& d : node.sink(0).captured) {
    challenges += d.to == peer_ && d.bytes[offsetof(wire::Header, type)] ==
                                       uint8_t(wire::MessageType::kPing);
  }
  EXPECT_EQ(challenges, 1u);

  // GetProviders on shard 1: a token minted there from the owner's secret ...
  const wire::NodeId key = wire::NodeIdOf(wire::KeyPair::FromSeed({77}).public_key);
  auto get_providers = [&](uint64_t txid) {
    std::vector<uint8_t> b(wire::kDatagramBytesMax);
    b.resize(enc_.GetProviders(b, wire::kNoShardHint, txid, stranger_, key, 8, 400));
    return b;
  };
  auto last_providers = [&](wire::Token* token) {
    alignas(8) static uint8_t buf[wire::kDatagramBytesMax];
    const std::vector<uint8_t> b = LastOfType(node.sink(1), wire::MessageType::kProviders);
    std::memcpy(buf, b.data(), b.size());
    wire::Message m;
    EXPECT_EQ(wire::Decode(buf, b.size(), &m), wire::Verdict::kOk);
    EXPECT_EQ(m.type(), wire::MessageType::kProviders);
    if (m.type() != wire::MessageType::kProviders) return size_t{99};
    std::memcpy(token->data(), m.providers()->token()->b()->Data(), token->size());
    return m.providers()->providers() == nullptr ? size_t{0}
                                                 : size_t{m.providers()->providers()->size()};
  };
  ASSERT_EQ(node.Receive(1, now, peer_, get_providers(0x52)), wire::Verdict::kOk);
  wire::Token token{};
  EXPECT_EQ(last_providers(&token), 0u);
  EXPECT_EQ(other.counters().get_providers_answered.load(), 1u);
  // ... that the owner accepts on the Announce, which shard 1 forwards (a write).
  std::vector<uint8_t> announce(wire::kDatagramBytesMax);
  announce.resize(enc_.Announce(announce, wire::kNoShardHint, 0x53, stranger_, key, token));
  ASSERT_EQ(node.Receive(1, now, peer_, announce), wire::Verdict::kOk);
  EXPECT_EQ(other.counters().overlay_forwarded.load(), 1u);
  EXPECT_EQ(other.counters().overlay_forwarded_reads.load(), 0u);
  EXPECT_EQ(owner.overlay()->counters().tokens_rejected, 0u);
  EXPECT_EQ(owner.overlay()->counters().announces_stored, 1u);
  EXPECT_EQ(CountType(node.sink(0), wire::MessageType::kAck), 1u);
  // Shard 1 lists the provider once the next snapshot is out (a second later), and the
  // snapshots keep coming: each reader hands the older one back, so the owner's two per
  // shard are enough for any number of rounds.
  for (int round = 1; round <= 5; ++round) {
    now += dht::kSnapshotIntervalUs;
    node.Step(now, /*tick=*/true);
  }
  EXPECT_EQ(owner.counters().dht_snapshots.load(), 6u);
  EXPECT_EQ(other.counters().dht_snapshots.load(), 6u);
  ASSERT_EQ(node.Receive(1, now, peer_, get_providers(0x54)), wire::Verdict::kOk);
  EXPECT_EQ(last_providers(&token), 1u);

  // A Walk step on shard 1: answered from the snapshot too.
  std::vector<uint8_t> walk(wire::kDatagramBytesMax);
  walk.resize(enc_.Walk(walk, wire::kNoShardHint, 0x55, stranger_));
  ASSERT_EQ(node.Receive(1, now, peer_, walk), wire::Verdict::kOk);
  EXPECT_EQ(other.counters().walks_answered.load(), 1u);
  EXPECT_EQ(CountType(node.sink(1), wire::MessageType::kWalkReply), 1u);
  // Nothing shard 1 forwarded was a read; the owner answered no read itself.
  EXPECT_EQ(other.counters().overlay_forwarded_reads.load(), 0u);
  EXPECT_EQ(owner.counters().find_node_answered.load() +
                owner.counters().get_providers_answered.load() +
                owner.counters().walks_answered.load(),
            0u);
  // Our own id as the sender is refused there as the owner refuses it.
  std::vector<uint8_t> liar(wire::kDatagramBytesMax);
  const wire::NodeId self = wire::NodeIdOf(identity_.public_key);
  liar.resize(enc_.FindNode(liar, wire::kNoShardHint, 0x56, self, stranger_, 20, 400));
  EXPECT_EQ(node.Receive(1, now, Ep("127.0.0.12:7700"), liar), wire::Verdict::kBadField);
}

TEST_F(CoreTest, OverlayTrafficOnAnotherShardIsForwardedToTheOwnerUnchanged) {
  // Before the owner's first snapshot (no tick yet), even a read goes to the owner.
  // Mailboxes of one slot: the second forward finds the mailbox full.
  testing::QueueMail mail(2, 1);
  testing::CaptureSink s0, s1;
  s0.log = true;
  NodeCore owner(Config(0, 2), identity_, &s0, mail.Sink(0));
  NodeCore other(Config(1, 2), identity_, &s1, mail.Sink(1));
  EXPECT_EQ(other.overlay(), nullptr);
  ASSERT_NE(owner.overlay(), nullptr);
  const std::vector<uint8_t> find = FindNode(0x77);
  EXPECT_EQ(other.Receive(kStart, peer_, find), wire::Verdict::kOk);
  EXPECT_EQ(other.counters().mailbox_out.load(), 1u);
  EXPECT_EQ(s1.sent, 0);  // the other shard answers nothing itself
  // A full mailbox is our queue, counted as such: not as anything the peer did.
  EXPECT_EQ(other.Receive(kStart, Ep("127.0.0.11:7700"), FindNode(0x78)),
            wire::Verdict::kMailboxFull);
  EXPECT_EQ(other.counters().dropped[int(wire::Verdict::kMailboxFull)].load(), 1u);
  // The owner gets the bytes received and answers them as its own datagram, to the
  // address they came from.
  EXPECT_EQ(mail.Deliver(0, owner, kStart), 1u);
  EXPECT_EQ(owner.counters().mailbox_in.load(), 1u);
  ASSERT_EQ(CountType(s0, wire::MessageType::kNodes), 1u);
  EXPECT_EQ(s0.captured.back().to, peer_);
}

// A relay core serving one room, with a member that has joined it.
class RelayTest : public CoreTest {
 protected:
  void SetUp() override {
    CoreTest::SetUp();
    base::Rng rng(5);
    auto random = [&rng](std::span<uint8_t> out) { rng.Fill(out); };
    genesis_ = room::MakeGenesis(admin_, "core-test", room::ReducerKind::kChat,
                                 room::kStateBytesMaxDefault, room::Hash256{});
    room::Genesis g;
    ASSERT_EQ(room::ParseGenesis(genesis_, &g), room::Verdict::kOk);
    room_id_ = g.room_id;
    room::KeyEpochSpec spec;
    spec.room_id = room_id_;
    spec.epoch = 0;
    rng.Fill(spec.write_seed);
    rng.Fill(spec.content_key);
    spec.members = {{member_.public_key, true}};
    const std::vector<uint8_t> epoch0 = room::MakeKeyEpoch(admin_, spec, random);
    auto writer = room::Room::Open(genesis_, &member_);
    ASSERT_TRUE(writer.ok());
    ASSERT_EQ((*writer)->AddKeyEpoch(epoch0), room::Verdict::kOk);
    for (int i = 0; i < 2; ++i) {
      auto rec = (*writer)->Write(
          room::ChatPayload(room::ChatOp::kMessage, member_.public_key, "hi " + std::to_string(i)),
          random);
      ASSERT_TRUE(rec.ok());
      updates_.push_back(*rec);
    }
    ASSERT_TRUE(storage_.PutGenesis(room_id_, genesis_).ok());
    ASSERT_TRUE(storage_.PutKeyEpoch(room_id_, 0, epoch0).ok());
    ASSERT_TRUE(storage_.Commit().ok());
    CoreConfig c = Config(0, 1);
    c.rate_limit_per_s = 1000;
    c.rate_limit_burst = 1000;
    c.room_storage = &storage_;
    core_ = std::make_unique<NodeCore>(c, identity_, &sink_, nullptr);
    ASSERT_TRUE(core_->RestoreRooms().ok());
    sink_.log = true;
    std::vector<uint8_t> join(wire::kDatagramBytesMax);
    join.resize(enc_.RoomJoin(join, room_id_, wire::NodeIdOf(member_.public_key), false));
    ASSERT_EQ(core_->Receive(kStart, member_addr_, join), wire::Verdict::kOk);
  }
  std::vector<uint8_t> Publish(const std::vector<uint8_t>& record) {
    std::vector<uint8_t> b(wire::kDatagramBytesMax);
    b.resize(enc_.RoomPublish(b, room_id_, record));
    return b;
  }

  wire::KeyPair admin_ = wire::KeyPair::FromSeed({21});
  wire::KeyPair member_ = wire::KeyPair::FromSeed({22});
  base::Endpoint member_addr_ = Ep("127.0.0.30:7701");
  std::vector<uint8_t> genesis_;
  room::Hash256 room_id_{};
  std::vector<std::vector<uint8_t>> updates_;
  room::MemoryRoomStorage storage_;
  testing::CaptureSink sink_;
  std::unique_ptr<NodeCore> core_;
};

TEST_F(RelayTest, AnUpdateIsAckedOnlyAfterACommitMadeItDurable) {
  ASSERT_EQ(core_->Receive(kStart + 1000, member_addr_, Publish(updates_[0])), wire::Verdict::kOk);
  EXPECT_EQ(CountType(sink_, wire::MessageType::kRoomAck), 0u);  // staged, not durable
  EXPECT_EQ(storage_.DurableUpdates(room_id_), 0u);
  // The disk fails: the commit fails, nothing is acked, the error is published, and the
  // next try waits for its backoff.
  storage_.SetFail(true);
  core_->Commit(kStart + 2000);
  EXPECT_EQ(CountType(sink_, wire::MessageType::kRoomAck), 0u);
  EXPECT_EQ(core_->counters().storage_errors.load(), 1u);
  EXPECT_EQ(core_->counters().storage_failing.load(), 1u);
  EXPECT_FALSE(core_->StorageError().empty());
  EXPECT_FALSE(core_->StorageDue(kStart + 2000 + kStorageRetryFirstUs - 1));
  EXPECT_TRUE(core_->StorageDue(kStart + 2000 + kStorageRetryFirstUs));
  // Recovered: the retry makes it durable. The ack was dropped with the failed commit (it
  // may not go out before its update is durable, and the storage said nothing of when
  // that would be); the publisher retransmits, and the duplicate is acked once durable.
  storage_.SetFail(false);
  const int64_t t = kStart + 2000 + kStorageRetryFirstUs;
  core_->Commit(t);
  EXPECT_EQ(storage_.DurableUpdates(room_id_), 1u);
  EXPECT_EQ(core_->counters().storage_recoveries.load(), 1u);
  EXPECT_TRUE(core_->StorageError().empty());
  EXPECT_EQ(CountType(sink_, wire::MessageType::kRoomAck), 0u);
  ASSERT_EQ(core_->Receive(t + 1000, member_addr_, Publish(updates_[0])), wire::Verdict::kOk);
  EXPECT_EQ(CountType(sink_, wire::MessageType::kRoomAck), 0u);  // not before the commit
  core_->Commit(t + 2000);
  EXPECT_EQ(CountType(sink_, wire::MessageType::kRoomAck), 1u);
  EXPECT_EQ(sink_.captured.back().to, member_addr_);
  // The store's figures are published after each batch (RoomStorage::commit_figures).
  EXPECT_EQ(core_->counters().storage_commits.load(), storage_.commits());
  EXPECT_GE(storage_.commits(), 3u);  // set-up, the recovery and this one
}

TEST_F(RelayTest, AFullStoreAcksNothingAndACrashLosesOnlyWhatWasNotDurable) {
  // Room for the first update only.
  storage_.SetCapacity(updates_[0].size());
  ASSERT_EQ(core_->Receive(kStart + 1000, member_addr_, Publish(updates_[0])), wire::Verdict::kOk);
  core_->Commit(kStart + 2000);
  EXPECT_EQ(CountType(sink_, wire::MessageType::kRoomAck), 1u);
  // The second does not fit: it is not acked, and the publisher keeps it (nothing lost).
  core_->Receive(kStart + 3000, member_addr_, Publish(updates_[1]));
  core_->Commit(kStart + 4000);
  EXPECT_EQ(CountType(sink_, wire::MessageType::kRoomAck), 1u);
  EXPECT_EQ(storage_.DurableUpdates(room_id_), 1u);
  // An fsync that fails leaves a staged write unsynced; a crash then loses it, and only it.
  storage_.SetCapacity(UINT64_MAX);
  storage_.SetFailCommits(true);
  ASSERT_TRUE(storage_.PutCheckpoint(room_id_, updates_[1], {}).ok());  // any staged write
  core_->Commit(kStart + 5000);
  EXPECT_EQ(core_->counters().storage_errors.load(), 1u);
  storage_.Crash();
  EXPECT_EQ(storage_.DurableUpdates(room_id_), 1u);
  auto loaded = storage_.Load(room_id_);
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded->checkpoint_record.empty());
  EXPECT_EQ(loaded->updates.size(), 1u);
}

TEST_F(RelayTest, ARoomRefusalKeepsItsReason) {
  // A record that does not parse is a bad field; one whose signature fails is a bad
  // signature; sent again, the known reject is a room refusal (not re-verified).
  std::vector<uint8_t> garbage(40, 0xAB);
  EXPECT_EQ(core_->Receive(kStart + 1000, member_addr_, Publish(garbage)),
            wire::Verdict::kBadField);
  std::vector<uint8_t> forged = updates_[1];
  forged[forged.size() - 5] ^= 0x01;  // inside the signature, at the end of the envelope
  EXPECT_EQ(core_->Receive(kStart + 2000, member_addr_, Publish(forged)),
            wire::Verdict::kBadSignature);
  EXPECT_EQ(core_->Receive(kStart + 3000, member_addr_, Publish(forged)),
            wire::Verdict::kRoomRefused);
  EXPECT_EQ(core_->counters().dropped[int(wire::Verdict::kBadField)].load(), 1u);
  EXPECT_EQ(core_->counters().dropped[int(wire::Verdict::kBadSignature)].load(), 1u);
  EXPECT_EQ(core_->counters().dropped[int(wire::Verdict::kRoomRefused)].load(), 1u);
  // The genuine update is still accepted.
  EXPECT_EQ(core_->Receive(kStart + 4000, member_addr_, Publish(updates_[1])),
            wire::Verdict::kOk);
}

}  // namespace
}  // namespace ringpeer::core
