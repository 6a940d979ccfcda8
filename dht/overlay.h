// Overlay: the node's view of its peers and the DHT built on them — who exists, who
// proved their id, the k-bucket routing table, iterative lookups, provider records, routed
// messages (hello), network-size estimates and flood gossip.
//
// Sans-I/O (DESIGN.md section 5): it takes (now, from, verified message), and writes what
// it wants sent to an Outbox. It has no sockets, clocks, threads or globals; randomness
// (txids, challenges, tokens) comes from an injected Rng. The node's owner shard and the
// simulator drive this same code, the same way:
//   - every verified datagram except Ping goes to OnMessage (Ping: PingResponder, then
//     OnPingSeen), on the shard that owns the overlay;
//   - Tick(now) runs timers; NextWakeUs() says when it next has work (call Tick then, or
//     on a fixed period, whichever is sooner);
//   - requests (FindNode, GetProviders, Announce, Route/Hello, EstimateSize, Broadcast,
//     RequestDump) start work whose results arrive through OverlayEvents.
// Other shards answer FindNode from a TableSnapshot the owner publishes (see
// dht/snapshot.h).
//
// Rules it keeps:
//  - A peer is verified only after it answered a ping carrying our random challenge with
//    a signature by the key whose BLAKE2b-256 is its id.
//  - Peer exchange advertises only verified peers heard from within kLiveWindowUs: never
//    addresses we only heard about second-hand.
//  - Bootstrap peers are pinned: they are retried with back-off and never forgotten.
//  - Work a stranger can cause is bounded: new peers are challenged from a token bucket,
//    the table has a fixed size, and a pong is checked against our pending request
//    (txid and address) before its signature is verified.
//
// Owner-shard-local; not thread-safe. Nothing allocates after construction, except the
// control-path calls that say so (Snapshot, EstimateSizeByWalks, SavedTable) and the
// routing table's splits (a bucket's storage, at most buckets_max - 1 times; see
// dht/routing_table.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/endpoint.h"
#include "base/rng.h"
#include "base/token_bucket.h"
#include "dht/lookup.h"
#include "base/outbox.h"
#include "dht/proof.h"
#include "dht/providers.h"
#include "dht/routing_table.h"
#include "base/seen_set.h"
#include "dht/size_estimate.h"
#include "dht/snapshot.h"
#include "dht/table_file.h"
#include "wire/crypto.h"
#include "wire/encode.h"
#include "wire/message.h"
#include "wire/verdict.h"

