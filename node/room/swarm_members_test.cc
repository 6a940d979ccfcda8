// Membership on the network (issue 17): key epochs of any size cross the network as
// pieces, members join by room id alone (a short invite) and get the genesis and key
// epochs from a relay, checked against the room id and the admin key.
//
// Goal: a room of 50 members adds 10 (one without history) and evicts 5 over the network:
// the evicted cannot post and cannot read what follows, everyone else reads on, and the
// member added without history cannot read what came before it. A relay that serves a
// forged key epoch (or another room's genesis) is refused and the joiner still gets in
// through an honest one. A room granting 500 members rotates its keys (~80 KB epochs in
// ~79 pieces, over a lossy network) and every remaining member reads on, including one
// that was away for several rotations and catches up through each epoch in order.
// Method: RoomHosts on the in-memory network (swarm_test_net.h), a virtual clock, seeded
// loss; the admin's rotations are applied through a member's swarm (as `ringpeer room
// invite`/`evict` do through their client) and flooded from there.
#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "node/room/swarm_test_net.h"
#include "node/room/test_util.h"
#include "wire/encode.h"

namespace ringpeer::room {
namespace {

using testing::Net;
using testing::Node;
using testing::RoomFixture;

std::vector<uint8_t> Msg(const KeyPair& who, const std::string& text) {
  return ChatPayload(ChatOp::kMessage, who.public_key, text);
}

std::vector<MemberGrantSpec> GrantsOf(const RoomFixture& f, size_t n,
                                      const std::vector<size_t>& except = {}) {
  std::vector<MemberGrantSpec> g;
  for (size_t i = 0; i < n; ++i) {
    if (std::find(except.begin(), except.end(), i) != except.end()) continue;
    g.push_back({f.members[i].public_key, true});
  }
  return g;
}

bool Reads(Node* n, const Hash256& room, const Hash256& update) {
  Swarm* s = n->host->Find(room);
  std::vector<uint8_t> payload;
  return s != nullptr && s->room().Payload(update, &payload);
}

bool Holds(Node* n, const Hash256& room, const Hash256& update) {
  Swarm* s = n->host->Find(room);
  return s != nullptr && !s->room().RecordOf(update).empty();
}

// Publish: writes through member `n`'s swarm.
Hash256 Publish(Net& net, Node* n, const Hash256& room, const KeyPair& who,
                const std::string& text) {
  Swarm* s = n->host->Find(room);
  EXPECT_NE(s, nullptr);
  auto id = s->Publish(net.now_us, Msg(who, text), n->out);
  EXPECT_TRUE(id.ok()) << id.status();
  return id.ok() ? *id : Hash256{};
}

// Rotate: the admin's next epoch, applied at member `via` (its heads) and flooded.
void Rotate(RoomFixture& f, Node* via, const std::vector<MemberGrantSpec>& grants,
            bool history = true) {
  Swarm* s = via->host->Find(f.room_id);
  ASSERT_NE(s, nullptr);
  const auto& record = f.Rotate(grants, s->room().heads(), history);
  ASSERT_EQ(s->AddKeyEpoch(record, via->out), Verdict::kOk);
}

TEST(SwarmMembers, FiftyMemberRoomAddsTenEvictsFiveOverTheNetwork) {
  RoomFixture f(1717, ReducerKind::kChat, kStateBytesMaxDefault, 50);
  for (int i = 0; i < 10; ++i) f.members.push_back(KeyPair::FromSeed(f.rng.Bytes32()));
  Net net(1717);
  net.loss = 0.02;
  SwarmConfig relay_config;
  relay_config.peers_max = 128;
  Node* relay = net.Add(nullptr, true, relay_config);
  ASSERT_TRUE(relay->host->Create(f.genesis, f.epochs).ok());
  std::vector<Node*> nodes;
  // Members 0..49 join with self-contained invites (epoch 0), 50..59 later by id.
  for (size_t i = 0; i < 50; ++i) {
    nodes.push_back(net.Add(&f.members[i], false));
    const base::Endpoint boot[] = {relay->addr};
    ASSERT_TRUE(
        nodes[i]->host->Join(net.now_us, f.genesis, f.epochs, boot, nodes[i]->out).ok());
  }
  net.Run(3'000'000);
  const Hash256 p0 = Publish(net, nodes[0], f.room_id, f.members[0], "epoch 0");
  net.Run(net.now_us + 2'000'000);

  // Epoch 1: nine new members with history; they join by room id through the relay.
  Rotate(f, nodes[0], GrantsOf(f, 59));
  net.Run(net.now_us + 1'000'000);
  for (size_t i = 50; i < 59; ++i) {
    nodes.push_back(net.Add(&f.members[i], false));
    const base::Endpoint boot[] = {relay->addr};
    auto joined = nodes[i]->host->JoinById(net.now_us, f.room_id, boot, nodes[i]->out,
                                           &f.members[i]);
    ASSERT_TRUE(joined.ok()) << joined.status();
  }
  net.Run(net.now_us + 5'000'000);
  for (size_t i = 50; i < 59; ++i) {
    ASSERT_NE(nodes[i]->host->Find(f.room_id), nullptr) << "member " << i;
    EXPECT_EQ(nodes[i]->host->Find(f.room_id)->room().epoch(), 1) << "member " << i;
    EXPECT_TRUE(Reads(nodes[i], f.room_id, p0)) << "history for member " << i;
  }
  const Hash256 p1 = Publish(net, nodes[50], f.room_id, f.members[50], "by a new member");

  // Epoch 2: member 59 without history.
  net.Run(net.now_us + 2'000'000);
  Rotate(f, nodes[0], GrantsOf(f, 60), /*history=*/false);
  net.Run(net.now_us + 1'000'000);
  nodes.push_back(net.Add(&f.members[59], false));
  {
    const base::Endpoint boot[] = {relay->addr};
    ASSERT_TRUE(nodes[59]->host->JoinById(net.now_us, f.room_id, boot, nodes[59]->out,
                                          &f.members[59]).ok());
  }
  net.Run(net.now_us + 5'000'000);
  ASSERT_NE(nodes[59]->host->Find(f.room_id), nullptr);
  const Hash256 p2 = Publish(net, nodes[59], f.room_id, f.members[59], "no history here");
  net.Run(net.now_us + 2'000'000);
  EXPECT_TRUE(Holds(nodes[59], f.room_id, p0));
  EXPECT_FALSE(Reads(nodes[59], f.room_id, p0)) << "read what came before it";
  EXPECT_FALSE(Reads(nodes[59], f.room_id, p1)) << "read what came before it";
  EXPECT_TRUE(Reads(nodes[59], f.room_id, p2));

  // Epoch 3: members 40..44 evicted. Member 40 is away while it happens, so that it
  // still writes with epoch 2's key when it comes back (a member that has the new epoch
  // holds no write key at all).
  const std::vector<size_t> evicted = {40, 41, 42, 43, 44};
  nodes[40]->down = true;
  Rotate(f, nodes[0], GrantsOf(f, 60, evicted));
  net.Run(net.now_us + 3'000'000);
  nodes[40]->down = false;
  // The evicted member posts with the key it still holds: everyone refuses it.
  const Hash256 bad = Publish(net, nodes[40], f.room_id, f.members[40], "still here?");
  net.Run(net.now_us + 3'000'000);
  for (Node* n : nodes) ASSERT_EQ(n->host->Find(f.room_id)->room().epoch(), 3);
  const Hash256 after = Publish(net, nodes[1], f.room_id, f.members[1], "after the eviction");
  net.Run(net.now_us + 4'000'000);
  size_t readers = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const bool gone = std::find(evicted.begin(), evicted.end(), i) != evicted.end();
    if (i != 40) {
      EXPECT_FALSE(Holds(nodes[i], f.room_id, bad)) << "member " << i;
    }
    if (gone) {
      EXPECT_FALSE(Reads(nodes[i], f.room_id, after)) << "evicted member " << i << " reads";
      EXPECT_FALSE(nodes[i]->host->Find(f.room_id)->room().can_write());
    } else {
      EXPECT_TRUE(Reads(nodes[i], f.room_id, after)) << "member " << i;
      readers += Reads(nodes[i], f.room_id, after) ? 1 : 0;
    }
  }
  EXPECT_FALSE(Holds(relay, f.room_id, bad));
  EXPECT_EQ(readers, 55u);
  // Members that hold the same log and keys agree on the state (59 cannot fold the
  // history it may not read, so its state differs by design).
  const Hash256 state = nodes[0]->host->Find(f.room_id)->room().state_hash();
  for (size_t i = 0; i < 59; ++i) {
    if (std::find(evicted.begin(), evicted.end(), i) != evicted.end()) continue;
    EXPECT_EQ(nodes[i]->host->Find(f.room_id)->room().state_hash(), state) << "member " << i;
  }
}

// Rewrites key epochs a relay sends into `forged` (as one RoomEpoch; pieces are dropped).
size_t ForgeEpochs(std::span<uint8_t> buf, size_t size, const Hash256& room,
                   const std::vector<uint8_t>& forged) {
  wire::Message m;
  if (wire::Decode(buf.data(), size, &m) != wire::Verdict::kOk) return size;
  if (m.type() == wire::MessageType::kRoomUpdatePiece && m.room_update_piece()->key_epoch()) {
    return 0;
  }
  if (m.type() != wire::MessageType::kRoomEpoch || m.room_epoch()->genesis()) return size;
  wire::Encoder enc;
  std::vector<uint8_t> tmp(wire::kDatagramBytesMax);
  const size_t n = enc.RoomEpoch(tmp, room, forged);
  std::memcpy(buf.data(), tmp.data(), n);
  return n;
}

TEST(SwarmMembers, JoinByIdRefusesALyingRelay) {
  RoomFixture f(77, ReducerKind::kChat, kStateBytesMaxDefault, 4);
  Net net(77);
  Node* honest = net.Add(nullptr, true);
  Node* liar = net.Add(nullptr, true);
  ASSERT_TRUE(honest->host->Create(f.genesis, f.epochs).ok());
  ASSERT_TRUE(liar->host->Create(f.genesis, f.epochs).ok());
  // The liar grants the joiner keys of its own under an epoch it signed itself.
  const KeyPair fake_admin = KeyPair::FromSeed(f.rng.Bytes32());
  KeyEpochSpec spec;
  spec.room_id = f.room_id;
  spec.write_seed = f.rng.Bytes32();
  spec.content_key = f.rng.Bytes32();
  spec.members = {{f.members[3].public_key, true}};
  const std::vector<uint8_t> forged = MakeKeyEpoch(fake_admin, spec, f.random);
  liar->out.rewrite = [&](std::span<uint8_t> buf, size_t size) {
    return ForgeEpochs(buf, size, f.room_id, forged);
  };
  Node* writer = net.Add(&f.members[0], false);
  const base::Endpoint to_honest[] = {honest->addr};
  ASSERT_TRUE(writer->host->Join(net.now_us, f.genesis, f.epochs, to_honest, writer->out).ok());
  net.Run(2'000'000);
  const Hash256 hello = Publish(net, writer, f.room_id, f.members[0], "hello");
  net.Run(net.now_us + 1'000'000);

  // Joining by id through the liar alone: the genesis is real (it hashes to the room
  // id), the epoch is not the admin's: refused, the liar dropped and not taken back.
  Node* joiner = net.Add(&f.members[3], false);
  const base::Endpoint to_liar[] = {liar->addr};
  auto j = joiner->host->JoinById(net.now_us, f.room_id, to_liar, joiner->out, &f.members[3]);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(*j, nullptr);  // waits for the genesis
  EXPECT_TRUE(joiner->host->Joining(f.room_id));
  net.Run(net.now_us + 4'000'000);
  Swarm* s = joiner->host->Find(f.room_id);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->room().epoch(), -1);
  EXPECT_FALSE(s->room().can_read());
  EXPECT_GE(s->counters().epochs_refused, 1u);
  EXPECT_EQ(s->counters().peers_refused, 1u);
  EXPECT_TRUE(s->Refused(liar->addr));
  EXPECT_FALSE(s->HasPeer(liar->addr));
  EXPECT_FALSE(s->CaughtUp());

