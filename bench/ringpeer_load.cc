// ringpeer-load: drives one ringpeer node with many simulated peers from one process.
//
// Subcommands `find-node`, `get-providers`, `announce` (issue 14): the same peers and
// windows, with DHT requests instead of pings. Each peer is then a real identity (an
// ed25519 key pair) that first joins the node's routing table: it pings the node, answers
// the node's signed challenge, and keeps answering its liveness pings. Then the same node
// is measured twice with the same peers: pings (the reference), then the DHT request. A
// FindNode answer counts only when it carries 20 contacts; `announce` first fetches each
// peer's token with a GetProviders. The final line starts `answers_per_s= p50_us= p99_us=
// lost=` and gives the ping rate of the same run and their ratio.
//
// Subcommand `ping`: N peers, each its own UDP socket bound to its own loopback source
// address (127.0.0.2, 127.0.0.3, ...; loopback accepts all of 127/8), so per-source-address
// rate limits on the node see N different senders. Each peer keeps W liveness pings in
// flight (real ringpeer datagrams from wire::Encoder::Ping, no challenge); an answer is a
// Pong with the same txid, or, from the kernel echo baseline, our own Ping sent back.
// It reports answered pings per second and latency percentiles, and, in the same run, the
// same figures against `ringpeer-udp-echo`, the kernel's own UDP ceiling on this machine.
//
// The loader is one thread on one epoll loop. Per ping it does one encode, one decode and
// its share of one send and one recvmmsg per peer socket. Sends use UDP GSO: a peer's
// batch leaves as one buffer the kernel splits into datagrams, which on loopback spares the
// loader ~10% of its core (measured), so the target saturates before the loader does.
// Everything is allocated before the clock starts; latencies go into a fixed histogram.
// It only talks to loopback: it is a benchmark for this machine, not a traffic generator
// for someone else's.
//
// The pure helpers (histogram, flag parsing, addressing, output) come first; the test
// bench/load_stats_test.cc includes this file with RINGPEER_LOAD_NO_MAIN defined.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/assert.h"
#include "base/endpoint.h"
#include "base/outbox.h"
#include "base/rng.h"
#include "dht/ping_responder.h"
#include "wire/crypto.h"
#include "wire/encode.h"
#include "wire/header.h"
#include "wire/message.h"

namespace ringpeer::load {

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

// Peers per run: each is a socket (a file descriptor) and a distinct 127/8 address.
inline constexpr uint32_t kPeersMax = 16384;
inline constexpr uint32_t kPeersDefault = 256;
// --peer-offset: where this process's source addresses start, so that several loaders
// driving one node (bench/dht_scaling.sh, one per shard) never share an address.
inline constexpr uint32_t kPeerOffsetMax = 1u << 20;
// Pings in flight per peer. The slot index lives in the txid's low 8 bits, so at most 256;
// 64 already keeps any node's queues full.
inline constexpr uint32_t kWindowMax = 64;
inline constexpr uint32_t kWindowDefault = 4;
inline constexpr long kSecondsMax = 3600;
inline constexpr long kSecondsDefault = 5;
// Warm-up before measuring: lets caches, socket queues and the node's peer table settle.
inline constexpr int64_t kWarmupNs = 500'000'000;
// DHT modes: how long the peers may take to join the node's table (its new-peer challenge
// budget is 200/s), and the quiet time after the last challenge that ends the join.
inline constexpr int64_t kJoinMaxNs = 20'000'000'000;
inline constexpr int64_t kJoinQuietNs = 1'500'000'000;
// DHT modes: request padding, so that an answer to a peer the answering shard has not seen
// a round trip with still fits 3x the request (a full FindNode answer is ~1,120 bytes).
inline constexpr uint32_t kDhtPadDefault = 320;
inline constexpr uint32_t kPadMax = 1000;
// A full FindNode answer: the count a peer asks for, and what an answer must carry to count.
inline constexpr uint8_t kFindNodeCount = 20;
// A ping not answered within this long is counted lost and replaced, so a dropped datagram
// never shrinks the window for the rest of the run.
inline constexpr int64_t kLostAfterNs = 200'000'000;
// --rate: the most requests per second one loader offers, and the pacing tick (a paced
// loop wakes at least this often to send what it owes).
inline constexpr long kRateMax = 10'000'000;
inline constexpr int64_t kPaceTickNs = 100'000;
// A paced loader that fell behind (descheduled) forgives what it owes beyond this much
// time, so that it never answers a stall with a burst the node did not ask for.
inline constexpr int64_t kPaceCatchUpNs = 10'000'000;
// How often the loop looks for lost pings: a fraction of kLostAfterNs is precise enough.
inline constexpr int64_t kLostScanEveryNs = 20'000'000;
// Longest one epoll wait may block: bounds how late the loop notices its deadline.
inline constexpr int kEpollWaitMs = 1;
// Ready sockets taken per epoll_wait.
inline constexpr int kEpollEventsMax = 1024;
// Datagrams read per recvmmsg: a full window plus room for the node's own traffic.
inline constexpr unsigned kRecvBatch = kWindowMax + 16;
// Receive buffers are larger than any valid datagram so that an oversized one is seen
// whole and rejected by Decode instead of being silently truncated into something valid.
inline constexpr size_t kRecvBytesMax = 2048;
// How long the echo child may take to print its port, and to exit after SIGTERM.
inline constexpr int kEchoStartTimeoutMs = 5000;
inline constexpr int kEchoStopTimeoutMs = 2000;
// The echo child's own lifetime bound: our run plus this margin.
inline constexpr long kEchoLifetimeMarginSeconds = 30;
// Socket buffers per peer: a window of replies is tiny; this only avoids drops on bursts.
inline constexpr int kPeerSocketBufferBytes = 256 << 10;

static_assert(kWindowMax <= 256, "the slot index is the txid's low 8 bits");
static_assert(kRecvBatch >= kWindowMax);
static_assert(kLostScanEveryNs < kLostAfterNs);

// ---------------------------------------------------------------------------------------
// LatencyHistogram: fixed log-linear buckets, no allocation per sample.
// ---------------------------------------------------------------------------------------

// Values (nanoseconds) below 2^kSubBits are kept exactly; above, each power of two is split
// into 2^kSubBits buckets, so a reported percentile is within 1/16 (~6%) of the true value.
// Samples above kValueMaxNs (about 18 minutes) land in the last bucket. Not thread-safe.
class LatencyHistogram {
 public:
  static constexpr int kSubBits = 4;
  static constexpr uint64_t kSubCount = uint64_t{1} << kSubBits;
  static constexpr int kMsbMax = 40;
  static constexpr uint64_t kValueMaxNs = (uint64_t{1} << (kMsbMax + 1)) - 1;
  static constexpr size_t kBuckets = (kMsbMax - kSubBits + 2) * kSubCount;

  // Record: adds one sample. Negative values (a clock that went backwards) count as 0.
  void Record(int64_t value_ns) noexcept {
    uint64_t v = value_ns < 0 ? 0 : static_cast<uint64_t>(value_ns);
    ++counts_[BucketOf(std::min(v, kValueMaxNs))];
    ++count_;
  }

  uint64_t count() const noexcept { return count_; }

  // PercentileNs: the midpoint of the bucket holding the p-th quantile, p in [0, 1];
  // 0 when empty.
  uint64_t PercentileNs(double p) const noexcept {
    if (count_ == 0) return 0;
    p = std::clamp(p, 0.0, 1.0);
    uint64_t rank = static_cast<uint64_t>(std::ceil(p * static_cast<double>(count_)));
    rank = std::max<uint64_t>(rank, 1);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return (LowerBound(i) + UpperBound(i)) / 2;
    }
    RP_ASSERT(false);  // seen reaches count_ >= rank by the last bucket
    return 0;
  }

