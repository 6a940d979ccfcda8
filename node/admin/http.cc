// Built with exceptions (see node/admin/CMakeLists.txt): cpp-httplib is a compiled Debian
// library whose code may throw inside its own request parsing. This target is off the
// hot path and no shard code links against it; the handlers below do not throw.
#include "node/admin/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace ringpeer::admin {
namespace {

// Host: the address without port or brackets, as bind() wants it.
std::string Host(const base::Endpoint& e) {
  char buf[INET6_ADDRSTRLEN] = {0};
  inet_ntop(e.is_v4() ? AF_INET : AF_INET6, e.ip.data(), buf, sizeof(buf));
  return buf;
}

// BindErrno: why a TCP bind to `e` fails (httplib only says that it did).
int BindErrno(const base::Endpoint& e) {
  int fd = socket(e.is_v4() ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_storage ss;
  const socklen_t len = e.ToSockaddr(&ss, !e.is_v4());
  const int rc = bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  const int err = rc == 0 ? EADDRNOTAVAIL : errno;  // passed now: a race; say so vaguely
  close(fd);
  return err;
}

}  // namespace

struct AdminHttpServer::Impl {
  httplib::Server server;
  std::thread thread;
};

absl::StatusOr<std::unique_ptr<AdminHttpServer>> AdminHttpServer::Start(
    const base::Endpoint& address, AdminHandlers handlers) {
  if (!address.valid()) return absl::InvalidArgumentError("admin address is not valid");
  std::unique_ptr<AdminHttpServer> s(new AdminHttpServer());
  s->impl_ = std::make_unique<Impl>();
  httplib::Server& srv = s->impl_->server;
  srv.new_task_queue = [] { return new httplib::ThreadPool(kAdminHttpThreads); };
  srv.set_read_timeout(kAdminHttpTimeoutS, 0);
  srv.set_write_timeout(kAdminHttpTimeoutS, 0);
  srv.set_keep_alive_max_count(16);
  srv.set_payload_max_length(4096);  // every endpoint is a GET; a body is never needed
  // httplib's default also sets SO_REUSEPORT, which would let a second node bind the same
  // admin port and split the scrapes between two processes. SO_REUSEADDR only: a restart
  // can rebind at once, a second process gets "address in use".
  srv.set_socket_options([](int sock) {
    int one = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  });

  auto h = std::make_shared<AdminHandlers>(std::move(handlers));
  srv.Get("/metrics", [h](const httplib::Request&, httplib::Response& res) {
    res.set_content(h->metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  srv.Get("/readyz", [h](const httplib::Request&, httplib::Response& res) {
    std::string why;
    if (h->ready(&why)) {
      res.set_content("ready\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content("not ready: " + why + "\n", "text/plain");
    }
  });
  srv.Get("/status", [h](const httplib::Request&, httplib::Response& res) {
    res.set_content(h->status_json() + "\n", "application/json");
  });
  srv.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ringpeer admin: /metrics /healthz /readyz /status\n", "text/plain");
  });

  const std::string host = Host(address);
  base::Endpoint bound = address;
  if (address.port == 0) {
    const int port = srv.bind_to_any_port(host);
    if (port <= 0) {
      return base::ErrnoStatus(BindErrno(address),
                               absl::StrCat("admin HTTP address ", address.ToString()));
    }
    bound.port = static_cast<uint16_t>(port);
  } else if (!srv.bind_to_port(host, address.port)) {
    return base::ErrnoStatus(BindErrno(address),
                             absl::StrCat("admin HTTP address ", address.ToString()));
  }
  s->address_ = bound;
  s->impl_->thread = std::thread([&srv] { srv.listen_after_bind(); });
  return s;
}

AdminHttpServer::~AdminHttpServer() {
  if (!impl_) return;
  // httplib's stop() does nothing until listen_after_bind() has marked the server
  // running; wait for that (bounded) so the join below cannot hang.
  for (int i = 0; i < 200 && !impl_->server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace ringpeer::admin
