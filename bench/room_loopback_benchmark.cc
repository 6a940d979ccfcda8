// Room benchmark over real sockets on 127.0.0.1 (issue 5): a one-shard relay (the same
// shard::Node that `ringpeer serve` runs, LMDB store in a temporary directory) and, in the
// same process, clients (node/client, each its own one-shard node) or raw UDP sockets.
//
//   join_5mb_ms       a new client joins a kv room whose relay holds a ~5 MB checkpoint and
//                     no log after it: from Client::Join to the joiner's state hash equal
//                     to the writer's (the checkpoint pieces, hash-checked, then the sync).
//                     The median of five joins, each a new client (join_first_ms: the
//                     first, on memory the process touches for the first time).
//   catchup_10k_ms    a new client joins a chat room whose relay holds 10,000 updates it
//                     missed: from Client::Join to the same state hash (the sync stream).
//   relay_updates_per_s  updates a one-shard relay takes from one publisher, verifies,
//                     stores durably (LMDB commit, then the ack), and floods to 8 members
//                     (raw sockets that joined the swarm and count what they get): the
//                     publisher keeps up to kWindow updates unacknowledged.
//   relay_cpu_per_update_us  CPU time of every thread but this one (the relay's shard
//                     threads and any thread the relay starts) over the fan-out run,
//                     divided by the updates relayed (CLOCK_PROCESS_CPUTIME_ID minus this
//                     thread's CLOCK_THREAD_CPUTIME_ID: moving work to another thread is
//                     not a saving).
//   verify_us         one update's decode and signature check, CPU time on this thread,
//                     in the same run.
//   relay_overhead    relay_cpu_per_update_us / verify_us (the floor is 1: a relay must
//                     check every signature). relay_wall_overhead is the older figure:
//                     the run's wall time over the signature checks' time.
//   allocs_per_update heap allocations (malloc, calloc, realloc, aligned) made by the
//                     relay's threads per update, after the first quarter of the run
//                     (steady state); -1 in a sanitizer build (no allocation hook).
//   pool_blocks_per_update  blocks the log's growth took from base::BlockPool (the
//                     range reserved at start: record chunks, index and order arrays) per
//                     update over the same steady-state stretch: what allocs_per_update
//                     would count if they came from the heap.
//   rss_mb            the process's peak resident set (getrusage), MiB.
//   (RP_BENCH_ROOM_LOG_SPACE=BYTES sets the pool's range; 0 keeps the logs on the heap.)
//   datagrams_per_update  datagrams the relay sent (its shards' counters) per update.
//   checkpoint_load_ms  the same checkpoint loaded by a Room in memory: median of five
//                     (checkpoint_load_first_ms: the first); join_over_load: the ratio.
//
// The rooms are prepared offline (signed by a writer Room in this process) and written
// into the relay's store before the relay starts, so what is timed is the network path.
// Threads: the relay's shard on the first CPU of the affinity mask, everything else on
// the second when there is one. Last line: join_5mb_ms= catchup_10k_ms=
// relay_updates_per_s= relay_overhead= (plus the in-memory figures' names are not reused).
//
// usage: ringpeer-bench-room-loopback [--updates N] (N: the fan-out run's updates, 20000)
//        [--members N] [--rate U] [--fanout-only] [--join-only N] [--no-spin]
//        [--alloc-sites] (prints the call stacks of the steady-state allocations)
#include <execinfo.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/assert.h"
#include "base/block_pool.h"
#include "base/sanitizers.h"
#include "node/client/client.h"
#include "node/room/reducer.h"
#include "node/room/room.h"
#include "node/shard/node.h"
#include "node/store/room_store.h"
#include "wire/encode.h"
#include "wire/message.h"


// The allocation hook: this binary's malloc family counts the calls made on threads other
// than the benchmark's own (the relay's), then calls glibc's. A sanitizer build keeps its
// allocator (no hook; the figure is reported as -1).
#define RP_BENCH_ALLOC_HOOK (!RINGPEER_SANITIZED)

