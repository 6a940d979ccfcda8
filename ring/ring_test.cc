// Goal: both transports (io_uring and recvmmsg) move real datagrams correctly: payloads,
// source addresses, buffer alignment, replies, batches, send-slot limits, doorbells, and
// that BindShardSockets shares, steers and refuses ports as documented.
// Method: real sockets on 127.0.0.1 and ::1 only. A plain test socket plays the peer; the
// transport under test runs in the test thread. Every wait is a loop bounded in both
// iterations and time (a deadline), never a sleep used as synchronisation.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/endpoint.h"
#include "ring/transport.h"
#include "ring/uring_transport.h"

namespace ringpeer::ring {
namespace {

using base::Endpoint;
using Clock = std::chrono::steady_clock;

constexpr size_t kHeaderBytes = 16;
constexpr size_t kHintByte = 8;
// Generous: a loaded CI machine, or a sanitizer build, is slow; a pass takes milliseconds.
constexpr auto kDeadline = std::chrono::seconds(20);
constexpr int kIterationsMax = 1'000'000;

Endpoint Ep(const char* text) { return *Endpoint::Parse(text); }

// A datagram: our 16-byte header shape (sequence number first, shard hint at byte 8),
// then a pattern derived from the sequence number so corruption is visible.
std::vector<uint8_t> MakeDatagram(uint32_t seq, uint8_t hint, size_t size) {
  std::vector<uint8_t> d(std::max(size, kHeaderBytes));
  std::memcpy(d.data(), &seq, sizeof(seq));
  d[kHintByte] = hint;
  for (size_t i = kHeaderBytes; i < d.size(); i++) d[i] = static_cast<uint8_t>(seq * 7 + i);
  return d;
}

uint32_t SeqOf(const uint8_t* data) {
  uint32_t seq;
  std::memcpy(&seq, data, sizeof(seq));
  return seq;
}

// TestSocket: the peer. A plain nonblocking UDP socket with bounded waits.
class TestSocket {
 public:
  explicit TestSocket(const Endpoint& at) {
    fd_ = socket(at.is_v4() ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int bytes = 8 << 20;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes));
    setsockopt(fd_, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof(bytes));
    sockaddr_storage ss;
    socklen_t len = at.ToSockaddr(&ss, !at.is_v4());
    ok_ = bind(fd_, reinterpret_cast<sockaddr*>(&ss), len) == 0;
    len = sizeof(ss);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
    local_ = Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  }
  ~TestSocket() { close(fd_); }
  TestSocket(const TestSocket&) = delete;
  TestSocket& operator=(const TestSocket&) = delete;

  bool ok() const { return ok_; }
  const Endpoint& local() const { return local_; }
  int fd() const { return fd_; }

  bool SendTo(const Endpoint& to, const std::vector<uint8_t>& bytes) {
    sockaddr_storage ss;
    const socklen_t len = to.ToSockaddr(&ss, !local_.is_v4());
    for (int attempt = 0; attempt < 1000; attempt++) {  // EAGAIN: wait for room, bounded
      if (sendto(fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) ==
          static_cast<ssize_t>(bytes.size())) {
        return true;
      }
      if (errno != EAGAIN) return false;
      pollfd p{fd_, POLLOUT, 0};
      poll(&p, 1, 10);
    }
    return false;
  }

  std::optional<std::vector<uint8_t>> Recv(int timeout_ms, Endpoint* from = nullptr) {
    pollfd p{fd_, POLLIN, 0};
    if (timeout_ms > 0 && poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
    std::vector<uint8_t> buf(4096);
    sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    const ssize_t n = recvfrom(fd_, buf.data(), buf.size(), 0,
                               reinterpret_cast<sockaddr*>(&ss), &len);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<size_t>(n));
    if (from != nullptr) *from = Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    return buf;
  }

 private:
  int fd_ = -1;
  bool ok_ = false;
  Endpoint local_;
};

absl::StatusOr<std::unique_ptr<Transport>> MakeTransport(TransportKind kind,
                                                         const Endpoint& listen,
                                                         const TransportConfig& config = {}) {
  auto sockets = BindShardSockets({listen}, 1, /*steer=*/false);
  if (!sockets.ok()) return sockets.status();
  std::string reason;
  return CreateTransport(kind, std::move((*sockets)[0]), config, &reason);
}

// Where a peer sends to reach `t`: its port on `host`.
Endpoint Target(const Transport& t, const char* host) {
  Endpoint e = *Endpoint::Parse(host, /*default_port=*/0);
  e.port = t.local_address(0).port;
  return e;
}

// Echo: replies to one datagram with its own bytes through the send path.
void Echo(Transport& t, const RecvDatagram& d) {
  std::span<uint8_t> buf = t.SendBuffer();
  ASSERT_FALSE(buf.empty());
  ASSERT_LE(d.size, buf.size());
  std::memcpy(buf.data(), d.data, d.size);
  t.CommitSend(d.size, d.from);
}

// PollFor: polls until `want` datagrams arrived (copied into *got) or the deadline.
void PollFor(Transport& t, size_t want, std::vector<std::vector<uint8_t>>* got,
             std::vector<RecvDatagram>* meta, bool echo) {
  RecvDatagram batch[64];
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; i < kIterationsMax && got->size() < want && Clock::now() < deadline; i++) {
    bool woken = false;
    const size_t n = t.Poll(10'000, batch, &woken);
    for (size_t k = 0; k < n; k++) {
      got->emplace_back(batch[k].data, batch[k].data + batch[k].size);
      if (meta != nullptr) meta->push_back(batch[k]);
      if (echo) Echo(t, batch[k]);
    }
    t.ReleaseReceived();
    t.Flush();
  }
}

// Pump: polls briefly so that queued io_uring sends are submitted and completions reaped.
void Pump(Transport& t, int rounds) {
  RecvDatagram batch[64];
  for (int i = 0; i < rounds; i++) {
    bool woken = false;
    t.Poll(0, batch, &woken);
    t.ReleaseReceived();
    t.Flush();
  }
}

class TransportTest : public ::testing::TestWithParam<TransportKind> {
 protected:
  void SetUp() override {
    if (GetParam() == TransportKind::kIoUring) {
      absl::Status probe = ProbeIoUring();
      if (!probe.ok()) GTEST_SKIP() << probe.message();
    }
  }
  std::unique_ptr<Transport> Make(const char* listen, const TransportConfig& config = {}) {
    auto t = MakeTransport(GetParam(), Ep(listen), config);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }
};

TEST_P(TransportTest, ReceivesPayloadSourceAndAlignment) {
  auto t = Make("127.0.0.1:0");
  ASSERT_NE(t, nullptr);
  EXPECT_NE(t->local_address(0).port, 0);
  TestSocket peer(Ep("127.0.0.1:0"));
  ASSERT_TRUE(peer.ok());
  constexpr uint32_t kCount = 20;
  for (uint32_t i = 0; i < kCount; i++) {
    ASSERT_TRUE(peer.SendTo(Target(*t, "127.0.0.1"), MakeDatagram(i, 0xFF, 16 + i * 59)));
  }
  std::vector<std::vector<uint8_t>> got;
  std::vector<RecvDatagram> meta;
  PollFor(*t, kCount, &got, &meta, /*echo=*/false);
  ASSERT_EQ(got.size(), kCount);
  for (uint32_t i = 0; i < kCount; i++) {
    EXPECT_EQ(got[i], MakeDatagram(i, 0xFF, 16 + i * 59)) << i;
    EXPECT_EQ(meta[i].from, peer.local());
    EXPECT_EQ(meta[i].socket_index, 0);
    EXPECT_FALSE(meta[i].truncated);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(meta[i].data + 16) % 8, 0u);
  }
  EXPECT_EQ(t->stats().received, kCount);
}

