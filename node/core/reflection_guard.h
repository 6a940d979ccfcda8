// ReflectionGuard: no more than 3x the bytes an address sent us go back to it until it has
// proved that it receives what we send there (DESIGN.md section 7; issue 11, item 3).
//
// A UDP source address can be forged. Without this, a forged RoomJoin or RoomHeads would
// make a victim a swarm peer (every flood of the room, its key epochs), and a forged
// RoomSync would stream it updates: a relay turned into an amplifier. So every datagram
// the shard sends passes through Allow(), and every one it handles through OnReceive():
//  - Per address (the port is ignored: a reflection attack aims at a host), the guard
//    keeps a credit: 3x the bytes received from it, minus the bytes sent to it, over the
//    entry's whole life (not per request), capped at kCreditMax so that credit cannot be
//    banked for a later burst. A send that the credit does not cover is refused (dropped
//    and counted); the protocols above retry (joins, publishes) or repair (sync).
//  - Proof (a return-routability check): the first time an unproved address sends us
//    something, the shard pings it with a random 64-bit txid (Probe()); a pong echoing
//    that txid from that address (OnPong()) proves it, for kProofTtlUs, renewed by a new
//    probe while traffic continues. The overlay's own signed challenges prove an address
//    too (Prove()). A proved address gets what the protocols send it.
//  - Requests that we start ourselves (pings, overlay lookups and announcements, room
//    joins) go to addresses we chose, not ones a datagram named, and are small: they are
//    charged to the credit but not refused, and the address is probed alongside.
//  - A ProofSource (the owner's routing table) may vouch for an address the table does
//    not hold as proved: one that answered a signed challenge there and has kept talking
//    from there. It is asked only where the guard would otherwise refuse a send or probe
//    the address, and what it vouches for is recorded as a proof. So the guard need not
//    be sized to hold every peer of the routing table (with k = 20, a few hundred), only
//    the strangers and the non-table peers a node talks to at once.
// Fixed 4-way set-associative table sized at construction (like RateLimiter): a new
// address evicts the least recently used unproved entry of its set (a proved one only when
// all four are proved), so spraying forged sources can at worst cost a real peer its
// proof, which it earns back with one round trip (or, for a table peer, at the next send,
// from the table). Allocation-free; shard-local; not thread-safe.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "base/assert.h"
#include "base/endpoint.h"
#include "wire/header.h"

namespace ringpeer::core {

// The amplification factor: bytes sent per byte received, before proof.
inline constexpr int64_t kReflectionFactor = 3;
// Credit never exceeds this (3 full-size datagrams' worth of replies per datagram is the
// most one request needs; more would be banked credit).
inline constexpr int64_t kCreditMax = 64 * 1024;
// A proof holds this long; traffic after half of it sends a new probe.
inline constexpr int64_t kProofTtlUs = 600'000'000;
// At most one probe per address this often.
inline constexpr int64_t kProbeIntervalUs = 1'000'000;
// A probe (a ping without challenge) is smaller than this; one triggered by a datagram
// from an address goes out only when its credit covers this much.
inline constexpr int64_t kProbeBytesMax = 128;

struct ReflectionCounters {
  uint64_t refused = 0;         // sends dropped: address unproved and out of credit
  uint64_t refused_bytes = 0;
  uint64_t probes_sent = 0;
  uint64_t proved = 0;          // addresses that proved themselves (pong to our probe, or the overlay)
};

// ProofSource: addresses proved some other way than by the guard's own probes.
class ProofSource {
 public:
  virtual ~ProofSource() = default;
  // Vouches: `addr` (its host; the port is ignored, as everywhere in the guard) proved
  // that it receives what we send there, and has been heard from there within
  // kProofTtlUs. Called only off the common path (a send about to be refused, a probe
  // about to go out); may scan a table of a few hundred entries.
  virtual bool Vouches(const base::Endpoint& addr, int64_t now_us) const noexcept = 0;
};

class ReflectionGuard {
 public:
  // entries: table size (power of two, >= 4).
  explicit ReflectionGuard(uint32_t entries)
      : sets_mask_(entries / kWays - 1), entries_(std::make_unique<Entry[]>(entries)) {
    RP_ASSERT(entries >= kWays);
    RP_ASSERT((entries & (entries - 1)) == 0);
  }
  ReflectionGuard(const ReflectionGuard&) = delete;
  ReflectionGuard& operator=(const ReflectionGuard&) = delete;

