// NodeMetrics: a plain copy of what the node exposes on /metrics, and its rendering in the
// Prometheus text exposition format (version 0.0.4).
//
// The node fills a NodeMetrics on the control path (shard::Node::Metrics(): per-shard
// counters are relaxed atomic loads, the peer and overlay figures come from the owner
// shard's snapshot), then RenderPrometheus() turns it into text. Keeping the data plain
// keeps the renderer testable without a running node.
//
// Figures whose source does not exist yet (rooms, lookups, size estimate, routing table
// while the DHT is not wired into the shard) are std::optional: an absent family is not
// rendered at all, rather than reported as a zero that nobody measured.
//
// Not thread-safe; a NodeMetrics is built and rendered by one thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "wire/verdict.h"

namespace ringpeer::admin {

struct ShardMetrics {
  uint64_t received = 0;
  uint64_t sent = 0;
  uint64_t pings_answered = 0;
  // DHT reads answered on this shard, and overlay datagrams it forwarded to the owner
  // (all, and the reads among them: only before the owner's first snapshot).
  uint64_t find_node_answered = 0;
  uint64_t get_providers_answered = 0;
  uint64_t overlay_forwarded = 0;
  uint64_t overlay_forwarded_reads = 0;
  uint64_t loop_iterations = 0;
  uint64_t mailbox_in = 0;
  uint64_t mailbox_out = 0;
  uint64_t mailbox_depth = 0;  // items waiting in this shard's incoming mailboxes
  uint64_t send_errors = 0;
  uint64_t recv_no_buffers = 0;
  uint64_t recv_coalesced = 0;          // receives that carried a burst (UDP GRO)
  uint64_t recv_coalesced_dropped = 0;  // datagrams of those a Poll could not take
  // Room storage: failed commits (nothing they carried was acknowledged), commits that
  // worked after failing ones, and 1 while the last commit failed (0 without a store).
  uint64_t storage_commit_failures = 0;
  uint64_t storage_recoveries = 0;
  uint64_t storage_failing = 0;
  uint64_t storage_commits = 0;    // batches made durable
  uint64_t storage_commit_us = 0;  // the time they took (transaction and sync)
  std::array<uint64_t, wire::kVerdictCount> dropped{};  // indexed by wire::Verdict
};

// Histogram: cumulative counts per upper bound, as Prometheus wants them.
// REQUIRES: bucket_counts.size() == upper_bounds_s.size(); bounds ascending; counts
// non-decreasing and <= count.
struct Histogram {
  std::vector<double> upper_bounds_s;
  std::vector<uint64_t> bucket_counts;
  uint64_t count = 0;
  double sum_s = 0;
};

struct LookupMetrics {
  uint64_t started = 0;
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  Histogram duration;
};

struct RoutingMetrics {
  uint64_t entries = 0;   // contacts in the k-buckets
  uint64_t capacity = 0;  // buckets x k
  uint64_t buckets = 0;
};

struct SizeEstimateMetrics {
  double nodes = 0;
  double low = 0;   // confidence interval
  double high = 0;
};

// CounterMetric: one overlay counter, rendered as ringpeer_overlay_<name>_total. A list
// rather than fields, so a new overlay counter is one line in Node::Metrics().
struct CounterMetric {
  const char* name;  // [a-z_]+, e.g. "requests_sent"
  const char* help;
  uint64_t value = 0;
};

struct RoomMetrics {
  uint64_t rooms = 0;
  uint64_t updates_accepted = 0;
  uint64_t updates_rejected = 0;
  // Room admission (room::AdmissionCounters, added over the shards), by outcome.
  std::vector<std::pair<const char*, uint64_t>> admission;
  // Rooms served by reducer kind: [1] chat, [2] kv, [3] app (kOpaque; a relay carries it
  // unread); [0] unused.
  uint64_t by_reducer[4] = {};
};

// ReflectionMetrics: the shards' ReflectionGuards, added up.
struct ReflectionMetrics {
  uint64_t refused = 0;
  uint64_t refused_bytes = 0;
  uint64_t probes = 0;
  uint64_t proved = 0;
};

struct NodeMetrics {
  std::string node_id;     // hex
  std::string transport;   // "io_uring", "recvmmsg"
  double uptime_s = 0;
  std::vector<ShardMetrics> shards;
  uint64_t mailbox_capacity = 0;  // slots per ordered pair of shards
  // Overlay peers, as the owner shard last reported them. snapshot_ok is false when the
  // owner did not answer in time; the peer figures are then zero and say nothing.
  bool snapshot_ok = false;
  uint64_t peers_known = 0;
  uint64_t peers_verified = 0;
  uint64_t peers_live = 0;
  uint64_t peers_max = 0;
  std::optional<uint64_t> storage_bytes;  // bytes under the data directory
  // Why the room store cannot write (path and error), while a shard's commits fail; empty
  // when every store is writable. Not rendered (it is text); /readyz and the logs say it.
  std::string storage_error;
  std::optional<RoutingMetrics> routing;  // capacity and buckets rendered when non-zero
  std::vector<CounterMetric> overlay;      // the owner shard's overlay counters
  std::optional<LookupMetrics> lookups;
  std::optional<SizeEstimateMetrics> size_estimate;        // density of the k closest
  std::optional<SizeEstimateMetrics> size_estimate_walks;  // collisions of random walks
  std::optional<RoomMetrics> rooms;
  std::optional<ReflectionMetrics> reflection;
};

// RenderPrometheus: the text format, one HELP and TYPE line per family.
std::string RenderPrometheus(const NodeMetrics& m);

// BuildInfo: what `ringpeer --version` says (project version, wire protocol version, git
// commit or "unknown").
struct BuildInfo {
  std::string version;
  uint32_t protocol = 0;
  std::string commit;
};

// RenderBuildInfo: the `ringpeer_build_info` gauge (always 1; the build in its labels),
// with its HELP and TYPE lines, to append to RenderPrometheus's text.
std::string RenderBuildInfo(const BuildInfo& b);

// DirectoryBytes: total size of the regular files under `path` (not following links),
// bounded to `entries_max` entries so a huge tree cannot stall the admin thread.
uint64_t DirectoryBytes(const std::string& path, uint64_t entries_max = 100'000);

}  // namespace ringpeer::admin