namespace {
std::atomic<uint64_t> g_allocs{0};  // allocations by threads other than the bench's
thread_local bool t_bench_thread = false;
// --alloc-sites: the call stacks of the relay's steady-state allocations (the first
// kSitesMax), printed at the end, to find what allocation_per_update still counts.
constexpr size_t kSitesMax = 4096, kSiteFrames = 12;
std::atomic<bool> g_trace_sites{false};
std::atomic<size_t> g_sites_used{0};
void* g_sites[kSitesMax][kSiteFrames];
int g_site_depth[kSitesMax];
thread_local bool t_tracing = false;
inline void CountAlloc() {
  if (t_bench_thread) return;
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (!g_trace_sites.load(std::memory_order_relaxed) || t_tracing) return;
  t_tracing = true;  // backtrace itself may allocate: not traced
  const size_t i = g_sites_used.fetch_add(1, std::memory_order_relaxed);
  if (i < kSitesMax) g_site_depth[i] = backtrace(g_sites[i], kSiteFrames);
  t_tracing = false;
}
}  // namespace

#if RP_BENCH_ALLOC_HOOK
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void* malloc(size_t n) {
  CountAlloc();
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) {
  CountAlloc();
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) {
  CountAlloc();
  return __libc_realloc(p, n);
}
void* memalign(size_t align, size_t n) {
  CountAlloc();
  return __libc_memalign(align, n);
}
void* aligned_alloc(size_t align, size_t n) {
  CountAlloc();
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, size_t align, size_t n) {
  CountAlloc();
  void* p = __libc_memalign(align, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}  // extern "C"
#endif

namespace ringpeer::bench {
namespace {

double CpuSeconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}
// CPU of every thread of the process but the calling one (exited threads included).
double OtherThreadsCpuSeconds() {
  return CpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - CpuSeconds(CLOCK_THREAD_CPUTIME_ID);
}

uint64_t RelaySent(shard::Node& node) {
  uint64_t n = 0;
  for (const auto& sm : node.Metrics().shards) n += sm.sent;
  return n;
}

// What the fan-out run measured.
struct FanoutFigures {
  double per_s = 0;
  double wall_overhead = 0;
  double cpu_per_update_us = 0;
  double verify_us = 0;
  double allocs_per_update = -1;
  double pool_blocks_per_update = 0;
  double datagrams_per_update = 0;
};

}  // namespace
}  // namespace ringpeer::bench

namespace ringpeer::bench {
namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "room_loopback: %s\n", what);
    std::exit(1);
  }
}
template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "room_loopback: %s: %s\n", what, v.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*v);
}

