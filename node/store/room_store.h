// RoomStore: one shard's durable room data in an LMDB environment (DESIGN.md section 8).
//
// Each shard owns DATA_DIR/shard-N/ (data.mdb + lock.mdb) holding, per room it serves, the
// genesis record, the key epochs, the update log in arrival order (its index by update id
// is kept in memory, rebuilt from the log at Open: format 2), and the latest checkpoint
// (record + blob), plus small meta values (format version,
// owning node id, the routing table). Writes are buffered in memory and made durable
// together by Commit(), one write transaction and its fsyncs, which the shard calls once
// per loop iteration; a relay may acknowledge an update only after the Commit() that
// carried it returned OK. So durability costs a sync per loop iteration, not per update.
//
// Failure model: a process crash (SIGKILL) at any point loses only batches whose Commit()
// had not returned; LMDB's copy-on-write commit never shows half a batch. A failed Commit
// leaves the previous committed state as it was and drops the batch. Every value carries a
// SipHash checksum, and Open() walks the whole environment in a forked child first, so a
// corrupt file is reported as an error naming its path instead of crashing the node
// (LMDB trusts its pages and may fault on a scribbled one).
//
// Shard-local: one thread (the shard's) calls it. The environment is opened with
// MDB_NOTLS, so a RoomStore may be opened on one thread and then handed to the shard
// thread that uses it from then on. Owning type: not copyable.
//
// The writer thread (issue 15, item 2). After UseWriterThread(), CommitStart() hands the
// staged batch to a thread of this store's own, which runs the same fully synced commit
// while the shard goes on staging into a second buffer (double buffering: one batch in
// flight, a one-slot lock-free hand-off through an atomic state word, futex waits). The
// writer owns the LMDB write transaction, the id index, the sequence cache and the undo
// log while a batch is in flight; the shard owns the staging buffer and the room list. When
// the batch is durable (or failed) the writer wakes the shard through its transport's
// eventfd, and CommitPoll() gives the result: the acks queued before CommitStart() may go
// out only on OK. A batch that failed for lack of space goes back in front of what was
// staged since, so the order of writes is kept. Reads of the index (HasUpdate,
// updates_count: tests and tools) wait for the batch in flight; Load does not (it reads
// the batch's ops, which the writer only reads too).
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "base/block_pool.h"
#include "node/room/storage.h"
#include "wire/crypto.h"

struct MDB_env;

