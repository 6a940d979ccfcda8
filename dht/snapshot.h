// DhtSnapshot and SnapshotResponder: the DHT reads (FindNode, GetProviders, Walk) answered
// on shards that do not own the overlay (DESIGN.md section 4, issue 14).
//
// The owner shard copies its routing table, its provider records and its token secrets
// into a DhtSnapshot (Overlay::PublishSnapshot) every kSnapshotIntervalUs and hands it to
// each other shard; they answer the reads from it with a SnapshotResponder and forward
// only what is a write (the sender's claimed id and address, which the owner may
// challenge; Announce, whose token any shard's answer minted with the owner's secret).
// Publication is the node core's business (node/core): two snapshots per reader shard,
// the owner filling the one the reader is not using and passing its pointer through the
// mailbox, the reader handing the old one back the same way, so no snapshot is ever
// written while read and nothing is allocated after start. A TableSnapshot and a
// DhtSnapshot are values with fixed capacity; a SnapshotResponder is shard-local.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/endpoint.h"
#include "base/outbox.h"
#include "base/rng.h"
#include "dht/providers.h"
#include "dht/routing_table.h"
#include "wire/encode.h"
#include "wire/message.h"
#include "wire/verdict.h"

namespace ringpeer::dht {

// Replies to an address that has not completed a round trip with us are at most this
// many times the request's size (DESIGN.md section 7: no amplification).
inline constexpr size_t kAmplificationMax = 3;
// Bytes one more PeerEntry adds to an answer.
inline constexpr size_t kPeerEntryBytes = 52;

// How often the owner republishes: a second-old table answers as well as a fresh one.
inline constexpr int64_t kSnapshotIntervalUs = 1'000'000;

class TableSnapshot {
 public:
  // REQUIRES: capacity >= the table's buckets_max x bucket_size (else entries are cut).
  explicit TableSnapshot(uint32_t capacity) { entries_.reserve(capacity); }
  TableSnapshot(const TableSnapshot&) = delete;
  TableSnapshot& operator=(const TableSnapshot&) = delete;

  // Assign: replaces the contents (no allocation within capacity).
  void Clear(int64_t now_us) noexcept {
    entries_.clear();
    published_us_ = now_us;
    sealed_ = false;
  }
  bool Push(const Contact& c) noexcept {
    if (entries_.size() == entries_.capacity()) return false;
    entries_.push_back(c);
    sealed_ = false;
    return true;
  }
  // Seal: sorts the entries by id (in place, no allocation) so that Contains and HoldsId
  // are binary searches. Pushing again unseals.
  void Seal() noexcept;
  std::span<const Contact> entries() const noexcept { return entries_; }
  int64_t published_us() const noexcept { return published_us_; }
  // Closest: up to out.size() entries nearest `target`, nearest first (0 for an empty
  // `out`).
  size_t Closest(const NodeId& target, std::span<Contact> out) const noexcept;
  bool Contains(const NodeId& id, const base::Endpoint& addr) const noexcept;
  // HoldsId: an entry has this id (a walk's "held" bit).
  bool HoldsId(const NodeId& id) const noexcept;
  // RandomContact: a uniformly random entry; false when empty.
  bool RandomContact(base::Rng& rng, Contact* out) const noexcept;

 private:
  // Find: the entry with `id` (sealed: binary search; else a scan), or null.
  const Contact* Find(const NodeId& id) const noexcept;
  std::vector<Contact> entries_;
  int64_t published_us_ = 0;
  bool sealed_ = false;
};

// DhtSnapshot: what the owner publishes for the other shards' DHT reads. Sized once (the
// table's buckets_max x bucket_size, the provider store's limits), refilled in place.
struct DhtSnapshot {
  DhtSnapshot(uint32_t table_capacity, const ProviderLimits& limits)
      : table(table_capacity), providers(limits) {}
  DhtSnapshot(const DhtSnapshot&) = delete;
  DhtSnapshot& operator=(const DhtSnapshot&) = delete;

  TableSnapshot table;      // live (not stale) entries, sealed
  ProviderStore providers;  // a copy of the owner's records
  TokenMint tokens;         // the owner's secrets: tokens minted here pass its Check
};

// AnswerFindNode: the Nodes answer to `msg` (a FindNode from `from`) using `closest`,
// trimmed so that an answer to an address without a round trip stays within 3x the
// request. Shared by the owner (routing table) and other shards (snapshot).
// Returns kOk, or kSendQueueFull.
wire::Verdict AnswerFindNode(const NodeId& self, const base::Endpoint& from,
                             const wire::Message& msg, std::span<const Contact> closest,
                             bool round_tripped, wire::Encoder& encoder, base::Outbox& out,
                             bool* trimmed) noexcept;

// AnswerProviders: the Providers answer to `msg` (a GetProviders from `from`): the closer
// nodes first, then the providers, trimmed (closer nodes first) to 3x the request for an
// address without a round trip. Shared by the owner and the other shards. Returns kOk
// (also when not even an empty answer fits: nothing is sent, *trimmed is set), or
// kSendQueueFull.
wire::Verdict AnswerProviders(const NodeId& self, const base::Endpoint& from,
                              const wire::Message& msg, std::span<const Contact> providers,
                              std::span<const Contact> near, const Token& token,
                              bool round_tripped, wire::Encoder& encoder, base::Outbox& out,
                              bool* trimmed) noexcept;
// AnswerWalk: the WalkReply to `msg` (a Walk from `from`) proposing `next`, with our
// `degree` and whether we hold the walk's previous node; fewer proposals, down to none,
// for an address without a round trip. Returns as AnswerProviders does.
wire::Verdict AnswerWalk(const NodeId& self, const base::Endpoint& from,
                         const wire::Message& msg, std::span<const wire::PeerInfo> next,
                         uint16_t degree, bool held, bool round_tripped,
                         wire::Encoder& encoder, base::Outbox& out, bool* trimmed) noexcept;

class SnapshotResponder {
 public:
  explicit SnapshotResponder(const NodeId& self) : self_(self) {}
  SnapshotResponder(const SnapshotResponder&) = delete;
  SnapshotResponder& operator=(const SnapshotResponder&) = delete;

  // Answer: answers a FindNode from `snapshot`. The caller then forwards (from, sender id)
  // to the owner shard, whose Overlay learns it (Overlay::Learn).
  wire::Verdict Answer(const base::Endpoint& from, const wire::Message& msg,
                       const TableSnapshot& snapshot, base::Outbox& out) noexcept {
    return Answer(from, msg, snapshot, /*proven=*/false, out);
  }
  // The same, where `proven` says the caller knows `from` answers (its own round trip).
  wire::Verdict Answer(const base::Endpoint& from, const wire::Message& msg,
                       const TableSnapshot& snapshot, bool proven, base::Outbox& out) noexcept;
  // AnswerGetProviders: a GetProviders from `snapshot` (providers as of now_us, the closer
  // nodes, a token the owner accepts).
  wire::Verdict AnswerGetProviders(int64_t now_us, const base::Endpoint& from,
                                   const wire::Message& msg, const DhtSnapshot& snapshot,
                                   bool proven, base::Outbox& out) noexcept;
  // AnswerWalk: a Walk step from `snapshot` (random entries, the snapshot's size as degree).
  wire::Verdict AnswerWalk(const base::Endpoint& from, const wire::Message& msg,
                           const TableSnapshot& snapshot, bool proven, base::Rng& rng,
                           base::Outbox& out) noexcept;

 private:
  NodeId self_;
  wire::Encoder encoder_;
};

}  // namespace ringpeer::dht
