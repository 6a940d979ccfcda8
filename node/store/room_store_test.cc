// Goal: a shard's room store keeps everything a Commit() returned OK for, across close,
// reopen and SIGKILL; shows no half batch; and turns bad, foreign or full storage into a
// clear error instead of a crash or a silent loss. Method: real LMDB environments in
// temporary directories; crashes are forked children killed with SIGKILL at a point chosen
// by a seeded PRNG, reporting each returned Commit() through a pipe; corruption is done by
// truncating and overwriting data.mdb. Records are opaque bytes to the store, so the tests
// use patterned bytes rather than signed records.
#include "node/store/room_store.h"

#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <sodium.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "node/room/reducer.h"
#include "node/room/room.h"
#include "node/room/test_util.h"
#include "node/store/lmdb_alloc.h"

namespace ringpeer::store {
namespace {

#define RP_EXPECT_OK(expr)            \
  do {                                \
    const absl::Status s_ = (expr);   \
    EXPECT_TRUE(s_.ok()) << s_;       \
  } while (0)

std::string TempDir() {
  char tmpl[] = "/tmp/ringpeer-roomstore-XXXXXX";
  char* d = mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return std::string(d);
}

Hash256 Id(uint8_t kind, uint32_t a, uint32_t b = 0) {
  Hash256 h{};
  h[0] = kind;
  std::memcpy(h.data() + 1, &a, 4);
  std::memcpy(h.data() + 5, &b, 4);
  h[31] = 0x5a;
  return h;
}

// A record whose bytes say what it is, so a mix-up shows.
std::vector<uint8_t> Record(uint8_t tag, uint32_t n, size_t bytes = 300) {
  std::vector<uint8_t> r(bytes);
  for (size_t i = 0; i < bytes; ++i) r[i] = static_cast<uint8_t>(tag + n * 7 + i);
  return r;
}

std::unique_ptr<RoomStore> MustOpen(const std::string& dir, RoomStoreOptions options = {}) {
  auto store = RoomStore::Open(dir, 0, options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(RoomStore, RoundTripAcrossReopen) {
  const std::string dir = TempDir();
  const Hash256 a = Id(1, 1), b = Id(1, 2);
  {
    auto store = MustOpen(dir);
    ASSERT_NE(store, nullptr);
    RP_EXPECT_OK(store->PutGenesis(b, Record('g', 2)));
    RP_EXPECT_OK(store->PutGenesis(a, Record('g', 1)));
    RP_EXPECT_OK(store->PutKeyEpoch(a, 1, Record('e', 11)));
    RP_EXPECT_OK(store->PutKeyEpoch(a, 0, Record('e', 10)));
    // Interleaved arrivals of two rooms, and one duplicate that must be skipped.
    for (uint32_t i = 0; i < 50; ++i) {
      RP_EXPECT_OK(store->Append(a, Id(2, 1, i), Record('u', i)));
      RP_EXPECT_OK(store->Append(b, Id(2, 2, i), Record('v', i)));
    }
    RP_EXPECT_OK(store->Append(a, Id(2, 1, 3), Record('x', 3)));
    RP_EXPECT_OK(store->PutMeta("routing", Record('r', 0, 40)));
    ASSERT_TRUE(store->Commit().ok());
    EXPECT_EQ(store->staged_count(), 0u);
    // A second batch continues the logs, and a duplicate of a committed update is skipped.
    RP_EXPECT_OK(store->Append(a, Id(2, 1, 50), Record('u', 50)));
    RP_EXPECT_OK(store->Append(a, Id(2, 1, 0), Record('x', 0)));
    RP_EXPECT_OK(store->PutCheckpoint(a, Record('c', 1, 200), Record('b', 1, 1000)));
    ASSERT_TRUE(store->Commit().ok());
    EXPECT_EQ(store->stats().updates_written, 101u);
    EXPECT_EQ(store->stats().updates_duplicate, 2u);
  }
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  const std::vector<Hash256> rooms = store->Rooms();
  ASSERT_EQ(rooms.size(), 2u);
  EXPECT_EQ(rooms[0], std::min(a, b));
  auto loaded_a = store->Load(a);
  auto loaded_b = store->Load(b);
  ASSERT_TRUE(loaded_a.ok()) << loaded_a.status();
  ASSERT_TRUE(loaded_b.ok()) << loaded_b.status();
  const room::LoadedRoom& ra = *loaded_a;
  const room::LoadedRoom& rb = *loaded_b;
  EXPECT_EQ(ra.genesis, Record('g', 1));
  ASSERT_EQ(ra.key_epochs.size(), 2u);
  EXPECT_EQ(ra.key_epochs[0], Record('e', 10));
  EXPECT_EQ(ra.key_epochs[1], Record('e', 11));
  ASSERT_EQ(ra.updates.size(), 51u);
  for (uint32_t i = 0; i <= 50; ++i) EXPECT_EQ(ra.updates[i], Record('u', i)) << i;
  EXPECT_EQ(ra.checkpoint_record, Record('c', 1, 200));
  EXPECT_EQ(ra.checkpoint_blob, Record('b', 1, 1000));
  EXPECT_EQ(rb.genesis, Record('g', 2));
  EXPECT_TRUE(rb.key_epochs.empty());
  EXPECT_TRUE(rb.checkpoint_record.empty());
  ASSERT_EQ(rb.updates.size(), 50u);
  EXPECT_EQ(rb.updates[49], Record('v', 49));
  EXPECT_TRUE(*store->HasUpdate(Id(2, 2, 7)));
  EXPECT_FALSE(*store->HasUpdate(Id(2, 3, 7)));
  auto meta = store->GetMeta("routing");
  ASSERT_TRUE(meta.ok());
  ASSERT_TRUE(meta->has_value());
  EXPECT_EQ(**meta, Record('r', 0, 40));
  EXPECT_FALSE(store->GetMeta("absent")->has_value());
  EXPECT_TRUE(store->Verify().ok());

  // Deletes: one update, then a whole room; the other room is untouched.
  RP_EXPECT_OK(store->DeleteUpdate(b, Id(2, 2, 0)));
  RP_EXPECT_OK(store->Forget(a));
  ASSERT_TRUE(store->Commit().ok());
  EXPECT_EQ(store->Load(a).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(*store->HasUpdate(Id(2, 1, 5)));
  EXPECT_EQ(store->Rooms().size(), 1u);
  auto rb2 = store->Load(b);
  ASSERT_TRUE(rb2.ok());
  ASSERT_EQ(rb2->updates.size(), 49u);
  EXPECT_EQ(rb2->updates[0], Record('v', 1));
  EXPECT_TRUE(store->Verify().ok());
}

// Issue 15: a batch's first update of a room takes the end of its log from the last commit
// (no cursor), and never from a value gone stale: across commits of interleaved rooms, a
// room forgotten and made again, and a reopen, every update is kept once and in order,
// and no cached end ever collided with a stored key.
TEST(RoomStore, LogEndsCarryAcrossCommitsAndRoomDeletion) {
  const std::string dir = TempDir();
  const Hash256 a = Id(1, 1), b = Id(1, 2);
  uint32_t next_a = 0;
  {
    auto store = MustOpen(dir);
    ASSERT_NE(store, nullptr);
    RP_EXPECT_OK(store->PutGenesis(a, Record('g', 1)));
    RP_EXPECT_OK(store->PutGenesis(b, Record('g', 2)));
    for (uint32_t batch = 0; batch < 5; ++batch) {
      for (uint32_t i = 0; i < 7; ++i) {
        RP_EXPECT_OK(store->Append(a, Id(2, 1, next_a), Record('u', next_a)));
        ++next_a;
        if (i % 3 == 0) RP_EXPECT_OK(store->Append(b, Id(2, 2, batch * 7 + i), Record('v', i)));
      }
      ASSERT_TRUE(store->Commit().ok());
    }
    // Forget a and make it again; its new log starts empty, in the same batch and after.
    RP_EXPECT_OK(store->Forget(a));
    RP_EXPECT_OK(store->PutGenesis(a, Record('g', 3)));
    RP_EXPECT_OK(store->Append(a, Id(3, 1, 0), Record('w', 0)));
    ASSERT_TRUE(store->Commit().ok());
    for (uint32_t i = 1; i < 4; ++i) {
      RP_EXPECT_OK(store->Append(b, Id(3, 2, i), Record('y', i)));
      RP_EXPECT_OK(store->Append(a, Id(3, 1, i), Record('w', i)));
      ASSERT_TRUE(store->Commit().ok());
    }
    EXPECT_EQ(store->stats().seq_cache_stale, 0u);
    auto ra = store->Load(a);
    ASSERT_TRUE(ra.ok()) << ra.status();
    ASSERT_EQ(ra->updates.size(), 4u);
    for (uint32_t i = 0; i < 4; ++i) EXPECT_EQ(ra->updates[i], Record('w', i)) << i;
  }
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  RP_EXPECT_OK(store->Append(a, Id(3, 1, 4), Record('w', 4)));  // after a reopen: the log
  ASSERT_TRUE(store->Commit().ok());
  EXPECT_EQ(store->stats().seq_cache_stale, 0u);
  auto ra = store->Load(a);
  auto rb = store->Load(b);
  ASSERT_TRUE(ra.ok() && rb.ok());
  ASSERT_EQ(ra->updates.size(), 5u);
  for (uint32_t i = 0; i < 5; ++i) EXPECT_EQ(ra->updates[i], Record('w', i)) << i;
  ASSERT_EQ(rb->updates.size(), 5u * 3 + 3);
  EXPECT_EQ(rb->updates.back(), Record('y', 3));
  EXPECT_TRUE(store->Verify().ok());

  // A batch that switches rooms more often than it keeps track of (70 rooms round-robin,
  // three rounds): past its bound it reads each log's end from the log, and the next
  // batch too.
  std::vector<Hash256> many;
  for (uint32_t r = 0; r < 70; ++r) {
    many.push_back(Id(4, r));
    RP_EXPECT_OK(store->PutGenesis(many.back(), Record('g', r)));
  }
  for (uint32_t batch = 0; batch < 2; ++batch) {
    for (uint32_t round = 0; round < 3; ++round) {
      for (uint32_t r = 0; r < 70; ++r) {
        const uint32_t n = batch * 3 + round;
        RP_EXPECT_OK(store->Append(many[r], Id(5, r, n), Record('z', r * 100 + n)));
      }
    }
    ASSERT_TRUE(store->Commit().ok());
  }
  EXPECT_EQ(store->stats().seq_cache_stale, 0u);
  for (uint32_t r = 0; r < 70; ++r) {
    auto loaded = store->Load(many[r]);
    ASSERT_TRUE(loaded.ok());
    ASSERT_EQ(loaded->updates.size(), 6u) << r;
    for (uint32_t n = 0; n < 6; ++n) EXPECT_EQ(loaded->updates[n], Record('z', r * 100 + n));
  }
}

TEST(RoomStore, LoadSeesStagedWrites) {
  const std::string dir = TempDir();
  const Hash256 a = Id(1, 1);
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->Commit().ok());  // empty: no I/O
  EXPECT_EQ(store->stats().commits, 0u);
  RP_EXPECT_OK(store->PutGenesis(a, Record('g', 1)));
  RP_EXPECT_OK(store->PutKeyEpoch(a, 0, Record('e', 0)));
  RP_EXPECT_OK(store->Append(a, Id(2, 1, 0), Record('u', 0)));
  ASSERT_TRUE(store->Commit().ok());
  // Staged over committed: a duplicate id, an epoch already stored, a new update, a
  // checkpoint.
  RP_EXPECT_OK(store->Append(a, Id(2, 1, 0), Record('x', 0)));
  RP_EXPECT_OK(store->PutKeyEpoch(a, 0, Record('x', 1)));
  RP_EXPECT_OK(store->PutKeyEpoch(a, 1, Record('e', 1)));
  RP_EXPECT_OK(store->Append(a, Id(2, 1, 1), Record('u', 1)));
  RP_EXPECT_OK(store->PutCheckpoint(a, Record('c', 1), Record('b', 1)));
  auto staged = store->Load(a);
  ASSERT_TRUE(staged.ok());
  ASSERT_EQ(staged->updates.size(), 2u);
  EXPECT_EQ(staged->updates[1], Record('u', 1));
  ASSERT_EQ(staged->key_epochs.size(), 2u);
  EXPECT_EQ(staged->key_epochs[0], Record('e', 0));
  EXPECT_EQ(staged->checkpoint_blob, Record('b', 1));
  ASSERT_TRUE(store->Commit().ok());
  auto committed = store->Load(a);
  ASSERT_TRUE(committed.ok());
  EXPECT_EQ(committed->updates, staged->updates);
  EXPECT_EQ(committed->key_epochs, staged->key_epochs);
  EXPECT_EQ(committed->checkpoint_record, staged->checkpoint_record);
  // A staged Forget hides the committed room; a genesis after it starts it afresh.
  RP_EXPECT_OK(store->Forget(a));
  EXPECT_TRUE(store->Rooms().empty());
  EXPECT_EQ(store->Load(a).status().code(), absl::StatusCode::kNotFound);
  RP_EXPECT_OK(store->PutGenesis(a, Record('g', 1)));
  RP_EXPECT_OK(store->Append(a, Id(2, 1, 7), Record('u', 7)));
  auto fresh = store->Load(a);
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fresh->key_epochs.empty());
  ASSERT_EQ(fresh->updates.size(), 1u);
  ASSERT_TRUE(store->Commit().ok());
  store.reset();
  store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  auto reopened = store->Load(a);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(reopened->updates, fresh->updates);
  EXPECT_TRUE(reopened->checkpoint_record.empty());
}

TEST(RoomStore, UnknownRoomIsRefusedWhenStaged) {
  const std::string dir = TempDir();
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  RP_EXPECT_OK(store->PutGenesis(Id(1, 1), Record('g', 1)));
  EXPECT_EQ(store->Append(Id(1, 9), Id(2, 9), Record('u', 9)).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store->PutCheckpoint(Id(1, 9), Record('c', 9), {}).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store->staged_count(), 1u);
  EXPECT_TRUE(store->Commit().ok());
  EXPECT_EQ(store->Rooms().size(), 1u);
}

TEST(RoomStore, FiveMegabyteCheckpoint) {
  const std::string dir = TempDir();
  const Hash256 room = Id(1, 1);
  std::vector<uint8_t> blob(5 * 1000 * 1000);
  std::mt19937_64 rng(7);
  for (auto& byte : blob) byte = static_cast<uint8_t>(rng());
  {
    auto store = MustOpen(dir);
    ASSERT_NE(store, nullptr);
    RP_EXPECT_OK(store->PutGenesis(room, Record('g', 1)));
    RP_EXPECT_OK(store->PutCheckpoint(room, Record('c', 1, 4000), blob));
    ASSERT_TRUE(store->Commit().ok());
  }
  {
    auto store = MustOpen(dir);
    ASSERT_NE(store, nullptr);
    auto loaded = store->Load(room);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->checkpoint_record, Record('c', 1, 4000));
    EXPECT_TRUE(loaded->checkpoint_blob == blob);
    // A newer, smaller checkpoint replaces it.
    RP_EXPECT_OK(store->PutCheckpoint(room, Record('c', 2, 100), Record('b', 2, 10)));
    ASSERT_TRUE(store->Commit().ok());
  }
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  auto loaded = store->Load(room);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->checkpoint_record, Record('c', 2, 100));
  EXPECT_EQ(loaded->checkpoint_blob, Record('b', 2, 10));
}

// ---- crash simulation ----

constexpr uint32_t kRooms = 3;
// Batch b holds BatchSize(b) updates spread over the rooms; sizes vary so that commits
// touch varying numbers of pages.
uint32_t BatchSize(uint32_t b) { return 1 + (b * 37) % 64; }

// RunChild: commits batches from `first` on, writing each batch number to `fd` after its
// Commit() returned OK, until killed (or `last`). With `writer`, as a shard with the
// writer thread does: batch b is staged while batch b - 1 is in flight, the child sleeps
// on the eventfd the writer rings, and b - 1 is reported once CommitPoll said OK.
[[noreturn]] void RunChild(const std::string& dir, uint32_t first, uint32_t last, int fd,
                           bool writer) {
  RoomStoreOptions options;
  options.verify_on_open = false;  // the parent verifies after the crash
  auto store = RoomStore::Open(dir, 0, options);
  if (!store.ok()) _exit(2);
  const int wake = writer ? eventfd(0, EFD_CLOEXEC) : -1;
  if (writer) {
    if (wake < 0) _exit(7);
    (*store)->UseWriterThread(wake);
  }
  for (uint32_t r = 0; r < kRooms; ++r) {
    if (!(*store)->PutGenesis(Id(1, r), Record('g', r)).ok()) _exit(5);
  }
  for (uint32_t b = first; b < last + (writer ? 1 : 0); ++b) {
    for (uint32_t j = 0; b < last && j < BatchSize(b); ++j) {
      const absl::Status s =
          (*store)->Append(Id(1, j % kRooms), Id(2, b, j), Record('u', b * 1000 + j));
      if (!s.ok()) _exit(6);
    }
    if (!writer) {
      if (!(*store)->Commit().ok()) _exit(3);
      if (write(fd, &b, sizeof(b)) != sizeof(b)) _exit(4);
      continue;
    }
    // Bounded: each batch rings the eventfd once after it leaves flight.
    for (int rings = 0; (*store)->CommitInFlight() && rings < 4; ++rings) {
      uint64_t v;
      if (read(wake, &v, sizeof(v)) != sizeof(v)) _exit(8);
    }
    if ((*store)->CommitInFlight()) _exit(9);
    const std::optional<absl::Status> done = (*store)->CommitPoll();
    if (done.has_value() && !done->ok()) _exit(3);
    if (b > first) {
      if (!done.has_value()) _exit(10);  // batch b - 1 was started and must report
      const uint32_t acked = b - 1;
      if (write(fd, &acked, sizeof(acked)) != sizeof(acked)) _exit(4);
    }
    if (b < last) (*store)->CommitStart();
  }
  _exit(0);
}

class RoomStoreSigkill : public ::testing::TestWithParam<bool> {};

// With and without the writer thread (issue 15, item 2).
INSTANTIATE_TEST_SUITE_P(Writer, RoomStoreSigkill, ::testing::Bool());

TEST_P(RoomStoreSigkill, LosesNothingAcknowledged) {
  const bool writer = GetParam();
  const std::string dir = TempDir();
  std::mt19937 rng(20240605);
  constexpr uint32_t kBatchesPerRound = 80;
  constexpr int kRounds = 5;
  uint32_t next = 0;  // batches known present so far
  for (int round = 0; round < kRounds; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const uint32_t last = next + kBatchesPerRound;
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      RunChild(dir, next, last, fds[1], writer);
    }
    close(fds[1]);
    // Kill after a random number of acknowledgements: the child is then somewhere in the
    // next batch (building it, inside the commit, or in its fsync).
    const uint32_t kill_after = 1 + rng() % (kBatchesPerRound - 1);
    uint32_t reported = 0;
    int64_t last_acked = -1;
    uint32_t b;
    bool killed = false;
    for (;;) {  // bounded: the child writes at most kBatchesPerRound reports
      const ssize_t r = read(fds[0], &b, sizeof(b));
      if (r < 0 && errno == EINTR) continue;
      if (r != sizeof(b)) break;
      last_acked = b;
      if (++reported == kill_after) {
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        killed = true;
      }
    }
    close(fds[0]);
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(killed);
    ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited " << WEXITSTATUS(wstatus);
    ASSERT_GE(last_acked, static_cast<int64_t>(next));

    auto store = MustOpen(dir);  // verify_on_open walks the whole environment
    ASSERT_NE(store, nullptr);
    // Every acknowledged batch is whole; the one in flight is whole or absent.
    uint32_t present_batches = 0;
    for (uint32_t batch = 0; batch < last; ++batch) {
      uint32_t present = 0;
      for (uint32_t j = 0; j < BatchSize(batch); ++j) present += *store->HasUpdate(Id(2, batch, j));
      ASSERT_TRUE(present == 0 || present == BatchSize(batch))
          << "round " << round << " batch " << batch << ": " << present << " of "
          << BatchSize(batch);
      if (batch <= last_acked) {
        ASSERT_EQ(present, BatchSize(batch)) << "batch " << batch;
      }
      if (present != 0) {
        ASSERT_EQ(present_batches, batch) << "batches are committed in order";
        ++present_batches;
      }
    }
    ASSERT_LE(present_batches, static_cast<uint32_t>(last_acked) + 2);
    // The logs hold the updates in arrival order.
    auto room0 = store->Load(Id(1, 0));
    ASSERT_TRUE(room0.ok()) << room0.status();
    size_t i = 0;
    for (uint32_t batch = 0; batch < present_batches; ++batch) {
      for (uint32_t j = 0; j < BatchSize(batch); j += kRooms) {
        ASSERT_LT(i, room0->updates.size());
        ASSERT_EQ(room0->updates[i++], Record('u', batch * 1000 + j));
      }
    }
    EXPECT_EQ(i, room0->updates.size());
    next = present_batches;
  }
}

