// Simulator: thousands of dht::Overlay nodes in one process, on a virtual clock, over a
// seeded network that loses, delays, reorders and duplicates datagrams, can partition,
// and churns nodes (crash, restart from a saved table, fresh joins). Each node is a
// one-shard core::NodeCore: the dispatch a shard runs, with its rate limit, ping answers,
// reflection guard and overlay.
//
// Every source of randomness is a base::Rng derived from SimConfig::seed, and events with
// equal times run in insertion order, so a seed replays a run exactly. Nodes are driven
// the way a shard drives its core: every datagram goes to NodeCore::Receive, and Tick runs
// when NodeCore::NextWakeUs() says so.
//
// Crypto: node keys come from wire::KeyPair::FromSeed, but challenge proofs use SimProof
// (a keyed hash, not a signature) unless SimConfig::real_crypto is set: ed25519 costs
// ~43 µs per verification, minutes of CPU at 10,000 nodes. Production and the dht unit
// tests use ed25519. Single-threaded; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "dht/overlay.h"
#include "node/core/node_core.h"
#include "tests/net/memory_network.h"

namespace ringpeer::sim {

struct Measurement;  // sim.cc: what the scripted run measures

struct SimConfig {
  uint32_t nodes = 1000;
  uint64_t seed = 1;
  double loss = 0.0;          // probability a datagram is dropped
  double duplicate = 0.0;     // probability a datagram is delivered twice
  int64_t delay_min_us = 5'000;   // one-way delay, uniform: reorders freely
  int64_t delay_max_us = 60'000;
  double churn = 0.0;         // fraction of nodes replaced during the measurement window
  uint32_t static_nodes = 8;  // bootstrap peers everyone is configured with; never churned
  uint32_t lookups = 1000;
  uint32_t hellos = 500;
  uint32_t size_estimates = 20;
  bool walk_estimates = true; // also run collision (walk) estimates
  uint8_t disjoint_paths = 1;
  bool real_crypto = false;
  int64_t join_window_us = 0;     // 0: nodes / 200 per second
  int64_t settle_us = 30'000'000;
  int64_t measure_us = 60'000'000;
  int64_t drain_us = 30'000'000;
  // Partition: between these times, nodes with odd and even indices cannot talk.
  int64_t partition_start_us = -1;
  int64_t partition_end_us = -1;
  // Hostile nodes: this fraction of the non-static nodes (drawn per node index from the
  // seed, churned replacements too) misbehave in how they answer FindNode and
  // GetProviders; everything else they do (joining, challenges, tables) is honest, so
  // they get into tables. `hostile_mode`: kHostileMix gives each one of the three
  // behaviours (a third each, by a hash of its index); the others give all of them one.
  double hostile = 0.0;
  uint8_t hostile_mode = 0;  // HostileMode
  // false: lookups run without their defences against liars (no strikes, so no re-asking;
  // no audit, no cap on new names per answer, no widening, no request bound, retries
  // hold their slot), to show what they buy. The eviction order and the tries per
  // unvouched name stay.
  bool lookup_defences = true;
  bool verbose = false;
};

// HostileMode: what a hostile node does with a FindNode or GetProviders it receives.
enum HostileMode : uint8_t {
  kHostileMix = 0,      // each hostile node one of the three below
  kHostileDrop = 1,     // no answer
  kHostileFake = 2,     // answers with made-up ids very near the target, at dead addresses
  kHostileCollude = 3,  // answers with the hostile nodes nearest the target, and only them
};

struct Percentiles {
  double p50 = 0, p99 = 0, max = 0;
};

struct SimReport {
  uint64_t seed = 0;
  uint32_t nodes = 0;
  uint32_t lookups_done = 0;
  double lookup_success = 0;
  Percentiles rounds, msgs_per_lookup;
  uint32_t hellos_done = 0;
  double hello_delivery = 0;
  uint32_t hellos_timed_out = 0;   // every attempt went unanswered
  uint32_t hellos_wrong_end = 0;   // answered by a node other than the target
  Percentiles hello_hops;
  double size_error_mean = 0, size_error_sd = 0;  // density, relative to the live count
  Percentiles size_msgs;
  double walk_error_mean = 0, walk_error_sd = 0;  // collision
  Percentiles walk_msgs;
  uint32_t size_estimates_done = 0, walk_estimates_done = 0;
  double size_ci_coverage = 0;  // fraction of density intervals holding the true size
  double walk_ci_coverage = 0;  // the same for the collision (walk) intervals
  uint64_t datagrams = 0;
  uint64_t nodes_replaced = 0;
  double bytes_per_node = 0;    // set by the caller that measured the heap
  double table_size_mean = 0;
  double virtual_s = 0;
  // Against the honest nodes: a lookup succeeds here when its result holds at least 16 of
  // the 20 live honest nodes nearest the target (settled ones, as for lookup_success).
  double hostile = 0;             // the fraction of hostile nodes configured
  double honest_success = 0;      // lookups with >= 16 of the 20 honest nearest
  uint32_t lookups_unfinished = 0;  // started, not done at the end (failures above)
  Percentiles lookup_s;             // the scripted lookups' durations, virtual seconds
  uint32_t lookups_expired = 0;     // ...that ended at their deadline (counted in done)
  double honest_found_mean = 0;   // of those 20, how many a result held, on average
  double results_size = 0;        // contacts in a lookup's result, on average
  double hostile_in_results = 0;  // of them hostile, on average
  uint64_t hostile_nodes = 0;     // live hostile nodes at the end
  uint64_t hostile_dropped = 0;   // requests hostile nodes left unanswered
  uint64_t hostile_faked = 0;     // answers rewritten with made-up ids
  uint64_t hostile_colluded = 0;  // answers rewritten with hostile nodes only

