// UringTransport (ring/uring_transport.h): setup, the poll loop and the send pool.
#include "ring/uring_transport.h"

#include <sched.h>
#include <signal.h>
#include <netinet/udp.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "base/assert.h"
#include "base/status.h"

namespace ringpeer::ring {
namespace {

using base::Endpoint;

#ifndef UDP_GRO
#define UDP_GRO 104  // linux/udp.h; older libc headers lack it
#endif

static_assert(CMSG_SPACE(sizeof(int)) == UringTransport::kGroControlBytes);
static_assert(UringTransport::kGroBufferBytes % 8 == 0);
static_assert((sizeof(io_uring_recvmsg_out) + UringTransport::kRecvNameBytes +
               UringTransport::kGroControlBytes + 16) % 8 == 0,
              "with the GRO control message, payload + 16 stays 8-byte aligned");

// Buffer group id of our provided-buffer ring (one per io_uring, so any id works).
constexpr uint16_t kBufferGroup = 0;
// What each SQE is for, in the top byte of user_data; the low 32 bits carry an index
// (socket or send slot).
enum class Op : uint8_t {
  kRecv = 1,       // multishot recvmsg, index = socket
  kSend = 2,       // sendmsg, index = send slot
  kDoorbell = 3,   // posted into our CQ by another ring's MSG_RING
  kEventRead = 4,  // our read on the wake eventfd completed
  kWakeSent = 5,   // our MSG_RING or eventfd write to another shard (CQE only on error)
  kCancel = 6,     // Shutdown's cancel of every request still in the kernel
  kSendFailed = 7, // a send without a success completion (skip_send_cqes_) failed
};
constexpr uint64_t UserData(Op op, uint32_t index) {
  return uint64_t{static_cast<uint8_t>(op)} << 56 | index;
}
// IORING_FEAT_MIN_TIMEOUT (6.12; liburing 2.3 predates it): io_uring_getevents_arg's pad
// is min_wait_usec.
constexpr uint32_t kFeatMinTimeout = 1u << 15;
// Op::kSend: the send was a plain send carrying its address (bit 32; see PrepSend).
constexpr uint64_t kSentWithAddress = uint64_t{1} << 32;
// A burst's send (sendmsg with UDP_SEGMENT); its datagram count sits in bits 40..55.
constexpr uint64_t kSentBurst = uint64_t{1} << 33;
constexpr int kBurstDatagramsShift = 40;
// The value written to an eventfd to ring it; static so that it outlives the async write.
constexpr uint64_t kEventIncrement = 1;

static_assert(UringTransport::kRecvPayloadOffset % 8 == 0,
              "payload + 16 must stay 8-byte aligned for the FlatBuffers Verifier");
static_assert(sizeof(sockaddr_in6) <= UringTransport::kRecvNameBytes);

struct SetupMode {
  unsigned flags;
  const char* name;
};
// Best first. DEFER_TASKRUN runs completion work only when we enter the kernel (which
// Poll does once per iteration anyway) instead of interrupting the shard; it requires
// SINGLE_ISSUER, and R_DISABLED lets the polling thread, not the constructing one, become
// that issuer. SUBMIT_ALL keeps one bad SQE from holding back the rest of a batch.
constexpr SetupMode kSetupModes[] = {
    {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
         IORING_SETUP_R_DISABLED,
     "single_issuer+defer_taskrun"},
    {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL, "coop_taskrun"},
    {0, "plain"},
};

absl::Status ValidateConfig(const TransportConfig& c, const ShardSockets& s) {
  if (s.fds.empty() || s.fds.size() != s.addresses.size()) {
    return absl::InvalidArgumentError("io_uring transport: no sockets, or fds != addresses");
  }
  if (!std::has_single_bit(c.recv_buffers) ||
      c.recv_buffers > UringTransport::kRecvBuffersMax) {
    return absl::InvalidArgumentError(absl::StrCat(
        "recv_buffers must be a power of two <= 32768, got ", c.recv_buffers));
  }
  if (c.recv_buffer_bytes % 8 != 0 ||
      c.recv_buffer_bytes <= UringTransport::kRecvPayloadOffset + 16) {
    return absl::InvalidArgumentError("recv_buffer_bytes must be a multiple of 8 above 64");
  }
  if (c.send_slots == 0 || c.send_slot_bytes == 0 || c.send_slot_bytes % 8 != 0) {
    return absl::InvalidArgumentError("send_slots and send_slot_bytes (8-byte multiple)");
  }
  if (c.burst_buffers >= 0xFFFF) {
    return absl::InvalidArgumentError("burst_buffers must be below 65535");
  }
  if (c.sq_entries < c.send_slots + UringTransport::kSqeReserve + s.fds.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sq_entries must be >= send_slots + sockets + ", UringTransport::kSqeReserve));
  }
  return absl::OkStatus();
}

int64_t MonotonicUs() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

// Anonymous, prefaulted memory: page aligned (the buffer ring requires it) and never
// touched by a page fault on the hot path.
uint8_t* MapMemory(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
}

// GroSegment: the segment size of a receive that holds a burst (its UDP_GRO control
// message), or 0 for a lone datagram.
uint32_t GroSegment(io_uring_recvmsg_out* o, msghdr* layout) noexcept {
  for (cmsghdr* c = io_uring_recvmsg_cmsg_firsthdr(o, layout); c != nullptr;
       c = io_uring_recvmsg_cmsg_nexthdr(o, layout, c)) {
    if (c->cmsg_level != SOL_UDP || c->cmsg_type != UDP_GRO ||
        c->cmsg_len < CMSG_LEN(sizeof(int))) {
      continue;
    }
    int segment = 0;
    std::memcpy(&segment, CMSG_DATA(c), sizeof(segment));
    return segment > 0 ? static_cast<uint32_t>(segment) : 0;
  }
  return 0;
}

}  // namespace

UringTransport::UringTransport(const TransportConfig& config) : config_(config) {}

UringTransport::~UringTransport() {
  // Normally the polling thread has called Shutdown() already. If not (a shard that never
  // ran), this is the same work from whichever thread destroys us.
  Shutdown();
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (event_fd_ >= 0) close(event_fd_);
  if (recv_memory_ != nullptr) munmap(recv_memory_, recv_memory_bytes_);
  if (buf_ring_ != nullptr) munmap(buf_ring_, buf_ring_bytes_);
  if (send_memory_ != nullptr) munmap(send_memory_, send_memory_bytes_);
  if (burst_memory_ != nullptr) munmap(burst_memory_, burst_memory_bytes_);
}

absl::StatusOr<std::unique_ptr<UringTransport>> UringTransport::Create(
    ShardSockets* sockets, const TransportConfig& asked) {
  TransportConfig config = asked;
  // A kernel without UDP_GRO (before 5.0) refuses the option even when it turns it off:
  // then the ordinary buffers, datagram by datagram.
  if (config.recv_gro && !sockets->fds.empty() && !SetUdpGro(sockets->fds[0], false)) {
    config.recv_gro = false;
  }
  if (config.recv_gro) {
    // Fewer buffers, each with room for a whole burst (TransportConfig::recv_gro).
    if (!std::has_single_bit(config.gro_buffers) || config.gro_buffers > kRecvBuffersMax) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gro_buffers must be a power of two <= 32768, got ", config.gro_buffers));
    }
    // The ring's level keeps the bytes it would have held (256 x 2 KiB: 8 buffers of
    // 65 KiB), so that what the kernel writes into stays in cache: with all 128 in the
    // ring each burst landed in memory last touched 8 MiB ago, and a join took 1.35x
    // as long as without GRO. It doubles under a flood as before.
    const uint64_t level_bytes = uint64_t{config.recv_ring_level_min} * config.recv_buffer_bytes;
    config.recv_ring_level_min = std::max<uint32_t>(
        4, static_cast<uint32_t>((level_bytes + kGroBufferBytes - 1) / kGroBufferBytes));
    config.recv_buffers = config.gro_buffers;
    config.recv_buffer_bytes = kGroBufferBytes;
  }
  RP_RETURN_IF_ERROR(ValidateConfig(config, *sockets));
  std::unique_ptr<UringTransport> t(new UringTransport(config));
  t->send_with_address_ = config.send_with_address;
  RP_RETURN_IF_ERROR(t->SetupMemory());
  RP_RETURN_IF_ERROR(t->SetupRing(sockets->fds.size()));
  RP_RETURN_IF_ERROR(t->SetupBufferRing());
  t->event_fd_ = eventfd(0, EFD_CLOEXEC);  // blocking: the ring polls it for us
  if (t->event_fd_ < 0) return base::ErrnoStatus(errno, "eventfd");
  if (config.register_files) {
    const int ret = io_uring_register_files(&t->ring_, sockets->fds.data(),
                                            static_cast<unsigned>(sockets->fds.size()));
    t->files_registered_ = ret == 0;  // an optimisation only; plain fds work as well
  }
  if (config.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(config.cpu, &set);
    (void)io_uring_register_iowq_aff(&t->ring_, sizeof(set), &set);  // best effort
  }
  t->AdoptSockets(sockets);
  if (config.recv_gro) {
    // Past the last failure (the sockets are ours now): a socket that took UDP_GRO must
    // never reach a transport that does not cut bursts. All or none of them.
    bool all = true;
    for (int fd : t->fds_) all = all && SetUdpGro(fd, true);
    if (!all) {
      for (int fd : t->fds_) (void)SetUdpGro(fd, false);
    }
    t->gro_on_ = all;
    if (all) t->recv_msg_.msg_controllen = kGroControlBytes;
  }
  t->bursts_on_ = t->burst_memory_ != nullptr;
  for (int fd : t->fds_) t->bursts_on_ = t->bursts_on_ && UdpGsoAvailable(fd);
  for (size_t i = 0; i < t->fds_.size(); i++) t->ArmReceive(i);
  t->ArmEventRead();
  return t;
}

