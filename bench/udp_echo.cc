// ringpeer-udp-echo: the kernel's own UDP ceiling, as a baseline for ringpeer-load.
//
// A plain UDP echo server: one socket, recvmmsg/sendmmsg in batches of kBatch, every
// datagram sent back byte for byte to whoever sent it. It does no parsing, no rate limiting
// and no crypto, so the rate it sustains is what the kernel's UDP path costs per datagram
// on this machine; a ringpeer node's rate is read against it ("ratio" in ringpeer-load).
//
// Usage: ringpeer-udp-echo [--listen ADDR:PORT] [--cpu N] [--seconds S]
// The first stdout line is `port=N` (the bound port, flushed), so a parent that asked for
// port 0 can learn it. SIGTERM/SIGINT stop it cleanly; --seconds bounds its lifetime even
// when nobody stops it (a benchmark helper must never outlive its run by much).
// Single-threaded.
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "base/endpoint.h"

namespace {

using Clock = std::chrono::steady_clock;

// Datagrams taken and echoed per system call: large enough that the syscall's fixed cost
// is spread thin under load, small enough that one batch's buffers stay in L1/L2.
constexpr unsigned kBatch = 64;
// Largest datagram echoed whole. Above ringpeer's 1200-byte limit so that any datagram a
// benchmark sends comes back intact; longer ones are truncated by the kernel (MSG_TRUNC).
constexpr size_t kDatagramBytesMax = 2048;
// How long one blocking receive may wait before the loop re-checks the stop flag and the
// deadline: bounds the time to notice SIGTERM and the lifetime overrun.
constexpr int kWakeupMs = 100;
// Default and largest lifetime: a safety net, not a schedule.
constexpr long kSecondsDefault = 600;
constexpr long kSecondsMax = 24 * 3600;
// Socket buffers: a loader keeps up to peers × window datagrams in flight (~1000 by
// default, ~800 bytes of kernel memory each), which must fit in the receive queue.
constexpr int kSocketBufferBytes = 8 << 20;

volatile sig_atomic_t g_stop = 0;

void OnSignal(int) { g_stop = 1; }

struct Options {
  std::string listen = "127.0.0.1:0";
  int cpu = -1;
  long seconds = kSecondsDefault;
};

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "ringpeer-udp-echo: %s\n", what.c_str());
  std::exit(2);
}

void PrintHelp() {
  std::printf(
      "usage: ringpeer-udp-echo [--listen ADDR:PORT] [--cpu N] [--seconds S]\n"
      "Echoes every UDP datagram back to its sender (recvmmsg/sendmmsg, batch %u).\n"
      "  --listen ADDR:PORT  address to bind (default 127.0.0.1:0)\n"
      "  --cpu N             pin to CPU N\n"
      "  --seconds S         exit after S seconds at the latest (default %ld)\n"
      "Prints `port=N` as its first line; exits 0 on SIGTERM/SIGINT or at the deadline.\n",
      kBatch, kSecondsDefault);
}

// ParseLong: the whole of `text` as a decimal integer in [lo, hi].
bool ParseLong(std::string_view text, long lo, long hi, long* out) {
  if (text.empty() || text.size() > 10) return false;
  long v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      PrintHelp();
      std::exit(0);
    }
    if (flag != "--listen" && flag != "--cpu" && flag != "--seconds") {
      Fail("unknown flag '" + std::string(flag) + "' (try --help)");
    }
    if (i + 1 >= argc) Fail(std::string(flag) + ": missing value");
    std::string_view value = argv[++i];
    long v = 0;
    if (flag == "--listen") {
      o.listen = std::string(value);
    } else if (flag == "--cpu") {
      if (!ParseLong(value, 0, CPU_SETSIZE - 1, &v)) Fail("--cpu: expected a CPU number");
      o.cpu = static_cast<int>(v);
    } else {
      if (!ParseLong(value, 1, kSecondsMax, &v)) Fail("--seconds: expected 1.." +
                                                       std::to_string(kSecondsMax));
      o.seconds = v;
    }
  }
  return o;
}

void PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    Fail("--cpu " + std::to_string(cpu) + ": " + std::strerror(errno));
  }
}

void InstallSignals() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked recvmmsg returns EINTR and sees g_stop
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

