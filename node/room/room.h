// Room: the sans-I/O model of one room (DESIGN.md section 6).
//
// A Room holds a room's key epochs, its log of updates (a DAG), the deterministic order of
// that log, the state folded along it, the checkpoint in effect, and the bounded sets of
// updates that cannot be placed yet. Input is record bytes from any peer; output is a
// Verdict, and for a member, the state. It has no sockets, clocks, threads or globals;
// randomness (nonces) is passed in.
//
// Order rule: topological, ties by id (Kahn's algorithm taking the smallest available id),
// with one refinement: the checkpoints in effect are barriers, so their ancestors come
// first (the line: each checkpoint this node put in effect that the newest one covers).
// Checkpoint in effect: the best one known, ranked by `covered` (how many updates its
// heads reach back over), then by smaller id; so every node settles on the same one, in
// whatever order the checkpoints arrive, and a newer one (it covers more) always wins.
// An update that branches from inside it (a parent it covers that is not one of its
// heads), or from such an update, is refused: kept (a better checkpoint may cover it
// later) but outside the order and the heads. So is a root (no parents): it branches from
// the room's start, which every checkpoint that covers anything covers. So what is in the order is a function of
// the updates held and the checkpoint in effect, not of arrival order.
// An update whose parents include the last one in the order is appended in O(1); one that
// lands earlier is inserted and the state re-folded from the nearest snapshot (every
// kSnapshotEvery updates, the last kSnapshotsMax kept), else from the base.
// State hash: h(0) = room id; after each update the reducer applied, h = BLAKE2b(h ‖ id).
// A relay (no content key) cannot run the reducer and chains every update.
// Re-issue: when a checkpoint refuses an update this node wrote (and nothing of its line is
// in the order), the node writes the same payload again over its heads, naming the
// original (`reissue_of`, the first of the line). The original and its re-issues form a
// line; of a line only the first in the order is applied and chained (the rest count as
// kReissueTwin, in the log, the state unchanged), at every node, relays included, so a
// message refused by a checkpoint is re-issued once and read once.
//
// Shard-local; not thread-safe. Owning type: not copyable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "base/block_pool.h"
#include "node/room/record_arena.h"
#include "node/room/records.h"
#include "node/room/reducer.h"
#include "node/room/verdict.h"

namespace ringpeer::room {

// Updates held waiting for their parents. Bounded so that a writer cannot grow memory by
// naming parents that never come; over the bound new ones are dropped (repaired by sync).
inline constexpr size_t kPendingMax = 4096;
// Old-epoch updates held until a rotation point names them (or never: evicted writers).
inline constexpr size_t kQuarantineMax = 1024;
// Ids of updates pruned behind a checkpoint that are remembered, so that one arriving
// again (a publisher's retransmission, a peer's flood or sync window) is a duplicate
// rather than an update held pending for parents that are gone. 8-byte prefixes: ~80 KB.
inline constexpr size_t kPrunedIdsMax = 8192;
// Snapshot cadence and count for re-folding after an out-of-order insertion.
inline constexpr uint32_t kSnapshotEvery = 256;
inline constexpr size_t kSnapshotsMax = 4;

// Hash for ids: they are BLAKE2b outputs already, so their first word is a good hash.
struct IdHash {
  size_t operator()(const Hash256& h) const noexcept {
    size_t v;
    static_assert(sizeof(v) <= sizeof(Hash256));
    __builtin_memcpy(&v, h.data(), sizeof(v));
    return v;
  }
};

// IdPrefix64: an id's first 8 bytes, the key of the bounded seen/rejected/pruned sets.
inline uint64_t IdPrefix64(const Hash256& id) noexcept {
  uint64_t v;
  __builtin_memcpy(&v, id.data(), sizeof(v));
  return v;
}

struct Checkpoint {
  std::vector<uint8_t> record;
  std::vector<uint8_t> blob;  // the encrypted state; BLAKE2b-256 of it is in the record
};

// A sync answer: either the updates the peer lacks, in order, or "take the checkpoint".
struct SyncPlan {
  bool take_checkpoint = false;
  std::vector<Bytes> updates;  // views into the room's records; valid until it changes
  uint64_t updates_bytes = 0;
};

class Room {
 public:
  // Open: a room from its genesis record. `identity` (may be null: a relay) is the node's
  // ed25519 key pair, which key epochs seal member keys to; the Room keeps a copy.
  // `custom` is the application's reducer for ReducerKind::kOpaque (ignored otherwise).
  static absl::StatusOr<std::unique_ptr<Room>> Open(Bytes genesis_record,
                                                    const KeyPair* identity,
                                                    std::unique_ptr<Reducer> custom = nullptr);
  // OpenApp: as Open, for a node that may not run the room's app. For kOpaque the reducer
  // is `app(genesis)` (`app` may be empty). When there is none and `carrier` is set (a
  // relay), the room opens without a reducer: it verifies, stores, forwards and syncs
  // updates and checkpoints and chains every update, as a relay of a chat room does, but
  // never writes or checkpoints (can_write() is false). Without `carrier` that is an error.
  static absl::StatusOr<std::unique_ptr<Room>> OpenApp(
      Bytes genesis_record, const KeyPair* identity,
      const std::function<std::unique_ptr<Reducer>(const Genesis&)>& app, bool carrier);
  Room(const Room&) = delete;
  Room& operator=(const Room&) = delete;
  ~Room();

