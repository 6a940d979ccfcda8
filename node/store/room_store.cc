#include "node/store/room_store.h"

#include <fcntl.h>
#include <pthread.h>
#include <lmdb.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/assert.h"
#include "base/clock.h"
#include "base/futex.h"
#include "base/huge_pages.h"
#include "base/status.h"

namespace ringpeer::store {
namespace {

constexpr char kDataFile[] = "data.mdb";
constexpr char kEnvLockFile[] = "lock.mdb";
// Meta keys the store itself owns; PutMeta refuses this prefix.
constexpr absl::string_view kReservedPrefix = "ringpeer.";
constexpr char kFormatKey[] = "ringpeer.format";
constexpr char kNodeKey[] = "ringpeer.node";
// The format value: a program name that another program's LMDB file will not have, then
// the version. "ringpeer-room-store 1".
constexpr absl::string_view kFormatName = "ringpeer-room-store ";
// Database names, indexed like RoomStore::Db.
constexpr const char* kDbNames[] = {"rooms", "epochs", "updates", "update_ids", "checkpoints",
                                    "meta"};
// Every value ends in a SipHash-2-4 of the rest: LMDB has no checksums of its own, and a
// flipped bit in a record would otherwise surface as a bad signature, a silent loss of
// data this relay acknowledged. The key is fixed: this guards against accidents, not
// attackers (anyone who can write the file can write a matching sum).
constexpr size_t kSumBytes = crypto_shorthash_BYTES;
constexpr unsigned char kSumKey[crypto_shorthash_KEYBYTES] = {
    'r', 'i', 'n', 'g', 'p', 'e', 'e', 'r', '-', 's', 't', 'o', 'r', 'e', '-', '1'};
// Named databases we open, plus slack so a later format can add some.
constexpr MDB_dbi kMaxDbs = 16;
// MDB_NOTLS: reader slots belong to transactions, not threads, so a store opened on the
// main thread works on its shard thread.
constexpr unsigned int kEnvFlags = MDB_NOTLS;
// Room id ‖ big-endian sequence / epoch: byte order is numeric order within a room.
constexpr size_t kRoomSeqKeyBytes = 32 + 8;
constexpr size_t kRoomEpochKeyBytes = 32 + 4;
// How much the checker child may report (one status message).
constexpr size_t kCheckerMessageBytesMax = 4096;

static_assert(kSumBytes == 8);
static_assert(sizeof(kDbNames) / sizeof(kDbNames[0]) == 6);

MDB_val Val(const void* data, size_t bytes) {
  return MDB_val{bytes, const_cast<void*>(data)};
}

uint64_t Sum(const uint8_t* data, size_t bytes) {
  uint64_t out;
  crypto_shorthash(reinterpret_cast<unsigned char*>(&out), data, bytes, kSumKey);
  return out;
}

// Checked: the payload of a stored value, or false when its checksum does not match.
bool Checked(const MDB_val& v, Bytes* payload) {
  if (v.mv_size < kSumBytes) return false;
  const auto* p = static_cast<const uint8_t*>(v.mv_data);
  const size_t n = v.mv_size - kSumBytes;
  uint64_t stored;
  std::memcpy(&stored, p + n, sizeof(stored));
  if (stored != Sum(p, n)) return false;
  *payload = Bytes(p, n);
  return true;
}

void PutBe(uint8_t* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    out[i] = static_cast<uint8_t>(v);
    v >>= 8;
  }
}

uint64_t GetBe(const uint8_t* in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | in[i];
  return v;
}

std::array<uint8_t, kRoomSeqKeyBytes> RoomSeqKey(const Hash256& room, uint64_t seq) {
  std::array<uint8_t, kRoomSeqKeyBytes> k;
  std::memcpy(k.data(), room.data(), 32);
  PutBe(k.data() + 32, seq, 8);
  return k;
}

std::array<uint8_t, kRoomEpochKeyBytes> RoomEpochKey(const Hash256& room, uint32_t epoch) {
  std::array<uint8_t, kRoomEpochKeyBytes> k;
  std::memcpy(k.data(), room.data(), 32);
  PutBe(k.data() + 32, epoch, 4);
  return k;
}

RoomStore::IdKey IdKeyOf(const uint8_t* id) {
  RoomStore::IdKey k;
  std::memcpy(&k.first, id, 8);
  std::memcpy(&k.second, id + 8, 8);
  return k;
}

bool HasRoomPrefix(const MDB_val& key, const Hash256& room) {
  return key.mv_size > 32 && std::memcmp(key.mv_data, room.data(), 32) == 0;
}

// PutChecked: stores `pieces` concatenated plus their checksum under `key`, writing straight
// into the page (MDB_RESERVE) so a 5 MB blob is copied once. Returns an LMDB code.
int PutChecked(MDB_txn* txn, MDB_dbi dbi, MDB_val key, std::initializer_list<Bytes> pieces,
               unsigned int flags = 0) {
  size_t n = 0;
  for (Bytes p : pieces) n += p.size();
  MDB_val v{n + kSumBytes, nullptr};
  const int rc = mdb_put(txn, dbi, &key, &v, flags | MDB_RESERVE);
  if (rc != 0) return rc;
  auto* out = static_cast<uint8_t*>(v.mv_data);
  size_t off = 0;
  for (Bytes p : pieces) {
    if (!p.empty()) std::memcpy(out + off, p.data(), p.size());
    off += p.size();
  }
  const uint64_t sum = Sum(out, n);
  std::memcpy(out + n, &sum, sizeof(sum));
  return 0;
}

// Owning guards so that every early return aborts its transaction or closes its cursor.
class Txn {
 public:
  Txn() = default;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
  }
  int Begin(MDB_env* env, unsigned int flags) {
    return mdb_txn_begin(env, nullptr, flags, &txn_);
  }
  int Commit() {
    MDB_txn* t = txn_;
    txn_ = nullptr;
    return mdb_txn_commit(t);
  }
  MDB_txn* get() const { return txn_; }

 private:
  MDB_txn* txn_ = nullptr;
};

class Cursor {
 public:
  Cursor() = default;
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  ~Cursor() {
    if (cursor_ != nullptr) mdb_cursor_close(cursor_);
  }
  int Open(MDB_txn* txn, MDB_dbi dbi) { return mdb_cursor_open(txn, dbi, &cursor_); }
  int Get(MDB_val* key, MDB_val* value, MDB_cursor_op op) {
    return mdb_cursor_get(cursor_, key, value, op);
  }
  MDB_cursor* get() const { return cursor_; }

 private:
  MDB_cursor* cursor_ = nullptr;
};

// StoreError: one message per LMDB or errno code, naming the store's path.
absl::Status StoreError(const std::string& path, uint64_t map_bytes, int rc,
                        absl::string_view what) {
  const char* text = mdb_strerror(rc);
  switch (rc) {
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_INCOMPATIBLE:
      return absl::DataLossError(
          absl::StrCat("data directory ", path, " is corrupt: ", what, ": ", text));
    case MDB_VERSION_MISMATCH:
      return absl::FailedPreconditionError(absl::StrCat(
          "data directory ", path, " was written by an incompatible LMDB version: ", text));
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
      return absl::ResourceExhaustedError(absl::StrFormat(
          "room storage %s is full (map size %d bytes); raise --storage-max (or "
          "--storage-map-bytes)", path, map_bytes));
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return absl::ResourceExhaustedError(
          absl::StrCat("room storage ", path, ": disk full (", what, ": ", text, ")"));
    default:
      if (rc > 0) return base::ErrnoStatus(rc, absl::StrCat("room storage ", path, ": ", what));
      return absl::InternalError(absl::StrCat("room storage ", path, ": ", what, ": ", text));
  }
}

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat("data directory ", path, " is corrupt: ", what));
}

