// Room network benchmark (issue 5), in memory and without sockets: the time to join a room
// with a 5 MB checkpoint through the piece protocol, to catch up on 10,000 missed updates
// through the sync stream, and the updates per second a relay verifies, stores and fans
// out to 8 members, against signature checks alone. Datagrams are delivered at once, in
// order, without loss; what is timed is the protocol's CPU cost.
// Last line: join_5mb_ms= catchup_10k_ms= relay_updates_per_s= relay_overhead=
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "base/assert.h"
#include "node/room/room_host.h"
#include "node/room/reducer.h"
#include "tests/net/memory_network.h"

namespace ringpeer::room {
namespace {

namespace memnet = ::ringpeer::testing;
using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The benchmark's network: RoomHosts on tests/net's MemoryNetwork (the one the simulator
// and the room tests use) with no delay or loss: datagrams arrive in the order sent.
struct Node {
  Node(memnet::MemoryNetwork* net, base::Endpoint a, const KeyPair* id, bool relay,
       uint64_t seed)
      : addr(a), rng(seed), out(net, a) {
    RoomHostConfig c;
    c.identity = id;
    c.swarm.relay = relay;
    c.swarm.peer_publish_per_s = c.swarm.room_publish_per_s = 10'000'000;
    c.swarm.peer_publish_burst = c.swarm.room_publish_burst = 10'000'000;
    c.swarm.serve_per_s = 10'000'000;
    c.swarm.serve_burst = 1'000'000;
    c.swarm.self[0] = static_cast<uint8_t>(a.port);
    host = std::make_unique<RoomHost>(c, &storage, &enc, &rng, nullptr);
  }
  base::Endpoint addr;
  MemoryRoomStorage storage;
  wire::Encoder enc;
  base::Rng rng;
  memnet::MemoryNetwork::Sender out;
  std::unique_ptr<RoomHost> host;
};

class Net {
 public:
  Net()
      : net_(Config(),
             [this](const base::Endpoint& e) { return drop_all ? -1 : IndexOf(e); },
             [this](uint32_t to, const base::Endpoint& from, std::span<const uint8_t> bytes) {
               wire::Message m;
               if (wire::Decode(bytes.data(), bytes.size(), &m) != wire::Verdict::kOk) return;
               nodes[to]->host->OnMessage(now_us, from, m, nodes[to]->out);
             }) {}
  bool drop_all = false;  // count sends without delivering (fan-out sink)
  int64_t now_us = 0;

  uint64_t sent() const { return net_.sent(); }
  bool quiet() const { return net_.in_flight() == 0; }
  Node* Add(const KeyPair* id, bool relay) {
    base::Endpoint e;
    e.family = base::Endpoint::Family::kV4;
    e.ip[0] = 10;
    e.port = static_cast<uint16_t>(2000 + nodes.size());
    nodes.push_back(std::make_unique<Node>(&net_, e, id, relay, nodes.size() + 1));
    return nodes.back().get();
  }
  // Pump: delivers until quiet, ticking every 4096 datagrams; bounded by `max`.
  void Pump(uint64_t max, bool (*done)(void*), void* arg) {
    for (uint64_t i = 0; i < max && !done(arg); ++i) {
      if (quiet() || i % 4096 == 0) {
        now_us += 1000;
        net_.set_now(now_us);
        for (auto& n : nodes) {
          n->host->Tick(now_us, n->out);
          n->host->CommitAndRelease(n->out).IgnoreError();
        }
        if (quiet()) continue;
      }
      net_.DeliverNext();
    }
  }

 private:
  static memnet::NetworkConfig Config() {
    memnet::NetworkConfig c;
    c.delay_min_us = c.delay_max_us = 0;
    return c;
  }
  int IndexOf(const base::Endpoint& e) const {
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i]->addr == e) return static_cast<int>(i);
    }
    return -1;
  }

  memnet::MemoryNetwork net_;  // declared first: the nodes' senders point into it

 public:
  std::vector<std::unique_ptr<Node>> nodes;
};