  static constexpr size_t BucketOf(uint64_t v) noexcept {
    if (v < kSubCount) return static_cast<size_t>(v);
    const int msb = 63 - std::countl_zero(v);
    const int shift = msb - kSubBits;
    const uint64_t sub = (v >> shift) & (kSubCount - 1);
    return static_cast<size_t>((shift + 1) * kSubCount + sub);
  }
  static constexpr uint64_t LowerBound(size_t bucket) noexcept {
    if (bucket < kSubCount) return bucket;
    const int shift = static_cast<int>(bucket / kSubCount) - 1;
    return (kSubCount + bucket % kSubCount) << shift;
  }
  static constexpr uint64_t UpperBound(size_t bucket) noexcept {
    if (bucket < kSubCount) return bucket;
    const int shift = static_cast<int>(bucket / kSubCount) - 1;
    return LowerBound(bucket) + (uint64_t{1} << shift) - 1;
  }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
};

static_assert(LatencyHistogram::kBuckets ==
              LatencyHistogram::BucketOf(LatencyHistogram::kValueMaxNs) + 1);

// ---------------------------------------------------------------------------------------
// Addressing and transaction ids
// ---------------------------------------------------------------------------------------

// IsLoopback: 127.0.0.0/8 or ::1. The tool refuses every other target.
// ErrnoError: an operational error from a failed system call. (base/status.h has
// ErrnoStatus, but it passes a std::string_view to absl::StrCat, which Debian's abseil
// does not accept; this keeps the tool building until that is fixed.)
inline absl::Status ErrnoError(int err, const std::string& what) {
  return absl::InternalError(what + ": " + std::strerror(err));
}

inline bool IsLoopback(const base::Endpoint& e) noexcept {
  if (e.is_v4()) return e.ip[0] == 127;
  if (e.family != base::Endpoint::Family::kV6) return false;
  static constexpr std::array<uint8_t, 16> kV6Loopback = {0, 0, 0, 0, 0, 0, 0, 0,
                                                          0, 0, 0, 0, 0, 0, 0, 1};
  return e.ip == kV6Loopback;
}

// PeerSource: the address peer `index` sends from. IPv4 peers start at 127.0.0.2 (the
// target usually sits on 127.0.0.1) and count up through 127.0.X.Y; IPv6 has a single
// loopback address, so every peer uses ::1 with its own port.
inline base::Endpoint PeerSource(uint32_t index, bool v6) noexcept {
  RP_ASSERT(index < kPeersMax + kPeerOffsetMax);
  base::Endpoint e;
  if (v6) {
    e.family = base::Endpoint::Family::kV6;
    e.ip[15] = 1;
    return e;
  }
  const uint32_t host = (uint32_t{127} << 24) + index + 2;
  e.family = base::Endpoint::Family::kV4;
  e.ip = {static_cast<uint8_t>(host >> 24), static_cast<uint8_t>(host >> 16),
          static_cast<uint8_t>(host >> 8), static_cast<uint8_t>(host)};
  return e;
}

// A txid names its peer (high 32 bits), a generation (24 bits) and the window slot (low 8
// bits), so a reply finds its slot without a lookup and a stale reply (for a ping already
// counted lost and replaced) does not match the slot's current txid.
inline uint64_t MakeTxid(uint32_t peer, uint32_t generation, uint32_t slot) noexcept {
  RP_ASSERT(slot < 256);
  return uint64_t{peer} << 32 | uint64_t{generation & 0xFFFFFFu} << 8 | slot;
}
inline uint32_t TxidPeer(uint64_t txid) noexcept { return static_cast<uint32_t>(txid >> 32); }
inline uint32_t TxidSlot(uint64_t txid) noexcept { return static_cast<uint32_t>(txid & 0xFF); }
inline uint32_t TxidGeneration(uint64_t txid) noexcept {
  return static_cast<uint32_t>(txid >> 8) & 0xFFFFFFu;
}

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

// Mode: what each peer keeps in flight.
enum class Mode : uint8_t { kPing, kFindNode, kGetProviders, kAnnounce };

// ReplyType: the answer a mode's request gets.
inline wire::MessageType ReplyType(Mode m) noexcept {
  switch (m) {
    case Mode::kPing: return wire::MessageType::kPong;
    case Mode::kFindNode: return wire::MessageType::kNodes;
    case Mode::kGetProviders: return wire::MessageType::kProviders;
    case Mode::kAnnounce: return wire::MessageType::kAck;
  }
  return wire::MessageType::kPong;
}

inline const char* ModeName(Mode m) noexcept {
  switch (m) {
    case Mode::kPing: return "ping";
    case Mode::kFindNode: return "find-node";
    case Mode::kGetProviders: return "get-providers";
    case Mode::kAnnounce: return "announce";
  }
  return "?";
}

struct Options {
  Mode mode = Mode::kPing;
  std::optional<base::Endpoint> target;
  uint32_t pad = 0;  // DHT modes: kDhtPadDefault unless --pad
  uint32_t peer_offset = 0;
  uint32_t peers = kPeersDefault;
  long seconds = kSecondsDefault;
  uint32_t window = kWindowDefault;
  int cpu = -1;
  int echo_cpu = -1;
  bool baseline = true;
  bool baseline_only = false;
  bool json = false;
  bool connected = true;
  bool gso = true;
  bool pad_given = false;
  long rate = 0;  // requests offered per second in all; 0: as fast as the windows allow
};

enum class ParseOutcome : uint8_t { kRun, kHelp, kError };

inline const char* HelpText() {
  return "usage: ringpeer-load ping|find-node|get-providers|announce [flags]\n"
         "Drives one ringpeer node on this machine with many simulated peers sending\n"
         "liveness pings, and measures answered pings/s and latency. Unless --no-baseline,\n"
         "first runs the same load against ringpeer-udp-echo (the kernel's UDP ceiling).\n"
         "find-node, get-providers, announce: the peers are real identities that first join\n"
         "the node's routing table (they answer its challenges), then the node is measured\n"
         "with pings and with that DHT request, same peers, same run (no echo baseline).\n"
         "A FindNode answer counts only with 20 contacts.\n"
         "  --target HOST:PORT  node to drive; loopback only (127.0.0.0/8, ::1, localhost)\n"
         "  --peers N           simulated peers, each its own socket and 127/8 address\n"
         "                      (default 256, at most 16384)\n"
         "  --seconds S         measured seconds per phase, after a 0.5 s warm-up (default 5)\n"
         "  --window W          pings in flight per peer (default 4, at most 64)\n"
         "  --cpu N             pin the load generator to CPU N\n"
         "  --echo-cpu N        pin the baseline echo server to CPU N\n"
         "  --no-baseline       skip the kernel echo baseline\n"
         "  --baseline-only     run only the baseline (no --target needed)\n"
         "  --json              human-readable lines to stderr, one JSON object to stdout\n"
         "  --unconnected       do not connect() the peer sockets (slower; for a node that\n"
         "                      answers from an address other than --target)\n"
         "  --no-gso            one datagram per send instead of UDP GSO batches (slower;\n"
         "                      the node receives the same datagrams either way)\n"
         "  --peer-offset K     source addresses start at 127.0.0.2 + K (default 0), so that\n"
         "                      loaders driving one node side by side use distinct ones\n"
         "  --pad BYTES         DHT modes: request padding (default 320, at most 1000), so an\n"
         "                      answer to a peer not yet proven on that shard is not trimmed\n"
         "  --rate R            offer R requests/s in all, paced every 100 us, instead of\n"
         "                      refilling each window as answers come (default 0: as fast\n"
         "                      as the windows allow); for CPU per request below saturation\n"
         "The last stdout line of ping is `pings_per_s=.. p50_us=.. p99_us=.. lost=..\n"
         "baseline_per_s=.. baseline_p50_us=.. baseline_p99_us=.. ratio=..` (figures of a\n"
         "skipped phase are 0); of the DHT modes `answers_per_s=.. p50_us=.. p99_us=.. lost=..\n"
         "pings_per_s=.. ratio=.. short=.. joined=..` (ratio: answers over pings).\n";
}