namespace ringpeer::dht {

inline constexpr int64_t kSecondUs = 1'000'000;
// A verified peer heard from within this window is "live" and may be advertised.
inline constexpr int64_t kLiveWindowUs = 30 * kSecondUs;
// How often a live peer is pinged (no challenge, no signature).
inline constexpr int64_t kPingIntervalUs = 10 * kSecondUs;
// How long we wait for a pong before counting a failure.
inline constexpr int64_t kRequestTimeoutUs = 2 * kSecondUs;
// Consecutive failures after which a peer is forgotten (bootstrap peers: demoted).
inline constexpr uint32_t kFailuresMax = 3;
// How often each verified peer is sent our live peers.
inline constexpr int64_t kPeersIntervalUs = 30 * kSecondUs;
// Bootstrap retry back-off: first retry, and the cap.
inline constexpr int64_t kBootstrapRetryUs = 1 * kSecondUs;
inline constexpr int64_t kBootstrapRetryMaxUs = 30 * kSecondUs;
// New peers challenged per second (each costs us a ~43 µs verification when it answers).
inline constexpr uint32_t kNewPeerChallengesPerSecond = 200;
inline constexpr uint32_t kNewPeerChallengeBurst = 400;

// DHT request timeout: one round trip on any sane path, with margin; lookups retry.
inline constexpr int64_t kDhtRequestTimeoutUs = 1 * kSecondUs;
// A lookup still running this long ends with what answered (OverlayConfig's default).
inline constexpr int64_t kLookupDurationMaxUs = 60 * kSecondUs;
// A routed message's origin waits this long for the reply before trying again.
inline constexpr int64_t kRouteTimeoutUs = 3 * kSecondUs;
// Tries a routed message gets from its origin (each picks among more next hops).
inline constexpr uint8_t kRouteAttemptsMax = 5;
// Next hops a node tries for one routed message: each hop acknowledges what it receives,
// and a hop that stays silent for route_hop_timeout_us is counted as failed (and probed)
// and the message goes to the next-nearest node instead. Under churn a table holds dead
// entries until probed out; without this, every route through one was lost.
inline constexpr uint8_t kRouteHopTriesMax = 3;
// A routed datagram as this overlay encodes it (each hop encodes it again), at most: the
// header, the Route fields with an IPv6 origin address, and kRoutePayloadBytesMax of
// payload (Overlay.LargestRouteFitsAHopSlot checks it). A hop slot keeps this much, not a
// whole kDatagramBytesMax datagram; a larger one would be sent untracked.
inline constexpr size_t kRouteDatagramBytesMax = 720;
// Hops a routed message may take: log2 of a billion nodes, with margin.
inline constexpr uint8_t kRouteTtlDefault = 24;
// Nodes a lookup asks each peer for: k. With fewer, the far end of the k nearest is
// rarely in anyone's answer and lookups miss it (measured: 14% of the 20 nearest missing
// at 10 per answer). The answer needs ~1,130 bytes, so requests are padded to ~380.
inline constexpr uint8_t kLookupReplyNodes = 20;
// Table dumps answered per second (each costs up to ~30 datagrams).
inline constexpr uint32_t kDumpsPerSecond = 5;
// How often provider records are expired and token secrets checked for rotation.
inline constexpr int64_t kHousekeepingUs = 10 * kSecondUs;
// Refresh lookups a join or periodic refresh runs for sparse buckets (one at a time).
inline constexpr uint32_t kRefreshLookupsMax = 16;

// Routed-message kinds (Route.kind).
enum class RouteKind : uint8_t { kData = 0, kHello = 1 };

struct OverlayEvents;

struct OverlayConfig {
  uint8_t shard_index = 0;                // low byte of our txids: replies come back to us
  uint32_t peers_max = 1024;              // contacts (challenge/liveness) table, fixed
  std::vector<base::Endpoint> bootstrap;  // pinned peers
  // DHT sizing (the simulator uses small values; see tests/sim). Every pool below is
  // allocated once, at construction, except: the routing table's buckets (when it splits
  // into them; their spares when first used), and the lookup slots' and the routes' and
  // hops' storage, held while in use (see lookups_max and route_payloads_).
  RoutingConfig routing;
  uint32_t rpcs_max = 256;             // DHT requests in flight
  uint32_t lookups_max = 16;           // concurrent lookups (a slot's storage, ~5 KB
                                       // with 64 candidates, is held while it is in use:
                                       // allocated at a lookup's start, freed by
                                       // housekeeping once idle for kHousekeepingUs)
  uint32_t lookup_candidates_max = 64; // shortlist per lookup (48 left too few free
                                       // slots beside a window widened among liars)
  LookupParams lookup;                 // alpha, disjoint paths, k, attempts
  ProviderLimits providers;
  uint32_t announces_max = 64;         // keys we announce and republish
  uint32_t routes_max = 32;            // our routed messages awaiting replies
  // Routed messages we sent or forwarded and keep (a datagram each) until the next hop
  // acknowledges them; when all are busy, messages are forwarded untracked.
  uint32_t route_hops_max = 16;
  int64_t route_hop_timeout_us = 500'000;  // a hop's ack: one round trip, with margin
  uint32_t seen_max = 4096;            // routed and gossip ids remembered
  uint32_t gossip_fanout = 8;          // peers each new gossip message is sent to
  uint32_t size_lookups = 16;          // random lookups per density estimate
  // Collision estimate (see dht/size_estimate.h). Walks run side by side until each has
  // taken its steps or, together, they have spent the message budget (requests sent plus
  // replies received). The defaults fit 30 x sqrt(N) at N = 10,000 with 5% loss.
  uint32_t size_walks = 10;                  // walks per estimate, side by side
  uint32_t size_walk_steps = 400;            // steps per walk after its burn-in, at most
  uint32_t size_walk_messages_max = 2900;    // budget of one estimate
  int64_t ping_interval_us = kPingIntervalUs;    // contacts' liveness pings
  int64_t peers_interval_us = kPeersIntervalUs;  // peer exchange; 0: never
  int64_t refresh_interval_us = 15 * 60 * kSecondUs;  // sparse-bucket refresh lookups
  int64_t request_timeout_us = kDhtRequestTimeoutUs;
  // Slow mark of a lookup request (SlowMarkUs): a first try unanswered this long leaves its
  // alpha slot (LookupParams::slow_frees_slot), and a retry times out at twice the mark.
  // The mark follows the round trips measured (RFC 6298's smoothed estimate plus four
  // deviations), never below this nor above half the request timeout.
  int64_t lookup_slow_min_us = 200'000;
  // A lookup still running this long ends with what answered (LookupResult::expired) and
  // gives back its requests: a lookup among liars could otherwise hold its slot for
  // minutes. 60 s: at 10,000 nodes with a quarter hostile the slowest took 45 s (p99
  // 31-35 s), so a shorter bound would cut lookups that were going to succeed.
  int64_t lookup_duration_max_us = kLookupDurationMaxUs;
  const ProofScheme* proof = nullptr;  // null: ed25519 (production)
  OverlayEvents* events = nullptr;     // null: results are dropped
  // An encoder to share with the rest of the node's thread (the node core's; it must
  // outlive the overlay), or null for its own. An encoder holds nothing between calls.
  wire::Encoder* encoder = nullptr;
  // A DHT client (an embedded node, node/client): it looks up, gets and announces like
  // any node, but its pings say so and other nodes never put it in their routing tables:
  // a short-lived client would otherwise leave entries that lookups wait on until they
  // time out (seen: 3 s provider lookups on a network of relays that clients came and went
  // through).
  bool client = false;
};

// LookupResult: a finished lookup. Spans are valid during the callback only.
struct LookupResult {
  uint32_t handle = 0;
  LookupKind kind = LookupKind::kFindNode;
  NodeId target{};
  std::span<const Contact> closest;    // answered, nearest first
  std::span<const Contact> providers;  // kGetProviders only
  uint8_t rounds = 0;                  // generation of the nearest answer
  uint32_t requests = 0;               // requests sent, retries included
  uint32_t replies = 0;
  int64_t duration_us = 0;             // from the start to this result, on the caller's clock
  bool expired = false;                // ended at lookup_duration_max_us, not done
};

struct RouteResult {
  uint64_t route_id = 0;
  NodeId target{};
  RouteKind kind = RouteKind::kData;
  bool replied = false;     // false: every attempt timed out
  bool delivered = false;   // the target itself answered
  uint8_t hops = 0;
  uint8_t attempts = 0;
  Contact responder;        // who answered, at the address it answered from
  base::Endpoint observed;  // our address as the first hop saw it
};

// OverlayEvents: where results go. Called synchronously from inside the Overlay's calls;
// an implementation must not call back into the Overlay (queue the work instead).
struct OverlayEvents {
  virtual ~OverlayEvents() = default;
  // OnLookupStarted: a lookup of any kind (the caller's, refreshes, size samples,
  // announcements) got a slot and seeds. Its OnLookupDone, same handle, always follows,
  // possibly from inside the same call.
  virtual void OnLookupStarted(uint32_t handle, LookupKind kind) {}
  virtual void OnLookupDone(const LookupResult&) {}
  virtual void OnRouteDone(const RouteResult&) {}
  // OnRouted: a routed message reached us (we are its target or the closest node).
  virtual void OnRouted(const NodeId& origin, const base::Endpoint& origin_addr, RouteKind kind,
                        bool exact, std::span<const uint8_t> payload) {}
  virtual void OnGossip(const NodeId& origin, uint64_t msg_id, std::span<const uint8_t> payload) {}
  virtual void OnSizeEstimate(const SizeEstimate&) {}
  virtual void OnAnnounced(const NodeId& key, uint32_t acks) {}
  virtual void OnDumpChunk(const base::Endpoint& from, std::span<const Contact> nodes) {}
};

// PeerState: what Snapshot() reports.
struct PeerStatus {
  wire::NodeId id{};  // claimed until verified
  base::Endpoint addr;
  bool verified = false;
  bool live = false;
  bool bootstrap = false;
  int64_t last_heard_us = 0;
  bool in_table = false;  // in the routing table at this address
};

struct OverlayCounters {
  uint64_t pings_sent = 0;
  uint64_t challenges_sent = 0;
  uint64_t peers_verified = 0;    // times a peer became verified
  uint64_t peers_forgotten = 0;
  uint64_t peers_messages_sent = 0;
  uint64_t new_peers_deferred = 0;  // challenge budget empty: tried later
  uint64_t proofs_failed = 0;       // challenge answers with a bad proof (backed off)
  // DHT
  uint64_t requests_sent = 0;        // find_node, get_providers, announce, walk, dump
  uint64_t requests_timed_out = 0;
  uint64_t lookups_expired = 0;      // ended at lookup_duration_max_us with what answered
  uint64_t lookup_slow_moves = 0;    // first tries that passed the slow mark (left their slot)
  uint64_t requests_answered = 0;    // requests from others we answered
  uint64_t replies_trimmed = 0;      // answers cut to 3x an unverified request
  uint64_t rpc_slots_full = 0;       // a request not sent: no slot
  uint64_t probes_sent = 0;          // pings of a full bucket's oldest or stale entry
  uint64_t evictions = 0;            // entries dropped after a failed probe
  uint64_t announces_stored = 0;
  uint64_t announces_refused = 0;    // store limits
  uint64_t tokens_rejected = 0;      // forged or stale tokens
  uint64_t routes_forwarded = 0;
  uint64_t routes_answered = 0;      // as target or closest node
  uint64_t routes_duplicate = 0;     // loop guard: seen before
  uint64_t route_hops_failed = 0;    // a next hop did not acknowledge in time
  uint64_t route_hops_resent = 0;    // ...and the message went to another next hop
  uint64_t route_hops_untracked = 0; // forwarded without a slot to resend it from
  uint64_t gossip_delivered = 0;
  uint64_t gossip_duplicate = 0;
  uint64_t gossip_sent = 0;
  uint64_t dumps_answered = 0;
  uint64_t dumps_refused = 0;
};

// Bootstrap peers added after start (AddBootstrap), at most.
inline constexpr uint32_t kAddedBootstrapsMax = 16;

class Overlay {
 public:
  // REQUIRES: `identity` and `rng` outlive the overlay.
  Overlay(const wire::KeyPair& identity, const OverlayConfig& config, base::Rng* rng,
          int64_t now_us);
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;

