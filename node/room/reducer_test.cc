// Goal: the built-in reducers fold payloads as documented, refuse without side effects,
// and serialize deterministically.
// Method: apply hand-made payloads, check the state and StateBytes() against Serialize(),
// and round-trip through Load().
#include "node/room/reducer.h"

#include "gtest/gtest.h"

namespace ringpeer::room {
namespace {

PublicKey Key(uint8_t b) {
  PublicKey k;
  k.fill(b);
  return k;
}

void ExpectConsistent(const Reducer& r) {
  std::vector<uint8_t> bytes;
  r.Serialize(&bytes);
  EXPECT_EQ(bytes.size(), r.StateBytes());
}

TEST(ChatReducer, MembersNicknamesAndMessages) {
  ChatReducer r;
  EXPECT_EQ(r.Apply(ChatPayload(ChatOp::kJoin, Key(1), "alice"), 1 << 20), Verdict::kOk);
  EXPECT_EQ(r.Apply(ChatPayload(ChatOp::kJoin, Key(2), "bob"), 1 << 20), Verdict::kOk);
  EXPECT_EQ(r.Apply(ChatPayload(ChatOp::kNick, Key(2), "robert"), 1 << 20), Verdict::kOk);
  EXPECT_EQ(r.Apply(ChatPayload(ChatOp::kMessage, Key(1), "hi"), 1 << 20), Verdict::kOk);
  EXPECT_EQ(r.members().at(Key(2)), "robert");
  ASSERT_EQ(r.messages().size(), 1u);
  EXPECT_EQ(r.messages()[0].text, "hi");
  EXPECT_EQ(r.Apply(ChatPayload(ChatOp::kLeave, Key(2), ""), 1 << 20), Verdict::kOk);
  EXPECT_EQ(r.members().size(), 1u);
  ExpectConsistent(r);
  EXPECT_EQ(r.Apply(std::vector<uint8_t>{9}, 1 << 20), Verdict::kBadPayload);
  EXPECT_EQ(r.Apply(ChatPayload(static_cast<ChatOp>(77), Key(1), ""), 1 << 20),
            Verdict::kBadPayload);
}

TEST(ChatReducer, BoundedMessagesAndCap) {
  ChatReducer r;
  for (size_t i = 0; i < kChatMessagesMax + 10; ++i) {
    ASSERT_EQ(r.Apply(ChatPayload(ChatOp::kMessage, Key(1), std::to_string(i)), 1 << 20),
              Verdict::kOk);
  }
  EXPECT_EQ(r.messages().size(), kChatMessagesMax);
  EXPECT_EQ(r.messages().front().text, "10");
  ExpectConsistent(r);
  // At the cap, the oldest messages fall off to make room for a long one (issue 16: 80
  // messages of 64 KiB would otherwise fill a 5 MB room for good).
  const uint64_t cap = r.StateBytes();
  ASSERT_EQ(r.Apply(ChatPayload(ChatOp::kMessage, Key(1), std::string(500, 'z')), cap),
            Verdict::kOk);
  EXPECT_LE(r.StateBytes(), cap);
  EXPECT_LT(r.messages().size(), kChatMessagesMax);
  EXPECT_EQ(r.messages().back().text, std::string(500, 'z'));
  ExpectConsistent(r);
  // One message larger than the whole cap is refused, and changes nothing.
  std::vector<uint8_t> before;
  r.Serialize(&before);
  EXPECT_EQ(r.Apply(ChatPayload(ChatOp::kMessage, Key(1), std::string(2000, 'z')), 1000),
            Verdict::kOverCap);
  std::vector<uint8_t> after;
  r.Serialize(&after);
  EXPECT_EQ(before, after);
  ChatReducer copy;
  ASSERT_TRUE(copy.Load(after));
  std::vector<uint8_t> again;
  copy.Serialize(&again);
  EXPECT_EQ(again, after);
  EXPECT_FALSE(copy.Load(std::vector<uint8_t>(after.begin(), after.end() - 1)));
}

TEST(KvReducer, LastWriterWinsAndDelete) {
  KvReducer r;
  EXPECT_EQ(r.Apply(KvPayload(KvOp::kSet, "a", "1"), 1 << 20), Verdict::kOk);
  EXPECT_EQ(r.Apply(KvPayload(KvOp::kSet, "a", "2"), 1 << 20), Verdict::kOk);
  EXPECT_EQ(r.Apply(KvPayload(KvOp::kSet, "b", "3"), 1 << 20), Verdict::kOk);
  EXPECT_EQ(r.entries().at("a"), "2");
  EXPECT_EQ(r.Apply(KvPayload(KvOp::kDelete, "b", ""), 1 << 20), Verdict::kOk);
  EXPECT_FALSE(r.entries().contains("b"));
  ExpectConsistent(r);
  EXPECT_EQ(r.Apply(KvPayload(KvOp::kSet, "c", std::string(100, 'v')), 50), Verdict::kOverCap);
  EXPECT_FALSE(r.entries().contains("c"));
  std::vector<uint8_t> bytes;
  r.Serialize(&bytes);
  KvReducer copy;
  ASSERT_TRUE(copy.Load(bytes));
  EXPECT_EQ(copy.entries(), r.entries());
}

}  // namespace
}  // namespace ringpeer::room
