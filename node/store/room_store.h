// RoomStore: one shard's durable room data in an LMDB environment (DESIGN.md section 8).
//
// Each shard owns DATA_DIR/shard-N/ (data.mdb + lock.mdb) holding, per room it serves, the
// genesis record, the key epochs, the update log in arrival order with an index by update
// id, and the latest checkpoint (record + blob), plus small meta values (format version,
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
// Shard-local; not thread-safe. The environment is opened with MDB_NOTLS, so a RoomStore
// may be opened on one thread and then handed to the shard thread that uses it from then
// on. Owning type: not copyable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "wire/crypto.h"

struct MDB_env;

namespace ringpeer::store {

// Default LMDB map size: the most one shard's environment may hold. LMDB reserves this
// much address space up front (not disk); 1 GiB holds ~200 checkpoints of 5 MB or millions
// of updates, and the operator raises it with --storage-max.
inline constexpr uint64_t kStoreMapBytesDefault = uint64_t{1} << 30;
// Smallest map accepted: LMDB needs a few dozen pages for its own trees.
inline constexpr uint64_t kStoreMapBytesMin = 64 * 1024;
// Largest single record or blob accepted by the buffered writers (a checkpoint blob is at
// most the state cap, 5 MB by default; room caps above 64 MiB are not supported).
inline constexpr size_t kStoreValueBytesMax = size_t{64} << 20;
// The format this build writes and reads; a newer one is refused, never touched.
inline constexpr uint32_t kStoreFormatVersion = 1;
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

// A room as stored, for rebuilding the room model after a restart.
struct StoredRoom {
  Hash256 id{};
  std::vector<uint8_t> genesis;
  std::vector<std::vector<uint8_t>> key_epochs;  // by epoch number, 0 first
  bool has_checkpoint = false;
  std::vector<uint8_t> checkpoint_record;
  std::vector<uint8_t> checkpoint_blob;
  std::vector<std::vector<uint8_t>> updates;  // records in arrival order
};

// Figures for logs and metrics.
struct RoomStoreStats {
  uint64_t commits = 0;
  uint64_t commits_failed = 0;
  uint64_t updates_written = 0;
  uint64_t updates_duplicate = 0;  // skipped at commit: the id was already stored
  uint64_t map_bytes = 0;
  uint64_t used_bytes = 0;  // pages in use times page size, at the last commit
};

class RoomStore {
 public:
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
  ~RoomStore();

  // ---- buffered writes: memory only, made durable by the next Commit() ----

  // PutGenesis: stores a room's genesis record (replacing nothing: the id names it).
  void PutGenesis(const Hash256& room, Bytes record);
  // PutKeyEpoch: stores key epoch `epoch` of a room, replacing an earlier copy.
  void PutKeyEpoch(const Hash256& room, uint32_t epoch, Bytes record);
  // AppendUpdate: appends an update to the room's log. An id already stored, or already in
  // this batch, is skipped at commit (counted in updates_duplicate).
  // REQUIRES: the room's genesis is stored or in this batch.
  void AppendUpdate(const Hash256& room, const Hash256& update_id, Bytes record);
  // PutCheckpoint: replaces the room's checkpoint (record and blob, the blob may be empty).
  void PutCheckpoint(const Hash256& room, Bytes record, Bytes blob);
  // DeleteUpdate: removes an update from the log (pruned behind a checkpoint, or killed by
  // a rotation). An id not stored is ignored.
  void DeleteUpdate(const Hash256& update_id);
  // DeleteRoom: removes a room and everything stored for it.
  void DeleteRoom(const Hash256& room);
  // PutMeta: a small named value (e.g. "routing" for the routing table), replaced whole.
  // REQUIRES: `name` does not start with "ringpeer." (reserved for the store itself).
  void PutMeta(absl::string_view name, Bytes value);

  // Commit: writes the whole batch in one LMDB write transaction and returns once it is on
  // disk (fsync). OK means every buffered write is durable and may be acknowledged; any
  // error means none of them is, the previous committed state is intact, and the batch
  // has been dropped. An empty batch returns OK without I/O. Errors: a full map
  // (ResourceExhausted, "raise --storage-max"), a full disk (ResourceExhausted), I/O errors
  // (after which the store refuses further commits until it is reopened).
  absl::Status Commit();
  // Discard: drops the buffered batch without writing it.
  void Discard();
  // Buffered writes not yet committed (0 after Commit or Discard).
  size_t pending_count() const noexcept { return ops_.size(); }
  size_t pending_bytes() const noexcept { return arena_.size(); }

  // ---- reads: committed state only ----

  // ListRooms: the ids of the stored rooms, sorted.
  absl::StatusOr<std::vector<Hash256>> ListRooms() const;
  // LoadRoom: everything stored for `room`. NotFound when it is not stored.
  absl::StatusOr<StoredRoom> LoadRoom(const Hash256& room) const;
  // LoadRooms: calls `fn` for each stored room in id order, one room in memory at a time;
  // stops at the first error `fn` returns.
  absl::Status LoadRooms(absl::FunctionRef<absl::Status(StoredRoom&&)> fn) const;
  // HasUpdate: whether an update with this id is committed.
  absl::StatusOr<bool> HasUpdate(const Hash256& update_id) const;
  // GetMeta: a value put with PutMeta, or nullopt.
  absl::StatusOr<std::optional<std::vector<uint8_t>>> GetMeta(absl::string_view name) const;
  // Verify: reads every value and checks its checksum and shape (Open's check, in-process).
  absl::Status Verify() const;

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
    size_t offset2 = 0;     // second value (checkpoint blob)
    size_t bytes2 = 0;
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
  absl::Status CheckFormat(void* txn, const RoomStoreOptions& options) const;
  size_t Stash(Bytes bytes);
  absl::Status ApplyOp(Batch* batch, const Op& op);
  absl::Status ApplyUpdate(Batch* batch, const Op& op);
  absl::Status ApplyDeleteRoom(Batch* batch, const Op& op);
  absl::Status LoadRoomIn(void* txn, const Hash256& room, StoredRoom* out) const;
  absl::Status Error(int rc, absl::string_view what) const;

  std::string path_;
  MDB_env* env_ = nullptr;
  unsigned int dbi_[kDbCount] = {};  // MDB_dbi, kept out of this header
  StoreSync sync_ = StoreSync::kSafe;
  std::vector<Op> ops_;
  std::vector<uint8_t> arena_;
  // Set after an error that leaves the environment unusable (an fsync failure: the kernel
  // may have dropped the dirty pages, so retrying could ack data that is not on disk).
  absl::Status broken_;
  RoomStoreStats stats_;
};

// ShardDir: DATA_DIR/shard-N.
std::string ShardDir(const std::string& data_dir, uint32_t shard);

}  // namespace ringpeer::store