// FsyncDir: makes a rename or a new entry in `dir` durable.
absl::Status FsyncDir(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoStatus(errno, absl::StrCat("cannot open ", dir));
  const int rc = fsync(fd);
  const int err = errno;
  close(fd);
  if (rc != 0) return base::ErrnoStatus(err, absl::StrCat("cannot fsync ", dir));
  return absl::OkStatus();
}

// RemoveLeftover: removes a creation directory a crash left behind. Only the two files
// LMDB makes are removed; anything else in it is someone else's and stops us.
absl::Status RemoveLeftover(const std::string& dir) {
  for (const char* name : {kDataFile, kEnvLockFile}) {
    const std::string file = absl::StrCat(dir, "/", name);
    if (unlink(file.c_str()) != 0 && errno != ENOENT) {
      return base::ErrnoStatus(errno, absl::StrCat("cannot remove ", file));
    }
  }
  if (rmdir(dir.c_str()) != 0 && errno != ENOENT) {
    return base::ErrnoStatus(errno, absl::StrCat("cannot remove leftover directory ", dir));
  }
  return absl::OkStatus();
}

// DiskNearlyFull: whether the filesystem holding `path` lacks room for a batch of
// `batch_bytes` (with slack for LMDB's copied-on-write tree pages).
bool DiskNearlyFull(const std::string& path, uint64_t batch_bytes) {
  struct statvfs fs;
  if (statvfs(path.c_str(), &fs) != 0) return false;
  const uint64_t avail = uint64_t{fs.f_bavail} * fs.f_frsize;
  return avail < 2 * batch_bytes + (uint64_t{16} << 20);
}

}  // namespace

std::string ShardDir(const std::string& data_dir, uint32_t shard) {
  return absl::StrCat(data_dir, "/", kShardDirPrefix, shard);
}

// One write transaction's working state.
struct RoomStore::Batch {
  MDB_txn* txn = nullptr;
  // The room whose next sequence is cached (consecutive updates usually share a room).
  Hash256 seq_room{};
  uint64_t seq_next = 0;
  bool seq_valid = false;
  bool rooms_deleted = false;  // a room was deleted: the sequence cache starts over
  bool seq_uncached = false;   // seq_staged_ was full: log ends come from the log
  uint64_t written = 0;
  uint64_t duplicates = 0;
};

RoomStore::RoomStore(std::string path, MDB_env* env, StoreSync sync)
    : path_(std::move(path)), env_(env), sync_(sync) {
  // Sized for a busy loop iteration so that steady-state batches do not allocate.
  ops_.reserve(1024);
  arena_.reserve(512 * 1024);
  batch_ops_.reserve(1024);
  batch_arena_.reserve(512 * 1024);
  seq_staged_.reserve(kSeqStagedMax);
}

RoomStore::~RoomStore() {
  if (writer_started_) {
    CommitWait();  // a batch in flight completes (durable, but nobody is left to ack it)
    state_.store(kStop, std::memory_order_release);
    base::FutexWake(&state_);  // the writer sleeps on the word itself (WriterLoop)
    pthread_join(writer_, nullptr);
  }
  if (env_ != nullptr) mdb_env_close(env_);
}

absl::Status RoomStore::Error(int rc, absl::string_view what) const {
  // LMDB's env info is only valid once mdb_env_open succeeded (before, it faults).
  uint64_t map_bytes = map_bytes_;
  if (env_opened_) {
    MDB_envinfo info{};
    mdb_env_info(env_, &info);
    map_bytes = info.me_mapsize;
  }
  return StoreError(path_, map_bytes, rc, what);
}

absl::StatusOr<std::unique_ptr<RoomStore>> RoomStore::Open(const std::string& data_dir,
                                                           uint32_t shard,
                                                           const RoomStoreOptions& options) {
  if (options.map_bytes < kStoreMapBytesMin) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "room storage map size %d bytes is below the minimum %d", options.map_bytes,
        kStoreMapBytesMin));
  }
  if (sodium_init() < 0) return absl::InternalError("libsodium failed to initialise");
  const std::string path = ShardDir(data_dir, shard);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return base::ErrnoStatus(errno, absl::StrCat("room storage ", path));
    RP_RETURN_IF_ERROR(Create(data_dir, path, options));
  } else if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data directory ", path, " is not a directory"));
  }
  if (options.verify_on_open) RP_RETURN_IF_ERROR(VerifyInChild(path, options));
  RP_ASSIGN_OR_RETURN(std::unique_ptr<RoomStore> store, OpenEnv(path, options, /*create=*/false));
  // The index first: a store that cannot be read is not upgraded (an older build can
  // still open a format-1 store that this one refused).
  RP_RETURN_IF_ERROR(store->BuildIndex());
  RP_RETURN_IF_ERROR(store->Upgrade());
  store->WarmPageCache();
  store->stats_ = store->wstats_;
  return store;
}

absl::Status RoomStore::Upgrade() {
  if (format_version_ >= kStoreFormatVersion) return absl::OkStatus();
  Txn txn;
  int rc = txn.Begin(env_, 0);
  if (rc != 0) return Error(rc, "cannot begin a transaction to upgrade the store");
  rc = mdb_drop(txn.get(), dbi_[kUpdateIds], 0);  // version 1's index: no longer kept
  const std::string format = absl::StrCat(kFormatName, kStoreFormatVersion);
  if (rc == 0) {
    rc = PutChecked(txn.get(), dbi_[kMeta], Val(kFormatKey, std::strlen(kFormatKey)),
                    {Bytes(reinterpret_cast<const uint8_t*>(format.data()), format.size())});
  }
  if (rc == 0) rc = txn.Commit();
  if (rc == 0 && sync_ == StoreSync::kOneSync) rc = mdb_env_sync(env_, 1);  // MDB_NOSYNC
  if (rc != 0) return Error(rc, "cannot upgrade the store's format");
  format_version_ = kStoreFormatVersion;
  return absl::OkStatus();
}

void RoomStore::WarmPageCache() {
  // LMDB mallocs each page a write transaction dirties unless its own cache of freed pages
  // (me_dpages, kept until the environment closes) has one; the cache only grows when a
  // transaction dirties more pages than any before, which a relay's batches did now and then
  // long after start (3 allocations per 15,000 updates in the loopback benchmark, issue 15).
  // Putting 2 * kWarmPages values of 1,800 bytes in a transaction that is then aborted
  // fills the cache up front: at most two fit a 4 KiB page and splits leave pages part
  // full, so ~300-500 pages (1-2 MiB, kept until the environment closes); nothing is
  // written to the file. Best effort: a failure (a full map) leaves the pages dirtied so
  // far in the cache and nothing else. Only Open calls it (not the forked verifier).
  Txn txn;
  if (txn.Begin(env_, 0) != 0) return;
  char key[32];
  for (uint32_t i = 0; i < 2 * kWarmPages; ++i) {
    // MDB_RESERVE: room for the value, nothing copied.
    const int n = std::snprintf(key, sizeof(key), "ringpeer.warm.%u", i);
    MDB_val k = Val(key, static_cast<size_t>(n));
    MDB_val v{1800, nullptr};
    if (mdb_put(txn.get(), dbi_[kMeta], &k, &v, MDB_RESERVE) != 0) break;
  }
}  // the guard aborts the transaction; its dirty pages go to LMDB's cache

absl::Status RoomStore::BuildIndex() {
  Txn txn;
  int rc = txn.Begin(env_, MDB_RDONLY);
  if (rc != 0) return Error(rc, "cannot begin a read transaction");
  MDB_stat st{};
  if (mdb_stat(txn.get(), dbi_[kUpdates], &st) == 0) ids_.reserve(st.ms_entries);
  Cursor cursor;
  rc = cursor.Open(txn.get(), dbi_[kUpdates]);
  if (rc != 0) return Error(rc, "cannot open a cursor");
  MDB_val k, v;
  for (rc = cursor.Get(&k, &v, MDB_FIRST); rc == 0; rc = cursor.Get(&k, &v, MDB_NEXT)) {
    Bytes payload;
    if (k.mv_size != kRoomSeqKeyBytes || !Checked(v, &payload) || payload.size() < 32) {
      // Reached only with verify_on_open off (the forked walk refuses such a store): the
      // entry stays out of the index, and loading its room reports it (DataLoss), so the
      // other rooms can still be served and copied out.
      ++wstats_.index_skipped;
      continue;
    }
    const uint64_t seq = GetBe(static_cast<const uint8_t*>(k.mv_data) + 32, 8);
    ids_[IdKeyOf(payload.data())] = seq;
  }
  if (rc != MDB_NOTFOUND) return Error(rc, "cannot read the update log");
  return absl::OkStatus();
}