  // AddKeyEpoch: the next admin-signed key epoch. A rotation (epoch > 0) names the log
  // heads it was made at; old-epoch updates that are not their ancestors are set aside.
  Verdict AddKeyEpoch(Bytes record);
  // Receive: one update record from a peer. Checks size, epoch, signature, parents, in
  // that order. kOk / kOverCap / kBadPayload mean it is in the log (the last two: the state
  // did not change); kPending means held until its parents come.
  Verdict Receive(Bytes record) { return Receive(record, /*check_signature=*/true); }
  // Receive with the caller's DecodeUpdate view of exactly these bytes (it points into
  // `record`): the same checks without decoding and hashing the record a second time
  // (issue 15: decode once).
  Verdict Receive(Bytes record, const UpdateView& decoded);
  // ReceiveStored: a record this node verified and stored itself, read back from its own
  // checksummed store (a restart, a client's cache): every check but the signature, which
  // costs ~50 us and would make reopening a large room take seconds.
  Verdict ReceiveStored(Bytes record) { return Receive(record, /*check_signature=*/false); }
  // Placed: the updates the last Receive put in the log, in the order placed: the update
  // itself unless it went pending, and every pending update its arrival released.
  const std::vector<Hash256>& placed() const noexcept { return placed_; }
  // RecordOf: the exact record bytes of update `id` in the log (empty when it is not, or
  // is a checkpoint's base entry known by id only). Valid until the room changes.
  Bytes RecordOf(const Hash256& id) const noexcept;
  // Write: makes, signs and applies an update over the current heads; returns its record
  // for broadcast. Fails without changing anything when this node lacks the write key or
  // the payload could take the state past its cap.
  absl::StatusOr<std::vector<uint8_t>> Write(Bytes payload, RandomFn random) {
    return Write(payload, random, nullptr);
  }
  // Reissues: records re-issuing this node's own updates that a checkpoint has refused
  // since the last call (see the header comment), already in the log; the caller stores
  // and floods them like its own writes. Each line is re-issued once per refusal. Only
  // updates written by this Room object are known as this node's own (not after a restart).
  std::vector<std::vector<uint8_t>> Reissues(RandomFn random);
  // reissues_due: Reissues would return something (cheap).
  bool reissues_due() const noexcept { return !reissue_due_.empty(); }
  uint64_t reissues_made() const noexcept { return reissues_made_; }
  // OwnRecords: copies of the records of this node's own updates still in the log, oldest
  // first, and AdoptOwn: a fresh Room taking them over as its own (a member that starts
  // over from a checkpoint keeps what it wrote; Swarm::ResetLog).
  std::vector<std::vector<uint8_t>> OwnRecords() const;
  // Refused: update `id` is in the log, refused by the checkpoint in effect.
  bool Refused(const Hash256& id) const noexcept;
  // ReissueRecord: re-issues an own update that this room cannot place (its parents lie
  // inside the checkpoint it started from) and that a relay reported refused. Fails when
  // its line is in the order already, or this node cannot write.
  absl::StatusOr<std::vector<uint8_t>> ReissueRecord(Bytes record, RandomFn random);
  void AdoptOwn(const std::vector<std::vector<uint8_t>>& records);
  // Echo: update `id` belongs to a re-issue line of which another update entered the
  // order when it came: an application that shows updates as they come has shown this
  // message already (node/client skips it).
  bool Echo(const Hash256& id) const;

