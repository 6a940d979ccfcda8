// Goal: the test delay shim (ring/delay_transport.h) holds every send until its due time,
// then sends them in commit order; bounds its queue (a full one drops and counts); keeps
// order when the inner transport is full; shortens Poll's wait to the next due time; and
// CreateTransport wraps a real transport only when a delay is set.
// Method: a fake inner transport that records what it is asked to send and how long Poll
// was allowed to wait, under an injected clock the test moves by hand (no real time).
// The last tests use real sockets on 127.0.0.1 and measure elapsed time; every wait there
// is a loop bounded in iterations and by a deadline, never a sleep.
#include "ring/delay_transport.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "base/endpoint.h"
#include "ring/transport.h"

namespace ringpeer::ring {
namespace {

using base::Endpoint;

Endpoint Ep(const char* text) { return *Endpoint::Parse(text); }

// FakeTransport: sends go into `sent` (on Flush, like a kernel would take them);
// `free_slots` caps how many may be queued between flushes; Poll records its timeout.
class FakeTransport final : public Transport {
 public:
  struct Sent {
    std::vector<uint8_t> bytes;
    Endpoint to;
    int socket_index;
  };

  const char* name() const noexcept override { return "fake"; }
  size_t Poll(int64_t timeout_us, std::span<RecvDatagram>, bool* woken) noexcept override {
    timeouts.push_back(timeout_us);
    *woken = false;
    FlushQueued();
    return 0;
  }
  void ReleaseReceived() noexcept override {}
  std::span<uint8_t> SendBuffer() noexcept override {
    if (queued.size() >= free_slots) {
      stats_.send_slots_full++;
      return {};
    }
    return {slot_, sizeof(slot_)};
  }
  void CommitSend(size_t size, const Endpoint& to, int socket_index) noexcept override {
    queued.push_back(Sent{std::vector<uint8_t>(slot_, slot_ + size), to, socket_index});
  }
  void Flush() noexcept override { FlushQueued(); }
  WakeHandle wake_handle() const noexcept override { return WakeHandle{-1, 42}; }
  void QueueWake(const WakeHandle& target) noexcept override { wakes.push_back(target.event_fd); }
  Endpoint local_address(size_t) const noexcept override { return Ep("127.0.0.1:9"); }
  size_t socket_count() const noexcept override { return 1; }
  const TransportStats& stats() const noexcept override { return stats_; }
  void Shutdown() noexcept override {}

  // With `hold_flushes`, Flush/Poll leave the queue alone (an inner transport whose
  // slots are all still in flight).
  void FlushQueued() {
    if (hold_flushes) return;
    for (Sent& s : queued) sent.push_back(std::move(s));
    stats_.sent += queued.size();
    queued.clear();
  }

  std::vector<Sent> queued, sent;
  std::vector<int64_t> timeouts;
  std::vector<int> wakes;
  size_t free_slots = 1000;
  bool hold_flushes = false;

 private:
  alignas(8) uint8_t slot_[1280];
  TransportStats stats_;
};

constexpr int64_t kDelayUs = 50'000;

class DelayTest : public ::testing::Test {
 protected:
  DelayTest() {
    auto inner = std::make_unique<FakeTransport>();
    fake_ = inner.get();
    DelayConfig c;
    c.delay_us = kDelayUs;
    c.slots = 8;
    c.slot_bytes = 1280;
    c.now_us = [this] { return now_; };
    t_ = std::make_unique<DelayTransport>(std::move(inner), c);
  }

  // Send: one datagram whose first byte is `tag`, `size` bytes, to `to`.
  bool Send(uint8_t tag, size_t size = 100, const char* to = "10.0.0.1:7700", int socket = -1) {
    std::span<uint8_t> buf = t_->SendBuffer();
    if (buf.empty()) return false;
    EXPECT_GE(buf.size(), size);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf.data()) % 8, 0u);
    std::memset(buf.data(), tag, size);
    t_->CommitSend(size, Ep(to), socket);
    return true;
  }

