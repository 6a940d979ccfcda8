// Tests of ringpeer-load's pure helpers: the latency histogram, txid packing, peer source
// addresses, the loopback-only rule, flag parsing and the final output line.
//
// Method: the loader keeps its helpers in bench/ringpeer_load.cc (nothing else uses them),
// so this test includes that file with its main() compiled out and checks each helper
// against values worked out by hand. No sockets are opened.
#define RINGPEER_LOAD_NO_MAIN 1
#include "bench/ringpeer_load.cc"

#include <gtest/gtest.h>

#include <initializer_list>
#include <vector>

namespace ringpeer::load {
namespace {

TEST(LatencyHistogram, SmallValuesAreExact) {
  for (uint64_t v = 0; v < 32; ++v) {
    const size_t b = LatencyHistogram::BucketOf(v);
    EXPECT_EQ(LatencyHistogram::LowerBound(b), v);
    EXPECT_EQ(LatencyHistogram::UpperBound(b), v);
  }
}

TEST(LatencyHistogram, BucketsTileTheRangeWithBoundedError) {
  // Every bucket starts right after the previous one ends, and is at most 1/16 of its start.
  for (size_t b = 1; b < LatencyHistogram::kBuckets; ++b) {
    EXPECT_EQ(LatencyHistogram::LowerBound(b), LatencyHistogram::UpperBound(b - 1) + 1);
    const uint64_t lo = LatencyHistogram::LowerBound(b);
    const uint64_t width = LatencyHistogram::UpperBound(b) - lo + 1;
    EXPECT_LE(width * LatencyHistogram::kSubCount, std::max<uint64_t>(lo, 16));
    EXPECT_EQ(LatencyHistogram::BucketOf(lo), b);
    EXPECT_EQ(LatencyHistogram::BucketOf(LatencyHistogram::UpperBound(b)), b);
  }
}

TEST(LatencyHistogram, EmptyReportsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.PercentileNs(0.5), 0u);
  EXPECT_EQ(h.PercentileNs(0.99), 0u);
}

TEST(LatencyHistogram, PercentilesWithinResolution) {
  // 1..10000 µs in 1 µs steps: p50 is 5000 µs, p99 is 9900 µs, each within 1/16.
  LatencyHistogram h;
  for (int64_t us = 1; us <= 10000; ++us) h.Record(us * 1000);
  EXPECT_EQ(h.count(), 10000u);
  EXPECT_NEAR(static_cast<double>(h.PercentileNs(0.50)), 5'000'000.0, 5'000'000.0 / 16);
  EXPECT_NEAR(static_cast<double>(h.PercentileNs(0.99)), 9'900'000.0, 9'900'000.0 / 16);
  EXPECT_LE(h.PercentileNs(0.0), h.PercentileNs(0.5));
  EXPECT_LE(h.PercentileNs(0.99), h.PercentileNs(1.0));
}

TEST(LatencyHistogram, ClampsNegativeAndHuge) {
  LatencyHistogram h;
  h.Record(-5);
  h.Record(INT64_MAX);
  EXPECT_EQ(h.PercentileNs(0.01), 0u);
  EXPECT_GE(h.PercentileNs(1.0), LatencyHistogram::kValueMaxNs / 2);
}

TEST(Txid, RoundTripsPeerGenerationSlot) {
  const uint64_t t = MakeTxid(12345, 0x123456, 63);
  EXPECT_EQ(TxidPeer(t), 12345u);
  EXPECT_EQ(TxidGeneration(t), 0x123456u);
  EXPECT_EQ(TxidSlot(t), 63u);
  // Generations wrap within their 24 bits without touching the peer.
  EXPECT_EQ(TxidPeer(MakeTxid(7, 0xFFFFFFFF, 0)), 7u);
  // Generation 1 onward never yields txid 0, the "slot free" marker.
  EXPECT_NE(MakeTxid(0, 1, 0), 0u);
}

TEST(PeerSource, DistinctLoopbackAddresses) {
  EXPECT_EQ(PeerSource(0, false).ToString(), "127.0.0.2:0");
  EXPECT_EQ(PeerSource(253, false).ToString(), "127.0.0.255:0");
  EXPECT_EQ(PeerSource(254, false).ToString(), "127.0.1.0:0");
  EXPECT_EQ(PeerSource(kPeersMax - 1, false).ToString(), "127.0.64.1:0");
  EXPECT_TRUE(IsLoopback(PeerSource(kPeersMax - 1, false)));
  EXPECT_EQ(PeerSource(5, true).ToString(), "[::1]:0");
}

TEST(IsLoopback, OnlyLoopback) {
  EXPECT_TRUE(IsLoopback(*base::Endpoint::Parse("127.0.0.1:1")));
  EXPECT_TRUE(IsLoopback(*base::Endpoint::Parse("127.255.1.2:1")));
  EXPECT_TRUE(IsLoopback(*base::Endpoint::Parse("[::1]:1")));
  EXPECT_TRUE(IsLoopback(*base::Endpoint::Parse("[::ffff:127.0.0.1]:1")));
  EXPECT_FALSE(IsLoopback(*base::Endpoint::Parse("128.0.0.1:1")));
  EXPECT_FALSE(IsLoopback(*base::Endpoint::Parse("10.0.0.1:1")));
  EXPECT_FALSE(IsLoopback(*base::Endpoint::Parse("[::2]:1")));
  EXPECT_FALSE(IsLoopback(base::Endpoint{}));
}

ParseOutcome Parse(std::initializer_list<const char*> args, Options* o, std::string* error) {
  std::vector<const char*> argv = {"ringpeer-load"};
  argv.insert(argv.end(), args.begin(), args.end());
  return ParseOptions(static_cast<int>(argv.size()), argv.data(), o, error);
}

TEST(ParseOptions, DefaultsAndValues) {
  Options o;
  std::string error;
  ASSERT_EQ(Parse({"ping", "--target", "127.0.0.1:9100"}, &o, &error), ParseOutcome::kRun)
      << error;
  EXPECT_EQ(o.peers, kPeersDefault);
  EXPECT_EQ(o.window, kWindowDefault);
  EXPECT_EQ(o.seconds, kSecondsDefault);
  EXPECT_TRUE(o.baseline);
  EXPECT_EQ(o.target->port, 9100);

  Options p;
  ASSERT_EQ(Parse({"ping", "--target=localhost:7", "--peers=10", "--window", "64",
                   "--seconds", "2", "--cpu", "1", "--echo-cpu=0", "--no-baseline", "--json"},
                  &p, &error),
            ParseOutcome::kRun)
      << error;
  EXPECT_EQ(p.target->ToString(), "127.0.0.1:7");
  EXPECT_EQ(p.peers, 10u);
  EXPECT_EQ(p.window, 64u);
  EXPECT_EQ(p.seconds, 2);
  EXPECT_EQ(p.cpu, 1);
  EXPECT_EQ(p.echo_cpu, 0);
  EXPECT_FALSE(p.baseline);
  EXPECT_TRUE(p.json);
  EXPECT_TRUE(p.connected);
  EXPECT_TRUE(p.gso);
  EXPECT_EQ(p.rate, 0);  // closed windows unless --rate

  Options r;
  ASSERT_EQ(Parse({"ping", "--target", "127.0.0.1:1", "--rate", "50000"}, &r, &error),
            ParseOutcome::kRun)
      << error;
  EXPECT_EQ(r.rate, 50000);

  Options q;
  ASSERT_EQ(Parse({"ping", "--baseline-only", "--unconnected", "--no-gso"}, &q, &error),
            ParseOutcome::kRun)
      << error;
  EXPECT_FALSE(q.connected);
  EXPECT_FALSE(q.gso);
  EXPECT_FALSE(q.target.has_value());
}

TEST(ParseOptions, Errors) {
  struct Case {
    std::initializer_list<const char*> args;
    const char* error_part;
  };
  const Case cases[] = {
      {{}, "missing subcommand"},
      {{"flood"}, "unknown subcommand"},
      {{"ping"}, "--target HOST:PORT is required"},
      {{"ping", "--target", "8.8.8.8:53"}, "refused"},
      {{"ping", "--target", "[2001:db8::1]:53"}, "refused"},
      {{"ping", "--target", "127.0.0.1"}, "expected HOST:PORT"},
      {{"ping", "--target", "127.0.0.1:0"}, "expected HOST:PORT"},
      {{"ping", "--target", "127.0.0.1:1", "--peers", "0"}, "--peers: expected an integer"},
      {{"ping", "--target", "127.0.0.1:1", "--peers", "99999"}, "[1, 16384]"},
      {{"ping", "--target", "127.0.0.1:1", "--window", "65"}, "--window"},
      {{"ping", "--target", "127.0.0.1:1", "--seconds", "x"}, "--seconds"},
      {{"ping", "--target", "127.0.0.1:1", "--seconds"}, "missing value"},
      {{"ping", "--target", "127.0.0.1:1", "--bogus", "1"}, "unknown flag"},
      {{"ping", "--baseline-only", "--no-baseline"}, "nothing to run"},
      {{"ping", "--target", "127.0.0.1:1", "--pad", "10"}, "--pad is for the DHT modes"},
      {{"find-node", "--baseline-only"}, "--baseline-only is for ping"},
      {{"find-node", "--target", "127.0.0.1:1", "--pad", "1001"}, "[0, 1000]"},
      {{"announce"}, "--target HOST:PORT is required"},
      {{"ping", "--target", "127.0.0.1:1", "--peer-offset", "-1"}, "--peer-offset"},
      {{"ping", "--target", "127.0.0.1:1", "--rate", "-5"}, "--rate"},
      {{"ping", "--target", "127.0.0.1:1", "--rate", "20000000"}, "[0, 10000000]"},
  };
  for (const Case& c : cases) {
    Options o;
    std::string error;
    EXPECT_EQ(Parse(c.args, &o, &error), ParseOutcome::kError) << c.error_part;
    EXPECT_NE(error.find(c.error_part), std::string::npos) << error;
  }
  Options o;
  std::string error;
  EXPECT_EQ(Parse({"ping", "--baseline-only"}, &o, &error), ParseOutcome::kRun);
  EXPECT_EQ(Parse({"ping", "--help"}, &o, &error), ParseOutcome::kHelp);
  EXPECT_EQ(Parse({"--help"}, &o, &error), ParseOutcome::kHelp);
}

TEST(ParseOptions, DhtModes) {
  std::string error;
  for (auto [name, mode] : {std::pair{"find-node", Mode::kFindNode},
                            std::pair{"get-providers", Mode::kGetProviders},
                            std::pair{"announce", Mode::kAnnounce}}) {
    Options o;
    ASSERT_EQ(Parse({name, "--target", "127.0.0.1:7700"}, &o, &error), ParseOutcome::kRun)
        << error;
    EXPECT_EQ(o.mode, mode);
    EXPECT_EQ(o.pad, kDhtPadDefault);  // DHT requests are padded unless told otherwise
    EXPECT_EQ(std::string(ModeName(o.mode)), name);
  }
  Options o;
  ASSERT_EQ(Parse({"find-node", "--target", "127.0.0.1:7700", "--pad", "0", "--peer-offset",
                   "512"},
                  &o, &error),
            ParseOutcome::kRun)
      << error;
  EXPECT_EQ(o.pad, 0u);
  EXPECT_EQ(o.peer_offset, 512u);
  // Offsets move the source addresses: loaders side by side never share one.
  EXPECT_EQ(PeerSource(0 + 512, false).ToString(), "127.0.2.2:0");
  EXPECT_NE(PeerSource(0, false).ToString(), PeerSource(512, false).ToString());
}

TEST(Summary, DhtLineStartsWithTheContractKeys) {
  PhaseResult dht, pings;
  dht.seconds = pings.seconds = 2;
  dht.answered = 100'000;
  pings.answered = 300'000;
  dht.short_answers = 7;
  dht.lost = 2;
  const DhtSummary s = SummarizeDht(dht, pings, 128);
  EXPECT_DOUBLE_EQ(s.answers_per_s, 50'000);
  EXPECT_DOUBLE_EQ(s.pings_per_s, 150'000);
  EXPECT_NEAR(s.ratio, 1.0 / 3, 1e-12);
  const std::string line = FormatDhtKeyValues(s);
  EXPECT_EQ(line.rfind("answers_per_s=50000 p50_us=", 0), 0u) << line;
  EXPECT_NE(line.find(" lost=2 pings_per_s=150000 ratio=0.333 short=7 joined=128"),
            std::string::npos)
      << line;
  PhaseResult none;
  EXPECT_EQ(SummarizeDht(none, pings, 0).ratio, 0.0);
}

TEST(Summary, KeyValueLineStartsWithTheContractKeys) {
  PhaseResult target, baseline;
  target.seconds = baseline.seconds = 2;
  target.answered = 600'000;
  baseline.answered = 800'000;
  target.lost = 3;
  for (int i = 0; i < 100; ++i) target.latency.Record(100'000);
  const Summary s = Summarize(&target, &baseline);
  EXPECT_DOUBLE_EQ(s.pings_per_s, 300'000);
  EXPECT_DOUBLE_EQ(s.baseline_per_s, 400'000);
  EXPECT_DOUBLE_EQ(s.ratio, 0.75);
  const std::string line = FormatKeyValues(s);
  EXPECT_EQ(line.rfind("pings_per_s=300000 p50_us=", 0), 0u) << line;
  EXPECT_NE(line.find(" lost=3 baseline_per_s=400000 baseline_p50_us=0.0 "
                      "baseline_p99_us=0.0 ratio=0.750"),
            std::string::npos)
      << line;
  EXPECT_EQ(FormatJson(s).front(), '{');
  // Without a baseline the ratio is 0, not a division by zero.
  EXPECT_EQ(Summarize(&target, nullptr).ratio, 0.0);
}

}  // namespace
}  // namespace ringpeer::load