void RoomStore::Reconcile() {
  if (id_undo_.empty()) return;
  Txn txn;
  if (txn.Begin(env_, MDB_RDONLY) != 0) {
    // Cannot tell what the log holds: refuse further commits; a restart rebuilds ids_.
    if (broken_.ok()) {
      broken_ = absl::InternalError(absl::StrCat(
          "room storage ", path_, ": cannot read the log after a failed commit; restart the node"));
    }
    id_undo_.clear();
    return;
  }
  // Newest first, so an id the batch removed and added again ends as the log says.
  for (size_t i = id_undo_.size(); i-- > 0;) {
    const IdChange& c = id_undo_[i];
    const auto key = RoomSeqKey(c.room, c.seq);
    MDB_val k = Val(key.data(), key.size());
    MDB_val v;
    Bytes payload;
    const int rc = mdb_get(txn.get(), dbi_[kUpdates], &k, &v);
    if ((rc != 0 && rc != MDB_NOTFOUND) || (rc == 0 && (!Checked(v, &payload) || payload.size() < 32))) {
      // Cannot tell: guessing could store an update twice or skip one. Stop; a restart
      // rebuilds ids_ from the log.
      if (broken_.ok()) {
        broken_ = absl::DataLossError(absl::StrCat(
            "room storage ", path_, ": cannot read the log after a failed commit; restart the node"));
      }
      break;
    }
    const bool stored = rc == 0 && std::memcmp(payload.data(), c.id.data(), 32) == 0;
    if (stored) {
      ids_[c.key] = c.seq;
    } else if (auto it = ids_.find(c.key); it != ids_.end() && it->second == c.seq) {
      ids_.erase(it);
    }
  }
  id_undo_.clear();
  if (id_undo_.capacity() > kIdUndoKeptMax) id_undo_ = {};  // a Forget of a large room
}

absl::Status RoomStore::Create(const std::string& data_dir, const std::string& path,
                               const RoomStoreOptions& options) {
  // Build the environment beside its final name and rename it into place: a crash before
  // the rename leaves only the .new directory (removed on the next start), never a
  // half-initialised shard directory that would later read as corrupt.
  const std::string tmp = path + ".new";
  RP_RETURN_IF_ERROR(RemoveLeftover(tmp));
  if (mkdir(tmp.c_str(), 0700) != 0) {
    return base::ErrnoStatus(errno, absl::StrCat("cannot create ", tmp));
  }
  {
    RP_ASSIGN_OR_RETURN(std::unique_ptr<RoomStore> fresh, OpenEnv(tmp, options, true));
  }
  RP_RETURN_IF_ERROR(FsyncDir(tmp));
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return base::ErrnoStatus(errno, absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return FsyncDir(data_dir);
}

absl::StatusOr<std::unique_ptr<RoomStore>> RoomStore::OpenEnv(const std::string& path,
                                                              const RoomStoreOptions& options,
                                                              bool create) {
  const std::string data_file = absl::StrCat(path, "/", kDataFile);
  if (!create) {
    // LMDB quietly initialises a missing or empty data file; for a store that existed
    // that would be a silent loss of everything acknowledged, so it is corruption.
    struct stat st;
    if (stat(data_file.c_str(), &st) != 0) {
      if (errno == ENOENT) return Corrupt(path, "data.mdb is missing");
      return base::ErrnoStatus(errno, absl::StrCat("room storage ", data_file));
    }
    if (!S_ISREG(st.st_mode)) return Corrupt(path, "data.mdb is not a regular file");
    if (st.st_size == 0) return Corrupt(path, "data.mdb is empty");
  }
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != 0) return StoreError(path, options.map_bytes, rc, "cannot create an environment");
  std::unique_ptr<RoomStore> store(new RoomStore(path, env, options.sync));
  store->map_bytes_ = options.map_bytes;
  rc = mdb_env_set_mapsize(env, options.map_bytes);
  if (rc == 0) rc = mdb_env_set_maxdbs(env, kMaxDbs);
  if (rc != 0) return store->Error(rc, "cannot configure the environment");
  const unsigned int flags = kEnvFlags | (options.sync == StoreSync::kOneSync ? MDB_NOSYNC : 0);
  rc = mdb_env_open(env, path.c_str(), flags, 0600);
  if (rc != 0) return store->Error(rc, "cannot open data.mdb");
  store->env_opened_ = true;
  // Reader slots of a killed process would pin old pages forever; clear them.
  int dead = 0;
  mdb_reader_check(env, &dead);
  if (!create) RP_RETURN_IF_ERROR(store->CheckFileSize(data_file));
  RP_RETURN_IF_ERROR(store->OpenDbs(options, create));
  RP_RETURN_IF_ERROR(store->ReadRooms());
  return store;
}

absl::Status RoomStore::CheckFileSize(const std::string& data_file) const {
  // A truncated file passes LMDB's header check, and touching a page past its end would
  // raise SIGBUS; the meta page says how many pages there must be.
  MDB_envinfo info{};
  MDB_stat env_stat{};
  mdb_env_info(env_, &info);
  mdb_env_stat(env_, &env_stat);
  struct stat st;
  if (stat(data_file.c_str(), &st) != 0) {
    return base::ErrnoStatus(errno, absl::StrCat("room storage ", data_file));
  }
  const uint64_t need = (uint64_t{info.me_last_pgno} + 1) * env_stat.ms_psize;
  if (static_cast<uint64_t>(st.st_size) < need) {
    return Corrupt(path_, absl::StrFormat("data.mdb is truncated (%d bytes; its pages need %d)",
                                          st.st_size, need));
  }
  return absl::OkStatus();
}

absl::Status RoomStore::OpenDbs(const RoomStoreOptions& options, bool create) {
  Txn txn;
  int rc = txn.Begin(env_, create ? 0 : MDB_RDONLY);
  if (rc != 0) return Error(rc, "cannot begin a transaction");
  // The format marker first, so that another program's environment is refused before we
  // look for anything else in it (and nothing is written to it).
  rc = mdb_dbi_open(txn.get(), kDbNames[kMeta], create ? MDB_CREATE : 0, &dbi_[kMeta]);
  if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data directory ", path_,
        " holds an LMDB environment that is not a ringpeer room store; refusing to use it"));
  }
  if (rc != 0) return Error(rc, "cannot open the meta database");
  if (create) {
    const std::string format = absl::StrCat(kFormatName, kStoreFormatVersion);
    rc = PutChecked(txn.get(), dbi_[kMeta], Val(kFormatKey, std::strlen(kFormatKey)),
                    {Bytes(reinterpret_cast<const uint8_t*>(format.data()), format.size())});
    if (rc == 0 && options.node_id.has_value()) {
      rc = PutChecked(txn.get(), dbi_[kMeta], Val(kNodeKey, std::strlen(kNodeKey)),
                      {Bytes(*options.node_id)});
    }
    if (rc != 0) return Error(rc, "cannot write the format marker");
  } else {
    RP_RETURN_IF_ERROR(CheckFormat(txn.get(), options, &format_version_));
  }
  for (int db = 0; db < kDbCount; ++db) {
    if (db == kMeta) continue;
    rc = mdb_dbi_open(txn.get(), kDbNames[db], create ? MDB_CREATE : 0, &dbi_[db]);
    if (rc == MDB_NOTFOUND) {
      return Corrupt(path_, absl::StrCat("its '", kDbNames[db], "' database is missing"));
    }
    if (rc != 0) return Error(rc, absl::StrCat("cannot open the ", kDbNames[db], " database"));
  }
  // Committing (even a read transaction) is what makes the handles usable afterwards.
  rc = txn.Commit();
  if (rc != 0) return Error(rc, "cannot create the databases");
  return absl::OkStatus();
}