absl::Status UringTransport::SetupMemory() {
  recv_memory_bytes_ = size_t{config_.recv_buffers} * config_.recv_buffer_bytes;
  recv_memory_ = MapMemory(recv_memory_bytes_);
  buf_ring_bytes_ = size_t{config_.recv_buffers} * sizeof(io_uring_buf);
  buf_ring_ = reinterpret_cast<io_uring_buf_ring*>(MapMemory(buf_ring_bytes_));
  send_memory_bytes_ = size_t{config_.send_slots} * config_.send_slot_bytes;
  send_memory_ = MapMemory(send_memory_bytes_);
  if (recv_memory_ == nullptr || buf_ring_ == nullptr || send_memory_ == nullptr) {
    return base::ErrnoStatus(errno, "mmap of transport buffers");
  }
  held_ = std::make_unique<uint16_t[]>(config_.recv_buffers);
  spare_ = std::make_unique<uint16_t[]>(config_.recv_buffers);
  slots_ = std::make_unique<SendSlot[]>(config_.send_slots);
  free_slots_ = std::make_unique<uint32_t[]>(config_.send_slots);
  pending_ = std::make_unique<uint32_t[]>(config_.send_slots);
  for (uint32_t i = 0; i < config_.send_slots; i++) {
    // Pushed in reverse so that slot 0 is handed out first (easier to read in a debugger).
    free_slots_[i] = config_.send_slots - 1 - i;
    SendSlot& slot = slots_[i];
    slot.msg = msghdr{};
    slot.msg.msg_name = &slot.to;
    slot.msg.msg_iov = &slot.iov;
    slot.msg.msg_iovlen = 1;
    slot.own = send_memory_ + size_t{i} * config_.send_slot_bytes;
    slot.iov.iov_base = slot.own;
  }
  free_count_ = config_.send_slots;
  if (config_.burst_buffers > 0) {
    burst_memory_bytes_ = size_t{config_.burst_buffers} * base::kBurstBytesMax;
    burst_memory_ = MapMemory(burst_memory_bytes_);
    if (burst_memory_ == nullptr) return base::ErrnoStatus(errno, "mmap of burst buffers");
    burst_free_ = std::make_unique<uint16_t[]>(config_.burst_buffers);
    burst_sends_ = std::make_unique<uint32_t[]>(config_.burst_buffers);
    for (uint32_t i = 0; i < config_.burst_buffers; i++) {
      burst_free_[i] = static_cast<uint16_t>(config_.burst_buffers - 1 - i);
      burst_sends_[i] = 0;
    }
    burst_free_count_ = config_.burst_buffers;
  }
  recv_msg_.msg_namelen = kRecvNameBytes;  // the layout the kernel writes each buffer in
  return absl::OkStatus();
}