namespace ringpeer::store {

// Default LMDB map size: the most one shard's environment may hold. LMDB reserves this
// much address space up front (not disk); 1 GiB holds ~200 checkpoints of 5 MB or millions
// of updates. The operator sets it with `ringpeer serve --storage-max` (all shards
// together, split evenly) or --storage-map-bytes (per shard).
inline constexpr uint64_t kStoreMapBytesDefault = uint64_t{1} << 30;
// Smallest map accepted: LMDB needs a few dozen pages for its own trees.
inline constexpr uint64_t kStoreMapBytesMin = 64 * 1024;
// Most bytes staged between commits. Reached only while commits keep failing (the shard
// commits every loop iteration); staging then fails so memory stays bounded and the
// updates are not acknowledged, which makes publishers retransmit later.
inline constexpr size_t kStagedBytesMax = size_t{32} << 20;
// The format this build writes and reads; a newer one is refused, never touched.
// 2: the update-id index is kept in memory (rebuilt from the log at Open), not in LMDB: a
// B-tree keyed by random ids dirtied a page per update and cost a relay ~8 us per update
// (issue 15). A version-1 store is upgraded at Open (its index emptied); older builds
// refuse a version-2 store.
inline constexpr uint32_t kStoreFormatVersion = 2;
// Names inside a shard directory.
inline constexpr char kShardDirPrefix[] = "shard-";

using wire::Bytes;
using wire::Hash256;

// How Commit() reaches the disk. Both fsync before Commit() returns; they differ in what a
// power loss *during* a commit can do.
enum class StoreSync : uint8_t {
  // LMDB's default: fsync the data pages, then write and fsync the meta page. A power loss
  // at any point leaves either the old or the new state. Two fsyncs per commit.
  kSafe,
  // MDB_NOSYNC plus one mdb_env_sync() after the commit: one fsync per commit, equally
  // durable once Commit() returns, but a power loss between the meta write and the sync may
  // leave a meta page naming data pages that never reached the disk (a corrupt store).
  // Process crashes (SIGKILL) are safe either way: the page cache survives them.
  kOneSync,
};

struct RoomStoreOptions {
  // LMDB map size (see kStoreMapBytesDefault). Raising it on an existing store is fine.
  uint64_t map_bytes = kStoreMapBytesDefault;
  // Walk the whole environment in a forked child before opening it, so that a corrupt file
  // cannot crash this process. Costs one read of the store at start-up.
  bool verify_on_open = true;
  StoreSync sync = StoreSync::kSafe;
  // The node that owns the data directory. When set, a store written by another node id is
  // refused (a copied data directory would otherwise serve another node's acknowledgements).
  std::optional<Hash256> node_id;
};

// Figures for logs and metrics.
struct RoomStoreStats {
  uint64_t commits = 0;
  uint64_t commits_failed = 0;
  uint64_t updates_written = 0;
  uint64_t updates_duplicate = 0;  // skipped at commit: the id was already stored
  uint64_t map_bytes = 0;
  uint64_t used_bytes = 0;  // pages in use times page size, at the last commit
  uint64_t seq_cache_stale = 0;  // a cached log end collided with a stored key (a bug)
  uint64_t index_skipped = 0;    // damaged log entries left out of the id index at Open
  uint64_t commit_us = 0;        // time the successful commits took (transaction and sync)
};

class RoomStore final : public room::RoomStorage {
 public:
  // An update id's first 16 bytes: the in-memory index's key.
  using IdKey = std::pair<uint64_t, uint64_t>;
  // Open: opens (or creates) DATA_DIR/shard-N. A new environment is built in a temporary
  // directory and renamed into place, so a crash during creation never leaves a half-made
  // store that later reads as corrupt. Errors, each naming the path: corrupt environment
  // (DataLoss), another program's or a newer format, or another node's store
  // (FailedPrecondition; nothing is written), and system errors.
  // REQUIRES: the caller holds the data directory's lock (DataDir).
  static absl::StatusOr<std::unique_ptr<RoomStore>> Open(const std::string& data_dir,
                                                         uint32_t shard,
                                                         const RoomStoreOptions& options);
  RoomStore(const RoomStore&) = delete;
  RoomStore& operator=(const RoomStore&) = delete;
  ~RoomStore() override;

  // ---- room::RoomStorage (see node/room/storage.h for the contract) ----
  // Staging copies the bytes into an arena and does no I/O. Staging fails with NotFound for
  // a room that is neither stored nor staged, and with ResourceExhausted when the staged
  // batch would pass kStagedBytesMax (commits keep failing: the disk or map is full).

  absl::Status PutGenesis(const Hash256& room_id, Bytes genesis) override;
  // An epoch already stored is kept (epochs are immutable once signed).
  absl::Status PutKeyEpoch(const Hash256& room_id, uint32_t epoch, Bytes record) override;
  // An id already stored, or staged earlier, is skipped at commit (updates_duplicate).
  absl::Status Append(const Hash256& room_id, const Hash256& update_id,
                      Bytes record) override;
  absl::Status PutCheckpoint(const Hash256& room_id, Bytes record, Bytes blob) override;
  // Keeps a reference to `holder` until the batch is written, not a copy of the blob.
  absl::Status PutCheckpointShared(const Hash256& room_id, Bytes record, Bytes blob,
                                   const room::SharedBytes& holder) override;
  // Commit: writes the whole batch in one LMDB write transaction and returns once it is on
  // disk (fsync). OK means every staged write is durable and may be acknowledged; any error
  // means none of them is and the previous committed state is intact. An empty batch
  // returns OK without I/O. Errors: a full map (ResourceExhausted, "raise --storage-max")
  // or disk (ResourceExhausted, including EIO from a short write on a full filesystem):
  // the batch stays staged and the next Commit retries it, so the store recovers by
  // itself once space is freed. Anything else (I/O error with space left, corruption):
  // the batch is dropped and the store refuses every later commit until the node
  // restarts, since after a failed fsync the kernel may have dropped pages that a retry
  // would then report durable.
  absl::Status Commit() override;
  // Rooms: stored and staged rooms, sorted by id.
  std::vector<Hash256> Rooms() override;
  bool Contains(const Hash256& room_id) override { return rooms_.contains(room_id); }
  // Load: the committed room with the staged writes (the batch in flight included) applied
  // over it; does not wait for the writer. Checks every value's checksum (DataLoss names
  // the path).
  absl::StatusOr<room::LoadedRoom> Load(const Hash256& room_id) override;
  absl::Status Forget(const Hash256& room_id) override;
  // Prune: one DeleteUpdate per id, so the records and their index entries go in the
  // next Commit's transaction, with the rest of the batch.
  absl::Status Prune(const Hash256& room_id, std::span<const Hash256> update_ids) override;