struct Fixture {
  base::Rng rng{7};
  KeyPair admin, a, b;
  std::vector<uint8_t> genesis;
  std::vector<std::vector<uint8_t>> epochs;
  Fixture(ReducerKind kind) {
    auto seed = [&] {
      std::array<uint8_t, 32> s;
      rng.Fill(s);
      return s;
    };
    admin = KeyPair::FromSeed(seed());
    a = KeyPair::FromSeed(seed());
    b = KeyPair::FromSeed(seed());
    genesis = MakeGenesis(admin, "bench", kind, kStateBytesMaxDefault, seed());
    Genesis g;
    RP_ASSERT(ParseGenesis(genesis, &g) == Verdict::kOk);
    KeyEpochSpec spec;
    spec.room_id = g.room_id;
    spec.write_seed = seed();
    spec.content_key = seed();
    spec.members = {{a.public_key, true}, {b.public_key, true}};
    epochs.push_back(MakeKeyEpoch(admin, spec, [&](std::span<uint8_t> o) { rng.Fill(o); }));
  }
};

double JoinFiveMb() {
  Fixture f(ReducerKind::kKv);
  Net net;
  Node* server = net.Add(&f.a, false);
  Swarm* s = *server->host->Create(f.genesis, f.epochs);
  const std::string value(800, 'v');
  for (int i = 0; i < 6000; ++i) {  // ~4.9 MB of state
    auto id = s->Publish(0, KvPayload(KvOp::kSet, "key" + std::to_string(i), value),
                         server->out);
    if (!id.ok()) std::fprintf(stderr, "publish %d: %s\n", i, id.status().ToString().c_str());
    RP_ASSERT(id.ok());
  }
  RP_ASSERT(s->MakeCheckpoint().ok());
  std::fprintf(stderr, "checkpoint object: %llu bytes\n",
               static_cast<unsigned long long>(s->checkpoint_info().object_bytes));
  Node* joiner = net.Add(&f.b, false);
  const auto t0 = Clock::now();
  Swarm* j = *joiner->host->Join(net.now_us, f.genesis, f.epochs, {&server->addr, 1},
                                 joiner->out);
  net.Pump(10'000'000, [](void* p) {
    return static_cast<Swarm*>(p)->counters().checkpoints_loaded > 0; }, j);
  const double ms = MsSince(t0);
  RP_ASSERT(j->room().state_hash() == s->room().state_hash());
  return ms;
}

