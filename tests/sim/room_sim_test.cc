// Goal: the room simulator's promises hold under faults, replay exactly, and its checkers
// fire. Method: short randomized runs of tests/sim/room_sim (30 whole nodes, 4 rooms, two
// simulated minutes of posts with crashes, partitions, disk faults, forgeries and an
// eviction per room, then a minute to heal) over several seeds; a replay; a run whose
// memory limit is set below what a relay needs. The long run (20 seeds x 10 simulated
// minutes, 60 nodes, 10 rooms) is tests/sim/long_run.sh; the planted bugs are the
// sim_planted_* tests (release builds).
#include "tests/sim/room_sim.h"

#include <string>

#include <gtest/gtest.h>

#include "base/block_pool.h"

namespace ringpeer::sim {
namespace {

RoomSimConfig Short(uint64_t seed) {
  RoomSimConfig c;
  c.seed = seed;
  c.nodes = 30;
  c.rooms = 4;
  c.run_us = 120'000'000;
  c.heal_us = 60'000'000;
  c.partition_mean_us = 20'000'000;
  return c;
}

// RunShort: one short run (writer_us: RoomSimConfig::writer_us), checked for what every
// short run must hold; a failure names the command that replays it.
RoomSimReport RunShort(uint64_t seed, int64_t writer_us) {
  RoomSimConfig c = Short(seed);
  c.writer_us = writer_us;
  RoomSimulator sim(c);
  const RoomSimReport r = sim.Run();
  SCOPED_TRACE(r.Text());
  EXPECT_TRUE(r.ok()) << "replay: ringpeer-sim --no-dht --rooms 4 --nodes 30 --seconds 120 "
                         "--heal-s 60 --partition-mean-s 20"
                      << (writer_us > 0 ? " --writer-ms " + std::to_string(writer_us / 1000) : "")
                      << " --seed " << seed;
  EXPECT_EQ(r.acked_lost, 0u);
  EXPECT_EQ(r.forged_accepted, 0u);
  EXPECT_EQ(r.evicted_writes_accepted, 0u);
  EXPECT_EQ(r.diverged, 0u);
  EXPECT_EQ(r.converged, 1);
  return r;
}

TEST(RoomSim, ShortRunsHoldEveryCheckerOnEverySeed) {
  RoomSimReport total;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    const RoomSimReport r = RunShort(seed, 0);
    SCOPED_TRACE(r.Text());
    EXPECT_EQ(r.evicted_reads, 0u);
    EXPECT_GT(r.posts, 100u);
    EXPECT_GT(r.acks_received, 100u);
    total.crashes += r.crashes;
    total.partitions += r.partitions;
    total.disk_faults += r.disk_faults;
    total.rotations += r.rotations;
    total.late_joins += r.late_joins;
    total.checkpoints_loaded += r.checkpoints_loaded;
    total.forged_sent += r.forged_sent;
    total.evicted_writes_sent += r.evicted_writes_sent;
  }
  // The faults and the room work really happened (a run without them proves nothing).
  EXPECT_GT(total.crashes, 6u);
  EXPECT_GT(total.partitions, 3u);
  EXPECT_GT(total.disk_faults, 6u);
  EXPECT_EQ(total.rotations, 6u * 4u);  // one eviction per room
  EXPECT_EQ(total.late_joins, 6u * 4u);
  EXPECT_GT(total.checkpoints_loaded, 20u);
  EXPECT_GT(total.forged_sent, 100u);
  EXPECT_GT(total.evicted_writes_sent, 100u);
  // Room logs would grow into base::BlockPool, out of the memory checker's sight: the
  // simulator reserves no pool range (tests/sim/heap.cc), so their blocks came from the
  // heap, where it counts them.
  const base::BlockPool::Stats pool = base::BlockPool::Global().stats();
  EXPECT_EQ(pool.space, 0u);
  EXPECT_EQ(pool.takes, 0u);
  EXPECT_GT(pool.fallbacks, 0u);
}

// The relays' storage as the room store's writer thread runs it (issue 15, item 2): one
// batch in flight, durable up to 5 ms later, acks held for their batch, the batch in
// flight lost in a crash. Nothing acked is lost, and the rooms still converge.
TEST(RoomSim, ShortRunsWithTheStoreWriterThreadHoldEveryChecker) {
  uint64_t crashes = 0, acks = 0;
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    const RoomSimReport r = RunShort(seed, 5'000);
    crashes += r.crashes;
    acks += r.acks_received;
  }
  EXPECT_GT(crashes, 3u);
  EXPECT_GT(acks, 300u);
}

TEST(RoomSim, ReplaysExactlyFromItsSeed) {
  RoomSimReport a, b;
  {
    RoomSimulator sim(Short(3));
    a = sim.Run();
  }
  {
    RoomSimulator sim(Short(3));
    b = sim.Run();
  }
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.deliveries, b.deliveries);
  EXPECT_EQ(a.acks_sent, b.acks_sent);
  EXPECT_EQ(a.KeyValues(), b.KeyValues());
  RoomSimulator other(Short(4));
  EXPECT_NE(other.Run().steps, a.steps);  // the seed matters
}

TEST(RoomSim, MemoryCheckerNamesTheNodeAndTheStep) {
  RoomSimConfig c = Short(2);
  c.relay_bytes_max = 256 << 10;  // a relay needs more than this once rooms fill up
  RoomSimReport r;
  {
    RoomSimulator sim(c);  // one simulator at a time: heap accounting is per process
    r = sim.Run();
  }
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.memory_over, 1u);
  EXPECT_NE(r.failure.find("memory: node"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("(relay)"), std::string::npos) << r.failure;
  EXPECT_GT(r.failed_step, 0u);
  EXPECT_LT(r.seconds_simulated, 180.0);  // it stopped there, not at the end
  // The same seed stops at the same step.
  RoomSimulator again(c);
  EXPECT_EQ(again.Run().failed_step, r.failed_step);
}

}  // namespace
}  // namespace ringpeer::sim
