// ringpeer-hostile: room traffic from addresses a relay has not proved (issue 11). A test
// tool for loopback only: it refuses any target outside 127.0.0.0/8.
//
// usage:
//   ringpeer-hostile reflect --target 127.0.0.1:PORT --room HEX [--sources N]
//                            [--seconds S] [--answer-probes N]
//     N sockets, each bound to its own 127.0.0.0/8 address (127.0.<k>.<j>), send RoomJoin,
//     RoomHeads (claiming an empty log, no epoch) and RoomSync (asking for the whole log)
//     for ROOM every 100 ms for S seconds, and then listen 2 s more. They never answer
//     anything (spoofed-looking sources), except the last --answer-probes N of them, which
//     answer pings with pongs echoing the txid (addresses that do receive: the control).
//     Prints one line per source and ends with
//     sources= silent_sent= silent_received= silent_max_ratio= answering_sent=
//     answering_received= answering_min_ratio=
//   ringpeer-hostile squat --target 127.0.0.1:PORT [--rooms N] [--sources N]
//                          [--seconds S]
//     Makes N new rooms (a fresh admin key and genesis each) and sends a RoomJoin carrying
//     each genesis, spread over the sources, retried every 300 ms until the relay answers
//     with the room's heads or S seconds pass. The sources answer pings (they prove their
//     addresses). Ends with: attempted= served= seconds=
//   ringpeer-hostile liar --target 127.0.0.1:1 --invite SELF_CONTAINED_INVITE [--seconds S]
//     A lying relay (issue 17): binds 127.0.1.2 (prints "listening 127.0.1.2:PORT"),
//     answers a RoomJoin for the invite's room with the real genesis (so that it passes
//     the room-id check) and RoomHeads, and every RoomHeads with a key epoch 0 it signed
//     itself (not the admin's). A joiner must refuse it. Ends with: joins= forged_sent=
//     (--target is unused; kept so every mode names a loopback address.)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "base/endpoint.h"
#include "base/rng.h"
#include "node/room/invite.h"
#include "node/room/records.h"
#include "wire/crypto.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace {

using namespace ringpeer;
using Clock = std::chrono::steady_clock;

struct Source {
  int fd = -1;
  base::Endpoint addr;
  uint64_t sent = 0, received = 0, datagrams_in = 0;
  bool answers = false;
  wire::NodeId id{};
};

bool Bind(Source* s, uint32_t index) {
  s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  // 127.0.<1 + index / 250>.<2 + index % 250>: one address per source, none 127.0.0.1.
  const uint32_t ip = (127u << 24) | ((1 + index / 250) << 8) | (2 + index % 250);
  a.sin_addr.s_addr = htonl(ip);
  if (bind(s->fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return false;
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(s->fd, reinterpret_cast<sockaddr*>(&bound), &len);
  s->addr = base::Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&bound), len);
  wire::RandomBytes(s->id);
  return true;
}

void Send(Source& s, const base::Endpoint& to, const uint8_t* buf, size_t n) {
  if (n == 0) return;
  sockaddr_storage ss;
  const socklen_t len = to.ToSockaddr(&ss, false);
  if (sendto(s.fd, buf, n, 0, reinterpret_cast<sockaddr*>(&ss), len) == static_cast<ssize_t>(n)) {
    s.sent += n;
  }
}

// Drain: reads everything waiting on every source; counts bytes; answers pings from the
// answering sources; calls on_msg for every decoded datagram.
template <typename F>
void Drain(std::vector<Source>& sources, const base::Endpoint& target, wire::Encoder& enc,
           F&& on_msg) {
  alignas(8) uint8_t buf[2048];
  alignas(8) uint8_t out[wire::kDatagramBytesMax];
  for (Source& s : sources) {
    for (int i = 0; i < 1000; ++i) {
      sockaddr_storage from;
      socklen_t len = sizeof(from);
      const ssize_t n =
          recvfrom(s.fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0) break;
      s.received += static_cast<uint64_t>(n);
      ++s.datagrams_in;
      wire::Message msg;
      if (wire::Decode(buf, static_cast<size_t>(n), &msg) != wire::Verdict::kOk) continue;
      if (msg.type() == wire::MessageType::kPing && s.answers) {
        const uint64_t txid = msg.ping()->txid();
        const base::Endpoint f = base::Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&from), len);
        Send(s, f, out, enc.Pong(out, static_cast<uint32_t>(txid & 0xFF), txid, s.id, f,
                                 nullptr, nullptr, true));
      }
      on_msg(s, msg);
    }
  }
}

