// ringpeer-flood: sends malformed datagrams at a node, mixed with honest pings, and a
// pong with a forged signature to every challenge the node sends back. A test tool for
// loopback only (refuses other targets).
//
// usage: ringpeer-flood --target 127.0.0.1:PORT [--count N] [--sources S] [--seed X]
//                      [--mode malformed|dht|challenges] [--rate R]
// malformed (default) ends with: sent= malformed= pings= pongs= challenges= forged_pongs=
// dht: one address floods find_node requests and announces with forged tokens at R
// datagrams/s (default 20000, 4x the node's default per-address limit), while a second
// address is a client asking one find_node at a time (retried); ends with: flood_sent=
// forged_announces= flood_seconds= honest_sent= honest_answered= honest_retries=
// honest_unanswered=
// challenges: pings that each carry a challenge, from every source, as fast as possible;
// ends with: challenges_sent= signed_pongs= seconds=
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/endpoint.h"
#include "base/rng.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace {

using namespace ringpeer;

struct Counts {
  uint64_t sent = 0, malformed = 0, pings = 0, pongs = 0, challenges = 0, forged = 0;
};

enum class Kind { kRandom, kTruncated, kBadMagic, kBadVersion, kLyingLength, kReserved,
                  kUnknownType, kFlipped, kOversize, kCount };

// Malformed: one hostile datagram of `kind` into buf; returns its length.
size_t Malformed(Kind kind, base::Rng& rng, wire::Encoder& enc, const wire::NodeId& id,
                 uint8_t* buf) {
  size_t n = enc.Ping({buf, wire::kDatagramBytesMax}, 0, rng.Next(), id, nullptr);
  switch (kind) {
    case Kind::kRandom:
      n = rng.Uniform(wire::kDatagramBytesMax);
      rng.Fill({buf, n});
      return n;
    case Kind::kTruncated: {
      n = wire::kHeaderBytes + rng.Uniform(n - wire::kHeaderBytes);
      const uint16_t body = static_cast<uint16_t>(n - wire::kHeaderBytes);
      std::memcpy(buf + 12, &body, 2);  // an honest length over a cut body
      return n;
    }
    case Kind::kBadMagic: buf[1] ^= 0x40; return n;
    case Kind::kBadVersion: buf[4] = 9; return n;
    case Kind::kLyingLength: buf[12] += 7; return n;
    case Kind::kReserved: buf[14] = 1; return n;
    case Kind::kUnknownType: buf[5] = 99; return n;
    case Kind::kFlipped:
      for (int i = 0; i < 4; ++i) buf[wire::kHeaderBytes + rng.Uniform(n - wire::kHeaderBytes)] ^= 0xA5;
      return n;
    case Kind::kOversize:
      rng.Fill({buf, 1300});
      return 1300;
    case Kind::kCount: break;
  }
  return n;
}

