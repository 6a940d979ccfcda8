#include "node/admin/metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/assert.h"

namespace ringpeer::admin {
namespace {

// Prometheus floats: shortest round-trip form ("0.05", not "0.050000000000000003": bucket
// bounds are label values that people read and write in queries); +Inf for the last bucket.
std::string Float(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[40];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), v);
  RP_ASSERT(r.ec == std::errc());
  return std::string(buf, r.ptr);
}

// Label values come from our own code (shard numbers, verdict names, hex ids); escape
// them anyway, as the format requires, so a future caller cannot break the output.
std::string Escape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

class Writer {
 public:
  // Family: HELP and TYPE lines; every sample of a family must follow it directly.
  void Family(absl::string_view name, absl::string_view type, absl::string_view help) {
    absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  void Sample(absl::string_view name, absl::string_view labels, uint64_t v) {
    Line(name, labels, std::to_string(v));
  }
  void SampleF(absl::string_view name, absl::string_view labels, double v) {
    Line(name, labels, Float(v));
  }
  std::string Take() { return std::move(out_); }

 private:
  void Line(absl::string_view name, absl::string_view labels, const std::string& value) {
    absl::StrAppend(&out_, name);
    if (!labels.empty()) absl::StrAppend(&out_, "{", labels, "}");
    absl::StrAppend(&out_, " ", value, "\n");
  }
  std::string out_;
};

std::string ShardLabel(size_t i) { return absl::StrCat("shard=\"", i, "\""); }

// PerShard: one counter family with a sample per shard.
void PerShard(Writer& w, const NodeMetrics& m, absl::string_view name, absl::string_view type,
              absl::string_view help, uint64_t ShardMetrics::*field) {
  w.Family(name, type, help);
  for (size_t i = 0; i < m.shards.size(); ++i) w.Sample(name, ShardLabel(i), m.shards[i].*field);
}

void RenderShards(Writer& w, const NodeMetrics& m) {
  PerShard(w, m, "ringpeer_datagrams_received_total", "counter",
           "Datagrams received by the shard's transport.", &ShardMetrics::received);
  PerShard(w, m, "ringpeer_datagrams_sent_total", "counter",
           "Datagrams the shard handed to its transport.", &ShardMetrics::sent);
  w.Family("ringpeer_datagrams_dropped_total", "counter",
           "Datagrams dropped, by shard and reason (the check that rejected them).");
  for (size_t i = 0; i < m.shards.size(); ++i) {
    for (int v = 1; v < wire::kVerdictCount; ++v) {
      w.Sample("ringpeer_datagrams_dropped_total",
               absl::StrCat(ShardLabel(i), ",reason=\"",
                            Escape(wire::VerdictName(static_cast<wire::Verdict>(v))), "\""),
               m.shards[i].dropped[v]);
    }
  }
  PerShard(w, m, "ringpeer_pings_answered_total", "counter", "Pings answered with a pong.",
           &ShardMetrics::pings_answered);
  PerShard(w, m, "ringpeer_find_node_answered_total", "counter",
           "FindNode requests answered by the shard (the owner from its table, the others from "
           "its snapshot).",
           &ShardMetrics::find_node_answered);
  PerShard(w, m, "ringpeer_get_providers_answered_total", "counter",
           "GetProviders requests answered by the shard.", &ShardMetrics::get_providers_answered);
  PerShard(w, m, "ringpeer_overlay_forwarded_total", "counter",
           "Overlay datagrams the shard forwarded to the shard that owns the overlay.",
           &ShardMetrics::overlay_forwarded);
  PerShard(w, m, "ringpeer_overlay_forwarded_reads_total", "counter",
           "Of those, DHT reads (only before the owner's first snapshot reached the shard).",
           &ShardMetrics::overlay_forwarded_reads);
  PerShard(w, m, "ringpeer_loop_iterations_total", "counter",
           "Passes of the shard's event loop.", &ShardMetrics::loop_iterations);
  PerShard(w, m, "ringpeer_mailbox_received_total", "counter",
           "Items taken from other shards' mailboxes.", &ShardMetrics::mailbox_in);
  PerShard(w, m, "ringpeer_mailbox_sent_total", "counter",
           "Items pushed into other shards' mailboxes.", &ShardMetrics::mailbox_out);
  w.Family("ringpeer_mailbox_dropped_total", "counter",
           "Items not handed to another shard because its mailbox was full.");
  for (size_t i = 0; i < m.shards.size(); ++i) {
    w.Sample("ringpeer_mailbox_dropped_total", ShardLabel(i),
             m.shards[i].dropped[static_cast<int>(wire::Verdict::kMailboxFull)]);
  }
  PerShard(w, m, "ringpeer_mailbox_depth", "gauge",
           "Items waiting in the shard's incoming mailboxes (approximate).",
           &ShardMetrics::mailbox_depth);
  w.Family("ringpeer_mailbox_capacity", "gauge", "Slots per mailbox (one per pair of shards).");
  w.Sample("ringpeer_mailbox_capacity", "", m.mailbox_capacity);
  PerShard(w, m, "ringpeer_send_errors_total", "counter",
           "Sends the kernel refused (other than a full queue).", &ShardMetrics::send_errors);
  PerShard(w, m, "ringpeer_recv_no_buffers_total", "counter",
           "Receives lost because no provided buffer was free.",
           &ShardMetrics::recv_no_buffers);
  PerShard(w, m, "ringpeer_recv_coalesced_total", "counter",
           "Receives that carried a burst of datagrams (UDP GRO, --recv-gro).",
           &ShardMetrics::recv_coalesced);
  PerShard(w, m, "ringpeer_recv_coalesced_dropped_total", "counter",
           "Datagrams of such bursts dropped: more than one poll's batch could take.",
           &ShardMetrics::recv_coalesced_dropped);
  PerShard(w, m, "ringpeer_storage_commit_failures_total", "counter",
           "Room store commits that failed (full disk or map, I/O error); nothing they "
           "carried was acknowledged.",
           &ShardMetrics::storage_commit_failures);
  PerShard(w, m, "ringpeer_storage_recoveries_total", "counter",
           "Room store commits that worked again after failing ones.",
           &ShardMetrics::storage_recoveries);
  PerShard(w, m, "ringpeer_storage_commits_total", "counter",
           "Room store batches made durable (one LMDB transaction and its sync each).",
           &ShardMetrics::storage_commits);
  w.Family("ringpeer_storage_commit_seconds_total", "counter",
           "Time the room store's durable batches took (on its writer thread); divided by "
           "ringpeer_storage_commits_total, the mean commit latency.");
  for (size_t i = 0; i < m.shards.size(); ++i) {
    w.SampleF("ringpeer_storage_commit_seconds_total", ShardLabel(i),
              static_cast<double>(m.shards[i].storage_commit_us) / 1e6);
  }
  PerShard(w, m, "ringpeer_storage_failing", "gauge",
           "1 while the shard's room store cannot commit (updates are not acknowledged).",
           &ShardMetrics::storage_failing);
}

void RenderOptional(Writer& w, const NodeMetrics& m) {
  if (m.reflection) {
    w.Family("ringpeer_reflection_refused_total", "counter",
             "Datagrams not sent: the address has not proved it receives and they would "
             "pass 3x what it sent us.");
    w.Sample("ringpeer_reflection_refused_total", "", m.reflection->refused);
    w.Family("ringpeer_reflection_refused_bytes_total", "counter",
             "Bytes of the datagrams counted in ringpeer_reflection_refused_total.");
    w.Sample("ringpeer_reflection_refused_bytes_total", "", m.reflection->refused_bytes);
    w.Family("ringpeer_reflection_probes_total", "counter",
             "Return-routability probes (pings with a fresh txid) sent.");
    w.Sample("ringpeer_reflection_probes_total", "", m.reflection->probes);
    w.Family("ringpeer_reflection_proved_total", "counter",
             "Addresses that proved they receive (echoed a probe, or answered the overlay).");
    w.Sample("ringpeer_reflection_proved_total", "", m.reflection->proved);
  }
  if (m.storage_bytes) {
    w.Family("ringpeer_storage_bytes", "gauge", "Bytes of files under the data directory.");
    w.Sample("ringpeer_storage_bytes", "", *m.storage_bytes);
  }
  if (m.routing) {
    w.Family("ringpeer_routing_table_entries", "gauge", "Contacts in the k-buckets.");
    w.Sample("ringpeer_routing_table_entries", "", m.routing->entries);
    if (m.routing->capacity != 0) {
      w.Family("ringpeer_routing_table_capacity", "gauge",
               "Contacts the current buckets can hold.");
      w.Sample("ringpeer_routing_table_capacity", "", m.routing->capacity);
    }
    if (m.routing->buckets != 0) {
      w.Family("ringpeer_routing_table_buckets", "gauge", "K-buckets in the routing table.");
      w.Sample("ringpeer_routing_table_buckets", "", m.routing->buckets);
    }
  }
  for (const CounterMetric& c : m.overlay) {
    const std::string name = absl::StrCat("ringpeer_overlay_", c.name, "_total");
    w.Family(name, "counter", c.help);
    w.Sample(name, "", c.value);
  }
  if (m.lookups) {
    const LookupMetrics& l = *m.lookups;
    w.Family("ringpeer_lookups_total", "counter", "Iterative lookups, by outcome.");
    w.Sample("ringpeer_lookups_total", "result=\"started\"", l.started);
    w.Sample("ringpeer_lookups_total", "result=\"succeeded\"", l.succeeded);
    w.Sample("ringpeer_lookups_total", "result=\"failed\"", l.failed);
    const Histogram& h = l.duration;
    RP_ASSERT(h.upper_bounds_s.size() == h.bucket_counts.size());
    w.Family("ringpeer_lookup_duration_seconds", "histogram", "Time a finished lookup took.");
    for (size_t i = 0; i < h.upper_bounds_s.size(); ++i) {
      RP_ASSERT(h.bucket_counts[i] <= h.count);
      w.Sample("ringpeer_lookup_duration_seconds_bucket",
               absl::StrCat("le=\"", Float(h.upper_bounds_s[i]), "\""), h.bucket_counts[i]);
    }
    w.Sample("ringpeer_lookup_duration_seconds_bucket", "le=\"+Inf\"", h.count);
    w.SampleF("ringpeer_lookup_duration_seconds_sum", "", h.sum_s);
    w.Sample("ringpeer_lookup_duration_seconds_count", "", h.count);
  }
  if (m.size_estimate || m.size_estimate_walks) {
    w.Family("ringpeer_network_size_estimate", "gauge",
             "Estimated number of nodes in the network, by method, with its 95% interval.");
    for (const auto& [method, e] : {std::pair{"density", &m.size_estimate},
                                    std::pair{"walks", &m.size_estimate_walks}}) {
      if (!e->has_value()) continue;
      const std::string l = absl::StrCat("method=\"", method, "\",bound=");
      w.SampleF("ringpeer_network_size_estimate", absl::StrCat(l, "\"estimate\""), (*e)->nodes);
      w.SampleF("ringpeer_network_size_estimate", absl::StrCat(l, "\"low\""), (*e)->low);
      w.SampleF("ringpeer_network_size_estimate", absl::StrCat(l, "\"high\""), (*e)->high);
    }
  }
  if (m.rooms) {
    w.Family("ringpeer_rooms", "gauge", "Rooms this node serves.");
    w.Sample("ringpeer_rooms", "", m.rooms->rooms);
    w.Family("ringpeer_rooms_by_reducer", "gauge",
             "Rooms this node serves, by reducer kind (app: an application's own, carried "
             "unread by a relay).");
    w.Sample("ringpeer_rooms_by_reducer", "reducer=\"chat\"", m.rooms->by_reducer[1]);
    w.Sample("ringpeer_rooms_by_reducer", "reducer=\"kv\"", m.rooms->by_reducer[2]);
    w.Sample("ringpeer_rooms_by_reducer", "reducer=\"app\"", m.rooms->by_reducer[3]);
    w.Family("ringpeer_room_updates_total", "counter", "Room updates, by outcome.");
    w.Sample("ringpeer_room_updates_total", "result=\"accepted\"", m.rooms->updates_accepted);
    w.Sample("ringpeer_room_updates_total", "result=\"rejected\"", m.rooms->updates_rejected);
    if (!m.rooms->admission.empty()) {
      w.Family("ringpeer_room_admission_total", "counter",
               "Rooms a RoomJoin asked this relay to serve, by outcome (opened, reloaded, "
               "refused_*, dropped_unwritten, unloaded_idle).");
      for (const auto& [outcome, n] : m.rooms->admission) {
        w.Sample("ringpeer_room_admission_total",
                 absl::StrCat("outcome=\"", Escape(outcome), "\""), n);
      }
    }
  }
}

}  // namespace