  // OnPingSeen: a ping from `from` claiming `claimed` arrived (at any shard; the pong was
  // already sent). Learns the sender and challenges it if it is new.
  // `client`: the ping says its sender is a DHT client (OverlayConfig::client): it is
  // answered but never challenged into the table.
  void OnPingSeen(int64_t now_us, const base::Endpoint& from, const wire::NodeId& claimed,
                  base::Outbox& out, bool client = false) noexcept;
  // OnMessage: every verified message except Ping (which any shard answers with a
  // PingResponder, then reports with OnPingSeen). Dispatches by type; the verdict says
  // what became of it. New overlay message types are handled here.
  wire::Verdict OnMessage(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                          base::Outbox& out) noexcept;
  // OnPong: a pong for one of our pings. Verifies the challenge answer if one was asked.
  wire::Verdict OnPong(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                       base::Outbox& out) noexcept;
  // OnPeers: a peer list from a verified peer; unknown entries become candidates.
  wire::Verdict OnPeers(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                        base::Outbox& out) noexcept;
  // Tick: timeouts, liveness pings, bootstrap retries, periodic peer exchange. Call it
  // every ~100 ms; it scans the table (O(peers_max), fine for a table of ~1000).
  void Tick(int64_t now_us, base::Outbox& out) noexcept;

