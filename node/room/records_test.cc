// Goal: every room record builds, checks and rejects as documented.
// Method: build records with known keys, then tamper with one thing at a time (a byte, a
// key, the room) and expect the matching Verdict; grants open for their member only.
#include "node/room/records.h"

#include "gtest/gtest.h"
#include "node/room/test_util.h"

namespace ringpeer::room {
namespace {

using testing::RoomFixture;

TEST(Records, GenesisRoundTripAndTamper) {
  RoomFixture f(1, ReducerKind::kChat, kStateBytesMaxDefault);
  Genesis g;
  ASSERT_EQ(ParseGenesis(f.genesis, &g), Verdict::kOk);
  EXPECT_EQ(g.admin, f.admin.public_key);
  EXPECT_EQ(g.name, "test room");
  EXPECT_EQ(g.state_bytes_max, kStateBytesMaxDefault);
  std::vector<uint8_t> bad = f.genesis;
  bad[bad.size() / 2] ^= 1;  // lands in the body: signature or verifier fails
  Verdict v = ParseGenesis(bad, &g);
  EXPECT_TRUE(v == Verdict::kBadSignature || v == Verdict::kVerifyFailed) << VerdictName(v);
  EXPECT_EQ(ParseGenesis(std::vector<uint8_t>(10, 0), &g), Verdict::kVerifyFailed);
}

TEST(Records, KeyEpochOpensForMembersOnly) {
  RoomFixture f(2, ReducerKind::kChat, kStateBytesMaxDefault, 2);
  KeyPair reader = KeyPair::FromSeed(f.rng.Bytes32());
  KeyPair outsider = KeyPair::FromSeed(f.rng.Bytes32());
  const auto& rec = f.Rotate({{f.members[0].public_key, true}, {reader.public_key, false}}, {});
  KeyEpoch k;
  ASSERT_EQ(ParseKeyEpoch(rec, f.room_id, f.admin.public_key, &f.members[0], &k), Verdict::kOk);
  EXPECT_EQ(k.epoch, 1u);
  ASSERT_TRUE(k.content_key && k.write_seed);
  EXPECT_EQ(*k.content_key, f.content_keys[1]);
  ASSERT_TRUE(k.previous_key);
  EXPECT_EQ(*k.previous_key, f.content_keys[0]);
  ASSERT_EQ(ParseKeyEpoch(rec, f.room_id, f.admin.public_key, &reader, &k), Verdict::kOk);
  EXPECT_TRUE(k.content_key.has_value());
  EXPECT_FALSE(k.write_seed.has_value());  // read-only member
  ASSERT_EQ(ParseKeyEpoch(rec, f.room_id, f.admin.public_key, &outsider, &k), Verdict::kOk);
  EXPECT_FALSE(k.content_key.has_value());
  // Not signed by this room's admin; another room.
  EXPECT_EQ(ParseKeyEpoch(rec, f.room_id, f.members[1].public_key, nullptr, &k),
            Verdict::kBadSignature);
  Hash256 other = f.room_id;
  other[0] ^= 1;
  EXPECT_EQ(ParseKeyEpoch(rec, other, f.admin.public_key, nullptr, &k), Verdict::kWrongRoom);
}

TEST(Records, UpdateChecksInOrderOfCost) {
  RoomFixture f(3, ReducerKind::kChat, kStateBytesMaxDefault);
  KeyPair write = KeyPair::FromSeed(f.rng.Bytes32());
  std::vector<uint8_t> payload(200, 'x');
  Nonce n{};
  auto rec = MakeUpdate(f.room_id, 0, write, f.content_keys[0], {}, payload, n);
  ASSERT_FALSE(rec.empty());
  EXPECT_LE(rec.size(), kUpdateBytesMax);
  UpdateView u;
  ASSERT_EQ(DecodeUpdate(rec, f.room_id, &u), Verdict::kOk);
  EXPECT_EQ(u.id, wire::Blake2b256(u.signed_bytes));
  EXPECT_TRUE(CheckUpdateSignature(u, write.public_key));
  EXPECT_FALSE(CheckUpdateSignature(u, f.admin.public_key));
  std::vector<uint8_t> plain;
  const auto* c = u.body->ciphertext();
  Nonce got;
  std::memcpy(got.data(), u.body->nonce()->b()->Data(), 24);
  ASSERT_TRUE(OpenContent(f.content_keys[0], got, f.room_id, Bytes(c->data(), c->size()), &plain));
  EXPECT_EQ(plain, payload);
  EXPECT_FALSE(OpenContent(f.content_keys[0], got, Hash256{}, Bytes(c->data(), c->size()), &plain));

  EXPECT_EQ(DecodeUpdate(Bytes(rec.data(), 20), f.room_id, &u), Verdict::kTooShort);
  std::vector<uint8_t> huge(kUpdateBytesMax + 1, 0);
  EXPECT_EQ(DecodeUpdate(huge, f.room_id, &u), Verdict::kTooLong);
  std::vector<uint8_t> junk(300, 0xAB);
  EXPECT_EQ(DecodeUpdate(junk, f.room_id, &u), Verdict::kVerifyFailed);
  EXPECT_EQ(DecodeUpdate(rec, Hash256{}, &u), Verdict::kWrongRoom);
  // A payload whose record would pass kUpdateBytesMax is refused at build time; 64 KiB
  // with the most parents fits (issue 16: long updates).
  EXPECT_EQ(UpdatePayloadBytesMax(kParentsMax), kUpdatePayloadBytesMax);
  std::vector<uint8_t> big(kUpdateBytesMax, 'y');
  EXPECT_TRUE(MakeUpdate(f.room_id, 0, write, f.content_keys[0], {}, big, n).empty());
  std::vector<uint8_t> fits(UpdatePayloadBytesMax(kParentsMax), 'y');
  std::vector<Hash256> parents(kParentsMax);
  EXPECT_FALSE(MakeUpdate(f.room_id, 0, write, f.content_keys[0], parents, fits, n).empty());
}

TEST(Records, CheckpointRoundTrip) {
  RoomFixture f(4, ReducerKind::kChat, kStateBytesMaxDefault);
  KeyPair write = KeyPair::FromSeed(f.rng.Bytes32());
  std::vector<Hash256> heads = {f.rng.Bytes32(), f.rng.Bytes32()};
  std::vector<uint8_t> state(5000, 7), blob;
  Hash256 sh = f.rng.Bytes32();
  auto rec = MakeCheckpoint(f.room_id, 0, write, f.content_keys[0], heads, sh, state, Nonce{},
                            &blob);
  CheckpointInfo cp;
  Bytes signed_bytes;
  Signature sig;
  ASSERT_EQ(DecodeCheckpoint(rec, f.room_id, &cp, &signed_bytes, &sig), Verdict::kOk);
  EXPECT_EQ(cp.heads, heads);
  EXPECT_EQ(cp.state_hash, sh);
  EXPECT_EQ(cp.blob_bytes, blob.size());
  EXPECT_EQ(cp.blob_hash, wire::Blake2b256(blob));
  EXPECT_TRUE(wire::VerifySignature(write.public_key, signed_bytes, sig));
  // An update body can never be read as a checkpoint (kind separates the domains).
  auto up = MakeUpdate(f.room_id, 0, write, f.content_keys[0], {}, state.data() == nullptr
                           ? Bytes() : Bytes(state.data(), 10), Nonce{});
  EXPECT_NE(DecodeCheckpoint(up, f.room_id, &cp, &signed_bytes, &sig), Verdict::kOk);
}

}  // namespace
}  // namespace ringpeer::room
