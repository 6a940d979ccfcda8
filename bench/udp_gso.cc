// ringpeer-bench-udp-gso: what the kernel costs per datagram sent on loopback, datagram by
// datagram against UDP GSO bursts (issue 15: a relay's floods leave as bursts).
//
// One sender fans K datagrams of S bytes out to each of P receiving sockets on 127.0.0.1,
// the way a relay floods a receive batch to its members:
//   plain: one sendmmsg of P x K messages, one datagram each;
//   gso:   one sendmmsg of P messages, each K datagrams back to back with UDP_SEGMENT = S.
// The receivers are drained by one thread on another CPU (they stand for the members'
// machines). The figure is the sender thread's CPU time (CLOCK_THREAD_CPUTIME_ID) per
// datagram received, which on loopback includes the receive path the kernel runs in the
// sender's context. Modes alternate for --rounds rounds; the medians are reported.
//
// Usage: ringpeer-bench-udp-gso [--peers P] [--segments K] [--bytes S] [--datagrams N]
//                               [--rounds R]
// Last line: plain_us= gso_us= gso_over_plain= delivered= (key=value).
// Sends only to 127.0.0.1. Every loop is bounded by --datagrams and a 30 s deadline.
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
#include <thread>
#include <vector>

#include "bench/kernel_bench.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