  // Through an honest relay it gets in and reads.
  ASSERT_TRUE(
      joiner->host->JoinById(net.now_us, f.room_id, to_honest, joiner->out, &f.members[3]).ok());
  net.Run(net.now_us + 4'000'000);
  EXPECT_EQ(s->room().epoch(), 0);
  EXPECT_TRUE(Reads(joiner, f.room_id, hello));
  EXPECT_TRUE(s->CaughtUp());
  EXPECT_FALSE(s->HasPeer(liar->addr));

  // A relay that answers with another room's genesis: refused, the join keeps waiting.
  RoomFixture other(78, ReducerKind::kChat, kStateBytesMaxDefault, 2);
  Node* liar2 = net.Add(nullptr, true);
  liar2->out.rewrite = [&](std::span<uint8_t> buf, size_t size) {
    wire::Message m;
    if (wire::Decode(buf.data(), size, &m) != wire::Verdict::kOk) return size;
    if (m.type() != wire::MessageType::kRoomEpoch || !m.room_epoch()->genesis()) return size;
    wire::Encoder enc;
    std::vector<uint8_t> tmp(wire::kDatagramBytesMax);
    const size_t n = enc.RoomEpoch(tmp, f.room_id, other.genesis, /*genesis=*/true);
    std::memcpy(buf.data(), tmp.data(), n);
    return n;
  };
  ASSERT_TRUE(liar2->host->Create(f.genesis, f.epochs).ok());
  Node* joiner2 = net.Add(&f.members[2], false);
  const base::Endpoint to_liar2[] = {liar2->addr};
  ASSERT_TRUE(joiner2->host->JoinById(net.now_us, f.room_id, to_liar2, joiner2->out,
                                      &f.members[2]).ok());
  net.Run(net.now_us + 3'000'000);
  EXPECT_EQ(joiner2->host->Find(f.room_id), nullptr);
  EXPECT_TRUE(joiner2->host->Joining(f.room_id));
  EXPECT_GE(joiner2->host->genesis_refused(), 2u);  // asked again every second
}

