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
  // Only names that two answers gave (or seeds) get them: a made-up id is named by the
  // one liar that made it up, and a name whose source already named a dead one gets one
  // try.
  uint8_t attempts_nearest_max = 5;
  uint8_t nearest_count = 3;
  // Strikes before a responder is distrusted: a strike is a node it named that then never
  // answered (every try timed out). An honest node names a dead one only when churn beat
  // its table, and at 5% loss a live one fails all its tries about once in 1,000; a node
  // that makes up ids near the target (or names colluders that drop requests) collects
  // strikes within its first few names. A distrusted responder is left out of the result
  // and of the k that must answer, and the names only it gave that are not queried yet
  // are dropped. 0: never distrust.
  uint8_t strikes_max = 2;
  // New names one answer may add to the shortlist, nearest first (0: all). A liar's
  // answer of made-up ids nearer than every real node then takes this many slots, not
  // the whole shortlist, while the names it pushed out are still to be learned; an honest
  // answer's nearest new names are the ones that move a lookup on.
  uint8_t names_per_reply_max = 10;
  // Audit of the answers near the target (the caller's lookups only): a responder among
  // the result_size nearest trusted answers whose farthest name is more than
  // `audit_factor` times as far from the target as both theirs typically are (the median)
  // and itself is distrusted. An honest node near the target names the nodes nearest it,
  // as its neighbours do; one that names only its accomplices (a twelfth of the network,
  // say) reaches ~12 times as far for as many names. A quarter of colluders reach only ~4
  // times as far, and pass. 0: no audit.
  uint8_t audit_factor = 6;
  // A lookup that caught liars assumes it did not catch them all: each distrusted
  // responder widens the set that must answer (and the result) by this many, up to
  // `liar_extra_max`. A lookup that caught none costs what it did before. Size samples
  // keep k (their estimator reads the k nearest).
  uint8_t liar_extra = 2;
  uint8_t liar_extra_max = 8;
  // Requests (retries included) after which a lookup ends with what answered. A lookup
  // among liars can otherwise go on for minutes: a failed made-up id leaves the shortlist
  // (so that it keeps no real one out) and the next liar names it again. An honest lookup
  // sends ~25 (k = 20 at 5% loss). 0: no bound.
  uint16_t requests_max = 256;
  // A candidate that timed out twice leaves its alpha slot to the next one while it is
  // tried again: its tries go on, but no longer hold the lookup up (see kTriesHoldingSlot).
  bool retry_frees_slot = true;
  // A name only one answer gave counts against that answer's sender once it was silent
  // twice (kTriesHoldingSlot), not after its last try; a late answer takes the strike back.
  // false: the strike comes when every try failed.
  bool early_strike = true;
  // A first try still unanswered past the overlay's slow mark (a few smoothed round trips,
  // see Overlay::SlowMarkUs) leaves its alpha slot to the next candidate (OnSlow); its
  // answer, when it comes, counts as any other. At most alpha per path sit beside. A node
  // that drops requests otherwise held a slot for a whole request timeout, and among a
  // quarter of droppers most lookups waited on one (tests/sim/README: 15-20 s medians).
  bool slow_frees_slot = true;
  // A candidate among the Window() nearest that failed every try widens the set that must
  // answer (and the result) by this many, within liar_extra_max, as a liar does: among a
  // quarter of hostile nodes the 20 nearest hold about 15 honest ones, so a k-sized result
  // missed the 16 honest of 20 half the time. 0: silence widens nothing.
  uint8_t silent_extra = 2;
};

