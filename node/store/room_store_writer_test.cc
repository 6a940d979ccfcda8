// Goal: the room store's writer thread (issue 15, item 2) hands batches back and forth
// with the shard without a race: the shard stages the next batch while the writer commits
// the last one, sleeps on the eventfd the writer rings, and reads the index (Load,
// HasUpdate) in between. Built and run under ThreadSanitizer by the test command (label
// tsan), as well as in the release and ASan builds. Method: a real LMDB environment in a
// temporary directory; batches of varying sizes over three rooms; at the end the logs must
// hold every update once, in staging order, and the counters must add up.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "node/store/room_store.h"

namespace ringpeer::store {
namespace {

Hash256 Id(uint8_t kind, uint32_t a, uint32_t b = 0) {
  Hash256 h{};
  h[0] = kind;
  std::memcpy(h.data() + 1, &a, 4);
  std::memcpy(h.data() + 5, &b, 4);
  h[31] = 0xa5;
  return h;
}

std::vector<uint8_t> Record(uint32_t n) {
  std::vector<uint8_t> r(64 + n % 200);
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<uint8_t>(n * 13 + i);
  return r;
}

TEST(RoomStoreWriter, BatchesAlternateWithStagingAndKeepTheirOrder) {
  char tmpl[] = "/tmp/ringpeer-writer-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  RoomStoreOptions options;
  options.sync = StoreSync::kOneSync;  // the property under test is the hand-off, not fsync
  auto opened = RoomStore::Open(dir, 0, options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  RoomStore& store = **opened;
  const int wake = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(wake, 0);
  store.UseWriterThread(wake);
  constexpr uint32_t kRooms = 3;
  for (uint32_t r = 0; r < kRooms; ++r) {
    ASSERT_TRUE(store.PutGenesis(Id(1, r), Record(r)).ok());
  }
  constexpr uint32_t kBatches = 150;
  uint32_t next = 0;             // next update number
  uint32_t started = 0, ok = 0;  // batches started, and reported OK
  uint32_t staged_in_flight = 0;  // updates staged while a batch was in flight
  for (uint32_t b = 0; b < kBatches; ++b) {
    const uint32_t n = 1 + (b * 29) % 40;
    for (uint32_t j = 0; j < n; ++j, ++next) {
      if (store.CommitInFlight()) ++staged_in_flight;
      ASSERT_TRUE(store.Append(Id(1, next % kRooms), Id(2, next), Record(next)).ok());
    }
    if (b % 10 == 9) {
      // A control-path read between batches waits for the one in flight.
      ASSERT_TRUE(*store.HasUpdate(Id(2, 0)) || started <= 1);
    }
    // Asleep until the writer rings (bounded: each finished batch rings once, and a
    // missed ring fails after 10 s instead of hanging).
    for (int rings = 0; store.CommitInFlight() && rings < 4; ++rings) {
      pollfd p{wake, POLLIN, 0};
      ASSERT_EQ(poll(&p, 1, 10'000), 1) << "the writer did not ring";
      uint64_t v;
      ASSERT_EQ(read(wake, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v)));
    }
    ASSERT_FALSE(store.CommitInFlight());
    if (const std::optional<absl::Status> done = store.CommitPoll()) {
      ASSERT_TRUE(done->ok()) << *done;
      ++ok;
    }
    store.CommitStart();
    ++started;
  }
  store.CommitWait();
  if (const std::optional<absl::Status> done = store.CommitPoll()) {
    ASSERT_TRUE(done->ok()) << *done;
    ++ok;
  }
  EXPECT_EQ(ok, started);
  EXPECT_GT(staged_in_flight, 0u) << "the writer never overlapped with staging";
  EXPECT_EQ(store.staged_count(), 0u);
  EXPECT_EQ(store.updates_count(), next);
  EXPECT_EQ(store.stats().updates_written, next);
  EXPECT_EQ(store.stats().commits_failed, 0u);
  for (uint32_t r = 0; r < kRooms; ++r) {
    auto room = store.Load(Id(1, r));
    ASSERT_TRUE(room.ok()) << room.status();
    size_t i = 0;
    for (uint32_t u = r; u < next; u += kRooms, ++i) {
      ASSERT_LT(i, room->updates.size());
      ASSERT_EQ(room->updates[i], Record(u)) << "room " << r << " entry " << i;
    }
    EXPECT_EQ(i, room->updates.size());
  }
  close(wake);
  opened->reset();  // stops the writer thread
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ringpeer::store
