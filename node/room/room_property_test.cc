// Goal: the convergence properties of the room model, over many random seeds:
//  - any delivery order, with duplicates and drops later repaired, gives every replica
//    the same order, state hash and state (chat and kv; kv with a small cap, so that
//    reducer refusals happen and must happen alike);
//  - a checkpoint plus the tail after it reaches the same state as full replay;
//  - sync planning returns exactly the updates a peer lacks, in order.
// Method: three writers build a random DAG (writes interleaved with partial, shuffled
// gossip between them, so branches form and merge); then replicas receive the records in
// shuffled order with duplicates and drops, and a repair pass delivers everything again.
// A failure prints the seed.
#include <algorithm>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "node/room/room.h"
#include "node/room/test_util.h"

namespace ringpeer::room {
namespace {

using testing::Rng;
using testing::RoomFixture;

constexpr int kSeeds = 200;

struct History {
  std::unique_ptr<RoomFixture> f;
  std::vector<std::vector<uint8_t>> records;  // in creation order (a topological order)
};

std::vector<uint8_t> RandomPayload(ReducerKind kind, Rng& rng, const KeyPair& who) {
  if (kind == ReducerKind::kKv) {
    std::string key = "k" + std::to_string(rng.Below(6));
    if (rng.Below(8) == 0) return KvPayload(KvOp::kDelete, key, "");
    return KvPayload(KvOp::kSet, key, std::string(rng.Below(60), 'a' + rng.Below(26)));
  }
  const uint64_t r = rng.Below(10);
  if (r == 0) return ChatPayload(ChatOp::kNick, who.public_key, "n" + std::to_string(rng.Below(99)));
  return ChatPayload(ChatOp::kMessage, who.public_key, std::string(1 + rng.Below(200), 'm'));
}

History MakeHistory(uint64_t seed, ReducerKind kind, uint64_t cap, int steps) {
  History h;
  h.f = std::make_unique<RoomFixture>(seed, kind, cap);
  RoomFixture& f = *h.f;
  std::vector<std::unique_ptr<Room>> writers;
  for (const KeyPair& m : f.members) writers.push_back(f.Open(&m));
  for (int i = 0; i < steps; ++i) {
    const size_t w = f.rng.Below(writers.size());
    if (f.rng.Below(3) != 0) {
      auto rec = writers[w]->Write(RandomPayload(kind, f.rng, f.members[w]), f.random);
      if (rec.ok()) h.records.push_back(std::move(*rec));
      continue;
    }
    // Gossip: a random few records, shuffled, to writer w (some wait for parents).
    std::vector<size_t> pick;
    for (size_t r = 0; r < h.records.size(); ++r) {
      if (f.rng.Below(2) == 0) pick.push_back(r);
    }
    f.rng.Shuffle(&pick);
    for (size_t r : pick) writers[w]->Receive(h.records[r]);
  }
  return h;
}

std::vector<uint8_t> StateOf(const Room& r) {
  std::vector<uint8_t> s;
  r.SerializeState(&s);
  return s;
}

// Deliver: shuffled, some twice, some dropped; then repair rounds deliver everything.
void DeliverMessily(Room* room, const std::vector<std::vector<uint8_t>>& records, Rng& rng) {
  std::vector<size_t> plan;
  for (size_t i = 0; i < records.size(); ++i) {
    const uint64_t r = rng.Below(10);
    if (r < 2) continue;  // dropped
    plan.push_back(i);
    if (r == 9) plan.push_back(i);  // duplicated
  }
  rng.Shuffle(&plan);
  for (size_t i : plan) room->Receive(records[i]);
  for (int round = 0; round < 2; ++round) {
    std::vector<size_t> all(records.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = i;
    rng.Shuffle(&all);
    for (size_t i : all) room->Receive(records[i]);
  }
}

// Returns how often the reference refused an update as over the cap, and how many
// updates merged branches, so the callers can check the seeds exercised both.
std::pair<uint64_t, uint64_t> CheckConvergence(uint64_t seed, ReducerKind kind, uint64_t cap) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  History h = MakeHistory(seed, kind, cap, 40);
  RoomFixture& f = *h.f;
  auto reference = f.Open(&f.members[0]);
  uint64_t merges = 0;
  for (const auto& r : h.records) {
    EXPECT_NE(reference->Receive(r), Verdict::kPending);
    UpdateView u;
    DecodeUpdate(r, f.room_id, &u);
    merges += u.body->parents() != nullptr && u.body->parents()->size() > 1;
  }
  EXPECT_EQ(reference->log_size(), h.records.size());
  for (int replica = 0; replica < 3; ++replica) {
    auto room = f.Open(replica == 2 ? nullptr : &f.members[1 + replica]);
    DeliverMessily(room.get(), h.records, f.rng);
    EXPECT_EQ(room->pending_size(), 0u);
    EXPECT_EQ(room->order(), reference->order());
    EXPECT_EQ(room->heads(), reference->heads());
    if (replica == 2) continue;  // the relay: same log, no state
    EXPECT_EQ(room->state_hash(), reference->state_hash());
    EXPECT_EQ(StateOf(*room), StateOf(*reference));
  }
  return {reference->verdict_count(Verdict::kOverCap), merges};
}

TEST(RoomProperty, AnyDeliveryOrderConvergesChat) {
  uint64_t merges = 0;
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    merges += CheckConvergence(seed, ReducerKind::kChat, kStateBytesMaxDefault).second;
    if (HasFailure()) return;
  }
  EXPECT_GT(merges, uint64_t{kSeeds});  // branches formed and merged
}

TEST(RoomProperty, AnyDeliveryOrderConvergesKvUnderCap) {
  uint64_t refused = 0;
  for (uint64_t seed = 1; seed <= kSeeds / 2; ++seed) {
    refused += CheckConvergence(1000 + seed, ReducerKind::kKv, 200).first;
    if (HasFailure()) return;
  }
  EXPECT_GT(refused, 0u);  // replicas met over-cap updates and refused them alike
}

TEST(RoomProperty, RejectionsChangeNothing) {
  for (uint64_t seed = 1; seed <= kSeeds / 2; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    History h = MakeHistory(4000 + seed, ReducerKind::kKv, 700, 20);
    RoomFixture& f = *h.f;
    auto room = f.Open(&f.members[0]);
    auto evicted = f.Open(&f.members[2]);
    for (const auto& r : h.records) {
      room->Receive(r);
      evicted->Receive(r);
    }
    const Hash256 hash = room->state_hash();
    const auto state = StateOf(*room);
    const size_t log = room->log_size();
    KeyEpoch k0;
    ASSERT_EQ(ParseKeyEpoch(f.epochs[0], f.room_id, f.admin.public_key, &f.members[0], &k0),
              Verdict::kOk);
    const KeyPair write = KeyPair::FromSeed(*k0.write_seed);
    const auto heads = room->heads();
    const auto small = KvPayload(KvOp::kSet, "x", "y");
    Nonce n;
    f.rng.Fill(n);
    const KeyPair forger = KeyPair::FromSeed(f.rng.Bytes32());
    EXPECT_EQ(room->Receive(MakeUpdate(f.room_id, 0, forger, f.content_keys[0], heads, small, n)),
              Verdict::kBadSignature);
    EXPECT_EQ(room->Receive(MakeUpdate(f.room_id, 1 + f.rng.Below(9), write, f.content_keys[0],
                                       heads, small, n)),
              Verdict::kUnknownEpoch);
    EXPECT_EQ(room->log_size(), log);
    auto big = KvPayload(KvOp::kSet, "big", std::string(690, 'b'));
    for (int i = 0; i < 5 && room->verdict_count(Verdict::kOverCap) == 0; ++i) {
      f.rng.Fill(n);
      room->Receive(MakeUpdate(f.room_id, 0, write, f.content_keys[0], room->heads(), big, n));
    }
    EXPECT_EQ(room->verdict_count(Verdict::kOverCap), 1u);
    EXPECT_EQ(room->state_hash(), hash);
    EXPECT_EQ(StateOf(*room), state);
    // Evict member 2 at the current heads; its later old-key write is refused.
    const auto& rot = f.Rotate({{f.members[0].public_key, true}}, room->heads());
    ASSERT_EQ(room->AddKeyEpoch(rot), Verdict::kOk);
    const Hash256 rotated = room->state_hash();
    auto late = evicted->Write(small, f.random);
    ASSERT_TRUE(late.ok());
    EXPECT_EQ(room->Receive(*late), Verdict::kStaleEpoch);
    EXPECT_EQ(room->state_hash(), rotated);
    ASSERT_EQ(evicted->AddKeyEpoch(rot), Verdict::kOk);
    EXPECT_FALSE(evicted->can_read());
    if (HasFatalFailure()) return;
  }
}

TEST(RoomProperty, CheckpointPlusTailEqualsFullReplay) {
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    History h = MakeHistory(2000 + seed, ReducerKind::kChat, kStateBytesMaxDefault, 40);
    RoomFixture& f = *h.f;
    // A member that holds a prefix of the history makes the checkpoint.
    const size_t cut = f.rng.Below(h.records.size() + 1);
    auto maker = f.Open(&f.members[0]);
    for (size_t i = 0; i < cut; ++i) maker->Receive(h.records[i]);
    auto cp = maker->MakeCheckpoint(f.random);
    ASSERT_TRUE(cp.ok());
    // Full replay, checkpoint first (it waits for its heads) then everything shuffled.
    auto full = f.Open(&f.members[1]);
    Verdict first = full->AddCheckpoint(cp->record, cp->blob);
    ASSERT_TRUE(first == Verdict::kPending || first == Verdict::kOk) << VerdictName(first);
    DeliverMessily(full.get(), h.records, f.rng);
    ASSERT_TRUE(full->has_checkpoint());
    EXPECT_EQ(full->verdict_count(Verdict::kCheckpointMismatch), 0u);
    // Full replay, checkpoint last.
    auto full2 = f.Open(&f.members[2]);
    DeliverMessily(full2.get(), h.records, f.rng);
    Verdict last = full2->AddCheckpoint(cp->record, cp->blob);
    EXPECT_EQ(last, Verdict::kOk) << VerdictName(last);
    EXPECT_EQ(full2->state_hash(), full->state_hash());
    // A fresh node: the checkpoint, then the tail a full node plans for it.
    auto fresh = f.Open(&f.members[2]);
    ASSERT_EQ(fresh->LoadCheckpoint(cp->record, cp->blob), Verdict::kOk);
    SyncPlan plan = full->PlanSync(fresh->heads());
    ASSERT_FALSE(plan.take_checkpoint);
    std::vector<std::vector<uint8_t>> tail;
    for (Bytes u : plan.updates) tail.emplace_back(u.begin(), u.end());
    f.rng.Shuffle(&tail);
    for (const auto& u : tail) fresh->Receive(u);
    EXPECT_EQ(fresh->pending_size(), 0u);
    EXPECT_EQ(fresh->state_hash(), full->state_hash());
    EXPECT_EQ(StateOf(*fresh), StateOf(*full));
    EXPECT_EQ(fresh->heads(), full->heads());
    if (HasFatalFailure()) return;
  }
}

