// node_benchmark: the per-datagram work of a shard, without the kernel.
//
// BM_PingHandling is what a shard does for one liveness ping: header check, the
// per-address token bucket (over 256 sources), the FlatBuffers Verifier, and the pong
// encoded into a send slot. BM_ChallengedPing adds the ed25519 signature a challenge
// costs, to show why challenges are rate-limited. BM_MailboxHop is one datagram copied
// through a cross-shard SPSC ring and decoded on the other side (same thread: the cost
// of the copy and the index updates, not of cache-line transfer).
// BM_FindNodeFromSnapshot is a FindNode answered on a shard without the overlay (issue
// 14): the 20 closest of a full 640-entry snapshot, the Nodes answer encoded, after the
// same checks as a ping. BM_FindNodeFromTable is the owner's answer from its routing table
// (as full as 2,000 random peers make it). BM_PublishSnapshot is what the owner spends
// once a second per other shard: the table sealed and the default 4,096-record provider
// store copied.
#include <benchmark/benchmark.h>

#include <array>
#include <cstring>
#include <vector>

#include "bench/summary_reporter.h"
#include "base/rng.h"
#include "dht/overlay.h"
#include "dht/ping_responder.h"
#include "dht/snapshot.h"
#include "node/core/rate_limiter.h"
#include "node/shard/shard.h"
#include "node/shard/spsc_ring.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace ringpeer {
namespace {

class SlotOutbox : public base::Outbox {
 public:
  std::span<uint8_t> Buffer() noexcept override { return slot_; }
  void Commit(size_t size, const base::Endpoint&) noexcept override { bytes_ += size; }
  size_t bytes() const { return bytes_; }

