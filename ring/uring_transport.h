// UringTransport: the io_uring implementation of ring::Transport (ring/transport.h).
//
// Receives: one multishot recvmsg per socket, selecting buffers from one provided-buffer
// ring shared by the shard's sockets, so the kernel writes each datagram straight into a
// buffer that Poll() hands to the shard without a copy. Sends: a fixed pool of send slots,
// one sendmsg SQE each, the slot freed by its completion. Doorbells: MSG_RING from another
// ring, or a write to the eventfd that this ring keeps a read armed on (so that a
// recvmmsg transport can wake it too). Each Poll() is one io_uring_enter: it submits what
// was queued since the last one and waits.
//
// Buffer layout of one receive buffer (the kernel writes it, recvmsg multishot format):
//   [io_uring_recvmsg_out 16 B][source address, kRecvNameBytes][payload ...]
// so the payload starts 48 B into an 8-byte aligned buffer and payload + 16 is aligned.
// With recv_gro (TransportConfig) a 24 B control message (UDP_GRO's segment size) sits
// between the address and the payload, which then starts at 72 B; a buffer holds a whole
// burst, handed out as its datagrams in place (SplitCoalesced).
//
// Thread-safety: shard-local, not thread-safe. It may be constructed on one thread and
// then used only by another: the ring is created disabled and enabled by the first Poll(),
// which makes the polling thread its single issuer (IORING_SETUP_SINGLE_ISSUER).
// wake_handle() may be read by any thread.
#pragma once

#include <liburing.h>
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "ring/transport.h"

namespace ringpeer::ring {

class UringTransport final : public Transport {
 public:
  // Room reserved in each receive buffer for the source address. sockaddr_in6 is 28 B;
  // 32 keeps the payload 8-byte aligned (16 B recvmsg_out + 32 B = 48 B).
  static constexpr uint32_t kRecvNameBytes = 32;
  // Offset of the payload inside a receive buffer.
  static constexpr uint32_t kRecvPayloadOffset =
      static_cast<uint32_t>(sizeof(io_uring_recvmsg_out)) + kRecvNameBytes;
  // CQEs looked at per io_uring_peek_batch_cqe call, and calls per Poll(): bounds the work
  // of one Poll at 1024 completions (receives beyond out.size() stay queued for the next).
  static constexpr uint32_t kCqeBatch = 256;
  static constexpr uint32_t kDrainRoundsMax = 4;
  // SQEs kept beyond send_slots: one receive re-arm per socket plus the eventfd read, and
  // doorbells to other shards (one per shard per iteration; 64 is the most shards we run).
  static constexpr uint32_t kSqeReserve = 80;
  // Shutdown: how long it waits for the kernel to end our requests, in rounds of <= 10 ms;
  // the first kShutdownSendRounds rounds let queued sends complete before the cancel.
  static constexpr int kShutdownWaitMs = 1000;
  static constexpr int kShutdownRoundsMax = 200;
  static constexpr int kShutdownSendRounds = 10;
  // The buffer ring's level (see spare_): it starts at recv_ring_level_min, doubles when a
  // poll finds it under a quarter full or a receive ran out of buffers, and halves after
  // kRingLevelReviewPolls polls that never used more than a quarter of it.
  static constexpr uint32_t kRingLevelReviewPolls = 4096;
  // Poll: waits again at most this many times when a wait ended on completions of our own
  // sends only (the third end of a wait is then a timeout, a doorbell or a datagram).
  static constexpr uint32_t kQuietWaitsMax = 4;
  // A coalesced wait (TransportConfig::coalesce_us) ends early once this many completions
  // are ready: a burst is not held back.
  static constexpr uint32_t kCoalesceWaitNr = 32;
  // The largest provided-buffer ring the kernel accepts (buffer ids are 16 bits).
  static constexpr uint32_t kRecvBuffersMax = 32768;
  // With recv_gro (TransportConfig), each buffer also has room for the UDP_GRO control
  // message (an int, kernel-aligned: 24 B) before the payload, which then starts at 72 B
  // (payload + 16 stays 8-byte aligned); the payload room takes any UDP datagram (64 KiB)
  // and, when a sender cut its burst at a size that is not a multiple of 8, the 7 B per
  // datagram (at most kGroSegmentsMax) that moving each onto an 8-byte boundary needs.
  static constexpr uint32_t kGroControlBytes = 24;
  static constexpr uint32_t kGroSegmentsMax = 128;  // UDP_MAX_SEGMENTS since Linux 6.6
  static constexpr uint32_t kGroBufferBytes =
      static_cast<uint32_t>(sizeof(io_uring_recvmsg_out)) + kRecvNameBytes +
      kGroControlBytes + 65536 + 7 * kGroSegmentsMax;