// BigBuffers: asks for large socket buffers, past rmem_max when we may (root), so that a
// burst of in-flight datagrams is queued rather than dropped.
void BigBuffers(int fd) {
  int bytes = kSocketBufferBytes;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  }
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof(bytes)) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  }
}

// OpenSocket: a bound UDP socket whose blocking receives wake every kWakeupMs.
int OpenSocket(const ringpeer::base::Endpoint& listen, uint16_t* bound_port) {
  const bool v6 = !listen.is_v4();
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Fail(std::string("socket: ") + std::strerror(errno));
  BigBuffers(fd);
  timeval tv{0, kWakeupMs * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_storage ss;
  socklen_t len = listen.ToSockaddr(&ss, v6);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    Fail("bind " + listen.ToString() + ": " + std::strerror(errno));
  }
  len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  *bound_port = ringpeer::base::Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len)
                    .port;
  return fd;
}

// Echo state: one batch of buffers and headers, reused for every system call.
struct Batch {
  alignas(64) uint8_t data[kBatch][kDatagramBytesMax];
  sockaddr_storage from[kBatch];
  iovec iov[kBatch];
  mmsghdr msgs[kBatch];
};

// ResetHeaders: re-arms the first `n` headers for receiving (the kernel overwrote their
// name and data lengths).
void ResetHeaders(Batch* b, unsigned n) {
  for (unsigned i = 0; i < n; ++i) {
    b->iov[i] = {b->data[i], kDatagramBytesMax};
    b->msgs[i].msg_hdr = {};
    b->msgs[i].msg_hdr.msg_name = &b->from[i];
    b->msgs[i].msg_hdr.msg_namelen = sizeof(b->from[i]);
    b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
    b->msgs[i].msg_hdr.msg_iovlen = 1;
  }
}

struct Counters {
  uint64_t echoed = 0;
  uint64_t send_dropped = 0;
};

// EchoBatch: sends the `n` datagrams just received back to their senders. A send that the
// kernel refuses (a full buffer, an unreachable sender) drops that datagram, as UDP may.
void EchoBatch(int fd, Batch* b, unsigned n, Counters* c) {
  for (unsigned i = 0; i < n; ++i) b->iov[i].iov_len = b->msgs[i].msg_len;
  unsigned done = 0;
  while (done < n) {  // bounded: each pass sends at least one or skips one
    int sent = sendmmsg(fd, b->msgs + done, n - done, MSG_DONTWAIT);
    if (sent > 0) {
      done += static_cast<unsigned>(sent);
      c->echoed += static_cast<uint64_t>(sent);
    } else if (sent < 0 && errno == EINTR) {
      continue;
    } else {
      ++done;
      ++c->send_dropped;
    }
  }
}

// Serve: the one intentionally unbounded loop, ended by a signal or the deadline.
Counters Serve(int fd, long seconds) {
  static Batch batch;  // ~130 KiB: too big for the stack, allocated once
  Counters c;
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(seconds);
  ResetHeaders(&batch, kBatch);
  while (g_stop == 0 && Clock::now() < deadline) {
    // MSG_WAITFORONE: block (up to kWakeupMs) for the first datagram, then take whatever
    // else is already queued without waiting, so a busy echo pays one call per batch.
    int n = recvmmsg(fd, batch.msgs, kBatch, MSG_WAITFORONE, nullptr);
    if (n <= 0) continue;  // timeout, EINTR or a transient error: re-check and wait again
    EchoBatch(fd, &batch, static_cast<unsigned>(n), &c);
    ResetHeaders(&batch, static_cast<unsigned>(n));
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);
  std::optional<ringpeer::base::Endpoint> listen = ringpeer::base::Endpoint::Parse(o.listen);
  if (!listen) Fail("--listen: expected ADDR:PORT, got '" + o.listen + "'");
  if (o.cpu >= 0) PinToCpu(o.cpu);
  InstallSignals();
  uint16_t port = 0;
  int fd = OpenSocket(*listen, &port);
  std::printf("port=%u\n", port);
  std::fflush(stdout);
  Counters c = Serve(fd, o.seconds);
  close(fd);
  std::fprintf(stderr, "ringpeer-udp-echo: echoed=%llu send_dropped=%llu\n",
               static_cast<unsigned long long>(c.echoed),
               static_cast<unsigned long long>(c.send_dropped));
  return 0;
}