double CatchUp10k() {
  Fixture f(ReducerKind::kChat);
  Net net;
  Node* server = net.Add(nullptr, true);
  Swarm* relay = *server->host->Create(f.genesis, f.epochs);
  Node* writer = net.Add(&f.a, false);
  Swarm* w = *writer->host->Create(f.genesis, f.epochs);
  Node* late = net.Add(&f.b, false);
  Swarm* l = *late->host->Create(f.genesis, f.epochs);
  w->Connect(0, server->addr, writer->out);
  net.Pump(100, [](void*) { return false; }, nullptr);
  for (int i = 0; i < 10'000; ++i) {
    RP_ASSERT(w->Publish(net.now_us, ChatPayload(ChatOp::kMessage, f.a.public_key, "m"),
                         writer->out).ok());
    if (i % 256 == 0) net.Pump(1'000'000, [](void* p) {
      return static_cast<Net*>(p)->quiet(); }, &net);
  }
  net.Pump(10'000'000, [](void* p) { return static_cast<Net*>(p)->quiet(); }, &net);
  RP_ASSERT(relay->room().log_size() == 10'000);
  l->Connect(net.now_us, server->addr, late->out);
  net.Pump(100, [](void* p) { return static_cast<Swarm*>(p)->peers_count() > 0; }, l);
  const auto t0 = Clock::now();
  l->RequestSync(net.now_us, late->out);
  net.Pump(10'000'000, [](void* p) {
    return static_cast<Swarm*>(p)->room().log_size() == 10'000; }, l);
  const double ms = MsSince(t0);
  RP_ASSERT(l->room().state_hash() == w->room().state_hash());
  return ms;
}

void RelayFanout(double* per_s, double* overhead) {
  Fixture f(ReducerKind::kChat);
  Net net;
  Node* relay_node = net.Add(nullptr, true);
  Swarm* relay = *relay_node->host->Create(f.genesis, f.epochs);
  std::vector<Node*> members;
  for (int i = 0; i < 8; ++i) {
    Node* m = net.Add(i == 0 ? &f.a : &f.b, false);
    (*m->host->Create(f.genesis, f.epochs))->Connect(0, relay_node->addr, m->out);
    members.push_back(m);
  }
  net.Pump(1000, [](void*) { return false; }, nullptr);
  // Pre-sign the updates at a separate writer so that only the relay's work is timed.
  auto writer = Room::Open(f.genesis, &f.a);
  RP_ASSERT((*writer)->AddKeyEpoch(f.epochs[0]) == Verdict::kOk);
  base::Rng rng(9);
  constexpr int kUpdates = 5000;
  std::vector<std::vector<uint8_t>> datagrams;
  std::vector<std::vector<uint8_t>> records;
  wire::Encoder enc;
  for (int i = 0; i < kUpdates; ++i) {
    auto rec = (*writer)->Write(ChatPayload(ChatOp::kMessage, f.a.public_key, "fan out"),
                                [&](std::span<uint8_t> o) { rng.Fill(o); });
    RP_ASSERT(rec.ok());
    std::vector<uint8_t> d(wire::kDatagramBytesMax);
    d.resize(enc.RoomPublish(d, relay->id(), *rec));
    datagrams.push_back(std::move(d));
    records.push_back(std::move(*rec));
  }
  net.drop_all = true;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  const auto t0 = Clock::now();
  for (const auto& d : datagrams) {
    std::memcpy(buf, d.data(), d.size());
    wire::Message m;
    RP_ASSERT(wire::Decode(buf, d.size(), &m) == wire::Verdict::kOk);
    relay_node->host->OnMessage(net.now_us, members[0]->addr, m, relay_node->out);
  }
  RP_ASSERT(relay_node->host->CommitAndRelease(relay_node->out).ok());
  const double relay_s = MsSince(t0) / 1000;
  RP_ASSERT(relay->room().log_size() == kUpdates);
  auto key = (*writer)->genesis();  // the write key: from the epoch as a member sees it
  KeyEpoch epoch;
  RP_ASSERT(ParseKeyEpoch(f.epochs[0], relay->id(), f.admin.public_key, nullptr, &epoch) ==
            Verdict::kOk);
  const auto t1 = Clock::now();
  int ok = 0;
  for (const auto& r : records) {
    UpdateView v;
    RP_ASSERT(DecodeUpdate(r, relay->id(), &v) == Verdict::kOk);
    ok += CheckUpdateSignature(v, epoch.write_key);
  }
  const double sig_s = MsSince(t1) / 1000;
  RP_ASSERT(ok == kUpdates);
  (void)key;
  *per_s = kUpdates / relay_s;
  *overhead = relay_s / sig_s;
  std::fprintf(stderr, "relay: %d updates, %llu datagrams out, %.1f ms; signatures alone %.1f ms\n",
               kUpdates, static_cast<unsigned long long>(net.sent()), relay_s * 1000,
               sig_s * 1000);
}

}  // namespace
}  // namespace ringpeer::room

int main() {
  RP_ASSERT(ringpeer::wire::InitCrypto());
  const double join_ms = ringpeer::room::JoinFiveMb();
  const double catchup_ms = ringpeer::room::CatchUp10k();
  double per_s = 0, overhead = 0;
  ringpeer::room::RelayFanout(&per_s, &overhead);
  std::printf("join_5mb_ms=%.1f catchup_10k_ms=%.1f relay_updates_per_s=%.0f relay_overhead=%.2f\n",
              join_ms, catchup_ms, per_s, overhead);
  return 0;
}
