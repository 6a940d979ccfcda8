#include "tests/sim/sim.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "base/assert.h"
#include "dht/table_file.h"
#include "wire/message.h"

namespace ringpeer::sim {
namespace {

constexpr uint32_t kMaxNodes = 65536;           // addresses are 10.hi.lo.1
constexpr int64_t kSettledUs = 10'000'000;       // a node this old counts as findable
constexpr int64_t kWakeResolutionUs = 1'000;     // ticks are at least this far apart
// Success against hostile nodes: a result holding kHonestNeeded of the kHonestNearest
// live honest nodes nearest the target (issue 14, item 5).
constexpr size_t kHonestNearest = 20;
constexpr size_t kHonestNeeded = 16;

// Mix: a 64-bit hash (splitmix64's finalizer), for draws that must not touch the run's
// random streams (a run without hostile nodes replays as before).
uint64_t Mix(uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}


Percentiles PercentilesOf(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  p.p50 = v[v.size() / 2];
  p.p99 = v[std::min(v.size() - 1, static_cast<size_t>(std::ceil(v.size() * 0.99)) - 1)];
  p.max = v.back();
  return p;
}

void MeanSd(const std::vector<double>& v, double* mean, double* sd) {
  *mean = 0;
  *sd = 0;
  if (v.empty()) return;
  for (double x : v) *mean += x;
  *mean /= v.size();
  for (double x : v) *sd += (x - *mean) * (x - *mean);
  *sd = v.size() > 1 ? std::sqrt(*sd / (v.size() - 1)) : 0;
}

}  // namespace

wire::Signature SimProof::Sign(const wire::KeyPair& identity,
                               const wire::Hash256& challenge) const noexcept {
  wire::Hasher h;
  h.Update(identity.public_key).Update(challenge);
  const wire::Hash256 a = h.Final();
  wire::Signature s;
  std::memcpy(s.data(), a.data(), 32);
  std::memcpy(s.data() + 32, a.data(), 32);
  return s;
}

bool SimProof::Verify(const wire::PublicKey& key, const wire::Hash256& challenge,
                      const wire::Signature& sig) const noexcept {
  wire::Hasher h;
  h.Update(key).Update(challenge);
  const wire::Hash256 a = h.Final();
  return std::memcmp(sig.data(), a.data(), 32) == 0;
}


// Per-node results, as the overlay reports them. Lookups and routes are also handed to
// the simulator's measurement through the pending_* maps.
struct Pending {
  dht::NodeId target{};
  int64_t start_us = 0;
  int target_node = -1;
};

class Simulator::NodeEvents : public dht::OverlayEvents {
 public:
  NodeEvents(Simulator* sim, uint32_t index) : sim_(sim), index_(index) {}
  void OnLookupDone(const dht::LookupResult& r) override;
  void OnRouteDone(const dht::RouteResult& r) override;
  void OnRouted(const dht::NodeId&, const base::Endpoint&, dht::RouteKind, bool,
                std::span<const uint8_t>) override;
  void OnGossip(const dht::NodeId&, uint64_t, std::span<const uint8_t>) override;
  void OnSizeEstimate(const dht::SizeEstimate& e) override;
  void OnAnnounced(const dht::NodeId&, uint32_t acks) override;

 private:
  Simulator* sim_;
  uint32_t index_;
};

struct Simulator::Node {
  uint32_t index = 0;
  base::Endpoint addr;
  wire::KeyPair keys;
  dht::NodeId id{};
  std::unique_ptr<NodeEvents> events;
  std::unique_ptr<testing::MemoryNetwork::Sender> out;  // the core's sink: the network
  std::unique_ptr<HostileOutbox> hostile_out;  // a hostile node's sink: rewrites, then `out`
  std::unique_ptr<core::NodeCore> core;  // the node: the same core a shard runs
  uint8_t hostile = 0;       // HostileMode behaviour; 0: honest
  bool answering = false;    // a hostile node's core is handling a FindNode/GetProviders
  dht::NodeId asked{};       // ... for this target or key
  bool alive = true;
  bool is_static = false;
  int64_t joined_us = 0;
  int64_t wake_at = INT64_MAX;
  std::vector<uint8_t> saved;  // the table file written when it crashed
  NodeLog log;
};

// Measurement state, kept outside the nodes so that node memory stays what a node needs.
struct Measurement {
  bool keep_logs = true;
  std::unordered_map<uint64_t, Pending> lookups, routes;
  std::vector<double> rounds, lookup_msgs, lookup_s, hello_hops, size_err, size_msgs, walk_err, walk_msgs;
  uint32_t lookups_ok = 0, lookups_done = 0, hellos_ok = 0, hellos_done = 0, ci_hits = 0;
  uint32_t walk_ci_hits = 0;
  uint32_t lookups_expired = 0;  // scripted lookups that ended at their deadline
  uint32_t honest_ok = 0;      // lookups whose result held 16 of the 20 honest nearest
  uint64_t honest_found = 0;   // sum over lookups of how many of those 20 it held
  uint64_t hostile_in_results = 0, results_size = 0;  // sums over lookups
  uint32_t hellos_timed_out = 0, hellos_wrong_end = 0;  // the two ways a hello fails
};

// HostileOutbox: a hostile node's sink. Its core answers requests as an honest node would;
// what it sends while answering a FindNode or GetProviders (its Nodes or Providers answer)
// goes through Simulator::Rewrite, everything else to the network unchanged.
class Simulator::HostileOutbox final : public base::Outbox {
 public:
  HostileOutbox(Simulator* sim, Node* node) : sim_(sim), node_(node) {}
  std::span<uint8_t> Buffer() noexcept override { return buf_; }
  void Commit(size_t size, const base::Endpoint& to) noexcept override {
    std::span<uint8_t> out = node_->out->Buffer();
    if (!node_->answering) {
      std::memcpy(out.data(), buf_, size);
      return node_->out->Commit(size, to);
    }
    const size_t n = sim_->Rewrite(*node_, std::span(buf_, size), out);
    if (n > 0) node_->out->Commit(n, to);
  }