TEST_P(TransportTest, EchoesRepliesToTheSender) {
  auto t = Make("127.0.0.1:0");
  ASSERT_NE(t, nullptr);
  TestSocket peer(Ep("127.0.0.1:0"));
  constexpr uint32_t kCount = 50;
  for (uint32_t i = 0; i < kCount; i++) {
    ASSERT_TRUE(peer.SendTo(Target(*t, "127.0.0.1"), MakeDatagram(i, 1, 100 + i)));
  }
  std::vector<std::vector<uint8_t>> got;
  PollFor(*t, kCount, &got, nullptr, /*echo=*/true);
  ASSERT_EQ(got.size(), kCount);
  std::vector<bool> seen(kCount);
  const auto deadline = Clock::now() + kDeadline;
  for (uint32_t n = 0; n < kCount && Clock::now() < deadline;) {
    Pump(*t, 1);  // io_uring submits the replies on its next Poll
    Endpoint from;
    auto reply = peer.Recv(1, &from);
    if (!reply) continue;
    const uint32_t seq = SeqOf(reply->data());
    ASSERT_LT(seq, kCount);
    EXPECT_EQ(*reply, MakeDatagram(seq, 1, 100 + seq));
    EXPECT_EQ(from, Target(*t, "127.0.0.1"));
    seen[seq] = true;
    n++;
  }
  for (uint32_t i = 0; i < kCount; i++) EXPECT_TRUE(seen[i]) << i;
  Pump(*t, 3);
  EXPECT_EQ(t->stats().sent, kCount);
  EXPECT_EQ(t->stats().send_errors, 0u);
}

// Ten thousand datagrams, in chunks so the socket buffers never overflow, through a
// 64-entry batch: many Polls, buffer-ring refills, and send-slot reuse.
TEST_P(TransportTest, EchoesTenThousandInBatches) {
  auto t = Make("127.0.0.1:0");
  ASSERT_NE(t, nullptr);
  TestSocket peer(Ep("127.0.0.1:0"));
  constexpr uint32_t kTotal = 10'000;
  constexpr uint32_t kChunk = 250;
  std::vector<uint8_t> received(kTotal), replied(kTotal);
  uint32_t received_count = 0, replied_count = 0, sent = 0;
  RecvDatagram batch[64];
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; i < kIterationsMax && replied_count < kTotal && Clock::now() < deadline; i++) {
    if (sent == received_count && sent == replied_count && sent < kTotal) {
      for (uint32_t k = 0; k < kChunk; k++, sent++) {
        ASSERT_TRUE(peer.SendTo(Target(*t, "127.0.0.1"), MakeDatagram(sent, 2, 64)));
      }
    }
    bool woken = false;
    const size_t n = t->Poll(1000, batch, &woken);
    for (size_t k = 0; k < n; k++) {
      const uint32_t seq = SeqOf(batch[k].data);
      ASSERT_LT(seq, kTotal);
      ASSERT_EQ(received[seq], 0) << "duplicate " << seq;
      received[seq] = 1;
      received_count++;
      Echo(*t, batch[k]);
    }
    t->ReleaseReceived();
    t->Flush();
    for (int r = 0; r < 64; r++) {
      auto reply = peer.Recv(0);
      if (!reply) break;
      const uint32_t seq = SeqOf(reply->data());
      ASSERT_LT(seq, kTotal);
      ASSERT_EQ(replied[seq], 0) << "duplicate reply " << seq;
      replied[seq] = 1;
      replied_count++;
    }
  }
  EXPECT_EQ(received_count, kTotal);
  EXPECT_EQ(replied_count, kTotal);
  EXPECT_EQ(t->stats().received, kTotal);
}

TEST_P(TransportTest, SendSlotExhaustionReturnsEmptyAndCounts) {
  TransportConfig config;
  config.send_slots = 4;
  auto t = Make("127.0.0.1:0", config);
  ASSERT_NE(t, nullptr);
  TestSocket peer(Ep("127.0.0.1:0"));
  for (uint32_t i = 0; i < config.send_slots; i++) {
    std::span<uint8_t> buf = t->SendBuffer();
    ASSERT_EQ(buf.size(), config.send_slot_bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf.data()) % 8, 0u);
    const auto d = MakeDatagram(i, 0, 32);
    std::memcpy(buf.data(), d.data(), d.size());
    t->CommitSend(d.size(), peer.local());
  }
  EXPECT_TRUE(t->SendBuffer().empty());
  EXPECT_EQ(t->stats().send_slots_full, 1u);
  // Once the sends complete the slots come back.
  uint32_t replies = 0;
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; i < kIterationsMax && Clock::now() < deadline; i++) {
    t->Flush();
    Pump(*t, 1);
    while (replies < config.send_slots && peer.Recv(0)) replies++;
    if (replies == config.send_slots && t->stats().sent == config.send_slots) break;
  }
  EXPECT_EQ(replies, config.send_slots);
  EXPECT_EQ(t->stats().sent, config.send_slots);
  EXPECT_FALSE(t->SendBuffer().empty());
}