  // set_proof_source: who else may vouch for an address (null: no one). REQUIRES: it
  // outlives the guard, or is reset to null first.
  void set_proof_source(const ProofSource* source) noexcept { source_ = source; }

  // OnReceive: a datagram of `bytes` from `from` that the shard handles.
  void OnReceive(const base::Endpoint& from, size_t bytes, int64_t now_us) noexcept {
    Entry& e = Get(from, now_us);
    e.credit = std::min(kCreditMax, e.credit + kReflectionFactor * static_cast<int64_t>(bytes));
  }

  // ShouldProbe: whether the caller should probe `addr` now, after handling a datagram from
  // it: unproved (or its proof half expired), not probed within kProbeIntervalUs, and
  // with credit for the probe (so that the probe too stays within 3x).
  bool ShouldProbe(const base::Endpoint& addr, int64_t now_us) noexcept {
    Entry& e = Get(addr, now_us);
    return WantsProbe(e, now_us) && e.credit >= kProbeBytesMax && !Vouched(e, addr, now_us);
  }

  // Allow: may a datagram of `bytes` of type `type` go to `to`? Charges the credit.
  // `probe` is set when the caller should probe `to` (an unproved address we write to).
  bool Allow(const base::Endpoint& to, size_t bytes, uint8_t type, int64_t now_us,
             bool* probe) noexcept {
    *probe = false;
    Entry& e = Get(to, now_us);
    if (Proved(e, now_us)) return true;
    const int64_t n = static_cast<int64_t>(bytes);
    if (IsOwnRequest(type)) {
      e.credit = std::max<int64_t>(0, e.credit - n);
      *probe = !ReplyProves(type) && WantsProbe(e, now_us) && !Vouched(e, to, now_us);
      return true;
    }
    if (e.credit < n) {
      if (Vouched(e, to, now_us)) return true;
      ++counters_.refused;
      counters_.refused_bytes += bytes;
      *probe = WantsProbe(e, now_us) && e.credit >= kProbeBytesMax;
      return false;
    }
    e.credit -= n;
    return true;
  }

  // Probe: the txid of a probe about to go to `to` (its low byte is `shard`, so the pong
  // comes back to this shard). REQUIRES: the caller sends the ping. The ping is charged
  // like any send by Allow (a ping is never refused: it is the check itself).
  uint64_t Probe(const base::Endpoint& to, uint64_t random, uint8_t shard,
                 int64_t now_us) noexcept {
    Entry& e = Get(to, now_us);
    e.probe_txid = (random & ~uint64_t{0xFF}) | shard;
    if (e.probe_txid == 0) e.probe_txid = uint64_t{1} << 8 | shard;
    e.probe_us = now_us;
    ++counters_.probes_sent;
    return e.probe_txid;
  }

  // OnPong: a pong from `from` echoing `txid`. True when it answers our probe (`from` is
  // now proved); false when it is not ours (the overlay's, or forged).
  bool OnPong(const base::Endpoint& from, uint64_t txid, int64_t now_us) noexcept {
    Entry* e = Find(from);
    if (e == nullptr || e->probe_txid == 0 || e->probe_txid != txid) return false;
    e->probe_txid = 0;
    MarkProved(*e, now_us);
    return true;
  }

  // Prove: `addr` answered a request of ours in a way only a receiver could (the overlay's
  // txid-matched replies and signed challenges).
  void Prove(const base::Endpoint& addr, int64_t now_us) noexcept {
    MarkProved(Get(addr, now_us), now_us);
  }

  bool IsProved(const base::Endpoint& addr, int64_t now_us) const noexcept {
    const Entry* e = const_cast<ReflectionGuard*>(this)->Find(addr);
    if (e != nullptr && Proved(*e, now_us)) return true;
    return source_ != nullptr && source_->Vouches(addr, now_us);
  }

  const ReflectionCounters& counters() const noexcept { return counters_; }