// ParseInt: the whole of `text` as a decimal integer in [lo, hi].
inline bool ParseInt(std::string_view text, long lo, long hi, long* out) noexcept {
  if (text.empty() || text.size() > 9) return false;
  long v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

// ParseTarget: "HOST:PORT" with a numeric host or "localhost"; loopback only.
inline bool ParseTarget(std::string_view text, std::optional<base::Endpoint>* out,
                        std::string* error) {
  std::string spelled(text);
  if (text.starts_with("localhost:")) spelled = "127.0.0.1" + spelled.substr(9);
  std::optional<base::Endpoint> e = base::Endpoint::Parse(spelled);
  if (!e || e->port == 0) {
    *error = absl::StrCat("--target: expected HOST:PORT (e.g. 127.0.0.1:7700), got '",
                          std::string(text), "'");
    return false;
  }
  if (!IsLoopback(*e)) {
    *error = absl::StrCat("--target ", e->ToString(),
                          ": refused; ringpeer-load only drives nodes on this machine "
                          "(127.0.0.0/8 or ::1)");
    return false;
  }
  *out = e;
  return true;
}

// ParseValueFlag: one flag that takes a value. Returns false with `error` set.
inline bool ParseValueFlag(std::string_view flag, std::string_view value, Options* o,
                           std::string* error) {
  long v = 0;
  auto number = [&](long lo, long hi) {
    if (ParseInt(value, lo, hi, &v)) return true;
    *error = absl::StrCat(std::string(flag), ": expected an integer in [", lo, ", ", hi,
                          "], got '", std::string(value), "'");
    return false;
  };
  if (flag == "--target") return ParseTarget(value, &o->target, error);
  if (flag == "--peers") {
    if (!number(1, kPeersMax)) return false;
    o->peers = static_cast<uint32_t>(v);
  } else if (flag == "--seconds") {
    if (!number(1, kSecondsMax)) return false;
    o->seconds = v;
  } else if (flag == "--window") {
    if (!number(1, kWindowMax)) return false;
    o->window = static_cast<uint32_t>(v);
  } else if (flag == "--rate") {
    if (!number(0, kRateMax)) return false;
    o->rate = v;
  } else if (flag == "--peer-offset") {
    if (!number(0, kPeerOffsetMax)) return false;
    o->peer_offset = static_cast<uint32_t>(v);
  } else if (flag == "--pad") {
    if (!number(0, kPadMax)) return false;
    o->pad = static_cast<uint32_t>(v);
    o->pad_given = true;
  } else if (flag == "--cpu" || flag == "--echo-cpu") {
    if (!number(0, CPU_SETSIZE - 1)) return false;
    (flag == "--cpu" ? o->cpu : o->echo_cpu) = static_cast<int>(v);
  } else {
    *error = absl::StrCat("unknown flag '", std::string(flag), "' (try --help)");
    return false;
  }
  return true;
}

// ParseOptions: `argv[1]` is the subcommand; flags are `--name value` or `--name=value`.
inline ParseOutcome ParseOptions(int argc, const char* const* argv, Options* o,
                                 std::string* error) {
  if (argc < 2) {
    *error = "missing subcommand (try: ringpeer-load ping --help)";
    return ParseOutcome::kError;
  }
  std::string_view sub = argv[1];
  if (sub == "--help" || sub == "-h" || sub == "help") return ParseOutcome::kHelp;
  if (sub == "ping") {
    o->mode = Mode::kPing;
  } else if (sub == "find-node") {
    o->mode = Mode::kFindNode;
  } else if (sub == "get-providers") {
    o->mode = Mode::kGetProviders;
  } else if (sub == "announce") {
    o->mode = Mode::kAnnounce;
  } else {
    *error = absl::StrCat("unknown subcommand '", std::string(sub),
                          "' (one of: ping, find-node, get-providers, announce)");
    return ParseOutcome::kError;
  }
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") return ParseOutcome::kHelp;
    if (arg == "--no-baseline") { o->baseline = false; continue; }
    if (arg == "--baseline-only") { o->baseline_only = true; continue; }
    if (arg == "--json") { o->json = true; continue; }
    if (arg == "--unconnected") { o->connected = false; continue; }
    if (arg == "--no-gso") { o->gso = false; continue; }
    std::string_view flag = arg, value;
    if (size_t eq = arg.find('='); eq != std::string_view::npos) {
      flag = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc && arg.starts_with("--")) {
      value = argv[++i];
    } else if (arg.starts_with("--")) {
      *error = absl::StrCat(std::string(arg), ": missing value");
      return ParseOutcome::kError;
    }
    if (!ParseValueFlag(flag, value, o, error)) return ParseOutcome::kError;
  }
  if (o->baseline_only && !o->baseline) {
    *error = "--baseline-only and --no-baseline leave nothing to run";
    return ParseOutcome::kError;
  }
  if (o->mode != Mode::kPing) {
    if (o->baseline_only) {
      *error = "--baseline-only is for ping (the DHT modes measure the node's own pings)";
      return ParseOutcome::kError;
    }
    if (!o->pad_given) o->pad = kDhtPadDefault;
  } else if (o->pad_given) {
    *error = "--pad is for the DHT modes (find-node, get-providers, announce)";
    return ParseOutcome::kError;
  }
  if (!o->baseline_only && !o->target) {
    *error = "--target HOST:PORT is required (or --baseline-only)";
    return ParseOutcome::kError;
  }
  return ParseOutcome::kRun;
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

// PhaseResult: the figures of one phase (baseline or target). Counts cover the measured
// window only, after the warm-up.
struct PhaseResult {
  double seconds = 0;         // measured wall time
  uint64_t answered = 0;      // pings answered within the window
  uint64_t pongs = 0;         // ... of which by a Pong
  uint64_t echoes = 0;        // ... of which by our own Ping sent back
  uint64_t lost = 0;          // abandoned after kLostAfterNs
  uint64_t late = 0;          // a reply to a ping already abandoned, or a duplicate
  uint64_t other = 0;         // anything else the node sent (its own pings, bad bytes)
  uint64_t send_errors = 0;   // pings the kernel refused to send (they also end up lost)
  uint64_t recv_errors = 0;   // receive errors such as ECONNREFUSED (nobody listening)
  uint64_t short_answers = 0; // DHT modes: a FindNode answer with fewer than 20 contacts
  uint64_t served = 0;        // DHT modes: the node's pings (liveness, challenges) answered
  LatencyHistogram latency;

  double PerSecond() const noexcept { return seconds > 0 ? answered / seconds : 0; }
  double P50Us() const noexcept { return latency.PercentileNs(0.50) / 1000.0; }
  double P99Us() const noexcept { return latency.PercentileNs(0.99) / 1000.0; }
};

// Summary: the figures of the final line. A phase that did not run reads as zeros.
struct Summary {
  double pings_per_s = 0, p50_us = 0, p99_us = 0;
  uint64_t lost = 0;
  double baseline_per_s = 0, baseline_p50_us = 0, baseline_p99_us = 0;
  double ratio = 0;  // pings_per_s / baseline_per_s; 0 without both phases
  uint64_t other = 0;
  uint64_t baseline_lost = 0;
};

inline Summary Summarize(const PhaseResult* target, const PhaseResult* baseline) noexcept {
  Summary s;
  if (target != nullptr) {
    s.pings_per_s = target->PerSecond();
    s.p50_us = target->P50Us();
    s.p99_us = target->P99Us();
    s.lost = target->lost;
    s.other = target->other;
  }
  if (baseline != nullptr) {
    s.baseline_per_s = baseline->PerSecond();
    s.baseline_p50_us = baseline->P50Us();
    s.baseline_p99_us = baseline->P99Us();
    s.baseline_lost = baseline->lost;
  }
  if (s.pings_per_s > 0 && s.baseline_per_s > 0) s.ratio = s.pings_per_s / s.baseline_per_s;
  return s;
}

// FormatKeyValues: the one machine-readable line; the first eight keys are the contract,
// later keys are extras.
inline std::string FormatKeyValues(const Summary& s) {
  return absl::StrFormat(
      "pings_per_s=%.0f p50_us=%.1f p99_us=%.1f lost=%u baseline_per_s=%.0f "
      "baseline_p50_us=%.1f baseline_p99_us=%.1f ratio=%.3f other=%u baseline_lost=%u",
      s.pings_per_s, s.p50_us, s.p99_us, s.lost, s.baseline_per_s, s.baseline_p50_us,
      s.baseline_p99_us, s.ratio, s.other, s.baseline_lost);
}

inline std::string FormatJson(const Summary& s) {
  return absl::StrFormat(
      "{\"pings_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"lost\":%u,"
      "\"baseline_per_s\":%.0f,\"baseline_p50_us\":%.1f,\"baseline_p99_us\":%.1f,"
      "\"ratio\":%.3f,\"other\":%u,\"baseline_lost\":%u}",
      s.pings_per_s, s.p50_us, s.p99_us, s.lost, s.baseline_per_s, s.baseline_p50_us,
      s.baseline_p99_us, s.ratio, s.other, s.baseline_lost);
}

// FormatPhase: one human-readable line for a phase.
inline std::string FormatPhase(const std::string& label, const PhaseResult& r) {
  return absl::StrFormat(
      "%-9s %9.0f pings/s  p50 %7.1f us  p99 %7.1f us  answered %u (pong %u, echo %u)  "
      "lost %u  late %u  other %u  send_err %u  recv_err %u",
      label, r.PerSecond(), r.P50Us(), r.P99Us(), r.answered, r.pongs, r.echoes, r.lost,
      r.late, r.other, r.send_errors, r.recv_errors);
}

// DhtSummary: the final line of a DHT mode: the request's figures, then the same node's
// ping rate measured with the same peers in the same run, and their ratio.
struct DhtSummary {
  double answers_per_s = 0, p50_us = 0, p99_us = 0;
  uint64_t lost = 0;
  double pings_per_s = 0;
  double ratio = 0;
  uint64_t short_answers = 0;
  uint32_t joined = 0;  // peers whose challenge the node sent and we answered
};

inline DhtSummary SummarizeDht(const PhaseResult& dht, const PhaseResult& pings,
                               uint32_t joined) noexcept {
  DhtSummary s;
  s.answers_per_s = dht.PerSecond();
  s.p50_us = dht.P50Us();
  s.p99_us = dht.P99Us();
  s.lost = dht.lost;
  s.pings_per_s = pings.PerSecond();
  if (s.answers_per_s > 0 && s.pings_per_s > 0) s.ratio = s.answers_per_s / s.pings_per_s;
  s.short_answers = dht.short_answers;
  s.joined = joined;
  return s;
}

inline std::string FormatDhtKeyValues(const DhtSummary& s) {
  return absl::StrFormat(
      "answers_per_s=%.0f p50_us=%.1f p99_us=%.1f lost=%u pings_per_s=%.0f ratio=%.3f "
      "short=%u joined=%u",
      s.answers_per_s, s.p50_us, s.p99_us, s.lost, s.pings_per_s, s.ratio, s.short_answers,
      s.joined);
}

// ---------------------------------------------------------------------------------------
// The load engine
// ---------------------------------------------------------------------------------------

inline int64_t NowNs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// PingLoad: the sockets, buffers and window state of one phase against one target.
// Everything is allocated in Open(); Run() allocates nothing. Single-threaded; owns its
// file descriptors.
class PingLoad {
 public:
  PingLoad() = default;
  PingLoad(const PingLoad&) = delete;
  PingLoad& operator=(const PingLoad&) = delete;
  ~PingLoad() { Close(); }

  // Open: one nonblocking socket per peer, bound to its own source address, registered
  // with a fresh epoll instance. With `identities`, each peer also gets an ed25519 key
  // pair (its id is what its requests say) and answers the node's pings with it.
  // REQUIRES: target is loopback; 1 <= window <= kWindowMax.
  absl::Status Open(const base::Endpoint& target, uint32_t peers, uint32_t window,
                    bool connected, bool gso, bool identities = false, uint32_t pad = 0,
                    uint32_t peer_offset = 0);

  // Join (identities only): every peer pings the node and answers the challenge that
  // follows, until no challenge came for kJoinQuietNs (at most kJoinMaxNs). Returns how
  // many peers answered one.
  uint32_t Join() noexcept;
  // FetchTokens (identities only): a GetProviders per peer, for the token its Announce
  // needs. Returns how many peers hold one.
  uint32_t FetchTokens() noexcept;

  // Run: warm-up, then `seconds` measured, keeping `mode` requests in flight. Returns the
  // measured figures.
  PhaseResult Run(long seconds, Mode mode = Mode::kPing) noexcept;
  // SetRate: requests offered per second from the next Run on (0: closed windows). A paced
  // Run sends only what the clock owes, from the slots that are free, so the offered load
  // stays fixed as long as the windows hold it (peers x window > rate x round trip).
  void SetRate(long per_second) noexcept { rate_ = per_second; }

 private:
  struct Peer {
    int fd = -1;
    uint32_t generation = 0;  // bumped per ping sent, so each txid is fresh
    wire::NodeId id{};        // the sender id in this peer's pings
    bool challenged = false;  // identities: answered a challenge of the node's
    bool has_token = false;   // identities: holds an announce token
    wire::Token token{};
  };
  // PeerOutbox: a peer's answers to the node (pongs), straight to its socket.
  class PeerOutbox final : public base::Outbox {
   public:
    std::span<uint8_t> Buffer() noexcept override { return buf_; }
    void Commit(size_t size, const base::Endpoint&) noexcept override {
      if (load_->connected_) {
        sent_ok_ = send(fd_, buf_, size, MSG_DONTWAIT) == static_cast<ssize_t>(size);
      } else {
        sent_ok_ = sendto(fd_, buf_, size, MSG_DONTWAIT,
                          reinterpret_cast<const sockaddr*>(&load_->target_sa_),
                          load_->target_sa_len_) == static_cast<ssize_t>(size);
      }
    }
    void Use(PingLoad* load, int fd) noexcept {
      load_ = load;
      fd_ = fd;
    }
    bool sent_ok_ = false;

   private:
    PingLoad* load_ = nullptr;
    int fd_ = -1;
    alignas(8) uint8_t buf_[wire::kDatagramBytesMax];
  };
  // The window: slot_txid_[p * window_ + s] is peer p's slot s's ping in flight, sent at
  // slot_sent_ns_[same index].
  struct RecvBatch {
    alignas(64) uint8_t data[kRecvBatch][kRecvBytesMax];
    iovec iov[kRecvBatch];
    mmsghdr msgs[kRecvBatch];
  };
  struct SendBatch {
    alignas(64) uint8_t data[kWindowMax][wire::kDatagramBytesMax];
    iovec iov[kWindowMax];
    mmsghdr msgs[kWindowMax];
  };

  void Close() noexcept;
  absl::Status OpenPeer(uint32_t index);
  void ServicePeer(uint32_t p, int64_t measure_from_ns) noexcept;
  void Classify(uint32_t p, const uint8_t* data, size_t size, int64_t now_ns, bool measure,
                uint32_t* free_slots, uint32_t* free_count) noexcept;
  // ServeNode: a datagram from the node that is not an answer of ours (identities only):
  // its pings are answered. Returns whether it was one.
  bool ServeNode(uint32_t p, const wire::Message& m, bool measure) noexcept;
  // DrainForJoin: reads peer p's socket during Join/FetchTokens, serving the node.
  void DrainForJoin(uint32_t p) noexcept;
  void SendPings(uint32_t p, const uint32_t* slots, uint32_t count, bool measure) noexcept;
  // Encode: request `txid` of the current mode from peer p into `out`.
  size_t Encode(uint32_t p, uint64_t txid, std::span<uint8_t> out) noexcept;
  uint32_t SendBatchTo(int fd, uint32_t count) noexcept;
  void ReplaceLost(int64_t now_ns, bool measure) noexcept;
  // Pace: sends what the clock owes since the paced run began, from the idle slots,
  // peer after peer from where the last call stopped.
  void Pace(int64_t now_ns, bool measure) noexcept;

  base::Endpoint target_;
  sockaddr_storage target_sa_{};
  socklen_t target_sa_len_ = 0;
  uint32_t window_ = 0;
  bool connected_ = true;
  bool gso_ = true;
  int epoll_fd_ = -1;
  std::vector<Peer> peers_;
  std::vector<uint64_t> slot_txid_;
  std::vector<int64_t> slot_sent_ns_;
  std::unique_ptr<RecvBatch> rx_;
  std::unique_ptr<SendBatch> tx_;
  std::vector<epoll_event> events_;
  wire::Encoder encoder_;
  PhaseResult result_;
  Mode mode_ = Mode::kPing;
  // Pacing (--rate): idle_[p * window_ + i], i < idle_count_[p], are peer p's free slots.
  long rate_ = 0;
  std::vector<uint8_t> idle_;
  std::vector<uint8_t> idle_count_;
  uint32_t pace_cursor_ = 0;
  int64_t pace_start_ns_ = 0;
  uint64_t paced_sent_ = 0;
  uint32_t pad_ = 0;
  uint32_t peer_offset_ = 0;
  // Identities (DHT modes): a key pair and a ping responder per peer, sized in Open. The
  // responders keep references to the key pairs, so keys_ never reallocates after that.
  std::vector<wire::KeyPair> keys_;
  std::vector<std::unique_ptr<dht::PingResponder>> responders_;
  PeerOutbox outbox_;
  base::Rng rng_{0x10AD};  // targets and keys of requests
  int64_t start_ns_ = NowNs();
};

void PingLoad::Close() noexcept {
  for (Peer& peer : peers_) {
    if (peer.fd >= 0) close(peer.fd);
    peer.fd = -1;
  }
  if (epoll_fd_ >= 0) close(epoll_fd_);
  epoll_fd_ = -1;
}

absl::Status PingLoad::OpenPeer(uint32_t index) {
  const bool v6 = !target_.is_v4();
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError(errno, "socket");
  peers_[index].fd = fd;
  int bytes = kPeerSocketBufferBytes;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  sockaddr_storage ss;
  const base::Endpoint source = PeerSource(index + peer_offset_, v6);
  socklen_t len = source.ToSockaddr(&ss, v6);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return ErrnoError(errno, absl::StrCat("bind peer ", index, " to ",
                                                 source.ToString()));
  }
  // A connected socket skips the route lookup on every send (~15% of the loader's time
  // here) and hears ICMP port-unreachable as ECONNREFUSED; it also drops replies from any
  // address but the target's, hence --unconnected for a node that answers from another.
  if (connected_ &&
      connect(fd, reinterpret_cast<const sockaddr*>(&target_sa_), target_sa_len_) != 0) {
    return ErrnoError(errno, absl::StrCat("connect peer ", index, " to ", target_.ToString()));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = index;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    return ErrnoError(errno, "epoll_ctl");
  }
  if (keys_.empty()) {
    wire::RandomBytes(peers_[index].id);
  } else {
    peers_[index].id = wire::NodeIdOf(keys_[index].public_key);
  }
  return absl::OkStatus();
}

