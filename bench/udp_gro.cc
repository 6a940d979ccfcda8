// ringpeer-bench-udp-gro: what a receiver pays per datagram for bursts, with and without
// UDP GRO on its socket (issue 15: a joiner receives a checkpoint as GSO bursts of 32
// pieces; today every piece is a datagram of its own at the receiver).
//
// One sender thread (first CPU) sends --bursts UDP GSO bursts of --segments datagrams of
// --bytes each to one socket on 127.0.0.1; one receiver thread (second CPU) reads it with
// blocking recvmsg into a 64 KiB buffer. With GRO on (UDP_GRO), the kernel hands a burst
// to the receiver as one datagram with its segment size in a control message; the
// receiver counts the segments from it. The figures are each thread's CPU time
// (CLOCK_THREAD_CPUTIME_ID) per datagram received; on loopback the sender's includes the
// receive path the kernel runs in its context. Off and on alternate for --rounds rounds;
// the medians are reported.
//
// Usage: ringpeer-bench-udp-gro [--bursts N] [--segments K] [--bytes S] [--rounds R]
// Last line: off_rx_us= on_rx_us= off_tx_us= on_tx_us= rx_on_over_off= tx_on_over_off=
//            lost= (key=value). Sends only to 127.0.0.1; every wait is bounded (1 s without
// a datagram ends a round, 30 s ends the run).
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench/kernel_bench.h"
#include "ring/transport.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace {

using ringpeer::bench::Median;
using ringpeer::bench::PinToCpu;
using ringpeer::bench::ThreadCpuUs;

struct Round {
  double rx_us = 0, tx_us = 0;  // per datagram received
  long received = 0, expected = 0;
};

// One round: a fresh receiving socket (GRO on or off), `bursts` bursts sent to it.
bool RunRound(bool gro, int bursts, int segments, int bytes, Round* out) {
  const int rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (rx < 0) return false;
  const int big = 64 << 20;
  (void)setsockopt(rx, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
  timeval idle{1, 0};  // a round ends after 1 s without a datagram (lost ones)
  (void)setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
  if (gro) {
    if (!ringpeer::ring::SetUdpGro(rx, true)) {  // the transports' own switch
      std::perror("UDP_GRO");
      close(rx);
      return false;
    }
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(to);
  if (bind(rx, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0 ||
      getsockname(rx, reinterpret_cast<sockaddr*>(&to), &len) != 0) {
    close(rx);
    return false;
  }
  out->expected = long{bursts} * segments;
  std::atomic<long> received{0};
  double rx_cpu = 0;
  std::thread receiver([&] {
    PinToCpu(1);
    std::vector<uint8_t> buf(65536);
    alignas(cmsghdr) uint8_t control[64];
    const double cpu0 = ThreadCpuUs();
    long n = 0;
    while (n < out->expected) {
      iovec iov{buf.data(), buf.size()};
      msghdr m{};
      m.msg_iov = &iov;
      m.msg_iovlen = 1;
      m.msg_control = control;
      m.msg_controllen = sizeof(control);
      const ssize_t r = recvmsg(rx, &m, 0);
      if (r < 0) break;  // idle for 1 s: the rest was lost
      int segment = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO) {
          std::memcpy(&segment, CMSG_DATA(c), sizeof(segment));
        }
      }
      n += segment > 0 ? (r + segment - 1) / segment : 1;
    }
    rx_cpu = ThreadCpuUs() - cpu0;
    received.store(n);
  });
  PinToCpu(0);
  const int tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  std::vector<uint8_t> burst(size_t(segments) * bytes, 0x5a);
  ringpeer::ring::BurstControl control{};
  ringpeer::ring::SetBurstSegment(&control, static_cast<uint16_t>(bytes));
  const double cpu0 = ThreadCpuUs();
  for (int i = 0; tx >= 0 && i < bursts; ++i) {
    iovec iov{burst.data(), burst.size()};
    msghdr m{};
    m.msg_name = &to;
    m.msg_namelen = sizeof(to);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control.bytes;
    m.msg_controllen = sizeof(control.bytes);
    if (sendmsg(tx, &m, 0) < 0) {
      std::perror("sendmsg (UDP GSO)");
      break;
    }
    if (i % 64 == 63) usleep(200);  // a joiner's window: bursts come in groups
  }
  const double tx_cpu = ThreadCpuUs() - cpu0;
  receiver.join();
  if (tx >= 0) close(tx);
  close(rx);
  out->received = received.load();
  if (out->received == 0) return false;
  out->rx_us = rx_cpu / static_cast<double>(out->received);
  out->tx_us = tx_cpu / static_cast<double>(out->received);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int bursts = 3000, segments = 32, bytes = 1100, rounds = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](int lo, int hi, int* v) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      const long x = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || x < lo || x > hi) return false;
      *v = static_cast<int>(x);
      return true;
    };
    if (!((a == "--bursts" && value(1, 1'000'000, &bursts)) ||
          (a == "--segments" && value(1, 64, &segments)) ||
          (a == "--bytes" && value(64, 1200, &bytes)) ||
          (a == "--rounds" && value(1, 50, &rounds)))) {
      std::fprintf(stderr,
                   "usage: ringpeer-bench-udp-gro [--bursts N] [--segments 1-64] "
                   "[--bytes 64-1200] [--rounds 1-50]\n");
      return 2;
    }
  }
  std::vector<double> off_rx, on_rx, off_tx, on_tx;
  long lost = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (int r = 0; r < rounds && std::chrono::steady_clock::now() < deadline; ++r) {
    for (const bool gro : {false, true}) {
      Round round;
      if (!RunRound(gro, bursts, segments, bytes, &round)) {
        std::fprintf(stderr, "round %d (GRO %s) failed\n", r + 1, gro ? "on" : "off");
        return 1;
      }
      lost += round.expected - round.received;
      (gro ? on_rx : off_rx).push_back(round.rx_us);
      (gro ? on_tx : off_tx).push_back(round.tx_us);
      std::printf("round %d GRO %-3s: receiver %.3f us/datagram, sender %.3f us/datagram "
                  "(%ld of %ld)\n",
                  r + 1, gro ? "on" : "off", round.rx_us, round.tx_us, round.received,
                  round.expected);
    }
  }
  const double a = Median(off_rx), b = Median(on_rx), c = Median(off_tx), d = Median(on_tx);
  std::printf("off_rx_us=%.3f on_rx_us=%.3f off_tx_us=%.3f on_tx_us=%.3f rx_on_over_off=%.2f "
              "tx_on_over_off=%.2f lost=%ld\n",
              a, b, c, d, b / a, d / c, lost);
  return 0;
}