absl::Status UringTransport::SetupRing(size_t sockets) {
  // CQ room for every completion that can be outstanding at once: each receive buffer,
  // each send slot, the re-arms, and doorbells. Overflow is survivable (FEAT_NODROP) but
  // slow, so size for the worst case.
  const uint32_t cq_entries = std::bit_ceil(config_.recv_buffers + config_.send_slots +
                                            kSqeReserve + static_cast<uint32_t>(sockets));
  int ret = -EINVAL;
  for (const SetupMode& mode : kSetupModes) {
    io_uring_params params{};
    params.flags = mode.flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
    params.cq_entries = cq_entries;
    ret = io_uring_queue_init_params(config_.sq_entries, &ring_, &params);
    if (ret == 0) {
      // Sends without success completions need IOSQE_CQE_SKIP_SUCCESS (5.17).
      if ((params.features & kFeatMinTimeout) != 0) coalesce_us_ = config_.coalesce_us;
      skip_send_cqes_ =
          config_.skip_send_completions && (params.features & IORING_FEAT_CQE_SKIP) != 0;
      setup_mode_ = mode.name;
      ring_enabled_ = (mode.flags & IORING_SETUP_R_DISABLED) == 0;
      ring_ready_ = true;
      return absl::OkStatus();
    }
    if (ret != -EINVAL) break;  // EINVAL: flags this kernel lacks; try the next mode
  }
  return base::ErrnoStatus(-ret, "io_uring_queue_init");
}

absl::Status UringTransport::SetupBufferRing() {
  io_uring_buf_ring_init(buf_ring_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(buf_ring_);
  reg.ring_entries = config_.recv_buffers;
  reg.bgid = kBufferGroup;
  const int ret = io_uring_register_buf_ring(&ring_, &reg, 0);
  if (ret != 0) return base::ErrnoStatus(-ret, "io_uring_register_buf_ring");
  // Every buffer starts spare, buffer 0 on top; the ring takes the first ring_level_.
  for (uint32_t i = 0; i < config_.recv_buffers; i++) {
    spare_[i] = static_cast<uint16_t>(config_.recv_buffers - 1 - i);
  }
  spare_count_ = config_.recv_buffers;
  level_min_ = std::clamp(config_.recv_ring_level_min, 1u, config_.recv_buffers);
  ring_level_ = level_min_;
  level_low_ = ring_level_;
  RefillRing();
  return absl::OkStatus();
}

void UringTransport::RefillRing() noexcept {
  const int mask = io_uring_buf_ring_mask(config_.recv_buffers);
  int added = 0;
  while (in_ring_ < ring_level_ && spare_count_ > 0) {
    const uint16_t bid = spare_[--spare_count_];
    io_uring_buf_ring_add(buf_ring_, RecvBuffer(bid), config_.recv_buffer_bytes, bid, mask,
                          added++);
    in_ring_++;
  }
  // One release-store of the tail publishes the whole batch to the kernel.
  if (added > 0) io_uring_buf_ring_advance(buf_ring_, added);
}

void UringTransport::ReviewRingLevel() noexcept {
  level_low_ = std::min(level_low_, in_ring_);
  if (ran_dry_ || in_ring_ < ring_level_ / 4) {
    ran_dry_ = false;
    if (ring_level_ < config_.recv_buffers) {
      ring_level_ = std::min(config_.recv_buffers, ring_level_ * 2);
      stats_.recv_ring_grown++;
    }
    level_low_ = ring_level_;
    level_polls_ = 0;
    return;
  }
  if (++level_polls_ < kRingLevelReviewPolls) return;
  // Used at most a quarter of the level all along: half of it is plenty.
  if (level_low_ >= ring_level_ - ring_level_ / 4 && ring_level_ > level_min_) {
    ring_level_ = std::max(level_min_, ring_level_ / 2);
  }
  level_low_ = ring_level_;
  level_polls_ = 0;
}

void UringTransport::AdoptSockets(ShardSockets* sockets) {
  fds_ = std::move(sockets->fds);
  addresses_ = std::move(sockets->addresses);
  sockets->fds.clear();
  sockets->addresses.clear();
  rearm_.assign(fds_.size(), 0);
  armed_.assign(fds_.size(), 0);
}

uint8_t* UringTransport::RecvBuffer(uint32_t bid) const noexcept {
  RP_DASSERT(bid < config_.recv_buffers);
  return recv_memory_ + size_t{bid} * config_.recv_buffer_bytes;
}

io_uring_sqe* UringTransport::GetSqe() noexcept {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe != nullptr || !ring_enabled_) return sqe;
  // The SQ is full, which takes far more doorbells in one iteration than kSqeReserve
  // allows for. Submit early (one extra system call, rare) rather than drop.
  stats_.syscalls++;
  (void)io_uring_submit(&ring_);
  RetireSubmittedSends();
  return io_uring_get_sqe(&ring_);
}

