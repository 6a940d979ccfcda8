// Goal: pruning the log behind a checkpoint (issue 16, item 4) changes nothing a peer can
// see: the order after the barrier, the heads, the state hash and the state stay those of
// a replica that keeps everything; a refused update stays refused; a pruned update that
// comes again is a duplicate; a peer behind the barrier is told to take the checkpoint,
// a peer at it gets the log after it; a better checkpoint still goes in effect.
// Method: one writer's log with two checkpoints and a branch from inside the first,
// delivered to a relay that prunes, a member that prunes and a relay that does not.
#include <algorithm>

#include "gtest/gtest.h"
#include "node/room/room.h"
#include "node/room/test_util.h"

namespace ringpeer::room {
namespace {

using testing::CountText;
using testing::RoomFixture;

std::vector<uint8_t> Msg(const KeyPair& who, std::string_view text) {
  return ChatPayload(ChatOp::kMessage, who.public_key, text);
}

std::vector<uint8_t> StateOf(const Room& r) {
  std::vector<uint8_t> s;
  r.SerializeState(&s);
  return s;
}

std::vector<Hash256> HeadsOf(const std::vector<uint8_t>& record, const Hash256& room) {
  CheckpointInfo info;
  Bytes signed_bytes;
  Signature sig;
  EXPECT_EQ(DecodeCheckpoint(record, room, &info, &signed_bytes, &sig), Verdict::kOk);
  return info.heads;
}

TEST(RoomPrune, PruneCoveredChangesNothingAPeerSees) {
  RoomFixture f(31, ReducerKind::kChat, kStateBytesMaxDefault);
  auto alice = f.Open(&f.members[0]);
  auto carol = f.Open(&f.members[2]);
  std::vector<std::vector<uint8_t>> log;
  auto write = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto rec = alice->Write(Msg(f.members[0], "m" + std::to_string(log.size())), f.random);
      ASSERT_TRUE(rec.ok()) << rec.status();
      log.push_back(*rec);
    }
  };
  write(10);
  for (const auto& r : log) ASSERT_EQ(carol->Receive(r), Verdict::kOk);
  // Carol branches from the 10th update; alice's first checkpoint will cover that one.
  const std::vector<uint8_t> branch = *carol->Write(Msg(f.members[2], "late"), f.random);
  write(20);
  const Checkpoint cp1 = *alice->MakeCheckpoint(f.random);
  ASSERT_EQ(alice->AddCheckpoint(cp1.record, cp1.blob), Verdict::kOk);
  write(20);
  const Checkpoint cp2 = *alice->MakeCheckpoint(f.random);
  ASSERT_EQ(alice->AddCheckpoint(cp2.record, cp2.blob), Verdict::kOk);
  write(10);

  auto relay = f.Open(nullptr);
  auto control = f.Open(nullptr);
  auto bob = f.Open(&f.members[1]);
  for (Room* r : {relay.get(), control.get(), bob.get()}) {
    for (size_t i = 0; i < log.size(); ++i) {
      ASSERT_EQ(r->Receive(log[i]), Verdict::kOk);
      if (i + 1 == 30) {
        ASSERT_EQ(r->AddCheckpoint(cp1.record, cp1.blob), Verdict::kOk);
      }
      if (i + 1 == 50) {
        ASSERT_EQ(r->AddCheckpoint(cp2.record, cp2.blob), Verdict::kOk);
      }
    }
    EXPECT_EQ(r->Receive(branch), Verdict::kBehindCheckpoint);
  }
  ASSERT_EQ(bob->state_hash(), alice->state_hash());

  // Behind the older checkpoint first, then behind the one in effect.
  std::vector<Hash256> pruned;
  EXPECT_EQ(relay->PruneCovered(HeadsOf(cp1.record, f.room_id), &pruned), 30u);
  EXPECT_EQ(pruned.size(), 30u);
  std::vector<Hash256> expect = control->order();
  EXPECT_EQ(relay->order(), std::vector<Hash256>(expect.begin() + 30, expect.end()));
  EXPECT_EQ(relay->state_hash(), control->state_hash());
  EXPECT_EQ(relay->PruneCovered(HeadsOf(cp2.record, f.room_id), &pruned), 20u);
  EXPECT_EQ(relay->order(), std::vector<Hash256>(expect.begin() + 50, expect.end()));
  EXPECT_EQ(relay->state_hash(), control->state_hash());
  EXPECT_EQ(relay->heads(), control->heads());
  EXPECT_EQ(relay->pruned_count(), 50u);
  EXPECT_EQ(relay->PruneCovered(HeadsOf(cp2.record, f.room_id), &pruned), 0u);  // done
  EXPECT_LT(relay->entries_held(), control->entries_held());
  EXPECT_LT(relay->HeldBytes(), control->HeldBytes());
  // A reader prunes too and keeps the state.
  std::vector<Hash256> bob_pruned;
  EXPECT_EQ(bob->PruneCovered(HeadsOf(cp2.record, f.room_id), &bob_pruned), 50u);
  EXPECT_EQ(bob->state_hash(), alice->state_hash());
  EXPECT_EQ(StateOf(*bob), StateOf(*alice));