// ---- corruption, foreign and full storage ----

std::string DataFile(const std::string& dir) { return dir + "/shard-0/data.mdb"; }

// MakeStore: a store holding one room with `updates` updates.
void MakeStore(const std::string& dir, uint32_t updates) {
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  RP_EXPECT_OK(store->PutGenesis(Id(1, 1), Record('g', 1)));
  for (uint32_t i = 0; i < updates; ++i) {
    RP_EXPECT_OK(store->Append(Id(1, 1), Id(2, 1, i), Record('u', i)));
  }
  ASSERT_TRUE(store->Commit().ok());
}

// ExpectCorrupt: Open refuses the store with a DataLoss naming it. With `in_process`, the
// same holds without the forked checker (the failure is one LMDB or the store detects).
void ExpectCorrupt(const std::string& dir, std::string_view detail = "",
                   bool in_process = false) {
  for (bool verify : {true, false}) {
    if (!verify && !in_process) continue;
    RoomStoreOptions options;
    options.verify_on_open = verify;
    auto store = RoomStore::Open(dir, 0, options);
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
    const std::string msg(store.status().message());
    EXPECT_NE(msg.find("data directory " + dir + "/shard-0 is corrupt"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find(detail), std::string::npos) << msg;
  }
}

TEST(RoomStore, TruncatedFileIsAClearError) {
  const std::string dir = TempDir();
  MakeStore(dir, 300);
  struct stat st;
  ASSERT_EQ(stat(DataFile(dir).c_str(), &st), 0);
  ASSERT_EQ(truncate(DataFile(dir).c_str(), st.st_size / 2), 0);
  ExpectCorrupt(dir, "truncated", true);
  ASSERT_EQ(truncate(DataFile(dir).c_str(), 100), 0);
  ExpectCorrupt(dir, "", true);
  ASSERT_EQ(truncate(DataFile(dir).c_str(), 0), 0);
  ExpectCorrupt(dir, "empty", true);
  ASSERT_EQ(unlink(DataFile(dir).c_str()), 0);
  ExpectCorrupt(dir, "missing", true);
}

void Overwrite(const std::string& path, off_t offset, const std::string& bytes) {
  const int fd = open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), offset), static_cast<ssize_t>(bytes.size()));
  close(fd);
}