// Bursts (UDP GSO): each round sends one burst of three datagrams (two of `kSegment`
// bytes, a shorter last one) to two peers, and one plain datagram to the first. With 6
// send slots and 2 burst buffers the slots that carried a burst soon carry plain
// datagrams again: each must carry its own bytes, and every peer must get each datagram
// of the burst whole, cut where the segment size says.
void SendBurstRounds(Transport& t, uint32_t rounds) {
  TestSocket a(Ep("127.0.0.1:0")), b(Ep("127.0.0.1:0"));
  if (!UdpGsoAvailable(a.fd())) GTEST_SKIP() << "kernel without UDP_SEGMENT";
  constexpr size_t kSegment = 700;
  const Endpoint peers[] = {a.local(), b.local()};
  std::vector<std::vector<uint8_t>> got_a, got_b;
  uint64_t plain = 0;
  for (uint32_t r = 0; r < rounds; r++) {
    const uint32_t base = r * 4;
    const std::vector<uint8_t> parts[] = {MakeDatagram(base, 1, kSegment),
                                          MakeDatagram(base + 1, 1, kSegment),
                                          MakeDatagram(base + 2, 1, 300 + r % 400)};
    std::span<uint8_t> burst = t.BurstBuffer();
    ASSERT_GE(burst.size(), base::kBurstBytesMax);
    size_t size = 0;
    for (const auto& p : parts) {
      std::memcpy(burst.data() + size, p.data(), p.size());
      size += p.size();
    }
    t.CommitBurst(size, kSegment, peers);
    std::span<uint8_t> buf = t.SendBuffer();
    ASSERT_FALSE(buf.empty());
    const auto d = MakeDatagram(base + 3, 1, 100 + r % 900);
    std::memcpy(buf.data(), d.data(), d.size());
    t.CommitSend(d.size(), a.local());
    plain++;
    t.Flush();
    Pump(t, 1);
    // Each round's four datagrams arrive before the next round: the test reads them all.
    const auto deadline = Clock::now() + kDeadline;
    while (Clock::now() < deadline && (got_a.size() < (r + 1) * 4 || got_b.size() < (r + 1) * 3)) {
      Pump(t, 1);
      if (auto m = a.Recv(10)) got_a.push_back(*m);
      if (auto m = b.Recv(0)) got_b.push_back(*m);
    }
    ASSERT_EQ(got_a.size(), (r + 1) * 4) << "round " << r;
    ASSERT_EQ(got_b.size(), (r + 1) * 3) << "round " << r;
    for (size_t i = r * 4; i < got_a.size(); i++) {
      const uint32_t seq = SeqOf(got_a[i].data());
      ASSERT_GE(seq, base);
      ASSERT_LT(seq, base + 4);
      const auto& want = seq == base + 3 ? d : parts[seq - base];
      ASSERT_EQ(got_a[i], want) << "round " << r << " seq " << seq;
    }
    for (size_t i = r * 3; i < got_b.size(); i++) {
      const uint32_t seq = SeqOf(got_b[i].data());
      ASSERT_GE(seq, base);
      ASSERT_LT(seq, base + 3);
      ASSERT_EQ(got_b[i], parts[seq - base]) << "round " << r << " seq " << seq;
    }
  }
  Pump(t, 2);
  EXPECT_EQ(t.stats().bursts, uint64_t{rounds} * 2);
  EXPECT_EQ(t.stats().sent, uint64_t{rounds} * 6 + plain);
  EXPECT_EQ(t.stats().send_errors, 0u);
  EXPECT_EQ(t.stats().burst_fallbacks, 0u);
}

TEST_P(TransportTest, BurstsReachEveryPeerCutIntoTheirSegments) {
  TransportConfig config;
  config.send_slots = 6;
  config.sq_entries = 128;
  config.burst_buffers = 2;
  auto t = Make("127.0.0.1:0", config);
  ASSERT_NE(t, nullptr);
  SendBurstRounds(*t, 40);
}

TEST_P(TransportTest, NoBurstBuffersMeansNoBursts) {
  TransportConfig config;
  config.burst_buffers = 0;
  auto t = Make("127.0.0.1:0", config);
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->BurstBuffer().empty());
}

TEST_P(TransportTest, TruncatesOversizedDatagrams) {
  TransportConfig config;
  config.recv_buffer_bytes = 256;
  auto t = Make("127.0.0.1:0", config);
  ASSERT_NE(t, nullptr);
  TestSocket peer(Ep("127.0.0.1:0"));
  ASSERT_TRUE(peer.SendTo(Target(*t, "127.0.0.1"), MakeDatagram(1, 0, 1000)));
  std::vector<std::vector<uint8_t>> got;
  std::vector<RecvDatagram> meta;
  PollFor(*t, 1, &got, &meta, false);
  ASSERT_EQ(meta.size(), 1u);
  EXPECT_TRUE(meta[0].truncated);
  EXPECT_LE(meta[0].size, 256u);
  EXPECT_EQ(t->stats().recv_truncated, 1u);
}

TEST_P(TransportTest, IPv6LoopbackEchoes) {
  TestSocket probe(Ep("[::1]:0"));
  if (!probe.ok()) GTEST_SKIP() << "no ::1 on this host";
  auto t = Make("[::1]:0");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->local_address(0).family, Endpoint::Family::kV6);
  TestSocket peer(Ep("[::1]:0"));
  ASSERT_TRUE(peer.SendTo(Target(*t, "[::1]"), MakeDatagram(7, 0, 300)));
  std::vector<std::vector<uint8_t>> got;
  std::vector<RecvDatagram> meta;
  PollFor(*t, 1, &got, &meta, /*echo=*/true);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(meta[0].from, peer.local());
  std::optional<std::vector<uint8_t>> reply;
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; i < kIterationsMax && !reply && Clock::now() < deadline; i++) {
    Pump(*t, 1);
    reply = peer.Recv(1);
  }
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(*reply, MakeDatagram(7, 0, 300));
}

// A dual-stack [::] socket receives IPv4 and reports the sender as plain IPv4.
TEST_P(TransportTest, DualStackWildcardReceivesIPv4) {
  auto t = Make("[::]:0");
  ASSERT_NE(t, nullptr);
  TestSocket peer(Ep("127.0.0.1:0"));
  ASSERT_TRUE(peer.SendTo(Target(*t, "127.0.0.1"), MakeDatagram(3, 0, 40)));
  std::vector<std::vector<uint8_t>> got;
  std::vector<RecvDatagram> meta;
  PollFor(*t, 1, &got, &meta, /*echo=*/true);
  ASSERT_EQ(meta.size(), 1u);
  EXPECT_EQ(meta[0].from, peer.local());
  std::optional<std::vector<uint8_t>> reply;
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; i < kIterationsMax && !reply && Clock::now() < deadline; i++) {
    Pump(*t, 1);
    reply = peer.Recv(1);
  }
  ASSERT_TRUE(reply.has_value());
}