class Lookup {
 public:
  enum class State : uint8_t { kFree, kWaiting, kInFlight, kAnswered, kFailed };
  static constexpr uint8_t kNoSource = 0xFF;  // a seed (candidates_max <= 255)
  struct Candidate {
    Contact contact;
    State state = State::kFree;
    uint8_t path = 0;
    uint8_t generation = 0;
    uint8_t attempts = 0;
    bool has_token = false;  // its answer carried a token (kept only for kAnnounce: token())
    bool distrusted = false;  // see LookupParams::strikes_max
    uint8_t strikes = 0;      // names it gave that never answered
    uint8_t source = kNoSource;  // the candidate whose answer named it first
    uint16_t far_log = 0;     // 8 x log2 of its farthest name's distance; 0: none yet
    bool requery = false;     // answered, to be asked again (see Distrust)
    bool requeried = false;   // asked again once already
    uint8_t vouches = 1;      // answers that named it (seeds: 1)
    bool struck = false;      // its silence already counts against its source (OnTimeout)
    bool beside = false;      // in flight beside its path's alpha slots (OnSlow, retries)
  };
  using Token = std::array<uint8_t, 16>;
  // Paths beyond this are not useful (S/Kademlia uses up to 8 with k = 20).
  static constexpr uint8_t kPathsMax = 8;
  // Tries of a candidate that hold one of its path's alpha slots (retry_frees_slot).
  static constexpr uint8_t kTriesHoldingSlot = 2;

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
  // OnSlow: `c`'s first try passed the slow mark unanswered: it leaves its alpha slot and
  // stays in flight (slow_frees_slot; at most alpha beside per path). True: it moved.
  bool OnSlow(int c) noexcept;
  // Abandon: `c` will not be retried (no request slot); counts as failed.
  void Abandon(int c) noexcept;
  bool Done() const noexcept;
  // Results: the answered candidates nearest the target, nearest first, up to result_size.
  size_t Results(std::span<Contact> out) const noexcept;
  // ResultIndices: as Results, but candidate indices (to read tokens).
  size_t ResultIndices(std::span<int> out) const noexcept;
  uint8_t rounds() const noexcept;

  Candidate& candidate(int c) noexcept { return cands_[static_cast<size_t>(c)]; }
  const Candidate& candidate(int c) const noexcept { return cands_[static_cast<size_t>(c)]; }
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
  uint8_t liars() const noexcept { return liars_; }
  uint8_t silent() const noexcept { return silent_; }  // distinct (see silent_ids_)

 private:
  // Merge: adds `c` on `path` unless known (then it counts a vouch), named by candidate
  // `source`; may evict a failed candidate or the farthest idle one. Returns whether it
  // was added.
  bool Merge(const Contact& c, uint8_t path, uint8_t generation, uint8_t source) noexcept;
  // Strike: a name `source` gave never answered; distrusts it at strikes_max.
  void Strike(uint8_t source) noexcept;
  // CountSilent: a near candidate failed every try; counts its id once per lookup.
  void CountSilent(const NodeId& id) noexcept;
  // Distrust: leaves `c` out of the result, drops the names only it gave that are not
  // asked yet, and asks the nearest trusted answers of its path again (once each): the
  // names its answer pushed out of the shortlist are in theirs.
  void Distrust(uint8_t c) noexcept;
  // Audit: distrusts the near answers whose names reach too far (audit_factor).
  void Audit() noexcept;
  bool OutOfRequests() const noexcept {
    return params_.requests_max != 0 && requests_sent_ >= params_.requests_max;
  }
  // Window: how many nearest trusted candidates must answer: k, plus liar_extra per liar
  // and silent_extra per silent near candidate, within liar_extra_max.
  uint32_t Window() const noexcept;
  // Counts: a candidate that stands for a live, honest node (not failed, not distrusted).
  static bool Counts(const Candidate& c) noexcept {
    return c.state != State::kFailed && !c.distrusted;
  }
  bool PathDone(uint8_t path) const noexcept;
  // MoveBeside: `cand` leaves its path's alpha slot and goes on beside it.
  void MoveBeside(Candidate& cand) noexcept;
  // Land: a request of `cand` ended (answered or given up).
  void Land(Candidate& cand) noexcept;
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
  uint8_t in_flight_[kPathsMax] = {};  // first tries in flight, per path (<= alpha)
  uint8_t retrying_[kPathsMax] = {};   // candidates in flight beside the slots (`beside`)
  uint8_t next_path_ = 0;
  uint8_t liars_ = 0;  // responders distrusted in this lookup
  uint8_t silent_ = 0;  // distinct near candidates that failed every try
  // The first silent_ids_ of them (an id's first 8 bytes): a failed name leaves a full
  // shortlist first and comes back with the next answer that names it; it counts once.
  static constexpr size_t kSilentKept = 8;
  uint64_t silent_ids_[kSilentKept] = {};
  uint32_t requests_sent_ = 0;
  uint32_t replies_received_ = 0;
};

}  // namespace ringpeer::dht