  // ---- beyond the interface ----

  // DeleteUpdate: stages removing an update from its room's log (pruned behind a
  // checkpoint, or killed by a rotation). An id not stored in that room is ignored.
  absl::Status DeleteUpdate(const Hash256& room_id, const Hash256& update_id);
  // PutMeta: stages a small named value (e.g. "routing" for the routing table), replaced
  // whole. REQUIRES: `name` is not empty and does not start with "ringpeer." (the store's).
  absl::Status PutMeta(absl::string_view name, Bytes value);
  // GetMeta: a committed value put with PutMeta, or nullopt.
  absl::StatusOr<std::optional<std::vector<uint8_t>>> GetMeta(absl::string_view name) const;
  // HasUpdate: whether an update with this id is committed. By the id's first 16 bytes:
  // another id sharing them (2^64 work to make) would read as present, and an Append of it
  // would be skipped as a duplicate (only its maker's own update).
  // Waits for a batch in flight.
  absl::StatusOr<bool> HasUpdate(const Hash256& update_id);
  // Updates committed (the in-memory index's size). Waits for a batch in flight.
  size_t updates_count() {
    CommitWait();
    return ids_.size();
  }
  // Verify: reads every value and checks its checksum and shape (Open's check, in-process).
  absl::Status Verify() const;

  // ---- the writer thread (see the top of this file; room::RoomStorage's contract) ----

  // UseWriterThread: later CommitStart calls hand their batch to this store's writer
  // thread (started at the first one, so after every store's forked check at Open), which
  // writes `wake_fd` (an eventfd; -1: none) when a batch is done. Call before the shard
  // runs; again with -1 before the eventfd is closed (no batch may be in flight). Without
  // it CommitStart commits on the calling thread, as Commit does.
  void UseWriterThread(int wake_fd) override;
  // CommitStart: hands the staged writes over as one batch. REQUIRES: no batch in flight
  // and the last one's result taken (CommitPoll), else it asserts. An empty batch, or a
  // stopped store, answers at once.
  void CommitStart() override;
  bool CommitInFlight() const noexcept override;
  // CommitPoll: the result of the last batch started, once, when it is done; nullopt while
  // it is in flight or after it was reported.
  std::optional<absl::Status> CommitPoll() override;
  CommitFigures commit_figures() const noexcept override {
    return {stats_.commits, stats_.commit_us};
  }
  // CommitWait: blocks until no batch is in flight (its result stays for CommitPoll) and
  // the writer no longer touches `wake_fd`, which the caller may then close.
  void CommitWait() override;

  // Test only: the next batch fails as a disk failing with `err` (an errno) would make it,
  // with space left: before its transaction commits (`after_commit` false: LMDB's write
  // or its sync inside the commit), or, with StoreSync::kOneSync, in the sync after it
  // (true). Either stops the store (see WriteOut). Set before CommitStart/Commit.
  void FailNextCommitForTest(int err, bool after_commit) noexcept {
    fail_after_commit_.store(after_commit, std::memory_order_relaxed);
    fail_next_commit_.store(err, std::memory_order_release);
  }

  // Staged writes not yet durable, the batch in flight included (0 after a successful
  // Commit).
  size_t staged_count() const noexcept { return ops_.size() + batch_ops_.size(); }
  size_t staged_bytes() const noexcept { return arena_.size() + batch_arena_.size(); }
  const std::string& path() const noexcept { return path_; }
  RoomStoreStats stats() const noexcept;

