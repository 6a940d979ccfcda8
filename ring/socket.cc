// BindShardSockets (ring/transport.h): one SO_REUSEPORT group per listen address, one
// socket per shard, and the classic BPF program that steers datagrams by shard hint.
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/assert.h"
#include "base/status.h"
#include "ring/transport.h"

namespace ringpeer::ring {
namespace {

using base::Endpoint;
using base::ErrnoStatus;

// Socket buffers: 4 MiB holds ~3000 full-size datagrams, i.e. a few milliseconds of a
// loopback burst while the shard is busy. The kernel caps SO_RCVBUF at net.core.rmem_max;
// SO_RCVBUFFORCE (CAP_NET_ADMIN) goes past that when we may. Failure is not an error.
constexpr int kSocketBufferBytes = 4 << 20;

// Where the steering program reads the shard hint: byte 8 of our 16-byte wire header is
// the low byte of the little-endian 32-bit hint. The kernel has already pulled the UDP
// header when the reuseport program runs, so offset 0 is the start of our header.
constexpr uint32_t kShardHintByteOffset = 8;
// Hint byte meaning "no preference": the program returns an index past the group, and the
// kernel falls back to its own 4-tuple hash.
constexpr uint32_t kNoShardPreference = 0xFF;
constexpr uint32_t kKernelHashIndex = 0xFFFFFFFF;

// Closes every fd it holds unless released; keeps error paths from leaking sockets.
class FdGuard {
 public:
  FdGuard() = default;
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  ~FdGuard() {
    for (int fd : fds_) close(fd);
  }
  void Add(int fd) { fds_.push_back(fd); }
  std::vector<int> Release() { return std::move(fds_); }
  const std::vector<int>& fds() const { return fds_; }

 private:
  std::vector<int> fds_;
};

void GrowSocketBuffers(int fd) {
  const int bytes = kSocketBufferBytes;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) != 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  }
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof(bytes)) != 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  }
}

// OpenUdpSocket: a nonblocking UDP socket of `at`'s family. IPv6 sockets are dual-stack
// (IPV6_V6ONLY=0), which matters for [::]: it then also receives IPv4.
absl::StatusOr<int> OpenUdpSocket(const Endpoint& at, bool reuseport) {
  const int family = at.is_v4() ? AF_INET : AF_INET6;
  const int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("socket for ", at.ToString()));
  const int one = 1;
  const int zero = 0;
  if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus(err, absl::StrCat("SO_REUSEPORT for ", at.ToString()));
  }
  if (family == AF_INET6 &&
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus(err, absl::StrCat("IPV6_V6ONLY=0 for ", at.ToString()));
  }
  GrowSocketBuffers(fd);
  return fd;
}

absl::Status BindTo(int fd, const Endpoint& at) {
  sockaddr_storage ss;
  const socklen_t len = at.ToSockaddr(&ss, !at.is_v4());
  if (bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    return ErrnoStatus(errno, absl::StrCat("bind ", at.ToString()));
  }
  return absl::OkStatus();
}

// ProbeExclusive: binds `at` once without SO_REUSEPORT. If any socket holds the port, even
// another reuseport group that would have let us join it, this fails with EADDRINUSE.
// UDP has no TIME_WAIT, so the port is free again as soon as the probe closes.
absl::Status ProbeExclusive(const Endpoint& at) {
  RP_ASSIGN_OR_RETURN(const int fd, OpenUdpSocket(at, /*reuseport=*/false));
  absl::Status status = BindTo(fd, at);
  close(fd);
  return status;
}

absl::StatusOr<uint16_t> BoundPort(int fd, const Endpoint& at) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return ErrnoStatus(errno, absl::StrCat("getsockname for ", at.ToString()));
  }
  const Endpoint bound = Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  RP_ASSERT(bound.valid());
  RP_ASSERT(bound.port != 0);
  return bound.port;
}

// AttachSteering: the reuseport program. Classic BPF, so it works without CAP_BPF:
//   A = payload[8]; if A == 0xFF return out-of-range (kernel hash); else return A % shards.
// A datagram shorter than 9 bytes makes the load fail, the program return 0, and the
// datagram land on shard 0, which drops it as too short.
absl::Status AttachSteering(int fd, uint32_t shards, const Endpoint& at) {
  RP_ASSERT(shards >= 1);
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, kShardHintByteOffset),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kNoShardPreference, 2, 0),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, shards),
      BPF_STMT(BPF_RET | BPF_A, 0),
      BPF_STMT(BPF_RET | BPF_K, kKernelHashIndex),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("SO_ATTACH_REUSEPORT_CBPF on ", at.ToString()));
  }
  return absl::OkStatus();
}

// BindGroup: `shards` reuseport sockets on `listen`, in shard order (the group's socket
// order is what the steering program's return value indexes).
absl::StatusOr<std::vector<int>> BindGroup(const Endpoint& listen, uint32_t shards,
                                           bool steer, Endpoint* bound) {
  if (listen.port != 0) RP_RETURN_IF_ERROR(ProbeExclusive(listen));
  FdGuard group;
  Endpoint at = listen;
  for (uint32_t shard = 0; shard < shards; shard++) {
    RP_ASSIGN_OR_RETURN(const int fd, OpenUdpSocket(at, /*reuseport=*/true));
    group.Add(fd);
    RP_RETURN_IF_ERROR(BindTo(fd, at));
    // Port 0: the first bind picks a free port; every other shard joins that one.
    if (at.port == 0) {
      RP_ASSIGN_OR_RETURN(at.port, BoundPort(fd, listen));
    }
  }
  if (steer) RP_RETURN_IF_ERROR(AttachSteering(group.fds().front(), shards, at));
  *bound = at;
  return group.Release();
}

void CloseAll(std::vector<ShardSockets>* result) {
  for (ShardSockets& s : *result) {
    for (int fd : s.fds) close(fd);
    s.fds.clear();
  }
}

}  // namespace

absl::StatusOr<std::vector<ShardSockets>> BindShardSockets(
    const std::vector<base::Endpoint>& listen, uint32_t shards, bool steer) {
  if (shards == 0) return absl::InvalidArgumentError("BindShardSockets: shards must be >= 1");
  std::vector<ShardSockets> result(shards);
  for (const Endpoint& address : listen) {
    if (!address.valid()) {
      CloseAll(&result);
      return absl::InvalidArgumentError("BindShardSockets: invalid listen address");
    }
    Endpoint bound;
    absl::StatusOr<std::vector<int>> group = BindGroup(address, shards, steer, &bound);
    if (!group.ok()) {
      CloseAll(&result);
      return group.status();
    }
    RP_ASSERT(group->size() == shards);
    for (uint32_t shard = 0; shard < shards; shard++) {
      result[shard].fds.push_back((*group)[shard]);
      result[shard].addresses.push_back(bound);
    }
  }
  return result;
}

int PickSocket(std::span<const base::Endpoint> addresses, const base::Endpoint& to,
               int socket_index) noexcept {
  if (socket_index >= 0) {
    RP_ASSERT(static_cast<size_t>(socket_index) < addresses.size());
    return socket_index;
  }
  for (size_t i = 0; i < addresses.size(); i++) {
    if (addresses[i].family == to.family) return static_cast<int>(i);
  }
  // IPv4 through a dual-stack [::] socket, as a mapped address.
  static constexpr std::array<uint8_t, 16> kAny{};
  for (size_t i = 0; i < addresses.size() && to.is_v4(); i++) {
    if (addresses[i].family == base::Endpoint::Family::kV6 && addresses[i].ip == kAny) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

}  // namespace ringpeer::ring