 private:
  alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> slot_{};
  size_t bytes_ = 0;
};

struct PingFixture {
  PingFixture(bool challenge) : keys(wire::KeyPair::FromSeed({3})), responder(keys, 0) {
    wire::Encoder enc;
    wire::Hash256 c{};
    c[0] = 1;
    size = enc.Ping(datagram, wire::kNoShardHint, 0x1234500, wire::NodeIdOf(keys.public_key),
                    challenge ? &c : nullptr);
    for (int i = 0; i < 256; ++i) {
      sources.push_back(*base::Endpoint::Parse("127.0.1." + std::to_string(i) + ":9000"));
    }
  }
  wire::KeyPair keys;
  dht::PingResponder responder;
  alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> datagram{};
  size_t size = 0;
  std::vector<base::Endpoint> sources;
};

void HandleOnePing(PingFixture& f, core::RateLimiter& limiter, SlotOutbox& out, int64_t now,
                   const base::Endpoint& from) {
  wire::Header h;
  if (wire::CheckHeader(f.datagram.data(), f.size, &h) != wire::Verdict::kOk) return;
  if (!limiter.Allow(from, now)) return;
  wire::Message msg;
  if (wire::Decode(f.datagram.data(), f.size, &msg) != wire::Verdict::kOk) return;
  f.responder.Answer(now, from, msg, out);
}

void BM_PingHandling(benchmark::State& state) {
  PingFixture f(false);
  core::RateLimiter limiter(16384, 1'000'000'000, 1'000'000'000);
  SlotOutbox out;
  int64_t now = 1;
  size_t i = 0;
  for (auto _ : state) {
    HandleOnePing(f, limiter, out, ++now, f.sources[i++ & 255]);
  }
  RP_ASSERT(out.bytes() > 0);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PingHandling);

void BM_ChallengedPing(benchmark::State& state) {
  PingFixture f(true);
  core::RateLimiter limiter(16384, 1'000'000'000, 1'000'000'000);
  SlotOutbox out;
  int64_t now = 1;
  size_t i = 0;
  for (auto _ : state) {
    // One second per iteration keeps the signing budget full: this measures the cost of
    // a signature, not the limit.
    now += 1'000'000;
    HandleOnePing(f, limiter, out, now, f.sources[i++ & 255]);
  }
  RP_ASSERT(out.bytes() > 0);
}
BENCHMARK(BM_ChallengedPing);

void BM_MailboxHop(benchmark::State& state) {
  PingFixture f(false);
  shard::SpscRing<shard::MailItem> ring(1024);
  uint64_t decoded = 0;
  for (auto _ : state) {
    shard::MailItem* item = ring.BeginPush();
    item->size = static_cast<uint16_t>(f.size);
    std::memcpy(item->bytes, f.datagram.data(), f.size);
    ring.CommitPush();
    ring.Publish();
    shard::MailItem* got = ring.Front();
    wire::Message msg;
    decoded += wire::Decode(got->bytes, got->size, &msg) == wire::Verdict::kOk;
    ring.Pop();
    ring.Release();
  }
  RP_ASSERT(decoded == static_cast<uint64_t>(state.iterations()));
}
BENCHMARK(BM_MailboxHop);

wire::NodeId RandomNodeId(base::Rng& rng) {
  wire::NodeId id;
  rng.Fill(id);
  return id;
}

struct FindNodeFixture {
  FindNodeFixture() {
    base::Rng rng(11);
    wire::Encoder enc;
    size = enc.FindNode(datagram, wire::kNoShardHint, 0x2345600, RandomNodeId(rng),
                        RandomNodeId(rng), 20, 400);
    for (int i = 0; i < 256; ++i) {
      sources.push_back(*base::Endpoint::Parse("127.0.1." + std::to_string(i) + ":9000"));
    }
  }
  alignas(8) std::array<uint8_t, wire::kDatagramBytesMax> datagram{};
  size_t size = 0;
  std::vector<base::Endpoint> sources;
};

void BM_FindNodeFromSnapshot(benchmark::State& state) {
  FindNodeFixture f;
  base::Rng rng(12);
  dht::TableSnapshot snap(640);
  snap.Clear(0);
  for (uint32_t i = 0; i < 640; ++i) {
    snap.Push(dht::Contact{RandomNodeId(rng),
                           *base::Endpoint::Parse("127.0.2." + std::to_string(i % 250) + ":" +
                                                  std::to_string(1000 + i))});
  }
  snap.Seal();
  dht::SnapshotResponder responder(RandomNodeId(rng));
  core::RateLimiter limiter(16384, 1'000'000'000, 1'000'000'000);
  SlotOutbox out;
  int64_t now = 1;
  size_t i = 0;
  for (auto _ : state) {
    const base::Endpoint& from = f.sources[i++ & 255];
    wire::Header h;
    if (wire::CheckHeader(f.datagram.data(), f.size, &h) != wire::Verdict::kOk) continue;
    if (!limiter.Allow(from, ++now)) continue;
    wire::Message msg;
    if (wire::Decode(f.datagram.data(), f.size, &msg) != wire::Verdict::kOk) continue;
    responder.Answer(from, msg, snap, /*proven=*/false, out);
  }
  RP_ASSERT(out.bytes() > 0);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FindNodeFromSnapshot);

struct OverlayFixture {
  OverlayFixture() : keys(wire::KeyPair::FromSeed({5})), rng(13) {
    dht::OverlayConfig c;
    overlay = std::make_unique<dht::Overlay>(keys, c, &rng, 1);
    for (uint32_t i = 0; i < 2000; ++i) {
      overlay->AdmitVerifiedForTesting(
          1, RandomNodeId(rng),
          *base::Endpoint::Parse("127.0.3." + std::to_string(i % 250) + ":" +
                                 std::to_string(1000 + i)),
          sink);
    }
  }
  wire::KeyPair keys;
  base::Rng rng;
  SlotOutbox sink;
  std::unique_ptr<dht::Overlay> overlay;
};

void BM_FindNodeFromTable(benchmark::State& state) {
  FindNodeFixture f;
  OverlayFixture o;
  SlotOutbox out;
  int64_t now = 2;
  size_t i = 0;
  for (auto _ : state) {
    wire::Message msg;
    if (wire::Decode(f.datagram.data(), f.size, &msg) != wire::Verdict::kOk) continue;
    o.overlay->OnMessage(++now, f.sources[i++ & 255], msg, out);
  }
  RP_ASSERT(out.bytes() > 0);
  state.counters["table"] = static_cast<double>(o.overlay->table().size());
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FindNodeFromTable);

void BM_PublishSnapshot(benchmark::State& state) {
  OverlayFixture o;
  dht::OverlayConfig c;
  dht::DhtSnapshot snap(c.routing.buckets_max * c.routing.bucket_size, c.providers);
  int64_t now = 2;
  for (auto _ : state) o.overlay->PublishSnapshot(++now, &snap);
  RP_ASSERT(snap.table.entries().size() > 0);
  state.counters["entries"] = static_cast<double>(snap.table.entries().size());
}
BENCHMARK(BM_PublishSnapshot)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace ringpeer

int main(int argc, char** argv) {
  if (!ringpeer::wire::InitCrypto()) return 1;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  ringpeer::bench::SummaryReporter reporter({{"BM_PingHandling", "ping_handling_ns"},
                                             {"BM_ChallengedPing", "challenged_ping_ns"},
                                             {"BM_MailboxHop", "mailbox_hop_ns"},
                                             {"BM_FindNodeFromSnapshot", "find_node_snapshot_ns"},
                                             {"BM_FindNodeFromTable", "find_node_table_ns"},
                                             {"BM_PublishSnapshot", "publish_snapshot_ns"}});
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  std::printf("%s\n", reporter.SummaryLine("node_ns:").c_str());
  return 0;
}