// Affinity: the relay's shard pins itself to the first CPU of the caller's mask (Node
// pins shard i to the i-th), so the caller narrows its own mask before each Start.
std::vector<int> g_cpus;
void UseCpu(size_t i) {
  if (g_cpus.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(g_cpus[i % g_cpus.size()], &set);
  sched_setaffinity(0, sizeof(set), &set);
}

std::string TempDir(const char* name) {
  std::string t = (std::filesystem::temp_directory_path() / "rp-bench-XXXXXX").string();
  Check(mkdtemp(t.data()) != nullptr, "mkdtemp");
  return t + "/" + name;
}

// A prepared room: the invite a joiner uses, the records the relay stores, and the state
// hash the joiner must reach.
struct Prepared {
  client::NewRoom made;
  std::vector<std::vector<uint8_t>> updates;
  room::Checkpoint checkpoint;  // empty record: none
  wire::Hash256 state_hash{};
  wire::PublicKey write_key{};
};

Prepared Prepare(room::ReducerKind kind, int updates, size_t value_bytes, bool checkpoint) {
  Prepared p;
  p.made = Must(client::CreateRoom("bench", {}, 1, kind), "create room");
  const wire::KeyPair writer = wire::KeyPair::FromSeed(*p.made.writer.member_seed);
  auto r = Must(room::Room::Open(p.made.writer.genesis, &writer), "open writer room");
  Check(r->AddKeyEpoch(p.made.writer.epochs[0]) == room::Verdict::kOk, "key epoch");
  const std::string value(value_bytes, 'v');
  auto random = [](std::span<uint8_t> out) { wire::RandomBytes(out); };
  for (int i = 0; i < updates; ++i) {
    const std::vector<uint8_t> payload =
        kind == room::ReducerKind::kKv
            ? room::KvPayload(room::KvOp::kSet, "key" + std::to_string(i), value)
            : room::ChatPayload(room::ChatOp::kMessage, writer.public_key,
                                "missed " + std::to_string(i));
    p.updates.push_back(Must(r->Write(payload, random), "write"));
  }
  if (checkpoint) p.checkpoint = Must(r->MakeCheckpoint(random), "checkpoint");
  p.state_hash = r->state_hash();
  room::KeyEpoch epoch;
  Check(room::ParseKeyEpoch(p.made.writer.epochs[0], p.made.room_id, p.made.admin.public_key,
                            nullptr, &epoch) == room::Verdict::kOk,
        "parse key epoch");
  p.write_key = epoch.write_key;
  return p;
}

struct Relay {
  wire::KeyPair identity;
  std::string dir;
  std::unique_ptr<shard::Node> node;
  base::Endpoint addr;
};

// StartRelay: writes the prepared room into a new store (a checkpoint and no log after
// it, or the whole log), then starts the relay on it, which reloads it as after a restart.
Relay StartRelay(const Prepared& p, bool with_log, const room::SwarmConfig& swarm) {
  Relay r;
  r.identity = wire::KeyPair::FromSeed([] {
    std::array<uint8_t, 32> s;
    wire::RandomBytes(s);
    return s;
  }());
  r.dir = TempDir("relay");
  std::filesystem::create_directories(r.dir);
  {
    store::RoomStoreOptions o;
    o.node_id = wire::NodeIdOf(r.identity.public_key);
    o.verify_on_open = false;  // new and empty
    auto s = Must(store::RoomStore::Open(r.dir, 0, o), "open store");
    Check(s->PutGenesis(p.made.room_id, p.made.writer.genesis).ok(), "store genesis");
    Check(s->PutKeyEpoch(p.made.room_id, 0, p.made.writer.epochs[0]).ok(), "store epoch");
    if (!p.checkpoint.record.empty()) {
      Check(s->PutCheckpoint(p.made.room_id, p.checkpoint.record, p.checkpoint.blob).ok(),
            "store checkpoint");
    }
    if (with_log) {
      for (const auto& u : p.updates) {
        room::UpdateView v;
        Check(room::DecodeUpdate(u, p.made.room_id, &v) == room::Verdict::kOk, "decode");
        Check(s->Append(p.made.room_id, v.id, u).ok(), "store update");
      }
    }
    Check(s->Commit().ok(), "commit");
  }
  shard::NodeConfig c;
  c.listen = {*base::Endpoint::Parse("127.0.0.1:0")};
  c.shards = 1;
  c.room_store_dir = r.dir;
  c.rate_limit_per_s = 10'000'000;
  c.rate_limit_burst = 10'000'000;
  c.room_swarm = swarm;
  if (const char* s = std::getenv("RP_BENCH_SEND_SLOTS")) c.transport_config.send_slots = std::atoi(s);
  if (const char* s = std::getenv("RP_BENCH_BURSTS")) c.transport_config.burst_buffers = std::atoi(s);
  if (const char* t = std::getenv("RP_BENCH_TRANSPORT"); t != nullptr && std::strcmp(t, "recvmmsg") == 0) {
    c.transport = ring::TransportKind::kMmsg;
  }
  UseCpu(0);
  r.node = Must(shard::Node::Create(c, r.identity), "relay");
  Check(r.node->Start().ok(), "relay start");
  r.addr = r.node->addresses()[0];
  UseCpu(1);
  return r;
}

void StopRelay(Relay& r) {
  r.node->Stop();
  r.node.reset();
  std::filesystem::remove_all(std::filesystem::path(r.dir).parent_path());
}

// JoinUntil: a new client joins `p`'s room through the relay; returns the ms from Join to
// holding the writer's state hash.
// The last JoinUntil's minor page faults and CPU time (the whole process: client, relay),
// from Client::Join to the state.
long g_join_faults = 0;
double g_join_cpu_ms = 0;

double JoinUntil(const Prepared& p, const Relay& relay) {
  client::ClientOptions o;
  o.data_dir = TempDir("client");
  o.listen = *base::Endpoint::Parse("127.0.0.1:0");
  o.bootstrap = {relay.addr};
  o.cache = false;
  // RP_BENCH_RECV_GRO=off: the joiner receives datagram by datagram (the A/B of GRO).
  if (const char* g = std::getenv("RP_BENCH_RECV_GRO"); g != nullptr && std::strcmp(g, "off") == 0) {
    o.recv_gro = false;
  }
  auto c = Must(client::Client::Start(o), "client");
  bool done = false;
  c->OnState([&](const client::RoomRef&, const wire::Hash256& h) { done |= h == p.state_hash; });
  room::Invite inv = p.made.writer;
  inv.bootstrap = {relay.addr};
  rusage ru0{};
  getrusage(RUSAGE_SELF, &ru0);
  const double cpu0 = CpuSeconds(CLOCK_PROCESS_CPUTIME_ID);
  const auto t0 = Clock::now();
  auto ref = Must(c->Join(room::FormatInvite(inv)), "join");
  auto next_check = Clock::now() + std::chrono::milliseconds(500);
  while (!done) {
    c->Poll(1);
    // The state event can be lost when the event ring overflows during a large sync:
    // then ask for the state itself now and then.
    if (Clock::now() >= next_check) {
      auto st = c->State(ref);
      done |= st.ok() && st->state_hash == p.state_hash;
      next_check = Clock::now() + std::chrono::milliseconds(500);
    }
    Check(MsSince(t0) < 60'000, "join did not reach the writer's state within 60 s");
  }
  const double ms = MsSince(t0);
  rusage ru1{};
  getrusage(RUSAGE_SELF, &ru1);
  g_join_faults = ru1.ru_minflt - ru0.ru_minflt;
  g_join_cpu_ms = (CpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0) * 1000;
  c.reset();
  std::filesystem::remove_all(std::filesystem::path(o.data_dir).parent_path());
  return ms;
}

// A raw UDP socket on 127.0.0.1 that joins the relay's swarm as a member.
struct RawPeer {
  int fd = -1;
  explicit RawPeer(const base::Endpoint& relay) {
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    Check(fd >= 0, "socket");
    // Large receive buffers, so that what is measured is the relay and not this thread's
    // draining (FORCE passes net.core.rmem_max when run as root).
    const int buf = 16 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)) != 0) {
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    }
    sockaddr_storage a;
    const socklen_t n = base::Endpoint::Parse("127.0.0.1:0")->ToSockaddr(&a, false);
    Check(bind(fd, reinterpret_cast<sockaddr*>(&a), n) == 0, "bind");
    to_len = relay.ToSockaddr(&to, false);
    relay_addr = relay;
  }
  ~RawPeer() { close(fd); }
  void Send(const uint8_t* p, size_t n) {
    sendto(fd, p, n, 0, reinterpret_cast<sockaddr*>(&to), to_len);
  }
  // Drain: reads what is queued; counts datagrams of `type`. Answers the relay's probe
  // (a ping: the pong echoes its txid), as a member's node does, so that the relay sends
  // this address more than 3x what it sent (core::ReflectionGuard).
  uint64_t Drain(wire::MessageType type) {
    alignas(8) uint8_t buf[wire::kDatagramBytesMax];
    uint64_t n = 0;
    for (;;) {
      const ssize_t got = recv(fd, buf, sizeof(buf), 0);
      if (got <= 0) return n;
      wire::Message m;
      if (wire::Decode(buf, static_cast<size_t>(got), &m) != wire::Verdict::kOk) continue;
      if (m.type() == type) {
        ++n;
        // A packed flood carries more records (issue 15): each counts.
        if (type == wire::MessageType::kRoomPublish && m.room_publish()->more() != nullptr) {
          n += m.room_publish()->more()->size();
        }
      }
      if (m.type() == wire::MessageType::kPing) {
        alignas(8) uint8_t out[wire::kDatagramBytesMax];
        const uint64_t txid = m.ping()->txid();
        Send(out, pong_enc.Pong(out, static_cast<uint32_t>(txid & 0xFF), txid, wire::NodeId{},
                                relay_addr, nullptr, nullptr, true));
      }
    }
  }
  wire::Encoder pong_enc;
  base::Endpoint relay_addr;
  sockaddr_storage to{};
  socklen_t to_len = 0;
};