namespace {

using ringpeer::bench::Median;
using ringpeer::bench::PinToCpu;
using ringpeer::bench::ThreadCpuUs;

using Clock = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(30);

int Fail(const char* what) {
  std::perror(what);
  return 1;
}

struct Options {
  int peers = 8;
  int segments = 20;
  int bytes = 1100;
  long datagrams = 400'000;
  int rounds = 5;
};

bool Parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    auto value = [&](long lo, long hi, long* out) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      const long v = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || v < lo || v > hi) return false;
      *out = v;
      return true;
    };
    long v = 0;
    const char* a = argv[i];
    if (std::strcmp(a, "--peers") == 0 && value(1, 64, &v)) {
      o->peers = static_cast<int>(v);
    } else if (std::strcmp(a, "--segments") == 0 && value(1, 40, &v)) {
      o->segments = static_cast<int>(v);
    } else if (std::strcmp(a, "--bytes") == 0 && value(64, 1200, &v)) {
      o->bytes = static_cast<int>(v);
    } else if (std::strcmp(a, "--datagrams") == 0 && value(1000, 100'000'000, &v)) {
      o->datagrams = v;
    } else if (std::strcmp(a, "--rounds") == 0 && value(1, 50, &v)) {
      o->rounds = static_cast<int>(v);
    } else {
      std::fprintf(stderr,
                   "usage: ringpeer-bench-udp-gso [--peers 1-64] [--segments 1-40] "
                   "[--bytes 64-1200] [--datagrams N] [--rounds 1-50]\n");
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!Parse(argc, argv, &o)) return 2;
  const bool two_cpus = std::thread::hardware_concurrency() >= 2;
  // The receivers: one socket per peer, large queues, drained by one spinning thread.
  std::vector<int> rx(o.peers);
  std::vector<sockaddr_in> to(o.peers);
  for (int p = 0; p < o.peers; ++p) {
    rx[p] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (rx[p] < 0) return Fail("socket");
    const int big = 8 << 20;
    (void)setsockopt(rx[p], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(rx[p], reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return Fail("bind");
    socklen_t len = sizeof(a);
    getsockname(rx[p], reinterpret_cast<sockaddr*>(&a), &len);
    to[p] = a;
  }
  const int tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (tx < 0) return Fail("socket");
  const int big = 8 << 20;
  (void)setsockopt(tx, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
  int zero = 0;
  if (setsockopt(tx, SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) != 0) {
    std::fprintf(stderr, "this kernel has no UDP_SEGMENT (GSO): nothing to compare\n");
    return 1;
  }
  std::atomic<bool> stop{false};
  std::atomic<long> delivered{0};
  std::thread drain([&] {
    if (two_cpus) PinToCpu(1);
    constexpr int kBatch = 64;
    static uint8_t bufs[kBatch][2048];
    iovec iov[kBatch];
    mmsghdr msgs[kBatch];
    while (!stop.load(std::memory_order_relaxed)) {
      for (int p = 0; p < o.peers; ++p) {
        for (int k = 0; k < kBatch; ++k) {
          iov[k] = iovec{bufs[k], sizeof(bufs[k])};
          msgs[k] = mmsghdr{};
          msgs[k].msg_hdr.msg_iov = &iov[k];
          msgs[k].msg_hdr.msg_iovlen = 1;
        }
        const int n = recvmmsg(rx[p], msgs, kBatch, MSG_DONTWAIT, nullptr);
        if (n > 0) delivered.fetch_add(n, std::memory_order_relaxed);
      }
    }
  });
  if (two_cpus) PinToCpu(0);
  // The burst: K segments of S bytes (the datagrams' bytes do not matter to the kernel).
  std::vector<uint8_t> burst(size_t(o.segments) * o.bytes, 0x5a);
  alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(uint16_t))];
  const int per_call = o.peers * o.segments;
  std::vector<iovec> iov(per_call);
  std::vector<mmsghdr> msgs(per_call);
  auto run = [&](bool gso) {
    const long before = delivered.load();
    const long want = o.datagrams;
    long sent = 0;
    const auto deadline = Clock::now() + kDeadline;
    const double cpu0 = ThreadCpuUs();
    while (sent < want && Clock::now() < deadline) {
      int count = 0;
      for (int p = 0; p < o.peers; ++p) {
        for (int k = 0; k < (gso ? 1 : o.segments); ++k) {
          mmsghdr& m = msgs[count];
          m = mmsghdr{};
          iov[count] = gso ? iovec{burst.data(), burst.size()}
                           : iovec{burst.data() + size_t(k) * o.bytes, size_t(o.bytes)};
          m.msg_hdr.msg_iov = &iov[count];
          m.msg_hdr.msg_iovlen = 1;
          m.msg_hdr.msg_name = &to[p];
          m.msg_hdr.msg_namelen = sizeof(to[p]);
          if (gso) {
            m.msg_hdr.msg_control = control;
            m.msg_hdr.msg_controllen = sizeof(control);
            cmsghdr* c = CMSG_FIRSTHDR(&m.msg_hdr);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            const uint16_t seg = static_cast<uint16_t>(o.bytes);
            std::memcpy(CMSG_DATA(c), &seg, sizeof(seg));
          }
          ++count;
        }
      }
      const int n = sendmmsg(tx, msgs.data(), static_cast<unsigned>(count), 0);
      if (n < 0) {
        std::perror("sendmmsg");
        break;
      }
      sent += long(n) * (gso ? o.segments : 1);
    }
    const double cpu = ThreadCpuUs() - cpu0;
    // Let the drain catch up (bounded), then count what arrived.
    const auto settle = Clock::now() + std::chrono::milliseconds(200);
    while (Clock::now() < settle && delivered.load() - before < sent) std::this_thread::yield();
    const long got = delivered.load() - before;
    std::printf("%-5s %ld datagrams sent, %ld delivered, %.3f us of sender CPU each\n",
                gso ? "gso" : "plain", sent, got, cpu / std::max(1L, got));
    return std::make_pair(cpu / std::max(1L, got), got);
  };
  std::vector<double> plain, gso;
  long got_all = 0, sent_all = 0;
  for (int r = 0; r < o.rounds; ++r) {
    auto [a, ga] = run(false);
    auto [b, gb] = run(true);
    plain.push_back(a);
    gso.push_back(b);
    got_all += ga + gb;
    sent_all += 2 * o.datagrams;
  }
  stop = true;
  drain.join();
  for (int fd : rx) close(fd);
  close(tx);
  const double pm = Median(plain), gm = Median(gso);
  std::printf("peers=%d segments=%d bytes=%d rounds=%d plain_us=%.3f gso_us=%.3f "
              "gso_over_plain=%.2f delivered=%.3f\n",
              o.peers, o.segments, o.bytes, o.rounds, pm, gm, gm / pm,
              double(got_all) / double(std::max(1L, sent_all)));
  return 0;
}