  // MakeCheckpoint: the signed (heads, state hash, encrypted state). Needs write access.
  absl::StatusOr<Checkpoint> MakeCheckpoint(RandomFn random) const;
  // AddCheckpoint: at a node that holds the log: puts the checkpoint in effect (as the
  // order's barrier) once all its heads are here (kPending until then). `blob` may be
  // empty; it is kept for peers that ask when present. `holder`, when given, holds the
  // blob's bytes (a fetched checkpoint object): the room keeps a reference to it instead
  // of a copy of megabytes (issue 15: a join's copies and page faults). `blob_hash`, when
  // given, is the blob's BLAKE2b-256 as the caller computed it (a fetch hashes the blob
  // while its pieces come): compared with the signed one instead of hashing 5 MB again.
  Verdict AddCheckpoint(Bytes record, Bytes blob, SharedBytes holder = nullptr,
                        const Hash256* blob_hash = nullptr);
  // NeedsBlob: false when a cached state with `cached_state_hash` is the checkpoint's.
  bool NeedsBlob(Bytes record, const Hash256& cached_state_hash) const;
  // LoadCheckpoint: starts an empty room from a checkpoint and its blob. Updates held
  // pending for the checkpoint's heads are placed (placed() lists them).
  // LoadCheckpointCached: the same from a cached plaintext state whose hash matched.
  // `holder` and `blob_hash` as for AddCheckpoint.
  // REQUIRES: the room's log is empty and it has no checkpoint.
  Verdict LoadCheckpoint(Bytes record, Bytes blob, SharedBytes holder = nullptr,
                         const Hash256* blob_hash = nullptr);
  Verdict LoadCheckpointCached(Bytes record, Bytes cached_state);

  // PlanSync: what a peer reporting `peer_heads` lacks, in order. Heads we do not know are
  // ignored (the peer has something we lack). O(log size).
  // `whole_log`: the peer keeps the whole log (a relay): send it the updates even when they
  // are larger than the checkpoint (a relay cannot start over from one; it would wait
  // forever for the updates the checkpoint's heads need). A node that started from the
  // checkpoint still answers "take the checkpoint": it cannot send what that covers.
  // `peer_holds_checkpoint`: the peer said it has our checkpoint in effect, so it gets the
  // updates after it even when its heads are unknown here (it holds something we lack).
  SyncPlan PlanSync(std::span<const Hash256> peer_heads, bool whole_log = false,
                    bool peer_holds_checkpoint = false) const;