  // AddBootstrap: a peer to join through that was learned after start (an invite's
  // relays): treated like a configured bootstrap peer, pinged at the next Tick. False when
  // the table is full or kAddedBootstrapsMax were added. A known address is left as is.
  bool AddBootstrap(int64_t now_us, const base::Endpoint& addr) noexcept;

  // Snapshot: every known peer (control path; allocates).
  std::vector<PeerStatus> Snapshot(int64_t now_us) const;
  size_t LivePeers(int64_t now_us) const noexcept;
  // ProvedHost: `addr`'s host answered a signed challenge of ours there and was heard from
  // there within `window_us`: a verified contact at `addr`, or a routing-table entry at
  // its host (any port). The node's reflection guard asks this before it refuses a send
  // or probes an address (node/core/reflection_guard.h). O(table size).
  bool ProvedHost(const base::Endpoint& addr, int64_t now_us, int64_t window_us) const noexcept;
  size_t VerifiedPeers() const noexcept;

  const wire::NodeId& id() const noexcept { return id_; }
  // The address a verified peer last saw us at (our address from outside), if any.
  const base::Endpoint& observed_address() const noexcept { return observed_; }
  const OverlayCounters& counters() const noexcept { return counters_; }

  // --- DHT requests. Each returns 0 (or false) when its pool is full or no peer is known.
  // FindNode: an iterative lookup of `target`; the result comes to OnLookupDone. `paths`
  // > 1 runs that many disjoint paths.
  uint32_t FindNode(int64_t now_us, const NodeId& target, base::Outbox& out,
                    uint8_t paths = 0) noexcept;
  // GetProviders: a lookup that collects providers of `key` (OnLookupDone.providers).
  uint32_t GetProviders(int64_t now_us, const NodeId& key, base::Outbox& out) noexcept;
  // Announce: announces us as a provider of `key` to the k nearest nodes, and again every
  // kRepublishUs until Unannounce. OnAnnounced reports the acknowledgements.
  bool Announce(int64_t now_us, const NodeId& key, base::Outbox& out) noexcept;
  void Unannounce(const NodeId& key) noexcept;
  // Route: sends `payload` greedily towards `target`; the reply (from the target or the
  // closest node reached) comes to OnRouteDone. Returns the route id, 0 if none was sent.
  // REQUIRES: payload.size() <= wire::kRoutePayloadBytesMax.
  uint64_t Route(int64_t now_us, const NodeId& target, RouteKind kind,
                 std::span<const uint8_t> payload, base::Outbox& out) noexcept;
  // Hello: a routed hello to `target`: both ends learn each other's observed address and
  // exchange a direct (challenge) ping, which makes each a verified peer of the other.
  uint64_t Hello(int64_t now_us, const NodeId& target, base::Outbox& out) noexcept {
    return Route(now_us, target, RouteKind::kHello, {}, out);
  }
  // EstimateSize: density estimate from config.size_lookups random lookups
  // (OnSizeEstimate). False when one is already running.
  bool EstimateSize(int64_t now_us, base::Outbox& out) noexcept;
  // EstimateSizeByWalks: collision estimate from random walks (OnSizeEstimate). Control
  // path: allocates its sample buffer.
  bool EstimateSizeByWalks(int64_t now_us, base::Outbox& out);
  // Broadcast: floods `payload` to the network. Returns its message id.
  // REQUIRES: payload.size() <= wire::kGossipPayloadBytesMax.
  uint64_t Broadcast(int64_t now_us, std::span<const uint8_t> payload, base::Outbox& out) noexcept;
  // RequestDump: asks the verified peer at `addr` for its whole table (OnDumpChunk); the
  // entries it sends are offered to our table like any learned peer.
  bool RequestDump(int64_t now_us, const base::Endpoint& addr, base::Outbox& out) noexcept;

