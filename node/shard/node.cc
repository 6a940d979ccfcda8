#include "node/shard/node.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <latch>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/assert.h"
#include "base/block_pool.h"
#include "base/clock.h"
#include "base/futex.h"
#include "base/log.h"
#include "base/status.h"
#include "node/admin/json.h"
#include "node/store/room_store.h"

namespace ringpeer::shard {
namespace {

using base::MonotonicUs;

void PinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  // Best effort: a failure (e.g. a cpuset change since start) leaves the thread unpinned.
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

}  // namespace

std::vector<int> AvailableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int i = 0; i < CPU_SETSIZE; ++i) {
      if (CPU_ISSET(i, &set)) cpus.push_back(i);
    }
  }
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

namespace {

// BindWithRetry: binds the shards' sockets; a port in use is retried (bounded, with
// backoff from 20 ms to 250 ms) until config.bind_retry_ms has passed, because a node that
// was just stopped may still be closing its sockets. A debug line says so; the final error says how long it waited.
absl::StatusOr<std::vector<ring::ShardSockets>> BindWithRetry(const NodeConfig& config) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::milliseconds(std::max<int64_t>(0, config.bind_retry_ms));
  int64_t backoff_ms = 20;
  bool logged = false;
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<std::vector<ring::ShardSockets>> s =
        ring::BindShardSockets(config.listen, config.shards, config.steer);
    if (s.ok() || !absl::IsAlreadyExists(s.status())) return s;
    const auto now = std::chrono::steady_clock::now();
    if (now + std::chrono::milliseconds(backoff_ms) > deadline || attempt >= 1000) {
      if (attempt == 0) return s;
      const auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count();
      return absl::AlreadyExistsError(absl::StrFormat("%s (still in use after %.1f s)",
                                                      s.status().message(), waited / 1000.0));
    }
    if (!logged) {
      logged = true;
      base::Log(base::LogLevel::kDebug, "listen port busy; retrying")
          .Field("error", std::string(s.status().message()))
          .Field("retry_ms", config.bind_retry_ms);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min<int64_t>(backoff_ms * 2, 250);
  }
}

}  // namespace

Node::Node(const NodeConfig& config, const wire::KeyPair& identity)
    : config_(config), identity_(identity), id_(wire::NodeIdOf(identity.public_key)) {}

Node::~Node() { Stop(); }

absl::StatusOr<std::unique_ptr<Node>> Node::Create(const NodeConfig& config,
                                                   const wire::KeyPair& identity) {
  if (config.shards == 0 || config.shards > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("shards must be between 1 and 255, not ", config.shards));
  }
  if (config.listen.empty()) return absl::InvalidArgumentError("no listen address");
  if (config.room_listener != nullptr && config.shards != 1) {
    // Its events arrive from one thread (an SPSC ring in node/client), its OnLoopEnd too.
    return absl::InvalidArgumentError("a room listener needs a node of one shard");
  }
  std::unique_ptr<Node> node(new Node(config, identity));
  RP_ASSIGN_OR_RETURN(node->sockets_, BindWithRetry(config));
  node->addresses_ = node->sockets_[0].addresses;
  if (!config.table_path.empty()) node->LoadTable();
  node->mailboxes_ = std::make_unique<Mailboxes>(config.shards, config.mailbox_capacity);
  if (!config.room_store_dir.empty()) {
    // Opened here, on the control thread and before any shard runs: opening verifies each
    // environment in a forked child, which must not happen beside running threads.
    store::RoomStoreOptions options;
    if (config.room_store_bytes_max != 0) options.map_bytes = config.room_store_bytes_max;
    options.node_id = node->id_;
    for (uint32_t i = 0; i < config.shards; ++i) {
      RP_ASSIGN_OR_RETURN(std::unique_ptr<store::RoomStore> s,
                          store::RoomStore::Open(config.room_store_dir, i, options));
      node->room_stores_.push_back(std::move(s));
    }
  }
  return node;
}