  // SplitCoalesced (recv_gro): hands out the datagrams of one receive that holds a burst
  // (`stored` bytes at `payload`, `room` bytes to its buffer's end) cut at `segment`
  // bytes, each at an offset from `payload` that is a multiple of 8, in place (another
  // sender's odd segments are moved up, within `room`); returns how many (at most
  // out.size() and kGroSegmentsMax for odd segments; the rest are dropped).
  // REQUIRES: segment > 0, stored <= room. Public and static for the fuzzer
  // (tests/fuzz/gro_split_fuzzer.cc): the segment size comes from the sender's GSO size.
  static size_t SplitCoalesced(uint8_t* payload, size_t room, uint32_t stored,
                               uint32_t segment, uint32_t socket_index,
                               const base::Endpoint& from,
                               std::span<RecvDatagram> out) noexcept;

  // Create: sets up the ring, the buffer ring and the send pool, and arms the receives.
  // On success it owns `*sockets` (they are moved out); on failure `*sockets` is left
  // untouched so that the caller may fall back to another transport.
  static absl::StatusOr<std::unique_ptr<UringTransport>> Create(ShardSockets* sockets,
                                                                const TransportConfig& config);
  ~UringTransport() override;

  const char* name() const noexcept override { return "io_uring"; }
  size_t Poll(int64_t timeout_us, std::span<RecvDatagram> out, bool* woken) noexcept override;
  void ReleaseReceived() noexcept override;
  std::span<uint8_t> SendBuffer() noexcept override;
  void CommitSend(size_t size, const base::Endpoint& to, int socket_index = -1) noexcept override;
  std::span<uint8_t> BurstBuffer() noexcept override;
  size_t CommitBurst(size_t size, size_t segment,
                     std::span<const base::Endpoint> to) noexcept override;
  void Flush() noexcept override;
  WakeHandle wake_handle() const noexcept override;
  void QueueWake(const WakeHandle& target) noexcept override;
  base::Endpoint local_address(size_t i) const noexcept override;
  size_t socket_count() const noexcept override { return fds_.size(); }
  const TransportStats& stats() const noexcept override { return stats_; }
  void Shutdown() noexcept override;

  // The io_uring setup flags that this kernel accepted: "single_issuer+defer_taskrun",
  // "coop_taskrun" or "plain" (the fallbacks for older kernels).
  const char* setup_mode() const noexcept { return setup_mode_; }
  // Whether receives come as whole bursts (TransportConfig::recv_gro, and the kernel took it).
  bool gro_on() const noexcept { return gro_on_; }
  // Whether the sockets are registered fixed files.
  bool files_registered() const noexcept { return files_registered_; }
  // Whether successful sends skip their completion (see skip_send_cqes_).
  bool skips_send_completions() const noexcept { return skip_send_cqes_; }
  // The coalescing window in effect (TransportConfig::coalesce_us, 0 where the kernel
  // lacks IORING_FEAT_MIN_TIMEOUT).
  uint32_t coalesce_us() const noexcept { return coalesce_us_; }
  // After Shutdown(): requests still in the kernel when it gave up waiting (0 normally).
  uint32_t shutdown_outstanding() const noexcept { return shutdown_outstanding_; }

 private:
  struct SendSlot {
    msghdr msg;          // for sendmsg: names `to` and `iov` (and `control`, for a burst)
    iovec iov;           // the datagram: its place in send memory and its size
    sockaddr_storage to;
    uint8_t* own = nullptr;    // the slot's own memory (iov points into a burst meanwhile)
    uint16_t socket = 0; // which of our sockets sends it
    uint16_t burst = kNoBurst; // the burst buffer it sends, or kNoBurst
    uint32_t datagrams = 1;    // what it puts on the wire (a burst's segments)
    BurstControl control;
  };
  static constexpr uint16_t kNoBurst = 0xFFFF;

  explicit UringTransport(const TransportConfig& config);
  absl::Status SetupRing(size_t sockets);
  absl::Status SetupMemory();
  absl::Status SetupBufferRing();
  void AdoptSockets(ShardSockets* sockets);

  io_uring_sqe* GetSqe() noexcept;
  void SetTarget(io_uring_sqe* sqe, size_t socket_index) noexcept;
  void ArmReceive(size_t socket_index) noexcept;
  void ArmEventRead() noexcept;
  // Enter: one io_uring_enter (EnterOnce), then the slots of the sends it submitted are free.
  void Enter(int64_t timeout_us) noexcept;
  void EnterOnce(int64_t timeout_us) noexcept;
  void EnterCoalesced(int64_t timeout_us) noexcept;
  // RetireSubmittedSends (skip_send_cqes_): once the kernel consumed every queued SQE,
  // the pending sends ended and their slots go back to the free stack.
  void RetireSubmittedSends() noexcept;
  void HandleSendFailed(const io_uring_cqe& cqe) noexcept;
  size_t Drain(std::span<RecvDatagram> out, bool* woken) noexcept;
  bool HandleCqe(const io_uring_cqe& cqe, std::span<RecvDatagram> out, size_t* filled,
                 bool* woken) noexcept;
  // HandleRecv: false when `out` has no room for what the receive holds (it stays in the
  // CQ for the next Poll).
  bool HandleRecv(const io_uring_cqe& cqe, uint32_t socket_index, std::span<RecvDatagram> out,
                  size_t* filled) noexcept;
  void HandleSend(const io_uring_cqe& cqe, uint32_t slot) noexcept;
  // FreeSlot: `slot`'s send ended; it (and its burst buffer, after the burst's last send)
  // is free again.
  void FreeSlot(uint32_t slot) noexcept;
  void NoteBurstFailure(int err) noexcept;
  // PrepSend: slot's datagram into `sqe`, as a plain send with its address where the
  // kernel takes one (send_with_address_), else as sendmsg.
  void PrepSend(io_uring_sqe* sqe, uint32_t slot) noexcept;
  uint8_t* RecvBuffer(uint32_t bid) const noexcept;
  // RefillRing: tops the buffer ring up to ring_level_ from the spare stack.
  void RefillRing() noexcept;
  // ReviewRingLevel: grows the level when the ring was found under a quarter full or ran
  // dry, and shrinks it when kRingLevelReviewPolls polls used less than a quarter of it.
  void ReviewRingLevel() noexcept;
  // Shutdown's bookkeeping of one completion: what is still outstanding in the kernel.
  void ReapForShutdown(const io_uring_cqe& cqe) noexcept;
  uint32_t Outstanding() const noexcept;
  // RearmPending: a receive or the eventfd read must be re-armed before the next wait.
  bool RearmPending() const noexcept;