 private:
  Simulator* sim_;
  Node* node_;
  alignas(8) uint8_t buf_[wire::kDatagramBytesMax];
};

void Simulator::NodeEvents::OnLookupDone(const dht::LookupResult& r) {
  Node& n = *sim_->nodes_[index_];
  if (sim_->measure_->keep_logs) {
    n.log.lookups.push_back(r);
    n.log.lookup_closest.emplace_back(r.closest.begin(), r.closest.end());
    n.log.lookup_providers.emplace_back(r.providers.begin(), r.providers.end());
  }
  if (r.kind != dht::LookupKind::kFindNode) return;
  auto it = sim_->measure_->lookups.find(uint64_t{index_} << 32 | r.handle);
  if (it == sim_->measure_->lookups.end()) return;
  const Pending p = it->second;
  sim_->measure_->lookups.erase(it);
  const int truth = sim_->ClosestAlive(p.target, p.start_us - kSettledUs);
  bool ok = false;
  for (const dht::Contact& c : r.closest) {
    if (truth >= 0 && c.id == sim_->nodes_[truth]->id) ok = true;
  }
  uint32_t honest[kHonestNearest];
  const size_t nh = sim_->ClosestHonest(p.target, p.start_us - kSettledUs, honest);
  size_t found = 0;
  for (size_t i = 0; i < nh; ++i) {
    const dht::NodeId& id = sim_->nodes_[honest[i]]->id;
    found += std::any_of(r.closest.begin(), r.closest.end(),
                         [&](const dht::Contact& c) { return c.id == id; });
  }
  for (const dht::Contact& c : r.closest) {
    const int at = sim_->NodeAt(c.addr);
    sim_->measure_->hostile_in_results += at >= 0 && sim_->nodes_[at]->id == c.id &&
                                          sim_->nodes_[at]->hostile != 0;
  }
  sim_->measure_->results_size += r.closest.size();
  sim_->measure_->honest_ok += found >= std::min(kHonestNeeded, nh);
  sim_->measure_->honest_found += found;
  ++sim_->measure_->lookups_done;
  sim_->measure_->lookups_ok += ok;
  sim_->measure_->rounds.push_back(r.rounds);
  sim_->measure_->lookup_msgs.push_back(r.requests + r.replies);
  sim_->measure_->lookup_s.push_back(static_cast<double>(r.duration_us) / 1e6);
  sim_->measure_->lookups_expired += r.expired;
}

void Simulator::NodeEvents::OnRouteDone(const dht::RouteResult& r) {
  Node& n = *sim_->nodes_[index_];
  if (sim_->measure_->keep_logs) n.log.routes.push_back(r);
  auto it = sim_->measure_->routes.find(r.route_id);
  if (it == sim_->measure_->routes.end()) return;
  const Pending p = it->second;
  sim_->measure_->routes.erase(it);
  if (!sim_->alive(static_cast<size_t>(p.target_node))) return;  // churned away: not counted
  const bool ok = r.delivered && r.responder.id == p.target;
  if (!r.replied) ++sim_->measure_->hellos_timed_out;
  if (r.replied && !ok) ++sim_->measure_->hellos_wrong_end;
  ++sim_->measure_->hellos_done;
  sim_->measure_->hellos_ok += ok;
  if (ok) sim_->measure_->hello_hops.push_back(r.hops);
}

void Simulator::NodeEvents::OnRouted(const dht::NodeId&, const base::Endpoint&, dht::RouteKind,
                                     bool, std::span<const uint8_t>) {
  ++sim_->nodes_[index_]->log.routed_received;
}

void Simulator::NodeEvents::OnGossip(const dht::NodeId&, uint64_t, std::span<const uint8_t>) {
  ++sim_->nodes_[index_]->log.gossip_received;
}

void Simulator::NodeEvents::OnAnnounced(const dht::NodeId&, uint32_t acks) {
  sim_->nodes_[index_]->log.announce_acks = acks;
}

void Simulator::NodeEvents::OnSizeEstimate(const dht::SizeEstimate& e) {
  if (sim_->measure_->keep_logs) sim_->nodes_[index_]->log.sizes.push_back(e);
  if (!e.ok) return;
  size_t live = 0;
  for (const auto& n : sim_->nodes_) live += n->alive;
  const double err = (e.estimate - live) / live;
  if (e.method == dht::SizeMethod::kDensity) {
    sim_->measure_->size_err.push_back(err);
    sim_->measure_->size_msgs.push_back(static_cast<double>(e.messages));
    sim_->measure_->ci_hits += (e.low <= live && live <= e.high);
  } else {
    sim_->measure_->walk_err.push_back(err);
    sim_->measure_->walk_msgs.push_back(static_cast<double>(e.messages));
    sim_->measure_->walk_ci_hits += (e.low <= live && live <= e.high);
  }
}

// ---------------------------------------------------------------------------------------

Simulator::Simulator(const SimConfig& config)
    : config_(config), work_rng_(config.seed * 2 + 2) {
  RP_ASSERT(config_.nodes > 0);
  RP_ASSERT(config_.nodes * (1 + config_.churn) + 16 < kMaxNodes);
  testing::NetworkConfig nc;
  nc.seed = config_.seed * 2 + 1;
  nc.loss = config_.loss;
  nc.duplicate = config_.duplicate;
  nc.delay_min_us = config_.delay_min_us;
  nc.delay_max_us = config_.delay_max_us;
  net_ = std::make_unique<testing::MemoryNetwork>(
      nc, [this](const base::Endpoint& e) { return NodeAt(e); },
      [this](uint32_t to, const base::Endpoint& from, std::span<const uint8_t> bytes) {
        Deliver(to, from, bytes);
      });
  // Partition: between its times, nodes with odd and even indices cannot talk.
  net_->set_blocked([this](const base::Endpoint& from, uint32_t to) {
    if (now_ < config_.partition_start_us || now_ >= config_.partition_end_us) return false;
    const int f = NodeAt(from);
    return f >= 0 && (static_cast<uint32_t>(f) & 1) != (to & 1);
  });
  if (!config_.real_crypto) proof_ = std::make_unique<SimProof>();
  measure_ = std::make_unique<Measurement>();
}

Simulator::~Simulator() {
  nodes_.clear();
}

base::Endpoint Simulator::AddrOf(uint32_t index) const {
  base::Endpoint e;
  e.family = base::Endpoint::Family::kV4;
  e.ip[0] = 10;
  e.ip[1] = static_cast<uint8_t>(index >> 8);
  e.ip[2] = static_cast<uint8_t>(index);
  e.ip[3] = 1;
  e.port = 7700;
  return e;
}

int Simulator::NodeAt(const base::Endpoint& e) const {
  if (!e.is_v4() || e.ip[0] != 10 || e.ip[3] != 1 || e.port != 7700) return -1;
  const uint32_t i = uint32_t{e.ip[1]} << 8 | e.ip[2];
  return i < nodes_.size() ? static_cast<int>(i) : -1;
}

std::unique_ptr<Simulator::Node> Simulator::MakeNode(uint32_t index, const wire::KeyPair& keys,
                                                     bool bootstrap, uint64_t incarnation) {
  auto n = std::make_unique<Node>();
  n->index = index;
  n->addr = AddrOf(index);
  n->keys = keys;
  n->id = wire::NodeIdOf(keys.public_key);
  n->events = std::make_unique<NodeEvents>(this, index);
  n->out = std::make_unique<testing::MemoryNetwork::Sender>(net_.get(), n->addr);
  n->joined_us = now_;
  dht::OverlayConfig c;
  c.peers_max = 16;
  if (bootstrap) {
    // Two of the static peers, as an operator would configure a few bootstrap relays.
    for (int k = 0; k < 2 && !statics_.empty(); ++k) {
      const base::Endpoint& b = statics_[work_rng_.Uniform(statics_.size())];
      if (!(b == n->addr) && std::find(c.bootstrap.begin(), c.bootstrap.end(), b) ==
                                 c.bootstrap.end()) {
        c.bootstrap.push_back(b);
      }
    }
  }
  // Small pools: enough for one node's share of the simulated work (see README.md).
  // Buckets: as many as a network of this size fills (dht::BucketsFor: 12 at 10,000).
  c.routing.buckets_max = dht::BucketsFor(config_.nodes, c.routing.bucket_size);
  // Four spares a bucket (with two, a full bucket wants no more candidates once it holds
  // one, fewer peers verify each other, and a gossip flood missed 6 of 299 nodes).
  c.routing.replacements_per_bucket = 4;
  // Requests in flight: two lookups of 3 each, a size estimate's 10 walks, probes.
  c.rpcs_max = 24;
  // Lookups: a node runs the scripted lookup it is picked for (a busy node is passed
  // over) or a density estimate's two at a time, rarely both; refreshes run one at a time.
  c.lookups_max = 2;
  // Shortlist 64 like production (32, then 48, left too few free slots beside a window
  // widened among liars; see README.md's hostile sections).
  c.lookup_candidates_max = 64;
  c.lookup.paths = config_.disjoint_paths;
  if (!config_.lookup_defences) {
    c.lookup.strikes_max = 0;
    c.lookup.names_per_reply_max = 0;
    c.lookup.audit_factor = 0;
    c.lookup.liar_extra = 0;
    c.lookup.requests_max = 0;
    c.lookup.retry_frees_slot = false;
    c.lookup.early_strike = false;
    c.lookup.slow_frees_slot = false;
    c.lookup.silent_extra = 0;
  }
  // Provider records: the scripted run announces nothing; the tests announce a few keys.
  c.providers.records_max = 4;
  c.providers.per_key_max = 4;
  c.providers.per_source_max = 4;
  c.announces_max = 2;
  // Routed messages: 500 hellos over 10,000 nodes in a minute, a few hops each.
  c.routes_max = 2;
  c.route_hops_max = 2;
  c.seen_max = 16;
  c.gossip_fanout = 6;
  c.size_walks = 10;
  c.size_walk_steps = 400;
  c.size_walk_messages_max = 2900;
  c.ping_interval_us = 120 * dht::kSecondUs;  // contacts only; the table probes on demand
  c.peers_interval_us = 0;                     // discovery is by lookups here
  c.proof = proof_.get();
  c.events = n->events.get();
  core::CoreConfig cc;
  cc.overlay = c;
  // Small tables, sized for one node's share of the simulated work. The guard holds the
  // addresses a node is talking to at once (strangers' credit, probes in flight); it need
  // not hold every peer of the routing table, which vouches for them (ProofSource). Rate
  // limit and ping-seen entries that are evicted start over, which costs an honest
  // simulated node nothing.
  cc.rate_limit_entries = 16;
  cc.reflection_entries = 32;
  cc.ping_seen_entries = 16;
  cc.rooms_max = 1;
  cc.own_announces = 1;  // with the room's id, the overlay's 2 announcement slots
  cc.size_estimate_interval_us = 0;  // the scripted run starts its own estimates
  cc.rng_seed = (config_.seed ^ (uint64_t{index} << 20) ^ (incarnation << 52)) | 1;
  cc.start_us = now_;
  n->hostile = HostileBehaviour(index);
  base::Outbox* sink = n->out.get();
  if (n->hostile != 0) {
    n->hostile_out = std::make_unique<HostileOutbox>(this, n.get());
    sink = n->hostile_out.get();
  }
  n->core = std::make_unique<core::NodeCore>(cc, n->keys, sink, nullptr);
  return n;
}

uint8_t Simulator::HostileBehaviour(uint32_t index) const {
  // Static nodes (everyone's bootstrap peers) stay honest. The draw is a hash of the seed
  // and the index, so a restarted node keeps its behaviour.
  if (config_.hostile <= 0 || index < std::min(config_.static_nodes, config_.nodes)) return 0;
  const uint64_t h = Mix(config_.seed * 0xD1B54A32D192ED03ull ^ index);
  if (static_cast<double>(h >> 11) * 0x1p-53 >= config_.hostile) return 0;
  if (config_.hostile_mode != kHostileMix) return config_.hostile_mode;
  return static_cast<uint8_t>(kHostileDrop + Mix(h) % 3);
}

uint8_t Simulator::hostile(size_t i) const { return nodes_[i]->hostile; }

size_t Simulator::Rewrite(const Node& n, std::span<const uint8_t> bytes,
                          std::span<uint8_t> out) {
  wire::Message msg;
  if (wire::Decode(bytes.data(), bytes.size(), &msg) != wire::Verdict::kOk) return 0;
  const bool nodes = msg.type() == wire::MessageType::kNodes && msg.nodes()->chunks() == 0;
  const bool providers = msg.type() == wire::MessageType::kProviders;
  if (!nodes && !providers) {  // not the answer (a ping to the requester, say): unchanged
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return bytes.size();
  }
  if (n.hostile == kHostileDrop) {
    ++hostile_dropped_;
    return 0;
  }
  // As many entries as the honest answer had: the same size, so no amplification limit
  // tells them apart.
  const auto* list = nodes ? msg.nodes()->nodes() : msg.providers()->nodes();
  const size_t want = list == nullptr ? 0 : std::min<size_t>(list->size(), kHonestNearest);
  wire::PeerInfo peers[kHonestNearest];
  size_t count = 0;
  if (n.hostile == kHostileFake) {
    // Ids that share their first 8 bytes with the target (nearer than any real node in a
    // network below 2^64 nodes), at addresses nobody listens on (10.x.y.2).
    for (size_t i = 0; i < want; ++i) {
      wire::Hasher h;
      const uint64_t salt = uint64_t{n.index} << 8 | i;
      h.Update(n.asked).Update(std::span(reinterpret_cast<const uint8_t*>(&salt), 8));
      const wire::Hash256 r = h.Final();
      wire::PeerInfo& p = peers[count++];
      p.id = n.asked;
      std::memcpy(p.id.data() + 8, r.data() + 8, p.id.size() - 8);
      p.addr = AddrOf(n.index);
      p.addr.ip[1] = r[0];
      p.addr.ip[3] = 2;
    }
    ++hostile_faked_;
  } else {
    // The other hostile nodes nearest the target, nearest first: real, live, and they
    // answer (each in its own way).
    uint32_t near[kHonestNearest];
    for (const auto& o : nodes_) {
      if (!o->alive || o->hostile == 0 || o->index == n.index) continue;
      size_t pos = count;
      while (pos > 0 && dht::CloserTo(n.asked, o->id, nodes_[near[pos - 1]]->id)) --pos;
      if (pos >= want) continue;
      if (count < want) ++count;
      for (size_t j = count - 1; j > pos; --j) near[j] = near[j - 1];
      near[pos] = o->index;
    }
    for (size_t i = 0; i < count; ++i) peers[i] = wire::PeerInfo{nodes_[near[i]]->id,
                                                                 nodes_[near[i]]->addr};
    ++hostile_colluded_;
  }
  if (hostile_encoder_ == nullptr) hostile_encoder_ = std::make_unique<wire::Encoder>();
  const uint32_t hint = msg.header().shard_hint;
  if (nodes) {
    return hostile_encoder_->Nodes(out, hint, msg.nodes()->txid(), n.id, std::span(peers, count));
  }
  const wire::fb::Providers* p = msg.providers();
  wire::Token token;
  std::memcpy(token.data(), p->token()->b()->Data(), token.size());
  return hostile_encoder_->Providers(
      out, hint, p->txid(), n.id, token, {},
      std::span(peers, std::min<size_t>(count, wire::kProviderNodesPerMessageMax)));
}

void Simulator::AddNode(bool with_bootstrap, bool is_static) {
  const uint32_t index = static_cast<uint32_t>(nodes_.size());
  std::array<uint8_t, 32> seed{};
  const uint64_t s = config_.seed * 0x9E3779B97F4A7C15ull + index;
  std::memcpy(seed.data(), &s, 8);
  std::memcpy(seed.data() + 8, &index, 4);
  nodes_.push_back(MakeNode(index, wire::KeyPair::FromSeed(seed), with_bootstrap, 0));
  if (is_static) {
    statics_.push_back(nodes_.back()->addr);
    nodes_.back()->is_static = true;
  }
  Schedule(index);
}

dht::Overlay& Simulator::overlay(size_t i) { return *nodes_[i]->core->overlay(); }
core::NodeCore& Simulator::node(size_t i) { return *nodes_[i]->core; }
bool Simulator::alive(size_t i) const { return nodes_[i]->alive; }
base::Outbox& Simulator::outbox(size_t i) { return nodes_[i]->core->outbox(); }
const base::Endpoint& Simulator::addr(size_t i) const { return nodes_[i]->addr; }

void Simulator::Inject(const base::Endpoint& from, size_t to, std::span<const uint8_t> bytes) {
  net_->Inject(from, static_cast<uint32_t>(to), bytes);
}
Simulator::NodeLog& Simulator::log(size_t i) { return nodes_[i]->log; }

void Simulator::Crash(size_t i) {
  Node& n = *nodes_[i];
  if (!n.alive) return;
  n.saved = n.core->SavedTableBytes();
  n.alive = false;
  n.wake_at = INT64_MAX;
  n.core.reset();  // its memory goes back, as a crashed process's would
}

void Simulator::Restart(size_t i) {
  Node& old = *nodes_[i];
  RP_ASSERT(!old.alive);
  auto saved = dht::ParseTable(old.saved);
  RP_ASSERT(saved.ok());
  const wire::KeyPair keys = old.keys;
  nodes_[i] = MakeNode(static_cast<uint32_t>(i), keys, /*bootstrap=*/false, ++seq_);
  nodes_[i]->core->overlay()->Restore(now_, *saved);
  Schedule(static_cast<uint32_t>(i));
}

void Simulator::Push(int64_t at_us, uint32_t node) { events_.push(Event{at_us, seq_++, node}); }

void Simulator::Schedule(uint32_t index) {
  Node& n = *nodes_[index];
  if (!n.alive) return;
  const int64_t w = std::max(n.core->NextWakeUs(now_), now_ + kWakeResolutionUs);
  if (w < n.wake_at) {
    n.wake_at = w;
    Push(w, index);
  }
}

void Simulator::Deliver(uint32_t to, const base::Endpoint& from,
                        std::span<const uint8_t> bytes) {
  now_ = std::max(now_, net_->now());
  Node& n = *nodes_[to];
  if (!n.alive) return;
  if (n.hostile != 0) {
    // Which request its core is about to answer: Rewrite needs the target.
    wire::Message msg;
    if (wire::Decode(bytes.data(), bytes.size(), &msg) == wire::Verdict::kOk) {
      if (msg.type() == wire::MessageType::kFindNode) {
        n.asked = wire::FromWireId(*msg.find_node()->target());
        n.answering = true;
      } else if (msg.type() == wire::MessageType::kGetProviders) {
        n.asked = wire::FromWireId(*msg.get_providers()->key());
        n.answering = true;
      }
    }
  }
  n.core->Receive(now_, from, bytes);
  n.answering = false;
  Schedule(to);
}

void Simulator::RunUntil(int64_t t_us) {
  // Deliveries and wake-ups in time order (a delivery first when they tie).
  while (true) {
    const int64_t wake = events_.empty() ? INT64_MAX : events_.top().at_us;
    const int64_t next = std::min(wake, net_->NextAt());
    if (next == INT64_MAX || next > t_us) break;
    if (net_->NextAt() <= wake) {
      net_->DeliverNext();
      continue;
    }
    const Event e = events_.top();
    events_.pop();
    now_ = e.at_us;
    net_->set_now(now_);
    Node& n = *nodes_[e.node];
    if (!n.alive || n.wake_at != e.at_us) continue;  // superseded
    n.wake_at = INT64_MAX;
    n.core->Tick(now_);
    Schedule(e.node);
  }
  now_ = std::max(now_, t_us);
  net_->set_now(now_);
}

int Simulator::ClosestAlive(const dht::NodeId& target, int64_t joined_before_us) const {
  int best = -1;
  dht::NodeId best_id{};
  for (const auto& n : nodes_) {
    if (!n->alive || n->joined_us > joined_before_us) continue;
    const dht::NodeId& id = n->id;
    if (best < 0 || dht::CloserTo(target, id, best_id)) {
      best = static_cast<int>(n->index);
      best_id = id;
    }
  }
  return best;
}

size_t Simulator::ClosestHonest(const dht::NodeId& target, int64_t joined_before_us,
                                std::span<uint32_t> out) const {
  size_t count = 0;
  for (const auto& n : nodes_) {
    if (!n->alive || n->hostile != 0 || n->joined_us > joined_before_us) continue;
    size_t pos = count;
    while (pos > 0 && dht::CloserTo(target, n->id, nodes_[out[pos - 1]]->id)) --pos;
    if (pos >= out.size()) continue;
    if (count < out.size()) ++count;
    for (size_t j = count - 1; j > pos; --j) out[j] = out[j - 1];
    out[pos] = n->index;
  }
  return count;
}

// ---------------------------------------------------------------------------------------
// The scripted run.

namespace {
enum class Action : uint8_t { kLookup, kHello, kSize, kChurn };
struct Work {
  int64_t at_us;
  Action action;
};
}  // namespace

int Simulator::PickSettled() {
  for (int tries = 0; tries < 1000; ++tries) {
    const size_t i = work_rng_.Uniform(nodes_.size());
    const Node& n = *nodes_[i];
    if (n.alive && n.joined_us <= now_ - kSettledUs) return static_cast<int>(i);
  }
  return -1;
}

void Simulator::StartLookup() {
  for (int tries = 0; tries < 8; ++tries) {
    const int i = PickSettled();
    if (i < 0) return;
    const dht::NodeId target = dht::RandomId(work_rng_);
    Node& n = *nodes_[i];
    const uint32_t h = n.core->overlay()->FindNode(now_, target, n.core->outbox(), config_.disjoint_paths);
    Schedule(static_cast<uint32_t>(i));
    if (h == 0) continue;  // all its lookup slots busy: ask another node
    measure_->lookups[uint64_t(i) << 32 | h] = Pending{target, now_, -1};
    return;
  }
}

void Simulator::StartHello() {
  const int a = PickSettled();
  const int b = PickSettled();
  if (a < 0 || b < 0 || a == b) return;
  Node& n = *nodes_[a];
  const uint64_t id = n.core->overlay()->Hello(now_, nodes_[b]->id, n.core->outbox());
  Schedule(static_cast<uint32_t>(a));
  if (id != 0) measure_->routes[id] = Pending{nodes_[b]->id, now_, b};
}

void Simulator::StartSize() {
  const int i = PickSettled();
  if (i < 0) return;
  Node& n = *nodes_[i];
  n.core->overlay()->EstimateSize(now_, n.core->outbox());
  if (config_.walk_estimates) n.core->overlay()->EstimateSizeByWalks(now_, n.core->outbox());
  Schedule(static_cast<uint32_t>(i));
}

void Simulator::ChurnOne() {
  // Replace one node: a random non-static node leaves (crashes), a new one joins.
  for (int tries = 0; tries < 100; ++tries) {
    const size_t i = work_rng_.Uniform(nodes_.size());
    if (!nodes_[i]->alive || nodes_[i]->is_static) continue;
    Crash(i);
    nodes_[i]->saved.clear();
    AddNode(/*with_bootstrap=*/true);
    ++replaced_;
    return;
  }
}

SimReport Simulator::Run() {
  measure_->keep_logs = false;
  const int64_t join_window =
      config_.join_window_us > 0 ? config_.join_window_us
                                 : std::max<int64_t>(1, config_.nodes / 200) * 1'000'000;
  const uint32_t statics = std::min(config_.static_nodes, config_.nodes);
  for (uint32_t i = 0; i < statics; ++i) {
    AddNode(i > 0, /*is_static=*/true);
    RunUntil(now_ + 100'000);
  }
  const int64_t join_start = now_;
  for (uint32_t i = statics; i < config_.nodes; ++i) {
    RunUntil(join_start + join_window * (i - statics) / std::max<uint32_t>(1, config_.nodes));
    AddNode(true);
  }
  RunUntil(now_ + config_.settle_us);
  if (config_.verbose) {
    std::fprintf(stderr, "joined %zu nodes at t=%.1fs, %llu datagrams\n", nodes_.size(),
                 now_ / 1e6, static_cast<unsigned long long>(net_->sent()));
  }
  // The measurement window: lookups, hellos, size estimates and churn, interleaved.
  std::vector<Work> work;
  const int64_t t0 = now_;
  auto spread = [&](uint32_t count, Action a, int64_t offset) {
    for (uint32_t i = 0; i < count; ++i) {
      work.push_back(Work{t0 + offset + (config_.measure_us - offset) * i / std::max(1u, count), a});
    }
  };
  spread(config_.lookups, Action::kLookup, 0);
  spread(config_.hellos, Action::kHello, 0);
  spread(config_.size_estimates, Action::kSize, 0);
  spread(static_cast<uint32_t>(config_.churn * config_.nodes), Action::kChurn, 0);
  std::stable_sort(work.begin(), work.end(),
                   [](const Work& a, const Work& b) { return a.at_us < b.at_us; });
  for (const Work& w : work) {
    RunUntil(w.at_us);
    switch (w.action) {
      case Action::kLookup: StartLookup(); break;
      case Action::kHello: StartHello(); break;
      case Action::kSize: StartSize(); break;
      case Action::kChurn: ChurnOne(); break;
    }
  }
  RunUntil(t0 + config_.measure_us + config_.drain_us);
  SimReport r;
  Measure(&r);
  return r;
}

void Simulator::Measure(SimReport* r) {
  const Measurement& m = *measure_;
  r->seed = config_.seed;
  size_t live = 0;
  double table = 0;
  for (const auto& n : nodes_) {
    if (!n->alive) continue;
    ++live;
    table += static_cast<double>(n->core->overlay()->table().size());
  }
  r->nodes = static_cast<uint32_t>(live);
  r->table_size_mean = live > 0 ? table / live : 0;
  r->lookups_done = m.lookups_done;
  r->lookup_success = m.lookups_done > 0 ? double(m.lookups_ok) / m.lookups_done : 0;
  r->rounds = PercentilesOf(m.rounds);
  r->msgs_per_lookup = PercentilesOf(m.lookup_msgs);
  r->hellos_done = m.hellos_done;
  r->hellos_timed_out = m.hellos_timed_out;
  r->hellos_wrong_end = m.hellos_wrong_end;
  r->hello_delivery = m.hellos_done > 0 ? double(m.hellos_ok) / m.hellos_done : 0;
  r->hello_hops = PercentilesOf(m.hello_hops);
  MeanSd(m.size_err, &r->size_error_mean, &r->size_error_sd);
  r->size_msgs = PercentilesOf(m.size_msgs);
  r->size_estimates_done = static_cast<uint32_t>(m.size_err.size());
  r->size_ci_coverage = m.size_err.empty() ? 0 : double(m.ci_hits) / m.size_err.size();
  MeanSd(m.walk_err, &r->walk_error_mean, &r->walk_error_sd);
  r->walk_msgs = PercentilesOf(m.walk_msgs);
  r->walk_estimates_done = static_cast<uint32_t>(m.walk_err.size());
  r->walk_ci_coverage = m.walk_err.empty() ? 0 : double(m.walk_ci_hits) / m.walk_err.size();
  r->datagrams = net_->sent();
  r->nodes_replaced = replaced_;
  r->virtual_s = now_ / 1e6;
  r->hostile = config_.hostile;
  // Lookups still running at the end count as failures here (liars slow lookups down).
  r->lookups_unfinished = static_cast<uint32_t>(m.lookups.size());
  const uint32_t asked = m.lookups_done + r->lookups_unfinished;
  r->honest_success = asked > 0 ? double(m.honest_ok) / asked : 0;
  r->honest_found_mean = m.lookups_done > 0 ? double(m.honest_found) / m.lookups_done : 0;
  r->hostile_in_results = m.lookups_done > 0 ? double(m.hostile_in_results) / m.lookups_done : 0;
  r->results_size = m.lookups_done > 0 ? double(m.results_size) / m.lookups_done : 0;
  r->lookup_s = PercentilesOf(m.lookup_s);
  r->lookups_expired = m.lookups_expired;
  r->hostile_nodes = 0;
  for (const auto& n : nodes_) r->hostile_nodes += n->alive && n->hostile != 0;
  r->hostile_dropped = hostile_dropped_;
  r->hostile_faked = hostile_faked_;
  r->hostile_colluded = hostile_colluded_;
}

std::string SimReport::Text() const {
  char b[2048];
  std::snprintf(
      b, sizeof(b),
      "seed %llu, %u live nodes (%llu replaced), mean table %.0f entries, %.0f s virtual\n"
      "lookups: %u done, success %.4f, rounds p50 %.0f p99 %.0f, messages p50 %.0f p99 %.0f\n"
      "lookup time: p50 %.1f s, p99 %.1f s, max %.1f s; %u ended at their deadline\n"
      "hello: %u done, delivered %.4f (%u timed out, %u ended elsewhere), hops p50 %.0f p99 "
      "%.0f max %.0f\n"
      "size (density): %u estimates, error mean %+.3f sd %.3f, 95%% CI holds truth %.2f, "
      "messages p50 %.0f max %.0f\n"
      "size (walk collisions): %u estimates, error mean %+.3f sd %.3f, 95%% CI holds truth "
      "%.2f, messages p50 %.0f max %.0f\n"
      "lookups against the honest nodes: %.4f held >= 16 of the 20 nearest (%u unfinished "
      "count as failures), %.2f of 20 on average; results %.2f nodes, %.2f of them hostile\n"
      "hostile: %.2f of the nodes (%llu live), %llu requests dropped, %llu answers made up, "
      "%llu colluding answers\n"
      "datagrams %llu, memory %.0f bytes per node\n",
      static_cast<unsigned long long>(seed), nodes, static_cast<unsigned long long>(nodes_replaced),
      table_size_mean, virtual_s, lookups_done, lookup_success, rounds.p50, rounds.p99,
      msgs_per_lookup.p50, msgs_per_lookup.p99, lookup_s.p50, lookup_s.p99, lookup_s.max,
      lookups_expired, hellos_done, hello_delivery, hellos_timed_out, hellos_wrong_end, hello_hops.p50,
      hello_hops.p99, hello_hops.max, size_estimates_done, size_error_mean, size_error_sd,
      size_ci_coverage, size_msgs.p50, size_msgs.max, walk_estimates_done, walk_error_mean,
      walk_error_sd, walk_ci_coverage, walk_msgs.p50, walk_msgs.max, honest_success,
      lookups_unfinished, honest_found_mean, results_size, hostile_in_results, hostile, static_cast<unsigned long long>(hostile_nodes),
      static_cast<unsigned long long>(hostile_dropped),
      static_cast<unsigned long long>(hostile_faked),
      static_cast<unsigned long long>(hostile_colluded),
      static_cast<unsigned long long>(datagrams), bytes_per_node);
  return b;
}

std::string SimReport::KeyValues() const {
  char b[1024];
  std::snprintf(b, sizeof(b),
                "nodes=%u lookup_success=%.4f rounds_p50=%.0f rounds_p99=%.0f "
                "msgs_per_lookup_p50=%.0f hello_delivery=%.4f hello_hops_p50=%.0f "
                "hello_hops_max=%.0f size_error_sd=%.3f size_msgs=%.0f bytes_per_node=%.0f "
                "lookup_success_16of20=%.4f",
                nodes, lookup_success, rounds.p50, rounds.p99, msgs_per_lookup.p50,
                hello_delivery, hello_hops.p50, hello_hops.max, size_error_sd, size_msgs.max,
                bytes_per_node, honest_success);
  return b;
}

}  // namespace ringpeer::sim