void UringTransport::EnterCoalesced(int64_t timeout_us) noexcept {
  // liburing 2.3 has no call for the minimum wait, so this is its submit-and-wait by hand:
  // publish the queued SQEs (what its internal flush does), then one io_uring_enter that
  // waits for kCoalesceWaitNr completions for at most coalesce_us_, then for any one
  // until the caller's timeout.
  const unsigned tail = ring_.sq.sqe_tail;
  if (ring_.sq.sqe_head != tail) {
    ring_.sq.sqe_head = tail;
    __atomic_store_n(ring_.sq.ktail, tail, __ATOMIC_RELEASE);
  }
  const unsigned submit = tail - __atomic_load_n(ring_.sq.khead, __ATOMIC_ACQUIRE);
  io_uring_getevents_arg arg{};
  arg.sigmask_sz = _NSIG / 8;
  arg.pad = coalesce_us_;  // min_wait_usec since 6.12 (IORING_FEAT_MIN_TIMEOUT)
  __kernel_timespec ts{};
  if (timeout_us > 0) {
    ts.tv_sec = timeout_us / 1'000'000;
    ts.tv_nsec = (timeout_us % 1'000'000) * 1000;
    arg.ts = reinterpret_cast<uint64_t>(&ts);
  }
  (void)syscall(__NR_io_uring_enter, ring_.ring_fd, submit, kCoalesceWaitNr,
                IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof(arg));
}

void UringTransport::RetireSubmittedSends() noexcept {
  if (pending_count_ == 0 || io_uring_sq_ready(&ring_) != 0) return;
  // Every queued SQE was consumed, so every send among them ran to its end inside that
  // io_uring_enter (MSG_DONTWAIT: a send that would block fails instead of waiting), and
  // its slot may take the next datagram.
  for (uint32_t i = 0; i < pending_count_; i++) {
    stats_.sent += slots_[pending_[i]].datagrams;
    FreeSlot(pending_[i]);
  }
  pending_count_ = 0;
}

void UringTransport::FreeSlot(uint32_t slot) noexcept {
  SendSlot& send = slots_[slot];
  if (send.burst != kNoBurst) {
    RP_DASSERT(burst_sends_[send.burst] > 0);
    if (--burst_sends_[send.burst] == 0) burst_free_[burst_free_count_++] = send.burst;
    send.burst = kNoBurst;
    send.datagrams = 1;
    send.iov.iov_base = send.own;
    send.msg.msg_control = nullptr;
    send.msg.msg_controllen = 0;
  }
  free_slots_[free_count_++] = slot;
}

void UringTransport::NoteBurstFailure(int err) noexcept {
  if (!BurstRefused(err) || !bursts_on_) return;
  bursts_on_ = false;  // from now on the callers send datagram by datagram
  stats_.burst_fallbacks++;
}

void UringTransport::SetTarget(io_uring_sqe* sqe, size_t socket_index) noexcept {
  RP_DASSERT(socket_index < fds_.size());
  if (files_registered_) {
    sqe->fd = static_cast<int>(socket_index);
    sqe->flags |= IOSQE_FIXED_FILE;
  } else {
    sqe->fd = fds_[socket_index];
  }
}

void UringTransport::ArmReceive(size_t socket_index) noexcept {
  io_uring_sqe* sqe = GetSqe();
  if (sqe == nullptr) {
    rearm_[socket_index] = 1;  // try again after the next Poll's submit
    return;
  }
  armed_[socket_index] = 1;
  io_uring_prep_recvmsg_multishot(sqe, -1, &recv_msg_, 0);
  SetTarget(sqe, socket_index);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufferGroup;
  io_uring_sqe_set_data64(sqe, UserData(Op::kRecv, static_cast<uint32_t>(socket_index)));
}

void UringTransport::ArmEventRead() noexcept {
  io_uring_sqe* sqe = GetSqe();
  if (sqe == nullptr) {
    rearm_event_read_ = true;
    return;
  }
  event_read_armed_ = true;
  io_uring_prep_read(sqe, event_fd_, &event_value_, sizeof(event_value_), 0);
  io_uring_sqe_set_data64(sqe, UserData(Op::kEventRead, 0));
}