  // IsOwnRequest: message types that only we start (to addresses we chose): see above.
  // Also kRouteReply: a routed message's target answers its origin, an address no one there
  // has heard from, and the overlay sends that reply only when it is no larger than
  // kAmplificationMax x the route message that asked for it (dht/overlay_lookup.cc), so it
  // is bounded per request already. Refusing it lost every first hello to a stranger
  // (found when the simulator began to run the node core: issue 12).
  static constexpr bool IsOwnRequest(uint8_t type) noexcept {
    using T = wire::MessageType;
    switch (static_cast<T>(type)) {
      case T::kRouteReply:
      case T::kPing:
      case T::kFindNode:
      case T::kGetProviders:
      case T::kAnnounce:
      case T::kRoute:
      case T::kWalk:
      case T::kDumpRequest:
      case T::kRoomJoin:
        return true;
      default:
        return false;
    }
  }

  // ReplyProves: our own requests whose answer comes back from the address we sent to,
  // carrying our txid, which the core takes as the proof (NodeCore::Dispatch: a pong,
  // nodes, providers, an ack, a walk reply). A probe alongside them proves nothing more:
  // it only doubled the datagrams of every lookup request to an address the guard did not
  // hold (most of them, once the guard was no longer sized to every address a node meets).
  static constexpr bool ReplyProves(uint8_t type) noexcept {
    // Every own request but kRouteReply (itself an answer) and kRoomJoin (whose answer
    // the core does not take as a proof).
    using T = wire::MessageType;
    return IsOwnRequest(type) && type != static_cast<uint8_t>(T::kRouteReply) &&
           type != static_cast<uint8_t>(T::kRoomJoin);
  }

 private:
  static constexpr uint32_t kWays = 4;
  struct Entry {
    uint64_t key = 0;  // 0: empty
    int64_t last_us = INT64_MIN;
    int64_t credit = 0;
    int64_t proved_us = INT64_MIN;  // when it last proved itself
    int64_t probe_us = INT64_MIN;   // when we last probed it
    uint64_t probe_txid = 0;        // the probe awaiting its pong (0: none)
  };

  static bool Proved(const Entry& e, int64_t now_us) noexcept {
    return e.proved_us != INT64_MIN && now_us - e.proved_us < kProofTtlUs;
  }
  static bool WantsProbe(const Entry& e, int64_t now_us) noexcept {
    if (e.probe_us != INT64_MIN && now_us - e.probe_us < kProbeIntervalUs) return false;
    return !Proved(e, now_us) || now_us - e.proved_us >= kProofTtlUs / 2;
  }
  void MarkProved(Entry& e, int64_t now_us) noexcept {
    if (!Proved(e, now_us)) ++counters_.proved;
    e.proved_us = now_us;
  }
  // Vouched: the proof source vouches for `addr` (entry `e`); recorded as a proof, so
  // that the source is asked again only once this entry is evicted or its proof ages.
  bool Vouched(Entry& e, const base::Endpoint& addr, int64_t now_us) noexcept {
    if (source_ == nullptr || !source_->Vouches(addr, now_us)) return false;
    MarkProved(e, now_us);
    return true;
  }

  Entry* Find(const base::Endpoint& addr) noexcept {
    const uint64_t key = addr.HashAddressOnly() | 1;
    Entry* set = &entries_[(key & sets_mask_) * kWays];
    for (uint32_t w = 0; w < kWays; ++w) {
      if (set[w].key == key) return &set[w];
    }
    return nullptr;
  }

  Entry& Get(const base::Endpoint& addr, int64_t now_us) noexcept {
    const uint64_t key = addr.HashAddressOnly() | 1;
    Entry* set = &entries_[(key & sets_mask_) * kWays];
    Entry* victim = nullptr;
    for (uint32_t w = 0; w < kWays; ++w) {
      Entry& e = set[w];
      if (e.key == key) {
        e.last_us = now_us;
        return e;
      }
      // Unproved entries go first, then the least recently used.
      if (victim == nullptr) {
        victim = &e;
        continue;
      }
      const bool e_proved = Proved(e, now_us), v_proved = Proved(*victim, now_us);
      if ((!e_proved && v_proved) || (e_proved == v_proved && e.last_us < victim->last_us)) {
        victim = &e;
      }
    }
    *victim = Entry{};
    victim->key = key;
    victim->last_us = now_us;
    return *victim;
  }

  const uint64_t sets_mask_;
  std::unique_ptr<Entry[]> entries_;
  const ProofSource* source_ = nullptr;
  ReflectionCounters counters_;
};

}  // namespace ringpeer::core