// CheckpointLoadMs: the floor for join_5mb_ms (issue 15's acceptance): a fresh member's
// Room loads the same checkpoint and blob in memory, no network, no disk. Median of 5;
// `first`: the first of them.
double CheckpointLoadMs(const Prepared& p, double* first = nullptr) {
  const wire::KeyPair reader = wire::KeyPair::FromSeed(*p.made.writer.member_seed);
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    auto r = Must(room::Room::Open(p.made.writer.genesis, &reader), "open a member room");
    Check(r->AddKeyEpoch(p.made.writer.epochs[0]) == room::Verdict::kOk, "key epoch");
    const auto t0 = Clock::now();
    Check(r->LoadCheckpoint(p.checkpoint.record, p.checkpoint.blob) == room::Verdict::kOk,
          "load the checkpoint");
    ms.push_back(MsSince(t0));
    Check(r->state_hash() == p.state_hash, "the loaded state");
  }
  if (first != nullptr) *first = ms[0];
  std::sort(ms.begin(), ms.end());
  return ms[2];
}

bool g_alloc_sites = false;  // --alloc-sites

// PrintAllocSites: each distinct stack of the traced allocations (hook frames skipped),
// most frequent first, to stderr.
void PrintAllocSites() {
  const size_t n = std::min(g_sites_used.load(), kSitesMax);
  std::map<std::vector<void*>, int> count;
  for (size_t i = 0; i < n; ++i) {
    const int skip = std::min(2, g_site_depth[i]);  // CountAlloc's caller and the hook
    count[std::vector<void*>(g_sites[i] + skip, g_sites[i] + g_site_depth[i])]++;
  }
  std::vector<std::pair<int, std::vector<void*>>> sorted;
  for (auto& [stack, c] : count) sorted.emplace_back(c, stack);
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::fprintf(stderr, "allocation sites: %zu traced allocations, %zu stacks\n", n, sorted.size());
  for (const auto& [c, stack] : sorted) {
    std::fprintf(stderr, "-- %d allocations:\n", c);
    std::fflush(stderr);
    backtrace_symbols_fd(stack.data(), static_cast<int>(stack.size()), 2);
  }
}