  // Restore: the saved table of an earlier run. Its peers are challenged again (a table
  // entry is only as good as a fresh proof), so a restarted node rejoins without its
  // bootstrap peers. Call once, before the first Tick.
  void Restore(int64_t now_us, std::span<const SavedContact> saved) noexcept;
  // SavedTable: the table to persist (control path; allocates). See dht/table_file.h.
  std::vector<SavedContact> SavedTable() const { return TableEntries(table_); }
  // PublishSnapshot: copies the table into `out` for the other shards' FindNode answers.
  void PublishSnapshot(int64_t now_us, TableSnapshot* out) const noexcept;
  // The same with the provider records and token secrets (GetProviders and Walk answers
  // too), the table sealed. O(table + records_max): about once a second per reader shard.
  void PublishSnapshot(int64_t now_us, DhtSnapshot* out) const noexcept;
  // Learn: `id` talked to us from `addr` (a request answered on another shard): refresh
  // it, or challenge it if the table wants it.
  void LearnFromShard(int64_t now_us, const NodeId& id, const base::Endpoint& addr,
                      base::Outbox& out) noexcept {
    Learn(now_us, id, addr, out);
  }

  // AdmitVerifiedForTesting: makes `id` at `addr` a verified peer without the challenge
  // round trip (no signatures), exactly as a good proof would. For fuzzers and simulators
  // that need a populated table cheaply and reproducibly; never called by the node.
  bool AdmitVerifiedForTesting(int64_t now_us, const NodeId& id, const base::Endpoint& addr,
                               base::Outbox& out) noexcept;
  // NextWakeUs: the earliest time Tick has work to do.
  int64_t NextWakeUs() const noexcept { return next_wake_us_; }
  const RoutingTable& table() const noexcept { return table_; }
  // LookupSlotsHeld: lookup slots holding storage now (in use, or idle for less than a
  // housekeeping period).
  size_t LookupSlotsHeld() const noexcept {
    return static_cast<size_t>(std::count_if(lookups_.begin(), lookups_.end(),
                                             [](const auto& l) { return l != nullptr; }));
  }
  const ProviderStore& provider_store() const noexcept { return store_; }
  bool joined() const noexcept { return joined_; }