TEST(RoomStore, ScribbledFileIsAClearError) {
  {
    // One flipped byte inside a stored record: only the checksum can see it.
    const std::string dir = TempDir();
    MakeStore(dir, 50);
    const std::string data = ReadFile(DataFile(dir));
    const std::vector<uint8_t> rec = Record('u', 17);
    const size_t at = data.find(std::string(rec.begin(), rec.end()));
    ASSERT_NE(at, std::string::npos);
    Overwrite(DataFile(dir), static_cast<off_t>(at + 100), std::string(1, data[at + 100] ^ 1));
    ExpectCorrupt(dir, "checksum");
    // Without the forked walk the store opens (the damaged entry is left out of the id
    // index and counted) and loading its room reports it, so other rooms stay readable.
    RoomStoreOptions unchecked;
    unchecked.verify_on_open = false;
    auto store = RoomStore::Open(dir, 0, unchecked);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->stats().index_skipped, 1u);
    EXPECT_EQ((*store)->Load(Id(1, 1)).status().code(), absl::StatusCode::kDataLoss);
  }
  {
    // Garbage over the meta pages.
    const std::string dir = TempDir();
    MakeStore(dir, 50);
    Overwrite(DataFile(dir), 0, std::string(8192, '\xa5'));
    ExpectCorrupt(dir, "", true);
  }
  {
    // Garbage over every page after the meta pages (tree pages, leaves and overflow).
    const std::string dir = TempDir();
    MakeStore(dir, 300);
    struct stat st;
    ASSERT_EQ(stat(DataFile(dir).c_str(), &st), 0);
    std::mt19937 rng(3);
    std::string junk(static_cast<size_t>(st.st_size) - 8192, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    Overwrite(DataFile(dir), 8192, junk);
    ExpectCorrupt(dir);
  }
}