absl::Status PingLoad::Open(const base::Endpoint& target, uint32_t peers, uint32_t window,
                            bool connected, bool gso, bool identities, uint32_t pad,
                            uint32_t peer_offset) {
  RP_ASSERT(IsLoopback(target));
  RP_ASSERT(window >= 1);
  RP_ASSERT(window <= kWindowMax);
  Close();
  target_ = target;
  window_ = window;
  connected_ = connected;
  gso_ = gso;
  pad_ = pad;
  peer_offset_ = peer_offset;
  responders_.clear();
  keys_.clear();
  if (identities) {
    // Fresh random identities each run (~25 us each): a node keeps no state about them.
    keys_.reserve(peers);
    for (uint32_t i = 0; i < peers; ++i) keys_.push_back(wire::KeyPair::Generate());
    for (uint32_t i = 0; i < peers; ++i) {
      responders_.push_back(std::make_unique<dht::PingResponder>(keys_[i], 0));
    }
  }
  target_sa_len_ = target.ToSockaddr(&target_sa_, !target.is_v4());
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return ErrnoError(errno, "epoll_create1");
  peers_.assign(peers, Peer{});
  slot_txid_.assign(size_t{peers} * window, 0);
  idle_.assign(size_t{peers} * window, 0);
  idle_count_.assign(peers, 0);
  slot_sent_ns_.assign(size_t{peers} * window, 0);
  events_.resize(kEpollEventsMax);
  if (!rx_) rx_ = std::make_unique<RecvBatch>();
  if (!tx_) tx_ = std::make_unique<SendBatch>();
  for (unsigned i = 0; i < kRecvBatch; ++i) {
    rx_->iov[i] = {rx_->data[i], kRecvBytesMax};
    rx_->msgs[i].msg_hdr = {};
    rx_->msgs[i].msg_hdr.msg_iov = &rx_->iov[i];
    rx_->msgs[i].msg_hdr.msg_iovlen = 1;
  }
  for (unsigned i = 0; i < kWindowMax; ++i) {
    tx_->iov[i] = {tx_->data[i], 0};
    tx_->msgs[i].msg_hdr = {};
    tx_->msgs[i].msg_hdr.msg_name = connected_ ? nullptr : &target_sa_;
    tx_->msgs[i].msg_hdr.msg_namelen = connected_ ? 0 : target_sa_len_;
    tx_->msgs[i].msg_hdr.msg_iov = &tx_->iov[i];
    tx_->msgs[i].msg_hdr.msg_iovlen = 1;
  }
  for (uint32_t i = 0; i < peers; ++i) {
    absl::Status st = OpenPeer(i);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

// SendPings: fills the given slots of peer `p` with fresh pings, sent in one sendmmsg.
void PingLoad::SendPings(uint32_t p, const uint32_t* slots, uint32_t count,
                         bool measure) noexcept {
  RP_ASSERT(count <= window_);
  Peer& peer = peers_[p];
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t txid = MakeTxid(p, ++peer.generation, slots[i]);
    const size_t n = Encode(p, txid, {tx_->data[i], wire::kDatagramBytesMax});
    RP_ASSERT(n > 0);
    tx_->iov[i].iov_len = n;
    slot_txid_[size_t{p} * window_ + slots[i]] = txid;
  }
  // One clock read for the batch: the pings leave together.
  const int64_t now_ns = NowNs();
  for (uint32_t i = 0; i < count; ++i) slot_sent_ns_[size_t{p} * window_ + slots[i]] = now_ns;
  const uint32_t ok = SendBatchTo(peer.fd, count);
  // Unsent pings keep their slot and send time, so they come back as lost and are replaced.
  if (measure) result_.send_errors += count - ok;
}

size_t PingLoad::Encode(uint32_t p, uint64_t txid, std::span<uint8_t> out) noexcept {
  const Peer& peer = peers_[p];
  wire::NodeId key;
  switch (mode_) {
    case Mode::kPing: break;
    case Mode::kFindNode:
      rng_.Fill(key);
      return encoder_.FindNode(out, wire::kNoShardHint, txid, peer.id, key, kFindNodeCount,
                               pad_);
    case Mode::kGetProviders:
      rng_.Fill(key);
      return encoder_.GetProviders(out, wire::kNoShardHint, txid, peer.id, key, 8, pad_);
    case Mode::kAnnounce:
      // One key per window slot: a node keeps at most 16 records per source address, so
      // fresh keys would be refused after 16; these are refreshed, as a relay's are.
      key = peer.id;
      key[31] ^= static_cast<uint8_t>(TxidSlot(txid) + 1);
      return encoder_.Announce(out, wire::kNoShardHint, txid, peer.id, key, peer.token);
  }
  return encoder_.Ping(out, wire::kNoShardHint, txid, peer.id, nullptr);
}

bool PingLoad::ServeNode(uint32_t p, const wire::Message& m, bool measure) noexcept {
  if (responders_.empty() || m.type() != wire::MessageType::kPing) return false;
  // Our pings come back only from an echo, and the DHT modes have none.
  outbox_.Use(this, peers_[p].fd);
  const int64_t now_us = (NowNs() - start_ns_) / 1000;
  if (responders_[p]->Answer(now_us, target_, m, outbox_) == wire::Verdict::kOk &&
      outbox_.sent_ok_) {
    if (m.ping()->challenge() != nullptr) peers_[p].challenged = true;
    if (measure) ++result_.served;
  }
  return true;
}

// SendBatchTo: sends the first `count` encoded pings on `fd`; returns how many left.
// With GSO, one sendmsg carries them all as one buffer that the kernel splits into
// `count` datagrams of equal size: the node receives exactly what sendmmsg would deliver,
// but the loader pays the IP and loopback path once per batch instead of once per ping.
uint32_t PingLoad::SendBatchTo(int fd, uint32_t count) noexcept {
  const size_t size = tx_->iov[0].iov_len;
  bool same_size = true;
  for (uint32_t i = 1; i < count; ++i) same_size &= tx_->iov[i].iov_len == size;
  if (gso_ && count > 1 && same_size) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint16_t))] = {};
    msghdr msg = tx_->msgs[0].msg_hdr;
    msg.msg_iovlen = count;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    const uint16_t segment = static_cast<uint16_t>(size);
    std::memcpy(CMSG_DATA(cm), &segment, sizeof(segment));
    if (sendmsg(fd, &msg, MSG_DONTWAIT) >= 0) return count;
    // A kernel or device without UDP GSO says so once; from then on use sendmmsg.
    if (errno != EIO && errno != EINVAL && errno != ENOPROTOOPT) return 0;
    gso_ = false;
  }
  const int sent = sendmmsg(fd, tx_->msgs, count, MSG_DONTWAIT);
  return sent > 0 ? static_cast<uint32_t>(sent) : 0;
}

