// Lookup: one iterative Kademlia lookup as a pure state machine (no I/O, no clock).
//
// The Overlay asks Next() for a candidate to query, sends the request, and reports the
// answer (OnReply) or the timeout (OnTimeout). The lookup keeps a shortlist ordered by
// XOR distance to the target; it ends when, on every path, the result_size nearest
// candidates that did not fail have answered and nothing is in flight.
//
// Disjoint paths (S/Kademlia): with paths = d, the seeds are dealt round-robin to d paths
// and every node learned is owned by the path that learned it; a node is queried by one
// path only, each path runs its own alpha requests, and the lookup ends when all paths
// do. An adversary on one path then cannot steer the others.
//
// Generations: seeds are generation 1; a node learned from a generation-g answer is g+1.
// The generation of the nearest result is the lookup's "rounds" (sequential round trips).
// Owner-shard-local; not thread-safe. Storage is fixed at construction (announcement
// tokens: at the first kAnnounce Start).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "dht/routing_table.h"

namespace ringpeer::dht {

enum class LookupKind : uint8_t {
  kFindNode,      // the caller's find_node
  kGetProviders,  // collects providers of the target key
  kAnnounce,      // finds the k nearest, then announces to them with their tokens
  kRefresh,       // joins or refreshes a bucket; results only feed the table
  kSizeSample,    // a random target whose nearest ids estimate the network's density
};

struct LookupParams {
  uint8_t alpha = 3;          // requests in flight per path
  uint8_t paths = 1;          // disjoint paths (1 = plain Kademlia)
  uint8_t result_size = 20;   // k: how many nearest nodes must answer
  uint8_t attempts_max = 3;   // tries per candidate before it counts as failed (lossy links)
  // Tries for a candidate that is among the `nearest_count` nearest not-failed candidates
  // of its path when it times out. The nearest few decide whether a lookup succeeds: at 5%
  // loss each way a try fails ~10% of the time, so 3 tries miss the nearest node about
  // once in a thousand lookups, and 5 tries once in 100,000. Far candidates keep
  // attempts_max, so dead nodes cost little.
  uint8_t attempts_nearest_max = 5;
  uint8_t nearest_count = 3;
};

class Lookup {
 public:
  enum class State : uint8_t { kFree, kWaiting, kInFlight, kAnswered, kFailed };
  struct Candidate {
    Contact contact;
    State state = State::kFree;
    uint8_t path = 0;
    uint8_t generation = 0;
    uint8_t attempts = 0;
    bool has_token = false;  // its answer carried a token (kept only for kAnnounce: token())
  };
  using Token = std::array<uint8_t, 16>;
  // Paths beyond this are not useful (S/Kademlia uses up to 8 with k = 20).
  static constexpr uint8_t kPathsMax = 8;

  // REQUIRES: candidates_max >= 8 and <= 255.
  explicit Lookup(uint32_t candidates_max);
  Lookup(const Lookup&) = delete;
  Lookup& operator=(const Lookup&) = delete;

  // Start: resets the lookup for `target` from `seeds` (any order).
  void Start(const NodeId& target, LookupKind kind, const LookupParams& params,
             std::span<const Contact> seeds) noexcept;
  // Next: a candidate index to query now (marked in flight), or -1 when none may be sent.
  int Next() noexcept;
  // OnReply: candidate `c` answered with `nodes`; merges them into the shortlist.
  void OnReply(int c, std::span<const Contact> nodes) noexcept;
  // OnTimeout: `c` did not answer. True: try it again (it stays in flight); false: failed.
  bool OnTimeout(int c) noexcept;
  // Abandon: `c` will not be retried (no request slot); counts as failed.
  void Abandon(int c) noexcept;
  bool Done() const noexcept;
  // Results: the answered candidates nearest the target, nearest first, up to result_size.
  size_t Results(std::span<Contact> out) const noexcept;
  // ResultIndices: as Results, but candidate indices (to read tokens).
  size_t ResultIndices(std::span<int> out) const noexcept;
  uint8_t rounds() const noexcept;

  Candidate& candidate(int c) noexcept { return cands_[static_cast<size_t>(c)]; }
  // SetToken: candidate `c` answered with `token` (a get_providers answer). Kept for an
  // announcement only: the token lets it store a record there.
  void SetToken(int c, std::span<const uint8_t, 16> token) noexcept;
  // token: the token `c` gave, or null (none, or not an announcement).
  const Token* token(int c) const noexcept;
  const NodeId& target() const noexcept { return target_; }
  LookupKind kind() const noexcept { return kind_; }
  const LookupParams& params() const noexcept { return params_; }
  uint32_t requests_sent() const noexcept { return requests_sent_; }
  uint32_t replies_received() const noexcept { return replies_received_; }

 private:
  // Merge: adds `c` on `path` unless known; may evict the farthest idle candidate.
  void Merge(const Contact& c, uint8_t path, uint8_t generation) noexcept;
  bool PathDone(uint8_t path) const noexcept;
  // RankOnPath: how many not-failed candidates of c's path are nearer the target than c.
  uint32_t RankOnPath(int c) const noexcept;
  int NextOnPath(uint8_t path) const noexcept;

  std::vector<Candidate> cands_;
  // One token per candidate slot, for announcements only: allocated by the first kAnnounce
  // Start and kept (a lookup that never announces holds none; 16 of a candidate's 74 bytes).
  std::unique_ptr<Token[]> tokens_;
  std::vector<uint8_t> order_;  // candidate indices, nearest first
  NodeId target_{};
  LookupKind kind_ = LookupKind::kFindNode;
  LookupParams params_;
  uint8_t in_flight_[kPathsMax] = {};
  uint8_t next_path_ = 0;
  uint32_t requests_sent_ = 0;
  uint32_t replies_received_ = 0;
};

}  // namespace ringpeer::dht