TEST(RoomStore, ForeignEnvironmentIsRefusedAndUntouched) {
  const std::string dir = TempDir();
  const std::string shard = dir + "/shard-0";
  ASSERT_EQ(mkdir(shard.c_str(), 0700), 0);
  {
    // Another program's LMDB environment in the place of a shard.
    MDB_env* env;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_open(env, shard.c_str(), 0, 0600), 0);
    MDB_txn* txn;
    MDB_dbi dbi;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, nullptr, 0, &dbi), 0);
    MDB_val k{5, const_cast<char*>("hello")}, v{5, const_cast<char*>("world")};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  const std::string before = ReadFile(DataFile(dir));
  auto store = RoomStore::Open(dir, 0, {});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("not a ringpeer room store"), std::string::npos)
      << store.status();
  EXPECT_EQ(ReadFile(DataFile(dir)), before);

  // A shard path that is a file.
  const std::string other = TempDir();
  std::ofstream(other + "/shard-0") << "x";
  EXPECT_EQ(RoomStore::Open(other, 0, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Issue 15: format 2 keeps the update-id index in memory. A format-1 store (its index in
// LMDB, one entry per update) opens: its index is emptied, its marker says 2, and the
// updates are found and deduplicated through the index built from the log.
TEST(RoomStore, FormatOneStoreIsUpgradedAndItsIndexRebuiltFromTheLog) {
  const std::string dir = TempDir();
  MakeStore(dir, 40);
  auto put_checked = [](MDB_txn* txn, MDB_dbi dbi, MDB_val k, std::string value) {
    const unsigned char key[16] = {'r', 'i', 'n', 'g', 'p', 'e', 'e', 'r',
                                   '-', 's', 't', 'o', 'r', 'e', '-', '1'};
    unsigned char sum[8];
    crypto_shorthash(sum, reinterpret_cast<const unsigned char*>(value.data()), value.size(), key);
    value.append(reinterpret_cast<char*>(sum), 8);
    MDB_val v{value.size(), value.data()};
    return mdb_put(txn, dbi, &k, &v, 0);
  };
  auto index_entries = [&](std::string* marker) {
    MDB_env* env;
    EXPECT_EQ(mdb_env_create(&env), 0);
    EXPECT_EQ(mdb_env_set_maxdbs(env, 16), 0);
    EXPECT_EQ(mdb_env_open(env, (dir + "/shard-0").c_str(), MDB_RDONLY, 0600), 0);
    MDB_txn* txn;
    MDB_dbi ids, meta;
    EXPECT_EQ(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), 0);
    EXPECT_EQ(mdb_dbi_open(txn, "update_ids", 0, &ids), 0);
    EXPECT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    MDB_stat st{};
    EXPECT_EQ(mdb_stat(txn, ids, &st), 0);
    MDB_val k{15, const_cast<char*>("ringpeer.format")}, v;
    EXPECT_EQ(mdb_get(txn, meta, &k, &v), 0);
    *marker = std::string(static_cast<const char*>(v.mv_data), v.mv_size - 8);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return st.ms_entries;
  };
  {
    // Make it what format 1 wrote: an index entry per update (id -> room ‖ seq), marker 1.
    MDB_env* env;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 16), 0);
    ASSERT_EQ(mdb_env_open(env, (dir + "/shard-0").c_str(), 0, 0600), 0);
    MDB_txn* txn;
    MDB_dbi ids, meta;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "update_ids", 0, &ids), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    for (uint32_t i = 0; i < 40; ++i) {
      Hash256 id = Id(2, 1, i);
      std::string where(reinterpret_cast<const char*>(Id(1, 1).data()), 32);
      for (int b = 7; b >= 0; --b) where.push_back(static_cast<char>((uint64_t{i} >> (8 * b)) & 0xff));
      ASSERT_EQ(put_checked(txn, ids, MDB_val{32, id.data()}, where), 0);
    }
    ASSERT_EQ(put_checked(txn, meta, MDB_val{15, const_cast<char*>("ringpeer.format")},
                          "ringpeer-room-store 1"), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  std::string marker;
  ASSERT_EQ(index_entries(&marker), 40u);
  ASSERT_EQ(marker, "ringpeer-room-store 1");
  {
    auto store = MustOpen(dir);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->updates_count(), 40u);
    EXPECT_TRUE(*store->HasUpdate(Id(2, 1, 39)));
    EXPECT_FALSE(*store->HasUpdate(Id(2, 1, 40)));
    RP_EXPECT_OK(store->Append(Id(1, 1), Id(2, 1, 7), Record('x', 7)));  // stored: skipped
    RP_EXPECT_OK(store->Append(Id(1, 1), Id(2, 1, 40), Record('u', 40)));
    ASSERT_TRUE(store->Commit().ok());
    EXPECT_EQ(store->stats().updates_duplicate, 1u);
    RP_EXPECT_OK(store->Prune(Id(1, 1), std::vector<Hash256>{Id(2, 1, 0), Id(2, 1, 40)}));
    ASSERT_TRUE(store->Commit().ok());
    EXPECT_TRUE(store->Verify().ok());
  }
  EXPECT_EQ(index_entries(&marker), 0u);
  EXPECT_EQ(marker, absl::StrCat("ringpeer-room-store ", kStoreFormatVersion));
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->updates_count(), 39u);
  EXPECT_FALSE(*store->HasUpdate(Id(2, 1, 0)));
  EXPECT_TRUE(*store->HasUpdate(Id(2, 1, 1)));
  auto loaded = store->Load(Id(1, 1));
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->updates.size(), 39u);
  EXPECT_EQ(loaded->updates[0], Record('u', 1));
  EXPECT_EQ(loaded->updates[38], Record('u', 39));
}

