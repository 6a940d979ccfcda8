// ringpeer-bench-room: the room model's hot paths, measured against libsodium in the
// same run.
//  - BM_RawVerify: one ed25519 verification of an update's signed bytes (the floor).
//  - BM_ApplyChat: Room::Receive of chat updates with 200-byte messages: size check,
//    Verifier, hash, duplicate check, signature, placement, decrypt, reduce, state hash.
//  - BM_CheckpointBuild5MB / BM_CheckpointLoad5MB: a 5 MB kv state to a signed encrypted
//    checkpoint and back.
// The last line of output is key=value figures for scripts:
//   apply_per_s= verify_per_s= apply_over_verify= checkpoint_build_5mb_ms=
//   checkpoint_load_5mb_ms=
// apply_over_verify is the cost of applying an update over the cost of verifying its
// signature alone (the acceptance bound is 1.15).
#include <sodium.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "node/room/records.h"
#include "node/room/reducer.h"
#include "node/room/room.h"

namespace ringpeer::room {
namespace {

constexpr size_t kChainUpdates = 4096;
constexpr size_t kMessageBytes = 200;
constexpr size_t kStateBytes5MB = 5 * 1000 * 1000;

void Fill(std::span<uint8_t> out) { randombytes_buf(out.data(), out.size()); }

struct World {
  KeyPair admin = KeyPair::Generate();
  KeyPair member = KeyPair::Generate();
  std::vector<uint8_t> genesis;
  std::vector<uint8_t> epoch0;
  std::vector<std::vector<uint8_t>> chain;  // a linear history of chat messages

  explicit World(ReducerKind kind) {
    Hash256 salt;
    Fill(salt);
    genesis = MakeGenesis(admin, "bench", kind, kStateBytesMaxDefault, salt);
    Genesis g;
    ParseGenesis(genesis, &g);
    KeyEpochSpec spec;
    spec.room_id = g.room_id;
    Fill(spec.write_seed);
    Fill(spec.content_key);
    spec.members.push_back({member.public_key, true});
    epoch0 = MakeKeyEpoch(admin, spec, Fill);
  }