absl::Status Node::Start() {
  const uint32_t n = config_.shards;
  const std::vector<int> cpus = AvailableCpus();
  shards_.resize(n);
  // Shared with the threads, which outlive this function.
  struct StartState {
    explicit StartState(uint32_t n) : results(n), reasons(n), reported(n) {}
    std::vector<absl::Status> results;
    std::vector<std::string> reasons;
    std::latch reported;
    std::atomic<int> go{0};  // 1: run, 2: abort
  };
  auto st = std::make_shared<StartState>(n);
  for (uint32_t i = 0; i < n; ++i) {
    threads_.emplace_back([this, st, n, i, cpu = cpus[i % cpus.size()]] {
      PinTo(cpu);
      // "rp-shard-N" in top -H, perf and /proc (a name is at most 15 characters).
      char name[16];
      std::snprintf(name, sizeof(name), "rp-shard-%u", i);
      pthread_setname_np(pthread_self(), name);
      ring::TransportConfig tc = config_.transport_config;
      tc.cpu = cpu;
      auto t = ring::CreateTransport(config_.transport, std::move(sockets_[i]), tc,
                                     &st->reasons[i]);
      if (t.ok()) {
        ShardConfig sc;
        sc.index = i;
        sc.shards = n;
        sc.rate_limit_per_s = config_.rate_limit_per_s;
        sc.rate_limit_burst = config_.rate_limit_burst;
        sc.overlay.peers_max = config_.peers_max;
        sc.overlay.bootstrap = config_.bootstrap;
        sc.overlay.client = config_.dht_client;
        sc.overlay.routing.subnet_per_bucket_max = config_.subnet_per_bucket_max;
        sc.overlay.routing.subnet_per_table_max = config_.subnet_per_table_max;
        sc.overlay.routing.subnet_limit_private = config_.subnet_limit_private;
        if (i == 0) sc.restore = restore_;
        if (!room_stores_.empty()) sc.room_storage = room_stores_[i].get();
        sc.room_relay = config_.room_relay;
        sc.rooms_max = config_.rooms_max;
        sc.room_admission = config_.room_admission;
        sc.room_swarm = config_.room_swarm;
        sc.room_listener = config_.room_listener;
        mailboxes_->SetWake(i, (*t)->wake_handle());
        shards_[i] = std::make_unique<Shard>(sc, identity_, std::move(*t), mailboxes_.get(),
                                             &stop_);
        if (config_.room_relay) st->results[i] = shards_[i]->RestoreRooms();
      } else {
        st->results[i] = t.status();
      }
      st->reported.count_down();
      st->go.wait(0);
      if (st->go.load() == 1) shards_[i]->Run();
    });
  }
  st->reported.wait();
  absl::Status status;
  for (const absl::Status& s : st->results) {
    if (!s.ok()) status = s;
  }
  fallback_reason_ = st->reasons[0];
  st->go.store(status.ok() ? 1 : 2);
  st->go.notify_all();
  if (!status.ok()) {
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }
  return status;
}

void Node::Stop() {
  if (stopped_) return;
  stopped_ = true;
  stop_.store(true);
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  // The shard threads are gone: the owner's overlay can be read from here.
  if (!config_.table_path.empty() && !shards_.empty() && shards_[0]) {
    absl::Status s = dht::SaveTableFile(config_.table_path, shards_[0]->SavedTableBytes());
    if (!s.ok()) warnings_.push_back(absl::StrCat("routing table not saved: ", s.message()));
  }
}

void Node::LoadTable() {
  auto loaded = dht::LoadTableFile(config_.table_path);
  if (loaded.ok()) {
    restore_ = std::move(*loaded);
    return;
  }
  if (absl::IsNotFound(loaded.status())) return;  // first start
  // The table is a cache of peers: start without it, but keep the bad file for a look.
  const std::string aside = config_.table_path + ".corrupt";
  std::rename(config_.table_path.c_str(), aside.c_str());
  warnings_.push_back(absl::StrCat("routing table ", config_.table_path, " unreadable (",
                                   loaded.status().message(), "); moved to ", aside,
                                   " and starting without it"));
}

void Node::PeriodicSave() {
  const auto now = std::chrono::steady_clock::now();
  if (config_.table_path.empty() || shards_.empty() ||
      now - last_save_ < std::chrono::milliseconds(kTableSaveIntervalMs)) {
    return;
  }
  last_save_ = now;
  std::unique_ptr<ControlCommand> cmd =
      Run(ControlCommand::Kind::kSaveTable, wire::NodeId{}, /*timeout_ms=*/1000);
  if (!cmd->ok) return;  // busy: the next tick tries again
  absl::Status s = dht::SaveTableFile(config_.table_path, cmd->table_bytes);
  if (!s.ok()) warnings_.push_back(absl::StrCat("routing table not saved: ", s.message()));
}