TEST(RoomStore, NewerFormatIsRefusedAndUntouched) {
  const std::string dir = TempDir();
  MakeStore(dir, 3);
  {
    // Rewrite the format marker as a newer ringpeer would (value ‖ SipHash, the store's
    // on-disk format).
    MDB_env* env;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 16), 0);
    ASSERT_EQ(mdb_env_open(env, (dir + "/shard-0").c_str(), 0, 0600), 0);
    MDB_txn* txn;
    MDB_dbi dbi;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    std::string value = absl::StrCat("ringpeer-room-store ", kStoreFormatVersion + 1);
    const unsigned char key[16] = {'r', 'i', 'n', 'g', 'p', 'e', 'e', 'r',
                                   '-', 's', 't', 'o', 'r', 'e', '-', '1'};
    unsigned char sum[8];
    crypto_shorthash(sum, reinterpret_cast<const unsigned char*>(value.data()), value.size(),
                     key);
    value.append(reinterpret_cast<char*>(sum), 8);
    MDB_val k{15, const_cast<char*>("ringpeer.format")}, v{value.size(), value.data()};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  const std::string before = ReadFile(DataFile(dir));
  auto store = RoomStore::Open(dir, 0, {});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("newer ringpeer"), std::string::npos)
      << store.status();
  EXPECT_EQ(ReadFile(DataFile(dir)), before);
}

TEST(RoomStore, AnotherNodesStoreIsRefused) {
  const std::string dir = TempDir();
  RoomStoreOptions mine;
  mine.node_id = Id(9, 1);
  ASSERT_NE(MustOpen(dir, mine), nullptr);
  ASSERT_NE(MustOpen(dir, mine), nullptr);
  RoomStoreOptions theirs;
  theirs.node_id = Id(9, 2);
  auto store = RoomStore::Open(dir, 0, theirs);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("belongs to node"), std::string::npos);
}

// AppendRoomOne: stages room 1's updates [first, last), Id(2, 1, i) with Record('u', i).
void AppendRoomOne(RoomStore& store, uint32_t first, uint32_t last) {
  for (uint32_t i = first; i < last; ++i) {
    RP_EXPECT_OK(store.Append(Id(1, 1), Id(2, 1, i), Record('u', i)));
  }
}

// StageMapOverflow: after updates 0..19 are committed, the batch a 256 KiB map cannot
// take: updates 20..39, a prune of committed update 5 (applied to the in-memory id index
// before the map fills, and put back when the commit fails: RoomStore::Reconcile), and a
// `big` checkpoint.
// `held`: the checkpoint's blob is staged by reference (PutCheckpointShared), as a
// fetched checkpoint is: it must survive being put back in front of later writes.
void StageMapOverflow(RoomStore& store, const std::vector<uint8_t>& big, bool held = false) {
  AppendRoomOne(store, 20, 40);
  RP_EXPECT_OK(store.Prune(Id(1, 1), std::vector<Hash256>{Id(2, 1, 5)}));
  if (held) {
    const std::vector<uint8_t> record = Record('c', 1);
    std::vector<uint8_t> bytes(record.size() + big.size());
    std::copy(record.begin(), record.end(), bytes.begin());
    std::copy(big.begin(), big.end(), bytes.begin() + static_cast<ptrdiff_t>(record.size()));
    auto object = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
    const Bytes blob(object->data() + record.size(), big.size());
    RP_EXPECT_OK(store.PutCheckpointShared(Id(1, 1), Record('c', 1), blob, object));
    EXPECT_EQ(object.use_count(), 2);  // the store's reference, not a copy
  } else {
    RP_EXPECT_OK(store.PutCheckpoint(Id(1, 1), Record('c', 1), big));
  }
}

TEST(RoomStore, MapFullKeepsEarlierDataAndTheBatchStaged) {
  const std::string dir = TempDir();
  RoomStoreOptions small;
  small.map_bytes = 256 * 1024;
  const std::vector<uint8_t> big(1 << 20, 7);
  {
    auto store = MustOpen(dir, small);
    ASSERT_NE(store, nullptr);
    RP_EXPECT_OK(store->PutGenesis(Id(1, 1), Record('g', 1)));
    AppendRoomOne(*store, 0, 20);
    ASSERT_TRUE(store->Commit().ok());
    StageMapOverflow(*store, big);
    const size_t staged = store->staged_count();
    for (int attempt = 0; attempt < 2; ++attempt) {  // the retry fails the same way
      const absl::Status st = store->Commit();
      EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
      EXPECT_NE(st.message().find("room storage " + dir +
                                  "/shard-0 is full (map size 262144 bytes); raise "
                                  "--storage-max"),
                std::string::npos)
          << st;
      EXPECT_EQ(store->staged_count(), staged);
    }
    EXPECT_FALSE(*store->HasUpdate(Id(2, 1, 20)));
    EXPECT_TRUE(*store->HasUpdate(Id(2, 1, 19)));
    EXPECT_TRUE(*store->HasUpdate(Id(2, 1, 5)));
    EXPECT_EQ(store->updates_count(), 20u);
  }
  // Restarted with a bigger map: the earlier batch is all there, nothing of the failed one,
  // and what did not fit now does.
  auto store = MustOpen(dir, {});
  ASSERT_NE(store, nullptr);
  auto room = store->Load(Id(1, 1));
  ASSERT_TRUE(room.ok());
  EXPECT_EQ(room->updates.size(), 20u);
  EXPECT_TRUE(room->checkpoint_record.empty());
  RP_EXPECT_OK(store->PutCheckpoint(Id(1, 1), Record('c', 1), big));
  EXPECT_TRUE(store->Commit().ok());
  EXPECT_EQ(store->Load(Id(1, 1))->checkpoint_blob, big);
}