 private:
  enum class State : uint8_t { kEmpty, kCandidate, kVerified };
  struct Peer {
    State state = State::kEmpty;
    bool bootstrap = false;
    bool has_challenge = false;
    bool client = false;  // a DHT client: verified, but never tabled nor advertised
    uint32_t failures = 0;
    wire::NodeId id{};
    base::Endpoint addr;
    uint64_t pending_txid = 0;  // 0: nothing outstanding
    int64_t pending_sent_us = 0;
    int64_t last_heard_us = 0;
    int64_t next_ping_us = 0;
    int64_t next_peers_us = 0;
    int64_t retry_us = kBootstrapRetryUs;
    wire::Hash256 challenge{};
  };
  // Slot: the table index for `addr`, creating a candidate if there is room. -1 if full.
  int FindOrAdd(const base::Endpoint& addr, int64_t now_us) noexcept;
  int Find(const base::Endpoint& addr) const noexcept;
  void Forget(uint32_t slot) noexcept;
  // SendPing: pings the peer in `slot`, with a fresh challenge when `challenge`.
  void SendPing(uint32_t slot, bool challenge, int64_t now_us, base::Outbox& out) noexcept;
  void SendPeers(uint32_t slot, int64_t now_us, base::Outbox& out) noexcept;
  // Challenge a candidate now if the new-peer budget allows, else later in Tick.
  void MaybeChallenge(uint32_t slot, int64_t now_us, base::Outbox& out) noexcept;
  void OnTimeout(uint32_t slot, int64_t now_us) noexcept;
  // OnFailedProof: the peer in `slot` answered our challenge with a bad proof.
  void OnFailedProof(uint32_t slot, int64_t now_us) noexcept;
  void OnVerified(uint32_t slot, const wire::NodeId& id, int64_t now_us, base::Outbox& out) noexcept;
  bool IsLive(const Peer& p, int64_t now_us) const noexcept {
    return p.state == State::kVerified && now_us - p.last_heard_us < kLiveWindowUs;
  }

  // --- DHT internals (overlay_dht.cc).
  enum class RpcKind : uint8_t { kFree, kLookup, kProbe, kAnnounce, kWalk, kDump };
  struct Rpc {
    uint64_t txid = 0;
    int64_t sent_us = 0;
    Contact to;
    RpcKind kind = RpcKind::kFree;
    uint16_t owner = 0;     // lookup, announce or walk index
    int16_t candidate = -1; // lookup candidate
  };
  struct LookupSlot {
    explicit LookupSlot(uint32_t candidates) : lookup(candidates) {}
    Lookup lookup;
    bool active = false;
    uint32_t handle = 0;
    int64_t started_us = 0;
    uint16_t announce = 0xFFFF;  // announce slot this lookup serves
    uint8_t providers_count = 0;
    int64_t idle_since_us = 0;  // when it last finished (housekeeping frees it later)
    Contact providers[wire::kProvidersPerMessageMax];
  };
  // Slot: lookup slot `li`, or null (never used, or freed while idle).
  LookupSlot* Slot(uint32_t li) const noexcept { return lookups_[li].get(); }
  struct AnnounceSlot {
    NodeId key{};
    bool active = false;
    int64_t next_us = 0;
    uint32_t acks = 0;
  };
  struct RouteSlot {
    uint64_t route_id = 0;  // 0: free
    NodeId target{};
    RouteKind kind = RouteKind::kData;
    uint8_t attempts = 0;
    int64_t deadline_us = 0;
    uint16_t payload_bytes = 0;
    uint32_t payload_offset = 0;  // into route_payloads_
  };
  struct HopSlot {
    uint64_t key = 0;  // HopAckKey(route id, attempt); 0: free
    Contact to;
    base::Endpoint prev;  // where it came from (never sent back there)
    NodeId target{};
    int64_t sent_us = 0;
    uint8_t attempt = 0;
    uint8_t tries = 0;
    NodeId tried[kRouteHopTriesMax] = {};
    uint16_t bytes = 0;  // the datagram, at slot index x kRouteDatagramBytesMax
  };
  // WalkSlot: one Metropolis-Hastings walk of a collision estimate. It is at `at` (our own
  // id: at us), holds up to kWalkNextMax proposals from `at`'s table, and waits either for
  // `at` itself (more proposals) or for the proposed node (its degree, whether it holds
  // `at`, and its own proposals).
  enum class WalkWait : uint8_t { kNothing, kRefill, kProposal };
  struct WalkSlot {
    Contact at;
    Contact proposed;
    uint32_t degree = 0;   // live table entries at `at`
    uint16_t steps = 0;    // steps taken, burn-in and stays included
    uint16_t segment = 0;  // sample group (a new one after a restart at us)
    uint8_t next_count = 0;
    uint8_t retries = 0;
    WalkWait wait = WalkWait::kNothing;
    bool active = false;
    Contact next[wire::kWalkNextMax];
  };

  static constexpr uint32_t kRpcSlotBase = 1u << 23;  // txid slots >= this are DHT requests