// DhtFlood: the --mode dht run. Returns the summary line.
//
// The flood is paced at `rate` datagrams/s, so what it measures is the node's per-address
// limit, not how fast this machine happens to be: an unpaced flood from a fast sender fills
// the node's socket buffer, and the kernel then drops the honest peer's datagrams before
// the node ever sees them (that made this test flaky on a loaded machine). The honest peer
// is a real client: one find_node at a time, every 10 ms, retried after 250 ms up to 3
// tries, and counted answered when any try gets its Nodes reply.
std::string DhtFlood(int flood_fd, int honest_fd, const sockaddr_storage& to, socklen_t to_len,
                     uint64_t count, uint64_t rate, base::Rng& rng) {
  using Clock = std::chrono::steady_clock;
  wire::Encoder enc;
  const wire::NodeId id = wire::NodeIdOf(wire::KeyPair::FromSeed({43}).public_key);
  const wire::NodeId honest_id = wire::NodeIdOf(wire::KeyPair::FromSeed({45}).public_key);
  alignas(8) uint8_t buf[1400];
  alignas(8) uint8_t hbuf[1400];
  alignas(8) uint8_t in[2048];
  uint64_t flood_sent = 0, forged = 0, honest_sent = 0, honest_answered = 0;
  uint64_t honest_retries = 0, honest_unanswered = 0;
  // The honest peer's one request in flight.
  uint64_t h_txid = 0;
  size_t h_len = 0;
  int h_tries = 0;
  Clock::time_point h_sent_at{}, h_next = Clock::now();
  auto honest_step = [&](Clock::time_point now) {
    for (int k = 0; k < 64; ++k) {
      ssize_t r = recv(honest_fd, in, sizeof(in), 0);
      if (r <= 0) break;
      wire::Message m;
      if (wire::Decode(in, static_cast<size_t>(r), &m) == wire::Verdict::kOk &&
          m.type() == wire::MessageType::kNodes && h_tries > 0 && m.nodes()->txid() == h_txid) {
        ++honest_answered;
        h_tries = 0;
      }
    }
    if (h_tries > 0 && now - h_sent_at >= std::chrono::milliseconds(250)) {
      if (h_tries >= 3) {
        ++honest_unanswered;
        h_tries = 0;
      } else {
        if (sendto(honest_fd, hbuf, h_len, 0, reinterpret_cast<const sockaddr*>(&to), to_len) > 0) {
          ++honest_retries;
        }
        ++h_tries;
        h_sent_at = now;
      }
    }
  };
  auto honest_send = [&](Clock::time_point now) {
    if (h_tries > 0 || now < h_next) return;
    wire::NodeId target;
    rng.Fill(target);
    h_txid = (honest_sent + 1) << 8;
    h_len = enc.FindNode({hbuf, sizeof(hbuf)}, wire::kNoShardHint, h_txid, honest_id, target,
                         20, 0);
    if (sendto(honest_fd, hbuf, h_len, 0, reinterpret_cast<const sockaddr*>(&to), to_len) > 0) {
      ++honest_sent;
    }
    h_tries = 1;
    h_sent_at = now;
    h_next = now + std::chrono::milliseconds(10);
  };
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(60);
  const double per_datagram_s = 1.0 / static_cast<double>(std::max<uint64_t>(rate, 1));
  uint64_t i = 0;
  while (i < count && Clock::now() < deadline) {
    // Send what is due by now (the schedule is start + i / rate), in bursts of <= 64.
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - start).count();
    const uint64_t due = std::min<uint64_t>(count, static_cast<uint64_t>(elapsed / per_datagram_s) + 1);
    for (int burst = 0; i < due && burst < 64; ++burst, ++i) {
      wire::NodeId target;
      rng.Fill(target);
      size_t n;
      if (i % 10 == 9) {
        wire::Token token;
        rng.Fill(token);
        n = enc.Announce({buf, sizeof(buf)}, wire::kNoShardHint, i << 8, id, target, token);
        ++forged;
      } else {
        n = enc.FindNode({buf, sizeof(buf)}, wire::kNoShardHint, i << 8, id, target, 20, 0);
      }
      if (sendto(flood_fd, buf, n, 0, reinterpret_cast<const sockaddr*>(&to), to_len) > 0) {
        ++flood_sent;
      }
    }
    honest_send(now);
    honest_step(now);
    if (i >= due) {
      pollfd p{honest_fd, POLLIN, 0};
      poll(&p, 1, 1);
    }
  }
  const double flood_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // Let the honest peer's last request finish (bounded: 3 tries of 250 ms).
  for (int round = 0; round < 100 && h_tries > 0; ++round) {
    pollfd p{honest_fd, POLLIN, 0};
    poll(&p, 1, 10);
    honest_step(Clock::now());
  }
  if (h_tries > 0) ++honest_unanswered;
  char line[320];
  std::snprintf(line, sizeof(line),
                "flood_sent=%lu forged_announces=%lu flood_seconds=%.3f honest_sent=%lu "
                "honest_answered=%lu honest_retries=%lu honest_unanswered=%lu",
                flood_sent, forged, flood_seconds, honest_sent, honest_answered, honest_retries,
                honest_unanswered);
  return line;
}

// ChallengeFlood: the --mode challenges run: pings that each carry a fresh challenge, from
// every source, as fast as possible. Counts the pongs that came back signed.
std::string ChallengeFlood(const std::vector<int>& fds, const sockaddr_storage& to,
                           socklen_t to_len, uint64_t count, base::Rng& rng) {
  wire::Encoder enc;
  const wire::NodeId id = wire::NodeIdOf(wire::KeyPair::FromSeed({44}).public_key);
  alignas(8) uint8_t buf[1400];
  alignas(8) uint8_t in[2048];
  uint64_t sent = 0, signed_pongs = 0, plain_pongs = 0;
  auto drain = [&](int fd) {
    for (int k = 0; k < 256; ++k) {
      ssize_t r = recv(fd, in, sizeof(in), 0);
      if (r <= 0) return;
      wire::Message m;
      if (wire::Decode(in, static_cast<size_t>(r), &m) != wire::Verdict::kOk ||
          m.type() != wire::MessageType::kPong) {
        continue;
      }
      (m.pong()->signature() != nullptr ? signed_pongs : plain_pongs)++;
    }
  };
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < count && std::chrono::steady_clock::now() - start <
                                        std::chrono::seconds(30); ++i) {
    wire::Hash256 challenge;
    rng.Fill(challenge);
    const size_t n = enc.Ping({buf, sizeof(buf)}, wire::kNoShardHint, i << 8, id, &challenge);
    const int fd = fds[i % fds.size()];
    if (sendto(fd, buf, n, 0, reinterpret_cast<const sockaddr*>(&to), to_len) > 0) ++sent;
    if (i % 512 == 511) {
      for (int f : fds) drain(f);
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int round = 0; round < 10; ++round) {
    pollfd p{fds[0], POLLIN, 0};
    poll(&p, 1, 50);
    for (int f : fds) drain(f);
  }
  char line[160];
  std::snprintf(line, sizeof(line), "challenges_sent=%lu signed_pongs=%lu seconds=%.3f", sent,
                signed_pongs, secs);
  return line;
}