// Classify: one received datagram. A matching answer frees its slot for the next ping.
void PingLoad::Classify(uint32_t p, const uint8_t* data, size_t size, int64_t now_ns,
                        bool measure, uint32_t* free_slots, uint32_t* free_count) noexcept {
  wire::Message m;
  uint64_t txid = 0;
  bool pong = false;
  bool matched_kind = false;
  bool full = true;  // a FindNode answer with all 20 contacts
  if (wire::Decode(data, size, &m) == wire::Verdict::kOk) {
    if (m.type() == wire::MessageType::kPing) {
      if (ServeNode(p, m, measure)) return;
      if (std::memcmp(m.ping()->sender()->b()->Data(), peers_[p].id.data(), 32) == 0) {
        txid = m.ping()->txid();  // our own ping, sent back by an echo server
        matched_kind = true;
      }
    } else if (m.type() == ReplyType(mode_)) {
      txid = wire::RequestTxid(m);
      matched_kind = true;
      pong = mode_ == Mode::kPing;
      if (mode_ == Mode::kFindNode) {
        full = m.nodes()->nodes() != nullptr && m.nodes()->nodes()->size() >= kFindNodeCount;
      }
    }
  }
  const uint32_t slot = TxidSlot(txid);
  // txid 0 marks a free slot, so a reply claiming it must not match (it would free a slot
  // twice in one batch).
  if (!matched_kind || txid == 0 || TxidPeer(txid) != p || slot >= window_) {
    if (measure) ++result_.other;
    return;
  }
  const size_t index = size_t{p} * window_ + slot;
  if (slot_txid_[index] != txid) {
    if (measure) ++result_.late;
    return;
  }
  slot_txid_[index] = 0;  // txid 0 is never sent (generations start at 1), so this frees it
  free_slots[(*free_count)++] = slot;
  if (!measure) return;
  if (!full) {
    ++result_.short_answers;
    return;
  }
  ++result_.answered;
  ++(pong || mode_ != Mode::kPing ? result_.pongs : result_.echoes);
  result_.latency.Record(now_ns - slot_sent_ns_[index]);
}