  wire::Verdict OnDhtMessage(int64_t now_us, const base::Endpoint& from,
                             const wire::Message& msg, base::Outbox& out) noexcept;
  wire::Verdict OnFindNode(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                           base::Outbox& out) noexcept;
  wire::Verdict OnGetProviders(int64_t now_us, const base::Endpoint& from,
                               const wire::Message& msg, base::Outbox& out) noexcept;
  wire::Verdict OnAnnounceMsg(int64_t now_us, const base::Endpoint& from,
                              const wire::Message& msg, base::Outbox& out) noexcept;
  wire::Verdict OnReply(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                        base::Outbox& out) noexcept;
  wire::Verdict OnRoute(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                        base::Outbox& out) noexcept;
  wire::Verdict OnRouteReply(int64_t now_us, const base::Endpoint& from,
                             const wire::Message& msg, base::Outbox& out) noexcept;
  wire::Verdict OnWalk(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                       base::Outbox& out) noexcept;
  wire::Verdict OnGossip(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                         base::Outbox& out) noexcept;
  wire::Verdict OnDumpRequest(int64_t now_us, const base::Endpoint& from,
                              const wire::Message& msg, base::Outbox& out) noexcept;
  void OnLookupReply(int64_t now_us, Rpc& rpc, const wire::Message& msg, base::Outbox& out) noexcept;
  void OnWalkReply(int64_t now_us, Rpc& rpc, const wire::Message& msg, base::Outbox& out) noexcept;
  void OnDumpChunk(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                   base::Outbox& out) noexcept;

  // Learn: `id` talked to us from `addr`: refresh it, or challenge it if the table wants it.
  void Learn(int64_t now_us, const NodeId& id, const base::Endpoint& addr, base::Outbox& out) noexcept;
  // AddCandidate: challenge the peer at `addr` (claiming `id`) through the contacts table.
  void AddCandidate(int64_t now_us, const base::Endpoint& addr, const NodeId& id,
                    base::Outbox& out) noexcept;
  void OfferVerified(int64_t now_us, const NodeId& id, const base::Endpoint& addr, bool pinned,
                     base::Outbox& out) noexcept;
  // RoundTripped: whether `addr` (claiming `id`) has answered a request of ours.
  bool RoundTripped(const NodeId& id, const base::Endpoint& addr) const noexcept;
  int AllocRpc(int64_t now_us, RpcKind kind, const Contact& to, uint16_t owner,
               int16_t candidate) noexcept;
  void FreeRpc(Rpc& rpc) noexcept { rpc = Rpc{}; }
  void SendProbe(int64_t now_us, const Contact& c, base::Outbox& out) noexcept;
  void OnRpcTimeout(int64_t now_us, uint32_t slot, base::Outbox& out) noexcept;
  uint32_t StartLookup(int64_t now_us, const NodeId& target, LookupKind kind, uint8_t paths,
                       base::Outbox& out) noexcept;
  void SendLookupRequest(int64_t now_us, uint32_t li, int c, base::Outbox& out) noexcept;
  void PumpLookup(int64_t now_us, uint32_t li, base::Outbox& out) noexcept;
  void FinishLookup(int64_t now_us, uint32_t li, base::Outbox& out,
                    bool expired = false) noexcept;
  // ExpireLookup: lookup `li` ran past lookup_duration_max_us: its requests are freed and
  // it ends with what answered.
  void ExpireLookup(int64_t now_us, uint32_t li, base::Outbox& out) noexcept;
  // SlowMarkUs: see OverlayConfig::lookup_slow_min_us.
  int64_t SlowMarkUs() const noexcept;
  // RpcTimeoutUs: how long request `r` waits: the request timeout, or for a lookup's
  // retry twice the slow mark (its first try already waited the mark or longer).
  int64_t RpcTimeoutUs(const Rpc& r) const noexcept;
  // SampleRtt: a reply came `rtt_us` after its request (RFC 6298's estimator).
  void SampleRtt(int64_t rtt_us) noexcept;
  void SendRoute(int64_t now_us, RouteSlot& r, base::Outbox& out) noexcept;
  // NextHop: the known node nearest `target` and strictly nearer than us, avoiding `not_to`;
  // with attempt > 0, a random one of the attempt + 1 nearest such nodes.
  bool NextHop(const NodeId& target, const base::Endpoint& not_to, uint8_t attempt,
               Contact* out, std::span<const NodeId> avoid = {}) noexcept;
  // SendTracked: sends a routed datagram to `to` and keeps it until `to` acknowledges it.
  // `key` is HopAckKey(route id, attempt); a resend finds its slot by it.
  void SendTracked(int64_t now_us, std::span<const uint8_t> bytes, const Contact& to,
                   const base::Endpoint& prev, const NodeId& target, uint8_t attempt,
                   uint64_t key, base::Outbox& out) noexcept;
  // OnHopAck: an Ack for a routed datagram we sent; false if it matches none.
  bool OnHopAck(int64_t now_us, const base::Endpoint& from, const wire::Message& msg) noexcept;
  void HopTick(int64_t now_us, base::Outbox& out) noexcept;
  // StepWalk: moves walk `w` on until it must wait for a reply (or ends it).
  void StepWalk(int64_t now_us, uint32_t w, base::Outbox& out) noexcept;
  // SendWalk: asks `to` for a walk step; `prev` names the node we would move from.
  bool SendWalk(int64_t now_us, uint32_t w, const Contact& to, const NodeId* prev,
                base::Outbox& out) noexcept;
  // ResolveProposal: the proposed node's answer (or, with `answered` false, its silence).
  // Returns whether the walk moved.
  bool ResolveProposal(uint32_t w, bool answered, bool held, uint32_t degree) noexcept;
  void RecordSightings(uint32_t w, std::span<const Contact> ids) noexcept;
  void EndWalk(int64_t now_us, uint32_t w) noexcept;
  void ContinueSizeEstimate(int64_t now_us, base::Outbox& out) noexcept;
  void FloodTo(std::span<const uint8_t> bytes, const base::Endpoint& not_to, base::Outbox& out) noexcept;
  void FinishWalks(int64_t now_us) noexcept;
  void DhtTick(int64_t now_us, base::Outbox& out) noexcept;
  void StartRefresh(int64_t now_us, base::Outbox& out) noexcept;
  void Wake(int64_t at_us) noexcept { next_wake_us_ = std::min(next_wake_us_, at_us); }
  uint64_t NewTxid(uint32_t slot) noexcept {
    return (rng_->Next() & 0xFFFFFFFF00000000ull) | (uint64_t{slot} << 8) | config_.shard_index;
  }