TEST(SwarmMembers, FiveHundredMemberEpochsCrossTheNetwork) {
  constexpr size_t kGranted = 500;
  constexpr size_t kOnline = 8;
  RoomFixture f(500, ReducerKind::kChat, kStateBytesMaxDefault, kGranted);
  const size_t epoch0_bytes = f.epochs[0].size();
  const size_t pieces = (epoch0_bytes + wire::kRoomPieceBytes - 1) / wire::kRoomPieceBytes;
  std::printf("key epoch of %zu members: %zu bytes, %zu pieces\n", kGranted, epoch0_bytes,
              pieces);
  EXPECT_GT(epoch0_bytes, 75'000u);
  EXPECT_LT(epoch0_bytes, 85'000u);
  Net net(500);
  net.loss = 0.05;
  Node* relay = net.Add(nullptr, true);
  ASSERT_TRUE(relay->host->Create(f.genesis, f.epochs).ok());
  // The online members join by room id: genesis and the 80 KB epoch come from the relay.
  std::vector<Node*> nodes;
  for (size_t i = 0; i < kOnline; ++i) {
    nodes.push_back(net.Add(&f.members[i], false));
    const base::Endpoint boot[] = {relay->addr};
    ASSERT_TRUE(
        nodes[i]->host->JoinById(net.now_us, f.room_id, boot, nodes[i]->out, &f.members[i]).ok());
  }
  net.Run(5'000'000);
  for (size_t i = 0; i < kOnline; ++i) {
    ASSERT_NE(nodes[i]->host->Find(f.room_id), nullptr) << "member " << i;
    ASSERT_EQ(nodes[i]->host->Find(f.room_id)->room().epoch(), 0) << "member " << i;
  }
  const Hash256 before = Publish(net, nodes[0], f.room_id, f.members[0], "before");
  net.Run(net.now_us + 2'000'000);

  // Rotation 1 evicts member 7 (online) and members 490..499; member 6 is away for this
  // and the next two rotations.
  std::vector<size_t> gone = {7};
  for (size_t i = 490; i < 500; ++i) gone.push_back(i);
  nodes[6]->down = true;
  Rotate(f, nodes[0], GrantsOf(f, kGranted, gone));
  net.Run(net.now_us + 3'000'000);
  Rotate(f, nodes[1], GrantsOf(f, kGranted, gone));
  net.Run(net.now_us + 3'000'000);
  Rotate(f, nodes[2], GrantsOf(f, kGranted, gone));
  net.Run(net.now_us + 3'000'000);
  std::printf("rotation epoch (%zu members): %zu bytes\n", kGranted - gone.size(),
              f.epochs.back().size());
  const Hash256 after = Publish(net, nodes[1], f.room_id, f.members[1], "after three rotations");
  nodes[6]->down = false;
  net.Run(net.now_us + 15'000'000);
  for (size_t i = 0; i < kOnline; ++i) {
    Swarm* s = nodes[i]->host->Find(f.room_id);
    if (i == 7) {
      EXPECT_FALSE(Reads(nodes[i], f.room_id, after)) << "the evicted member reads";
      EXPECT_FALSE(s->room().can_write());
      continue;
    }
    EXPECT_EQ(s->room().epoch(), 3) << "member " << i;
    EXPECT_TRUE(Reads(nodes[i], f.room_id, before)) << "member " << i;
    EXPECT_TRUE(Reads(nodes[i], f.room_id, after)) << "member " << i;
    EXPECT_TRUE(s->room().can_write()) << "member " << i;
  }
  const SwarmCounters& c = nodes[6]->host->Find(f.room_id)->counters();
  std::printf("member away for 3 rotations: %llu epochs received, %llu held, %llu pieces\n",
              static_cast<unsigned long long>(c.epochs_received),
              static_cast<unsigned long long>(c.epochs_held),
              static_cast<unsigned long long>(c.update_pieces_received));
}

}  // namespace
}  // namespace ringpeer::room