  const TransportConfig config_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool ring_enabled_ = false;   // false until the first Poll() when created disabled
  bool first_poll_ = true;
  const char* setup_mode_ = "none";
  bool files_registered_ = false;

  std::vector<int> fds_;
  std::vector<base::Endpoint> addresses_;
  std::vector<uint8_t> rearm_;  // per socket: its multishot receive stopped
  std::vector<uint8_t> armed_;  // per socket: a receive SQE is queued or in the kernel
  bool event_read_armed_ = false;
  bool shut_down_ = false;
  bool cancel_pending_ = false;
  uint32_t shutdown_outstanding_ = 0;  // requests Shutdown() could not reap (0 normally)
  int event_fd_ = -1;
  uint64_t event_value_ = 0;    // the eventfd read lands here
  bool rearm_event_read_ = false;

  // Receive side. The msghdr tells the kernel the layout of each buffer (name room, no
  // control data); it is read when each receive SQE is submitted.
  msghdr recv_msg_{};
  bool gro_on_ = false;  // recv_gro asked for and every socket took UDP_GRO
  uint8_t* recv_memory_ = nullptr;     // recv_buffers * recv_buffer_bytes, page aligned
  size_t recv_memory_bytes_ = 0;
  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  std::unique_ptr<uint16_t[]> held_;   // buffer ids handed out by the last Poll()
  uint32_t held_count_ = 0;
  // Buffers not in the kernel's ring, most recently used on top. The ring is FIFO: a
  // buffer given back waits for every buffer ahead of it, so with all recv_buffers in the
  // ring each datagram landed in memory last touched thousands of datagrams ago (a cache
  // miss per line the kernel wrote, ~12% of a ping's CPU). The ring holds only ring_level_
  // buffers, refilled from the top of this stack, and grows when a batch comes near it.
  std::unique_ptr<uint16_t[]> spare_;
  uint32_t spare_count_ = 0;
  uint32_t in_ring_ = 0;        // published to the ring and not yet seen in a completion
  uint32_t ring_level_ = 0;     // how many the ring is refilled to (level_min_..max)
  uint32_t level_min_ = 0;      // min(recv_ring_level_min, recv_buffers)
  uint32_t level_low_ = 0;      // the fewest in the ring at a poll since the last review
  uint32_t level_polls_ = 0;    // polls since then
  bool ran_dry_ = false;        // a receive found no buffer since the last poll

  // Send side: slots, their data (send_slots * send_slot_bytes) and a stack of free ids.
  std::unique_ptr<SendSlot[]> slots_;
  uint8_t* send_memory_ = nullptr;
  size_t send_memory_bytes_ = 0;
  std::unique_ptr<uint32_t[]> free_slots_;
  uint32_t free_count_ = 0;
  bool send_with_address_ = true;  // until a kernel refuses an address on IORING_OP_SEND
  // Sends post a completion only when they fail (TransportConfig::skip_send_completions
  // and a kernel with IORING_FEAT_CQE_SKIP). Their slots wait in pending_ until the
  // io_uring_enter that submits them returns.
  bool skip_send_cqes_ = false;
  uint32_t coalesce_us_ = 0;  // TransportConfig::coalesce_us where the kernel has it
  std::unique_ptr<uint32_t[]> pending_;
  uint32_t pending_count_ = 0;

  // Bursts: burst_buffers x base::kBurstBytesMax, a stack of free ones, and how many
  // queued sends each one still has.
  uint8_t* burst_memory_ = nullptr;
  size_t burst_memory_bytes_ = 0;
  std::unique_ptr<uint16_t[]> burst_free_;
  uint32_t burst_free_count_ = 0;
  std::unique_ptr<uint32_t[]> burst_sends_;  // queued sends, + 1 while handed out
  uint16_t burst_out_ = kNoBurst;  // handed out by BurstBuffer(), not yet committed
  bool bursts_on_ = false;  // burst_buffers > 0, the kernel has GSO, none was refused

  TransportStats stats_;
};

}  // namespace ringpeer::ring