size_t UringTransport::Poll(int64_t timeout_us, std::span<RecvDatagram> out,
                            bool* woken) noexcept {
  RP_ASSERT(woken != nullptr);
  RP_ASSERT(held_count_ == 0);  // REQUIRES: ReleaseReceived() after the previous Poll
  *woken = false;
  if (!ring_enabled_) {
    // The first Poll's thread becomes the ring's single issuer.
    // liburing 2.3 declares io_uring_enable_rings but its shared library does not export
    // it, so we make the register call ourselves.
    const long ret = syscall(__NR_io_uring_register, ring_.ring_fd,
                             IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
    RP_ASSERT(ret == 0);
    ring_enabled_ = true;
  }
  if (first_poll_) {
    first_poll_ = false;
    *woken = true;  // a MSG_RING to a still-disabled ring fails; report it conservatively
  }
  const int64_t start_us = timeout_us > 0 ? MonotonicUs() : 0;
  Enter(timeout_us);
  size_t filled = Drain(out, woken);
  // A wait that ended only on our own sends' completions (the sends this very call
  // submitted post theirs at once) found nothing for the caller: wait again, within the
  // caller's timeout, instead of returning empty. Returning would cost the shard a whole
  // loop iteration per answered datagram at light load (measured: 2.2 iterations per
  // wakeup against recvmmsg's 1.0). Not when a receive must be re-armed first (its
  // buffers come back in ReleaseReceived) or the caller asked not to wait.
  for (uint32_t round = 0; round < kQuietWaitsMax && filled == 0 && !*woken && timeout_us != 0 &&
                           !RearmPending();
       round++) {
    int64_t left_us = -1;
    if (timeout_us > 0) {
      left_us = timeout_us - (MonotonicUs() - start_us);
      if (left_us <= 0) break;
    }
    stats_.quiet_waits++;
    Enter(left_us);
    filled = Drain(out, woken);
  }
  ReviewRingLevel();
  // Re-arms are queued after the drain (never from inside it) and submitted by the next
  // Poll, after ReleaseReceived() has refilled the buffer ring that ran dry.
  for (size_t i = 0; i < rearm_.size(); i++) {
    if (rearm_[i] == 0) continue;
    rearm_[i] = 0;
    stats_.recv_rearms++;
    ArmReceive(i);
  }
  if (rearm_event_read_) {
    rearm_event_read_ = false;
    ArmEventRead();
  }
  return filled;
}

bool UringTransport::RearmPending() const noexcept {
  if (rearm_event_read_) return true;
  for (uint8_t r : rearm_) {
    if (r != 0) return true;
  }
  return false;
}

void UringTransport::Enter(int64_t timeout_us) noexcept {
  EnterOnce(timeout_us);
  RetireSubmittedSends();
}

void UringTransport::EnterOnce(int64_t timeout_us) noexcept {
  // Exactly one io_uring_enter: it submits everything queued since the last Poll (sends,
  // re-arms, doorbells) and, with DEFER_TASKRUN, runs the completion work that fills
  // the CQ. Errors (ETIME, EINTR, EBUSY on a full CQ) need no action: we drain anyway.
  stats_.syscalls++;
  io_uring_cqe* cqe = nullptr;
  if (timeout_us == 0 || io_uring_cq_ready(&ring_) > 0) {
    (void)io_uring_submit_and_get_events(&ring_);
    return;
  }
  if (coalesce_us_ > 0) return EnterCoalesced(timeout_us);
  if (timeout_us < 0) {
    (void)io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, nullptr, nullptr);
    return;
  }
  __kernel_timespec ts{};
  ts.tv_sec = timeout_us / 1'000'000;
  ts.tv_nsec = (timeout_us % 1'000'000) * 1000;
  (void)io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
}

size_t UringTransport::Drain(std::span<RecvDatagram> out, bool* woken) noexcept {
  size_t filled = 0;
  io_uring_cqe* cqes[kCqeBatch];
  for (uint32_t round = 0; round < kDrainRoundsMax; round++) {
    const unsigned count = io_uring_peek_batch_cqe(&ring_, cqes, kCqeBatch);
    unsigned consumed = 0;
    while (consumed < count && HandleCqe(*cqes[consumed], out, &filled, woken)) consumed++;
    io_uring_cq_advance(&ring_, consumed);
    stats_.completions += consumed;
    // Stop when the CQ is empty or `out` is full (that receive stays for the next Poll).
    if (consumed < kCqeBatch) break;
  }
  return filled;
}

bool UringTransport::HandleCqe(const io_uring_cqe& cqe, std::span<RecvDatagram> out,
                               size_t* filled, bool* woken) noexcept {
  const auto op = static_cast<Op>(cqe.user_data >> 56);
  const auto index = static_cast<uint32_t>(cqe.user_data);
  switch (op) {
    case Op::kRecv:
      return HandleRecv(cqe, index, out, filled);
    case Op::kSend:
      HandleSend(cqe, index);
      return true;
    case Op::kSendFailed:
      HandleSendFailed(cqe);
      return true;
    case Op::kDoorbell:
      stats_.wakeups++;
      *woken = true;
      return true;
    case Op::kEventRead:
      event_read_armed_ = false;
      if (cqe.res > 0) {
        stats_.wakeups++;
        *woken = true;
      }
      rearm_event_read_ = true;
      return true;
    case Op::kWakeSent:
      // A doorbell that failed (the target shard is gone). Nothing to retry into.
      return true;
    case Op::kCancel:
      return true;
  }
  return true;  // not ours (e.g. liburing's internal timeout on old kernels)
}

