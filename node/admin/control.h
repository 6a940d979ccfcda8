// The control socket: how `ringpeer status` (and later lookup, announce, rooms) talks to
// the node running on a data directory.
//
// A Unix stream socket at DATA_DIR/control.sock, mode 0600 inside a 0700 directory, so
// only the node's owner can use it. One request per connection: a single line
// ("status json"), answered by the handler's text, then the server closes. Control path
// only; the server runs on the process's main thread, never on a shard.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace ringpeer::admin {

// Longest request line accepted; anything longer is refused.
inline constexpr size_t kControlRequestBytesMax = 4096;

class ControlServer {
 public:
  using Handler = std::function<std::string(std::string_view request)>;

  // Listen: binds `path` (replacing a stale socket: the caller holds the data dir lock).
  static absl::StatusOr<ControlServer> Listen(const std::string& path);
  ControlServer(ControlServer&& other) noexcept;
  ControlServer(const ControlServer&) = delete;
  ~ControlServer();

  // ServeUntilSignal: answers requests until `signal_fd` (a signalfd) is readable.
  // Returns the signal number received. With tick_ms > 0, also calls on_tick about every
  // tick_ms (the process's periodic control work: peer and limit logging).
  int ServeUntilSignal(int signal_fd, const Handler& handler, int tick_ms = 0,
                       const std::function<void()>& on_tick = {});

 private:
  ControlServer(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  void HandleOne(int conn, const Handler& handler);
  std::string path_;
  int fd_ = -1;
};

// ControlRequest: sends `request` to the node on `socket_path`, returns its answer.
// Errors say plainly when no node is running there.
absl::StatusOr<std::string> ControlRequest(const std::string& socket_path,
                                           std::string_view request, int timeout_ms);

}  // namespace ringpeer::admin