// The same full map with the writer thread: the batch fails on the writer while more is
// staged, and goes back in front of it, so the staged view keeps the arrival order and the
// next batch retries both.
// WriterWithTwentyCommitted: `store` commits on its writer thread, which rings the eventfd
// returned (-1: none could be made, or the batch did not report OK); room 1's genesis and
// updates 0..19 are in the batch started, waited for and polled (its OK taken).
int WriterWithTwentyCommitted(RoomStore& store) {
  const int wake = eventfd(0, EFD_CLOEXEC);
  if (wake < 0) return -1;
  store.UseWriterThread(wake);
  RP_EXPECT_OK(store.PutGenesis(Id(1, 1), Record('g', 1)));
  AppendRoomOne(store, 0, 20);
  store.CommitStart();
  store.CommitWait();
  const std::optional<absl::Status> done = store.CommitPoll();
  EXPECT_TRUE(done.has_value());
  if (!done.has_value() || !done->ok()) {
    if (done.has_value()) ADD_FAILURE() << *done;
    return -1;  // the eventfd stays with the store (closed at process exit)
  }
  return wake;
}

TEST(RoomStore, MapFullOnTheWriterPutsTheBatchBackInFront) {
  for (const bool held : {false, true}) {
    SCOPED_TRACE(held ? "blob held by reference" : "blob copied");
    const std::string dir = TempDir();
    RoomStoreOptions small;
    small.map_bytes = 256 * 1024;
    const std::vector<uint8_t> big(1 << 20, 7);
    {
      auto store = MustOpen(dir, small);
      ASSERT_NE(store, nullptr);
      const int wake = WriterWithTwentyCommitted(*store);
      ASSERT_GE(wake, 0);
      EXPECT_FALSE(store->CommitPoll().has_value());  // reported once
      EXPECT_EQ(store->commit_figures().commits, 1u);
      EXPECT_GT(store->commit_figures().commit_us, 0u);  // a transaction and an fsync
      uint64_t rung = 0;
      ASSERT_EQ(read(wake, &rung, sizeof(rung)), static_cast<ssize_t>(sizeof(rung)));
      EXPECT_EQ(rung, 1u);  // the first batch rang once (read here, so the next read is new)
      StageMapOverflow(*store, big, held);
      const size_t first_batch = store->staged_count();
      store->CommitStart();
      // Staged while that batch is (or was) in flight: they belong to the next one.
      AppendRoomOne(*store, 40, 45);
      EXPECT_EQ(store->staged_count(), first_batch + 5);
      store->CommitWait();  // past the ring, too
      rung = 0;
      ASSERT_EQ(read(wake, &rung, sizeof(rung)), static_cast<ssize_t>(sizeof(rung)));
      EXPECT_EQ(rung, 1u);  // the second batch rang
      std::optional<absl::Status> done = store->CommitPoll();
      ASSERT_TRUE(done.has_value());
      EXPECT_EQ(done->code(), absl::StatusCode::kResourceExhausted) << *done;
      EXPECT_EQ(store->staged_count(), first_batch + 5);
      // Committed 0..19, then the failed batch (20..39 without 5), then 40..44, in order.
      auto room = store->Load(Id(1, 1));
      ASSERT_TRUE(room.ok()) << room.status();
      std::vector<std::vector<uint8_t>> want;
      for (uint32_t i = 0; i < 45; ++i) {
        if (i != 5) want.push_back(Record('u', i));
      }
      EXPECT_EQ(room->updates, want);
      EXPECT_EQ(room->checkpoint_blob, big);
      EXPECT_FALSE(*store->HasUpdate(Id(2, 1, 20)));
      EXPECT_TRUE(*store->HasUpdate(Id(2, 1, 5)));
      EXPECT_EQ(store->updates_count(), 20u);
      store->CommitStart();  // the retry fails the same way and keeps everything
      store->CommitWait();
      done = store->CommitPoll();
      ASSERT_TRUE(done.has_value());
      EXPECT_EQ(done->code(), absl::StatusCode::kResourceExhausted) << *done;
      EXPECT_EQ(store->staged_count(), first_batch + 5);
      EXPECT_EQ(store->stats().commits, 1u);
      EXPECT_EQ(store->stats().commits_failed, 2u);
      EXPECT_EQ(store->commit_figures().commits, 1u);  // failed batches are not counted
      close(wake);
    }
    auto store = MustOpen(dir, {});
    ASSERT_NE(store, nullptr);
    auto room = store->Load(Id(1, 1));
    ASSERT_TRUE(room.ok());
    EXPECT_EQ(room->updates.size(), 20u);
    EXPECT_TRUE(room->checkpoint_record.empty());
  }
}

// A failure that does not clear up (a disk failing with space left: EIO from a write or
// a sync) stops the store rather than retrying, on the writer thread as on the shard's:
// the failed batch and what was staged behind it are dropped (never acknowledged: the
// shard sends acks only on OK), every later commit reports the same error, and what was
// committed before is intact when the store is opened again. Before the commit (kSafe's
// write, nothing of the batch stored) and after it (kOneSync's own sync: the batch may be
// stored, but its pages may not have reached the disk, so a retry must not ack it).
TEST(RoomStore, ADiskFailureThatStaysStopsTheStoreAndKeepsWhatWasCommitted) {
  for (const bool after_commit : {false, true}) {
    SCOPED_TRACE(after_commit ? "the sync after the commit fails" : "the commit fails");
    const std::string dir = TempDir();
    RoomStoreOptions options;
    options.sync = after_commit ? StoreSync::kOneSync : StoreSync::kSafe;
    {
      auto store = MustOpen(dir, options);
      ASSERT_NE(store, nullptr);
      const int wake = WriterWithTwentyCommitted(*store);
      ASSERT_GE(wake, 0);
      AppendRoomOne(*store, 20, 40);
      store->FailNextCommitForTest(EIO, after_commit);
      store->CommitStart();
      AppendRoomOne(*store, 40, 45);  // staged while the failing batch is in flight
      store->CommitWait();
      std::optional<absl::Status> done = store->CommitPoll();
      ASSERT_TRUE(done.has_value());
      EXPECT_FALSE(done->ok());
      EXPECT_NE(done->code(), absl::StatusCode::kResourceExhausted) << *done;  // not "retry"
      EXPECT_NE(done->message().find("restart the node"), std::string::npos) << *done;
      EXPECT_EQ(store->staged_count(), 0u);  // dropped, not kept for a retry
      // Stopped: what is staged later fails the same way and is dropped too.
      AppendRoomOne(*store, 45, 50);
      store->CommitStart();
      store->CommitWait();
      const std::optional<absl::Status> again = store->CommitPoll();
      ASSERT_TRUE(again.has_value());
      EXPECT_EQ(again->code(), done->code());
      EXPECT_NE(again->message().find("restart the node"), std::string::npos) << *again;
      EXPECT_EQ(store->staged_count(), 0u);
      EXPECT_EQ(store->stats().commits, 1u);
      store->UseWriterThread(-1);
      close(wake);
    }
    auto store = MustOpen(dir, {});
    ASSERT_NE(store, nullptr);
    auto room = store->Load(Id(1, 1));
    ASSERT_TRUE(room.ok()) << room.status();
    // The first batch whole; the failed one absent (before the commit) or, when only its
    // sync failed, possibly present (the page cache outlives the failure); nothing after.
    const size_t have = room->updates.size();
    EXPECT_TRUE(after_commit ? (have == 20 || have == 40) : have == 20) << have;
    for (uint32_t i = 0; i < have; ++i) EXPECT_EQ(room->updates[i], Record('u', i)) << i;
  }
}