  const Genesis& genesis() const noexcept { return genesis_; }
  const Hash256& id() const noexcept { return genesis_.room_id; }
  // The current heads, sorted by id.
  std::vector<Hash256> heads() const;
  // The state hash after the last update in the order.
  Hash256 state_hash() const noexcept;
  // The log's ids in order (after the checkpoint base).
  std::vector<Hash256> order() const;
  // SerializeState: the deterministic state bytes (empty for a relay).
  void SerializeState(std::vector<uint8_t>* out) const;
  // reducer: null for a carrier (a relay of an app room, OpenApp).
  const Reducer* reducer() const noexcept { return reducer_.get(); }
  // Payload: the decrypted payload of update `id` from the log, for an application that
  // shows updates as they come (node/client). False when the id is not in the log or
  // this node cannot read it. Allocates into `out`; not for the packet path.
  bool Payload(const Hash256& id, std::vector<uint8_t>* out) const;
  // identity: the key this room's grants are sealed to (null for a relay).
  const KeyPair* identity() const noexcept { return identity_ ? &*identity_ : nullptr; }
  bool can_read() const noexcept;
  bool can_write() const noexcept;
  // The latest key epoch known, or -1 before the first.
  int64_t epoch() const noexcept { return static_cast<int64_t>(epochs_.size()) - 1; }
  size_t log_size() const noexcept { return order_.size(); }
  size_t pending_size() const noexcept { return pending_.size(); }
  // Better: checkpoint `a` ranks above `b` (more updates covered, then the smaller id).
  static bool Better(const CheckpointInfo& a, const CheckpointInfo& b) noexcept {
    return a.covered != b.covered ? a.covered > b.covered : a.id < b.id;
  }
  // Improves: a checkpoint record this room would put in effect over its own (decodes
  // and ranks it; the signature is checked when it is added).
  bool Improves(Bytes record) const;
  // BeforeRotation: update `id` is known to be an ancestor of a rotation point (it, or a
  // pending update above it, is named by one): written before that rotation.
  bool BeforeRotation(const Hash256& id) const { return expected_.contains(id); }
  // CheckStartingPoint: the checkpoint's signature and its blob's hash, checked before a
  // node drops its log to start from it.
  Verdict CheckStartingPoint(Bytes record, Bytes blob) const;
  // RecordsOutside: copies of the records in the log (placed or refused) that checkpoint
  // `record` does not cover, parents first: what a node keeps when it starts over from it.
  // Not those held pending: they come again, and are told to the application when placed.
  std::vector<std::vector<uint8_t>> RecordsOutside(Bytes record) const;
  // PruneCovered: drops the updates behind `barrier_heads`, the heads of a checkpoint in
  // the line (the checkpoint in effect, or an older one it covers: see the order rule),
  // as if this node had started from that checkpoint: what it covers leaves memory; its
  // heads, and any covered update a kept one names as a parent, stay as base entries
  // (known by id only); refused updates and everything after the barrier stay. The order,
  // the heads and the state hash do not change; a peer lacking the barrier is told to take
  // the checkpoint (PlanSync). The ids of every covered record are appended to `pruned`
  // (for the storage to delete). Returns how many updates left the log: 0 when the heads
  // are not a barrier of the line. Allocates; control path (a timer, not per packet).
  size_t PruneCovered(std::span<const Hash256> barrier_heads, std::vector<Hash256>* pruned);
  // Holds: `id` is in the log (placed, refused or a base entry).
  bool Holds(const Hash256& id) const noexcept { return index_.contains(id); }
  // WasPruned: `id` is one of the last kPrunedIdsMax updates pruned (a duplicate).
  bool WasPruned(const Hash256& id) const noexcept;
  // What this room holds: updates in the log (placed, refused, base, dead), updates
  // pruned so far, and the bytes its log, order, pending sets and checkpoint take
  // (an estimate of the heap: records, slots, index, order; not the reducer's state).
  size_t entries_held() const noexcept { return entries_.size(); }
  uint64_t pruned_count() const noexcept { return pruned_count_; }
  uint64_t HeldBytes() const noexcept;
  // MissingParents: up to `max` ids that held updates wait for (diagnostics, tools).
  // Only the roots: parents that are neither in the log nor held pending themselves;
  // `quarantined` (may be null) says which of them sit in quarantine.
  std::vector<Hash256> MissingParents(size_t max, std::vector<bool>* quarantined = nullptr) const {
    std::vector<Hash256> out;
    for (const auto& [parent, children] : waiting_) {
      if (out.size() >= max) break;
      if (index_.contains(parent) || pending_.contains(parent)) continue;
      out.push_back(parent);
      if (quarantined != nullptr) quarantined->push_back(quarantine_.contains(parent));
    }
    return out;
  }
  size_t quarantine_size() const noexcept { return quarantine_.size(); }
  std::string DebugEntry(const Hash256& id) const;
  // DebugAncestry: where `from` and up to `max` of its held ancestors are (log, pending,
  // quarantine, absent); DebugRotationHeads: that for each rotation point's heads.
  std::string DebugAncestry(const Hash256& from, size_t max) const;
  std::string DebugRotationHeads() const;
  std::string DebugCheckpoint() const;
  bool has_checkpoint() const noexcept { return !cp_record_.empty(); }
  // RootsRefused: a new root would branch from inside the checkpoint in effect (one that
  // covers something: a checkpoint of an empty log refuses nothing).
  bool RootsRefused() const noexcept { return has_checkpoint() && !cp_.heads.empty(); }
  // Counts the checkpoints put in effect (added or loaded), so that a caller notices when
  // the room put an awaited one in effect by itself, on the update that brought its heads.
  uint64_t checkpoint_changes() const noexcept { return cp_changes_; }
  // checkpoint_mismatch: a reader whose own replay of the history the checkpoint in effect
  // covers reached another state than the checkpoint names (the writer lied, or this node
  // ordered that history differently because it missed an earlier checkpoint).
  bool checkpoint_mismatch() const noexcept;
  const std::vector<uint8_t>& checkpoint_record() const noexcept { return cp_record_; }
  Bytes checkpoint_blob() const noexcept { return cp_blob_; }
  uint64_t verdict_count(Verdict v) const noexcept {
    return verdict_counts_[static_cast<int>(v)];
  }