 private:
  enum class OpKind : uint8_t {
    kGenesis, kKeyEpoch, kUpdate, kCheckpoint, kDeleteUpdate, kDeleteRoom, kMeta
  };
  // One buffered write; its bytes live in arena_ so that a batch allocates nothing once
  // the arena and op vector have grown to a loop iteration's size.
  struct Op {
    OpKind kind;
    uint32_t epoch = 0;
    Hash256 room{};
    Hash256 id{};           // update id (kUpdate, kDeleteUpdate)
    size_t offset = 0;      // first value in arena_
    size_t bytes = 0;
    size_t offset2 = 0;     // second value (checkpoint blob), in arena_ or in `holder`
    size_t bytes2 = 0;
    room::SharedBytes holder = nullptr;  // holds the second value (PutCheckpointShared), or null
  };
  // The named databases; their handles index dbi_.
  enum Db : uint8_t { kRooms, kEpochs, kUpdates, kUpdateIds, kCheckpoints, kMeta, kDbCount };

  struct Batch;

  RoomStore(std::string path, MDB_env* env, StoreSync sync);
  static absl::Status Create(const std::string& data_dir, const std::string& path,
                             const RoomStoreOptions& options);
  static absl::StatusOr<std::unique_ptr<RoomStore>> OpenEnv(const std::string& path,
                                                            const RoomStoreOptions& options,
                                                            bool create);
  static absl::Status VerifyInChild(const std::string& path, const RoomStoreOptions& options);
  absl::Status CheckFileSize(const std::string& data_file) const;
  absl::Status OpenDbs(const RoomStoreOptions& options, bool create);
  absl::Status CheckFormat(void* txn, const RoomStoreOptions& options, uint32_t* version) const;
  // Upgrade: a version-1 store to this format (empties the LMDB index). BuildIndex: ids_
  // from the log. Both at Open, in the process that serves the store (not the verifier).
  absl::Status Upgrade();
  absl::Status BuildIndex();
  // WarmPageCache: fills LMDB's cache of dirty pages (see the .cc), at Open.
  void WarmPageCache();
  static constexpr uint32_t kWarmPages = 256;
  // Reconcile: after a failed commit, makes ids_ say what the log holds for every id the
  // batch touched (the transaction may or may not have committed).
  void Reconcile();
  // Stage: copies `first` and `second` into arena_; with `holder` (which must hold
  // `second`), `second` stays in the holder's bytes, referenced by the op.
  absl::Status Stage(Op op, Bytes first, Bytes second = {},
                     const room::SharedBytes& holder = nullptr);
  // Second: an op's second value, in `arena` or in its holder.
  static Bytes Second(const Op& op, const std::vector<uint8_t>& arena) noexcept {
    return op.holder != nullptr ? Bytes(op.holder->data() + op.offset2, op.bytes2)
                                : Bytes(arena.data() + op.offset2, op.bytes2);
  }
  absl::Status CheckRoom(const Hash256& room_id) const;
  absl::Status WriteBatch(Batch* batch, int* commit_rc);
  // TakeBatch (shard): the staged writes become the batch. WriteOut (writer, or the shard
  // without one): writes the batch, as Commit documents. FinishBatch (shard): after
  // WriteOut, empties the batch (OK), puts it back in front of the staged writes (a
  // transient failure), or drops both (the store stopped).
  void TakeBatch();
  absl::Status WriteOut();
  absl::Status CommitHere();  // TakeBatch, WriteOut, FinishBatch on the calling thread
  void FinishBatch(const absl::Status& st);
  void SettleDone();  // state kDone -> kIdle, FinishBatch, the result kept for CommitPoll
  static void* WriterMain(void* self);
  void WriterLoop();
  void DropStaged();
  absl::Status ReadRooms();
  absl::Status ApplyOp(Batch* batch, const Op& op);
  absl::Status ApplyUpdate(Batch* batch, const Op& op);
  absl::Status ApplyDeleteRoom(Batch* batch, const Op& op);
  // LogEnd: the next sequence number of `room`'s log in `txn` (its last key + 1, or 0).
  absl::Status LogEnd(Batch* batch, const Hash256& room, uint64_t* next);
  absl::Status LoadCommitted(const Hash256& room, room::LoadedRoom* out,
                             std::vector<Hash256>* update_ids) const;
  absl::Status Error(int rc, absl::string_view what) const;

