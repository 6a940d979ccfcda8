// TableSnapshot and SnapshotResponder: find_node answers on shards that do not own the
// routing table (DESIGN.md section 4).
//
// The owner shard copies its table into a TableSnapshot (Overlay::PublishSnapshot) every
// kSnapshotIntervalUs and hands it to the other shards; each of them answers FindNode
// from the snapshot with a SnapshotResponder and forwards what it learned (the sender's
// claimed id and address) to the owner, which may challenge it. Publication is the
// caller's business: the recommended scheme is two snapshots per reader shard, the owner
// filling the one the reader is not using and passing its pointer through the mailbox
// (the reader hands the old one back the same way), so no snapshot is ever written while
// read. A TableSnapshot is a value with fixed capacity; SnapshotResponder is shard-local.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/endpoint.h"
#include "base/outbox.h"
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
  }
  bool Push(const Contact& c) noexcept {
    if (entries_.size() == entries_.capacity()) return false;
    entries_.push_back(c);
    return true;
  }
  std::span<const Contact> entries() const noexcept { return entries_; }
  int64_t published_us() const noexcept { return published_us_; }
  // Closest: up to out.size() entries nearest `target`, nearest first (0 for an empty
  // `out`).
  size_t Closest(const NodeId& target, std::span<Contact> out) const noexcept;
  bool Contains(const NodeId& id, const base::Endpoint& addr) const noexcept;

 private:
  std::vector<Contact> entries_;
  int64_t published_us_ = 0;
};

// AnswerFindNode: the Nodes answer to `msg` (a FindNode from `from`) using `closest`,
// trimmed so that an answer to an address without a round trip stays within 3x the
// request. Shared by the owner (routing table) and other shards (snapshot).
// Returns kOk, or kSendQueueFull.
wire::Verdict AnswerFindNode(const NodeId& self, const base::Endpoint& from,
                             const wire::Message& msg, std::span<const Contact> closest,
                             bool round_tripped, wire::Encoder& encoder, base::Outbox& out,
                             bool* trimmed) noexcept;

class SnapshotResponder {
 public:
  explicit SnapshotResponder(const NodeId& self) : self_(self) {}
  SnapshotResponder(const SnapshotResponder&) = delete;
  SnapshotResponder& operator=(const SnapshotResponder&) = delete;

  // Answer: answers a FindNode from `snapshot`. The caller then forwards (from, sender id)
  // to the owner shard, whose Overlay learns it through OnMessage of the same datagram.
  wire::Verdict Answer(const base::Endpoint& from, const wire::Message& msg,
                       const TableSnapshot& snapshot, base::Outbox& out) noexcept;

 private:
  NodeId self_;
  wire::Encoder encoder_;
};

}  // namespace ringpeer::dht
