// Node: the running process — N shards on N pinned threads sharing one port.
//
// Create() binds every socket on the calling thread (so "address in use" is reported
// before anything starts). Start() spawns one thread per shard; each creates its own
// transport on its own thread (io_uring's SINGLE_ISSUER and DEFER_TASKRUN tie a ring to
// the thread that created it), reports back, and waits until every shard's wake handle
// is known before running. Stop() raises the stop flag and joins.
//
// Thread-safety: Create/Start/Stop/Status from one control thread. Shards run on theirs.
#pragma once

#include <atomic>
#include <chrono>
#include <string_view>
#include <utility>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "base/endpoint.h"
#include "node/admin/metrics.h"
#include "node/shard/shard.h"
#include "ring/transport.h"
#include "wire/crypto.h"

namespace ringpeer::shard {

struct NodeConfig {
  std::vector<base::Endpoint> listen;
  uint32_t shards = 1;
  ring::TransportKind transport = ring::TransportKind::kAuto;
  ring::TransportConfig transport_config;
  bool steer = true;
  std::vector<base::Endpoint> bootstrap;
  uint32_t rate_limit_per_s = 5000;
  uint32_t rate_limit_burst = 10000;
  // Mailbox slots per ordered pair of shards: 1024 x ~1.2 KiB = 1.3 MiB per pair.
  uint32_t mailbox_capacity = 1024;
  uint32_t peers_max = 1024;
  // A port still held by a node that is stopping (its sockets close as its process
  // exits) is retried for this long before "address already in use" is an error.
  int64_t bind_retry_ms = 5000;
  // Routing-table entries per /24 (IPv4) or /48 (IPv6): per bucket and in the whole table.
  // Non-public addresses (RFC 1918, ULA, link-local, CGNAT, loopback) are exempt unless
  // subnet_limit_private (see dht/routing_table.h).
  uint32_t subnet_per_bucket_max = 2;
  uint32_t subnet_per_table_max = 10;
  bool subnet_limit_private = false;
  // Where the routing table is saved (on stop and every kTableSaveIntervalMs) and
  // restored from at start, so a restarted node rejoins without its bootstrap peers.
  // Empty: not persisted.
  std::string table_path;
  // Where the shards keep room logs (DATA_DIR/shard-N, LMDB). Set: this node is a relay,
  // it stores the rooms its members bring and acknowledges updates once durable. Empty:
  // rooms are only relayed live (an embedded client keeps its own cache).
  std::string room_store_dir;
  uint64_t room_store_bytes_max = 0;  // 0: the store's default map size
  // False: the room store is a member's cache (node/client), not a relay's: no acks, and
  // rooms are reopened from it when joined again rather than all at start.
  bool room_relay = true;
  // A DHT client (node/client): other nodes never take it into their routing tables.
  bool dht_client = false;
  // Every room's swarm limits (publish rates, keepalive); the defaults suit a public relay.
  room::SwarmConfig room_swarm;
  // Rooms each shard serves at once, and which ones a relay takes (issue 11, item 4).
  uint32_t rooms_max = 256;
  room::AdmissionConfig room_admission;
  // Told about room events on the shard threads (node/client's event ring); may be null.
  // Outlives the Node.
  room::SwarmListener* room_listener = nullptr;
};

inline constexpr int64_t kTableSaveIntervalMs = 60'000;

// AvailableCpus: the CPUs this process may run on (its affinity mask), in order.
std::vector<int> AvailableCpus();

class Node {
 public:
  static absl::StatusOr<std::unique_ptr<Node>> Create(const NodeConfig& config,
                                                      const wire::KeyPair& identity);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Start: spawns and pins the shard threads. An error (e.g. io_uring required but
  // unavailable) stops every thread already started before returning.
  absl::Status Start();
  // Stop: raises the stop flag, wakes no one (each shard ticks within kTickUs), joins,
  // then saves the routing table.
  void Stop();

  // HandleControl: answers a control-socket request other than status:
  //   "lookup json|text HEX", "providers json|text HEX", "announce json|text HEX".
  // Control path; blocks for the length of a lookup (bounded by kCommandDeadlineUs).
  std::string HandleControl(std::string_view request);
  // PeriodicSave: saves the routing table when kTableSaveIntervalMs has passed since the
  // last save. Call from the control thread's periodic tick.
  void PeriodicSave();
  // TakeWarnings: what an operator should see since the last call (e.g. a corrupt table
  // file set aside at Create, a table that could not be saved at Stop).
  std::vector<std::string> TakeWarnings() { return std::exchange(warnings_, {}); }

  // StatusJson: node id, addresses, transport, peers and per-shard counters as one JSON
  // object; StatusText: the same for people. Control path; waits up to ~1 s for the owner.
  std::string StatusJson();
  std::string StatusText();

  // Metrics: per-shard counters (relaxed loads), mailbox depths and the owner shard's peer
  // snapshot, for /metrics; with `peers`, also that snapshot's peer list. Control path;
  // waits up to ~1 s for the owner, like StatusJson. Callers serialize it with
  // StatusJson/StatusText (one snapshot request at a time). New figures (routing table,
  // lookups, rooms, size estimate) are filled in here.
  admin::NodeMetrics Metrics(std::vector<dht::PeerStatus>* peers = nullptr);

  // Run: posts a command to the owner shard and waits up to `timeout_ms` for its answer
  // (control path). On failure the command's `error` says why.
  std::unique_ptr<ControlCommand> Run(ControlCommand::Kind kind, const wire::NodeId& target,
                                      int timeout_ms);
  // Submit: the same for a command the caller filled in (room requests carry more than a
  // target). Returns it answered, or with `error` set.
  std::unique_ptr<ControlCommand> Submit(std::unique_ptr<ControlCommand> cmd, int timeout_ms);

  const wire::NodeId& id() const { return id_; }
  const std::vector<base::Endpoint>& addresses() const { return addresses_; }
  // Why io_uring was not used (empty when it was, or when recvmmsg was asked for).
  const std::string& fallback_reason() const { return fallback_reason_; }
  const char* transport_name() const;
  uint32_t shards() const { return config_.shards; }

 private:
  Node(const NodeConfig& config, const wire::KeyPair& identity);
  // Collect: the owner shard's snapshot of its peers (empty if it did not answer in time).
  std::unique_ptr<ControlCommand> Collect();

  NodeConfig config_;
  const wire::KeyPair identity_;
  const wire::NodeId id_;
  std::vector<ring::ShardSockets> sockets_;
  std::vector<base::Endpoint> addresses_;
  std::unique_ptr<Mailboxes> mailboxes_;
  std::vector<std::unique_ptr<room::RoomStorage>> room_stores_;  // one per shard, or none
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::string fallback_reason_;
  void LoadTable();
  bool stopped_ = false;
  std::vector<std::string> warnings_;
  std::vector<dht::SavedContact> restore_;
  std::chrono::steady_clock::time_point last_save_ = std::chrono::steady_clock::now();
};

}  // namespace ringpeer::shard