int Usage(const char* msg) {
  std::fprintf(stderr, "ringpeer-flood: %s\nusage: ringpeer-flood --target 127.0.0.1:PORT "
               "[--count N] [--sources S] [--seed X]\n", msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<base::Endpoint> target;
  uint64_t count = 100000, sources = 64, seed = 1, rate = 20000;
  std::string mode = "malformed";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i], v = argv[i + 1];
    if (f == "--target") target = base::Endpoint::Parse(v);
    else if (f == "--count") count = std::strtoull(v.c_str(), nullptr, 10);
    else if (f == "--sources") sources = std::strtoull(v.c_str(), nullptr, 10);
    else if (f == "--seed") seed = std::strtoull(v.c_str(), nullptr, 10);
    else if (f == "--mode") mode = v;
    else if (f == "--rate") rate = std::strtoull(v.c_str(), nullptr, 10);
    else return Usage(("unknown flag " + f).c_str());
  }
  if (!target || !target->is_v4() || target->ip[0] != 127) return Usage("--target must be 127.x.x.x:PORT");
  if (sources == 0 || sources > 250) return Usage("--sources must be 1..250");
  wire::InitCrypto();
  base::Rng rng(seed);
  std::vector<int> fds;
  for (uint64_t s = 0; s < sources; ++s) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7F000100u + static_cast<uint32_t>(s) + 2);  // 127.0.1.x
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      std::perror("ringpeer-flood: bind");
      return 1;
    }
    fds.push_back(fd);
  }
  sockaddr_storage to;
  const socklen_t to_len = target->ToSockaddr(&to, false);
  if (mode == "dht") {
    if (fds.size() < 2) return Usage("--mode dht needs --sources >= 2");
    std::printf("%s\n", DhtFlood(fds[0], fds[1], to, to_len, count, rate, rng).c_str());
    for (int f : fds) close(f);
    return 0;
  }
  if (mode == "challenges") {
    std::printf("%s\n", ChallengeFlood(fds, to, to_len, count, rng).c_str());
    for (int f : fds) close(f);
    return 0;
  }
  if (mode != "malformed") return Usage("--mode must be malformed, dht or challenges");
  wire::Encoder enc;
  wire::KeyPair liar = wire::KeyPair::FromSeed({42});
  const wire::NodeId liar_id = wire::NodeIdOf(liar.public_key);
  alignas(8) uint8_t buf[1400];
  alignas(8) uint8_t in[2048];
  Counts c;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto drain = [&](int fd) {
    for (int k = 0; k < 64; ++k) {
      sockaddr_storage from;
      socklen_t fl = sizeof(from);
      ssize_t r = recvfrom(fd, in, sizeof(in), 0, reinterpret_cast<sockaddr*>(&from), &fl);
      if (r <= 0) return;
      wire::Message m;
      if (wire::Decode(in, static_cast<size_t>(r), &m) != wire::Verdict::kOk) continue;
      if (m.type() == wire::MessageType::kPong) ++c.pongs;
      if (m.type() == wire::MessageType::kPing && m.ping()->challenge() != nullptr) {
        // Answer the node's challenge with a signature over the wrong bytes.
        ++c.challenges;
        wire::Hash256 wrong = wire::FromWireId(*m.ping()->challenge());
        wrong[0] ^= 1;
        wire::Signature sig = wire::Sign(liar.secret_key, wire::PongSigningBytes(wrong));
        size_t n = enc.Pong({buf, sizeof(buf)}, 0, m.ping()->txid(), liar_id, *target,
                            &liar.public_key, &sig);
        if (sendto(fd, buf, n, 0, reinterpret_cast<sockaddr*>(&from), fl) > 0) ++c.forged;
      }
    }
  };
  for (uint64_t i = 0; i < count && std::chrono::steady_clock::now() < deadline; ++i) {
    const int fd = fds[i % fds.size()];
    size_t n;
    if (i % 10 == 0) {
      n = enc.Ping({buf, sizeof(buf)}, wire::kNoShardHint, i << 8, liar_id, nullptr);
      ++c.pings;
    } else {
      n = Malformed(static_cast<Kind>(rng.Uniform(int(Kind::kCount))), rng, enc, liar_id, buf);
      ++c.malformed;
    }
    if (sendto(fd, buf, n, 0, reinterpret_cast<sockaddr*>(&to), to_len) >= 0) ++c.sent;
    if (i % 256 == 255) {
      for (int f : fds) drain(f);
      // Pace to ~50k/s so that the per-address limits (not the socket buffers) decide.
      usleep(4000);
    }
  }
  // Let the last answers and challenges arrive (bounded).
  for (int round = 0; round < 20; ++round) {
    pollfd p{fds[0], POLLIN, 0};
    poll(&p, 1, 50);
    for (int f : fds) drain(f);
  }
  for (int f : fds) close(f);
  std::printf("sent=%lu malformed=%lu pings=%lu pongs=%lu challenges=%lu forged_pongs=%lu\n",
              c.sent, c.malformed, c.pings, c.pongs, c.challenges, c.forged);
  return 0;
}