std::string Arg(int argc, char** argv, const char* name, const char* def) {
  for (int i = 2; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return def;
}

int Reflect(const base::Endpoint& target, int argc, char** argv) {
  wire::Hash256 room{};
  if (!wire::ParseHex32(Arg(argc, argv, "--room", ""), &room)) {
    std::fprintf(stderr, "--room HEX (64 hex digits) is required\n");
    return 2;
  }
  const int n = std::atoi(Arg(argc, argv, "--sources", "8").c_str());
  const int answering = std::atoi(Arg(argc, argv, "--answer-probes", "0").c_str());
  const double seconds = std::atof(Arg(argc, argv, "--seconds", "10").c_str());
  if (n < 1 || n > 5000 || answering < 0 || answering > n || seconds <= 0 || seconds > 120) {
    std::fprintf(stderr, "bad --sources, --answer-probes or --seconds\n");
    return 2;
  }
  std::vector<Source> sources(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    if (!Bind(&sources[i], static_cast<uint32_t>(i))) {
      std::perror("bind");
      return 1;
    }
    sources[i].answers = i >= n - answering;
  }
  wire::Encoder enc;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  const auto start = Clock::now();
  const auto stop_sending = start + std::chrono::duration<double>(seconds);
  const auto stop = stop_sending + std::chrono::seconds(2);
  auto next = start;
  uint64_t round = 0;
  while (Clock::now() < stop) {  // bounded: seconds + 2
    if (Clock::now() >= next && Clock::now() < stop_sending) {
      for (Source& s : sources) {
        switch (round % 3) {
          case 0:
            Send(s, target, buf, enc.RoomJoin(buf, room, s.id, false));
            break;
          case 1: {
            wire::RoomHeadsFields f;
            f.room = room;
            f.sender = s.id;
            f.no_epoch = true;
            Send(s, target, buf, enc.RoomHeads(buf, f));
            break;
          }
          default:
            Send(s, target, buf, enc.RoomSync(buf, room, round, 0, {}));
            break;
        }
      }
      ++round;
      next += std::chrono::milliseconds(100);
    }
    pollfd pf[1] = {{sources[0].fd, POLLIN, 0}};
    poll(pf, 1, 5);
    Drain(sources, target, enc, [](Source&, const wire::Message&) {});
  }
  uint64_t silent_sent = 0, silent_received = 0, ans_sent = 0, ans_received = 0;
  double silent_max = 0, ans_min = 1e18;
  for (const Source& s : sources) {
    const double ratio = s.sent == 0 ? 0 : static_cast<double>(s.received) / s.sent;
    std::printf("source %s %s sent=%llu received=%llu datagrams=%llu ratio=%.2f\n",
                s.addr.ToString().c_str(), s.answers ? "answering" : "silent",
                static_cast<unsigned long long>(s.sent),
                static_cast<unsigned long long>(s.received),
                static_cast<unsigned long long>(s.datagrams_in), ratio);
    if (s.answers) {
      ans_sent += s.sent;
      ans_received += s.received;
      ans_min = std::min(ans_min, ratio);
    } else {
      silent_sent += s.sent;
      silent_received += s.received;
      silent_max = std::max(silent_max, ratio);
    }
  }
  if (answering == 0) ans_min = 0;
  std::printf("sources=%d silent_sent=%llu silent_received=%llu silent_max_ratio=%.3f "
              "answering_sent=%llu answering_received=%llu answering_min_ratio=%.3f\n",
              n, static_cast<unsigned long long>(silent_sent),
              static_cast<unsigned long long>(silent_received), silent_max,
              static_cast<unsigned long long>(ans_sent),
              static_cast<unsigned long long>(ans_received), ans_min);
  for (Source& s : sources) close(s.fd);
  return 0;
}

int Squat(const base::Endpoint& target, int argc, char** argv) {
  const int rooms = std::atoi(Arg(argc, argv, "--rooms", "1000").c_str());
  const int n = std::atoi(Arg(argc, argv, "--sources", "1").c_str());
  const double seconds = std::atof(Arg(argc, argv, "--seconds", "10").c_str());
  if (rooms < 1 || rooms > 100000 || n < 1 || n > 5000 || seconds <= 0 || seconds > 300) {
    std::fprintf(stderr, "bad --rooms, --sources or --seconds\n");
    return 2;
  }
  std::vector<Source> sources(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    if (!Bind(&sources[i], static_cast<uint32_t>(i))) {
      std::perror("bind");
      return 1;
    }
    sources[i].answers = true;
  }
  struct Made {
    wire::Hash256 id{};
    std::vector<uint8_t> genesis;
  };
  std::vector<Made> made(static_cast<size_t>(rooms));
  for (Made& m : made) {
    const wire::KeyPair admin = wire::KeyPair::Generate();
    wire::Hash256 salt{};
    wire::RandomBytes(salt);
    m.genesis = room::MakeGenesis(admin, "squat", room::ReducerKind::kChat,
                                  room::kStateBytesMaxDefault, salt);
    room::Genesis g;
    if (room::ParseGenesis(m.genesis, &g) != room::Verdict::kOk) return 1;
    m.id = g.room_id;
  }
  std::set<wire::Hash256> served;
  wire::Encoder enc;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  const auto start = Clock::now();
  const auto stop = start + std::chrono::duration<double>(seconds);
  auto next = start;
  while (Clock::now() < stop && served.size() < made.size()) {  // bounded by --seconds
    if (Clock::now() >= next) {
      for (size_t i = 0; i < made.size(); ++i) {
        if (served.contains(made[i].id)) continue;
        Source& s = sources[i % sources.size()];
        Send(s, target, buf, enc.RoomJoin(buf, made[i].id, s.id, false, made[i].genesis));
      }
      next += std::chrono::milliseconds(300);
    }
    pollfd pf[1] = {{sources[0].fd, POLLIN, 0}};
    poll(pf, 1, 5);
    Drain(sources, target, enc, [&](Source&, const wire::Message& msg) {
      if (msg.type() == wire::MessageType::kRoomHeads) served.insert(wire::RoomOf(msg));
    });
  }
  std::printf("attempted=%d served=%zu seconds=%.1f\n", rooms, served.size(),
              std::chrono::duration<double>(Clock::now() - start).count());
  for (Source& s : sources) close(s.fd);
  return 0;
}

// Liar: the lying relay (see the usage above).
int Liar(int argc, char** argv) {
  auto invite = room::ParseInvite(Arg(argc, argv, "--invite", ""));
  if (!invite.ok() || invite->genesis.empty()) {
    std::fprintf(stderr, "liar: --invite must be a self-contained invite\n");
    return 2;
  }
  const double seconds = std::atof(Arg(argc, argv, "--seconds", "20").c_str());
  // An epoch 0 for the room, signed by a key that is not the room's admin.
  std::array<uint8_t, 32> seed;
  wire::RandomBytes(seed);
  const wire::KeyPair fake_admin = wire::KeyPair::FromSeed(seed);
  room::KeyEpochSpec spec;
  spec.room_id = invite->room_id;
  wire::RandomBytes(spec.write_seed);
  wire::RandomBytes(spec.content_key);
  wire::RandomBytes(seed);
  spec.members = {{wire::KeyPair::FromSeed(seed).public_key, true}};
  const std::vector<uint8_t> forged = room::MakeKeyEpoch(
      fake_admin, spec, [](std::span<uint8_t> out) { wire::RandomBytes(out); });
  std::vector<Source> sources(1);
  if (!Bind(&sources[0], 0)) {
    std::fprintf(stderr, "liar: cannot bind\n");
    return 1;
  }
  sources[0].answers = true;
  std::printf("listening %s\n", sources[0].addr.ToString().c_str());
  std::fflush(stdout);
  wire::Encoder enc;
  alignas(8) uint8_t out[wire::kDatagramBytesMax];
  uint64_t joins = 0, forged_sent = 0;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    pollfd p{sources[0].fd, POLLIN, 0};
    poll(&p, 1, 50);
    // Drain answers pings itself; the room messages need the sender, read here instead.
    alignas(8) uint8_t buf[2048];
    for (int i = 0; i < 1000; ++i) {
      sockaddr_storage from;
      socklen_t len = sizeof(from);
      const ssize_t n = recvfrom(sources[0].fd, buf, sizeof(buf), 0,
                                 reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0) break;
      const base::Endpoint f = base::Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&from), len);
      wire::Message msg;
      if (wire::Decode(buf, static_cast<size_t>(n), &msg) != wire::Verdict::kOk) continue;
      Source& s = sources[0];
      if (msg.type() == wire::MessageType::kPing) {
        const uint64_t txid = msg.ping()->txid();
        Send(s, f, out, enc.Pong(out, static_cast<uint32_t>(txid & 0xFF), txid, s.id, f,
                                 nullptr, nullptr, true));
        continue;
      }
      if (!msg.is_room() || wire::RoomOf(msg) != invite->room_id) continue;
      if (msg.type() == wire::MessageType::kRoomJoin) {
        ++joins;
        if (msg.room_join()->want_genesis()) {
          Send(s, f, out, enc.RoomEpoch(out, invite->room_id, invite->genesis, true));
        }
        wire::RoomHeadsFields h;
        h.room = invite->room_id;
        h.sender = s.id;
        h.relay = true;
        h.epoch = 0;
        h.heads_digest = wire::Hasher().Final();
        Send(s, f, out, enc.RoomHeads(out, h));
      } else if (msg.type() == wire::MessageType::kRoomHeads) {
        Send(s, f, out, enc.RoomEpoch(out, invite->room_id, forged));
        ++forged_sent;
      }
    }
  }
  std::printf("joins=%llu forged_sent=%llu\n", static_cast<unsigned long long>(joins),
              static_cast<unsigned long long>(forged_sent));
  close(sources[0].fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: ringpeer-hostile reflect|squat --target 127.0.0.1:PORT ...\n");
    return 2;
  }
  if (!wire::InitCrypto()) return 1;
  auto target = base::Endpoint::Parse(Arg(argc, argv, "--target", ""));
  if (!target || !target->is_v4() || target->ip[0] != 127) {
    std::fprintf(stderr, "--target must be a 127.0.0.0/8 ADDR:PORT (loopback only)\n");
    return 2;
  }
  const std::string mode = argv[1];
  if (mode == "reflect") return Reflect(*target, argc, argv);
  if (mode == "squat") return Squat(*target, argc, argv);
  if (mode == "liar") return Liar(argc, argv);
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