bool UringTransport::HandleRecv(const io_uring_cqe& cqe, uint32_t socket_index,
                                std::span<RecvDatagram> out, size_t* filled) noexcept {
  RP_ASSERT(socket_index < fds_.size());
  io_uring_recvmsg_out* o = nullptr;
  uint32_t bid = 0;
  uint32_t stored = 0;   // payload bytes in the buffer
  uint32_t segment = 0;  // a burst's segment size (recv_gro), 0 for a lone datagram
  // What the receive holds, before anything is taken from it: with no room for it in
  // `out`, it stays in the CQ for the next Poll (a burst waits for a Poll with room for
  // all of it, unless even an empty `out` could not take it all).
  if (cqe.res >= 0) {
    if (*filled == out.size()) return false;
    RP_ASSERT((cqe.flags & IORING_CQE_F_BUFFER) != 0);  // every receive selects a buffer
    bid = cqe.flags >> IORING_CQE_BUFFER_SHIFT;
    RP_ASSERT(bid < config_.recv_buffers);
    o = io_uring_recvmsg_validate(RecvBuffer(bid), cqe.res, &recv_msg_);
    if (o != nullptr) {
      stored = io_uring_recvmsg_payload_length(o, cqe.res, &recv_msg_);
      if (gro_on_) segment = GroSegment(o, &recv_msg_);
      if (segment > 0 && *filled > 0 && (stored + segment - 1) / segment > out.size() - *filled) {
        return false;
      }
    }
  }
  if ((cqe.flags & IORING_CQE_F_MORE) == 0) {
    rearm_[socket_index] = 1;
    armed_[socket_index] = 0;
  }
  if (cqe.res < 0) {
    // ENOBUFS: the buffer ring ran dry; the datagram waits in the socket until re-armed.
    if (cqe.res == -ENOBUFS) {
      stats_.recv_no_buffers++;
      ran_dry_ = true;
    }
    return true;
  }
  RP_ASSERT(held_count_ < config_.recv_buffers);
  RP_ASSERT(in_ring_ > 0);
  in_ring_--;
  held_[held_count_++] = static_cast<uint16_t>(bid);
  if (o == nullptr) return true;  // shorter than the layout header: nothing to hand out
  auto* payload = static_cast<uint8_t*>(io_uring_recvmsg_payload(o, &recv_msg_));
  RP_DASSERT(reinterpret_cast<uintptr_t>(payload + 16) % 8 == 0);
  const Endpoint from =
      Endpoint::FromSockaddr(static_cast<const sockaddr*>(io_uring_recvmsg_name(o)),
                             std::min(o->namelen, kRecvNameBytes));
  if (segment > 0 && o->payloadlen > segment) {
    // A burst: its datagrams, all `segment` long but the last. A truncated one (larger
    // than our buffer, which no UDP datagram is) keeps the whole datagrams it has.
    const bool truncated = (o->flags & MSG_TRUNC) != 0;
    const uint32_t total = (o->payloadlen + segment - 1) / segment;
    const size_t handed =
        SplitCoalesced(payload, RecvBuffer(bid) + config_.recv_buffer_bytes - payload,
                       truncated ? stored / segment * segment : stored, segment,
                       socket_index, from, out.subspan(*filled));
    *filled += handed;
    stats_.received += handed;
    stats_.recv_coalesced++;
    if (handed < total) stats_.recv_coalesced_dropped += total - handed;
    return true;
  }
  RecvDatagram& d = out[(*filled)++];
  d.data = payload;
  d.size = std::min(o->payloadlen, stored);
  d.socket_index = static_cast<uint16_t>(socket_index);
  d.truncated = (o->flags & MSG_TRUNC) != 0;
  d.from = from;
  stats_.received++;
  if (d.truncated) stats_.recv_truncated++;
  return true;
}

size_t UringTransport::SplitCoalesced(uint8_t* payload, size_t room, uint32_t stored,
                                      uint32_t segment, uint32_t socket_index,
                                      const Endpoint& from,
                                      std::span<RecvDatagram> out) noexcept {
  const size_t count = std::min<size_t>((stored + segment - 1) / segment, out.size());
  auto length = [&](size_t i) { return std::min<size_t>(segment, stored - i * segment); };
  auto hand_out = [&](size_t i, uint8_t* at) {
    RecvDatagram& d = out[i];
    d.data = at;
    d.size = static_cast<uint32_t>(length(i));
    d.socket_index = static_cast<uint16_t>(socket_index);
    d.truncated = false;
    d.from = from;
  };
  if (segment % 8 == 0) {
    // Ours (wire::PackBurst rounds the segment): every datagram is aligned where it lies.
    for (size_t i = 0; i < count; ++i) hand_out(i, payload + i * segment);
    return count;
  }
  // Another sender's: datagram i moves up to the next 8-byte boundary after the one
  // before it, the last first so that none is overwritten before it moved. The buffer's
  // slack (kGroBufferBytes) has room for kGroSegmentsMax of them; any past that, or past
  // the buffer, is dropped.
  size_t at_of[kGroSegmentsMax];
  size_t fits = 0;
  for (size_t end = 0; fits < std::min<size_t>(count, kGroSegmentsMax); ++fits) {
    const size_t at = (end + 7) & ~size_t{7};
    if (at + length(fits) > room) break;
    at_of[fits] = at;
    end = at + length(fits);
  }
  for (size_t i = fits; i-- > 0;) {
    std::memmove(payload + at_of[i], payload + i * segment, length(i));
    hand_out(i, payload + at_of[i]);
  }
  return fits;
}

void UringTransport::HandleSend(const io_uring_cqe& cqe, uint32_t slot) noexcept {
  RP_ASSERT(slot < config_.send_slots);
  RP_ASSERT(free_count_ < config_.send_slots);
  // A kernel without addresses on IORING_OP_SEND refuses the field (EINVAL) or sends
  // without it (EDESTADDRREQ: our sockets are not connected). The slot still holds the
  // datagram: send it again with sendmsg, which every kernel with io_uring takes, and use
  // sendmsg from now on.
  if ((cqe.user_data & kSentBurst) != 0 && cqe.res < 0) NoteBurstFailure(-cqe.res);
  if ((cqe.user_data & kSentWithAddress) != 0 &&
      (cqe.res == -EINVAL || cqe.res == -EDESTADDRREQ) && !shut_down_) {
    if (send_with_address_) stats_.send_fallbacks++;
    send_with_address_ = false;
    if (io_uring_sqe* sqe = GetSqe(); sqe != nullptr) {
      PrepSend(sqe, slot);  // the slot stays taken
      return;
    }
  }
  // A failed send (ICMP port unreachable as ECONNREFUSED, ENOBUFS, EPERM from a firewall)
  // is UDP's normal loss; count it and reuse the slot.
  if (cqe.res < 0) {
    stats_.send_errors++;
  } else {
    stats_.sent += slots_[slot].datagrams;
  }
  FreeSlot(slot);
}

void UringTransport::ReleaseReceived() noexcept {
  // The last one handed out goes on top: the next to be given to the kernel.
  for (uint32_t i = 0; i < held_count_; i++) {
    RP_DASSERT(spare_count_ < config_.recv_buffers);
    spare_[spare_count_++] = held_[i];
  }
  held_count_ = 0;
  RefillRing();
}

std::span<uint8_t> UringTransport::SendBuffer() noexcept {
  if (free_count_ == 0) {
    stats_.send_slots_full++;
    return {};
  }
  const uint32_t slot = free_slots_[free_count_ - 1];
  return {send_memory_ + size_t{slot} * config_.send_slot_bytes, config_.send_slot_bytes};
}