const char* Node::transport_name() const {
  return shards_.empty() || !shards_[0] ? "none" : shards_[0]->transport_name();
}

std::unique_ptr<ControlCommand> Node::Run(ControlCommand::Kind kind, const wire::NodeId& target,
                                          int timeout_ms) {
  auto cmd = std::make_unique<ControlCommand>();
  cmd->kind = kind;
  cmd->target = target;
  return Submit(std::move(cmd), timeout_ms);
}

namespace {

// SleepUntilDone: until the shard answers `cmd` (it wakes us: Shard::PollCommand) or the
// monotonic clock passes `deadline_us`.
void SleepUntilDone(ControlCommand& cmd, int64_t deadline_us) {
  for (int64_t now = MonotonicUs();
       now < deadline_us && cmd.done.load(std::memory_order_acquire) == 0; now = MonotonicUs()) {
    base::FutexWait(&cmd.done, 0, static_cast<int>((deadline_us - now + 999) / 1000));
  }
}

}  // namespace

std::unique_ptr<ControlCommand> Node::Submit(std::unique_ptr<ControlCommand> cmd,
                                             int timeout_ms) {
  Shard* owner = shards_.empty() ? nullptr : shards_[0].get();
  // A stopped node's transport may have closed the eventfd that Post rings.
  if (stop_.load(std::memory_order_acquire)) {
    cmd->error = "the node has stopped";
    return cmd;
  }
  if (owner == nullptr || !owner->Post(cmd.get())) {
    cmd->error = "the node is busy with another request";
    return cmd;
  }
  // Control path: Post rang the owner's doorbell, so it claims the command at once, and
  // answers within core::kCommandDeadlineUs; this thread sleeps on `done` until then
  // (woken by the answer, not a clock). Bounded wait.
  const int64_t deadline_us = MonotonicUs() + int64_t{timeout_ms} * 1000;
  SleepUntilDone(*cmd, deadline_us);
  if (cmd->done.load(std::memory_order_acquire)) return cmd;
  if (owner->Withdraw(cmd.get())) {
    cmd->error = "the owner shard did not answer in time";
    return cmd;
  }
  // The owner has claimed it and will answer by its deadline; it must not be freed before.
  SleepUntilDone(*cmd, MonotonicUs() + 40'000'000);
  if (!cmd->done.load(std::memory_order_acquire)) {
    cmd.release();  // a shard stalled past its deadline: leak rather than use-after-free
    auto failed = std::make_unique<ControlCommand>();
    failed->error = "the owner shard is stalled";
    return failed;
  }
  return cmd;
}

namespace {

void WriteContacts(admin::JsonWriter& w, const char* key, const std::vector<dht::Contact>& cs) {
  w.Key(key).BeginArray();
  for (const dht::Contact& c : cs) {
    w.BeginObject();
    w.Key("id").String(wire::Hex(c.id));
    w.Key("address").String(c.addr.ToString());
    w.EndObject();
  }
  w.EndArray();
}

void AppendContacts(std::string* out, const char* title, const std::vector<dht::Contact>& cs) {
  absl::StrAppend(out, title, " (", cs.size(), "):\n");
  for (const dht::Contact& c : cs) {
    absl::StrAppend(out, "  ", wire::Hex(c.id), "  ", c.addr.ToString(), "\n");
  }
}

}  // namespace