std::string RenderPrometheus(const NodeMetrics& m) {
  Writer w;
  w.Family("ringpeer_info", "gauge", "Always 1; the labels describe the node.");
  w.Sample("ringpeer_info",
           absl::StrCat("node_id=\"", Escape(m.node_id), "\",transport=\"", Escape(m.transport),
                        "\""),
           1);
  w.Family("ringpeer_uptime_seconds", "gauge", "Seconds since the node started.");
  w.SampleF("ringpeer_uptime_seconds", "", m.uptime_s);
  w.Family("ringpeer_shards", "gauge", "Event-loop shards.");
  w.Sample("ringpeer_shards", "", m.shards.size());
  RenderShards(w, m);
  w.Family("ringpeer_overlay_snapshot_ok", "gauge",
           "1 when the owner shard answered this scrape's peer snapshot in time.");
  w.Sample("ringpeer_overlay_snapshot_ok", "", m.snapshot_ok ? 1 : 0);
  w.Family("ringpeer_peers", "gauge",
           "Overlay peers: known (any state), verified (proved their id), live (verified and "
           "heard from recently).");
  w.Sample("ringpeer_peers", "state=\"known\"", m.peers_known);
  w.Sample("ringpeer_peers", "state=\"verified\"", m.peers_verified);
  w.Sample("ringpeer_peers", "state=\"live\"", m.peers_live);
  w.Family("ringpeer_peers_max", "gauge", "Size of the peer table.");
  w.Sample("ringpeer_peers_max", "", m.peers_max);
  RenderOptional(w, m);
  return w.Take();
}

std::string RenderBuildInfo(const BuildInfo& b) {
  Writer w;
  w.Family("ringpeer_build_info", "gauge",
           "The build of this node, in the labels: version, wire protocol, git commit.");
  w.Sample("ringpeer_build_info",
           absl::StrCat("version=\"", Escape(b.version), "\",protocol=\"", b.protocol,
                        "\",commit=\"", Escape(b.commit), "\""),
           1);
  return w.Take();
}

uint64_t DirectoryBytes(const std::string& path, uint64_t entries_max) {
  uint64_t total = 0, seen = 0;
  // Iterative walk with an explicit stack: no recursion, bounded by entries_max.
  std::vector<std::string> stack{path};
  while (!stack.empty() && seen < entries_max) {
    const std::string dir = std::move(stack.back());
    stack.pop_back();
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) continue;
    while (dirent* e = readdir(d)) {
      if (++seen > entries_max) break;
      const absl::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      struct stat st;
      if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISREG(st.st_mode)) {
        total += static_cast<uint64_t>(st.st_size);
      } else if (S_ISDIR(st.st_mode)) {
        stack.push_back(dir + "/" + e->d_name);
      }
    }
    closedir(d);
  }
  return total;
}

}  // namespace ringpeer::admin