int kMembers = 8;  // --members
bool g_spin = true;  // --no-spin
double g_rate = 0;   // --rate: updates per second the publisher sends at most (0: as fast
                     // as the window allows); a relay at moderate load commits differently
constexpr size_t kWindow = 1024;
constexpr int kRetryMs = 200;

void Fanout(int updates, FanoutFigures* out) {
  Prepared p = Prepare(room::ReducerKind::kChat, updates, 0, false);
  room::SwarmConfig sc;  // limits out of the way: the figure is the relay's capacity
  sc.peer_publish_per_s = sc.room_publish_per_s = 10'000'000;
  sc.peer_publish_burst = sc.room_publish_burst = 10'000'000;
  Relay relay = StartRelay(p, /*with_log=*/false, sc);
  wire::Encoder enc;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  std::vector<std::unique_ptr<RawPeer>> members;
  auto join = [&](RawPeer& peer, uint8_t tag) {
    wire::NodeId self{};
    self[0] = tag;
    wire::RandomBytes(std::span<uint8_t>(self.data() + 1, 8));
    peer.Send(buf, enc.RoomJoin(buf, p.made.room_id, self, false, {}));
    // The relay answers a join with its heads: wait for them (bounded).
    const auto t0 = Clock::now();
    while (peer.Drain(wire::MessageType::kRoomHeads) == 0) {
      pollfd pf{peer.fd, POLLIN, 0};
      poll(&pf, 1, 10);
      Check(MsSince(t0) < 5000, "the relay did not answer a join");
    }
  };
  for (int i = 0; i < kMembers; ++i) {
    members.push_back(std::make_unique<RawPeer>(relay.addr));
    join(*members.back(), static_cast<uint8_t>(i + 1));
  }
  RawPeer publisher(relay.addr);
  join(publisher, 100);
  std::vector<std::vector<uint8_t>> datagrams;
  for (const auto& u : p.updates) {
    const size_t n = enc.RoomPublish(buf, p.made.room_id, u);
    datagrams.emplace_back(buf, buf + n);
  }
  // Updates are sent in order, at most kWindow beyond the oldest unacknowledged one; an
  // update not acknowledged within kRetryMs is sent again, as a member's client does
  // (a relay whose send queue is full drops acks; the publisher retransmits).
  absl::flat_hash_map<wire::Hash256, size_t, room::IdHash> index;
  for (size_t i = 0; i < p.updates.size(); ++i) {
    room::UpdateView v;
    Check(room::DecodeUpdate(p.updates[i], p.made.room_id, &v) == room::Verdict::kOk, "decode");
    index[v.id] = i;
  }
  std::vector<bool> is_acked(datagrams.size(), false);
  std::vector<Clock::time_point> sent_at(datagrams.size());
  size_t next = 0, oldest = 0, acked = 0;
  uint64_t delivered = 0, retransmitted = 0;
  alignas(8) uint8_t rbuf[wire::kDatagramBytesMax];
  const uint64_t sent0 = RelaySent(*relay.node);
  const size_t steady_from = datagrams.size() / 4;
  uint64_t allocs_steady0 = 0;
  uint64_t pool_steady0 = 0;
  bool steady = false;
  const double cpu0 = OtherThreadsCpuSeconds();
  const auto t0 = Clock::now();
  while (acked < datagrams.size()) {
    const auto now = Clock::now();
    // Paced (--rate): no further than the rate allows since the start.
    const size_t allowed =
        g_rate > 0 ? static_cast<size_t>(g_rate * std::chrono::duration<double>(now - t0).count()) + 1
                   : datagrams.size();
    while (next < datagrams.size() && next - oldest < kWindow && next < allowed) {
      publisher.Send(datagrams[next].data(), datagrams[next].size());
      sent_at[next++] = now;
    }
    for (size_t i = oldest; i < next; ++i) {
      if (is_acked[i] || now - sent_at[i] < std::chrono::milliseconds(kRetryMs)) continue;
      publisher.Send(datagrams[i].data(), datagrams[i].size());
      sent_at[i] = now;
      ++retransmitted;
    }
    // Spin (no sleep): the members' sockets stand for other machines, so the relay's
    // sends must not pay for waking a sleeping thread here (--no-spin to compare).
    if (!g_spin) {
      pollfd pf{publisher.fd, POLLIN, 0};
      poll(&pf, 1, 1);
    }
    for (;;) {
      const ssize_t got = recv(publisher.fd, rbuf, sizeof(rbuf), 0);
      if (got <= 0) break;
      wire::Message m;
      if (wire::Decode(rbuf, static_cast<size_t>(got), &m) != wire::Verdict::kOk ||
          m.type() != wire::MessageType::kRoomAck) {
        continue;
      }
      auto take = [&](const wire::Hash256& id) {
        auto it = index.find(id);
        if (it != index.end() && !is_acked[it->second]) {
          is_acked[it->second] = true;
          ++acked;
        }
      };
      take(wire::FromWireId(*m.room_ack()->update()));
      if (const auto* more = m.room_ack()->more()) {  // packed acks (issue 15)
        for (const auto* u : *more) take(wire::FromWireId(*u));
      }
    }
    while (oldest < next && is_acked[oldest]) ++oldest;
    if (!steady && acked >= steady_from) {
      steady = true;
      allocs_steady0 = g_allocs.load(std::memory_order_relaxed);
      pool_steady0 = base::BlockPool::Global().stats().takes;
      g_trace_sites.store(g_alloc_sites, std::memory_order_relaxed);
    }
    for (auto& m : members) delivered += m->Drain(wire::MessageType::kRoomPublish);
    if (MsSince(t0) >= 120'000) {
      std::fprintf(stderr, "sent %zu acked %zu delivered %llu\n%s\n", next, acked,
                   static_cast<unsigned long long>(delivered), relay.node->StatusJson().c_str());
      Check(false, "the relay did not acknowledge every update within 120 s");
    }
  }
  const double relay_s = MsSince(t0) / 1000;
  // Let the last floods arrive (bounded), then count.
  for (int i = 0; i < 50 && delivered < static_cast<uint64_t>(kMembers) * datagrams.size(); ++i) {
    usleep(2000);
    for (auto& m : members) delivered += m->Drain(wire::MessageType::kRoomPublish);
  }
  const double relay_cpu_s = OtherThreadsCpuSeconds() - cpu0;
  const uint64_t allocs_steady = g_allocs.load(std::memory_order_relaxed) - allocs_steady0;
  const uint64_t pool_steady = base::BlockPool::Global().stats().takes - pool_steady0;
  g_trace_sites.store(false, std::memory_order_relaxed);
  if (g_alloc_sites) PrintAllocSites();
  const uint64_t sent = RelaySent(*relay.node) - sent0;
  if (std::getenv("RP_BENCH_VERBOSE") != nullptr) {
    std::fprintf(stderr, "%s\n", relay.node->StatusJson().c_str());
  }
  StopRelay(relay);
  // The floor: checking each update's signature on this thread.
  const auto t1 = Clock::now();
  const double verify_cpu0 = CpuSeconds(CLOCK_THREAD_CPUTIME_ID);
  int ok = 0;
  for (const auto& u : p.updates) {
    room::UpdateView v;
    Check(room::DecodeUpdate(u, p.made.room_id, &v) == room::Verdict::kOk, "decode");
    ok += room::CheckUpdateSignature(v, p.write_key);
  }
  const double sig_s = MsSince(t1) / 1000;
  const double sig_cpu_s = CpuSeconds(CLOCK_THREAD_CPUTIME_ID) - verify_cpu0;
  Check(ok == updates, "signatures");
  out->per_s = updates / relay_s;
  out->wall_overhead = relay_s / sig_s;
  out->verify_us = sig_cpu_s * 1e6 / updates;  // CPU, like the relay's figure
  out->cpu_per_update_us = relay_cpu_s * 1e6 / updates;
  const size_t steady_updates = datagrams.size() - steady_from;
  if (RP_BENCH_ALLOC_HOOK && steady_updates > 0) {
    out->allocs_per_update = static_cast<double>(allocs_steady) / static_cast<double>(steady_updates);
  }
  if (steady_updates > 0) {
    out->pool_blocks_per_update =
        static_cast<double>(pool_steady) / static_cast<double>(steady_updates);
  }
  out->datagrams_per_update = static_cast<double>(sent) / updates;
  std::fprintf(stderr,
               "fan-out: %d updates acked in %.1f ms (%.0f/s); %llu of %llu floods reached the "
               "%d members; %llu retransmitted; signatures alone %.1f ms; relay CPU %.1f ms; "
               "%llu datagrams sent; %llu allocations and %llu pool blocks in the last %zu "
               "updates\n",
               updates, relay_s * 1000, out->per_s, static_cast<unsigned long long>(delivered),
               static_cast<unsigned long long>(static_cast<uint64_t>(kMembers) * updates), kMembers,
               static_cast<unsigned long long>(retransmitted), sig_s * 1000, relay_cpu_s * 1000,
               static_cast<unsigned long long>(sent), static_cast<unsigned long long>(allocs_steady),
               static_cast<unsigned long long>(pool_steady), steady_updates);
}

}  // namespace
}  // namespace ringpeer::bench