std::string Node::HandleControl(std::string_view request) {
  // "VERB FORMAT HEX"
  const size_t a = request.find(' ');
  const size_t b = a == std::string_view::npos ? a : request.find(' ', a + 1);
  if (b == std::string_view::npos) return "error: malformed request\n";
  const std::string verb(request.substr(0, a));
  const std::string format(request.substr(a + 1, b - a - 1));
  wire::NodeId target;
  if (!wire::ParseHex32(request.substr(b + 1), &target) ||
      (format != "json" && format != "text")) {
    return "error: malformed request\n";
  }
  ControlCommand::Kind kind;
  if (verb == "lookup") {
    kind = ControlCommand::Kind::kLookup;
  } else if (verb == "providers") {
    kind = ControlCommand::Kind::kProviders;
  } else if (verb == "announce") {
    kind = ControlCommand::Kind::kAnnounce;
  } else {
    return "error: unknown request '" + verb + "'\n";
  }
  const int timeout_ms = static_cast<int>(core::kCommandDeadlineUs / 1000) + 2000;
  std::unique_ptr<ControlCommand> cmd = Run(kind, target, timeout_ms);
  if (!cmd->ok) return "error: " + cmd->error + "\n";
  const char* key_name = kind == ControlCommand::Kind::kLookup ? "target" : "key";
  if (format == "json") {
    admin::JsonWriter w;
    w.BeginObject();
    w.Key(key_name).String(wire::Hex(target));
    if (kind == ControlCommand::Kind::kAnnounce) {
      w.Key("acks").Uint(cmd->acks);
    } else {
      w.Key("rounds").Uint(cmd->rounds);
      w.Key("requests").Uint(cmd->requests);
      if (kind == ControlCommand::Kind::kProviders) WriteContacts(w, "providers", cmd->providers);
      WriteContacts(w, "closest", cmd->closest);
    }
    w.EndObject();
    return w.str() + "\n";
  }
  std::string out = absl::StrCat(key_name, " ", wire::Hex(target), "\n");
  if (kind == ControlCommand::Kind::kAnnounce) {
    absl::StrAppend(&out, "announced to ", cmd->acks, " node(s); republished until the node stops\n");
    return out;
  }
  absl::StrAppend(&out, cmd->rounds, " round(s), ", cmd->requests, " request(s)\n");
  if (kind == ControlCommand::Kind::kProviders) AppendContacts(&out, "providers", cmd->providers);
  AppendContacts(&out, "closest nodes", cmd->closest);
  return out;
}

std::unique_ptr<ControlCommand> Node::Collect() {
  return Run(ControlCommand::Kind::kSnapshot, wire::NodeId{}, /*timeout_ms=*/1000);
}