TEST(RoomStore, StagingIsBounded) {
  const std::string dir = TempDir();
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  RP_EXPECT_OK(store->PutGenesis(Id(1, 1), Record('g', 1)));
  const std::vector<uint8_t> blob(kStagedBytesMax / 4);
  int accepted = 0;
  for (int i = 0; i < 8 && store->PutCheckpoint(Id(1, 1), Record('c', i), blob).ok(); ++i) {
    ++accepted;
  }
  EXPECT_EQ(accepted, 3);
  EXPECT_LE(store->staged_bytes(), kStagedBytesMax);
}

TEST(RoomStore, DiskFullIsResourceExhausted) {
  // A file size limit stands in for a full disk: the kernel refuses the write the same
  // way (EFBIG rather than ENOSPC), without needing a small filesystem.
  const std::string dir = TempDir();
  MakeStore(dir, 5);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    signal(SIGXFSZ, SIG_IGN);
    RoomStoreOptions options;
    options.verify_on_open = false;
    auto store = RoomStore::Open(dir, 0, options);
    if (!store.ok()) _exit(2);
    struct stat st;
    if (stat(DataFile(dir).c_str(), &st) != 0) _exit(3);
    // At the current size: the checkpoint's new pages are refused outright.
    const rlimit limit{static_cast<rlim_t>(st.st_size), static_cast<rlim_t>(st.st_size)};
    if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(4);
    if (!(*store)->PutCheckpoint(Id(1, 1), Record('c', 1), std::vector<uint8_t>(1 << 20, 7))
             .ok()) {
      _exit(6);
    }
    const absl::Status s = (*store)->Commit();
    const std::string msg = std::string(s.message());
    if (write(fds[1], msg.data(), msg.size()) < 0) _exit(5);
    _exit(s.code() == absl::StatusCode::kResourceExhausted ? 0 : 1);
  }
  close(fds[1]);
  std::string msg(512, '\0');
  const ssize_t n = read(fds[0], msg.data(), msg.size());
  msg.resize(n > 0 ? static_cast<size_t>(n) : 0);
  close(fds[0]);
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0) << msg;
  EXPECT_NE(msg.find("disk full"), std::string::npos) << msg;
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Load(Id(1, 1))->updates.size(), 5u);
}

TEST(RoomStore, LeftoverCreationDirectoryIsReplaced) {
  const std::string dir = TempDir();
  ASSERT_EQ(mkdir((dir + "/shard-0.new").c_str(), 0700), 0);
  std::ofstream(dir + "/shard-0.new/data.mdb") << "half";
  MakeStore(dir, 2);
  struct stat st;
  EXPECT_NE(stat((dir + "/shard-0.new").c_str(), &st), 0);
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Load(Id(1, 1))->updates.size(), 2u);
}

// A relay's room rebuilt from the store after a restart, by the recipe in storage.h, has
// the same log, heads and state hash as before: the store keeps records byte for byte.
// Pruning (issue 16, item 4): the updates a checkpoint covers are deleted in the next
// commit's one transaction, the rest keep their order, the store's pages are reused so a
// long run of append-then-prune keeps the file flat, and the index stays consistent.
// Format 2's in-memory index (issue 15): a delete names its room and removes nothing of
// another's; a room forgotten and made again in one batch takes the same ids anew, once
// each; and every answer survives a reopen, where the index is rebuilt from the log.
TEST(RoomStore, IdIndexFollowsDeletesForgetsAndReopens) {
  const std::string dir = TempDir();
  const Hash256 a = Id(1, 1), b = Id(1, 2);
  {
    auto store = MustOpen(dir);
    ASSERT_NE(store, nullptr);
    RP_EXPECT_OK(store->PutGenesis(a, Record('g', 1)));
    RP_EXPECT_OK(store->PutGenesis(b, Record('g', 2)));
    for (uint32_t i = 0; i < 10; ++i) {
      RP_EXPECT_OK(store->Append(a, Id(2, 1, i), Record('u', i)));
      RP_EXPECT_OK(store->Append(b, Id(2, 2, i), Record('v', i)));
    }
    ASSERT_TRUE(store->Commit().ok());
    // Room b's id deleted "in room a": ignored, by the commit and by Load's staged view.
    RP_EXPECT_OK(store->DeleteUpdate(a, Id(2, 2, 3)));
    EXPECT_EQ(store->Load(b)->updates.size(), 10u);
    ASSERT_TRUE(store->Commit().ok());
    EXPECT_TRUE(*store->HasUpdate(Id(2, 2, 3)));
    EXPECT_EQ(store->Load(b)->updates.size(), 10u);
    // An id never stored: ignored.
    RP_EXPECT_OK(store->DeleteUpdate(a, Id(2, 9, 9)));
    // Room a forgotten and made again, its first four updates appended again, one twice,
    // in the same batch: stored once each, under the new room.
    RP_EXPECT_OK(store->Forget(a));
    RP_EXPECT_OK(store->PutGenesis(a, Record('g', 1)));
    for (uint32_t i = 0; i < 4; ++i) RP_EXPECT_OK(store->Append(a, Id(2, 1, i), Record('w', i)));
    RP_EXPECT_OK(store->Append(a, Id(2, 1, 2), Record('x', 2)));
    ASSERT_TRUE(store->Commit().ok());
    EXPECT_EQ(store->updates_count(), 14u);
    EXPECT_TRUE(*store->HasUpdate(Id(2, 1, 3)));
    EXPECT_FALSE(*store->HasUpdate(Id(2, 1, 4)));
  }
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->updates_count(), 14u);
  auto ra = store->Load(a);
  ASSERT_TRUE(ra.ok());
  ASSERT_EQ(ra->updates.size(), 4u);
  for (uint32_t i = 0; i < 4; ++i) EXPECT_EQ(ra->updates[i], Record('w', i)) << i;
  EXPECT_FALSE(*store->HasUpdate(Id(2, 1, 4)));
  // A duplicate of a stored update, after the reopen: skipped.
  RP_EXPECT_OK(store->Append(b, Id(2, 2, 0), Record('y', 0)));
  ASSERT_TRUE(store->Commit().ok());
  EXPECT_EQ(store->stats().updates_duplicate, 1u);
  EXPECT_EQ(store->Load(b)->updates.size(), 10u);
  EXPECT_TRUE(store->Verify().ok());
}

// A new store in `dir` with one room (genesis and epoch 0) staged.
std::unique_ptr<RoomStore> WithOneRoom(const std::string& dir, const Hash256& room) {
  auto store = MustOpen(dir);
  if (store == nullptr) return nullptr;
  RP_EXPECT_OK(store->PutGenesis(room, Record('g', 1)));
  RP_EXPECT_OK(store->PutKeyEpoch(room, 0, Record('e', 0)));
  return store;
}

