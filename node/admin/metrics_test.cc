// Goal: RenderPrometheus writes what the text format requires (HELP/TYPE before samples,
// one sample per shard and reason, +Inf bucket equal to the count), and leaves out the
// families whose source is absent rather than reporting unmeasured zeros. Method: render
// hand-built NodeMetrics and inspect the lines. The real parser check lives in
// tests/integration/admin_http.py (python3-prometheus-client against a running node).
#include "node/admin/metrics.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace ringpeer::admin {
namespace {

NodeMetrics TwoShards() {
  NodeMetrics m;
  m.node_id = "ab\"cd";  // needs escaping
  m.transport = "io_uring";
  m.shards.resize(2);
  m.shards[0].received = 7;
  m.shards[1].sent = 9;
  m.shards[1].dropped[static_cast<int>(wire::Verdict::kRateLimited)] = 3;
  m.shards[1].dropped[static_cast<int>(wire::Verdict::kMailboxFull)] = 4;
  m.peers_live = 2;
  return m;
}

bool Has(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

TEST(Metrics, PerShardSamplesAndReasons) {
  const std::string t = RenderPrometheus(TwoShards());
  EXPECT_TRUE(Has(t, "ringpeer_datagrams_received_total{shard=\"0\"} 7"));
  EXPECT_TRUE(Has(t, "ringpeer_datagrams_sent_total{shard=\"1\"} 9"));
  EXPECT_TRUE(Has(t, "ringpeer_datagrams_dropped_total{shard=\"1\",reason=\"rate_limited\"} 3"));
  EXPECT_TRUE(Has(t, "ringpeer_mailbox_dropped_total{shard=\"1\"} 4"));
  EXPECT_TRUE(Has(t, "ringpeer_peers{state=\"live\"} 2"));
  EXPECT_TRUE(Has(t, "ringpeer_info{node_id=\"ab\\\"cd\",transport=\"io_uring\"} 1"));
  // Every family is announced once, before its samples.
  const size_t type_at = t.find("# TYPE ringpeer_datagrams_dropped_total counter");
  ASSERT_NE(type_at, std::string::npos);
  EXPECT_LT(type_at, t.find("ringpeer_datagrams_dropped_total{"));
  EXPECT_EQ(t.find("# TYPE ringpeer_datagrams_dropped_total", type_at + 1), std::string::npos);
  EXPECT_EQ(t.back(), '\n');
}

TEST(Metrics, AbsentSourcesAreNotRendered) {
  const std::string t = RenderPrometheus(TwoShards());
  EXPECT_EQ(t.find("ringpeer_rooms"), std::string::npos);
  EXPECT_EQ(t.find("ringpeer_lookup"), std::string::npos);
  EXPECT_EQ(t.find("ringpeer_network_size_estimate"), std::string::npos);
  EXPECT_EQ(t.find("ringpeer_routing_table"), std::string::npos);
}

TEST(Metrics, HistogramAndOptionalFamilies) {
  NodeMetrics m = TwoShards();
  LookupMetrics l;
  l.started = 5;
  l.succeeded = 4;
  l.duration.upper_bounds_s = {0.05, 0.25};
  l.duration.bucket_counts = {1, 3};
  l.duration.count = 4;
  l.duration.sum_s = 0.9;
  m.lookups = l;
  m.rooms = RoomMetrics{3, 10, 1, {{"opened", 2}, {"refused_rate", 5}}};
  m.rooms->by_reducer[3] = 2;
  m.reflection = ReflectionMetrics{6, 6000, 7, 8};
  m.shards[0].storage_failing = 1;
  m.shards[0].storage_commit_failures = 9;
  m.shards[1].storage_commits = 40;
  m.shards[1].storage_commit_us = 2'500'000;
  m.routing = RoutingMetrics{12, 40, 2};
  m.size_estimate = SizeEstimateMetrics{100, 80, 130};
  m.storage_bytes = 4096;
  m.overlay.push_back({"requests_sent", "DHT requests sent.", 17});
  const std::string t = RenderPrometheus(m);
  EXPECT_TRUE(Has(t, "# TYPE ringpeer_overlay_requests_sent_total counter"));
  EXPECT_TRUE(Has(t, "ringpeer_overlay_requests_sent_total 17"));
  EXPECT_TRUE(Has(t, "ringpeer_lookup_duration_seconds_bucket{le=\"0.05\"} 1"));
  EXPECT_TRUE(Has(t, "ringpeer_lookup_duration_seconds_bucket{le=\"0.25\"} 3"));
  EXPECT_TRUE(Has(t, "ringpeer_lookup_duration_seconds_sum 0.9"));
  EXPECT_TRUE(Has(t, "ringpeer_lookup_duration_seconds_bucket{le=\"+Inf\"} 4"));
  EXPECT_TRUE(Has(t, "ringpeer_lookup_duration_seconds_count 4"));
  EXPECT_TRUE(Has(t, "# TYPE ringpeer_lookup_duration_seconds histogram"));
  EXPECT_TRUE(Has(t, "ringpeer_rooms 3"));
  EXPECT_TRUE(Has(t, "ringpeer_rooms_by_reducer{reducer=\"app\"} 2"));
  EXPECT_TRUE(Has(t, "ringpeer_rooms_by_reducer{reducer=\"chat\"} 0"));
  EXPECT_TRUE(Has(t, "ringpeer_room_updates_total{result=\"rejected\"} 1"));
  EXPECT_TRUE(Has(t, "ringpeer_routing_table_entries 12"));
  EXPECT_TRUE(Has(t, "ringpeer_network_size_estimate{method=\"density\",bound=\"high\"} 130"));
  EXPECT_EQ(t.find("method=\"walks\""), std::string::npos);
  EXPECT_TRUE(Has(t, "ringpeer_storage_bytes 4096"));
  EXPECT_TRUE(Has(t, "ringpeer_room_admission_total{outcome=\"refused_rate\"} 5"));
  EXPECT_TRUE(Has(t, "ringpeer_reflection_refused_bytes_total 6000"));
  EXPECT_TRUE(Has(t, "ringpeer_reflection_proved_total 8"));
  EXPECT_TRUE(Has(t, "ringpeer_storage_failing{shard=\"0\"} 1"));
  EXPECT_TRUE(Has(t, "ringpeer_storage_commit_failures_total{shard=\"0\"} 9"));
  EXPECT_TRUE(Has(t, "ringpeer_storage_commits_total{shard=\"1\"} 40"));
  EXPECT_TRUE(Has(t, "ringpeer_storage_commit_seconds_total{shard=\"1\"} 2.5"));
  EXPECT_TRUE(Has(t, "# TYPE ringpeer_storage_commit_seconds_total counter"));
}

TEST(Metrics, BuildInfoIsOneGaugeWithTheBuildInItsLabels) {
  const std::string text = RenderBuildInfo({"0.1.0", 1, "0123456789ab"});
  EXPECT_EQ(text,
            "# HELP ringpeer_build_info The build of this node, in the labels: version, wire "
            "protocol, git commit.\n"
            "# TYPE ringpeer_build_info gauge\n"
            "ringpeer_build_info{version=\"0.1.0\",protocol=\"1\",commit=\"0123456789ab\"} 1\n");
  // Label values are escaped.
  EXPECT_NE(RenderBuildInfo({"a\"b", 2, "x"}).find("version=\"a\\\"b\""), std::string::npos);
}

TEST(Metrics, DirectoryBytesCountsRegularFilesBelow) {
  char tmpl[] = "/tmp/rp-metrics-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  ASSERT_EQ(mkdir((dir + "/sub").c_str(), 0700), 0);
  std::ofstream(dir + "/a") << std::string(100, 'x');
  std::ofstream(dir + "/sub/b") << std::string(23, 'y');
  EXPECT_EQ(DirectoryBytes(dir), 123u);
  EXPECT_LT(DirectoryBytes(dir, /*entries_max=*/1), 123u);  // the bound is honoured
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace ringpeer::admin
