// RoomSimulator: relays and room members as whole nodes (core::NodeCore, the dispatch every
// shard runs) on one virtual clock, over the seeded in-memory network, with crashes and
// restarts, disk faults, partitions, forgeries and key rotations, and checkers after every
// step (issue 13; TigerBeetle's VOPR is the model).
//
// A step is one delivered datagram, one node tick, or one fault (a crash, a restart, a
// partition or its end, a disk fault or its end, a forged datagram). After each step the
// simulator checks the node it touched, and the events that step raised:
//
//   acked_lost              a relay's RoomAck names an update its storage has not made
//                           durable, or an update it acked is missing from its storage after
//                           a crash and restart (or at the end);
//   diverged                two members of a room hold the same heads with different state
//                           hashes (checked whenever a member's state changes);
//   forged_accepted         an update the simulator forged (a wrong signer, or a mutated
//                           record) entered any node's log;
//   evicted_writes_accepted an update signed with an evicted member's old write key after
//                           its rotation point entered the log of a node that knew the
//                           rotation, or is still in any log at the end (a node that had
//                           not heard of the rotation yet cannot refuse it, and must drop
//                           it when the rotation reaches it);
//   evicted_reads           the evicted member's node decrypted an update of an epoch that
//                           no longer grants it;
//   memory                  a node's heap (every allocation made while the simulator ran
//                           that node, counted by tests/sim/heap.h) passed its limit.
//
// At the end the faults stop, crashed nodes restart, the network heals, and after
// `heal_us` every room's live relays and members must hold the same heads and its members
// the same state hash (`converged`). The first failure stops the run and names the seed
// and the step; the same seed replays it exactly.
//
// One RoomSimulator may be alive at a time in a process (heap accounting is by node index,
// per process). Crypto is real (ed25519 signatures on every update): a room sim costs ~43 us per update
// per node that verifies it. Overlay challenge proofs use SimProof (see sim.h).
// Single-threaded; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <queue>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "base/rng.h"
#include "node/core/node_core.h"
#include "node/room/records.h"
#include "node/room/room.h"
#include "tests/net/memory_network.h"

namespace ringpeer::sim {

struct RoomSimConfig {
  uint64_t seed = 1;
  uint32_t nodes = 60;   // relays and member nodes together
  uint32_t relays = 0;   // 0: a sixth of the nodes, at least 3
  uint32_t rooms = 10;
  uint32_t members_per_room = 5;  // granted at creation; the last one joins late
  int64_t run_us = 600'000'000;   // the part with posts and faults
  int64_t heal_us = 90'000'000;   // then: faults stop, everyone restarts, the network heals
  double loss = 0.02;
  double duplicate = 0.01;
  int64_t delay_min_us = 5'000;
  int64_t delay_max_us = 60'000;
  int64_t post_mean_us = 4'000'000;       // each joined member posts this often (mean)
  int64_t crash_mean_us = 15'000'000;     // some node crashes this often (network-wide)
  int64_t down_min_us = 500'000, down_max_us = 20'000'000;
  int64_t partition_mean_us = 60'000'000;
  int64_t partition_min_us = 2'000'000, partition_max_us = 20'000'000;
  int64_t disk_fault_mean_us = 20'000'000;
  int64_t disk_fault_min_us = 200'000, disk_fault_max_us = 5'000'000;
  int64_t forgery_mean_us = 1'000'000;
  int64_t attack_mean_us = 3'000'000;     // the evicted member's writes, after rotation
  bool rotations = true;  // rooms of 3+ members evict one in the middle half of the run
  uint32_t checkpoint_every = 40;
  // Members per room that make checkpoints (the first ones). Several writers that make
  // checkpoints at once make concurrent checkpoints, which the room code does not
  // reconcile yet (see README.md); 1 is the deployment this run checks.
  uint32_t checkpointers = 1;
  // Relays' storage as the room store's writer thread runs it (issue 15, item 2): one
  // batch in flight, durable a uniform 0.5..writer_us later (noticed at the relay's next
  // step, as the writer's doorbell wakes a shard); the acks wait for their batch, and a
  // crash loses the batch in flight. 0: commits complete at once, as before.
  int64_t writer_us = 0;
  // Memory limits per node (see README.md for how they were set).
  int64_t relay_bytes_max = 48ll << 20;
  int64_t member_bytes_max = 24ll << 20;
  // Test-only: which planted bug to switch on (0: none). Only `ringpeer-sim-planted` has
  // them (node/room/planted.h); elsewhere a nonzero value is refused.
  int planted = 0;
  bool verbose = false;
};

struct RoomSimReport {
  uint64_t seed = 0;
  uint32_t nodes = 0, relays = 0, rooms = 0;
  double seconds_simulated = 0;
  uint64_t steps = 0, deliveries = 0, ticks = 0;
  uint64_t crashes = 0, partitions = 0, disk_faults = 0;
  uint64_t posts = 0, posts_busy = 0, acks_sent = 0, acks_received = 0;
  uint64_t rotations = 0, late_joins = 0, checkpoints_loaded = 0, syncs = 0;
  uint64_t forged_sent = 0, evicted_writes_sent = 0;
  // Evicted writes a node took before it knew the rotation (allowed; dropped once it knows).
  uint64_t evicted_writes_before_rotation_known = 0;
  uint64_t acked_lost = 0, diverged = 0, forged_accepted = 0, evicted_writes_accepted = 0;
  uint64_t evicted_reads = 0, memory_over = 0;
  int converged = 0;
  int64_t relay_bytes_peak = 0, member_bytes_peak = 0;
  uint64_t datagrams = 0;
  std::string failure;      // empty: every checker held
  uint64_t failed_step = 0;