void PingLoad::DrainForJoin(uint32_t p) noexcept {
  const int n = recvmmsg(peers_[p].fd, rx_->msgs, kRecvBatch, MSG_DONTWAIT, nullptr);
  for (int i = 0; i < n; ++i) {
    wire::Message m;
    if (wire::Decode(rx_->data[i], rx_->msgs[i].msg_len, &m) != wire::Verdict::kOk) continue;
    if (ServeNode(p, m, false)) continue;
    if (m.type() == wire::MessageType::kProviders && m.providers()->token() != nullptr) {
      std::memcpy(peers_[p].token.data(), m.providers()->token()->b()->Data(),
                  peers_[p].token.size());
      peers_[p].has_token = true;
    }
  }
}

uint32_t PingLoad::Join() noexcept {
  RP_ASSERT(!responders_.empty());
  for (uint32_t p = 0; p < peers_.size(); ++p) {
    outbox_.Use(this, peers_[p].fd);
    const size_t n = encoder_.Ping(outbox_.Buffer(), wire::kNoShardHint,
                                   MakeTxid(p, ++peers_[p].generation, 0), peers_[p].id, nullptr);
    outbox_.Commit(n, target_);
  }
  const int64_t start = NowNs();
  int64_t last_change = start;
  uint32_t challenged = 0;
  // Bounded by kJoinMaxNs; each pass waits at most kEpollWaitMs.
  while (NowNs() - start < kJoinMaxNs && NowNs() - last_change < kJoinQuietNs) {
    const int ready = epoll_wait(epoll_fd_, events_.data(), kEpollEventsMax, kEpollWaitMs);
    for (int i = 0; i < ready; ++i) DrainForJoin(events_[i].data.u32);
    uint32_t now_challenged = 0;
    for (const Peer& peer : peers_) now_challenged += peer.challenged;
    if (now_challenged != challenged) {
      challenged = now_challenged;
      last_change = NowNs();
    }
  }
  return challenged;
}

uint32_t PingLoad::FetchTokens() noexcept {
  RP_ASSERT(!responders_.empty());
  wire::NodeId key{};
  const int64_t start = NowNs();
  int64_t next_ask = start;
  uint32_t have = 0;
  // Asks every peer still without a token every 200 ms, for at most 5 s.
  while (have < peers_.size() && NowNs() - start < 5'000'000'000) {
    if (NowNs() >= next_ask) {
      for (uint32_t p = 0; p < peers_.size(); ++p) {
        if (peers_[p].has_token) continue;
        outbox_.Use(this, peers_[p].fd);
        const size_t n = encoder_.GetProviders(outbox_.Buffer(), wire::kNoShardHint,
                                               MakeTxid(p, ++peers_[p].generation, 0),
                                               peers_[p].id, key, 0, pad_);
        outbox_.Commit(n, target_);
      }
      next_ask = NowNs() + 200'000'000;
    }
    const int ready = epoll_wait(epoll_fd_, events_.data(), kEpollEventsMax, kEpollWaitMs);
    for (int i = 0; i < ready; ++i) DrainForJoin(events_[i].data.u32);
    have = 0;
    for (const Peer& peer : peers_) have += peer.has_token;
  }
  return have;
}

// ServicePeer: drains peer `p`'s socket and refills its window in one send batch.
void PingLoad::ServicePeer(uint32_t p, int64_t measure_from_ns) noexcept {
  const int n = recvmmsg(peers_[p].fd, rx_->msgs, kRecvBatch, MSG_DONTWAIT, nullptr);
  if (n <= 0) {
    // ECONNREFUSED: an ICMP port-unreachable (nobody listening); EAGAIN: spurious wakeup.
    if (n < 0 && errno != EAGAIN && NowNs() >= measure_from_ns) ++result_.recv_errors;
    return;
  }
  const int64_t now_ns = NowNs();
  const bool measure = now_ns >= measure_from_ns;
  uint32_t free_slots[kRecvBatch];
  uint32_t free_count = 0;
  for (int i = 0; i < n; ++i) {
    Classify(p, rx_->data[i], rx_->msgs[i].msg_len, now_ns, measure, free_slots, &free_count);
  }
  RP_ASSERT(free_count <= window_);  // each slot is freed at most once per ping
  if (free_count == 0) return;
  if (rate_ == 0) {
    SendPings(p, free_slots, free_count, measure);
    return;
  }
  for (uint32_t i = 0; i < free_count; ++i) {
    RP_ASSERT(idle_count_[p] < window_);
    idle_[size_t{p} * window_ + idle_count_[p]++] = static_cast<uint8_t>(free_slots[i]);
  }
}

// ReplaceLost: abandons every ping older than kLostAfterNs and sends a fresh one in its slot.
void PingLoad::ReplaceLost(int64_t now_ns, bool measure) noexcept {
  uint32_t slots[kWindowMax];
  for (uint32_t p = 0; p < peers_.size(); ++p) {
    uint32_t count = 0;
    for (uint32_t s = 0; s < window_; ++s) {
      const size_t index = size_t{p} * window_ + s;
      // txid 0: an idle slot of a paced run, waiting for its turn, not a ping in flight.
      if (slot_txid_[index] != 0 && now_ns - slot_sent_ns_[index] > kLostAfterNs) {
        slots[count++] = s;
      }
    }
    if (count == 0) continue;
    if (measure) result_.lost += count;
    SendPings(p, slots, count, measure);
  }
}

