// ProbeIoUring and CreateTransport (ring/transport.h): pick the transport this host allows.
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "ring/delay_transport.h"
#include "ring/mmsg_transport.h"
#include "ring/transport.h"
#include "ring/uring_transport.h"

namespace ringpeer::ring {

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103  // linux/udp.h; older libc headers lack it
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

bool UdpGsoAvailable(int fd) noexcept {
  // Setting 0 asks nothing of later sends: it only tells whether the option exists.
  int zero = 0;
  return setsockopt(fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) == 0;
}

bool SetUdpGro(int fd, bool on) noexcept {
  const int value = on ? 1 : 0;
  return setsockopt(fd, SOL_UDP, UDP_GRO, &value, sizeof(value)) == 0;
}

void SetBurstSegment(BurstControl* c, uint16_t segment) noexcept {
  auto* cm = reinterpret_cast<cmsghdr*>(c->bytes);  // the first (only) header: aligned
  cm->cmsg_level = SOL_UDP;
  cm->cmsg_type = UDP_SEGMENT;
  cm->cmsg_len = CMSG_LEN(sizeof(segment));
  std::memcpy(CMSG_DATA(cm), &segment, sizeof(segment));
}

bool BurstRefused(int err) noexcept {
  return err == EIO || err == EINVAL || err == EOPNOTSUPP;
}

namespace {

constexpr char kDisableEnv[] = "RINGPEER_TEST_DISABLE_IO_URING";

// Small: the probe ring exists only to ask the kernel questions.
constexpr unsigned kProbeRingEntries = 8;
constexpr unsigned kProbeBufRingEntries = 8;

// CheckOpcodes: the operations the transport issues. Multishot recvmsg has no opcode of
// its own; it arrived in Linux 6.0 together with IORING_OP_SEND_ZC, which we use as the
// marker for "new enough".
absl::Status CheckOpcodes(io_uring* ring) {
  io_uring_probe* probe = io_uring_get_probe_ring(ring);
  if (probe == nullptr) {
    return absl::UnavailableError("io_uring cannot report its operations (kernel too old)");
  }
  struct Needed {
    int op;
    const char* what;
  };
  static constexpr Needed kNeeded[] = {
      {IORING_OP_RECVMSG, "recvmsg"},
      {IORING_OP_SENDMSG, "sendmsg"},
      {IORING_OP_MSG_RING, "MSG_RING"},
      {IORING_OP_SEND_ZC, "multishot recvmsg (Linux 6.0)"},
  };
  absl::Status status = absl::OkStatus();
  for (const Needed& n : kNeeded) {
    if (!io_uring_opcode_supported(probe, n.op)) {
      status = absl::UnavailableError(
          absl::StrCat("this kernel's io_uring lacks ", n.what, "; Linux 6.0 or newer needed"));
      break;
    }
  }
  io_uring_free_probe(probe);
  return status;
}

// CheckBufferRing: registers a tiny provided-buffer ring (Linux 5.19).
absl::Status CheckBufferRing(io_uring* ring) {
  const size_t bytes = kProbeBufRingEntries * sizeof(io_uring_buf);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return base::ErrnoStatus(errno, "mmap for the io_uring probe");
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(mem);
  reg.ring_entries = kProbeBufRingEntries;
  reg.bgid = 0;
  const int ret = io_uring_register_buf_ring(ring, &reg, 0);
  if (ret == 0) io_uring_unregister_buf_ring(ring, 0);
  munmap(mem, bytes);
  if (ret != 0) {
    return absl::UnavailableError(absl::StrCat(
        "this kernel's io_uring has no provided buffer rings (", std::strerror(-ret),
        "); Linux 6.0 or newer needed"));
  }
  return absl::OkStatus();
}

absl::Status SetupError(int err) {
  if (err == EPERM || err == EACCES) {
    return absl::UnavailableError(
        "io_uring is disabled (sysctl kernel.io_uring_disabled) or blocked by a seccomp "
        "profile (Docker's default blocks it; see deploy/)");
  }
  if (err == ENOSYS) return absl::UnavailableError("this kernel has no io_uring");
  return absl::UnavailableError(absl::StrCat("io_uring setup failed: ", std::strerror(err)));
}

void CloseSockets(ShardSockets* sockets) {
  for (int fd : sockets->fds) close(fd);
  sockets->fds.clear();
}

}  // namespace

absl::Status ProbeIoUring() {
  const char* disable = std::getenv(kDisableEnv);
  if (disable != nullptr && std::string_view(disable) == "1") {
    return absl::UnavailableError(
        absl::StrCat("io_uring is turned off by ", kDisableEnv, "=1 (a test switch)"));
  }
  io_uring ring;
  const int ret = io_uring_queue_init(kProbeRingEntries, &ring, 0);
  if (ret < 0) return SetupError(-ret);
  absl::Status status = CheckOpcodes(&ring);
  if (status.ok()) status = CheckBufferRing(&ring);
  io_uring_queue_exit(&ring);
  return status;
}

namespace {

// CreateInner: the real transport (io_uring, or recvmmsg as allowed), unwrapped.
absl::StatusOr<std::unique_ptr<Transport>> CreateInner(TransportKind kind, ShardSockets sockets,
                                                       const TransportConfig& config,
                                                       std::string* fallback_reason) {
  if (fallback_reason != nullptr) fallback_reason->clear();
  absl::Status uring_status = absl::OkStatus();
  if (kind != TransportKind::kMmsg) {
    uring_status = ProbeIoUring();
    if (uring_status.ok()) {
      auto uring = UringTransport::Create(&sockets, config);
      if (uring.ok()) return std::unique_ptr<Transport>(std::move(*uring));
      uring_status = uring.status();  // e.g. memory limits; `sockets` are still ours
    }
    if (kind == TransportKind::kIoUring) {
      CloseSockets(&sockets);
      return uring_status;
    }
    if (fallback_reason != nullptr) *fallback_reason = std::string(uring_status.message());
  }
  auto mmsg = MmsgTransport::Create(&sockets, config);
  if (!mmsg.ok()) {
    CloseSockets(&sockets);
    return mmsg.status();
  }
  return std::unique_ptr<Transport>(std::move(*mmsg));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Transport>> CreateTransport(TransportKind kind,
                                                           ShardSockets sockets,
                                                           const TransportConfig& config,
                                                           std::string* fallback_reason) {
  auto t = CreateInner(kind, std::move(sockets), config, fallback_reason);
  if (!t.ok() || config.send_delay_us <= 0) return t;
  // The test delay shim: only here, so an undelayed node runs the bare transport.
  if (config.send_delay_slots == 0) {
    return absl::InvalidArgumentError("send_delay_slots must be > 0 with send_delay_us");
  }
  DelayConfig dc;
  dc.delay_us = config.send_delay_us;
  dc.slots = config.send_delay_slots;
  dc.slot_bytes = config.send_slot_bytes;
  return std::unique_ptr<Transport>(std::make_unique<DelayTransport>(std::move(*t), dc));
}

}  // namespace ringpeer::ring