  bool ok() const { return failure.empty(); }
  std::string Text() const;
  std::string KeyValues() const;  // the one-line summary, for scripts
};

class RoomSimulator {
 public:
  explicit RoomSimulator(const RoomSimConfig& config);
  ~RoomSimulator();
  RoomSimulator(const RoomSimulator&) = delete;
  RoomSimulator& operator=(const RoomSimulator&) = delete;

  // Run: the whole scenario; stops at the first failing checker.
  RoomSimReport Run();

 private:
  struct Node;
  struct Slot;
  struct SimRoom;
  class Listener;
  class Tap;
  class Disk;
  enum class Act : uint8_t {
    kJoin, kPost, kCrash, kRestart, kPartition, kHeal, kDiskFault, kDiskClear, kForge,
    kRotate, kAttack, kEnd,
  };
  struct Work {
    int64_t at_us;
    uint64_t seq;
    Act act;
    uint32_t arg;
    bool operator>(const Work& o) const {
      return at_us != o.at_us ? at_us > o.at_us : seq > o.seq;
    }
  };
  struct Wake {
    int64_t at_us;
    uint64_t seq;
    uint32_t node;
    bool operator>(const Wake& o) const {
      return at_us != o.at_us ? at_us > o.at_us : seq > o.seq;
    }
  };

  void Build();
  std::unique_ptr<core::NodeCore> MakeCore(Node& n);
  // CommitStep: a relay's durability after each of its steps (see writer_us).
  void CommitStep(Node& n);
  base::Endpoint AddrOf(uint32_t index) const;
  int NodeAt(const base::Endpoint& e) const;
  void Schedule(uint32_t node);
  void Plan(int64_t at_us, Act act, uint32_t arg = 0);
  int64_t Exp(int64_t mean_us);
  int64_t Between(int64_t lo, int64_t hi);

  void Deliver(uint32_t to, const base::Endpoint& from, std::span<const uint8_t> bytes);
  void TickNode(uint32_t node);
  void AfterStep(uint32_t node);
  void Do(const Work& w);
  bool RoomCommand(Node& n, core::ControlCommand& cmd);
  void JoinSlot(Slot& s);
  void Post(Slot& s);
  void Crash(uint32_t node);
  void Restart(uint32_t node);
  void StartPartition();
  void StartDiskFault();
  void ClearDiskFault(Node& n);
  void Forge();
  void Rotate(SimRoom& r);
  void Attack(SimRoom& r);
  void EndFaults();
  void CheckConvergence();
  void DumpRoom(const SimRoom& r);  // --verbose: what each node holds of a room
  void CheckAcked(Node& n, const char* when);
  void CheckState(Node& n);
  void Fail(std::string what);
  bool failed() const { return !report_.failure.empty(); }
  room::Swarm* SwarmOf(Node& n, const SimRoom& r);
  std::vector<uint32_t> Serving(const SimRoom& r);

  // Listener hooks.
  void OnApplied(Node& n, room::Swarm& swarm, const room::Hash256& id);
  void OnAckSent(Node& n, const room::Hash256& room, const room::Hash256& update);
  void OnPublishSeen(std::span<const uint8_t> datagram);

  RoomSimConfig config_;
  base::Rng rng_;
  base::Rng writer_rng_;  // writer_us latencies: apart, so the faults keep their schedule
  std::unique_ptr<testing::MemoryNetwork> net_;
  std::unique_ptr<dht::ProofScheme> proof_;
  int64_t now_ = 0;
  uint64_t seq_ = 0;
  bool faults_on_ = true;
  bool posting_on_ = true;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<SimRoom>> rooms_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<base::Endpoint> statics_;
  std::priority_queue<Work, std::vector<Work>, std::greater<Work>> work_;
  std::priority_queue<Wake, std::vector<Wake>, std::greater<Wake>> wakes_;
  // Partition: while set, nodes on different sides cannot talk.
  bool partitioned_ = false;
  std::vector<uint8_t> side_;
  // What the checkers compare against.
  absl::flat_hash_set<room::Hash256, room::IdHash> forged_;
  absl::flat_hash_set<room::Hash256, room::IdHash> attacker_;
  // (room, heads digest) -> state hash, from members holding those heads.
  struct HeldState {
    room::Hash256 state{};
    room::Hash256 checkpoint{};  // the checkpoint its holder had in effect
    uint32_t node = 0;
  };
  absl::flat_hash_map<room::Hash256, HeldState, room::IdHash> states_;
  std::vector<std::vector<uint8_t>> captured_;  // RoomPublish datagrams, for mutation
  size_t captured_next_ = 0;
  RoomSimReport report_;
};

}  // namespace ringpeer::sim