void PingLoad::Pace(int64_t now_ns, bool measure) noexcept {
  const auto owed_total = static_cast<uint64_t>(
      static_cast<double>(now_ns - pace_start_ns_) * static_cast<double>(rate_) / 1e9);
  if (owed_total <= paced_sent_) return;
  uint64_t owed = owed_total - paced_sent_;
  const auto catch_up_max = static_cast<uint64_t>(rate_ * kPaceCatchUpNs / 1'000'000'000) + 1;
  if (owed > catch_up_max) {
    paced_sent_ += owed - catch_up_max;  // forgiven: we were descheduled, not the node slow
    owed = catch_up_max;
  }
  uint32_t slots[kWindowMax];
  // Bounded: one pass over the peers at most.
  for (uint32_t visited = 0; visited < peers_.size() && owed > 0; ++visited) {
    const uint32_t p = pace_cursor_;
    pace_cursor_ = pace_cursor_ + 1 == peers_.size() ? 0 : pace_cursor_ + 1;
    const uint32_t take = static_cast<uint32_t>(std::min<uint64_t>(idle_count_[p], owed));
    if (take == 0) continue;
    for (uint32_t i = 0; i < take; ++i) slots[i] = idle_[size_t{p} * window_ + --idle_count_[p]];
    SendPings(p, slots, take, measure);
    paced_sent_ += take;
    owed -= take;
  }
}

PhaseResult PingLoad::Run(long seconds, Mode mode) noexcept {
  result_ = PhaseResult{};
  mode_ = mode;
  const int64_t start_ns = NowNs();
  const int64_t measure_from_ns = start_ns + kWarmupNs;
  const int64_t end_ns = measure_from_ns + seconds * 1'000'000'000;
  std::array<uint32_t, kWindowMax> all_slots;
  for (uint32_t s = 0; s < window_; ++s) all_slots[s] = s;
  if (rate_ == 0) {
    for (uint32_t p = 0; p < peers_.size(); ++p) SendPings(p, all_slots.data(), window_, false);
  } else {
    // Every slot starts idle; answers of an earlier phase that still arrive count as late.
    for (uint32_t p = 0; p < peers_.size(); ++p) {
      for (uint32_t s = 0; s < window_; ++s) {
        slot_txid_[size_t{p} * window_ + s] = 0;
        idle_[size_t{p} * window_ + s] = static_cast<uint8_t>(s);
      }
      idle_count_[p] = static_cast<uint8_t>(window_);
    }
    pace_start_ns_ = start_ns;
    paced_sent_ = 0;
  }
  const timespec tick{0, rate_ == 0 ? kEpollWaitMs * 1'000'000L : kPaceTickNs};
  int64_t next_scan_ns = start_ns + kLostScanEveryNs;
  int64_t now_ns = start_ns;
  while (now_ns < end_ns) {  // bounded by end_ns: each pass waits at most one tick
    const int ready = epoll_pwait2(epoll_fd_, events_.data(), kEpollEventsMax, &tick, nullptr);
    for (int i = 0; i < ready; ++i) ServicePeer(events_[i].data.u32, measure_from_ns);
    now_ns = NowNs();
    if (rate_ != 0) Pace(now_ns, now_ns >= measure_from_ns);
    if (now_ns >= next_scan_ns) {
      ReplaceLost(now_ns, now_ns >= measure_from_ns);
      next_scan_ns = now_ns + kLostScanEveryNs;
    }
  }
  result_.seconds = static_cast<double>(now_ns - measure_from_ns) / 1e9;
  return result_;
}

// ---------------------------------------------------------------------------------------
// The baseline echo child and process set-up
// ---------------------------------------------------------------------------------------

// EchoChild: a running ringpeer-udp-echo and the port it bound.
struct EchoChild {
  pid_t pid = -1;
  int stdout_fd = -1;
  uint16_t port = 0;
};

// EchoPath: ringpeer-udp-echo in the directory of our own executable.
inline absl::StatusOr<std::string> EchoPath() {
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return ErrnoError(errno, "readlink /proc/self/exe");
  std::string path(self, static_cast<size_t>(n));
  path = path.substr(0, path.rfind('/') + 1) + "ringpeer-udp-echo";
  if (access(path.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        "baseline needs ", path, " (build target ringpeer-udp-echo, or pass --no-baseline)"));
  }
  return path;
}

// ReadPortLine: reads the child's first line, "port=N", waiting at most the start timeout.
inline absl::StatusOr<uint16_t> ReadPortLine(int fd) {
  std::string line;
  const int64_t deadline_ns = NowNs() + int64_t{kEchoStartTimeoutMs} * 1'000'000;
  while (line.find('\n') == std::string::npos && line.size() < 64) {
    const int64_t left_ms = (deadline_ns - NowNs()) / 1'000'000;
    pollfd pfd{fd, POLLIN, 0};
    if (left_ms <= 0 || poll(&pfd, 1, static_cast<int>(left_ms)) <= 0) {
      return absl::DeadlineExceededError("ringpeer-udp-echo did not report its port");
    }
    char buf[64];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return absl::InternalError("ringpeer-udp-echo exited before reporting a port");
    line.append(buf, static_cast<size_t>(n));
  }
  long port = 0;
  const size_t end = line.find('\n');
  if (!line.starts_with("port=") || end == std::string::npos ||
      !ParseInt(std::string_view(line).substr(5, end - 5), 1, 65535, &port)) {
    return absl::InternalError(absl::StrCat("ringpeer-udp-echo said '", line, "'"));
  }
  return static_cast<uint16_t>(port);
}

// ExecEcho: in the forked child. Dies with the parent, so no echo outlives a crashed loader.
// Without --echo-cpu it gets back the CPU mask we started with, not the loader's own pin.
[[noreturn]] inline void ExecEcho(const std::string& path, int stdout_fd, int cpu,
                                  long lifetime_s, pid_t parent, const cpu_set_t& mask) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
  sched_setaffinity(0, sizeof(mask), &mask);
  dup2(stdout_fd, STDOUT_FILENO);
  std::string seconds = std::to_string(lifetime_s);
  std::string cpu_text = std::to_string(cpu);
  std::vector<const char*> args = {path.c_str(), "--listen", "127.0.0.1:0", "--seconds",
                                   seconds.c_str()};
  if (cpu >= 0) {
    args.push_back("--cpu");
    args.push_back(cpu_text.c_str());
  }
  args.push_back(nullptr);
  execv(path.c_str(), const_cast<char* const*>(args.data()));
  _exit(127);
}

inline void StopEcho(EchoChild* child) noexcept {
  if (child->pid <= 0) return;
  kill(child->pid, SIGTERM);
  int status = 0;
  pid_t done = 0;
  for (int waited_ms = 0; waited_ms < kEchoStopTimeoutMs; waited_ms += 10) {
    done = waitpid(child->pid, &status, WNOHANG);
    if (done != 0) break;
    usleep(10'000);
  }
  if (done == 0) {
    kill(child->pid, SIGKILL);
    waitpid(child->pid, &status, 0);
  }
  if (child->stdout_fd >= 0) close(child->stdout_fd);
  *child = EchoChild{};
}

inline absl::StatusOr<EchoChild> StartEcho(int cpu, long lifetime_s, const cpu_set_t& mask) {
  absl::StatusOr<std::string> path_or = EchoPath();
  if (!path_or.ok()) return path_or.status();
  const std::string path = *path_or;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe2");
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return ErrnoError(errno, "fork");
  if (pid == 0) ExecEcho(path, fds[1], cpu, lifetime_s, parent, mask);
  close(fds[1]);
  EchoChild child{pid, fds[0], 0};
  absl::StatusOr<uint16_t> port = ReadPortLine(fds[0]);
  if (!port.ok()) {
    StopEcho(&child);
    return port.status();
  }
  child.port = *port;
  return child;
}

inline absl::Status PinToCpu(int cpu, std::string_view flag) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    return ErrnoError(errno, absl::StrCat(std::string(flag), " ", cpu));
  }
  return absl::OkStatus();
}

