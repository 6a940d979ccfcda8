// Goal: membership that grows and shrinks (issue 17) at the room model: a room of 50
// members adds 10 (nine with history, one without) and evicts 5; the evicted cannot post
// and cannot read what follows, everyone else reads on, and the member added without
// history cannot read what came before it. A room of 500 granted members rotates and every
// remaining member reads on; the key epoch's size at 500 members and the bytes one grant
// costs are measured and checked against the limits in records.h.
// Method: RoomFixture rooms with deterministic keys; every member has its own Room, and
// every update is delivered to every room. Reading is checked through Room::Payload.
#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "node/room/records.h"
#include "node/room/room.h"
#include "node/room/test_util.h"

namespace ringpeer::room {
namespace {

using testing::RoomFixture;

std::vector<uint8_t> Msg(const KeyPair& who, std::string_view text) {
  return ChatPayload(ChatOp::kMessage, who.public_key, text);
}

// Grants for members [0, n) of `f`, except those in [skip_from, skip_to).
std::vector<MemberGrantSpec> Grants(const RoomFixture& f, size_t n, size_t skip_from = 0,
                                    size_t skip_to = 0) {
  std::vector<MemberGrantSpec> g;
  for (size_t i = 0; i < n; ++i) {
    if (i >= skip_from && i < skip_to) continue;
    g.push_back({f.members[i].public_key, true});
  }
  return g;
}

// Delivers `record` (an update) to every room but `skip`; returns how many accepted it.
size_t Deliver(std::vector<std::unique_ptr<Room>>& rooms, Bytes record, const Room* skip) {
  size_t ok = 0;
  for (auto& r : rooms) {
    if (r.get() == skip) continue;
    if (r->Receive(record) == Verdict::kOk) ++ok;
  }
  return ok;
}

Hash256 IdOf(Bytes record, const Hash256& room_id) {
  UpdateView u;
  EXPECT_EQ(DecodeUpdate(record, room_id, &u), Verdict::kOk);
  return u.id;
}

TEST(Membership, FiftyMembersAddTenEvictFive) {
  RoomFixture f(17, ReducerKind::kChat, kStateBytesMaxDefault, 50);
  for (int i = 0; i < 10; ++i) f.members.push_back(KeyPair::FromSeed(f.rng.Bytes32()));
  // Rooms for all 60 keys; 50..59 hold no grant yet.
  std::vector<std::unique_ptr<Room>> rooms;
  for (const KeyPair& m : f.members) rooms.push_back(f.Open(&m));
  for (size_t i = 50; i < 60; ++i) EXPECT_FALSE(rooms[i]->can_read());

  // Epoch 0: member 0 posts.
  auto p0 = rooms[0]->Write(Msg(f.members[0], "epoch 0"), f.random);
  ASSERT_TRUE(p0.ok());
  EXPECT_EQ(Deliver(rooms, *p0, rooms[0].get()), 59u);  // relay-like: all store it

  // Epoch 1: nine members join with history (the epoch seals the previous content key).
  const auto e1 = f.Rotate(Grants(f, 59), rooms[0]->heads());
  for (auto& r : rooms) ASSERT_EQ(r->AddKeyEpoch(e1), Verdict::kOk);
  auto p1 = rooms[50]->Write(Msg(f.members[50], "epoch 1 by a new member"), f.random);
  ASSERT_TRUE(p1.ok());
  Deliver(rooms, *p1, rooms[50].get());

  // Epoch 2: member 59 joins without history.
  const auto e2 = f.Rotate(Grants(f, 60), rooms[0]->heads(), /*history=*/false);
  for (auto& r : rooms) ASSERT_EQ(r->AddKeyEpoch(e2), Verdict::kOk);
  auto p2 = rooms[59]->Write(Msg(f.members[59], "epoch 2 by the no-history member"), f.random);
  ASSERT_TRUE(p2.ok());
  Deliver(rooms, *p2, rooms[59].get());

  // Epoch 3: members 40..44 are evicted at member 0's heads.
  const auto e3 = f.Rotate(Grants(f, 60, 40, 45), rooms[0]->heads());
  for (auto& r : rooms) ASSERT_EQ(r->AddKeyEpoch(e3), Verdict::kOk);
  auto p3 = rooms[1]->Write(Msg(f.members[1], "epoch 3, after the eviction"), f.random);
  ASSERT_TRUE(p3.ok());
  Deliver(rooms, *p3, rooms[1].get());

  const Hash256 ids[4] = {IdOf(*p0, f.room_id), IdOf(*p1, f.room_id), IdOf(*p2, f.room_id),
                          IdOf(*p3, f.room_id)};
  std::vector<uint8_t> plain;
  for (size_t i = 0; i < 60; ++i) {
    SCOPED_TRACE("member " + std::to_string(i));
    const bool evicted = i >= 40 && i < 45;
    EXPECT_EQ(rooms[i]->log_size(), 4u);
    EXPECT_EQ(rooms[i]->order(), rooms[0]->order());
    // The state folds what a member can read: the same for all who read everything.
    if (!evicted && i != 59) {
      EXPECT_EQ(rooms[i]->state_hash(), rooms[0]->state_hash());
    }
    EXPECT_EQ(rooms[i]->can_write(), !evicted);
    // What came before epoch 2: everyone but the no-history member reads it.
    for (int k = 0; k < 2; ++k) EXPECT_EQ(rooms[i]->Payload(ids[k], &plain), i != 59);
    EXPECT_TRUE(rooms[i]->Payload(ids[2], &plain));
    // What follows the eviction: everyone but the evicted reads it.
    EXPECT_EQ(rooms[i]->Payload(ids[3], &plain), !evicted);
  }
  EXPECT_FALSE(rooms[42]->can_write());

  // An evicted member cannot post: its room refuses to write, and one that ignores the
  // rotation and writes with the old write key is refused by every other member.
  EXPECT_FALSE(rooms[42]->Write(Msg(f.members[42], "evicted"), f.random).ok());
  auto evil = Room::Open(f.genesis, &f.members[42]);
  ASSERT_TRUE(evil.ok());
  for (size_t e = 0; e < 3; ++e) ASSERT_EQ((*evil)->AddKeyEpoch(f.epochs[e]), Verdict::kOk);
  for (const auto* p : {&*p0, &*p1, &*p2}) ASSERT_EQ((*evil)->Receive(*p), Verdict::kOk);
  auto forged = (*evil)->Write(Msg(f.members[42], "evicted, after rotation"), f.random);
  ASSERT_TRUE(forged.ok());
  for (size_t i = 0; i < 60; ++i) {
    if (i >= 40 && i < 45) continue;
    const Hash256 before = rooms[i]->state_hash();
    EXPECT_EQ(rooms[i]->Receive(*forged), Verdict::kStaleEpoch) << i;
    EXPECT_EQ(rooms[i]->state_hash(), before);
    EXPECT_EQ(rooms[i]->log_size(), 4u);
  }
}

TEST(Membership, ListGrantsNamesWhoHasWhichAccess) {
  RoomFixture f(5, ReducerKind::kChat, kStateBytesMaxDefault, 6);
  std::vector<MemberGrantSpec> g = Grants(f, 6, 2, 3);  // member 2 evicted
  g[3].write = false;                                     // member 4 reads only
  const auto e1 = f.Rotate(g, {});
  std::vector<MemberGrantSpec> listed;
  ASSERT_EQ(ListGrants(e1, f.room_id, f.admin.public_key, &listed), Verdict::kOk);
  ASSERT_EQ(listed.size(), 5u);
  for (size_t i = 0; i < g.size(); ++i) {
    EXPECT_EQ(listed[i].member, g[i].member);
    EXPECT_EQ(listed[i].write, g[i].write) << i;
  }
  // A record not signed by the room's admin, or altered, lists nothing.
  std::vector<MemberGrantSpec> none;
  EXPECT_NE(ListGrants(e1, f.room_id, f.members[0].public_key, &none), Verdict::kOk);
  auto bad = e1;
  bad[bad.size() / 2] ^= 1;
  EXPECT_NE(ListGrants(bad, f.room_id, f.admin.public_key, &none), Verdict::kOk);
  EXPECT_TRUE(none.empty());
}

// The key epoch of `members` write grants, as the admin makes it.
size_t EpochBytes(RoomFixture& f, size_t members) {
  return f.Rotate(Grants(f, members), {}).size();
}

TEST(Membership, FiveHundredMembersRotateAndReadOn) {
  RoomFixture f(500, ReducerKind::kChat, kStateBytesMaxDefault, 500);
  std::vector<std::unique_ptr<Room>> rooms;
  for (const KeyPair& m : f.members) rooms.push_back(f.Open(&m));
  auto p0 = rooms[7]->Write(Msg(f.members[7], "before"), f.random);
  ASSERT_TRUE(p0.ok());
  Deliver(rooms, *p0, rooms[7].get());

  // The admin evicts member 0 at member 7's heads: 499 grants.
  const auto rot = f.Rotate(Grants(f, 500, 0, 1), rooms[7]->heads());
  EXPECT_LE(rot.size(), kKeyEpochBytesMax);
  for (auto& r : rooms) ASSERT_EQ(r->AddKeyEpoch(rot), Verdict::kOk);
  auto p1 = rooms[499]->Write(Msg(f.members[499], "after"), f.random);
  ASSERT_TRUE(p1.ok());
  // The evicted member's room verifies the update but cannot open it.
  EXPECT_EQ(rooms[0]->Receive(*p1), Verdict::kUndecryptable);
  EXPECT_EQ(Deliver(rooms, *p1, rooms[499].get()), 498u);
  const Hash256 after = IdOf(*p1, f.room_id);
  std::vector<uint8_t> plain;
  size_t readers = 0;
  for (size_t i = 0; i < 500; ++i) readers += rooms[i]->Payload(after, &plain) ? 1 : 0;
  EXPECT_EQ(readers, 499u);
  EXPECT_FALSE(rooms[0]->Payload(after, &plain));
  EXPECT_FALSE(rooms[0]->can_write());

  // Sizes: the epoch at 500 members, and what one more member adds (sealing is random
  // but its length is fixed, so the difference is exact).
  const size_t at500 = EpochBytes(f, 500);
  const size_t at499 = EpochBytes(f, 499);
  const size_t per_member = at500 - at499;
  std::printf("key epoch: %zu bytes at 500 write members, %zu bytes per member\n", at500,
              per_member);
  ::testing::Test::RecordProperty("epoch_bytes_500", static_cast<int>(at500));
  ::testing::Test::RecordProperty("grant_bytes", static_cast<int>(per_member));
  EXPECT_GE(per_member, 32u + 64u + 48u);  // member key + sealed content key and write seed
  EXPECT_LE(per_member, 160u);  // the figure records.h and the README state
  // The limit in records.h holds kMembersMax grants.
  EXPECT_LE(at500 + (kMembersMax - 500) * per_member, kKeyEpochBytesMax);
  // And a record of kMembersMax grants is made and parses, with the last member's keys.
  while (f.members.size() < kMembersMax) f.members.push_back(KeyPair::FromSeed(f.rng.Bytes32()));
  const auto full = f.Rotate(Grants(f, kMembersMax), {});
  EXPECT_LE(full.size(), kKeyEpochBytesMax);
  KeyEpoch k;
  ASSERT_EQ(ParseKeyEpoch(full, f.room_id, f.admin.public_key, &f.members.back(), &k),
            Verdict::kOk);
  ASSERT_TRUE(k.content_key.has_value());
  EXPECT_EQ(*k.content_key, f.content_keys.back());
  std::printf("key epoch: %zu bytes at %zu write members\n", full.size(), kMembersMax);
}

}  // namespace
}  // namespace ringpeer::room