  std::string path_;
  MDB_env* env_ = nullptr;
  unsigned int dbi_[kDbCount] = {};  // MDB_dbi, kept out of this header
  StoreSync sync_ = StoreSync::kSafe;
  uint64_t map_bytes_ = 0;    // as configured; LMDB's own figure once the env is open
  bool env_opened_ = false;   // mdb_env_open succeeded
  // Staging (the shard's): what the next batch will hold.
  std::vector<Op> ops_;
  std::vector<uint8_t> arena_;
  // The batch being written: the writer's while state_ is kSubmitted, else the shard's.
  std::vector<Op> batch_ops_;
  std::vector<uint8_t> batch_arena_;
  // kIdle: no batch in flight. kSubmitted: the writer owns the batch, ids_, seq_cache_,
  // seq_staged_, id_undo_, broken_ and wstats_. kDone: it has finished (result in
  // batch_result_). kStop: the writer exits. Release on each hand-off, acquire on reading.
  enum : uint32_t { kIdle = 0, kSubmitted = 1, kDone = 2, kStop = 3 };
  std::atomic<uint32_t> state_{kIdle};
  std::atomic<int> fail_next_commit_{0};        // FailNextCommitForTest
  std::atomic<bool> fail_after_commit_{false};
  std::atomic<bool> ringing_{false};  // the writer is writing wake_fd_ (see WriterLoop)
  absl::Status batch_result_;                    // written by the writer before kDone
  std::optional<absl::Status> pending_result_;   // for CommitPoll
  bool writer_wanted_ = false;
  int wake_fd_ = -1;
  bool writer_started_ = false;
  pthread_t writer_{};
  // Rooms stored or staged (Rooms(), and the check that a room exists before staging).
  absl::flat_hash_set<Hash256> rooms_;
  // Each room's next log sequence number as of the last commit, so that a batch's first
  // update of a room needs no cursor (LMDB mallocs one: issue 15's allocations per update).
  // seq_staged_ holds a batch's (room, next) until its commit succeeds; any failed commit
  // clears the cache (the transaction may have committed before a failed sync). Updates
  // are put with MDB_NOOVERWRITE, and a collision re-reads the end of the log.
  absl::flat_hash_map<Hash256, uint64_t> seq_cache_;
  // Every stored update by its id's first 16 bytes (collisions need 2^64 work) -> its
  // log sequence number in its room (DESIGN.md 8). Changed while a batch is written, with
  // each change in id_undo_ until the commit's outcome is known.
  // Its table lives in base::BlockPool once it is 4 KiB or more (it grows with the log).
  absl::flat_hash_map<IdKey, uint64_t, absl::Hash<IdKey>, std::equal_to<IdKey>,
                      base::PoolAllocator<std::pair<const IdKey, uint64_t>>>
      ids_;  // 24-byte slots
  struct IdChange {  // an id the batch added or removed, at (room, seq)
    IdKey key;
    uint64_t seq = 0;
    Hash256 room{};
    Hash256 id{};
  };
  std::vector<IdChange> id_undo_;
  static constexpr size_t kIdUndoKeptMax = 4096;  // capacity kept between batches
  uint32_t format_version_ = kStoreFormatVersion;  // as found at Open
  std::vector<std::pair<Hash256, uint64_t>> seq_staged_;
  static constexpr size_t kSeqStagedMax = 64;
  // Set after an error that leaves the environment unusable (an fsync failure: the kernel
  // may have dropped the dirty pages, so retrying could ack data that is not on disk).
  absl::Status broken_;
  RoomStoreStats wstats_;  // kept by whoever writes batches (the writer, when it runs)
  RoomStoreStats stats_;   // the shard's copy, taken when a batch is finished
};

// ShardDir: DATA_DIR/shard-N.
std::string ShardDir(const std::string& data_dir, uint32_t shard);

}  // namespace ringpeer::store
