// Test helpers for node/room: a seeded random source and a room with an admin and
// members, built deterministically from a seed. Tests only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "node/room/records.h"
#include "node/room/reducer.h"
#include "node/room/room.h"

namespace ringpeer::room::testing {

// Rng: splitmix64; deterministic per seed.
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t Next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t Below(uint64_t n) { return Next() % n; }
  void Fill(std::span<uint8_t> out) {
    for (uint8_t& b : out) b = static_cast<uint8_t>(Next());
  }
  std::array<uint8_t, 32> Bytes32() {
    std::array<uint8_t, 32> a;
    Fill(a);
    return a;
  }
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (size_t i = v->size(); i > 1; --i) std::swap((*v)[i - 1], (*v)[Below(i)]);
  }
};

// A room with an admin and `members_count` writing members; epoch 0 grants all of them.
struct RoomFixture {
  Rng rng;
  KeyPair admin;
  std::vector<KeyPair> members;
  std::vector<uint8_t> genesis;
  Hash256 room_id{};
  std::vector<std::vector<uint8_t>> epochs;  // key epoch records, in order
  std::vector<ContentKey> content_keys;

  RoomFixture(uint64_t seed, ReducerKind kind, uint64_t cap, size_t members_count = 3)
      : rng(seed) {
    admin = KeyPair::FromSeed(rng.Bytes32());
    for (size_t i = 0; i < members_count; ++i) members.push_back(KeyPair::FromSeed(rng.Bytes32()));
    genesis = MakeGenesis(admin, "test room", kind, cap, rng.Bytes32());
    Genesis g;
    EXPECT_EQ(ParseGenesis(genesis, &g), Verdict::kOk);
    room_id = g.room_id;
    std::vector<MemberGrantSpec> grants;
    for (const KeyPair& m : members) grants.push_back({m.public_key, true});
    Rotate(grants, {});
  }

  // Rotate: a new key epoch granting `grants`, made at `heads`. Without `history` the
  // epoch does not seal the previous content key (members it adds read only what follows).
  const std::vector<uint8_t>& Rotate(const std::vector<MemberGrantSpec>& grants,
                                     const std::vector<Hash256>& heads, bool history = true) {
    KeyEpochSpec spec;
    spec.room_id = room_id;
    spec.epoch = static_cast<uint32_t>(epochs.size());
    spec.write_seed = rng.Bytes32();
    spec.content_key = rng.Bytes32();
    if (history && !content_keys.empty()) spec.previous_key = content_keys.back();
    spec.rotation_heads = heads;
    spec.members = grants;
    content_keys.push_back(spec.content_key);
    epochs.push_back(MakeKeyEpoch(admin, spec, [&](std::span<uint8_t> out) { rng.Fill(out); }));
    return epochs.back();
  }

  // Open: a room for `who` (nullptr: a relay) with every key epoch applied.
  std::unique_ptr<Room> Open(const KeyPair* who) {
    auto room = Room::Open(genesis, who);
    EXPECT_TRUE(room.ok()) << room.status();
    for (const auto& e : epochs) EXPECT_EQ((*room)->AddKeyEpoch(e), Verdict::kOk);
    return std::move(*room);
  }

  // random: pass as a RandomFn; it outlives the calls that use it.
  std::function<void(std::span<uint8_t>)> random = [this](std::span<uint8_t> out) {
    rng.Fill(out);
  };
};

// CountText: how many of a chat room's messages say `text`.
inline size_t CountText(const Room& r, std::string_view text) {
  const auto* chat = static_cast<const ChatReducer*>(r.reducer());
  size_t n = 0;
  for (const auto& m : chat->messages()) n += m.text == text;
  return n;
}

}  // namespace ringpeer::room::testing