  // A pruned update that comes again is old, not held pending.
  EXPECT_TRUE(relay->WasPruned(pruned[0]));
  EXPECT_EQ(relay->Receive(log[0]), Verdict::kDuplicate);
  EXPECT_EQ(relay->pending_size(), 0u);
  // A peer behind the barrier (carol, whose heads were pruned) takes the checkpoint, even
  // a relay; a peer at the checkpoint gets the log after it.
  EXPECT_TRUE(relay->PlanSync(carol->heads(), /*whole_log=*/true).take_checkpoint);
  EXPECT_TRUE(relay->PlanSync({}, /*whole_log=*/true).take_checkpoint);
  auto dave = f.Open(&f.members[3 % f.members.size()]);
  ASSERT_EQ(dave->LoadCheckpoint(cp2.record, cp2.blob), Verdict::kOk);
  const SyncPlan plan = relay->PlanSync(dave->heads());
  ASSERT_FALSE(plan.take_checkpoint);
  ASSERT_EQ(plan.updates.size(), 10u);
  for (Bytes u : plan.updates) EXPECT_EQ(dave->Receive(u), Verdict::kOk);
  EXPECT_EQ(dave->state_hash(), alice->state_hash());

  // The room goes on: new updates, and a better checkpoint, are taken as before.
  write(5);
  const Checkpoint cp3 = *alice->MakeCheckpoint(f.random);
  ASSERT_EQ(alice->AddCheckpoint(cp3.record, cp3.blob), Verdict::kOk);
  write(3);
  for (Room* r : {relay.get(), control.get(), bob.get()}) {
    for (size_t i = log.size() - 8; i < log.size(); ++i) {
      ASSERT_EQ(r->Receive(log[i]), Verdict::kOk);
      if (i + 4 == log.size()) {
        ASSERT_EQ(r->AddCheckpoint(cp3.record, cp3.blob), Verdict::kOk);
      }
    }
  }
  EXPECT_EQ(relay->state_hash(), control->state_hash());
  EXPECT_EQ(relay->heads(), control->heads());
  EXPECT_EQ(bob->state_hash(), alice->state_hash());
  EXPECT_EQ(StateOf(*bob), StateOf(*alice));
  EXPECT_EQ(relay->PruneCovered(HeadsOf(cp3.record, f.room_id), &pruned), 15u);
  EXPECT_EQ(relay->state_hash(), control->state_hash());
  EXPECT_EQ(relay->log_size(), 3u);
  // The covered count a checkpoint made after pruning is the one made without it.
  auto bob_cp = bob->MakeCheckpoint(f.random);
  auto alice_cp = alice->MakeCheckpoint(f.random);
  ASSERT_TRUE(bob_cp.ok());
  ASSERT_TRUE(alice_cp.ok());
  CheckpointInfo a, b;
  Bytes sb;
  Signature sig;
  ASSERT_EQ(DecodeCheckpoint(bob_cp->record, f.room_id, &b, &sb, &sig), Verdict::kOk);
  ASSERT_EQ(DecodeCheckpoint(alice_cp->record, f.room_id, &a, &sb, &sig), Verdict::kOk);
  EXPECT_EQ(b.covered, a.covered);
  EXPECT_EQ(b.state_hash, a.state_hash);
}

