// MmsgTransport: the recvmmsg/sendmmsg implementation of ring::Transport, for hosts where
// io_uring is unavailable (kernel.io_uring_disabled, Docker's default seccomp profile, an
// old kernel). Same interface and the same zero-allocation rule; it costs more system
// calls per iteration than io_uring: ppoll + one recvmmsg per readable socket + one
// sendmmsg per socket with queued sends.
//
// Receives copy nothing either: recvmmsg writes into this transport's fixed buffers,
// which Poll() hands out until ReleaseReceived(). Sends are queued in fixed slots and
// go out in Flush(). Doorbells are an eventfd; QueueWake() writes other shards' eventfds
// in the next Flush() (or Poll()).
//
// Thread-safety: shard-local, not thread-safe; wake_handle() may be read by any thread.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "ring/transport.h"

namespace ringpeer::ring {

class MmsgTransport final : public Transport {
 public:
  // Datagrams per recvmmsg call: amortises the syscall (~64 x 1.2 KB fits the L2 cache).
  static constexpr uint32_t kRecvBatch = 64;
  // Datagrams one Poll() can hand out (so receive memory is 256 x recv_buffer_bytes,
  // 512 KiB by default, not the 8 MiB that io_uring's kernel-filled ring needs).
  static constexpr uint32_t kRecvSlotsMax = 256;
  // The kernel caps one sendmmsg at UIO_MAXIOV messages.
  static constexpr uint32_t kSendmmsgMax = 1024;
  // Distinct doorbells queued between two flushes: one per other shard, and we run at
  // most 64 shards. Beyond that a doorbell is written at once instead.
  static constexpr uint32_t kWakeTargetsMax = 64;

  // Create: allocates everything. On success it owns `*sockets` (moved out); on failure
  // `*sockets` is left untouched.
  static absl::StatusOr<std::unique_ptr<MmsgTransport>> Create(ShardSockets* sockets,
                                                               const TransportConfig& config);
  ~MmsgTransport() override;

  const char* name() const noexcept override { return "recvmmsg"; }
  size_t Poll(int64_t timeout_us, std::span<RecvDatagram> out, bool* woken) noexcept override;
  void ReleaseReceived() noexcept override { held_ = false; }
  std::span<uint8_t> SendBuffer() noexcept override;
  void CommitSend(size_t size, const base::Endpoint& to, int socket_index = -1) noexcept override;
  std::span<uint8_t> BurstBuffer() noexcept override;
  size_t CommitBurst(size_t size, size_t segment,
                     std::span<const base::Endpoint> to) noexcept override;
  void Flush() noexcept override;
  WakeHandle wake_handle() const noexcept override { return WakeHandle{-1, event_fd_}; }
  void QueueWake(const WakeHandle& target) noexcept override;
  base::Endpoint local_address(size_t i) const noexcept override;
  size_t socket_count() const noexcept override { return fds_.size(); }
  const TransportStats& stats() const noexcept override { return stats_; }
  void Shutdown() noexcept override;

 private:
  struct SendSlot {
    sockaddr_storage to;
    iovec iov;
    socklen_t to_bytes;
    uint16_t socket_index;
    bool burst = false;      // iov points into a burst buffer; `control` holds its segment
    uint32_t datagrams = 1;  // what it puts on the wire
    uint64_t* own = nullptr; // the slot's own memory
    BurstControl control;
  };

  explicit MmsgTransport(const TransportConfig& config);
  void Allocate(size_t sockets);
  void Wait(int64_t timeout_us) noexcept;
  size_t ReceiveFrom(size_t socket_index, std::span<RecvDatagram> out, size_t filled) noexcept;
  void SendQueued(size_t socket_index) noexcept;
  // SendBatch: sendmmsg of send_msgs_[0..count), whose slots are batch_slots_[0..count).
  void SendBatch(int fd, size_t count) noexcept;
  void FlushWakes() noexcept;

  const TransportConfig config_;
  std::vector<int> fds_;
  std::vector<base::Endpoint> addresses_;
  std::vector<pollfd> pollfds_;  // the sockets, then the eventfd
  int event_fd_ = -1;
  bool held_ = false;
  bool first_poll_ = true;

  // Receive: slot i = buffer i, name i, header i.
  uint32_t recv_slots_ = 0;
  std::unique_ptr<uint64_t[]> recv_memory_;  // uint64_t: 8-byte aligned buffers
  std::unique_ptr<sockaddr_storage[]> recv_names_;
  std::unique_ptr<iovec[]> recv_iovs_;
  std::unique_ptr<mmsghdr[]> recv_msgs_;

  // Send: slots, a free stack, the queue in commit order, and the sendmmsg headers.
  std::unique_ptr<uint64_t[]> send_memory_;
  std::unique_ptr<SendSlot[]> slots_;
  std::unique_ptr<uint32_t[]> free_slots_;
  uint32_t free_count_ = 0;
  std::unique_ptr<uint32_t[]> queued_;
  uint32_t queued_count_ = 0;
  std::unique_ptr<mmsghdr[]> send_msgs_;
  std::unique_ptr<uint32_t[]> batch_slots_;

  // Bursts: burst_buffers x base::kBurstBytesMax; all are free again after each Flush().
  std::unique_ptr<uint64_t[]> burst_memory_;
  std::unique_ptr<uint16_t[]> burst_free_;
  uint32_t burst_free_count_ = 0;
  static constexpr uint32_t kNoBurst = 0xFFFFFFFFu;
  uint32_t burst_out_ = kNoBurst;  // handed out by BurstBuffer(), not yet committed
  bool bursts_on_ = false;  // burst_buffers > 0, the kernel has GSO, none was refused

  int wake_fds_[kWakeTargetsMax] = {};
  uint32_t wake_count_ = 0;

  TransportStats stats_;
};

}  // namespace ringpeer::ring