 private:
  static constexpr uint32_t kNoPos = UINT32_MAX;
  static constexpr uint32_t kTailSegment = UINT32_MAX;

  struct Entry {
    Hash256 id{};
    RecordArena::Ref record;      // exact bytes received (in arena_); empty for a base entry
    absl::InlinedVector<uint32_t, 2> parents;
    absl::InlinedVector<uint32_t, 2> children;
    uint32_t epoch = 0;
    uint32_t pos = kNoPos;
    uint32_t segment = kTailSegment;  // checkpoint generation that covers it, or tail
    bool base = false;   // a checkpoint head known by id only (loaded from a checkpoint)
    bool dead = false;   // removed by a rotation
    bool refused = false;  // branches from inside the checkpoint in effect: kept, unordered
    bool shown = false;    // entered the order when it was placed (announced as applied)
  };
  struct EpochState {
    PublicKey write_key{};
    std::optional<ContentKey> content_key;
    std::optional<KeyPair> write;
    std::vector<uint8_t> previous_box;  // previous content key under this one
    Nonce previous_nonce{};
    std::vector<Hash256> rotation_heads;
  };
  // Held: a verified update on its way into the log. `record` views the caller's buffer
  // while Receive or Write runs (placing it copies it into arena_, once); one held beyond
  // the call (pending, quarantined) owns a copy first (Own). Moved, never copied: a moved
  // vector keeps its buffer, so `record` stays valid.
  struct Held {
    Bytes record;
    std::vector<uint8_t> owned;
    absl::InlinedVector<Hash256, 2> parents;
    uint32_t epoch = 0;
    std::optional<Hash256> reissue_of;
    Held() = default;
    Held(Held&&) = default;
    Held& operator=(Held&&) = default;
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    void Own() {
      if (!owned.empty() && owned.data() == record.data()) return;
      owned.assign(record.begin(), record.end());
      record = Bytes(owned.data(), owned.size());
    }
  };
  struct Snapshot {
    uint32_t pos = 0;  // updates applied before it
    std::vector<uint8_t> state;
  };