// Ancestors of `from` (inclusive) by walking the records' parent ids.
std::set<Hash256> Ancestors(const std::map<Hash256, std::vector<Hash256>>& parents,
                            std::vector<Hash256> from) {
  std::set<Hash256> seen;
  while (!from.empty()) {
    Hash256 id = from.back();
    from.pop_back();
    if (!seen.insert(id).second) continue;
    for (const Hash256& p : parents.at(id)) from.push_back(p);
  }
  return seen;
}

TEST(RoomProperty, SyncPlanIsExactlyTheMissingSet) {
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    History h = MakeHistory(3000 + seed, ReducerKind::kChat, kStateBytesMaxDefault, 30);
    RoomFixture& f = *h.f;
    std::map<Hash256, std::vector<Hash256>> parents;
    std::map<Hash256, size_t> index;
    for (size_t i = 0; i < h.records.size(); ++i) {
      UpdateView u;
      ASSERT_EQ(DecodeUpdate(h.records[i], f.room_id, &u), Verdict::kOk);
      index[u.id] = i;
      auto& ps = parents[u.id];
      if (u.body->parents() != nullptr) {
        for (const auto* k : *u.body->parents()) ps.push_back(FromKey(*k));
      }
    }
    auto server = f.Open(&f.members[0]);
    for (const auto& r : h.records) server->Receive(r);
    // The peer holds the ancestors of a few random updates.
    std::vector<Hash256> peer_heads;
    std::vector<Hash256> all_ids = server->order();
    for (int k = 0; k < 2 && !all_ids.empty(); ++k) {
      peer_heads.push_back(all_ids[f.rng.Below(all_ids.size())]);
    }
    std::set<Hash256> has = Ancestors(parents, peer_heads);
    auto peer = f.Open(&f.members[1]);
    for (const auto& r : h.records) {
      UpdateView u;
      DecodeUpdate(r, f.room_id, &u);
      if (has.contains(u.id)) {
        ASSERT_EQ(peer->Receive(r), Verdict::kOk);
      }
    }
    SyncPlan plan = server->PlanSync(peer->heads());
    std::vector<Hash256> expected;
    for (const Hash256& id : all_ids) {
      if (!has.contains(id)) expected.push_back(id);
    }
    std::vector<Hash256> got;
    for (Bytes u : plan.updates) {
      UpdateView v;
      ASSERT_EQ(DecodeUpdate(u, f.room_id, &v), Verdict::kOk);
      got.push_back(v.id);
    }
    EXPECT_FALSE(plan.take_checkpoint);
    EXPECT_EQ(got, expected);
    for (Bytes u : plan.updates) EXPECT_EQ(peer->Receive(u), Verdict::kOk);  // in order
    EXPECT_EQ(peer->state_hash(), server->state_hash());
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace ringpeer::room