absl::Status RoomStore::CheckFormat(void* txn_ptr, const RoomStoreOptions& options,
                                    uint32_t* version_out) const {
  auto* txn = static_cast<MDB_txn*>(txn_ptr);
  const absl::Status foreign = absl::FailedPreconditionError(absl::StrCat(
      "data directory ", path_,
      " holds an LMDB environment that is not a ringpeer room store; refusing to use it"));
  MDB_val key = Val(kFormatKey, std::strlen(kFormatKey));
  MDB_val value;
  int rc = mdb_get(txn, dbi_[kMeta], &key, &value);
  if (rc == MDB_NOTFOUND) return foreign;
  if (rc != 0) return Error(rc, "cannot read the format marker");
  Bytes payload;
  if (!Checked(value, &payload)) return foreign;
  const absl::string_view text(reinterpret_cast<const char*>(payload.data()), payload.size());
  if (text.substr(0, kFormatName.size()) != kFormatName) return foreign;
  uint32_t version = 0;
  if (!absl::SimpleAtoi(text.substr(kFormatName.size()), &version)) {
    return Corrupt(path_, absl::StrCat("its format marker reads '", text, "'"));
  }
  *version_out = version;
  if (version > kStoreFormatVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "data directory %s was written by a newer ringpeer (room store format %d; this build "
        "reads up to %d); refusing to touch it",
        path_, version, kStoreFormatVersion));
  }
  if (!options.node_id.has_value()) return absl::OkStatus();
  key = Val(kNodeKey, std::strlen(kNodeKey));
  rc = mdb_get(txn, dbi_[kMeta], &key, &value);
  if (rc == MDB_NOTFOUND) return absl::OkStatus();
  if (rc != 0) return Error(rc, "cannot read the owner node id");
  if (!Checked(value, &payload) || payload.size() != 32) {
    return Corrupt(path_, "its owner node id is damaged");
  }
  if (std::memcmp(payload.data(), options.node_id->data(), 32) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data directory ", path_, " belongs to node ", wire::Hex(payload).substr(0, 16),
        "…, not this node (", wire::Hex(*options.node_id).substr(0, 16),
        "…); was it copied from another node? refusing to use it"));
  }
  return absl::OkStatus();
}

absl::Status RoomStore::VerifyInChild(const std::string& path, const RoomStoreOptions& options) {
  // LMDB trusts its pages: a scribbled branch page can make it read outside the map and
  // fault. Walking everything once in a child turns that into an error message here.
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return base::ErrnoStatus(errno, "cannot create a pipe");
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(fds[0]);
    close(fds[1]);
    return base::ErrnoStatus(err, "cannot start the room storage checker");
  }
  if (pid == 0) {
    close(fds[0]);
    absl::Status st;
    {
      auto store = OpenEnv(path, options, /*create=*/false);
      st = store.ok() ? (*store)->Verify() : store.status();
    }
    const std::string msg = absl::StrCat(static_cast<int>(st.code()), " ", st.message());
    size_t off = 0;
    const size_t n = std::min(msg.size(), kCheckerMessageBytesMax);
    while (off < n) {
      const ssize_t w = write(fds[1], msg.data() + off, n - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    _exit(0);  // no atexit handlers, no flushing of the parent's stdio buffers
  }
  close(fds[1]);
  std::string msg;
  char buf[512];
  for (;;) {  // bounded: the child writes at most kCheckerMessageBytesMax, then exits
    const ssize_t r = read(fds[0], buf, sizeof(buf));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (msg.size() < kCheckerMessageBytesMax) msg.append(buf, static_cast<size_t>(r));
  }
  close(fds[0]);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return base::ErrnoStatus(errno, "cannot wait for the storage checker");
  }
  if (WIFSIGNALED(wstatus)) {
    return Corrupt(path, absl::StrCat("reading it crashed the checker (",
                                      strsignal(WTERMSIG(wstatus)), ")"));
  }
  if (msg.empty()) {
    // It died before reporting without a signal: a sanitizer's fault handler exits.
    return Corrupt(path, absl::StrCat("reading it crashed the checker (exit status ",
                                      WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1, ")"));
  }
  const size_t space = msg.find(' ');
  int code = 0;
  if (space == std::string::npos || !absl::SimpleAtoi(msg.substr(0, space), &code) ||
      code < 0 || code > 16) {
    return absl::InternalError(absl::StrCat("room storage checker for ", path, " failed"));
  }
  if (code == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(code), msg.substr(space + 1));
}

// ---- staging ----

absl::Status RoomStore::CheckRoom(const Hash256& room_id) const {
  if (rooms_.contains(room_id)) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("room ", wire::Hex(room_id), " is not stored"));
}

absl::Status RoomStore::Stage(Op op, Bytes first, Bytes second,
                              const room::SharedBytes& holder) {
  // batch_arena_ is only read here (its size) while the writer reads it too.
  const size_t staged = arena_.size() + batch_arena_.size();
  if (staged + first.size() + second.size() > kStagedBytesMax) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "room storage %s: %d bytes staged and not committed; refusing more", path_,
        staged));
  }
  // The arena and op vector keep their capacity across commits, so once they have grown
  // to a busy loop iteration's batch, staging does not allocate.
  op.offset = arena_.size();
  op.bytes = first.size();
  const bool held = room::HoldsBytes(holder, second);
  // A checkpoint's blob (megabytes) grows it at once: in huge pages, if it allocates.
  base::ReserveHuge(arena_, arena_.size() + first.size() + (held ? 0 : second.size()));
  arena_.insert(arena_.end(), first.begin(), first.end());
  op.bytes2 = second.size();
  if (held) {
    op.offset2 = static_cast<size_t>(second.data() - holder->data());
    op.holder = holder;  // the writer reads it there; released with the batch
  } else {
    op.offset2 = arena_.size();
    arena_.insert(arena_.end(), second.begin(), second.end());
  }
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

absl::Status RoomStore::PutGenesis(const Hash256& room_id, Bytes genesis) {
  RP_RETURN_IF_ERROR(Stage(Op{.kind = OpKind::kGenesis, .room = room_id}, genesis));
  rooms_.insert(room_id);  // allocates only for a new room: control path
  return absl::OkStatus();
}

absl::Status RoomStore::PutKeyEpoch(const Hash256& room_id, uint32_t epoch, Bytes record) {
  RP_RETURN_IF_ERROR(CheckRoom(room_id));
  return Stage(Op{.kind = OpKind::kKeyEpoch, .epoch = epoch, .room = room_id}, record);
}

absl::Status RoomStore::Append(const Hash256& room_id, const Hash256& update_id,
                               Bytes record) {
  RP_RETURN_IF_ERROR(CheckRoom(room_id));
  return Stage(Op{.kind = OpKind::kUpdate, .room = room_id, .id = update_id}, record);
}

absl::Status RoomStore::PutCheckpoint(const Hash256& room_id, Bytes record, Bytes blob) {
  RP_RETURN_IF_ERROR(CheckRoom(room_id));
  return Stage(Op{.kind = OpKind::kCheckpoint, .room = room_id}, record, blob);
}

absl::Status RoomStore::PutCheckpointShared(const Hash256& room_id, Bytes record, Bytes blob,
                                            const room::SharedBytes& holder) {
  RP_RETURN_IF_ERROR(CheckRoom(room_id));
  return Stage(Op{.kind = OpKind::kCheckpoint, .room = room_id}, record, blob, holder);
}