  Room(Genesis genesis, const KeyPair* identity, std::unique_ptr<Reducer> reducer);

  Verdict Count(Verdict v) noexcept;
  absl::StatusOr<std::vector<uint8_t>> Write(Bytes payload, RandomFn random,
                                             const Hash256* reissue_of);
  // LineApplied: another update of slot's re-issue line is applied before order position
  // `pos` in slot's segment (the fold); with kNoPos, is in the order anywhere or in the
  // checkpoint's base (the author's question: anything to re-issue?).
  bool LineApplied(uint32_t slot, uint32_t pos) const;
  // NoteRefusedOwn: after ApplyLine, queues the lines of own updates it left refused;
  // MaybeDue: the same for one slot.
  void NoteRefusedOwn();
  void MaybeDue(uint32_t slot);
  void NoteAuthored(const Hash256& id);
  // Admit: a verified update whose epoch rule passed; places it or holds it pending,
  // then releases what waited on it. Never recursive: a worklist.
  Verdict Admit(const Hash256& id, Held held);
  Verdict PlaceOne(const Hash256& id, Held* held, bool* placed);
  // Release: places what waited on `placed` (and on unquarantined updates), worklist in
  // release_work_ (kept between calls: no allocation when nothing waits).
  void Release(std::span<const Hash256> placed);
  void Hold(const Hash256& id, Held&& held);
  Verdict Insert(const Hash256& id, Held&& held);
  // AddEntry: a new slot for a placed update, linked to its parents (all in the log).
  uint32_t AddEntry(const Hash256& id, Held&& held, bool refused);
  // ApplyLine: segments from line_, refusal under the checkpoint in effect, the order.
  void ApplyLine(size_t kept);
  uint64_t CoveredBy(std::span<const uint32_t> head_slots) const;
  Verdict ApplyAt(uint32_t pos);
  Verdict Refold(uint32_t from_pos);
  void TryAwaitedCheckpoint();
  void RebuildOrder();
  void RecomputeHeads();
  void Kill(uint32_t slot, bool quarantine);
  // Expect: `id` is an old-epoch ancestor of a rotation point (so are its pending
  // ancestors): taken when it comes, let out of quarantine if held there. `placed` (may be
  // null) gets the slots of the log's updates that those pending ancestors name.
  void Expect(const Hash256& id, std::vector<uint32_t>* placed = nullptr);
  void PruneForRotation(const std::vector<Hash256>& rotation_heads, uint32_t epoch);
  void BackfillKeys();
  static bool ParseHeld(Bytes record, Held* out);
  Verdict Receive(Bytes record, bool check_signature);
  Verdict ReceiveDecoded(Bytes record, const UpdateView& u, bool check_signature);
  Verdict InstallCheckpoint(const CheckpointInfo& cp, Bytes record, Bytes blob,
                            SharedBytes holder);
  Verdict LoadBase(Bytes record, Bytes blob, Bytes plain_state, SharedBytes holder,
                   const Hash256* blob_hash);
  // BlobMatches: `blob` is the one `cp` signs (its size, and its hash: `blob_hash` when the
  // caller computed it, else hashed here).
  static bool BlobMatches(Bytes blob, const Hash256* blob_hash, const CheckpointInfo& cp);
  // KeepBlob: the checkpoint blob in effect from now on: a view into `holder` when it
  // holds `blob`, else a copy of its own.
  void KeepBlob(Bytes blob, SharedBytes holder);
  Verdict CheckCheckpoint(Bytes record, CheckpointInfo* cp) const;
  std::vector<uint8_t> AncestorMask(std::span<const uint32_t> from) const;
  const ContentKey* ContentKeyFor(uint32_t epoch) const noexcept;

  Genesis genesis_;
  std::optional<KeyPair> identity_;
  std::unique_ptr<Reducer> reducer_;
  std::vector<EpochState> epochs_;

