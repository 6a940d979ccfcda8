// The room tests' network (tests only): nodes of RoomHosts on tests/net's MemoryNetwork,
// ticked every virtual millisecond. Shared by swarm_test.cc and swarm_members_test.cc.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "gtest/gtest.h"
#include "node/room/room_host.h"
#include "tests/net/memory_network.h"

namespace ringpeer::room::testing {

namespace memnet = ::ringpeer::testing;

class Net;

// TapOutbox: the network's sender, with an optional rewrite of each datagram before it
// leaves (a hostile node in a test: a relay that lies). `rewrite` returns the new size
// (0: drop it).
class TapOutbox final : public base::Outbox {
 public:
  TapOutbox(memnet::MemoryNetwork* net, const base::Endpoint& self) : sender_(net, self) {}
  std::span<uint8_t> Buffer() noexcept override { return sender_.Buffer(); }
  void Commit(size_t size, const base::Endpoint& to) noexcept override {
    if (watch) watch(to, sender_.Buffer().first(size));
    if (rewrite) size = rewrite(sender_.Buffer(), size);
    if (size > 0) sender_.Commit(size, to);
  }
  // Bursts are cut here into datagrams, each through Commit (as NodeCore's outbox does
  // where the transport has no GSO), so that the tests run the floods' burst path.
  std::span<uint8_t> BurstBuffer() noexcept override {
    return bursts ? splitter_.Buffer() : std::span<uint8_t>();
  }
  size_t CommitBurst(size_t size, size_t segment,
                     std::span<const base::Endpoint> to) noexcept override {
    return splitter_.Split(*this, size, segment, to);
  }
  bool bursts = true;
  std::function<size_t(std::span<uint8_t> buf, size_t size)> rewrite;
  // watch: sees each datagram and its destination as it leaves (before rewrite).
  std::function<void(const base::Endpoint& to, std::span<const uint8_t> bytes)> watch;

 private:
  memnet::MemoryNetwork::Sender sender_;
  base::BurstSplitter splitter_;
};

struct Node {
  Node(memnet::MemoryNetwork* net, base::Endpoint a, const KeyPair* identity, bool relay,
       uint64_t seed, const SwarmConfig& sc, SwarmListener* listener = nullptr)
      : addr(a), rng(seed), out(net, a) {
    RoomHostConfig c;
    c.identity = identity;
    c.swarm = sc;
    c.swarm.relay = relay;
    c.swarm.self[0] = static_cast<uint8_t>(a.port);
    host = std::make_unique<RoomHost>(c, &storage, &encoder, &rng, listener);
  }
  base::Endpoint addr;
  MemoryRoomStorage storage;
  wire::Encoder encoder;
  base::Rng rng;
  TapOutbox out;
  std::unique_ptr<RoomHost> host;
  bool down = false;
  // commit_latency_us > 0: storage commits as a writer thread would, one batch in flight
  // at a time, each durable this long after it started (MemoryRoomStorage's deferred
  // commits); the acks wait for their own batch.
  int64_t commit_latency_us = 0;
  int64_t commit_done_us = 0;
  uint64_t commit_failures = 0;
};

class Net {
 public:
  explicit Net(uint64_t seed)
      : net_(Config(seed), [this](const base::Endpoint& e) { return IndexOf(e); },
             [this](uint32_t to, const base::Endpoint& from, std::span<const uint8_t> bytes) {
               Deliver(to, from, bytes);
             }) {}
  double loss = 0, dup = 0;
  int64_t delay_max_us = 3000;
  // batch: what each millisecond delivers to a node is one receive batch (RoomHost::
  // BeginBatch/EndBatch around it), as a shard does: floods leave packed.
  bool batch = false;
  int64_t now_us = 0;

  Node* Add(const KeyPair* identity, bool relay, const SwarmConfig& sc = {},
            SwarmListener* listener = nullptr) {
    base::Endpoint e;
    e.family = base::Endpoint::Family::kV4;
    e.ip[0] = 10;
    e.port = static_cast<uint16_t>(1000 + nodes_.size());
    nodes_.push_back(
        std::make_unique<Node>(&net_, e, identity, relay, seeds_.Next(), sc, listener));
    return nodes_.back().get();
  }
  // Run: delivers and ticks until `until_us` (virtual). The loop is bounded by time.
  void Run(int64_t until_us) {
    memnet::NetworkConfig& c = net_.config();
    c.loss = loss;
    c.duplicate = dup;
    c.delay_max_us = 100 + delay_max_us;
    while (now_us < until_us) {
      if (batch) {
        for (auto& n : nodes_) n->host->BeginBatch();
      }
      net_.DeliverDue(now_us);
      if (batch) {
        for (auto& n : nodes_) n->host->EndBatch(n->out);
      }
      for (auto& n : nodes_) {
        if (n->down) continue;
        n->host->Tick(now_us, n->out);
        if (n->commit_latency_us > 0) {
          // In Shard::Run's order: poll; the writer may finish right after the poll (here:
          // always, when its time has come); then a new batch starts if none is in flight.
          n->storage.SetDeferCommits(true);
          std::optional<absl::Status> done = n->host->CommitPoll(n->out);
          if (done.has_value() && !done->ok()) ++n->commit_failures;  // its acks were dropped
          if (n->storage.CommitInFlight() && now_us >= n->commit_done_us) {
            n->storage.FinishCommit();
          }
          if (!n->host->CommitInFlight()) {
            done = n->host->CommitStart(n->out);  // takes the batch that just finished first
            if (done.has_value() && !done->ok()) ++n->commit_failures;
            n->commit_done_us = now_us + n->commit_latency_us;
          }
          continue;
        }
        n->host->CommitAndRelease(n->out).IgnoreError();  // a failing commit drops acks
      }
      now_us += 1000;
      net_.set_now(now_us);
    }
  }
  Node* Find(const base::Endpoint& e) {
    const int i = IndexOf(e);
    return i < 0 ? nullptr : nodes_[i].get();
  }

 private:
  static memnet::NetworkConfig Config(uint64_t seed) {
    memnet::NetworkConfig c;
    c.seed = seed;
    c.delay_min_us = 100;
    return c;
  }
  int IndexOf(const base::Endpoint& e) const {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i]->addr == e) return static_cast<int>(i);
    }
    return -1;
  }
  void Deliver(uint32_t to, const base::Endpoint& from, std::span<const uint8_t> bytes) {
    Node* n = nodes_[to].get();
    Node* f = Find(from);
    if (n->down || (f != nullptr && f->down)) return;
    wire::Message m;
    ASSERT_EQ(wire::Decode(bytes.data(), bytes.size(), &m), wire::Verdict::kOk);
    n->host->OnMessage(now_us, from, m, n->out);
  }

  memnet::MemoryNetwork net_;  // declared first: the nodes' senders point into it
  base::Rng seeds_{0x5eed};
  std::vector<std::unique_ptr<Node>> nodes_;
};

}  // namespace ringpeer::room::testing
