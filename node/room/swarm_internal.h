// Swarm's private types, shared by swarm.cc, swarm_sync.cc and swarm_checkpoint.cc.
// Not part of the interface; include only from those files.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "base/token_bucket.h"
#include "node/room/swarm.h"

namespace ringpeer::room {

// InLogVerdict: the room kept the update (stored, acked and forwarded like the rest).
// kBehindCheckpoint: kept outside its order (a better checkpoint may cover it);
// kReissueTwin: in the order, another of its re-issue line applied first.
inline bool InLogVerdict(Verdict v) noexcept {
  return v == Verdict::kOk || v == Verdict::kPending || v == Verdict::kOverCap ||
         v == Verdict::kBadPayload || v == Verdict::kBehindCheckpoint ||
         v == Verdict::kReissueTwin;
}

struct Swarm::Peer {
  bool used = false;
  bool relay = false;
  base::Endpoint addr;
  wire::NodeId id{};
  int64_t last_heard_us = 0;
  int64_t next_sync_us = 0;       // earliest unprompted sync to this peer
  uint64_t synced_log_size = 0;   // its announced log size when we last synced from it
  int64_t slowdown_sent_us = 0;   // last RoomSlowDown, so a flood gets one reply per second
  uint64_t log_size = 0;
  Hash256 digest{};
  bool heard_heads = false;       // `digest` is from a RoomHeads (not the zero default)
  wire::RoomCheckpointInfo checkpoint;
  base::TokenBucket publish;
  base::TokenBucket serve;
  uint32_t recent_publishes = 0;  // fresh updates this period (halved each heads period)
  uint32_t pieces_inflight = 0;
  uint32_t strikes = 0;           // bad pieces sent
  int64_t epoch = -1;             // the latest key epoch its heads named (-1: none yet)
  uint32_t generation = 0;        // which admission this slot holds (Swarm::generations_)
  bool flood_sender = false;      // SendQueuedFloods: sent one of the records it packs
  bool packs = false;             // its RoomJoin or RoomHeads said it reads packed datagrams
  uint32_t range = 1;             // checkpoint pieces it answers per request (RangeOf)
};

// A checkpoint as a servable object: record ‖ blob in 1 KiB leaves under a fan-out-32 hash
// tree (RoomCheckpointRef in room_net.fbs). hashes[k][i]: hash of piece i of level k.
struct Swarm::Object {
  wire::RoomCheckpointInfo info;
  SharedBytes bytes;  // record || blob; the room keeps the blob's part (Room::KeepBlob)
  std::vector<std::vector<Hash256>> hashes;
  // False for a fetched object until its tree is rebuilt from its bytes (CheckObjectTree,
  // at the next tick): a fetch checks the blob against the record's signed hash, not its
  // leaves against the tree, and the tree came from an unsigned advertisement. Until
  // then the object is neither advertised nor served.
  bool tree_checked = true;
  uint32_t leaves_hashed = 0;  // of the rebuild so far (SwarmConfig::tree_leaves_per_tick)

  // Piece: the bytes of piece (level, index), or empty when out of range.
  Bytes Piece(uint8_t level, uint32_t index) const noexcept;
};

// RangeOf: checkpoint pieces a peer answers per RoomCheckpointGet, from its RoomJoin or
// RoomHeads: 1 without `ranges`; kRoomPieceRangeMaxV1 with `ranges` and no `range_max`
// (the first builds with ranges); else its `range_max`, at most ours.
inline uint32_t RangeOf(bool ranges, uint8_t range_max) noexcept {
  if (!ranges) return 1;
  if (range_max == 0) return wire::kRoomPieceRangeMaxV1;
  return std::min<uint32_t>(range_max, wire::kRoomPieceRangeMax);
}

// Piece counts per level for an object of `object_bytes`: level 0 = leaves.
std::vector<uint32_t> PieceCounts(uint64_t object_bytes);
// BuildObject: cuts and hashes; fills info (id, root, sizes, levels).
void BuildObject(Bytes record, Bytes blob, Swarm::Object* out);
// HashTree: every level's hashes of out->bytes, into out->hashes.
// HashLevels: levels `first` and up, into out->hashes already shaped; each level is hashed
// from the one below (Object::Piece), so the levels below `first` must be right.
void HashTree(Swarm::Object* out);
void HashLevels(Swarm::Object* out, size_t first);

enum class PieceState : uint8_t { kMissing = 0, kRequested, kHave };

struct Swarm::Fetch {
  wire::RoomCheckpointInfo info;
  std::vector<uint32_t> counts;                 // pieces per level
  std::vector<std::vector<Hash256>> expected;   // known expected hashes per level
  std::vector<uint8_t> bytes;                   // the object being assembled
  uint8_t level = 0;                            // the level being fetched
  std::vector<PieceState> state;                // of the current level's pieces
  std::vector<int64_t> sent_us;
  std::vector<uint32_t> sent_to;                // peer slot
  uint32_t cursor = 0;                          // no piece below it is missing
  uint32_t have = 0;                            // pieces of the current level held
  bool record_checked = false;                  // the cache test ran
  bool rank_checked = false;                    // the record ranks above ours (room.h)
  // Leaves (issue 15): those holding the record are checked against the tree as they
  // come (the record is read before the blob is whole). The blob's are not: they are
  // hashed as one stream, in order, as they come, and the whole is checked once against
  // the record's signed blob hash (FinishFetch), which the room then takes instead of
  // hashing 5 MB again. Only when that fails are the leaves checked against the tree, to
  // ask again for the bad ones and strike their senders (StrikeBadLeaves).
  // After one whole blob failed (check_leaves), every leaf is checked as it comes, as
  // the upper levels are: a peer that sends bad leaves costs one extra round, not a loop.
  wire::Hasher blob_hasher;
  uint64_t hashed = 0;                          // object bytes fed to it (from record_bytes)
  bool check_leaves = false;
  struct Sender {
    uint32_t slot = 0;
    uint32_t generation = 0;                    // Peer::generation when it sent
  };
  std::vector<Sender> came_from;                // per leaf
};

}  // namespace ringpeer::room