absl::Status RoomStore::Forget(const Hash256& room_id) {
  RP_RETURN_IF_ERROR(Stage(Op{.kind = OpKind::kDeleteRoom, .room = room_id}, {}));
  rooms_.erase(room_id);
  return absl::OkStatus();
}

absl::Status RoomStore::Prune(const Hash256& room_id, std::span<const Hash256> update_ids) {
  RP_RETURN_IF_ERROR(CheckRoom(room_id));
  for (const Hash256& id : update_ids) RP_RETURN_IF_ERROR(DeleteUpdate(room_id, id));
  return absl::OkStatus();
}

absl::Status RoomStore::DeleteUpdate(const Hash256& room_id, const Hash256& update_id) {
  return Stage(Op{.kind = OpKind::kDeleteUpdate, .room = room_id, .id = update_id}, {});
}

absl::Status RoomStore::PutMeta(absl::string_view name, Bytes value) {
  RP_ASSERT(!name.empty());
  RP_ASSERT(name.substr(0, kReservedPrefix.size()) != kReservedPrefix);
  return Stage(Op{.kind = OpKind::kMeta},
               Bytes(reinterpret_cast<const uint8_t*>(name.data()), name.size()), value);
}

void RoomStore::DropStaged() {
  ops_.clear();
  arena_.clear();
  batch_ops_.clear();
  batch_arena_.clear();
  // Staged genesis and forget records changed rooms_; the committed list is the truth.
  if (!ReadRooms().ok()) {
    // Keep the staged view: reads will report the underlying error themselves.
  }
}

// ---- commit ----

absl::Status RoomStore::WriteBatch(Batch* batch, int* commit_rc) {
  Txn txn;
  int rc = txn.Begin(env_, 0);
  if (rc != 0) {
    *commit_rc = rc;
    return Error(rc, "cannot begin a write transaction");
  }
  batch->txn = txn.get();
  for (const Op& op : batch_ops_) {
    // On error the guard aborts the transaction: nothing of the batch remains.
    RP_RETURN_IF_ERROR(ApplyOp(batch, op));
  }
  const int injected = fail_next_commit_.exchange(0, std::memory_order_acquire);
  const bool injected_after = injected != 0 && fail_after_commit_.load(std::memory_order_relaxed);
  // A failure injected before the commit: the guard aborts the transaction, as LMDB's
  // own failed commit does.
  rc = injected != 0 && !injected_after ? injected : txn.Commit();
  const char* what = "cannot commit";
  bool committed = false;
  if (rc == 0 && sync_ == StoreSync::kOneSync) {
    committed = true;  // the meta page is written; only its sync is left
    rc = mdb_env_sync(env_, 1);
    if (injected_after) rc = injected;
    what = "cannot sync";
  }
  *commit_rc = rc;
  if (rc == 0) return absl::OkStatus();
  // After the transaction committed (kOneSync's own sync failed) nothing is transient: a
  // retry would find the batch's updates stored, skip them, and ack them after a sync of
  // pages the kernel may have dropped. The store stops, whatever the error or free space.
  if (committed) {
    return absl::InternalError(absl::StrCat("room storage ", path_,
                                            ": the commit's sync failed: ", mdb_strerror(rc)));
  }
  // LMDB reports a short page write as EIO, which is what a disk filling up mid-write
  // gives; say so when the filesystem is indeed (nearly) full.
  size_t batch_bytes = batch_arena_.size();  // with the values held outside the arena
  for (const Op& op : batch_ops_) batch_bytes += op.holder != nullptr ? op.bytes2 : 0;
  if (rc == EIO && DiskNearlyFull(path_, batch_bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat("room storage ", path_, ": disk full (",
                                                     what, ": ", mdb_strerror(rc), ")"));
  }
  return Error(rc, what);
}

absl::Status RoomStore::Commit() {
  CommitWait();  // a batch in flight first (its result stays for CommitPoll)
  return CommitHere();
}

absl::Status RoomStore::CommitHere() {
  TakeBatch();
  const absl::Status st = WriteOut();
  FinishBatch(st);
  return st;
}

void RoomStore::TakeBatch() {
  // The batch is empty here: a finished one was emptied or put back in front of ops_.
  RP_ASSERT(batch_ops_.empty() && batch_arena_.empty());
  ops_.swap(batch_ops_);
  arena_.swap(batch_arena_);  // both keep their capacity: double buffering, no allocation
}

absl::Status RoomStore::WriteOut() {
  if (!broken_.ok()) {
    ++wstats_.commits_failed;
    return broken_;
  }
  if (batch_ops_.empty()) return absl::OkStatus();
  Batch batch;
  int rc = 0;
  seq_staged_.clear();
  const int64_t started_us = base::MonotonicUs();
  const absl::Status st = WriteBatch(&batch, &rc);
  if (st.ok()) {
    wstats_.commit_us += static_cast<uint64_t>(std::max<int64_t>(0, base::MonotonicUs() - started_us));
    if (batch.rooms_deleted || batch.seq_uncached) {
      seq_cache_.clear();
    } else {
      if (batch.seq_valid) seq_staged_.emplace_back(batch.seq_room, batch.seq_next);
      for (const auto& [room, next] : seq_staged_) seq_cache_[room] = next;
    }
    seq_staged_.clear();
    id_undo_.clear();
    if (id_undo_.capacity() > kIdUndoKeptMax) id_undo_ = {};  // a Forget of a large room
    ++wstats_.commits;
    wstats_.updates_written += batch.written;
    wstats_.updates_duplicate += batch.duplicates;
    return absl::OkStatus();
  }
  ++wstats_.commits_failed;
  // The transaction may have committed before a failed sync: the cached log ends may be
  // behind the log, and a slot a later delete frees could then take an update out of
  // order. The next batches read each room's end from the log again.
  seq_cache_.clear();
  seq_staged_.clear();
  // Likewise the id index: each id the batch touched is set to what the log now holds.
  Reconcile();
  // A full map or disk leaves LMDB consistent and may clear up: keep the batch for the
  // next Commit. That includes EIO on a filesystem that is (nearly) full: LMDB reports a
  // short page write as EIO, and the pages of a failed transaction are never referenced by
  // a committed meta page, so the retry writes (and fsyncs) them all again. EIO with space
  // left may come from a failed fsync, after which the kernel may have dropped dirty pages
  // that a retry would report durable: that breaks the store, as does corruption
  // (FinishBatch then drops what is staged).
  const bool transient = st.code() == absl::StatusCode::kResourceExhausted;
  if (!transient && broken_.ok()) {
    broken_ = absl::Status(st.code(), absl::StrCat(st.message(),
                                                   "; room storage stopped, restart the node"));
  }
  // The first report of a failure that stops the store says so, as the later ones do.
  return transient ? st : broken_;
}

void RoomStore::FinishBatch(const absl::Status& st) {
  stats_ = wstats_;
  if (st.ok()) {
    batch_ops_.clear();
    batch_arena_.clear();  // keeps its capacity for the next batch
    return;
  }
  if (!broken_.ok()) {
    DropStaged();
    return;
  }
  // Transient (space): the batch goes back in front of what was staged since, so that
  // the next batch retries it in the original order. Error path: may allocate.
  const size_t shift = batch_arena_.size();
  batch_arena_.insert(batch_arena_.end(), arena_.begin(), arena_.end());
  for (Op op : ops_) {
    op.offset += shift;
    if (op.holder == nullptr) op.offset2 += shift;  // a held second value stays in its holder
    batch_ops_.push_back(std::move(op));
  }
  ops_.swap(batch_ops_);
  arena_.swap(batch_arena_);
  batch_ops_.clear();
  batch_arena_.clear();
}

// ---- the writer thread ----

void RoomStore::UseWriterThread(int wake_fd) {
  // Once the thread runs, only the doorbell may change, and only with no batch in flight
  // (the writer reads wake_fd_ after the release that hands it a batch).
  RP_ASSERT(state_.load(std::memory_order_acquire) != kSubmitted);
  writer_wanted_ = true;
  wake_fd_ = wake_fd;
}