  // KeyValues: the one-line summary ("nodes=... lookup_success=... ...").
  std::string KeyValues() const;
  std::string Text() const;
};

class Simulator {
 public:
  explicit Simulator(const SimConfig& config);
  ~Simulator();
  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  // Run: join, settle, measure (lookups, hellos, size estimates, churn), drain.
  SimReport Run();

  // Pieces for tests that script their own scenario.
  // AddNode: a new node, configured with two of the static peers as bootstrap when
  // `with_bootstrap`. A static node becomes a bootstrap peer for later ones.
  void AddNode(bool with_bootstrap, bool is_static = false);
  void RunUntil(int64_t t_us);
  int64_t now() const noexcept { return now_; }
  size_t size() const noexcept { return nodes_.size(); }
  dht::Overlay& overlay(size_t i);
  // node: node i's core (what a one-shard node runs): its counters, guard, rooms.
  core::NodeCore& node(size_t i);
  // outbox: node i's outbox, for calling its overlay directly; call Kick(i) afterwards so
  // that its timers are scheduled.
  base::Outbox& outbox(size_t i);
  void Kick(size_t i) { Schedule(static_cast<uint32_t>(i)); }
  const base::Endpoint& addr(size_t i) const;
  // Inject: delivers raw bytes to node `to` as if sent from `from` now (forgeries).
  void Inject(const base::Endpoint& from, size_t to, std::span<const uint8_t> bytes);
  bool alive(size_t i) const;
  void Crash(size_t i);
  // Restart: brings a crashed node back with its key, address and saved table, and no
  // bootstrap peers.
  void Restart(size_t i);
  // Events a test can read: the last results each node's overlay reported.
  struct NodeLog;
  NodeLog& log(size_t i);
  uint64_t datagrams() const noexcept { return net_->sent(); }
  // ClosestAlive: the live node nearest `target` (ground truth).
  int ClosestAlive(const dht::NodeId& target, int64_t joined_before_us) const;
  // ClosestHonest: up to `out.size()` live honest nodes nearest `target`, nearest first.
  size_t ClosestHonest(const dht::NodeId& target, int64_t joined_before_us,
                       std::span<uint32_t> out) const;
  // hostile: node i's HostileMode behaviour, 0 when honest.
  uint8_t hostile(size_t i) const;
  // Counts of what hostile nodes did so far.
  uint64_t hostile_dropped() const noexcept { return hostile_dropped_; }
  uint64_t hostile_faked() const noexcept { return hostile_faked_; }
  uint64_t hostile_colluded() const noexcept { return hostile_colluded_; }

 private:
  struct Node;
  class HostileOutbox;
  struct Event {  // a node's wake-up
    int64_t at_us;
    uint64_t seq;
    uint32_t node;
    bool operator>(const Event& o) const {
      return at_us != o.at_us ? at_us > o.at_us : seq > o.seq;
    }
  };
  class NodeEvents;

  void Deliver(uint32_t to, const base::Endpoint& from, std::span<const uint8_t> bytes);
  void Schedule(uint32_t node);
  void Push(int64_t at_us, uint32_t node);
  std::unique_ptr<Node> MakeNode(uint32_t index, const wire::KeyPair& keys, bool bootstrap,
                                 uint64_t incarnation);
  int NodeAt(const base::Endpoint& e) const;
  base::Endpoint AddrOf(uint32_t index) const;
  void Measure(SimReport* report);
  int PickSettled();
  void StartLookup();
  void StartHello();
  void StartSize();
  void ChurnOne();
  uint8_t HostileBehaviour(uint32_t index) const;
  // Rewrite: what hostile node `n` sends instead of `bytes` (its core's answer to the
  // request it is handling); 0 bytes: nothing.
  size_t Rewrite(const Node& n, std::span<const uint8_t> bytes, std::span<uint8_t> out);

  SimConfig config_;
  std::unique_ptr<testing::MemoryNetwork> net_;  // tests/net: the one in-memory network
  base::Rng work_rng_;
  int64_t now_ = 0;
  uint64_t seq_ = 0;
  uint64_t replaced_ = 0;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::unique_ptr<dht::ProofScheme> proof_;
  std::vector<base::Endpoint> statics_;
  // Per simulator, so that two simulators alive at once (the replay test) keep apart.
  std::unique_ptr<Measurement> measure_;
  uint64_t hostile_dropped_ = 0, hostile_faked_ = 0, hostile_colluded_ = 0;
  std::unique_ptr<wire::Encoder> hostile_encoder_;  // re-encodes hostile answers
  friend class NodeEvents;
  friend class HostileOutbox;
};

// The last results a node's overlay reported (tests read these).
struct Simulator::NodeLog {
  std::vector<dht::LookupResult> lookups;  // spans cleared; see closest_ids
  std::vector<std::vector<dht::Contact>> lookup_closest;
  std::vector<std::vector<dht::Contact>> lookup_providers;
  std::vector<dht::RouteResult> routes;
  std::vector<dht::SizeEstimate> sizes;
  uint32_t gossip_received = 0;
  uint32_t routed_received = 0;
  uint32_t announce_acks = 0;
};

// SimProof: the simulator's cheap stand-in for ed25519 challenge proofs: a BLAKE2b of the
// public key and the challenge. Anyone can forge it; it exists only to keep ten thousand
// honest simulated nodes fast.
class SimProof final : public dht::ProofScheme {
 public:
  wire::Signature Sign(const wire::KeyPair& identity,
                       const wire::Hash256& challenge) const noexcept override;
  bool Verify(const wire::PublicKey& key, const wire::Hash256& challenge,
              const wire::Signature& sig) const noexcept override;
};

}  // namespace ringpeer::sim