std::string Node::StatusJson() {
  std::unique_ptr<ControlCommand> snap = Collect();
  const ControlCommand& c = *snap;
  const int64_t now = c.done ? c.now_us : MonotonicUs();
  admin::JsonWriter w;
  w.BeginObject();
  w.Key("node_id").String(wire::Hex(id_));
  w.Key("transport").String(transport_name());
  w.Key("shards").Uint(config_.shards);
  w.Key("listen").BeginArray();
  for (const base::Endpoint& e : addresses_) w.String(e.ToString());
  w.EndArray();
  w.Key("observed_address");
  if (c.observed.valid()) {
    w.String(c.observed.ToString());
  } else {
    w.Null();
  }
  w.Key("peers").BeginArray();
  size_t live = 0;
  for (const dht::PeerStatus& p : c.peers) {
    live += p.live;
    w.BeginObject();
    w.Key("id").String(wire::Hex(p.id));
    w.Key("address").String(p.addr.ToString());
    w.Key("verified").Bool(p.verified);
    w.Key("live").Bool(p.live);
    w.Key("bootstrap").Bool(p.bootstrap);
    w.Key("in_table").Bool(p.in_table);
    w.Key("last_heard_ms_ago").Int(p.last_heard_us == 0 ? -1 : (now - p.last_heard_us) / 1000);
    w.EndObject();
  }
  w.EndArray();
  w.Key("live_peers").Uint(live);
  w.Key("routing_table_size").Uint(c.table_size);
  w.Key("size_estimate").BeginObject();
  for (const auto& [name, e] : {std::pair{"density", &c.size_density},
                                std::pair{"walks", &c.size_walks}}) {
    w.Key(name);
    if (!e->has_value()) {
      w.Null();
      continue;
    }
    w.BeginObject();
    w.Key("nodes").Uint(static_cast<uint64_t>((*e)->estimate + 0.5));
    w.Key("low").Uint(static_cast<uint64_t>((*e)->low + 0.5));
    w.Key("high").Uint(static_cast<uint64_t>((*e)->high + 0.5));
    w.Key("messages").Uint((*e)->messages);
    w.EndObject();
  }
  w.EndObject();
  const dht::OverlayCounters& oc = c.overlay;
  w.Key("overlay").BeginObject();
  w.Key("requests_sent").Uint(oc.requests_sent);
  w.Key("requests_answered").Uint(oc.requests_answered);
  w.Key("requests_timed_out").Uint(oc.requests_timed_out);
  w.Key("lookups_expired").Uint(oc.lookups_expired);
  w.Key("lookup_slow_moves").Uint(oc.lookup_slow_moves);
  w.Key("replies_trimmed").Uint(oc.replies_trimmed);
  w.Key("announces_stored").Uint(oc.announces_stored);
  w.Key("announces_refused").Uint(oc.announces_refused);
  w.Key("tokens_rejected").Uint(oc.tokens_rejected);
  w.Key("routes_forwarded").Uint(oc.routes_forwarded);
  w.Key("routes_answered").Uint(oc.routes_answered);
  w.Key("gossip_delivered").Uint(oc.gossip_delivered);
  w.Key("challenges_sent").Uint(oc.challenges_sent);
  w.Key("new_peers_deferred").Uint(oc.new_peers_deferred);
  w.EndObject();
  w.Key("storage").BeginObject();
  {
    std::string error;
    uint64_t failures = 0, failing = 0;
    for (const std::unique_ptr<Shard>& sh : shards_) {
      const Counters& sc = sh->counters();
      failures += sc.storage_errors.load(std::memory_order_relaxed);
      if (sc.storage_failing.load(std::memory_order_relaxed) != 0) {
        ++failing;
        if (error.empty()) error = sh->StorageError();
      }
    }
    w.Key("ok").Bool(failing == 0);
    w.Key("shards_failing").Uint(failing);
    w.Key("commit_failures").Uint(failures);
    w.Key("error");
    if (error.empty()) {
      w.Null();
    } else {
      w.String(error);
    }
    w.Key("map_bytes_per_shard")
        .Uint(room_stores_.empty()                  ? 0
              : config_.room_store_bytes_max != 0 ? config_.room_store_bytes_max
                                                  : store::kStoreMapBytesDefault);
  }
  w.EndObject();
  {
    // Rooms' logs (records, indexes) grow into this process-wide pool (base/block_pool.h).
    const base::BlockPool::Stats ps = base::BlockPool::Global().stats();
    w.Key("room_log_pool").BeginObject();
    w.Key("space_bytes").Uint(ps.space);
    w.Key("carved_bytes").Uint(ps.carved);
    w.Key("blocks_taken").Uint(ps.takes);
    w.Key("blocks_reused").Uint(ps.reuses);
    w.Key("blocks_given_back").Uint(ps.gives);
    w.Key("fallbacks").Uint(ps.fallbacks);
    w.EndObject();
  }
  w.Key("shard_counters").BeginArray();
  for (uint32_t i = 0; i < shards_.size(); ++i) {
    const Counters& sc = shards_[i]->counters();
    auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    w.BeginObject();
    w.Key("shard").Uint(i);
    w.Key("received").Uint(get(sc.received));
    w.Key("sent").Uint(get(sc.sent));
    w.Key("pings_answered").Uint(get(sc.pings_answered));
    w.Key("find_node_answered").Uint(get(sc.find_node_answered));
    w.Key("get_providers_answered").Uint(get(sc.get_providers_answered));
    w.Key("walks_answered").Uint(get(sc.walks_answered));
    w.Key("overlay_forwarded").Uint(get(sc.overlay_forwarded));
    w.Key("overlay_forwarded_reads").Uint(get(sc.overlay_forwarded_reads));
    w.Key("dht_snapshots").Uint(get(sc.dht_snapshots));
    w.Key("loop_iterations").Uint(get(sc.loop_iterations));
    w.Key("mailbox_out").Uint(get(sc.mailbox_out));
    w.Key("mailbox_in").Uint(get(sc.mailbox_in));
    w.Key("send_errors").Uint(get(sc.send_errors));
    w.Key("recv_no_buffers").Uint(get(sc.recv_no_buffers));
    w.Key("recv_coalesced").Uint(get(sc.recv_coalesced));
    w.Key("recv_coalesced_dropped").Uint(get(sc.recv_coalesced_dropped));
    w.Key("transport_syscalls").Uint(get(sc.transport_syscalls));
    w.Key("transport_completions").Uint(get(sc.transport_completions));
    w.Key("rooms").Uint(get(sc.rooms));
    w.Key("rooms_by_reducer").BeginObject();
    w.Key("chat").Uint(get(sc.rooms_by_reducer[1]));
    w.Key("kv").Uint(get(sc.rooms_by_reducer[2]));
    w.Key("app").Uint(get(sc.rooms_by_reducer[3]));
    w.EndObject();
    w.Key("rooms_checkpointed").Uint(get(sc.rooms_checkpointed));
    w.Key("dropped").BeginObject();
    uint64_t total = 0;
    for (int v = 1; v < wire::kVerdictCount; ++v) {
      const uint64_t d = get(sc.dropped[v]);
      total += d;
      w.Key(wire::VerdictName(static_cast<wire::Verdict>(v))).Uint(d);
    }
    w.EndObject();
    w.Key("dropped_total").Uint(total);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str();
}

namespace {

// FillOverlayMetrics: the owner shard's overlay figures. A new OverlayCounters field is
// one more line in the list below (name, help, value); it then appears on /metrics as
// ringpeer_overlay_<name>_total.
void FillOverlayMetrics(const ControlCommand& c, admin::NodeMetrics* m) {
  m->routing = admin::RoutingMetrics{c.table_size, 0, 0};
  auto size = [](const std::optional<dht::SizeEstimate>& e)
      -> std::optional<admin::SizeEstimateMetrics> {
    if (!e || !e->ok) return std::nullopt;
    return admin::SizeEstimateMetrics{e->estimate, e->low, e->high};
  };
  m->size_estimate = size(c.size_density);
  m->size_estimate_walks = size(c.size_walks);
  const dht::OverlayCounters& o = c.overlay;
  m->overlay = {
      {"pings_sent", "Liveness pings sent.", o.pings_sent},
      {"challenges_sent", "Pings carrying a challenge to a new peer.", o.challenges_sent},
      {"peers_verified", "Times a peer proved its id.", o.peers_verified},
      {"peers_forgotten", "Peers dropped after repeated failures.", o.peers_forgotten},
      {"new_peers_deferred", "New peers not challenged yet: budget empty.",
       o.new_peers_deferred},
      {"requests_sent", "DHT requests sent (find_node, providers, announce, walks, dumps).",
       o.requests_sent},
      {"requests_timed_out", "DHT requests that got no answer in time.", o.requests_timed_out},
      {"lookups_expired", "Lookups that ran past their deadline and ended with what answered.",
       o.lookups_expired},
      {"lookup_slow_moves",
       "Lookup requests unanswered past the slow mark that left their slot to the next.",
       o.lookup_slow_moves},
      {"requests_answered", "DHT requests from others that we answered.", o.requests_answered},
      {"replies_trimmed", "Answers cut to 3x the size of an unverified request.",
       o.replies_trimmed},
      {"rpc_slots_full", "DHT requests not sent: no free slot.", o.rpc_slots_full},
      {"evictions", "Routing-table entries dropped after a failed probe.", o.evictions},
      {"announces_stored", "Provider announcements stored.", o.announces_stored},
      {"announces_refused", "Provider announcements refused by store limits.",
       o.announces_refused},
      {"tokens_rejected", "Announcements with a forged or stale token.", o.tokens_rejected},
      {"routes_forwarded", "Routed messages forwarded.", o.routes_forwarded},
      {"routes_answered", "Routed messages answered as target or closest node.",
       o.routes_answered},
      {"gossip_delivered", "New gossip messages delivered.", o.gossip_delivered},
      {"gossip_duplicate", "Gossip messages seen before.", o.gossip_duplicate},
  };
}

// FillLookupAndRoomMetrics: lookups and rooms, added up over the shards' counters
// (relaxed loads; each shard writes its own). Lookups run on the owner shard only.
void FillLookupAndRoomMetrics(const std::vector<std::unique_ptr<Shard>>& shards,
                              admin::NodeMetrics* m) {
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  admin::LookupMetrics& l = m->lookups.emplace();
  admin::RoomMetrics& r = m->rooms.emplace();
  uint64_t buckets[core::kLookupDurationBuckets] = {};
  uint64_t sum_us = 0;
  for (const std::unique_ptr<Shard>& shard : shards) {
    const Counters& sc = shard->counters();
    // Outcomes before starts (a lookup is counted started before it is counted done), so
    // that one finishing meanwhile does not read as more done than started.
    l.succeeded += get(sc.lookups_succeeded);
    l.failed += get(sc.lookups_failed);
    l.started += get(sc.lookups_started);
    for (size_t b = 0; b < core::kLookupDurationBuckets; ++b) {
      buckets[b] += get(sc.lookup_duration_buckets[b]);
    }
    sum_us += get(sc.lookup_duration_sum_us);
    r.rooms += get(sc.rooms);
    for (size_t k = 0; k < 4; ++k) r.by_reducer[k] += get(sc.rooms_by_reducer[k]);
    r.updates_accepted += get(sc.room_updates_accepted);
    r.updates_rejected += get(sc.room_updates_rejected);
  }
  const std::pair<const char*, std::atomic<uint64_t> Counters::*> outcomes[] = {
      {"opened", &Counters::rooms_opened},
      {"reloaded", &Counters::rooms_reloaded},
      {"refused_policy", &Counters::rooms_refused_policy},
      {"refused_unproved", &Counters::rooms_refused_unproved},
      {"refused_rate", &Counters::rooms_refused_rate},
      {"refused_full", &Counters::rooms_refused_full},
      {"dropped_unwritten", &Counters::rooms_dropped_unwritten},
      {"unloaded_idle", &Counters::rooms_unloaded_idle},
  };
  for (const auto& [name, field] : outcomes) {
    uint64_t n = 0;
    for (const std::unique_ptr<Shard>& shard : shards) n += get(shard->counters().*field);
    r.admission.emplace_back(name, n);
  }
  admin::ReflectionMetrics& x = m->reflection.emplace();
  for (const std::unique_ptr<Shard>& shard : shards) {
    const Counters& sc = shard->counters();
    x.refused += get(sc.reflection_refused);
    x.refused_bytes += get(sc.reflection_refused_bytes);
    x.probes += get(sc.reflection_probes);
    x.proved += get(sc.reflection_proved);
  }
  // Cumulative counts, as Prometheus wants them; the count is the last bucket's (+Inf).
  admin::Histogram& h = l.duration;
  uint64_t cumulative = 0;
  for (size_t b = 0; b < std::size(core::kLookupDurationBoundsUs); ++b) {
    cumulative += buckets[b];
    h.upper_bounds_s.push_back(static_cast<double>(core::kLookupDurationBoundsUs[b]) / 1e6);
    h.bucket_counts.push_back(cumulative);
  }
  h.count = cumulative + buckets[core::kLookupDurationBuckets - 1];
  h.sum_s = static_cast<double>(sum_us) / 1e6;
}

}  // namespace

admin::NodeMetrics Node::Metrics(std::vector<dht::PeerStatus>* peers) {
  std::unique_ptr<ControlCommand> snap = Collect();
  admin::NodeMetrics m;
  m.node_id = wire::Hex(id_);
  m.transport = transport_name();
  m.mailbox_capacity = config_.mailbox_capacity;
  m.peers_max = config_.peers_max;
  m.snapshot_ok = snap->done.load(std::memory_order_acquire);
  m.peers_known = snap->peers.size();
  for (const dht::PeerStatus& p : snap->peers) {
    m.peers_verified += p.verified;
    m.peers_live += p.live;
  }
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  m.shards.resize(shards_.size());
  for (uint32_t i = 0; i < shards_.size(); ++i) {
    const Counters& sc = shards_[i]->counters();
    admin::ShardMetrics& out = m.shards[i];
    out.received = get(sc.received);
    out.sent = get(sc.sent);
    out.pings_answered = get(sc.pings_answered);
    out.find_node_answered = get(sc.find_node_answered);
    out.get_providers_answered = get(sc.get_providers_answered);
    out.overlay_forwarded = get(sc.overlay_forwarded);
    out.overlay_forwarded_reads = get(sc.overlay_forwarded_reads);
    out.loop_iterations = get(sc.loop_iterations);
    out.mailbox_in = get(sc.mailbox_in);
    out.mailbox_out = get(sc.mailbox_out);
    out.send_errors = get(sc.send_errors);
    out.recv_no_buffers = get(sc.recv_no_buffers);
    out.recv_coalesced = get(sc.recv_coalesced);
    out.recv_coalesced_dropped = get(sc.recv_coalesced_dropped);
    out.storage_commit_failures = get(sc.storage_errors);
    out.storage_recoveries = get(sc.storage_recoveries);
    out.storage_failing = get(sc.storage_failing);
    out.storage_commits = get(sc.storage_commits);
    out.storage_commit_us = get(sc.storage_commit_us);
    if (out.storage_failing != 0 && m.storage_error.empty()) {
      m.storage_error = shards_[i]->StorageError();
    }
    for (int v = 0; v < wire::kVerdictCount; ++v) out.dropped[v] = get(sc.dropped[v]);
    for (uint32_t from = 0; from < shards_.size(); ++from) {
      if (from != i) out.mailbox_depth += mailboxes_->Ring(from, i).Depth();
    }
  }
  FillLookupAndRoomMetrics(shards_, &m);
  if (m.snapshot_ok) FillOverlayMetrics(*snap, &m);
  if (peers != nullptr) *peers = std::move(snap->peers);
  return m;
}

std::string Node::StatusText() {
  std::unique_ptr<ControlCommand> snap = Collect();
  const ControlCommand& c = *snap;
  const int64_t now = c.done ? c.now_us : MonotonicUs();
  std::string out;
  absl::StrAppend(&out, "node id     ", wire::Hex(id_), "\n");
  absl::StrAppend(&out, "transport   ", transport_name(), ", ", config_.shards, " shard(s)\n");
  for (const base::Endpoint& e : addresses_) absl::StrAppend(&out, "listening   ", e.ToString(), "\n");
  if (c.observed.valid()) {
    absl::StrAppend(&out, "seen as     ", c.observed.ToString(), "\n");
  }
  size_t live = 0;
  for (const dht::PeerStatus& p : c.peers) live += p.live;
  absl::StrAppend(&out, "routing     ", c.table_size, " node(s) in the table\n");
  for (const auto& [name, e] : {std::pair{"size (density)", &c.size_density},
                                std::pair{"size (walks)", &c.size_walks}}) {
    if (e->has_value()) {
      absl::StrAppendFormat(&out, "%-15s ~%.0f nodes (95%%: %.0f..%.0f)\n", name,
                            (*e)->estimate, (*e)->low, (*e)->high);
    }
  }
  absl::StrAppend(&out, "\npeers       ", c.peers.size(), " known, ", live, " live\n");
  for (const dht::PeerStatus& p : c.peers) {
    absl::StrAppendFormat(&out, "  %s  %-24s %-10s %s%s\n", wire::Hex(p.id).substr(0, 16),
                          p.addr.ToString(), p.verified ? "verified" : "unverified",
                          p.live ? "live" : "silent",
                          p.bootstrap ? " (bootstrap)" : "");
    (void)now;
  }
  if (!room_stores_.empty()) {
    uint64_t failures = 0, commits = 0, commit_us = 0;
    std::string error;
    for (const std::unique_ptr<Shard>& sh : shards_) {
      const Counters& sc = sh->counters();
      failures += sc.storage_errors.load(std::memory_order_relaxed);
      commits += sc.storage_commits.load(std::memory_order_relaxed);
      commit_us += sc.storage_commit_us.load(std::memory_order_relaxed);
      if (error.empty() && sc.storage_failing.load(std::memory_order_relaxed) != 0) {
        error = sh->StorageError();
      }
    }
    if (error.empty()) {
      const double mean_ms =
          commits == 0 ? 0.0 : static_cast<double>(commit_us) / 1e3 / static_cast<double>(commits);
      absl::StrAppendFormat(&out,
                            "storage     ok (%d commits, %.2f ms each on average; %d failed "
                            "since start)\n",
                            commits, mean_ms, failures);
    } else {
      absl::StrAppend(&out, "storage     FAILING, nothing is acknowledged: ", error, " (",
                      failures, " failed commit(s))\n");
    }
  }
  absl::StrAppend(&out, "\nshard  received        sent   mailbox in/out  dropped\n");
  for (uint32_t i = 0; i < shards_.size(); ++i) {
    const Counters& sc = shards_[i]->counters();
    auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    std::string reasons;
    for (int v = 1; v < wire::kVerdictCount; ++v) {
      const uint64_t d = get(sc.dropped[v]);
      if (d != 0) {
        absl::StrAppend(&reasons, reasons.empty() ? "" : ", ",
                        wire::VerdictName(static_cast<wire::Verdict>(v)), "=", d);
      }
    }
    absl::StrAppendFormat(&out, "%5u %9u %11u %9u/%-7u %s\n", i, get(sc.received),
                          get(sc.sent), get(sc.mailbox_in), get(sc.mailbox_out),
                          reasons.empty() ? "none" : reasons);
  }
  return out;
}

}  // namespace ringpeer::shard