int main(int argc, char** argv) {
  using namespace ringpeer;
  using namespace ringpeer::bench;
  // RP_BENCH_ROOM_LOG_SPACE=0: rooms' logs on the heap (the node's --room-log-space 0), a
  // baseline in the same build.
  if (const char* v = std::getenv("RP_BENCH_ROOM_LOG_SPACE"); v != nullptr) {
    base::BlockPool::SetGlobalSpace(std::strtoull(v, nullptr, 10));
  }
  int updates = 20'000;
  bool only_fanout = false;
  int only_joins = 0;  // --join-only N: N joins through the 5 MB checkpoint, nothing else
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--fanout-only") == 0) {
      only_fanout = true;
    } else if (std::strcmp(argv[i], "--join-only") == 0 && i + 1 < argc) {
      only_joins = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--alloc-sites") == 0) {
      g_alloc_sites = true;
    } else if (std::strcmp(argv[i], "--no-spin") == 0) {
      g_spin = false;
    } else if (std::strcmp(argv[i], "--members") == 0 && i + 1 < argc) {
      kMembers = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--updates") == 0 && i + 1 < argc) {
      updates = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--rate") == 0 && i + 1 < argc) {
      g_rate = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--updates N] [--members N] [--rate UPDATES_PER_S] [--fanout-only] "
                   "[--join-only N] [--no-spin] [--alloc-sites]\n",
                   argv[0]);
      return 2;
    }
  }
  if (updates < 1) updates = 1;
  t_bench_thread = true;  // the allocation hook counts every other thread (the relay's)
  {
    void* warm[2];
    backtrace(warm, 2);  // loads the unwinder now, not inside the hook
  }
  Check(wire::InitCrypto(), "libsodium");
  g_cpus = shard::AvailableCpus();

  double join_ms = 0, catchup_ms = 0, load_ms = 0, join_first_ms = 0, load_first_ms = 0;
  if (only_joins > 0) {
    // For profiles of the join alone (perf record): one relay, N joins, their median.
    Prepared big = Prepare(room::ReducerKind::kKv, 6000, 800, true);
    Relay r1 = StartRelay(big, /*with_log=*/false, room::SwarmConfig{});
    std::vector<double> ms;
    for (int i = 0; i < only_joins; ++i) {
      ms.push_back(JoinUntil(big, r1));
      std::fprintf(stderr, "join %d: %.1f ms (%ld page faults, %.1f ms of CPU)\n", i + 1,
                   ms.back(), g_join_faults, g_join_cpu_ms);
    }
    StopRelay(r1);
    load_ms = CheckpointLoadMs(big);
    const double first = ms[0];
    std::sort(ms.begin(), ms.end());
    std::printf("joins=%d join_first_ms=%.1f join_5mb_ms=%.1f join_min_ms=%.1f "
                "checkpoint_load_ms=%.1f join_over_load=%.2f\n",
                only_joins, first, ms[ms.size() / 2], ms[0], load_ms, ms[ms.size() / 2] / load_ms);
    return 0;
  }
  if (!only_fanout) {
  // Join: a kv room of 6,000 x 800-byte values (~4.9 MB of state), checkpointed.
  Prepared big = Prepare(room::ReducerKind::kKv, 6000, 800, true);
  std::fprintf(stderr, "checkpoint: %zu-byte record, %zu-byte state blob\n",
               big.checkpoint.record.size(), big.checkpoint.blob.size());
  // Five joins, each a new client through the same relay, and their median: measured as
  // the load is (the median of five). The first join and the first load of the process
  // pay for memory touched for the first time (a page fault costs ~12 us on the VMs we
  // measured; the client's shard thread starts with a fresh malloc arena): both are
  // reported beside the medians, as join_first_ms and checkpoint_load_first_ms.
  Relay r1 = StartRelay(big, /*with_log=*/false, room::SwarmConfig{});
  std::vector<double> joins;
  for (int i = 0; i < 5; ++i) {
    joins.push_back(JoinUntil(big, r1));
    std::fprintf(stderr, "join %d: %.1f ms (%ld page faults, %.1f ms of CPU)\n", i + 1,
                 joins.back(), g_join_faults, g_join_cpu_ms);
  }
  StopRelay(r1);
  join_first_ms = joins[0];
  std::sort(joins.begin(), joins.end());
  join_ms = joins[2];
  load_ms = CheckpointLoadMs(big, &load_first_ms);
  std::fprintf(stderr, "join: %.1f ms, first %.1f ms (the same checkpoint loaded in memory: %.1f ms, first %.1f ms)\n",
               join_ms, join_first_ms, load_ms, load_first_ms);

  // Catch-up: 10,000 chat updates the joiner missed, no checkpoint.
  Prepared missed = Prepare(room::ReducerKind::kChat, 10'000, 0, false);
  Relay r2 = StartRelay(missed, /*with_log=*/true, room::SwarmConfig{});
  catchup_ms = JoinUntil(missed, r2);
  StopRelay(r2);
  std::fprintf(stderr, "catch-up: %.1f ms\n", catchup_ms);
  }

  FanoutFigures f;
  Fanout(updates, &f);
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double rss_mb = static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB
  std::printf("join_5mb_ms=%.1f catchup_10k_ms=%.1f relay_updates_per_s=%.0f relay_overhead=%.2f "
              "relay_cpu_per_update_us=%.1f verify_us=%.1f allocs_per_update=%.3f rss_mb=%.1f "
              "datagrams_per_update=%.2f relay_wall_overhead=%.2f checkpoint_load_ms=%.1f "
              "join_over_load=%.2f catchup_over_verify=%.2f join_first_ms=%.1f "
              "checkpoint_load_first_ms=%.1f pool_blocks_per_update=%.4f\n",
              join_ms, catchup_ms, f.per_s, f.cpu_per_update_us / f.verify_us, f.cpu_per_update_us,
              f.verify_us, f.allocs_per_update, rss_mb, f.datagrams_per_update, f.wall_overhead,
              load_ms, load_ms > 0 ? join_ms / load_ms : 0.0,
              f.verify_us > 0 ? catchup_ms * 1000 / (10'000 * f.verify_us) : 0.0, join_first_ms,
              load_first_ms, f.pool_blocks_per_update);
  return 0;
}