// A send to a closed port: ICMP comes back as ECONNREFUSED on a later operation, which is
// counted, never fatal, and the transport keeps working.
TEST_P(TransportTest, SendToClosedPortIsNotFatal) {
  auto t = Make("127.0.0.1:0");
  ASSERT_NE(t, nullptr);
  Endpoint closed;
  {
    TestSocket gone(Ep("127.0.0.1:0"));
    closed = gone.local();
  }
  for (int i = 0; i < 8; i++) {
    auto buf = t->SendBuffer();
    ASSERT_FALSE(buf.empty());
    t->CommitSend(32, closed);
    t->Flush();
    Pump(*t, 2);
  }
  TestSocket peer(Ep("127.0.0.1:0"));
  ASSERT_TRUE(peer.SendTo(Target(*t, "127.0.0.1"), MakeDatagram(9, 0, 64)));
  std::vector<std::vector<uint8_t>> got;
  PollFor(*t, 1, &got, nullptr, false);
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(t->stats().sent + t->stats().send_errors, 8u);
}

// One shard's transport rings another's doorbell from another thread.
TEST_P(TransportTest, WakesAnotherTransportFromAnotherThread) {
  auto sleeper = Make("127.0.0.1:0");
  auto waker = Make("127.0.0.1:0");
  ASSERT_NE(sleeper, nullptr);
  ASSERT_NE(waker, nullptr);
  RecvDatagram batch[8];
  bool woken = false;
  sleeper->Poll(0, batch, &woken);  // the first Poll reports a doorbell conservatively
  sleeper->ReleaseReceived();
  EXPECT_TRUE(woken);
  const WakeHandle target = sleeper->wake_handle();
  std::thread other([&] {
    waker->QueueWake(target);
    waker->Flush();
    bool ignored = false;
    waker->Poll(0, batch, &ignored);  // io_uring: the doorbell goes out with this submit
    waker->ReleaseReceived();
  });
  woken = false;
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; i < 10'000 && !woken && Clock::now() < deadline; i++) {
    sleeper->Poll(100'000, batch, &woken);
    sleeper->ReleaseReceived();
  }
  other.join();
  EXPECT_TRUE(woken);
  EXPECT_EQ(sleeper->stats().wakeups, 1u);
}

INSTANTIATE_TEST_SUITE_P(Kinds, TransportTest,
                         ::testing::Values(TransportKind::kIoUring, TransportKind::kMmsg),
                         [](const auto& info) {
                           return info.param == TransportKind::kIoUring ? "IoUring" : "Mmsg";
                         });

// Doorbells across kinds: recvmmsg rings io_uring's eventfd and io_uring writes
// recvmmsg's eventfd with an SQE.
TEST(Wake, CrossesTransportKinds) {
  if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
  auto uring = MakeTransport(TransportKind::kIoUring, Ep("127.0.0.1:0"));
  auto mmsg = MakeTransport(TransportKind::kMmsg, Ep("127.0.0.1:0"));
  ASSERT_TRUE(uring.ok());
  ASSERT_TRUE(mmsg.ok());
  Transport* pairs[2][2] = {{uring->get(), mmsg->get()}, {mmsg->get(), uring->get()}};
  RecvDatagram batch[8];
  bool woken = false;
  for (Transport* t : {uring->get(), mmsg->get()}) {
    t->Poll(0, batch, &woken);  // consume the conservative first doorbell
    t->ReleaseReceived();
  }
  for (auto& pair : pairs) {
    Transport* from = pair[0];
    Transport* to = pair[1];
    from->QueueWake(to->wake_handle());
    from->Flush();
    from->Poll(0, batch, &woken);
    from->ReleaseReceived();
    woken = false;
    const auto deadline = Clock::now() + kDeadline;
    for (int i = 0; i < 10'000 && !woken && Clock::now() < deadline; i++) {
      to->Poll(100'000, batch, &woken);
      to->ReleaseReceived();
    }
    EXPECT_TRUE(woken) << from->name() << " -> " << to->name();
  }
}

TEST(UringTransport, ReportsSetupModeAndRegisteredFiles) {
  if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
  auto sockets = BindShardSockets({Ep("127.0.0.1:0")}, 1, false);
  ASSERT_TRUE(sockets.ok());
  auto t = UringTransport::Create(&(*sockets)[0], TransportConfig{});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*sockets)[0].fds.empty());  // ownership moved into the transport
  std::printf("io_uring setup mode: %s, registered files: %s\n", (*t)->setup_mode(),
              (*t)->files_registered() ? "yes" : "no");
  EXPECT_STRNE((*t)->setup_mode(), "none");
  RecordProperty("setup_mode", (*t)->setup_mode());
}

TEST(UringTransport, RejectsBadConfig) {
  auto sockets = BindShardSockets({Ep("127.0.0.1:0")}, 1, false);
  ASSERT_TRUE(sockets.ok());
  TransportConfig config;
  config.recv_buffers = 1000;  // not a power of two
  auto t = UringTransport::Create(&(*sockets)[0], config);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*sockets)[0].fds.size(), 1u);  // left to the caller on failure
  close((*sockets)[0].fds[0]);
}

// A burst larger than the buffer ring: the multishot receive runs out of buffers (ENOBUFS),
// stops, and is re-armed after ReleaseReceived refills the ring; nothing is lost because
// the datagrams wait in the socket meanwhile.
TEST(UringTransport, RearmsAfterBufferRingRunsDry) {
  if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
  TransportConfig config;
  config.recv_buffers = 16;
  auto t = MakeTransport(TransportKind::kIoUring, Ep("127.0.0.1:0"), config);
  ASSERT_TRUE(t.ok()) << t.status();
  Transport& transport = **t;
  Pump(transport, 1);  // arm the receive before the burst
  TestSocket peer(Ep("127.0.0.1:0"));
  constexpr uint32_t kBurst = 200;
  for (uint32_t i = 0; i < kBurst; i++) {
    ASSERT_TRUE(peer.SendTo(Target(transport, "127.0.0.1"), MakeDatagram(i, 0, 100)));
  }
  std::vector<std::vector<uint8_t>> got;
  PollFor(transport, kBurst, &got, nullptr, false);
  EXPECT_EQ(got.size(), kBurst);
  EXPECT_GE(transport.stats().recv_no_buffers, 1u);
  EXPECT_GE(transport.stats().recv_rearms, 1u);
}

