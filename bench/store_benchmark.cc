// ringpeer-bench-store: what durability costs a shard (node/store/room_store.h).
//  - BM_Commit/<updates>/<sync>: stage `updates` updates of 300 bytes, then Commit(): one
//    LMDB write transaction made durable before it returns. sync 0 = StoreSync::kSafe
//    (LMDB default: fsync data, then fsync meta), 1 = kOneSync (MDB_NOSYNC + one
//    mdb_env_sync). Wall-clock time, since the cost is waiting for the disk, not CPU.
//  - BM_Fdatasync: write 4 KiB to a file and fdatasync it, the floor a commit pays per
//    sync on this disk.
// Counters: p50_us and p99_us of the commit latency, and per-update cost.
// The store lives under $RINGPEER_BENCH_DIR (default /tmp): point it at the disk a relay
// would use, since the figures are the disk's.
// The last line of output is key=value figures (wall-clock µs per commit) for scripts:
//   commit_1_us= commit_64_us= commit_1024_us= commit_onesync_1_us=
//   commit_onesync_64_us= commit_onesync_1024_us= fdatasync_us=
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "node/store/room_store.h"

namespace ringpeer::store {
namespace {

constexpr size_t kUpdateBytes = 300;

std::string BenchDir() {
  const char* base = std::getenv("RINGPEER_BENCH_DIR");
  std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/ringpeer-store-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  return tmpl;
}

void RemoveStore(const std::string& dir) {
  for (const char* f : {"/shard-0/data.mdb", "/shard-0/lock.mdb"}) unlink((dir + f).c_str());
  rmdir((dir + "/shard-0").c_str());
  rmdir(dir.c_str());
}

Hash256 Id(uint32_t kind, uint64_t n) {
  Hash256 h{};
  h[0] = static_cast<uint8_t>(kind);
  std::memcpy(h.data() + 1, &n, sizeof(n));
  h[31] = 0xa5;  // ids are hashes: spread, but the store does not care
  return h;
}

void Percentiles(benchmark::State& state, std::vector<double>* us) {
  if (us->empty()) return;
  std::sort(us->begin(), us->end());
  state.counters["p50_us"] = (*us)[us->size() / 2];
  state.counters["p99_us"] = (*us)[std::min(us->size() - 1, us->size() * 99 / 100)];
}

void BM_Commit(benchmark::State& state) {
  const auto updates = static_cast<uint32_t>(state.range(0));
  const std::string dir = BenchDir();
  RoomStoreOptions options;
  options.sync = state.range(1) == 0 ? StoreSync::kSafe : StoreSync::kOneSync;
  auto store = RoomStore::Open(dir, 0, options);
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  const Hash256 room = Id(1, 0);
  std::vector<uint8_t> record(kUpdateBytes, 0x42);
  if (!(*store)->PutGenesis(room, record).ok() || !(*store)->Commit().ok()) {
    state.SkipWithError("cannot create the room");
    return;
  }
  uint64_t next = 0;
  std::vector<double> us;
  us.reserve(1 << 16);
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    for (uint32_t i = 0; i < updates; ++i) {
      record[0] = static_cast<uint8_t>(next);
      if (!(*store)->Append(room, Id(2, next++), record).ok()) std::abort();
    }
    const absl::Status st = (*store)->Commit();
    if (!st.ok()) {
      state.SkipWithError(std::string(st.message()).c_str());
      break;
    }
    const std::chrono::duration<double, std::micro> took =
        std::chrono::steady_clock::now() - start;
    us.push_back(took.count());
  }
  Percentiles(state, &us);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * updates);
  store->reset();
  RemoveStore(dir);
}
BENCHMARK(BM_Commit)
    ->ArgsProduct({{1, 64, 1024}, {0, 1}})
    ->ArgNames({"updates", "sync"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

void BM_Fdatasync(benchmark::State& state) {
  const std::string dir = BenchDir();
  const std::string file = dir + "/sync";
  const int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    state.SkipWithError("cannot create a file");
    return;
  }
  char page[4096] = {};
  off_t off = 0;
  std::vector<double> us;
  us.reserve(1 << 16);
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    if (pwrite(fd, page, sizeof(page), off) != sizeof(page) || fdatasync(fd) != 0) std::abort();
    off = (off + 4096) % (1 << 20);
    const std::chrono::duration<double, std::micro> took =
        std::chrono::steady_clock::now() - start;
    us.push_back(took.count());
  }
  Percentiles(state, &us);
  close(fd);
  unlink(file.c_str());
  rmdir(dir.c_str());
}
BENCHMARK(BM_Fdatasync)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Console table plus the closing key=value line, from wall-clock time per iteration.
class Reporter : public benchmark::ConsoleReporter {
 public:
  Reporter() : benchmark::ConsoleReporter(OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      us_[run.run_name.str()] = run.GetAdjustedRealTime() *
                                benchmark::GetTimeUnitMultiplier(benchmark::kMicrosecond) /
                                benchmark::GetTimeUnitMultiplier(run.time_unit);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void PrintSummary() const {
    const std::pair<const char*, const char*> keys[] = {
        {"BM_Commit/updates:1/sync:0/real_time", "commit_1_us"},
        {"BM_Commit/updates:64/sync:0/real_time", "commit_64_us"},
        {"BM_Commit/updates:1024/sync:0/real_time", "commit_1024_us"},
        {"BM_Commit/updates:1/sync:1/real_time", "commit_onesync_1_us"},
        {"BM_Commit/updates:64/sync:1/real_time", "commit_onesync_64_us"},
        {"BM_Commit/updates:1024/sync:1/real_time", "commit_onesync_1024_us"},
        {"BM_Fdatasync/real_time", "fdatasync_us"},
    };
    std::string line = "store:";
    for (const auto& [name, key] : keys) {
      auto it = us_.find(name);
      if (it == us_.end()) continue;
      char buf[96];
      std::snprintf(buf, sizeof(buf), " %s=%.1f", key, it->second);
      line += buf;
    }
    std::printf("%s\n", line.c_str());
  }

 private:
  std::map<std::string, double> us_;
};

}  // namespace
}  // namespace ringpeer::store

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ringpeer::store::Reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSummary();
  benchmark::Shutdown();
  return 0;
}