  // Iterate: one shard loop iteration (Poll with the tick's timeout, then Flush).
  void Iterate(int64_t timeout_us = 50'000) {
    RecvDatagram batch[4];
    bool woken = false;
    t_->Poll(timeout_us, batch, &woken);
    t_->ReleaseReceived();
    t_->Flush();
  }

  std::vector<uint8_t> Tags() const {
    std::vector<uint8_t> tags;
    for (const auto& s : fake_->sent) tags.push_back(s.bytes[0]);
    return tags;
  }

  int64_t now_ = 1'000'000;
  FakeTransport* fake_ = nullptr;
  std::unique_ptr<DelayTransport> t_;
};

TEST_F(DelayTest, NothingLeavesBeforeItsDueTimeThenAllInOrder) {
  ASSERT_TRUE(Send(1, 100, "10.0.0.1:7700", 0));
  ASSERT_TRUE(Send(2, 1200, "[fd00::2]:7701", -1));
  ASSERT_TRUE(Send(3, 16, "10.0.0.3:7702", 1));
  EXPECT_EQ(t_->held(), 3u);
  EXPECT_EQ(t_->next_due_us(), now_ + kDelayUs);
  now_ += 10;
  ASSERT_TRUE(Send(4));  // due 10 µs after the others

  Iterate();
  EXPECT_TRUE(fake_->sent.empty());
  now_ += kDelayUs - 11;  // 1 µs before the first three are due
  Iterate();
  EXPECT_TRUE(fake_->sent.empty());
  EXPECT_TRUE(fake_->queued.empty());

  now_ += 1;  // the first three are due, the fourth not yet
  Iterate();
  EXPECT_EQ(Tags(), (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(t_->held(), 1u);
  now_ += 9;
  Iterate();
  EXPECT_EQ(Tags(), (std::vector<uint8_t>{1, 2, 3}));
  now_ += 1;
  Iterate();
  EXPECT_EQ(Tags(), (std::vector<uint8_t>{1, 2, 3, 4}));
  EXPECT_EQ(t_->held(), 0u);

  // Bytes, sizes, destinations and socket choices pass through unchanged.
  ASSERT_EQ(fake_->sent.size(), 4u);
  EXPECT_EQ(fake_->sent[0].bytes, std::vector<uint8_t>(100, 1));
  EXPECT_EQ(fake_->sent[1].bytes, std::vector<uint8_t>(1200, 2));
  EXPECT_EQ(fake_->sent[2].bytes, std::vector<uint8_t>(16, 3));
  EXPECT_EQ(fake_->sent[0].to, Ep("10.0.0.1:7700"));
  EXPECT_EQ(fake_->sent[1].to, Ep("[fd00::2]:7701"));
  EXPECT_EQ(fake_->sent[2].to, Ep("10.0.0.3:7702"));
  EXPECT_EQ(fake_->sent[0].socket_index, 0);
  EXPECT_EQ(fake_->sent[1].socket_index, -1);
  EXPECT_EQ(fake_->sent[2].socket_index, 1);
  EXPECT_EQ(t_->stats().send_delayed, 4u);
  EXPECT_EQ(t_->stats().sent, 4u);  // the inner transport's counters show through
}

TEST_F(DelayTest, PollWaitsNoLongerThanTheOldestDueTime) {
  Iterate(50'000);  // nothing held: the caller's timeout passes through
  Iterate(-1);
  ASSERT_EQ(fake_->timeouts.size(), 2u);
  EXPECT_EQ(fake_->timeouts[0], 50'000);
  EXPECT_EQ(fake_->timeouts[1], -1);

  ASSERT_TRUE(Send(1));
  now_ += 30'000;
  Iterate(50'000);  // due in 20 ms: a 50 ms wait is cut to 20 ms
  EXPECT_EQ(fake_->timeouts.back(), 20'000);
  Iterate(-1);      // an unbounded wait too
  EXPECT_EQ(fake_->timeouts.back(), 20'000);
  Iterate(5'000);   // a shorter wait is kept
  EXPECT_EQ(fake_->timeouts.back(), 5'000);
  Iterate(0);
  EXPECT_EQ(fake_->timeouts.back(), 0);
  now_ += 20'000;
  Iterate(50'000);  // sent before the wait; nothing held, so the full wait
  EXPECT_EQ(fake_->timeouts.back(), 50'000);
  EXPECT_EQ(Tags(), (std::vector<uint8_t>{1}));
}

TEST_F(DelayTest, FullQueueDropsAndCounts) {
  // Three sent first, so that the eight that fill the ring wrap around its end.
  for (uint8_t i = 0; i < 3; i++) ASSERT_TRUE(Send(i));
  now_ += kDelayUs;
  Iterate();
  EXPECT_EQ(Tags(), (std::vector<uint8_t>{0, 1, 2}));

  for (uint8_t i = 10; i < 15; i++) ASSERT_TRUE(Send(i)) << int(i);
  now_ += 5;
  for (uint8_t i = 15; i < 18; i++) ASSERT_TRUE(Send(i)) << int(i);
  EXPECT_FALSE(Send(18));
  EXPECT_FALSE(Send(19));
  EXPECT_EQ(t_->held(), 8u);
  EXPECT_EQ(t_->stats().send_delay_full, 2u);
  EXPECT_EQ(t_->stats().send_slots_full, 2u);  // where the shard counts a full send queue
  EXPECT_EQ(t_->stats().send_delayed, 11u);

  now_ += kDelayUs - 5;  // the first five are due
  Iterate();
  EXPECT_EQ(Tags(), (std::vector<uint8_t>{0, 1, 2, 10, 11, 12, 13, 14}));
  ASSERT_TRUE(Send(20));  // room again
  now_ += 5;
  Iterate();
  EXPECT_EQ(Tags(), (std::vector<uint8_t>{0, 1, 2, 10, 11, 12, 13, 14, 15, 16, 17}));
  now_ += kDelayUs;
  Iterate();
  EXPECT_EQ(Tags(), (std::vector<uint8_t>{0, 1, 2, 10, 11, 12, 13, 14, 15, 16, 17, 20}));
  EXPECT_EQ(t_->stats().send_delay_full, 2u);
}

TEST_F(DelayTest, InnerTransportFullKeepsTheRestInOrder) {
  for (uint8_t i = 0; i < 5; i++) ASSERT_TRUE(Send(i));
  fake_->free_slots = 2;
  fake_->hold_flushes = true;  // the inner slots stay in flight
  now_ += kDelayUs;
  Iterate();
  EXPECT_EQ(fake_->queued.size(), 2u);
  EXPECT_EQ(t_->held(), 3u);
  // Overdue and held: Poll must not sleep.
  Iterate(50'000);
  EXPECT_EQ(fake_->timeouts.back(), 0);
  fake_->hold_flushes = false;
  fake_->FlushQueued();
  fake_->free_slots = 1000;
  Iterate();
  EXPECT_EQ(Tags(), (std::vector<uint8_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(t_->held(), 0u);
  EXPECT_EQ(t_->stats().send_delay_full, 0u);  // nothing was dropped
}

TEST_F(DelayTest, WakesAndAddressesPassThrough) {
  t_->QueueWake(WakeHandle{-1, 7});
  EXPECT_EQ(fake_->wakes, std::vector<int>{7});  // doorbells are not delayed
  EXPECT_EQ(t_->wake_handle().event_fd, 42);
  EXPECT_EQ(t_->local_address(0), Ep("127.0.0.1:9"));
  EXPECT_EQ(t_->socket_count(), 1u);
  EXPECT_STREQ(t_->name(), "fake");
}

// Real sockets: CreateTransport wraps only with a delay, and a wrapped transport whose
// caller waits up to a whole second still sends each datagram soon after its due time.
using Clock = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(20);

int BoundUdpSocket(Endpoint* local) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_storage ss;
  socklen_t len = Ep("127.0.0.1:0").ToSockaddr(&ss, false);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return -1;
  len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  *local = Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  return fd;
}

class DelayRealTest : public ::testing::TestWithParam<TransportKind> {
 protected:
  void SetUp() override {
    if (GetParam() == TransportKind::kIoUring && !ProbeIoUring().ok()) {
      GTEST_SKIP() << "io_uring unavailable here";
    }
  }
  std::unique_ptr<Transport> Make(int64_t delay_us) {
    auto sockets = BindShardSockets({Ep("127.0.0.1:0")}, 1, /*steer=*/false);
    EXPECT_TRUE(sockets.ok()) << sockets.status();
    if (!sockets.ok()) return nullptr;
    TransportConfig c;
    c.send_slots = 64;
    c.sq_entries = 256;
    c.recv_buffers = 64;
    c.send_delay_us = delay_us;
    c.send_delay_slots = 16;
    std::string reason;
    auto t = CreateTransport(GetParam(), std::move((*sockets)[0]), c, &reason);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }
};

TEST_P(DelayRealTest, WrapsOnlyWithADelay) {
  auto plain = Make(0);
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(dynamic_cast<DelayTransport*>(plain.get()), nullptr);
  auto delayed = Make(1000);
  ASSERT_NE(delayed, nullptr);
  EXPECT_NE(dynamic_cast<DelayTransport*>(delayed.get()), nullptr);
}

TEST_P(DelayRealTest, DatagramsArriveAfterTheDelayInOrder) {
  constexpr int64_t kRealDelayUs = 100'000;
  constexpr int kCount = 5;
  auto t = Make(kRealDelayUs);
  ASSERT_NE(t, nullptr);
  Endpoint peer;
  const int fd = BoundUdpSocket(&peer);
  ASSERT_GE(fd, 0);
  RecvDatagram batch[8];
  bool woken = false;
  t->Poll(0, batch, &woken);  // io_uring: enables the ring on this thread
  t->ReleaseReceived();

  const auto start = Clock::now();
  for (int i = 0; i < kCount; i++) {
    std::span<uint8_t> buf = t->SendBuffer();
    ASSERT_FALSE(buf.empty());
    buf[0] = static_cast<uint8_t>(i);
    t->CommitSend(1, peer);
  }
  t->Flush();
  // The shard loop: each Poll may wait a whole second; the shim must cut that short.
  std::vector<int> got;
  std::optional<Clock::duration> first_at;
  const auto deadline = start + kDeadline;
  for (int iter = 0; iter < 10'000 && got.size() < kCount && Clock::now() < deadline; iter++) {
    t->Poll(1'000'000, batch, &woken);
    t->ReleaseReceived();
    t->Flush();
    t->Poll(0, batch, &woken);  // io_uring: submit what Flush queued
    t->ReleaseReceived();
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0) continue;
    uint8_t b[64];
    for (ssize_t n; (n = recv(fd, b, sizeof(b), 0)) > 0;) {
      if (!first_at) first_at = Clock::now() - start;
      got.push_back(b[0]);
    }
  }
  close(fd);
  ASSERT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4}));
  ASSERT_TRUE(first_at.has_value());
  const auto first_us = std::chrono::duration_cast<std::chrono::microseconds>(*first_at).count();
  EXPECT_GE(first_us, kRealDelayUs);
  // Far less than the one-second wait the caller asked for (loose: a loaded CI host).
  EXPECT_LT(first_us, kRealDelayUs + 600'000);
  EXPECT_EQ(t->stats().send_delayed, uint64_t{kCount});
}

INSTANTIATE_TEST_SUITE_P(Kinds, DelayRealTest,
                         ::testing::Values(TransportKind::kIoUring, TransportKind::kMmsg),
                         [](const auto& info) {
                           return info.param == TransportKind::kIoUring ? "IoUring" : "Mmsg";
                         });

}  // namespace
}  // namespace ringpeer::ring
