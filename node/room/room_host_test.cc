// Goal: a relay's RoomHost admits rooms by policy (issue 11, item 4): a listed relay only
// the configured rooms and admins; an open relay only for proved sources, a bounded number
// per source and hour; a full table drops never-written rooms first, then unloads idle
// ones (kept in storage, reloaded by a join), and never deletes what was written.
#include "node/room/room_host.h"

#include <gtest/gtest.h>

#include <vector>

#include "base/rng.h"
#include "node/room/test_util.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace ringpeer::room {
namespace {

class NullOutbox final : public base::Outbox {
 public:
  std::span<uint8_t> Buffer() noexcept override { return buf_; }
  void Commit(size_t, const base::Endpoint&) noexcept override { ++sent; }
  size_t sent = 0;

 private:
  alignas(8) uint8_t buf_[wire::kDatagramBytesMax];
};

class ProvedSet final : public SourceCheck {
 public:
  bool Proved(const base::Endpoint& a, int64_t) const noexcept override {
    for (const base::Endpoint& p : proved) {
      if (p.ip == a.ip) return true;
    }
    return false;
  }
  std::vector<base::Endpoint> proved;
};

struct Fixture {
  explicit Fixture(AdmissionConfig a, uint32_t rooms_max = 8) {
    RoomHostConfig c;
    c.rooms_max = rooms_max;
    c.swarm.relay = true;
    c.admission = a;
    host = std::make_unique<RoomHost>(c, &storage, &enc, &rng, nullptr);
  }
  // Join: a RoomJoin for `f`'s room (with its genesis when `genesis`) from `from`.
  wire::Verdict Join(const testing::RoomFixture& f, const base::Endpoint& from, int64_t now,
                     bool genesis = true) {
    alignas(8) uint8_t buf[wire::kDatagramBytesMax];
    wire::Encoder e;
    const size_t n = e.RoomJoin(buf, f.room_id, wire::NodeId{}, false,
                                genesis ? std::span<const uint8_t>(f.genesis)
                                        : std::span<const uint8_t>{});
    wire::Message m;
    EXPECT_EQ(wire::Decode(buf, n, &m), wire::Verdict::kOk);
    return host->OnMessage(now, from, m, out);
  }
  MemoryRoomStorage storage;
  wire::Encoder enc;
  base::Rng rng{7};
  NullOutbox out;
  std::unique_ptr<RoomHost> host;
};

base::Endpoint Addr(const char* a) { return *base::Endpoint::Parse(a); }

testing::RoomFixture Room(uint64_t seed) {
  return testing::RoomFixture(seed, ReducerKind::kChat, kStateBytesMaxDefault, 1);
}

TEST(RoomAdmission, ListedServesOnlyConfiguredRoomsAndAdmins) {
  const auto by_id = Room(1), by_admin = Room(2), other = Room(3);
  AdmissionConfig a;
  a.policy = RoomAdmission::kListed;
  a.allowed = {by_id.room_id, by_admin.admin.public_key};
  Fixture fx(a);
  const base::Endpoint m = Addr("10.0.0.1:1");
  fx.Join(other, m, 1);
  fx.Join(by_id, m, 1);
  fx.Join(by_admin, m, 1);
  EXPECT_EQ(fx.host->Find(other.room_id), nullptr);
  EXPECT_NE(fx.host->Find(by_id.room_id), nullptr);
  EXPECT_NE(fx.host->Find(by_admin.room_id), nullptr);
  EXPECT_EQ(fx.host->admission().refused_policy, 1u);
  EXPECT_EQ(fx.host->admission().opened, 2u);
}

TEST(RoomAdmission, OpenNeedsAProvedSourceAndLimitsItPerHour) {
  ProvedSet proved;
  AdmissionConfig a;
  a.sources = &proved;
  a.new_rooms_per_source_per_hour = 3;
  Fixture fx(a, 64);
  const base::Endpoint s = Addr("10.0.0.2:5");
  const auto r0 = Room(10);
  fx.Join(r0, s, 1);
  EXPECT_EQ(fx.host->Find(r0.room_id), nullptr);  // not proved yet: a forged source?
  EXPECT_EQ(fx.host->admission().refused_unproved, 1u);
  proved.proved.push_back(s);
  for (uint64_t i = 0; i < 10; ++i) fx.Join(Room(20 + i), Addr("10.0.0.2:6"), 2);
  EXPECT_EQ(fx.host->rooms_count(), 3u);  // the port does not matter
  EXPECT_EQ(fx.host->admission().refused_rate, 7u);
  // Another hour, three more.
  for (uint64_t i = 0; i < 10; ++i) fx.Join(Room(40 + i), s, 2 + 3'600'000'001);
  EXPECT_EQ(fx.host->rooms_count(), 6u);
}

TEST(RoomAdmission, FullTableDropsNeverWrittenRoomsThenUnloadsIdleOnes) {
  AdmissionConfig a;
  a.new_rooms_per_source_per_hour = 0;
  a.idle_unload_us = 1'000'000;
  Fixture fx(a, 2);
  const base::Endpoint m = Addr("10.0.0.3:1");
  // A written room: its admin's key epoch makes it written (stored, never dropped).
  const auto written = Room(100);
  fx.Join(written, m, 10);
  Swarm* w = fx.host->Find(written.room_id);
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(w->AddKeyEpoch(written.epochs[0], fx.out), Verdict::kOk);
  ASSERT_TRUE(fx.storage.Commit().ok());
  // Squatted rooms: each new one takes the never-written one's place.
  for (uint64_t i = 0; i < 5; ++i) fx.Join(Room(200 + i), m, 20 + static_cast<int64_t>(i));
  EXPECT_NE(fx.host->Find(written.room_id), nullptr);
  EXPECT_EQ(fx.host->rooms_count(), 2u);
  EXPECT_EQ(fx.host->admission().dropped_unwritten, 4u);
  // Make the squatted slot a written room too; then a full table of written rooms that
  // are active refuses, and once one is idle it is unloaded, not deleted.
  const auto second = Room(300);
  fx.Join(second, m, 30);
  ASSERT_NE(fx.host->Find(second.room_id), nullptr);
  ASSERT_EQ(fx.host->Find(second.room_id)->AddKeyEpoch(second.epochs[0], fx.out), Verdict::kOk);
  const auto third = Room(400);
  fx.Join(third, m, 40);
  EXPECT_EQ(fx.host->Find(third.room_id), nullptr);
  EXPECT_EQ(fx.host->admission().refused_full, 1u);
  fx.Join(second, m, 1'000'050);  // keeps `second` active; `written` is idle by now
  fx.Join(third, m, 1'000'060);
  EXPECT_NE(fx.host->Find(third.room_id), nullptr);
  EXPECT_EQ(fx.host->Find(written.room_id), nullptr);
  EXPECT_EQ(fx.host->admission().unloaded_idle, 1u);
  EXPECT_TRUE(fx.storage.Contains(written.room_id));  // kept on disk
  // A join, even without the genesis, loads it again (the never-written `third` makes way).
  fx.Join(written, m, 3'000'000, /*genesis=*/false);
  Swarm* back = fx.host->Find(written.room_id);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->room().epoch(), 0);
  EXPECT_EQ(fx.host->admission().reloaded, 1u);
}

}  // namespace
}  // namespace ringpeer::room