void RoomStore::CommitStart() {
  // The caller took the last batch's result (CommitPoll) before starting this one; else
  // its OK would release acks marked for this batch (RoomHost::CommitStart polls first).
  RP_ASSERT(state_.load(std::memory_order_acquire) == kIdle && !pending_result_.has_value());
  if (!writer_wanted_ || ops_.empty() || !broken_.ok()) {
    // Nothing to wait for (or no thread wanted): answer at once, on this thread.
    pending_result_ = CommitHere();
    return;
  }
  if (!writer_started_) {
    // Started here, at the first batch (the shard runs by now): never beside a forked
    // check of another store at Open. It inherits the shard thread's CPU (its work is
    // mostly waiting for the disk). Built without exceptions: pthread_create reports a
    // failure, and the store then commits on the calling thread, as without a writer.
    writer_started_ = pthread_create(&writer_, nullptr, &RoomStore::WriterMain, this) == 0;
    if (!writer_started_) {
      writer_wanted_ = false;
      pending_result_ = CommitHere();
      return;
    }
  }
  TakeBatch();
  state_.store(kSubmitted, std::memory_order_release);
  // A plain futex wake, not notify_one: the writer sleeps in FutexWait (WriterLoop), which
  // std::atomic's notify does not know about.
  base::FutexWake(&state_);
}

bool RoomStore::CommitInFlight() const noexcept {
  return state_.load(std::memory_order_acquire) == kSubmitted;
}

std::optional<absl::Status> RoomStore::CommitPoll() {
  SettleDone();
  return std::exchange(pending_result_, std::nullopt);
}

void RoomStore::CommitWait() {
  for (;;) {
    const uint32_t s = state_.load(std::memory_order_acquire);
    if (s != kSubmitted) break;
    state_.wait(s, std::memory_order_acquire);
  }
  // Past its doorbell too: after this the caller may close the eventfd (a shard stopping).
  while (ringing_.load(std::memory_order_acquire)) ringing_.wait(true, std::memory_order_acquire);
  SettleDone();
}

void RoomStore::SettleDone() {
  if (state_.load(std::memory_order_acquire) != kDone) return;
  FinishBatch(batch_result_);
  pending_result_ = batch_result_;
  state_.store(kIdle, std::memory_order_relaxed);  // only this thread moves it on from here
}

void* RoomStore::WriterMain(void* self) {
  pthread_setname_np(pthread_self(), "rp-store-writer");
  static_cast<RoomStore*>(self)->WriterLoop();
  return nullptr;
}

void RoomStore::WriterLoop() {
  for (;;) {
    uint32_t s = state_.load(std::memory_order_acquire);
    while (s != kSubmitted && s != kStop) {
      // A futex sleep straight away: std::atomic::wait first spins with sched_yield, which
      // cost ~1% of a relay's CPU on the writer thread between batches (perf, issue 15).
      // The kernel compares the word before sleeping, so no wake-up is lost; the 1 s bound
      // is a backstop only.
      base::FutexWait(&state_, s, 1000);
      s = state_.load(std::memory_order_acquire);
    }
    if (s == kStop) return;
    batch_result_ = WriteOut();
    // The doorbell rings after kDone (a shard woken earlier could find the batch still in
    // flight and sleep through it), so the shard may already be done with the batch and
    // stopping: ringing_ tells CommitWait to wait until the eventfd is no longer touched.
    ringing_.store(true, std::memory_order_relaxed);
    state_.store(kDone, std::memory_order_release);
    state_.notify_all();  // CommitWait
    if (wake_fd_ >= 0) {
      // The shard may be asleep in its transport's wait. A failed write (the counter is
      // full: it is being rung anyway) needs nothing more.
      const uint64_t one = 1;
      [[maybe_unused]] const ssize_t w = write(wake_fd_, &one, sizeof(one));
    }
    ringing_.store(false, std::memory_order_release);
    ringing_.notify_all();
  }
}

absl::Status RoomStore::ApplyOp(Batch* batch, const Op& op) {
  MDB_txn* txn = batch->txn;
  const Bytes first(batch_arena_.data() + op.offset, op.bytes);
  const Bytes second = Second(op, batch_arena_);
  int rc = 0;
  switch (op.kind) {
    case OpKind::kGenesis:
      rc = PutChecked(txn, dbi_[kRooms], Val(op.room.data(), 32), {first});
      if (rc != 0) return Error(rc, "cannot store a genesis record");
      return absl::OkStatus();
    case OpKind::kKeyEpoch: {
      const auto key = RoomEpochKey(op.room, op.epoch);
      rc = PutChecked(txn, dbi_[kEpochs], Val(key.data(), key.size()), {first},
                      MDB_NOOVERWRITE);
      if (rc != 0 && rc != MDB_KEYEXIST) return Error(rc, "cannot store a key epoch");
      return absl::OkStatus();
    }
    case OpKind::kUpdate:
      return ApplyUpdate(batch, op);
    case OpKind::kCheckpoint: {
      uint8_t len[4];
      PutBe(len, op.bytes, 4);
      rc = PutChecked(txn, dbi_[kCheckpoints], Val(op.room.data(), 32),
                      {Bytes(len, 4), first, second});
      if (rc != 0) return Error(rc, "cannot store a checkpoint");
      return absl::OkStatus();
    }
    case OpKind::kDeleteUpdate: {
      auto it = ids_.find(IdKeyOf(op.id.data()));
      if (it == ids_.end()) return absl::OkStatus();
      const uint64_t seq = it->second;
      const auto where = RoomSeqKey(op.room, seq);
      MDB_val key = Val(where.data(), where.size());
      MDB_val value;
      rc = mdb_get(txn, dbi_[kUpdates], &key, &value);
      if (rc == MDB_NOTFOUND) return absl::OkStatus();  // another room's id: not ours
      if (rc != 0) return Error(rc, "cannot find an update to delete");
      Bytes payload;
      if (!Checked(value, &payload) || payload.size() < 32) {
        return Corrupt(path_, "an update has a bad checksum");
      }
      if (std::memcmp(payload.data(), op.id.data(), 32) != 0) return absl::OkStatus();
      rc = mdb_del(txn, dbi_[kUpdates], &key, nullptr);
      if (rc != 0) return Error(rc, "cannot delete an update");
      id_undo_.push_back(IdChange{it->first, seq, op.room, op.id});
      ids_.erase(it);
      return absl::OkStatus();
    }
    case OpKind::kDeleteRoom:
      return ApplyDeleteRoom(batch, op);
    case OpKind::kMeta:
      rc = PutChecked(txn, dbi_[kMeta], Val(first.data(), first.size()), {second});
      if (rc != 0) return Error(rc, "cannot store a meta value");
      return absl::OkStatus();
  }
  RP_ASSERT(false);
  return absl::OkStatus();
}

absl::Status RoomStore::LogEnd(Batch* batch, const Hash256& room, uint64_t* next) {
  Cursor cursor;
  int rc = cursor.Open(batch->txn, dbi_[kUpdates]);
  if (rc != 0) return Error(rc, "cannot open a cursor");
  const auto end = RoomSeqKey(room, UINT64_MAX);
  MDB_val k = Val(end.data(), end.size());
  MDB_val value;
  rc = cursor.Get(&k, &value, MDB_SET_RANGE);
  rc = rc == 0 ? cursor.Get(&k, &value, MDB_PREV)
               : (rc == MDB_NOTFOUND ? cursor.Get(&k, &value, MDB_LAST) : rc);
  if (rc != 0 && rc != MDB_NOTFOUND) return Error(rc, "cannot find the end of a room log");
  *next = 0;
  if (rc == 0 && HasRoomPrefix(k, room)) {
    if (k.mv_size != kRoomSeqKeyBytes) return Corrupt(path_, "an update key has a bad size");
    *next = GetBe(static_cast<const uint8_t*>(k.mv_data) + 32, 8) + 1;
  }
  return absl::OkStatus();
}

