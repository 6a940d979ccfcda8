// Goal: invites round-trip and every malformed paste gets a clear error.
// Method: format invites with and without keys and addresses, parse them back (also with
// changed case and line breaks), then break one thing at a time and check the message.
#include "node/room/invite.h"

#include "gtest/gtest.h"
#include "node/room/test_util.h"

namespace ringpeer::room {
namespace {

Invite Sample() {
  testing::Rng rng(9);
  Invite inv;
  inv.room_id = rng.Bytes32();
  inv.epoch = 3;
  inv.content_key = rng.Bytes32();
  inv.write_seed = rng.Bytes32();
  inv.bootstrap.push_back(*base::Endpoint::Parse("192.0.2.7:7700"));
  inv.bootstrap.push_back(*base::Endpoint::Parse("[2001:db8::1]:7701"));
  return inv;
}

std::string ErrorOf(std::string_view text) {
  auto r = ParseInvite(text);
  EXPECT_FALSE(r.ok());
  return std::string(r.status().message());
}

TEST(Invite, RoundTrip) {
  Invite inv = Sample();
  std::string text = FormatInvite(inv);
  EXPECT_EQ(text.rfind("ringpeer:1:", 0), 0u);
  auto back = ParseInvite(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, inv);
  // Read-only, no addresses.
  Invite ro = inv;
  ro.write_seed.reset();
  ro.bootstrap.clear();
  back = ParseInvite(FormatInvite(ro));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, ro);
  // Pasted with upper case and a line break in the middle.
  std::string pasted = text.substr(0, 11);
  for (size_t i = 11; i < text.size(); ++i) {
    pasted.push_back(static_cast<char>(std::toupper(text[i])));
    if (i == 40) pasted += "\n  ";
  }
  back = ParseInvite("  " + pasted + "\n");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, inv);
}

TEST(Invite, ClearErrors) {
  std::string text = FormatInvite(Sample());
  EXPECT_EQ(ErrorOf("hello"), "invite: does not start with 'ringpeer:'");
  EXPECT_EQ(ErrorOf("ringpeer:abc"), "invite: missing version (expected 'ringpeer:1:...')");
  EXPECT_EQ(ErrorOf("ringpeer:3:" + text.substr(11)),
            "invite: unknown version 3 (this node reads version 1)");
  std::string bad_char = text;
  bad_char[20] = '!';
  EXPECT_EQ(ErrorOf(bad_char), "invite: bad character '!' at position 20");
  std::string typo = text;
  typo[30] = typo[30] == 'a' ? 'b' : 'a';
  EXPECT_EQ(ErrorOf(typo), "invite: bad checksum (mistyped or cut off?)");
  EXPECT_EQ(ErrorOf(text.substr(0, text.size() - 10)),
            "invite: bad checksum (mistyped or cut off?)");
  EXPECT_EQ(ErrorOf("ringpeer:1:abcd"), "invite: too short (cut off when pasted?)");
}

// A self-contained invite (room create): member seed, genesis and key epochs round-trip,
// and a genesis that is not the named room's is refused with a clear line.
TEST(Invite, SelfContained) {
  testing::RoomFixture f(4, ReducerKind::kChat, kStateBytesMaxDefault, 2);
  Invite inv;
  inv.room_id = f.room_id;
  inv.member_seed = f.rng.Bytes32();
  inv.genesis = f.genesis;
  inv.epochs = f.epochs;
  inv.bootstrap.push_back(*base::Endpoint::Parse("127.0.0.1:7700"));
  auto back = ParseInvite(FormatInvite(inv));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, inv);
  Invite other = inv;
  other.room_id[0] ^= 1;
  EXPECT_EQ(ErrorOf(FormatInvite(other)), "invite: the genesis record is not this room's");
  other = inv;
  other.genesis.back() ^= 1;  // breaks the admin's signature
  EXPECT_EQ(ErrorOf(FormatInvite(other)), "invite: the room's genesis record is invalid");
}

}  // namespace
}  // namespace ringpeer::room
