// MmsgTransport (ring/mmsg_transport.h): ppoll + recvmmsg in, sendmmsg out.
#include "ring/mmsg_transport.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <ctime>

#include "base/assert.h"
#include "base/status.h"

namespace ringpeer::ring {
namespace {

using base::Endpoint;

absl::Status ValidateConfig(const TransportConfig& c, const ShardSockets& s) {
  if (s.fds.empty() || s.fds.size() != s.addresses.size()) {
    return absl::InvalidArgumentError("recvmmsg transport: no sockets, or fds != addresses");
  }
  if (c.recv_buffers == 0 || c.recv_buffer_bytes == 0 || c.recv_buffer_bytes % 8 != 0) {
    return absl::InvalidArgumentError("recv_buffers and recv_buffer_bytes (8-byte multiple)");
  }
  if (c.send_slots == 0 || c.send_slot_bytes == 0 || c.send_slot_bytes % 8 != 0) {
    return absl::InvalidArgumentError("send_slots and send_slot_bytes (8-byte multiple)");
  }
  if (c.burst_buffers >= 0xFFFF) {
    return absl::InvalidArgumentError("burst_buffers must be below 65535");
  }
  return absl::OkStatus();
}

}  // namespace

MmsgTransport::MmsgTransport(const TransportConfig& config) : config_(config) {}

MmsgTransport::~MmsgTransport() {
  Shutdown();
  if (event_fd_ >= 0) close(event_fd_);
}

void MmsgTransport::Shutdown() noexcept {
  // Plain sockets: the queued sends go out with one more flush, and close() releases the
  // port at once (nothing else holds a reference to the socket). The eventfd stays open
  // until the destructor, as UringTransport's does: another shard that is still stopping
  // may ring it, and a closed number could by then name some other file.
  if (!fds_.empty()) Flush();
  for (int fd : fds_) close(fd);
  fds_.clear();
}

absl::StatusOr<std::unique_ptr<MmsgTransport>> MmsgTransport::Create(
    ShardSockets* sockets, const TransportConfig& config) {
  RP_RETURN_IF_ERROR(ValidateConfig(config, *sockets));
  std::unique_ptr<MmsgTransport> t(new MmsgTransport(config));
  // Nonblocking: Poll() reads it directly and must never sleep on it.
  t->event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (t->event_fd_ < 0) return base::ErrnoStatus(errno, "eventfd");
  t->Allocate(sockets->fds.size());
  t->fds_ = std::move(sockets->fds);
  t->addresses_ = std::move(sockets->addresses);
  sockets->fds.clear();
  sockets->addresses.clear();
  for (size_t i = 0; i < t->fds_.size(); i++) t->pollfds_[i] = pollfd{t->fds_[i], POLLIN, 0};
  t->bursts_on_ = config.burst_buffers > 0;
  for (int fd : t->fds_) t->bursts_on_ = t->bursts_on_ && UdpGsoAvailable(fd);
  t->pollfds_.back() = pollfd{t->event_fd_, POLLIN, 0};
  return t;
}

void MmsgTransport::Allocate(size_t sockets) {
  pollfds_.resize(sockets + 1);
  recv_slots_ = std::min(kRecvSlotsMax, config_.recv_buffers);
  const size_t recv_words = config_.recv_buffer_bytes / 8;
  recv_memory_ = std::make_unique<uint64_t[]>(recv_slots_ * recv_words);
  recv_names_ = std::make_unique<sockaddr_storage[]>(recv_slots_);
  recv_iovs_ = std::make_unique<iovec[]>(recv_slots_);
  recv_msgs_ = std::make_unique<mmsghdr[]>(recv_slots_);
  for (uint32_t i = 0; i < recv_slots_; i++) {
    recv_iovs_[i] = iovec{&recv_memory_[i * recv_words], config_.recv_buffer_bytes};
    recv_msgs_[i] = mmsghdr{};
    recv_msgs_[i].msg_hdr.msg_name = &recv_names_[i];
    recv_msgs_[i].msg_hdr.msg_iov = &recv_iovs_[i];
    recv_msgs_[i].msg_hdr.msg_iovlen = 1;
  }
  const size_t send_words = config_.send_slot_bytes / 8;
  send_memory_ = std::make_unique<uint64_t[]>(config_.send_slots * send_words);
  slots_ = std::make_unique<SendSlot[]>(config_.send_slots);
  free_slots_ = std::make_unique<uint32_t[]>(config_.send_slots);
  queued_ = std::make_unique<uint32_t[]>(config_.send_slots);
  send_msgs_ = std::make_unique<mmsghdr[]>(config_.send_slots);
  batch_slots_ = std::make_unique<uint32_t[]>(config_.send_slots);
  for (uint32_t i = 0; i < config_.send_slots; i++) {
    free_slots_[i] = config_.send_slots - 1 - i;
    slots_[i].own = &send_memory_[i * send_words];
    slots_[i].iov.iov_base = slots_[i].own;
  }
  free_count_ = config_.send_slots;
  if (config_.burst_buffers > 0) {
    burst_memory_ =
        std::make_unique<uint64_t[]>(size_t{config_.burst_buffers} * base::kBurstBytesMax / 8);
    burst_free_ = std::make_unique<uint16_t[]>(config_.burst_buffers);
    for (uint32_t i = 0; i < config_.burst_buffers; i++) {
      burst_free_[i] = static_cast<uint16_t>(config_.burst_buffers - 1 - i);
    }
    burst_free_count_ = config_.burst_buffers;
  }
}

size_t MmsgTransport::Poll(int64_t timeout_us, std::span<RecvDatagram> out,
                           bool* woken) noexcept {
  RP_ASSERT(woken != nullptr);
  RP_ASSERT(!held_);  // REQUIRES: ReleaseReceived() after the previous Poll
  *woken = first_poll_;
  first_poll_ = false;
  FlushWakes();  // doorbells go out before we may sleep
  Wait(timeout_us);
  if (pollfds_.back().revents != 0) {
    uint64_t value = 0;
    stats_.syscalls++;
    if (read(event_fd_, &value, sizeof(value)) == sizeof(value)) {
      stats_.wakeups++;
      *woken = true;
    }
  }
  const size_t cap = std::min<size_t>(out.size(), recv_slots_);
  size_t filled = 0;
  for (size_t s = 0; s < fds_.size() && filled < cap; s++) {
    if (pollfds_[s].revents == 0) continue;
    filled = ReceiveFrom(s, out.first(cap), filled);
  }
  held_ = true;
  return filled;
}

void MmsgTransport::Wait(int64_t timeout_us) noexcept {
  timespec ts{};
  ts.tv_sec = timeout_us / 1'000'000;
  ts.tv_nsec = (timeout_us % 1'000'000) * 1000;
  stats_.syscalls++;
  const int ready = ppoll(pollfds_.data(), pollfds_.size(), timeout_us < 0 ? nullptr : &ts,
                          nullptr);
  if (ready <= 0) {
    for (pollfd& p : pollfds_) p.revents = 0;  // timeout or EINTR: nothing to read
  }
}

// ReceiveFrom: recvmmsg from one socket until it is empty or `out` is full. Each call
// takes up to kRecvBatch, so the loop runs at most kRecvSlotsMax / kRecvBatch + 1 times.
size_t MmsgTransport::ReceiveFrom(size_t s, std::span<RecvDatagram> out,
                                  size_t filled) noexcept {
  while (filled < out.size()) {
    const auto want = static_cast<unsigned>(std::min<size_t>(kRecvBatch, out.size() - filled));
    for (size_t i = filled; i < filled + want; i++) {
      recv_msgs_[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
      recv_msgs_[i].msg_hdr.msg_flags = 0;
    }
    stats_.syscalls++;
    const int got = recvmmsg(fds_[s], &recv_msgs_[filled], want, MSG_DONTWAIT, nullptr);
    if (got <= 0) break;  // EAGAIN: drained; other errors (ICMP) are retried next Poll
    for (size_t i = filled; i < filled + static_cast<size_t>(got); i++) {
      const msghdr& h = recv_msgs_[i].msg_hdr;
      RecvDatagram& d = out[i];
      d.data = static_cast<const uint8_t*>(recv_iovs_[i].iov_base);
      RP_DASSERT(reinterpret_cast<uintptr_t>(d.data + 16) % 8 == 0);
      d.size = recv_msgs_[i].msg_len;
      d.socket_index = static_cast<uint16_t>(s);
      d.truncated = (h.msg_flags & MSG_TRUNC) != 0;
      d.from = Endpoint::FromSockaddr(static_cast<const sockaddr*>(h.msg_name), h.msg_namelen);
      if (d.truncated) stats_.recv_truncated++;
    }
    stats_.received += static_cast<uint64_t>(got);
    filled += static_cast<size_t>(got);
    if (static_cast<unsigned>(got) < want) break;  // the socket is empty
  }
  return filled;
}

std::span<uint8_t> MmsgTransport::SendBuffer() noexcept {
  if (free_count_ == 0) {
    stats_.send_slots_full++;
    return {};
  }
  const uint32_t slot = free_slots_[free_count_ - 1];
  return {static_cast<uint8_t*>(slots_[slot].iov.iov_base), config_.send_slot_bytes};
}

void MmsgTransport::CommitSend(size_t size, const Endpoint& to, int socket_index) noexcept {
  RP_ASSERT(free_count_ > 0);  // REQUIRES: SendBuffer() returned a slot
  RP_ASSERT(size <= config_.send_slot_bytes);
  const int s = ring::PickSocket(addresses_, to, socket_index);
  if (s < 0) {
    stats_.send_errors++;  // no socket of that family; the slot stays free
    return;
  }
  const uint32_t slot = free_slots_[--free_count_];
  SendSlot& send = slots_[slot];
  send.iov.iov_len = size;
  send.to_bytes = to.ToSockaddr(&send.to, addresses_[s].family == Endpoint::Family::kV6);
  send.socket_index = static_cast<uint16_t>(s);
  RP_ASSERT(queued_count_ < config_.send_slots);
  queued_[queued_count_++] = slot;
}

std::span<uint8_t> MmsgTransport::BurstBuffer() noexcept {
  if (burst_out_ == kNoBurst) {
    if (!bursts_on_ || burst_free_count_ == 0) return {};
    burst_out_ = burst_free_[--burst_free_count_];  // the caller's until CommitBurst
  }
  return {reinterpret_cast<uint8_t*>(&burst_memory_[size_t{burst_out_} * base::kBurstBytesMax / 8]),
          base::kBurstBytesMax};
}

size_t MmsgTransport::CommitBurst(size_t size, size_t segment,
                                  std::span<const Endpoint> to) noexcept {
  RP_ASSERT(burst_out_ != kNoBurst);  // REQUIRES: BurstBuffer() returned a buffer
  RP_ASSERT(size > 0 && size <= base::kBurstBytesMax && segment > 0 &&
            segment <= config_.send_slot_bytes && to.size() <= base::kBurstPeersMax);
  RP_ASSERT(BurstDatagrams(size, segment) <= base::kBurstDatagramsMax);
  // Taken for good until Flush(), which sends every queued datagram and frees them all.
  const uint32_t b = burst_out_;
  burst_out_ = kNoBurst;
  uint64_t* const data = &burst_memory_[size_t{b} * base::kBurstBytesMax / 8];
  size_t queued = 0;
  for (const Endpoint& peer : to) {
    if (free_count_ == 0) {
      stats_.send_slots_full++;
      continue;
    }
    const int s = ring::PickSocket(addresses_, peer, -1);
    if (s < 0) {
      stats_.send_errors++;
      continue;
    }
    const uint32_t slot = free_slots_[--free_count_];
    SendSlot& send = slots_[slot];
    send.iov = iovec{data, size};
    send.burst = true;
    send.datagrams = BurstDatagrams(size, segment);
    SetBurstSegment(&send.control, static_cast<uint16_t>(segment));
    send.to_bytes = peer.ToSockaddr(&send.to, addresses_[s].family == Endpoint::Family::kV6);
    send.socket_index = static_cast<uint16_t>(s);
    RP_ASSERT(queued_count_ < config_.send_slots);
    queued_[queued_count_++] = slot;
    stats_.bursts++;
    queued += send.datagrams;
  }
  return queued;
}

void MmsgTransport::Flush() noexcept {
  FlushWakes();
  for (size_t s = 0; s < fds_.size() && queued_count_ > 0; s++) SendQueued(s);
  // Every queued slot was sent or counted as failed: all are free again, bursts too.
  for (uint32_t i = 0; i < queued_count_; i++) {
    SendSlot& send = slots_[queued_[i]];
    if (send.burst) {
      send.burst = false;
      send.datagrams = 1;
      send.iov.iov_base = send.own;
    }
    free_slots_[free_count_++] = queued_[i];
  }
  RP_ASSERT(free_count_ == config_.send_slots);
  queued_count_ = 0;
  // Every buffer is free again but one handed out and not yet committed.
  burst_free_count_ = 0;
  for (uint32_t i = 0; i < config_.burst_buffers; i++) {
    const uint32_t b = config_.burst_buffers - 1 - i;
    if (b != burst_out_) burst_free_[burst_free_count_++] = static_cast<uint16_t>(b);
  }
}

void MmsgTransport::SendQueued(size_t s) noexcept {
  size_t count = 0;
  for (uint32_t i = 0; i < queued_count_; i++) {
    SendSlot& send = slots_[queued_[i]];
    if (send.socket_index != s) continue;
    batch_slots_[count] = queued_[i];
    msghdr& h = send_msgs_[count++].msg_hdr;
    h = msghdr{};
    h.msg_name = &send.to;
    h.msg_namelen = send.to_bytes;
    h.msg_iov = &send.iov;
    h.msg_iovlen = 1;
    if (send.burst) {
      h.msg_control = send.control.bytes;
      h.msg_controllen = sizeof(send.control.bytes);
    }
  }
  if (count > 0) SendBatch(fds_[s], count);
}

// SendBatch: sendmmsg until all are sent. A full socket buffer (EAGAIN) gets one retry of
// the rest, then the rest is counted as dropped; an error on one datagram (ECONNREFUSED
// from an earlier ICMP, EPERM from a firewall) skips that one. Each pass sends at least
// one datagram or spends the single retry, so the loop ends.
void MmsgTransport::SendBatch(int fd, size_t count) noexcept {
  mmsghdr* const msgs = send_msgs_.get();
  size_t done = 0;
  bool retried = false;
  while (done < count) {
    const auto n = static_cast<unsigned>(std::min<size_t>(count - done, kSendmmsgMax));
    stats_.syscalls++;
    const int sent = sendmmsg(fd, msgs + done, n, MSG_DONTWAIT);
    if (sent > 0) {
      for (int i = 0; i < sent; i++) stats_.sent += slots_[batch_slots_[done + i]].datagrams;
      done += static_cast<size_t>(sent);
      continue;
    }
    const int err = errno;
    if (slots_[batch_slots_[done]].burst && BurstRefused(err) && bursts_on_) {
      bursts_on_ = false;  // from the next burst on, the callers send datagram by datagram
      stats_.burst_fallbacks++;
    }
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ENOBUFS) {
      if (retried) break;
      retried = true;
      continue;
    }
    stats_.send_errors++;
    done++;
  }
  stats_.send_errors += count - done;
}

void MmsgTransport::QueueWake(const WakeHandle& target) noexcept {
  // An io_uring transport keeps an eventfd for us too, so every handle has one.
  RP_ASSERT(target.event_fd >= 0);
  for (uint32_t i = 0; i < wake_count_; i++) {
    if (wake_fds_[i] == target.event_fd) return;  // already queued: one doorbell is enough
  }
  if (wake_count_ == kWakeTargetsMax) FlushWakes();
  wake_fds_[wake_count_++] = target.event_fd;
}

void MmsgTransport::FlushWakes() noexcept {
  for (uint32_t i = 0; i < wake_count_; i++) {
    const uint64_t one = 1;
    stats_.syscalls++;
    // Can fail only if the counter would overflow, i.e. the target is ringing already.
    (void)!write(wake_fds_[i], &one, sizeof(one));
  }
  wake_count_ = 0;
}

Endpoint MmsgTransport::local_address(size_t i) const noexcept {
  RP_ASSERT(i < addresses_.size());
  return addresses_[i];
}

}  // namespace ringpeer::ring