TEST(RoomStore, PruneDeletesCoveredUpdatesInOneCommit) {
  const std::string dir = TempDir();
  const Hash256 room = Id(1, 1);
  auto store = WithOneRoom(dir, room);
  ASSERT_NE(store, nullptr);
  uint64_t used_first = 0;
  uint32_t next = 0;
  for (uint32_t round = 0; round < 20; ++round) {
    // 500 updates, a checkpoint, and the 500 before it pruned.
    for (uint32_t i = 0; i < 500; ++i, ++next) {
      RP_EXPECT_OK(store->Append(room, Id(2, next), Record('u', next)));
    }
    RP_EXPECT_OK(store->PutCheckpoint(room, Record('c', round), Record('b', round, 2000)));
    RP_EXPECT_OK(store->Commit());
    std::vector<Hash256> covered;
    for (uint32_t i = next - 500; i < next - 250; ++i) covered.push_back(Id(2, i));
    if (round > 0) {
      for (uint32_t i = next - 750; i < next - 500; ++i) covered.push_back(Id(2, i));
    }
    covered.push_back(Id(9, 9));  // not stored: ignored
    RP_EXPECT_OK(store->Prune(room, covered));
    auto staged = store->Load(room);  // the staged deletes already show
    ASSERT_TRUE(staged.ok());
    EXPECT_EQ(staged->updates.size(), 250u);
    const uint64_t commits = store->stats().commits;
    RP_EXPECT_OK(store->Commit());
    EXPECT_EQ(store->stats().commits, commits + 1);  // one transaction
    if (round == 2) used_first = store->stats().used_bytes;
  }
  EXPECT_LE(store->stats().used_bytes, used_first * 5 / 4);  // flat: pages are reused
  std::printf("store after 10,000 updates, pruned behind 20 checkpoints: %.2f MB in use "
              "(%.2f MB after 1,500)\n",
              store->stats().used_bytes / 1e6, used_first / 1e6);
  RP_EXPECT_OK(store->Verify());
  auto loaded = store->Load(room);
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->updates.size(), 250u);
  for (uint32_t i = 0; i < 250; ++i) EXPECT_EQ(loaded->updates[i], Record('u', next - 250 + i));
  EXPECT_FALSE(*store->HasUpdate(Id(2, 0)));
  EXPECT_TRUE(*store->HasUpdate(Id(2, next - 1)));
  store.reset();
  auto reopened = MustOpen(dir);  // and it stays so
  ASSERT_NE(reopened, nullptr);
  loaded = reopened->Load(room);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->updates.size(), 250u);
  EXPECT_EQ(loaded->checkpoint_record, Record('c', 19));
}

// A relay's store in its steady state: every batch appends updates and prunes as many older
// ones, now and then with a checkpoint (LMDB overflow pages). LMDB mallocs scratch memory
// in every write transaction (its list of reclaimed pages) and frees it at the end; through
// the recycling cache (lmdb_alloc.h) that stops reaching the heap once warm. Fails when
// LMDB's allocator calls are not routed through the cache (no requests seen) or the cache
// does not keep what LMDB frees (fresh heap blocks in the steady state).
TEST(RoomStore, SteadyStateCommitsTakeNothingFromTheHeapForLmdb) {
  if (!RINGPEER_LMDB_POOLED) GTEST_SKIP() << "LMDB linked without the cache (no liblmdb.a)";
  const std::string dir = TempDir();
  const Hash256 room = Id(1, 1);
  auto store = WithOneRoom(dir, room);
  ASSERT_NE(store, nullptr);
  RP_EXPECT_OK(store->Commit());
  constexpr uint32_t kPerBatch = 16, kKeptBatches = 64, kWarmBatches = 400, kBatches = 1200;
  uint64_t heap_warm = 0, requests_warm = 0;
  for (uint32_t b = 0; b < kBatches; ++b) {
    if (b == kWarmBatches) {
      heap_warm = lmdb_alloc::HeapAllocations();
      requests_warm = lmdb_alloc::RequestsOnThisThread();
    }
    for (uint32_t i = 0; i < kPerBatch; ++i) {
      const uint32_t n = b * kPerBatch + i;
      RP_EXPECT_OK(store->Append(room, Id(2, n), Record('u', n, 200 + n % 700)));
      if (b >= kKeptBatches) RP_EXPECT_OK(store->DeleteUpdate(room, Id(2, n - kKeptBatches * kPerBatch)));
    }
    if (b % 100 == 99) RP_EXPECT_OK(store->PutCheckpoint(room, Record('c', b), Record('b', b, 20000)));
    RP_EXPECT_OK(store->Commit());
  }
  const uint64_t heap = lmdb_alloc::HeapAllocations() - heap_warm;
  const uint64_t requests = lmdb_alloc::RequestsOnThisThread() - requests_warm;
  std::printf("LMDB over %u steady-state commits: %llu requests, %llu from the heap\n",
              kBatches - kWarmBatches, static_cast<unsigned long long>(requests),
              static_cast<unsigned long long>(heap));
  EXPECT_GE(requests, kBatches - kWarmBatches);  // at least one per write transaction
  EXPECT_EQ(heap, 0u);
  EXPECT_EQ(store->updates_count(), kKeptBatches * kPerBatch);
  RP_EXPECT_OK(store->Verify());
}

TEST(RoomStore, RelayRoomRebuiltFromStore) {
  ASSERT_TRUE(wire::InitCrypto());
  room::testing::RoomFixture f(11, room::ReducerKind::kChat, room::kStateBytesMaxDefault);
  auto member = f.Open(&f.members[0]);
  auto relay = f.Open(nullptr);
  const std::string dir = TempDir();
  {
    auto store = MustOpen(dir);
    ASSERT_NE(store, nullptr);
    RP_EXPECT_OK(store->PutGenesis(f.room_id, f.genesis));
    RP_EXPECT_OK(store->PutKeyEpoch(f.room_id, 0, f.epochs[0]));
    for (int i = 0; i < 120; ++i) {
      const std::vector<uint8_t> payload = room::ChatPayload(
          room::ChatOp::kMessage, f.members[0].public_key, "message " + std::to_string(i));
      auto record = member->Write(payload, f.random);
      ASSERT_TRUE(record.ok()) << record.status();
      ASSERT_EQ(relay->Receive(*record), room::Verdict::kOk);
      room::UpdateView view;
      ASSERT_EQ(room::DecodeUpdate(*record, f.room_id, &view), room::Verdict::kOk);
      RP_EXPECT_OK(store->Append(f.room_id, view.id, *record));
      if (i == 80) {
        auto cp = member->MakeCheckpoint(f.random);
        ASSERT_TRUE(cp.ok());
        ASSERT_EQ(relay->AddCheckpoint(cp->record, cp->blob), room::Verdict::kOk);
        RP_EXPECT_OK(store->PutCheckpoint(f.room_id, cp->record, cp->blob));
      }
      if (i % 16 == 15) {
        ASSERT_TRUE(store->Commit().ok());  // a loop iteration's batch
      }
    }
    ASSERT_TRUE(store->Commit().ok());
  }
  auto store = MustOpen(dir);
  ASSERT_NE(store, nullptr);
  ASSERT_EQ(store->Rooms(), std::vector<Hash256>{f.room_id});
  auto loaded = store->Load(f.room_id);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto rebuilt = room::Room::Open(loaded->genesis, nullptr);
  ASSERT_TRUE(rebuilt.ok());
  for (const auto& e : loaded->key_epochs) {
    ASSERT_EQ((*rebuilt)->AddKeyEpoch(e), room::Verdict::kOk);
  }
  for (const auto& u : loaded->updates) ASSERT_EQ((*rebuilt)->Receive(u), room::Verdict::kOk);
  ASSERT_FALSE(loaded->checkpoint_record.empty());
  ASSERT_EQ((*rebuilt)->AddCheckpoint(loaded->checkpoint_record, loaded->checkpoint_blob),
            room::Verdict::kOk);
  EXPECT_EQ((*rebuilt)->order(), relay->order());
  EXPECT_EQ((*rebuilt)->heads(), relay->heads());
  EXPECT_EQ((*rebuilt)->state_hash(), relay->state_hash());
  EXPECT_TRUE((*rebuilt)->has_checkpoint());
}

}  // namespace
}  // namespace ringpeer::store