absl::Status RoomStore::ApplyUpdate(Batch* batch, const Op& op) {
  MDB_txn* txn = batch->txn;
  if (!batch->seq_valid || batch->seq_room != op.room) {
    // First update of this room in the batch (or since another room's): check the room
    // exists, and take the end of its log from this batch, else from the last commit, else
    // from the log itself (a cursor: O(log n), and one allocation inside LMDB).
    MDB_val key = Val(op.room.data(), 32);
    MDB_val value;
    int rc = mdb_get(txn, dbi_[kRooms], &key, &value);
    if (rc == MDB_NOTFOUND) {
      return absl::InternalError(absl::StrCat("room storage ", path_,
                                              ": an update for a room with no genesis record"));
    }
    if (rc != 0) return Error(rc, "cannot look up a room");
    if (batch->seq_valid) {
      // Bounded (its reserve): a batch that switches rooms more often reads the log's end
      // itself from then on, never the cache, which is behind this batch's own writes.
      if (seq_staged_.size() < kSeqStagedMax) {
        seq_staged_.emplace_back(batch->seq_room, batch->seq_next);
      } else {
        batch->seq_uncached = true;
      }
    }
    bool known = false;
    for (size_t i = batch->seq_uncached ? 0 : seq_staged_.size(); i-- > 0 && !known;) {
      if (seq_staged_[i].first == op.room) {
        batch->seq_next = seq_staged_[i].second;
        known = true;
      }
    }
    if (!known && !batch->rooms_deleted && !batch->seq_uncached) {
      auto it = seq_cache_.find(op.room);
      if (it != seq_cache_.end()) {
        batch->seq_next = it->second;
        known = true;
      }
    }
    if (!known) RP_RETURN_IF_ERROR(LogEnd(batch, op.room, &batch->seq_next));
    batch->seq_room = op.room;
    batch->seq_valid = true;
  }
  auto key = RoomSeqKey(op.room, batch->seq_next);
  // The id index (in memory) is the duplicate check: an id stored earlier, or earlier in
  // this batch, is skipped.
  const IdKey id_key = IdKeyOf(op.id.data());
  if (ids_.contains(id_key)) {
    ++batch->duplicates;
    return absl::OkStatus();
  }
  const Bytes record(batch_arena_.data() + op.offset, op.bytes);
  int rc = PutChecked(txn, dbi_[kUpdates], Val(key.data(), key.size()), {Bytes(op.id), record},
                      MDB_NOOVERWRITE);
  if (rc == MDB_KEYEXIST) {
    // The cached end of the log was stale (nothing should make it so): never overwrite a
    // stored update. Read the end from the log and put both keys there instead.
    ++wstats_.seq_cache_stale;
    seq_cache_.erase(op.room);
    RP_RETURN_IF_ERROR(LogEnd(batch, op.room, &batch->seq_next));
    key = RoomSeqKey(op.room, batch->seq_next);
    rc = PutChecked(txn, dbi_[kUpdates], Val(key.data(), key.size()), {Bytes(op.id), record},
                    MDB_NOOVERWRITE);
  }
  if (rc != 0) return Error(rc, "cannot store an update");
  ids_.emplace(id_key, batch->seq_next);
  id_undo_.push_back(IdChange{id_key, batch->seq_next, op.room, op.id});
  ++batch->seq_next;
  ++batch->written;
  return absl::OkStatus();
}

absl::Status RoomStore::ApplyDeleteRoom(Batch* batch, const Op& op) {
  MDB_txn* txn = batch->txn;
  batch->seq_valid = false;
  batch->rooms_deleted = true;
  for (Db db : {kRooms, kCheckpoints}) {
    MDB_val key = Val(op.room.data(), 32);
    const int rc = mdb_del(txn, dbi_[db], &key, nullptr);
    if (rc != 0 && rc != MDB_NOTFOUND) return Error(rc, "cannot delete a room");
  }
  // Each pass finds the room's first remaining entry; bounded by the entries it holds.
  for (Db db : {kEpochs, kUpdates}) {
    Cursor cursor;
    int rc = cursor.Open(txn, dbi_[db]);
    if (rc != 0) return Error(rc, "cannot open a cursor");
    const auto start = RoomSeqKey(op.room, 0);
    for (;;) {
      MDB_val k = Val(start.data(), 33);  // room id and one zero byte sorts before them all
      MDB_val v;
      rc = cursor.Get(&k, &v, MDB_SET_RANGE);
      if (rc == MDB_NOTFOUND || (rc == 0 && !HasRoomPrefix(k, op.room))) break;
      if (rc != 0) return Error(rc, "cannot walk a room's entries");
      if (db == kUpdates) {
        Bytes payload;
        if (!Checked(v, &payload) || payload.size() < 32) {
          return Corrupt(path_, "an update has a bad checksum");
        }
        const IdKey id_key = IdKeyOf(payload.data());
        if (k.mv_size == kRoomSeqKeyBytes) {
          const uint64_t seq = GetBe(static_cast<const uint8_t*>(k.mv_data) + 32, 8);
          auto it = ids_.find(id_key);
          if (it != ids_.end() && it->second == seq) {
            IdChange c{id_key, seq, op.room, {}};
            std::memcpy(c.id.data(), payload.data(), 32);
            id_undo_.push_back(c);
            ids_.erase(it);
          }
        }
      }
      rc = mdb_cursor_del(cursor.get(), 0);
      if (rc != 0) return Error(rc, "cannot delete a room's entries");
    }
  }
  return absl::OkStatus();
}

// ---- reads ----

absl::Status RoomStore::ReadRooms() {
  Txn txn;
  int rc = txn.Begin(env_, MDB_RDONLY);
  if (rc != 0) return Error(rc, "cannot begin a read transaction");
  Cursor cursor;
  rc = cursor.Open(txn.get(), dbi_[kRooms]);
  if (rc != 0) return Error(rc, "cannot open a cursor");
  rooms_.clear();
  MDB_val k, v;
  for (rc = cursor.Get(&k, &v, MDB_FIRST); rc == 0; rc = cursor.Get(&k, &v, MDB_NEXT)) {
    if (k.mv_size != 32) return Corrupt(path_, "a room key has a bad size");
    Hash256 id;
    std::memcpy(id.data(), k.mv_data, 32);
    rooms_.insert(id);
  }
  if (rc != MDB_NOTFOUND) return Error(rc, "cannot list rooms");
  return absl::OkStatus();
}