// EchoAll: sends `count` datagrams to t (in chunks of 200, so no socket buffer overflows),
// echoes each, and returns how many distinct replies came back.
uint32_t EchoAll(Transport& t, uint32_t count) {
  TestSocket peer(Ep("127.0.0.1:0"));
  std::vector<uint8_t> replied(count);
  uint32_t sent = 0, received = 0, replies = 0;
  RecvDatagram batch[64];
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; i < kIterationsMax && replies < count && Clock::now() < deadline; i++) {
    if (sent == received && sent == replies && sent < count) {
      for (uint32_t k = 0; k < 200 && sent < count; k++, sent++) {
        EXPECT_TRUE(peer.SendTo(Target(t, "127.0.0.1"), MakeDatagram(sent, 3, 80)));
      }
    }
    bool woken = false;
    const size_t n = t.Poll(1000, batch, &woken);
    for (size_t k = 0; k < n; k++, received++) Echo(t, batch[k]);
    t.ReleaseReceived();
    t.Flush();
    for (std::optional<std::vector<uint8_t>> r; (r = peer.Recv(0));) {
      const uint32_t seq = SeqOf(r->data());
      if (seq < count && replied[seq] == 0) {
        replied[seq] = 1;
        replies++;
      }
    }
  }
  return replies;
}

// Sends go out as IORING_OP_SEND with the address in the SQE (no msghdr). This kernel
// takes the address, so the transport never falls back; with send_with_address off it
// uses sendmsg from the start. Both deliver every reply to its sender.
TEST(UringTransport, SendsWithAddressOrSendmsgAndBothDeliver) {
  if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
  for (const bool with_address : {true, false}) {
    TransportConfig config;
    config.send_with_address = with_address;
    auto t = MakeTransport(TransportKind::kIoUring, Ep("127.0.0.1:0"), config);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(EchoAll(**t, 2000), 2000u) << "with_address=" << with_address;
    Pump(**t, 3);
    EXPECT_EQ((*t)->stats().sent, 2000u);
    EXPECT_EQ((*t)->stats().send_errors, 0u);
    // A kernel older than this one may refuse the address once; then every datagram
    // above still arrived through the fallback. Here (6.x with addresses) it never does.
    std::printf("with_address=%d send_fallbacks=%llu\n", with_address,
                static_cast<unsigned long long>((*t)->stats().send_fallbacks));
    if (!with_address) {
      EXPECT_EQ((*t)->stats().send_fallbacks, 0u);
    }
  }
}

// Sends post no completion (IOSQE_CQE_SKIP_SUCCESS) and their slots are reused as soon as
// the io_uring_enter that submitted them returns. 64 slots for 6,000 echoes: each slot
// carries ~94 datagrams, and every reply must hold its own bytes (a send the kernel still
// read after its enter returned would go out with a later datagram's bytes).
TEST(UringTransport, SendSlotsReusedAfterTheirSubmitCarryTheirOwnBytes) {
  if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
  TransportConfig config;
  config.send_slots = 64;
  auto made = MakeTransport(TransportKind::kIoUring, Ep("127.0.0.1:0"), config);
  ASSERT_TRUE(made.ok()) << made.status();
  auto& t = static_cast<UringTransport&>(**made);
  if (!t.skips_send_completions()) GTEST_SKIP() << "kernel without IORING_FEAT_CQE_SKIP";
  TestSocket peer(Ep("127.0.0.1:0"));
  constexpr uint32_t kTotal = 6000, kChunk = 60;
  auto payload = [](uint32_t seq) { return MakeDatagram(seq, 4, 40 + seq % 700); };
  std::vector<uint8_t> replied(kTotal);
  uint32_t sent = 0, received = 0, replies = 0;
  RecvDatagram batch[64];
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; i < kIterationsMax && replies < kTotal && Clock::now() < deadline; i++) {
    if (sent == received && sent == replies && sent < kTotal) {
      for (uint32_t k = 0; k < kChunk && sent < kTotal; k++, sent++) {
        ASSERT_TRUE(peer.SendTo(Target(t, "127.0.0.1"), payload(sent)));
      }
    }
    bool woken = false;
    const size_t n = t.Poll(1000, batch, &woken);
    for (size_t k = 0; k < n; k++, received++) Echo(t, batch[k]);
    t.ReleaseReceived();
    t.Flush();
    for (std::optional<std::vector<uint8_t>> r; (r = peer.Recv(0));) {
      const uint32_t seq = SeqOf(r->data());
      ASSERT_LT(seq, kTotal);
      ASSERT_EQ(*r, payload(seq)) << "reply " << seq << " carries another datagram's bytes";
      ASSERT_EQ(replied[seq], 0) << "duplicate reply " << seq;
      replied[seq] = 1;
      replies++;
    }
  }
  EXPECT_EQ(replies, kTotal);
  Pump(t, 2);
  EXPECT_EQ(t.stats().sent, kTotal);
  EXPECT_EQ(t.stats().send_errors, 0u);
  // Only the receives completed: no completion per send.
  EXPECT_EQ(t.stats().completions, t.stats().received);
}

// The same with a completion per send: burst slots come back through HandleSend.
TEST(UringTransport, BurstsWithSendCompletionsFreeTheirSlots) {
  if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
  TransportConfig config;
  config.send_slots = 6;
  config.sq_entries = 128;
  config.burst_buffers = 2;
  config.skip_send_completions = false;
  auto made = MakeTransport(TransportKind::kIoUring, Ep("127.0.0.1:0"), config);
  ASSERT_TRUE(made.ok()) << made.status();
  SendBurstRounds(**made, 40);
}

// A coalesced wait ends after its window once anything arrived: a lone datagram is handed
// out long before the caller's 5 s timeout (it must not wait for kCoalesceWaitNr more),
// and then each of a burst.
TEST(UringTransport, CoalescedWaitHandsOutALoneDatagramAfterItsWindow) {
  if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
  TransportConfig config;
  config.coalesce_us = 2000;
  auto made = MakeTransport(TransportKind::kIoUring, Ep("127.0.0.1:0"), config);
  ASSERT_TRUE(made.ok()) << made.status();
  auto& t = static_cast<UringTransport&>(**made);
  if (t.coalesce_us() == 0) GTEST_SKIP() << "kernel without IORING_FEAT_MIN_TIMEOUT";
  Pump(t, 1);  // arm the receive
  TestSocket peer(Ep("127.0.0.1:0"));
  RecvDatagram batch[64];
  for (uint32_t round = 0; round < 3; round++) {
    ASSERT_TRUE(peer.SendTo(Target(t, "127.0.0.1"), MakeDatagram(round, 5, 64)));
    const auto start = Clock::now();
    bool woken = false;
    size_t n = 0;
    // Bounded: each Poll returns by its 5 s timeout.
    for (int i = 0; i < 4 && n == 0; i++) {
      n = t.Poll(5'000'000, batch, &woken);
      if (n == 0) t.ReleaseReceived();
    }
    ASSERT_EQ(n, 1u);
    EXPECT_EQ(SeqOf(batch[0].data), round);
    t.ReleaseReceived();
    // Far below the timeout; the window is 2 ms.
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  }
  std::vector<std::vector<uint8_t>> got;
  for (uint32_t i = 0; i < 100; i++) {
    ASSERT_TRUE(peer.SendTo(Target(t, "127.0.0.1"), MakeDatagram(100 + i, 5, 64)));
  }
  PollFor(t, 100, &got, nullptr, false);
  EXPECT_EQ(got.size(), 100u);
}

