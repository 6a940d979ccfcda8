// The to-do reducer: its ops, the versioning rules of node/room/REDUCERS.md (an op or a
// field this version does not know changes nothing and is no error), the state cap, and
// that replicas folding the same updates in any arrival order agree, with a relay that
// does not run the app in between.
#include "examples/todo/todo.h"

#include "gtest/gtest.h"
#include "node/room/room.h"
#include "node/room/test_util.h"

namespace todo {
namespace {

using ringpeer::room::ReducerKind;
using ringpeer::room::Room;
using ringpeer::room::Verdict;
using ringpeer::room::testing::RoomFixture;

constexpr uint64_t kCap = 5'000'000;

std::vector<uint8_t> StateOf(const TodoReducer& r) {
  std::vector<uint8_t> s;
  r.Serialize(&s);
  return s;
}

TEST(Todo, AddDoneRemove) {
  TodoReducer r;
  EXPECT_EQ(r.Apply(AddPayload("milk"), kCap), Verdict::kOk);
  EXPECT_EQ(r.Apply(AddPayload("bread"), kCap), Verdict::kOk);
  EXPECT_EQ(r.Apply(DonePayload(1, true), kCap), Verdict::kOk);
  EXPECT_EQ(r.Apply(RemovePayload(2), kCap), Verdict::kOk);
  EXPECT_EQ(r.Apply(AddPayload("eggs"), kCap), Verdict::kOk);
  ASSERT_EQ(r.items().size(), 2u);
  EXPECT_TRUE(r.items().at(1).done);
  EXPECT_EQ(r.items().at(1).text, "milk");
  EXPECT_EQ(r.items().at(3).text, "eggs");  // numbers are never reused
  EXPECT_EQ(r.StateBytes(), StateOf(r).size());
  // Ticking or removing an item that is gone changes nothing.
  const auto before = StateOf(r);
  EXPECT_EQ(r.Apply(DonePayload(2, true), kCap), Verdict::kOk);
  EXPECT_EQ(r.Apply(RemovePayload(9), kCap), Verdict::kOk);
  EXPECT_EQ(StateOf(r), before);
}

TEST(Todo, NewerVersionsAreSkippedOrReadInPart) {
  TodoReducer r;
  ASSERT_EQ(r.Apply(AddPayload("milk"), kCap), Verdict::kOk);
  const auto before = StateOf(r);
  // An op a later version added: skipped, not refused.
  const std::vector<uint8_t> future = {9, 1, 2, 3};
  EXPECT_EQ(r.Apply(future, kCap), Verdict::kOk);
  EXPECT_EQ(StateOf(r), before);
  EXPECT_EQ(r.skipped(), 1u);
  // A known op too short to read: skipped alike.
  EXPECT_EQ(r.Apply(std::vector<uint8_t>{2, 1}, kCap), Verdict::kOk);
  EXPECT_EQ(StateOf(r), before);
  // A known op with fields a later version appended: the known ones are applied.
  std::vector<uint8_t> longer = DonePayload(1, true);
  longer.push_back(0x42);
  EXPECT_EQ(r.Apply(longer, kCap), Verdict::kOk);
  EXPECT_TRUE(r.items().at(1).done);
  // No version writes an empty update.
  EXPECT_EQ(r.Apply({}, kCap), Verdict::kBadPayload);
}

TEST(Todo, StateRoundTripAndLaterFormat) {
  TodoReducer r;
  for (const char* t : {"a", "bb", "ccc"}) ASSERT_EQ(r.Apply(AddPayload(t), kCap), Verdict::kOk);
  ASSERT_EQ(r.Apply(DonePayload(2, true), kCap), Verdict::kOk);
  const auto s = StateOf(r);
  TodoReducer copy;
  ASSERT_TRUE(copy.Load(s));
  EXPECT_EQ(StateOf(copy), s);
  EXPECT_EQ(copy.next_number(), 4u);
  // A later format (2) with a tail this version cannot read: kept and written back.
  std::vector<uint8_t> later = s;
  later[0] = 2;
  later.insert(later.end(), {7, 7, 7});
  ASSERT_TRUE(copy.Load(later));
  EXPECT_EQ(copy.items().size(), 3u);
  EXPECT_EQ(StateOf(copy), later);
  EXPECT_EQ(copy.StateBytes(), later.size());
  // Our format with trailing bytes, or items out of order: not a state we wrote.
  std::vector<uint8_t> bad = s;
  bad.push_back(0);
  EXPECT_FALSE(copy.Load(bad));
  EXPECT_TRUE(copy.items().empty());
  EXPECT_FALSE(copy.Load(std::vector<uint8_t>{1, 0}));
}

TEST(Todo, StateCap) {
  TodoReducer r;
  const uint64_t cap = 9 + 2 * (7 + 10);  // room for two 10-byte items
  ASSERT_EQ(r.Apply(AddPayload("0123456789"), cap), Verdict::kOk);
  ASSERT_EQ(r.Apply(AddPayload("0123456789"), cap), Verdict::kOk);
  const auto before = StateOf(r);
  EXPECT_EQ(r.Apply(AddPayload("x"), cap), Verdict::kOverCap);
  EXPECT_EQ(StateOf(r), before);  // refused: unchanged
  ASSERT_EQ(r.Apply(RemovePayload(1), cap), Verdict::kOk);
  EXPECT_EQ(r.Apply(AddPayload("x"), cap), Verdict::kOk);
}

// Two writers' updates, delivered to a third member in reverse order through a relay that
// does not run the app: every member ends with the same list and state hash.
TEST(Todo, ReplicasAgreeThroughACarrier) {
  RoomFixture f(21, ReducerKind::kOpaque, kCap);
  auto app = [](const ringpeer::room::Genesis&) { return std::make_unique<TodoReducer>(); };
  auto none = [](const ringpeer::room::Genesis&) -> std::unique_ptr<ringpeer::room::Reducer> {
    return nullptr;
  };
  std::unique_ptr<Room> members[3];
  for (int i = 0; i < 3; ++i) {
    auto r = Room::OpenApp(f.genesis, &f.members[i], app, /*carrier=*/false);
    ASSERT_TRUE(r.ok());
    members[i] = std::move(*r);
    ASSERT_EQ(members[i]->AddKeyEpoch(f.epochs[0]), Verdict::kOk);
  }
  auto relay = Room::OpenApp(f.genesis, nullptr, none, /*carrier=*/true);
  ASSERT_TRUE(relay.ok());
  ASSERT_EQ((*relay)->AddKeyEpoch(f.epochs[0]), Verdict::kOk);

  std::vector<std::vector<uint8_t>> records;
  for (int i = 0; i < 6; ++i) {  // two writers branch, then merge by writing on both heads
    auto rec = members[i % 2]->Write(AddPayload("item " + std::to_string(i)), f.random);
    ASSERT_TRUE(rec.ok());
    records.push_back(*rec);
  }
  for (const auto& rec : records) {
    (void)members[0]->Receive(rec);
    (void)members[1]->Receive(rec);
  }
  auto merge = members[0]->Write(DonePayload(1, true), f.random);
  ASSERT_TRUE(merge.ok());
  records.push_back(*merge);
  ASSERT_EQ(members[1]->Receive(*merge), Verdict::kOk);
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    const Verdict v = (*relay)->Receive(*it);
    EXPECT_TRUE(v == Verdict::kOk || v == Verdict::kPending) << VerdictName(v);
  }
  EXPECT_EQ((*relay)->log_size(), records.size());
  for (auto it = records.rbegin(); it != records.rend(); ++it) (void)members[2]->Receive(*it);

  std::vector<uint8_t> s0, s1, s2;
  members[0]->SerializeState(&s0);
  members[1]->SerializeState(&s1);
  members[2]->SerializeState(&s2);
  EXPECT_EQ(s0, s1);
  EXPECT_EQ(s0, s2);
  EXPECT_EQ(members[0]->state_hash(), members[2]->state_hash());
  EXPECT_EQ(members[0]->state_hash(), (*relay)->state_hash());  // no update was refused
  TodoReducer list;
  ASSERT_TRUE(list.Load(s2));
  EXPECT_EQ(list.items().size(), 6u);
}

}  // namespace
}  // namespace todo
