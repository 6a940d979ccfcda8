#include "node/admin/control.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace ringpeer::admin {
namespace {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

// A client that connects and sends nothing is given this long.
constexpr int kClientTimeoutMs = 1000;

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "control socket path ", path, " is too long for a Unix socket (max ",
        sizeof(addr.sun_path) - 1, " bytes); use a shorter --data-dir"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

absl::StatusOr<ControlServer> ControlServer::Listen(const std::string& path) {
  RP_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return base::ErrnoStatus(errno, "control socket");
  unlink(path.c_str());  // a stale socket from a crashed run; we hold the data dir lock
  const mode_t old = umask(077);
  const int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  umask(old);
  if (rc != 0 || chmod(path.c_str(), 0600) != 0 || listen(fd, 16) != 0) {
    const int err = errno;
    close(fd);
    return base::ErrnoStatus(err, absl::StrCat("control socket ", path));
  }
  return ControlServer(path, fd);
}

ControlServer::ControlServer(ControlServer&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_) {
  other.fd_ = -1;
}

ControlServer::~ControlServer() {
  if (fd_ >= 0) {
    close(fd_);
    unlink(path_.c_str());
  }
}

int ControlServer::ServeUntilSignal(int signal_fd, const Handler& handler, int tick_ms,
                                    const std::function<void()>& on_tick) {
  const bool ticking = tick_ms > 0 && on_tick;
  int64_t next_tick_ms = NowMs() + tick_ms;
  // The control loop: runs until a signal arrives.
  for (;;) {
    int timeout = -1;
    if (ticking) {
      const int64_t now = NowMs();
      if (now >= next_tick_ms) {
        on_tick();
        next_tick_ms = NowMs() + tick_ms;
      }
      timeout = static_cast<int>(std::max<int64_t>(0, next_tick_ms - NowMs()));
    }
    pollfd fds[2] = {{signal_fd, POLLIN, 0}, {fd_, POLLIN, 0}};
    if (poll(fds, 2, timeout) < 0) {
      if (errno == EINTR) continue;
      return SIGTERM;  // cannot wait any more: stop as if asked to
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info;
      if (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
        return static_cast<int>(info.ssi_signo);
      }
    }
    if (fds[1].revents & POLLIN) {
      int conn = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn >= 0) {
        HandleOne(conn, handler);
        close(conn);
      }
    }
  }
}

void ControlServer::HandleOne(int conn, const Handler& handler) {
  std::string request;
  char buf[512];
  while (request.find('\n') == std::string::npos && request.size() < kControlRequestBytesMax) {
    pollfd p{conn, POLLIN, 0};
    if (poll(&p, 1, kClientTimeoutMs) <= 0) return;
    ssize_t n = recv(conn, buf, sizeof(buf), 0);
    if (n <= 0) break;
    request.append(buf, static_cast<size_t>(n));
  }
  const size_t nl = request.find('\n');
  if (nl == std::string::npos) {
    WriteAll(conn, "error: request too long or not terminated by a newline\n");
    return;
  }
  request.resize(nl);
  WriteAll(conn, handler(request));
}

absl::StatusOr<std::string> ControlRequest(const std::string& socket_path,
                                           std::string_view request, int timeout_ms) {
  RP_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(socket_path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return base::ErrnoStatus(errno, "control socket");
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    if (err == ENOENT || err == ECONNREFUSED) {
      return absl::UnavailableError(absl::StrCat(
          "no ringpeer node is running with this data directory (",
          err == ENOENT ? "no control socket at " : "nothing answers at ", socket_path, ")"));
    }
    return base::ErrnoStatus(err, absl::StrCat("cannot connect to ", socket_path));
  }
  std::string line(request);
  line += '\n';
  if (!WriteAll(fd, line)) {
    close(fd);
    return absl::UnavailableError("the node closed the control connection");
  }
  std::string answer;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int r = poll(&p, 1, timeout_ms);
    if (r == 0) {
      close(fd);
      return absl::DeadlineExceededError("the node did not answer in time");
    }
    if (r < 0 && errno == EINTR) continue;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return answer;
}

}  // namespace ringpeer::admin