  const wire::KeyPair& identity_;
  const wire::NodeId id_;
  const OverlayConfig config_;
  base::Rng* rng_;
  Ed25519Proof ed25519_;
  const ProofScheme* proof_;
  RoutingTable table_;
  ProviderStore store_;
  TokenMint tokens_;
  base::SeenSet seen_;
  std::vector<Rpc> rpcs_;
  uint32_t rpc_hint_ = 0;  // where the next free-slot search starts
  int64_t srtt_us_ = 0;    // smoothed round trip of our requests (0: no sample yet)
  int64_t rttvar_us_ = 0;  // its mean deviation
  // lookups_max slots; each allocated when a lookup starts in it and freed by housekeeping
  // after kHousekeepingUs idle (a node between lookups holds none; back-to-back lookups,
  // a refresh or a size estimate, reuse theirs).
  std::vector<std::unique_ptr<LookupSlot>> lookups_;
  std::vector<AnnounceSlot> announces_;
  std::vector<RouteSlot> routes_;
  // The routes' payloads (routes_max x kRoutePayloadBytesMax) and the hops' datagrams
  // (route_hops_max x kRouteDatagramBytesMax): allocated when a route or hop first needs
  // them, freed by housekeeping when no slot is in use (a node between routed messages
  // holds neither: 2.4 KB with the simulator's 2 and 2, 39 KB with the defaults).
  std::vector<uint8_t> route_payloads_;
  std::vector<HopSlot> hops_;
  std::vector<uint8_t> hop_bytes_;  // route_hops_max x kRouteDatagramBytesMax
  std::vector<WalkSlot> walks_;  // allocated by EstimateSizeByWalks, freed when it reports
  std::vector<WalkSample> walk_visits_;  // allocated by EstimateSizeByWalks
  std::vector<WalkSample> walk_seen_;    // ditto
  uint64_t walk_messages_ = 0;
  uint16_t walk_segments_ = 0;
  bool walks_running_ = false;
  uint32_t next_handle_ = 1;
  // Density estimate in progress: handles of its lookups and their samples.
  uint32_t size_pending_ = 0;
  uint32_t size_to_start_ = 0;
  bool size_retry_ = false;
  uint64_t size_messages_ = 0;
  std::vector<double> size_samples_;
  base::TokenBucket dumps_;
  bool joined_ = false;             // the self-lookup has run
  uint32_t added_bootstraps_ = 0;  // AddBootstrap calls that pinned a new peer
  uint32_t refresh_next_bucket_ = 0;
  uint32_t refresh_remaining_ = 0;
  uint32_t refresh_handle_ = 0;
  int64_t next_refresh_us_ = 0;
  int64_t next_housekeeping_us_ = 0;
  int64_t next_wake_us_ = 0;
  std::vector<Peer> peers_;  // sized once: config_.peers_max
  std::vector<uint32_t> free_;
  absl::flat_hash_map<base::Endpoint, uint32_t, base::EndpointHash> by_addr_;
  base::TokenBucket new_peer_challenges_;
  base::Endpoint observed_;
  wire::Encoder own_encoder_;  // its buffer is allocated at first use: none when shared
  wire::Encoder& encoder_;
  OverlayCounters counters_;
};

}  // namespace ringpeer::dht