std::vector<Hash256> RoomStore::Rooms() {
  std::vector<Hash256> out(rooms_.begin(), rooms_.end());
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status RoomStore::LoadCommitted(const Hash256& room, room::LoadedRoom* out,
                                      std::vector<Hash256>* update_ids) const {
  Txn txn;
  int rc = txn.Begin(env_, MDB_RDONLY);
  if (rc != 0) return Error(rc, "cannot begin a read transaction");
  MDB_val key = Val(room.data(), 32);
  MDB_val value;
  Bytes payload;
  rc = mdb_get(txn.get(), dbi_[kRooms], &key, &value);
  if (rc == MDB_NOTFOUND) return absl::OkStatus();  // staged only, or not at all
  if (rc != 0) return Error(rc, "cannot read a room");
  if (!Checked(value, &payload)) return Corrupt(path_, "a genesis record has a bad checksum");
  out->genesis.assign(payload.begin(), payload.end());

  rc = mdb_get(txn.get(), dbi_[kCheckpoints], &key, &value);
  if (rc != 0 && rc != MDB_NOTFOUND) return Error(rc, "cannot read a checkpoint");
  if (rc == 0) {
    if (!Checked(value, &payload) || payload.size() < 4 ||
        GetBe(payload.data(), 4) > payload.size() - 4) {
      return Corrupt(path_, "a checkpoint has a bad checksum");
    }
    const size_t record_bytes = GetBe(payload.data(), 4);
    out->checkpoint_record.assign(payload.begin() + 4, payload.begin() + 4 + record_bytes);
    out->checkpoint_blob.assign(payload.begin() + 4 + record_bytes, payload.end());
  }

  // Epochs then updates: each is the room's key range, in key order.
  for (Db db : {kEpochs, kUpdates}) {
    Cursor cursor;
    rc = cursor.Open(txn.get(), dbi_[db]);
    if (rc != 0) return Error(rc, "cannot open a cursor");
    const auto start = RoomSeqKey(room, 0);
    MDB_val k = Val(start.data(), 33);  // room id and a zero byte sorts before all its keys
    for (rc = cursor.Get(&k, &value, MDB_SET_RANGE); rc == 0 && HasRoomPrefix(k, room);
         rc = cursor.Get(&k, &value, MDB_NEXT)) {
      if (!Checked(value, &payload)) {
        return Corrupt(path_, absl::StrCat("an entry of '", kDbNames[db], "' has a bad checksum"));
      }
      if (db == kEpochs) {
        out->key_epochs.emplace_back(payload.begin(), payload.end());
        continue;
      }
      if (payload.size() < 32) return Corrupt(path_, "an update entry is too short");
      Hash256& id = update_ids->emplace_back();
      std::memcpy(id.data(), payload.data(), 32);
      out->updates.emplace_back(payload.begin() + 32, payload.end());
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return Error(rc, "cannot read a room's log");
  }
  return absl::OkStatus();
}

absl::StatusOr<room::LoadedRoom> RoomStore::Load(const Hash256& room_id) {
  // Not waiting for a batch in flight (a join for an unloaded room reaches here from the
  // network; the shard must not stall on the disk): the staged view is the batch in
  // flight, then ops_, both only read here (the writer only reads the batch too). The
  // committed read may or may not include the batch in flight: its updates are then
  // found twice and kept once (`seen`), a delete finds nothing, a checkpoint is replaced
  // by itself.
  SettleDone();
  RP_RETURN_IF_ERROR(CheckRoom(room_id));
  // Staged writes: the batch's ops, then ops_, each over its own arena.
  struct Staged {
    const Op* op;
    const std::vector<uint8_t>* arena;
  };
  std::vector<Staged> staged;  // control path (start-up, a room's reload): may allocate
  staged.reserve(batch_ops_.size() + ops_.size());
  for (const Op& op : batch_ops_) staged.push_back({&op, &batch_arena_});
  for (const Op& op : ops_) staged.push_back({&op, &arena_});
  // Staged writes after the room's last staged Forget apply; the committed state applies
  // only when no Forget is staged.
  size_t first = 0;
  bool committed = true;
  for (size_t i = 0; i < staged.size(); ++i) {
    if (staged[i].op->kind == OpKind::kDeleteRoom && staged[i].op->room == room_id) {
      first = i + 1;
      committed = false;
    }
  }
  room::LoadedRoom out;
  std::vector<Hash256> ids;  // parallel to out.updates
  if (committed) RP_RETURN_IF_ERROR(LoadCommitted(room_id, &out, &ids));
  // Control path (start-up): a set of the ids for the duplicate rule is fine here.
  absl::flat_hash_set<Hash256> seen(ids.begin(), ids.end());
  for (size_t i = first; i < staged.size(); ++i) {
    const Op& op = *staged[i].op;
    const Bytes a(staged[i].arena->data() + op.offset, op.bytes);
    const Bytes b = Second(op, *staged[i].arena);
    if (op.room != room_id) continue;  // a commit, too, deletes an id only in its room
    if (op.kind == OpKind::kDeleteUpdate && seen.erase(op.id) > 0) {
      const size_t at = std::find(ids.begin(), ids.end(), op.id) - ids.begin();
      ids.erase(ids.begin() + at);
      out.updates.erase(out.updates.begin() + at);
    }
    switch (op.kind) {
      case OpKind::kGenesis:
        if (out.genesis.empty()) out.genesis.assign(a.begin(), a.end());
        break;
      case OpKind::kKeyEpoch:
        if (op.epoch >= out.key_epochs.size()) out.key_epochs.emplace_back(a.begin(), a.end());
        break;
      case OpKind::kUpdate:
        if (seen.insert(op.id).second) {
          ids.push_back(op.id);
          out.updates.emplace_back(a.begin(), a.end());
        }
        break;
      case OpKind::kCheckpoint:
        out.checkpoint_record.assign(a.begin(), a.end());
        out.checkpoint_blob.assign(b.begin(), b.end());
        break;
      default:
        break;
    }
  }
  if (out.genesis.empty()) {  // only after a failed re-read of the committed room list
    return absl::NotFoundError(absl::StrCat("room ", wire::Hex(room_id), " is not stored"));
  }
  return out;
}

absl::StatusOr<bool> RoomStore::HasUpdate(const Hash256& update_id) {
  CommitWait();
  return ids_.contains(IdKeyOf(update_id.data()));
}

absl::StatusOr<std::optional<std::vector<uint8_t>>> RoomStore::GetMeta(
    absl::string_view name) const {
  Txn txn;
  int rc = txn.Begin(env_, MDB_RDONLY);
  if (rc != 0) return Error(rc, "cannot begin a read transaction");
  MDB_val key = Val(name.data(), name.size());
  MDB_val value;
  rc = mdb_get(txn.get(), dbi_[kMeta], &key, &value);
  if (rc == MDB_NOTFOUND) return std::optional<std::vector<uint8_t>>();
  if (rc != 0) return Error(rc, "cannot read a meta value");
  Bytes payload;
  if (!Checked(value, &payload)) {
    return Corrupt(path_, absl::StrCat("meta value '", name, "' has a bad checksum"));
  }
  return std::optional<std::vector<uint8_t>>(std::in_place, payload.begin(), payload.end());
}

absl::Status RoomStore::Verify() const {
  Txn txn;
  int rc = txn.Begin(env_, MDB_RDONLY);
  if (rc != 0) return Error(rc, "cannot begin a read transaction");
  // Expected key size per database (0: any).
  constexpr size_t kKeyBytes[kDbCount] = {32, kRoomEpochKeyBytes, kRoomSeqKeyBytes, 32, 32, 0};
  uint64_t counts[kDbCount] = {};
  for (int db = 0; db < kDbCount; ++db) {
    Cursor cursor;
    rc = cursor.Open(txn.get(), dbi_[db]);
    if (rc != 0) return Error(rc, "cannot open a cursor");
    MDB_val k, v;
    for (rc = cursor.Get(&k, &v, MDB_FIRST); rc == 0; rc = cursor.Get(&k, &v, MDB_NEXT)) {
      ++counts[db];
      // Format 1's index: emptied by the upgrade, whatever it holds (format 2 writes none).
      if (db == kUpdateIds) continue;
      Bytes payload;
      const bool key_ok = kKeyBytes[db] == 0 || k.mv_size == kKeyBytes[db];
      if (!key_ok || !Checked(v, &payload)) {
        return Corrupt(path_, absl::StrFormat("entry %d of '%s' has a bad %s", counts[db],
                                              kDbNames[db], key_ok ? "checksum" : "key"));
      }

      if (db == kUpdates && payload.size() < 32) {
        return Corrupt(path_, "an update entry is too short");
      }
    }
    if (rc != MDB_NOTFOUND) {
      return Error(rc, absl::StrCat("cannot read the '", kDbNames[db], "' database"));
    }
  }

  return absl::OkStatus();
}

RoomStoreStats RoomStore::stats() const noexcept {
  RoomStoreStats s = stats_;
  MDB_envinfo info{};
  MDB_stat env_stat{};
  mdb_env_info(env_, &info);
  mdb_env_stat(env_, &env_stat);
  s.map_bytes = info.me_mapsize;
  s.used_bytes = (uint64_t{info.me_last_pgno} + 1) * env_stat.ms_psize;
  return s;
}

}  // namespace ringpeer::store
