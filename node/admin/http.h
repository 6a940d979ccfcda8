// AdminHttp: the operator's HTTP endpoint — /metrics, /healthz, /readyz, /status.
//
// Off the hot path: it runs cpp-httplib on its own small thread pool, never on a shard.
// Each request calls a handler supplied by the caller (the `ringpeer serve` code), which
// reads the shards' relaxed-atomic counters and asks the owner shard for a snapshot
// through the same bounded request the control socket uses; nothing here takes a lock a
// shard could wait on. Bound to 127.0.0.1 by default (see --admin): the endpoint has no
// authentication, and /status names the node's peers.
//
//   GET /metrics  Prometheus text format 0.0.4
//   GET /healthz  200 "ok" while the process answers
//   GET /readyz   200 when the node has at least one live, verified overlay peer,
//                 503 with the reason otherwise
//   GET /status   the JSON that `ringpeer status --json` prints
//
// Thread-safety: Start and the destructor from one control thread; the handlers are called
// from the server's threads, possibly concurrently, and must be thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/endpoint.h"

namespace ringpeer::admin {

// Worker threads serving admin requests: scrapes and probes are rare and short; two lets a
// probe be answered while a scrape waits for the owner shard's snapshot.
inline constexpr int kAdminHttpThreads = 2;
// A client that sends nothing, or reads nothing, is dropped after this long.
inline constexpr int kAdminHttpTimeoutS = 5;
// Default admin address: loopback only.
inline constexpr char kAdminDefaultAddress[] = "127.0.0.1:7780";

struct AdminHandlers {
  std::function<std::string()> metrics;      // Prometheus text
  std::function<std::string()> status_json;  // one JSON object
  // ready: true when the node can serve; otherwise false and *why says what is missing.
  std::function<bool(std::string* why)> ready;
};

class AdminHttpServer {
 public:
  // Start: binds `address` (an error names it, e.g. "address in use") and starts serving
  // on a background thread. Port 0 picks a free port; address() tells which.
  static absl::StatusOr<std::unique_ptr<AdminHttpServer>> Start(const base::Endpoint& address,
                                                                AdminHandlers handlers);
  // Stops accepting, finishes requests in flight, joins the threads.
  ~AdminHttpServer();
  AdminHttpServer(const AdminHttpServer&) = delete;
  AdminHttpServer& operator=(const AdminHttpServer&) = delete;

  const base::Endpoint& address() const { return address_; }

 private:
  struct Impl;
  AdminHttpServer() = default;
  std::unique_ptr<Impl> impl_;
  base::Endpoint address_;
};

}  // namespace ringpeer::admin