  std::unique_ptr<Room> Open() const {
    auto room = Room::Open(genesis, &member);
    if (!room.ok() || (*room)->AddKeyEpoch(epoch0) != Verdict::kOk) std::abort();
    return std::move(*room);
  }
};

World& ChatWorld() {
  static World* w = [] {
    auto* world = new World(ReducerKind::kChat);
    auto writer = world->Open();
    std::string text(kMessageBytes, 'm');
    for (size_t i = 0; i < kChainUpdates; ++i) {
      auto rec = writer->Write(ChatPayload(ChatOp::kMessage, world->member.public_key, text),
                               Fill);
      if (!rec.ok()) std::abort();
      world->chain.push_back(std::move(*rec));
    }
    return world;
  }();
  return *w;
}

void BM_RawVerify(benchmark::State& state) {
  World& w = ChatWorld();
  Genesis g;
  ParseGenesis(w.genesis, &g);
  std::vector<UpdateView> views(w.chain.size());
  for (size_t i = 0; i < w.chain.size(); ++i) DecodeUpdate(w.chain[i], g.room_id, &views[i]);
  KeyEpoch k;
  ParseKeyEpoch(w.epoch0, g.room_id, w.admin.public_key, nullptr, &k);
  size_t i = 0;
  for (auto _ : state) {
    const UpdateView& u = views[i++ % views.size()];
    bool ok = crypto_sign_verify_detached(u.signature.data(), u.signed_bytes.data(),
                                          u.signed_bytes.size(), k.write_key.data()) == 0;
    benchmark::DoNotOptimize(ok);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_RawVerify);

void BM_ApplyChat(benchmark::State& state) {
  World& w = ChatWorld();
  std::unique_ptr<Room> room = w.Open();
  size_t i = 0;
  for (auto _ : state) {
    if (i == w.chain.size()) {
      state.PauseTiming();
      room = w.Open();
      i = 0;
      state.ResumeTiming();
    }
    Verdict v = room->Receive(w.chain[i++]);
    if (v != Verdict::kOk) state.SkipWithError(VerdictName(v));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_ApplyChat);

// A room whose state is a 5 MB kv map, and the checkpoint of it.
struct BigState {
  World world{ReducerKind::kKv};
  std::vector<uint8_t> plain;
  Checkpoint cp;
  std::unique_ptr<Room> room;

  BigState() {
    KvReducer kv;
    std::string value(1000, 'v');
    for (size_t i = 0; kv.StateBytes() + 1100 < kStateBytes5MB; ++i) {
      kv.Apply(KvPayload(KvOp::kSet, "key" + std::to_string(i), value), kStateBytes5MB);
    }
    kv.Serialize(&plain);
    // Seed a room with this state through a checkpoint signed by the write key.
    Genesis g;
    ParseGenesis(world.genesis, &g);
    KeyEpoch k;
    ParseKeyEpoch(world.epoch0, g.room_id, world.admin.public_key, &world.member, &k);
    Nonce n;
    Fill(n);
    Hash256 head, hash;
    Fill(head);
    Fill(hash);
    std::vector<uint8_t> blob;
    auto rec = MakeCheckpoint(g.room_id, 0, KeyPair::FromSeed(*k.write_seed), *k.content_key,
                              std::span<const Hash256>(&head, 1), hash, plain, n, &blob);
    room = world.Open();
    if (room->LoadCheckpoint(rec, blob) != Verdict::kOk) std::abort();
    auto made = room->MakeCheckpoint(Fill);
    if (!made.ok()) std::abort();
    cp = std::move(*made);
  }
};

BigState& Big() {
  static BigState* b = new BigState();
  return *b;
}

void BM_CheckpointBuild5MB(benchmark::State& state) {
  BigState& b = Big();
  for (auto _ : state) {
    auto cp = b.room->MakeCheckpoint(Fill);
    benchmark::DoNotOptimize(cp);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * b.plain.size()));
}
BENCHMARK(BM_CheckpointBuild5MB)->Unit(benchmark::kMillisecond);

void BM_CheckpointLoad5MB(benchmark::State& state) {
  BigState& b = Big();
  for (auto _ : state) {
    state.PauseTiming();
    std::unique_ptr<Room> fresh = b.world.Open();
    state.ResumeTiming();
    Verdict v = fresh->LoadCheckpoint(b.cp.record, b.cp.blob);
    if (v != Verdict::kOk) state.SkipWithError(VerdictName(v));
    state.PauseTiming();
    fresh.reset();
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * b.plain.size()));
}
BENCHMARK(BM_CheckpointLoad5MB)->Unit(benchmark::kMillisecond);

// Collects each benchmark's rate and time per iteration for the summary line.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  // No colour: escape codes would otherwise precede the summary line scripts parse.
  SummaryReporter() : ConsoleReporter(OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      const std::string name = r.benchmark_name();
      auto it = r.counters.find("items_per_second");
      if (it != r.counters.end()) per_s[name] = it->second.value;
      seconds_per_iter[name] = r.real_accumulated_time / static_cast<double>(r.iterations);
    }
  }
  std::map<std::string, double> per_s;
  std::map<std::string, double> seconds_per_iter;
};

}  // namespace
}  // namespace ringpeer::room

int main(int argc, char** argv) {
  using ringpeer::room::SummaryReporter;
  if (sodium_init() < 0) return 1;
  benchmark::Initialize(&argc, argv);
  SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const double apply = reporter.per_s["BM_ApplyChat"];
  const double verify = reporter.per_s["BM_RawVerify"];
  std::printf(
      "apply_per_s=%.0f verify_per_s=%.0f apply_over_verify=%.3f checkpoint_build_5mb_ms=%.2f "
      "checkpoint_load_5mb_ms=%.2f\n",
      apply, verify, apply > 0 ? verify / apply : 0.0,
      reporter.seconds_per_iter["BM_CheckpointBuild5MB"] * 1e3,
      reporter.seconds_per_iter["BM_CheckpointLoad5MB"] * 1e3);
  benchmark::Shutdown();
  return 0;
}