// RaiseFileLimit: one descriptor per peer, plus a few for epoll, pipes and stdio.
inline absl::Status RaiseFileLimit(uint32_t peers) {
  constexpr rlim_t kSpareFds = 64;
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return ErrnoError(errno, "getrlimit");
  const rlim_t need = peers + kSpareFds;
  if (lim.rlim_cur >= need) return absl::OkStatus();
  if (lim.rlim_max < need) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--peers ", peers, " needs ", need, " file descriptors; the hard limit is ",
        lim.rlim_max, " (ulimit -Hn)"));
  }
  lim.rlim_cur = need;
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) return ErrnoError(errno, "setrlimit");
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// The ping subcommand
// ---------------------------------------------------------------------------------------

// Reporter: human lines to stdout, or to stderr when stdout carries JSON.
class Reporter {
 public:
  explicit Reporter(bool json) : json_(json) {}
  void Line(const std::string& text) const {
    std::fprintf(json_ ? stderr : stdout, "%s\n", text.c_str());
    std::fflush(json_ ? stderr : stdout);
  }
  void Final(const Summary& s) const {
    std::printf("%s\n", (json_ ? FormatJson(s) : FormatKeyValues(s)).c_str());
    std::fflush(stdout);
  }

 private:
  bool json_;
};

inline absl::StatusOr<PhaseResult> RunPhase(PingLoad* load, const base::Endpoint& target,
                                            const Options& o) {
  absl::Status st = load->Open(target, o.peers, o.window, o.connected, o.gso,
                               /*identities=*/false, 0, o.peer_offset);
  if (!st.ok()) return st;
  load->SetRate(o.rate);
  return load->Run(o.seconds);
}

inline absl::StatusOr<PhaseResult> RunBaseline(PingLoad* load, const Options& o,
                                               const cpu_set_t& mask, const Reporter& out) {
  const long lifetime_s = o.seconds + kWarmupNs / 1'000'000'000 + kEchoLifetimeMarginSeconds;
  absl::StatusOr<EchoChild> started = StartEcho(o.echo_cpu, lifetime_s, mask);
  if (!started.ok()) return started.status();
  EchoChild child = *started;
  base::Endpoint echo = *base::Endpoint::Parse("127.0.0.1:0");
  echo.port = child.port;
  out.Line(absl::StrCat("baseline: ringpeer-udp-echo pid ", child.pid, " on ", echo.ToString(),
                        o.echo_cpu >= 0 ? absl::StrCat(" (cpu ", o.echo_cpu, ")") : ""));
  absl::StatusOr<PhaseResult> r = RunPhase(load, echo, o);
  StopEcho(&child);
  return r;
}

inline int RunPing(const Options& o) {
  const Reporter out(o.json);
  if (!wire::InitCrypto()) {
    std::fprintf(stderr, "ringpeer-load: libsodium failed to initialise\n");
    return 1;
  }
  absl::Status st = RaiseFileLimit(o.peers);
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "ringpeer-load: %s\n", std::string(s.message()).c_str());
    return 1;
  };
  if (!st.ok()) return fail(st);
  out.Line(absl::StrFormat("ringpeer-load ping: %u peers x window %u, %d s measured "
                           "(after %.1f s warm-up) per phase%s",
                           o.peers, o.window, o.seconds, kWarmupNs / 1e9,
                           o.rate > 0 ? absl::StrCat(", offering ", o.rate, "/s") : ""));
  // Both phases run with the same pin; the echo child gets --echo-cpu or our original mask.
  cpu_set_t original_mask;
  CPU_ZERO(&original_mask);
  sched_getaffinity(0, sizeof(original_mask), &original_mask);
  if (o.cpu >= 0 && !(st = PinToCpu(o.cpu, "--cpu")).ok()) return fail(st);
  PingLoad load;
  std::optional<PhaseResult> baseline, target;
  if (o.baseline) {
    absl::StatusOr<PhaseResult> r = RunBaseline(&load, o, original_mask, out);
    if (!r.ok()) return fail(r.status());
    baseline = *r;
    out.Line(FormatPhase("baseline", *baseline));
  }
  if (!o.baseline_only) {
    absl::StatusOr<PhaseResult> r = RunPhase(&load, *o.target, o);
    if (!r.ok()) return fail(r.status());
    target = *r;
    out.Line(FormatPhase("target", *target));
  }
  out.Final(Summarize(target ? &*target : nullptr, baseline ? &*baseline : nullptr));
  if (target && target->answered == 0) {
    std::fprintf(stderr,
                 "ringpeer-load: no answers from %s (is a node listening there? if it answers "
                 "from another address, try --unconnected)\n",
                 o.target->ToString().c_str());
    return 1;
  }
  return 0;
}

// RunDht: the DHT modes. One set of peers (real identities) joins the node's table, then
// the node is measured with pings and with the mode's request, same peers, same run.
inline int RunDht(const Options& o) {
  const Reporter out(o.json);
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "ringpeer-load: %s\n", std::string(s.message()).c_str());
    return 1;
  };
  if (!wire::InitCrypto()) return fail(absl::InternalError("libsodium failed to initialise"));
  absl::Status st = RaiseFileLimit(o.peers);
  if (!st.ok()) return fail(st);
  if (o.cpu >= 0 && !(st = PinToCpu(o.cpu, "--cpu")).ok()) return fail(st);
  out.Line(absl::StrFormat("ringpeer-load %s: %u peers x window %u, %d s measured (after "
                           "%.1f s warm-up) for pings, then for %s; padding %u bytes",
                           ModeName(o.mode), o.peers, o.window, o.seconds, kWarmupNs / 1e9,
                           ModeName(o.mode), o.pad));
  PingLoad load;
  st = load.Open(*o.target, o.peers, o.window, o.connected, o.gso, /*identities=*/true, o.pad,
                 o.peer_offset);
  if (!st.ok()) return fail(st);
  const int64_t join_start = NowNs();
  const uint32_t joined = load.Join();
  out.Line(absl::StrFormat("joined: %u of %u peers answered the node's challenge (%.1f s)",
                           joined, o.peers, (NowNs() - join_start) / 1e9));
  if (joined == 0) {
    return fail(absl::UnavailableError(absl::StrCat(
        "no peer was challenged by ", o.target->ToString(),
        " (is a ringpeer node listening there, with room in its table?)")));
  }
  if (o.mode == Mode::kAnnounce) {
    const uint32_t tokens = load.FetchTokens();
    out.Line(absl::StrFormat("tokens: %u of %u peers", tokens, o.peers));
    if (tokens == 0) return fail(absl::UnavailableError("no announce token from the node"));
  }
  load.SetRate(o.rate);
  const PhaseResult pings = load.Run(o.seconds, Mode::kPing);
  out.Line(FormatPhase("pings", pings));
  const PhaseResult dht = load.Run(o.seconds, o.mode);
  out.Line(absl::StrFormat(
      "%-9s %9.0f answers/s  p50 %7.1f us  p99 %7.1f us  answered %u  short %u  lost %u  "
      "late %u  other %u  node pings served %u",
      ModeName(o.mode), dht.PerSecond(), dht.P50Us(), dht.P99Us(), dht.answered,
      dht.short_answers, dht.lost, dht.late, dht.other, dht.served));
  const DhtSummary sum = SummarizeDht(dht, pings, joined);
  std::printf("%s\n", FormatDhtKeyValues(sum).c_str());
  std::fflush(stdout);
  if (dht.answered == 0) {
    std::fprintf(stderr, "ringpeer-load: no %s answers from %s\n", ModeName(o.mode),
                 o.target->ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace ringpeer::load

#ifndef RINGPEER_LOAD_NO_MAIN
int main(int argc, char** argv) {
  using namespace ringpeer::load;
  Options o;
  std::string error;
  switch (ParseOptions(argc, argv, &o, &error)) {
    case ParseOutcome::kHelp:
      std::fputs(HelpText(), stdout);
      return 0;
    case ParseOutcome::kError:
      std::fprintf(stderr, "ringpeer-load: %s\n", error.c_str());
      return 2;
    case ParseOutcome::kRun:
      break;
  }
  return o.mode == Mode::kPing ? RunPing(o) : RunDht(o);
}
#endif