void UringTransport::CommitSend(size_t size, const Endpoint& to, int socket_index) noexcept {
  RP_ASSERT(free_count_ > 0);  // REQUIRES: SendBuffer() returned a slot
  RP_ASSERT(size <= config_.send_slot_bytes);
  const int s = ring::PickSocket(addresses_, to, socket_index);
  io_uring_sqe* sqe = s < 0 ? nullptr : GetSqe();
  if (sqe == nullptr) {
    stats_.send_errors++;  // no socket of that family; the slot stays free
    return;
  }
  const uint32_t slot = free_slots_[--free_count_];
  SendSlot& send = slots_[slot];
  send.iov.iov_len = size;
  send.socket = static_cast<uint16_t>(s);
  send.msg.msg_namelen =
      to.ToSockaddr(&send.to, addresses_[s].family == Endpoint::Family::kV6);
  PrepSend(sqe, slot);
  if (skip_send_cqes_) pending_[pending_count_++] = slot;
}

std::span<uint8_t> UringTransport::BurstBuffer() noexcept {
  if (burst_out_ == kNoBurst) {
    if (!bursts_on_ || burst_free_count_ == 0) return {};
    // Taken off the free stack now, with a reference of its own until CommitBurst: a
    // submit in between (a full SQ) frees retired buffers, never this one.
    burst_out_ = burst_free_[--burst_free_count_];
    burst_sends_[burst_out_] = 1;
  }
  return {burst_memory_ + size_t{burst_out_} * base::kBurstBytesMax, base::kBurstBytesMax};
}

size_t UringTransport::CommitBurst(size_t size, size_t segment,
                                   std::span<const Endpoint> to) noexcept {
  RP_ASSERT(burst_out_ != kNoBurst);  // REQUIRES: BurstBuffer() returned a buffer
  RP_ASSERT(size > 0 && size <= base::kBurstBytesMax && segment > 0 &&
            segment <= config_.send_slot_bytes && to.size() <= base::kBurstPeersMax);
  const uint32_t datagrams = BurstDatagrams(size, segment);
  RP_ASSERT(datagrams <= base::kBurstDatagramsMax);
  const uint16_t b = burst_out_;
  burst_out_ = kNoBurst;
  uint8_t* const data = burst_memory_ + size_t{b} * base::kBurstBytesMax;
  size_t queued = 0;
  for (const Endpoint& peer : to) {
    if (free_count_ == 0) {
      stats_.send_slots_full++;
      continue;
    }
    const int s = ring::PickSocket(addresses_, peer, -1);
    io_uring_sqe* sqe = s < 0 ? nullptr : GetSqe();
    if (sqe == nullptr) {
      stats_.send_errors++;
      continue;
    }
    const uint32_t slot = free_slots_[--free_count_];
    SendSlot& send = slots_[slot];
    send.iov.iov_base = data;
    send.iov.iov_len = size;
    send.burst = b;
    send.datagrams = datagrams;
    burst_sends_[b]++;
    SetBurstSegment(&send.control, static_cast<uint16_t>(segment));
    send.msg.msg_control = send.control.bytes;
    send.msg.msg_controllen = sizeof(send.control.bytes);
    send.socket = static_cast<uint16_t>(s);
    send.msg.msg_namelen =
        peer.ToSockaddr(&send.to, addresses_[s].family == Endpoint::Family::kV6);
    PrepSend(sqe, slot);
    if (skip_send_cqes_) pending_[pending_count_++] = slot;
    stats_.bursts++;
    queued += datagrams;
  }
  // The hand-out's reference: free now if no send took it, else after the last one.
  if (--burst_sends_[b] == 0) burst_free_[burst_free_count_++] = b;
  return queued;
}

void UringTransport::PrepSend(io_uring_sqe* sqe, uint32_t slot) noexcept {
  SendSlot& send = slots_[slot];
  // Without success completions a send must end inside the submitting io_uring_enter, so
  // that its slot can be reused after it: MSG_DONTWAIT makes a full socket buffer fail the
  // send (EAGAIN, counted; recvmmsg's transport drops there too) instead of parking it.
  const int flags = skip_send_cqes_ ? MSG_DONTWAIT : 0;
  if (send.burst != kNoBurst) {
    // A burst: sendmsg, whose control message carries the segment size.
    io_uring_prep_sendmsg(sqe, -1, &send.msg, static_cast<unsigned>(flags));
    SetTarget(sqe, send.socket);
    const uint64_t tag = kSentBurst | (uint64_t{send.datagrams} << kBurstDatagramsShift);
    if (skip_send_cqes_) {
      sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
      io_uring_sqe_set_data64(sqe, UserData(Op::kSendFailed, slot) | tag);
    } else {
      io_uring_sqe_set_data64(sqe, UserData(Op::kSend, slot) | tag);
    }
    return;
  }
  if (send_with_address_) {
    // A plain send that carries its address: the kernel reads no msghdr and no iovec
    // (sendmsg copies and checks both, ~3% of a ping's CPU).
    io_uring_prep_send(sqe, -1, send.iov.iov_base, send.iov.iov_len, flags);
    io_uring_prep_send_set_addr(sqe, reinterpret_cast<const sockaddr*>(&send.to),
                                static_cast<uint16_t>(send.msg.msg_namelen));
  } else {
    io_uring_prep_sendmsg(sqe, -1, &send.msg, static_cast<unsigned>(flags));
  }
  SetTarget(sqe, send.socket);
  const uint64_t with_address = send_with_address_ ? kSentWithAddress : 0;
  if (skip_send_cqes_) {
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;  // only a failure posts a completion
    io_uring_sqe_set_data64(sqe, UserData(Op::kSendFailed, slot) | with_address);
  } else {
    io_uring_sqe_set_data64(sqe, UserData(Op::kSend, slot) | with_address);
  }
}