// Heads that are not a barrier of the line prune nothing: they would not cut the order.
TEST(RoomPrune, OnlyABarrierOfTheLinePrunes) {
  RoomFixture f(32, ReducerKind::kChat, kStateBytesMaxDefault);
  auto alice = f.Open(&f.members[0]);
  std::vector<std::vector<uint8_t>> log;
  for (int i = 0; i < 12; ++i) log.push_back(*alice->Write(Msg(f.members[0], "m"), f.random));
  std::vector<Hash256> pruned;
  EXPECT_EQ(alice->PruneCovered(alice->heads(), &pruned), 0u);  // no checkpoint yet
  const Checkpoint cp = *alice->MakeCheckpoint(f.random);
  ASSERT_EQ(alice->AddCheckpoint(cp.record, cp.blob), Verdict::kOk);
  auto relay = f.Open(nullptr);
  for (const auto& r : log) ASSERT_EQ(relay->Receive(r), Verdict::kOk);
  ASSERT_EQ(relay->AddCheckpoint(cp.record, cp.blob), Verdict::kOk);
  const std::vector<Hash256> order = relay->order();
  EXPECT_EQ(relay->PruneCovered(std::vector<Hash256>{order[5]}, &pruned), 0u);
  EXPECT_TRUE(pruned.empty());
  EXPECT_EQ(relay->PruneCovered(HeadsOf(cp.record, f.room_id), &pruned), 12u);
  EXPECT_EQ(relay->log_size(), 0u);
  EXPECT_EQ(relay->heads(), alice->heads());
  EXPECT_EQ(relay->state_hash(), alice->state_hash());  // every update applied: one chain
}

}  // namespace
// Re-issue lines across a barrier (issue 16 items 3 and 4): a node's own checkpoint covers
// an original, and the original's re-issue comes after it. A node that starts from that
// checkpoint cannot know the original, so the rule is segment-local: both are applied
// everywhere (the message shows twice, the state is the same on every node). Pruning
// behind the checkpoint changes nothing, and the author re-issues nothing more.
TEST(RoomPrune, AReissueAfterABarrierCoveringItsOriginalIsReadTheSameEverywhere) {
  RoomFixture f(37, ReducerKind::kChat, kStateBytesMaxDefault, 4);
  auto alice = f.Open(&f.members[0]);
  auto bob = f.Open(&f.members[1]);
  auto carol = f.Open(&f.members[2]);
  auto dan = f.Open(&f.members[3]);
  auto a0 = *alice->Write(Msg(f.members[0], "a0"), f.random);
  for (Room* r : {bob.get(), carol.get()}) ASSERT_EQ(r->Receive(a0), Verdict::kOk);
  auto x = *bob->Write(Msg(f.members[1], "late"), f.random);
  ASSERT_EQ(carol->Receive(x), Verdict::kOk);
  std::vector<std::vector<uint8_t>> more;
  for (int i = 1; i <= 4; ++i) {
    more.push_back(*alice->Write(Msg(f.members[0], "a" + std::to_string(i)), f.random));
  }
  for (const auto& m : more) {
    ASSERT_EQ(bob->Receive(m), Verdict::kOk);
    ASSERT_EQ(carol->Receive(m), Verdict::kOk);
  }
  // alice's checkpoint passes bob's post: bob re-issues it.
  auto cp = alice->MakeCheckpoint(f.random);
  ASSERT_TRUE(cp.ok()) << cp.status();
  ASSERT_EQ(alice->AddCheckpoint(cp->record, cp->blob), Verdict::kOk);
  ASSERT_EQ(bob->AddCheckpoint(cp->record, cp->blob), Verdict::kOk);
  auto again = bob->Reissues(f.random);
  ASSERT_EQ(again.size(), 1u);
  // carol checkpoints her own order (the original placed), then hears the re-issue.
  auto mine = carol->MakeCheckpoint(f.random);
  ASSERT_TRUE(mine.ok()) << mine.status();
  ASSERT_EQ(carol->AddCheckpoint(mine->record, mine->blob), Verdict::kOk);
  ASSERT_EQ(carol->Receive(again[0]), Verdict::kOk);
  EXPECT_EQ(CountText(*carol, "late"), 2u);
  // dan starts from carol's checkpoint: he never knew the original, and agrees.
  ASSERT_EQ(dan->LoadCheckpoint(mine->record, mine->blob), Verdict::kOk);
  ASSERT_EQ(dan->Receive(again[0]), Verdict::kOk);
  EXPECT_EQ(dan->heads(), carol->heads());
  EXPECT_EQ(dan->state_hash(), carol->state_hash());
  EXPECT_EQ(StateOf(*dan), StateOf(*carol));
  // Pruning behind carol's checkpoint changes nothing.
  const Hash256 before = carol->state_hash();
  std::vector<Hash256> pruned;
  EXPECT_GT(carol->PruneCovered(HeadsOf(mine->record, f.room_id), &pruned), 0u);
  EXPECT_EQ(carol->state_hash(), before);
  EXPECT_EQ(carol->Receive(again[0]), Verdict::kDuplicate);
  // Later writes apply once, the same on both.
  auto b = *alice->Write(Msg(f.members[0], "b"), f.random);
  ASSERT_EQ(carol->Receive(b), Verdict::kOk);
  ASSERT_EQ(dan->Receive(b), Verdict::kOk);
  EXPECT_EQ(CountText(*carol, "b"), 1u);
  EXPECT_EQ(dan->state_hash(), carol->state_hash());
  // bob, the author, re-issues nothing more once his line is in the order.
  ASSERT_EQ(bob->Receive(again[0]), Verdict::kDuplicate);
  EXPECT_FALSE(bob->reissues_due());
  EXPECT_TRUE(bob->Reissues(f.random).empty());
}

}  // namespace ringpeer::room
