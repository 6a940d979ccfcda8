// Overlay: the node's view of its peers — who exists, who proved their id, who is live.
//
// Sans-I/O (DESIGN.md section 5): it takes (now, from, verified message), and writes what
// it wants sent to an Outbox. It has no sockets, clocks, threads or globals; randomness
// (txids, challenges) comes from an injected Rng. The node's owner shard and the
// simulator drive this same code.
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
// Owner-shard-local; not thread-safe. Nothing allocates after construction.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/endpoint.h"
#include "base/rng.h"
#include "base/token_bucket.h"
#include "dht/outbox.h"
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

struct OverlayConfig {
  uint8_t shard_index = 0;                // low byte of our txids: replies come back to us
  uint32_t peers_max = 1024;              // table size, fixed at start
  std::vector<base::Endpoint> bootstrap;  // pinned peers
};

// PeerState: what Snapshot() reports.
struct PeerStatus {
  wire::NodeId id{};  // claimed until verified
  base::Endpoint addr;
  bool verified = false;
  bool live = false;
  bool bootstrap = false;
  int64_t last_heard_us = 0;
};

struct OverlayCounters {
  uint64_t pings_sent = 0;
  uint64_t challenges_sent = 0;
  uint64_t peers_verified = 0;    // times a peer became verified
  uint64_t peers_forgotten = 0;
  uint64_t peers_messages_sent = 0;
  uint64_t new_peers_deferred = 0;  // challenge budget empty: tried later
};

class Overlay {
 public:
  // REQUIRES: `identity` and `rng` outlive the overlay.
  Overlay(const wire::KeyPair& identity, const OverlayConfig& config, base::Rng* rng,
          int64_t now_us);
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;

  // OnPingSeen: a ping from `from` claiming `claimed` arrived (at any shard; the pong was
  // already sent). Learns the sender and challenges it if it is new.
  void OnPingSeen(int64_t now_us, const base::Endpoint& from, const wire::NodeId& claimed,
                  Outbox& out) noexcept;
  // OnMessage: every verified message except Ping (which any shard answers with a
  // PingResponder, then reports with OnPingSeen). Dispatches by type; the verdict says
  // what became of it. New overlay message types are handled here.
  wire::Verdict OnMessage(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                          Outbox& out) noexcept;
  // OnPong: a pong for one of our pings. Verifies the challenge answer if one was asked.
  wire::Verdict OnPong(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                       Outbox& out) noexcept;
  // OnPeers: a peer list from a verified peer; unknown entries become candidates.
  wire::Verdict OnPeers(int64_t now_us, const base::Endpoint& from, const wire::Message& msg,
                        Outbox& out) noexcept;
  // Tick: timeouts, liveness pings, bootstrap retries, periodic peer exchange. Call it
  // every ~100 ms; it scans the table (O(peers_max), fine for a table of ~1000).
  void Tick(int64_t now_us, Outbox& out) noexcept;

  // Snapshot: every known peer (control path; allocates).
  std::vector<PeerStatus> Snapshot(int64_t now_us) const;
  size_t LivePeers(int64_t now_us) const noexcept;
  size_t VerifiedPeers() const noexcept;

  const wire::NodeId& id() const noexcept { return id_; }
  // The address a verified peer last saw us at (our address from outside), if any.
  const base::Endpoint& observed_address() const noexcept { return observed_; }
  const OverlayCounters& counters() const noexcept { return counters_; }

 private:
  enum class State : uint8_t { kEmpty, kCandidate, kVerified };
  struct Peer {
    State state = State::kEmpty;
    bool bootstrap = false;
    bool has_challenge = false;
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
  struct EndpointHash {
    size_t operator()(const base::Endpoint& e) const noexcept { return e.Hash(); }
  };

  // Slot: the table index for `addr`, creating a candidate if there is room. -1 if full.
  int FindOrAdd(const base::Endpoint& addr, int64_t now_us) noexcept;
  int Find(const base::Endpoint& addr) const noexcept;
  void Forget(uint32_t slot) noexcept;
  // SendPing: pings the peer in `slot`, with a fresh challenge when `challenge`.
  void SendPing(uint32_t slot, bool challenge, int64_t now_us, Outbox& out) noexcept;
  void SendPeers(uint32_t slot, int64_t now_us, Outbox& out) noexcept;
  // Challenge a candidate now if the new-peer budget allows, else later in Tick.
  void MaybeChallenge(uint32_t slot, int64_t now_us, Outbox& out) noexcept;
  void OnTimeout(uint32_t slot, int64_t now_us) noexcept;
  void OnVerified(uint32_t slot, const wire::NodeId& id, int64_t now_us, Outbox& out) noexcept;
  bool IsLive(const Peer& p, int64_t now_us) const noexcept {
    return p.state == State::kVerified && now_us - p.last_heard_us < kLiveWindowUs;
  }

  const wire::KeyPair& identity_;
  const wire::NodeId id_;
  const OverlayConfig config_;
  base::Rng* rng_;
  std::vector<Peer> peers_;  // sized once: config_.peers_max
  std::vector<uint32_t> free_;
  absl::flat_hash_map<base::Endpoint, uint32_t, EndpointHash> by_addr_;
  base::TokenBucket new_peer_challenges_;
  base::Endpoint observed_;
  wire::Encoder encoder_;
  OverlayCounters counters_;
};

}  // namespace ringpeer::dht