void UringTransport::HandleSendFailed(const io_uring_cqe& cqe) noexcept {
  // The slot went back to the free stack when its submit ended; only the count is ours.
  // The send was counted as sent when its submit ended: take its datagrams back.
  uint64_t datagrams = 1;
  if ((cqe.user_data & kSentBurst) != 0) {
    datagrams = (cqe.user_data >> kBurstDatagramsShift) & 0xFFFF;
    NoteBurstFailure(-cqe.res);
  }
  stats_.send_errors++;
  stats_.sent -= std::min(stats_.sent, datagrams);
  // A kernel that refuses addresses on IORING_OP_SEND (see HandleSend): this datagram is
  // lost (its slot may hold another by now); the ones after it go by sendmsg.
  if ((cqe.user_data & kSentWithAddress) != 0 &&
      (cqe.res == -EINVAL || cqe.res == -EDESTADDRREQ) && send_with_address_) {
    send_with_address_ = false;
    stats_.send_fallbacks++;
  }
}

void UringTransport::Flush() noexcept {
  // Deliberately empty: the sends sit in the SQ and the next Poll() submits them in the
  // same system call that waits, so an iteration costs one syscall, not two.
}

WakeHandle UringTransport::wake_handle() const noexcept {
  return WakeHandle{ring_.ring_fd, event_fd_};
}

void UringTransport::QueueWake(const WakeHandle& target) noexcept {
  RP_ASSERT(target.ring_fd >= 0 || target.event_fd >= 0);
  io_uring_sqe* sqe = GetSqe();
  if (sqe == nullptr) return;  // the SQ is full even after a submit: the wake is lost
  if (target.ring_fd >= 0) {
    io_uring_prep_msg_ring(sqe, target.ring_fd, 0, UserData(Op::kDoorbell, 0), 0);
  } else {
    io_uring_prep_write(sqe, target.event_fd, &kEventIncrement, sizeof(kEventIncrement), 0);
  }
  sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;  // only a failed doorbell posts a CQE here
  io_uring_sqe_set_data64(sqe, UserData(Op::kWakeSent, 0));
}

uint32_t UringTransport::Outstanding() const noexcept {
  uint32_t n = config_.send_slots - free_count_;  // sends in flight
  for (uint8_t a : armed_) n += a;
  return n + (event_read_armed_ ? 1 : 0) + (cancel_pending_ ? 1 : 0);
}

void UringTransport::ReapForShutdown(const io_uring_cqe& cqe) noexcept {
  const auto op = static_cast<Op>(cqe.user_data >> 56);
  const auto index = static_cast<uint32_t>(cqe.user_data);
  switch (op) {
    case Op::kRecv:
      // A datagram that raced the cancel is dropped: its buffer goes with the ring.
      if (index < armed_.size() && (cqe.flags & IORING_CQE_F_MORE) == 0) armed_[index] = 0;
      return;
    case Op::kSend:
      if (index < config_.send_slots) HandleSend(cqe, index);
      return;
    case Op::kSendFailed:
      HandleSendFailed(cqe);
      return;
    case Op::kEventRead:
      event_read_armed_ = false;
      return;
    case Op::kCancel:
      cancel_pending_ = false;
      return;
    case Op::kDoorbell:
    case Op::kWakeSent:
      return;
  }
}

void UringTransport::Shutdown() noexcept {
  if (shut_down_) return;
  shut_down_ = true;
  // Why this order: a request in the kernel (a multishot receive, a send) and a
  // registered-file slot each hold a reference to the socket. io_uring_queue_exit drops
  // them only later, from a kernel worker, after the process may have exited, and until
  // then the port stays bound: a node restarted at once got EADDRINUSE. So the requests
  // end first (sends complete, the rest is cancelled and reaped), then the file table
  // goes, then close() releases the port. The ring and the eventfd stay open until the
  // destructor: other shards may still ring our doorbell while they stop.
  const bool can_submit = ring_ready_ && ring_enabled_;
  if (can_submit) {
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::milliseconds(kShutdownWaitMs);
    bool cancel_queued = false;
    // Bounded: each round waits at most 10 ms, and the deadline ends the loop.
    for (int round = 0; round < kShutdownRoundsMax; round++) {
      const bool sends_done = free_count_ == config_.send_slots;
      if (!cancel_queued && (sends_done || round >= kShutdownSendRounds)) {
        io_uring_sqe* sqe = GetSqe();
        if (sqe != nullptr) {
          io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
          io_uring_sqe_set_data64(sqe, UserData(Op::kCancel, 0));
          cancel_pending_ = true;
          cancel_queued = true;
        }
      }
      if (cancel_queued && Outstanding() == 0) break;
      if (std::chrono::steady_clock::now() >= deadline) break;
      __kernel_timespec ts{};
      ts.tv_nsec = 10'000'000;
      io_uring_cqe* cqe = nullptr;
      stats_.syscalls++;
      (void)io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
      RetireSubmittedSends();
      io_uring_cqe* cqes[kCqeBatch];
      for (unsigned count; (count = io_uring_peek_batch_cqe(&ring_, cqes, kCqeBatch)) > 0;) {
        for (unsigned i = 0; i < count; i++) ReapForShutdown(*cqes[i]);
        io_uring_cq_advance(&ring_, count);
      }
    }
    shutdown_outstanding_ = Outstanding();
  }
  // From another thread than the issuer this fails (EEXIST under SINGLE_ISSUER); the
  // references then go with io_uring_queue_exit in the destructor.
  if (ring_ready_ && files_registered_ && io_uring_unregister_files(&ring_) == 0) {
    files_registered_ = false;
  }
  for (int fd : fds_) close(fd);
  fds_.clear();
}

Endpoint UringTransport::local_address(size_t i) const noexcept {
  RP_ASSERT(i < addresses_.size());
  return addresses_[i];
}

}  // namespace ringpeer::ring