  RecordArena arena_;                                    // entries_' records
  std::vector<Hash256> release_work_;                    // Release's worklist
  bool releasing_ = false;                               // Release is running
  // What grows with the log lives in base::BlockPool (address space reserved at start),
  // not the heap, once it is 4 KiB or more (issue 15: allocs_per_update).
  base::PoolVector<Entry> entries_;                      // slots; dead ones stay
  absl::flat_hash_map<Hash256, uint32_t, IdHash, std::equal_to<Hash256>,
                      base::PoolAllocator<std::pair<const Hash256, uint32_t>>>
      index_;                                            // live entries by id
  base::PoolVector<uint32_t> order_;                     // slots in order
  base::PoolVector<Hash256> chain_;                      // state hash after order_[i]
  std::vector<uint32_t> heads_;                          // slots with no live child

  absl::flat_hash_map<Hash256, Held, IdHash> pending_;
  std::vector<Hash256> placed_;  // see placed(); cleared by each Receive and AddKeyEpoch
  absl::flat_hash_map<Hash256, std::vector<Hash256>, IdHash> waiting_;  // parent -> children
  absl::flat_hash_map<Hash256, Held, IdHash> quarantine_;
  std::deque<Hash256> quarantine_fifo_;
  absl::flat_hash_set<Hash256, IdHash> expected_;  // old-epoch ids a rotation point names

  // Base: the state the order starts from (the empty room, or a loaded checkpoint).
  Hash256 base_hash_{};
  std::vector<uint8_t> base_state_;
  std::deque<Snapshot> snapshots_;
  std::vector<uint8_t> scratch_;  // decrypted payload; reused so applying does not allocate
  bool reader_ = false;           // has a reducer and some content key: folds the state
  std::vector<Hash256> unquarantine_;  // held ids a rotation point has just named

  // Checkpoint in effect.
  std::vector<uint8_t> cp_record_;
  SharedBytes cp_blob_holder_;  // holds the bytes cp_blob_ views
  Bytes cp_blob_;
  CheckpointInfo cp_;
  uint32_t cp_generation_ = 0;
  absl::flat_hash_set<uint32_t> cp_head_slots_;
  // The line: head slots of each checkpoint put in effect that the newest covers, oldest
  // first; line_[g - 1] is segment g's barrier.
  std::vector<std::vector<uint32_t>> line_;
  uint64_t base_covered_ = 0;
  uint64_t cp_changes_ = 0;  // `covered` of the checkpoint this node started from
  uint32_t tail_start_ = 0;  // first order position after the barrier
  std::vector<uint8_t> awaited_cp_record_;  // a checkpoint waiting for its heads
  std::vector<uint8_t> awaited_cp_blob_;

  // Re-issue lines: the slots of the updates that name a line's first (its root id), and
  // the root of each such slot.
  absl::flat_hash_map<Hash256, absl::InlinedVector<uint32_t, 1>, IdHash> lines_;
  absl::flat_hash_map<uint32_t, Hash256> root_of_;
  // Updates this node wrote (bounded, oldest out first) and lines due for a re-issue.
  absl::flat_hash_set<Hash256, IdHash> authored_;
  std::deque<Hash256> authored_fifo_;
  std::vector<Hash256> reissue_due_;  // ids of refused own updates, one per line
  uint64_t reissues_made_ = 0;
  // Pruning (room_prune.cc).
  uint64_t pruned_count_ = 0;
  absl::flat_hash_set<uint64_t> pruned_ids_;  // 8-byte prefixes of the last pruned ids
  std::deque<uint64_t> pruned_fifo_;

  uint64_t verdict_counts_[kVerdictCount] = {};
};

// Own updates remembered for re-issue: a checkpoint that refuses an older one arrives
// long after (the writer was far behind), and it is a bounded set.
inline constexpr size_t kAuthoredMax = 4096;

}  // namespace ringpeer::room