// The buffer ring holds recv_ring_level_min buffers at first (hot in cache) and doubles
// when a burst drains it, up to recv_buffers: a backlog far larger than the level arrives
// whole. (With the default 256 a loopback burst never drains it: the kernel fills at most
// a few dozen buffers per io_uring_enter, so 16 here.)
TEST(UringTransport, BufferRingLevelGrowsUnderABurstAndLosesNothing) {
  if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
  TransportConfig config;
  config.recv_ring_level_min = 16;
  auto t = MakeTransport(TransportKind::kIoUring, Ep("127.0.0.1:0"), config);
  ASSERT_TRUE(t.ok()) << t.status();
  Transport& transport = **t;
  Pump(transport, 1);  // arm the receive before the burst
  TestSocket peer(Ep("127.0.0.1:0"));
  constexpr uint32_t kBurst = 1500;  // ~6x the first level; 1500 x 100 B fits the socket
  for (uint32_t i = 0; i < kBurst; i++) {
    ASSERT_TRUE(peer.SendTo(Target(transport, "127.0.0.1"), MakeDatagram(i, 0, 100)));
  }
  std::vector<std::vector<uint8_t>> got;
  PollFor(transport, kBurst, &got, nullptr, false);
  ASSERT_EQ(got.size(), kBurst);
  std::vector<bool> seen(kBurst);
  for (const auto& d : got) {
    const uint32_t seq = SeqOf(d.data());
    ASSERT_LT(seq, kBurst);
    EXPECT_FALSE(seen[seq]) << "duplicate " << seq;
    seen[seq] = true;
  }
  EXPECT_GE(transport.stats().recv_ring_grown, 1u);
}

// SendGsoBurst: `parts` back to back from `from`'s socket as one UDP_SEGMENT send cut at
// `segment` (every part but the last exactly that long), as a relay sends a range.
bool SendGsoBurst(TestSocket& from, const Endpoint& to,
                  const std::vector<std::vector<uint8_t>>& parts, size_t segment) {
  std::vector<uint8_t> bytes;
  for (const auto& p : parts) bytes.insert(bytes.end(), p.begin(), p.end());
  sockaddr_storage ss;
  iovec iov{bytes.data(), bytes.size()};
  msghdr m{};
  m.msg_name = &ss;
  m.msg_namelen = to.ToSockaddr(&ss, false);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  BurstControl control;
  SetBurstSegment(&control, static_cast<uint16_t>(segment));
  m.msg_control = control.bytes;
  m.msg_controllen = sizeof(control.bytes);
  return sendmsg(from.fd(), &m, 0) == static_cast<ssize_t>(bytes.size());
}

std::vector<std::vector<uint8_t>> BurstParts(uint32_t first, uint32_t count, size_t segment,
                                             size_t last) {
  std::vector<std::vector<uint8_t>> parts;
  for (uint32_t i = 0; i < count; i++) {
    parts.push_back(MakeDatagram(first + i, 6, i + 1 == count ? last : segment));
  }
  return parts;
}

// GroTest: an io_uring transport receiving with recv_gro (gro_buffers_ buffers), its
// receive armed, and a peer socket that sends GSO bursts to it (`to`); skipped where the
// kernel lacks io_uring, UDP_GRO or UDP_SEGMENT.
class GroTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
    TransportConfig config;
    config.recv_gro = true;
    config.gro_buffers = gro_buffers_;
    auto made = MakeTransport(TransportKind::kIoUring, Ep("127.0.0.1:0"), config);
    ASSERT_TRUE(made.ok()) << made.status();
    t.reset(static_cast<UringTransport*>(made->release()));
    if (!t->gro_on()) GTEST_SKIP() << "kernel without UDP_GRO";
    if (!UdpGsoAvailable(peer.fd())) GTEST_SKIP() << "kernel without UDP_SEGMENT";
    Pump(*t, 1);  // arm the receive
    to = Target(*t, "127.0.0.1");
  }
  uint32_t gro_buffers_ = 128;
  std::unique_ptr<UringTransport> t;
  TestSocket peer{Ep("127.0.0.1:0")};
  Endpoint to;
};

// With recv_gro a burst arrives as one receive and leaves Poll as its datagrams, each
// whole, in order, from its sender and 8-byte aligned (+16) as a lone datagram is: a
// segment that is a multiple of 8 (ours, wire::PackBurst) in place, any other (another
// sender's) moved onto a boundary. Lone datagrams between them arrive as before.
TEST_F(GroTest, HandsOutEachDatagramOfABurstAligned) {
  std::vector<std::vector<uint8_t>> want;
  auto add = [&](const std::vector<std::vector<uint8_t>>& parts) {
    want.insert(want.end(), parts.begin(), parts.end());
  };
  const auto a = BurstParts(0, 32, 1104, 1104);   // ours: a range of 32, all one size
  const auto b = BurstParts(100, 20, 1001, 517);  // odd segments, a short last one
  const auto c = BurstParts(200, 40, 24, 19);     // tiny segments, many of them
  const auto e = BurstParts(300, 60, 17, 17);     // tiny odd ones: all but the first move
  ASSERT_TRUE(SendGsoBurst(peer, to, a, 1104));
  add(a);
  ASSERT_TRUE(peer.SendTo(to, MakeDatagram(50, 6, 300)));
  want.push_back(MakeDatagram(50, 6, 300));
  ASSERT_TRUE(SendGsoBurst(peer, to, b, 1001));
  add(b);
  ASSERT_TRUE(SendGsoBurst(peer, to, c, 24));
  add(c);
  ASSERT_TRUE(SendGsoBurst(peer, to, e, 17));
  add(e);
  std::vector<std::vector<uint8_t>> got;
  std::vector<RecvDatagram> meta;
  PollFor(*t, want.size(), &got, &meta, /*echo=*/false);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); i++) {
    EXPECT_EQ(got[i], want[i]) << i;
    EXPECT_EQ(meta[i].from, peer.local()) << i;
    EXPECT_FALSE(meta[i].truncated) << i;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(meta[i].data + 16) % 8, 0u) << i;
  }
  // A segment that is a multiple of 8 is handed out where it lies: no move.
  for (size_t i = 1; i < a.size(); i++) {
    EXPECT_EQ(meta[i].data - meta[i - 1].data, 1104) << i;
  }
  EXPECT_EQ(t->stats().received, want.size());
  EXPECT_EQ(t->stats().recv_coalesced, 4u);  // four bursts, each one receive
  EXPECT_EQ(t->stats().recv_coalesced_dropped, 0u);
}

// Bursts of any shape another sender may choose (segments of 1 to 1,400 bytes, 2 to 64 of
// them within 64 KiB, a last one of any length up to the segment), with lone datagrams
// between them: every datagram arrives once, whole, in order and aligned, and nothing is
// counted as dropped. A fixed seed, so a failure replays.
TEST_F(GroTest, CutsBurstsOfAnyShapeIntoTheirDatagrams) {
  std::mt19937 rng(20261207);
  uint32_t seq = 0;
  size_t bursts = 0;
  for (int round = 0; round < 40; round++) {
    std::vector<std::vector<uint8_t>> want;
    for (int k = 0; k < 5; k++) {
      const size_t segment = std::uniform_int_distribution<size_t>(16, 1400)(rng);
      const size_t most = std::min<size_t>(64, 60'000 / segment);
      const uint32_t count =
          static_cast<uint32_t>(std::uniform_int_distribution<size_t>(2, most)(rng));
      const size_t last = std::uniform_int_distribution<size_t>(16, segment)(rng);
      const auto parts = BurstParts(seq, count, segment, last);
      ASSERT_TRUE(SendGsoBurst(peer, to, parts, segment)) << segment << " x " << count;
      want.insert(want.end(), parts.begin(), parts.end());
      seq += count;
      bursts++;
      const auto lone = MakeDatagram(seq++, 6, std::uniform_int_distribution<size_t>(16, 1200)(rng));
      ASSERT_TRUE(peer.SendTo(to, lone));
      want.push_back(lone);
    }
    std::vector<std::vector<uint8_t>> got;
    std::vector<RecvDatagram> meta;
    PollFor(*t, want.size(), &got, &meta, /*echo=*/false);
    ASSERT_EQ(got.size(), want.size()) << "round " << round;
    for (size_t i = 0; i < want.size(); i++) {
      ASSERT_EQ(got[i], want[i]) << "round " << round << " datagram " << i;
      ASSERT_EQ(reinterpret_cast<uintptr_t>(meta[i].data + 16) % 8, 0u);
    }
  }
  EXPECT_EQ(t->stats().recv_coalesced, bursts);
  EXPECT_EQ(t->stats().recv_coalesced_dropped, 0u);
  EXPECT_EQ(t->stats().received, seq);
}

// A burst waits in the CQ for a Poll with room for all of it, rather than being split
// between two; one larger than a whole batch (never one of ours: our bursts fit the
// shard's batch) gives the batch what fits and counts the rest as dropped.
class GroSixteenBuffersTest : public GroTest {
 protected:
  GroSixteenBuffersTest() { gro_buffers_ = 16; }
};

TEST_F(GroSixteenBuffersTest, ABurstWaitsForRoomAndOneLargerThanABatchIsCounted) {
  ASSERT_TRUE(SendGsoBurst(peer, to, BurstParts(0, 5, 200, 200), 200));
  ASSERT_TRUE(SendGsoBurst(peer, to, BurstParts(5, 5, 200, 200), 200));
  ASSERT_TRUE(SendGsoBurst(peer, to, BurstParts(10, 12, 200, 200), 200));
  RecvDatagram batch[8];
  std::vector<size_t> per_poll;
  std::vector<uint32_t> seqs;
  const auto deadline = Clock::now() + kDeadline;
  for (int i = 0; i < 1000 && seqs.size() < 18 && Clock::now() < deadline; i++) {
    bool woken = false;
    const size_t n = t->Poll(10'000, batch, &woken);
    if (n > 0) per_poll.push_back(n);
    for (size_t k = 0; k < n; k++) seqs.push_back(SeqOf(batch[k].data));
    t->ReleaseReceived();
  }
  ASSERT_EQ(per_poll, (std::vector<size_t>{5, 5, 8}));
  for (uint32_t i = 0; i < 18; i++) EXPECT_EQ(seqs[i], i);
  EXPECT_EQ(t->stats().recv_coalesced_dropped, 4u);
  EXPECT_EQ(t->stats().received, 18u);
}

// Not a pass/fail test (speed goals live in bench/): echo throughput of each transport,
// and io_uring with and without registered files. Run with
//   ring_test --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
// RINGPEER_ECHO_ONLY=NAME runs only the first case of that name and RINGPEER_ECHO_TOTAL=N
// echoes N datagrams instead of 200,000 (bench/transport_callgrind.sh counts instructions
// per echo this way: one thread, so valgrind runs it as it runs natively).
TEST(TransportThroughput, DISABLED_EchoRate) {
  struct Case {
    const char* name;
    TransportKind kind;
    bool register_files;
  };
  const Case cases[] = {{"io_uring fixed files", TransportKind::kIoUring, true},
                        {"io_uring plain fds", TransportKind::kIoUring, false},
                        {"recvmmsg", TransportKind::kMmsg, false},
                        {"io_uring fixed files", TransportKind::kIoUring, true},
                        {"io_uring plain fds", TransportKind::kIoUring, false}};
  const char* only = std::getenv("RINGPEER_ECHO_ONLY");
  const char* total_env = std::getenv("RINGPEER_ECHO_TOTAL");
  const uint32_t kTotal =
      total_env != nullptr ? static_cast<uint32_t>(std::strtoul(total_env, nullptr, 10)) : 200'000;
  for (const Case& c : cases) {
    if (only != nullptr && std::string(only) != c.name) continue;
    TransportConfig config;
    config.register_files = c.register_files;
    auto t = MakeTransport(c.kind, Ep("127.0.0.1:0"), config);
    ASSERT_TRUE(t.ok());
    TestSocket peer(Ep("127.0.0.1:0"));
    constexpr uint32_t kWindow = 512;
    uint32_t sent = 0, replies = 0;
    RecvDatagram batch[64];
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::seconds(60);
    const std::vector<uint8_t> d = MakeDatagram(0, 0, 100);
    const uint64_t syscalls_before = (*t)->stats().syscalls;
    Clock::duration in_transport{};
    for (int i = 0; i < 100'000'000 && replies < kTotal && Clock::now() < deadline; i++) {
      while (sent < kTotal && sent - replies < kWindow) {
        ASSERT_TRUE(peer.SendTo(Target(**t, "127.0.0.1"), d));
        sent++;
      }
      bool woken = false;
      const auto before = Clock::now();
      const size_t n = (*t)->Poll(0, batch, &woken);
      for (size_t k = 0; k < n; k++) Echo(**t, batch[k]);
      (*t)->ReleaseReceived();
      (*t)->Flush();
      in_transport += Clock::now() - before;
      while (peer.Recv(0)) replies++;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const double transport_ns =
        std::chrono::duration<double, std::nano>(in_transport).count() / std::max(1u, replies);
    std::printf("%-22s %8.0f echoes/s  %6.0f ns/echo in the transport  %.3f syscalls/echo\n",
                c.name, replies / seconds, transport_ns,
                double((*t)->stats().syscalls - syscalls_before) / std::max(1u, replies));
    EXPECT_EQ(replies, kTotal);
    if (only != nullptr) break;
  }
}

// Reads one datagram from whichever shard socket has one; returns the shard or -1.
int ReceivingShard(const std::vector<ShardSockets>& shards, std::vector<uint8_t>* out) {
  std::vector<pollfd> fds;
  for (const ShardSockets& s : shards) fds.push_back(pollfd{s.fds[0], POLLIN, 0});
  if (poll(fds.data(), fds.size(), 5000) <= 0) return -1;
  for (size_t i = 0; i < fds.size(); i++) {
    if ((fds[i].revents & POLLIN) == 0) continue;
    out->resize(2048);
    const ssize_t n = recv(fds[i].fd, out->data(), out->size(), 0);
    if (n < 0) return -1;
    out->resize(static_cast<size_t>(n));
    return static_cast<int>(i);
  }
  return -1;
}

void CloseShards(std::vector<ShardSockets>* shards) {
  for (ShardSockets& s : *shards) {
    for (int fd : s.fds) close(fd);
  }
}

// All datagrams come from one source port, so the kernel's hash alone would put them all
// on one shard: landing on hint % shards shows the program steers.
TEST(BindShardSockets, SteersByHintByte) {
  constexpr uint32_t kShards = 3;
  auto shards = BindShardSockets({Ep("127.0.0.1:0")}, kShards, /*steer=*/true);
  ASSERT_TRUE(shards.ok()) << shards.status();
  ASSERT_EQ(shards->size(), kShards);
  const Endpoint port = (*shards)[0].addresses[0];
  for (const ShardSockets& s : *shards) EXPECT_EQ(s.addresses[0], port);
  TestSocket peer(Ep("127.0.0.1:0"));
  for (uint32_t k = 0; k < 12; k++) {
    const uint8_t hint = static_cast<uint8_t>(k * 37 % 255);
    ASSERT_TRUE(peer.SendTo(port, MakeDatagram(k, hint, 32)));
    std::vector<uint8_t> got;
    EXPECT_EQ(ReceivingShard(*shards, &got), static_cast<int>(hint % kShards)) << int{hint};
    EXPECT_EQ(SeqOf(got.data()), k);
  }
  // 0xFF: no preference, the kernel's hash picks; it must still arrive somewhere.
  ASSERT_TRUE(peer.SendTo(port, MakeDatagram(99, 0xFF, 32)));
  std::vector<uint8_t> got;
  EXPECT_GE(ReceivingShard(*shards, &got), 0);
  CloseShards(&*shards);
}

TEST(BindShardSockets, RefusesPortHeldWithoutReuseport) {
  TestSocket holder(Ep("127.0.0.1:0"));
  ASSERT_TRUE(holder.ok());
  auto shards = BindShardSockets({holder.local()}, 2, true);
  ASSERT_FALSE(shards.ok());
  EXPECT_EQ(shards.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(shards.status().message().find("bind " + holder.local().ToString()),
            std::string::npos) << shards.status();
  EXPECT_NE(shards.status().message().find("Address already in use"), std::string::npos);
}

TEST(BindShardSockets, RefusesPortHeldByAnotherReuseportGroup) {
  auto first = BindShardSockets({Ep("127.0.0.1:0")}, 2, true);
  ASSERT_TRUE(first.ok());
  auto second = BindShardSockets({(*first)[0].addresses[0]}, 2, true);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("Address already in use"), std::string::npos)
      << second.status();
  CloseShards(&*first);
}

TEST(BindShardSockets, ReportsUnassignableAddress) {
  // 192.0.2.0/24 is TEST-NET-1: never configured on a host, so bind cannot assign it.
  auto shards = BindShardSockets({Ep("192.0.2.1:7700")}, 1, false);
  ASSERT_FALSE(shards.ok());
  EXPECT_NE(shards.status().message().find("bind 192.0.2.1:7700"), std::string::npos)
      << shards.status();
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

TEST(CreateTransport, FallsBackWhenIoUringIsDisabled) {
  ScopedEnv env("RINGPEER_TEST_DISABLE_IO_URING", "1");
  absl::Status probe = ProbeIoUring();
  EXPECT_EQ(probe.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(probe.message().find("RINGPEER_TEST_DISABLE_IO_URING"), std::string::npos);

  auto sockets = BindShardSockets({Ep("127.0.0.1:0")}, 1, false);
  ASSERT_TRUE(sockets.ok());
  std::string reason;
  auto t = CreateTransport(TransportKind::kAuto, std::move((*sockets)[0]), {}, &reason);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_STREQ((*t)->name(), "recvmmsg");
  EXPECT_NE(reason.find("RINGPEER_TEST_DISABLE_IO_URING"), std::string::npos) << reason;

  auto more = BindShardSockets({Ep("127.0.0.1:0")}, 1, false);
  ASSERT_TRUE(more.ok());
  auto strict = CreateTransport(TransportKind::kIoUring, std::move((*more)[0]), {}, &reason);
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kUnavailable);
}

TEST(CreateTransport, AutoPicksIoUringWhenAvailable) {
  if (!ProbeIoUring().ok()) GTEST_SKIP() << "io_uring unavailable";
  auto sockets = BindShardSockets({Ep("127.0.0.1:0")}, 1, false);
  ASSERT_TRUE(sockets.ok());
  std::string reason = "stale";
  auto t = CreateTransport(TransportKind::kAuto, std::move((*sockets)[0]), {}, &reason);
  ASSERT_TRUE(t.ok());
  EXPECT_STREQ((*t)->name(), "io_uring");
  EXPECT_TRUE(reason.empty());
}

}  // namespace
}  // namespace ringpeer::ring
